//! berth's YAML emitter (`berth::render::emit`) read back by real readers. Issue #29: the
//! emitter stays only while it is the faster (`emit::tests::measure`) and what it writes
//! reads back identically in a YAML 1.1 reader (as kubectl's) and a YAML 1.2 reader. Here
//! generated documents (tests/support/yaml_values.rs, the emitter's own property-test
//! values) and the sample repository's rendered objects, written by `emit::to_string`, must
//! read back as exactly the value written in
//! - PyYAML `safe_load_all` (YAML 1.1; Mage reads its files with it),
//! - ruamel.yaml `YAML(typ='safe')` (YAML 1.2),
//! - kubectl: go-yaml v2 through sigs.k8s.io/yaml (`kubectl label --local -o json`),
//! - serde_yaml (YAML 1.2), in process.
//!
//! The Python readers are the pinned ones of `scripts/mage-oracle`'s venv, pure Python
//! (tests/yaml/readers.py); kubectl is the control plane's, with no control plane running.
//! Each reader reads every document in one stream. A missing reader is a skip, and under
//! CI=true a failure. `BERTH_YAML_SEED=<n>` repeats a run (the seed is in every failure).

mod support;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Generated documents per run (plus the sample repository's objects).
const DOCUMENTS: usize = 1500;

#[test]
fn emitted_documents_read_back_in_pyyaml_ruamel_kubectl_and_serde_yaml() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let seed: u64 = std::env::var("BERTH_YAML_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let mut bytes = [0; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = support::yaml_values::value();
    let mut values: Vec<Value> = (0..DOCUMENTS)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
    let desired = berth::desired(
        berth::source::read_dir(&root).expect("the sample repository"),
        &Default::default(),
    );
    assert!(!desired.has_errors());
    values.extend(desired.objects);

    let documents: Vec<String> = values.iter().map(berth::render::emit::to_string).collect();
    let stream: String = documents.iter().map(|d| format!("---\n{d}")).collect();
    let mut failures = Vec::new();
    let mut check = |reader: &str,
                     read: Result<Vec<Value>, String>,
                     same: fn(&Value, &Value) -> bool| {
        let read = match read {
            Ok(read) if read.len() == values.len() => read,
            Ok(read) => {
                let n = read.len();
                return failures.push(format!("{reader} read {n} documents of {}", values.len()));
            }
            Err(e) => return failures.push(format!("{reader}: {e}")),
        };
        let wrong: Vec<usize> = (0..values.len())
            .filter(|&i| !same(&values[i], &read[i]))
            .collect();
        if let Some(&i) = wrong.first() {
            failures.push(format!(
                "{reader} read {} of {} documents otherwise; the first, #{i}:\nwrote {}\nas\n{}read  {}",
                wrong.len(),
                values.len(),
                values[i],
                documents[i],
                read[i]
            ));
        }
    };

    // serde_yaml, in process.
    let read = documents
        .iter()
        .map(|d| serde_yaml::from_str::<Value>(d).map_err(|e| format!("{e}\n{d}")))
        .collect();
    check("serde_yaml", read, |a, b| a == b);

    // PyYAML and ruamel.yaml, type for type (an integer is not a float, a date not text).
    let started = Instant::now();
    if let Some(mut read) = python_readers(&documents, &stream) {
        for reader in ["pyyaml", "ruamel"] {
            let docs = read
                .remove(reader)
                .unwrap_or_else(|| Err("no answer".into()));
            check(reader, docs, |a, b| a == b);
        }
    }
    let python = started.elapsed();

    // kubectl: numbers compared as the JSON numbers kubectl holds (see `as_kubectl_holds`).
    let started = Instant::now();
    if let Some(read) = kubectl_reads(&values) {
        check("kubectl", read, |a, b| {
            as_kubectl_holds(a) == as_kubectl_holds(b)
        });
    }
    let kubectl = started.elapsed();
    eprintln!(
        "{} documents, {} bytes of YAML: PyYAML and ruamel.yaml {python:?}, kubectl {kubectl:?}",
        values.len(),
        stream.len()
    );
    assert!(
        failures.is_empty(),
        "(BERTH_YAML_SEED={seed} repeats this run)\n{}",
        failures.join("\n\n")
    );
}

/// What tests/yaml/readers.py read of `stream` (the `documents`), by reader (`pyyaml`,
/// `ruamel`); `None` after [`support::skip_or_fail`] when the venv cannot be had.
fn python_readers(
    documents: &[String],
    stream: &str,
) -> Option<BTreeMap<String, Result<Vec<Value>, String>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = match Command::new(root.join("scripts/mage-oracle"))
        .arg("python")
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => {
            support::skip_or_fail(&format!(
                "no PyYAML/ruamel.yaml: scripts/mage-oracle python failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Err(e) => {
            support::skip_or_fail(&format!("no PyYAML/ruamel.yaml: scripts/mage-oracle: {e}"));
            return None;
        }
    };
    let out = match run(
        Command::new(python).arg(root.join("tests/yaml/readers.py")),
        stream,
    ) {
        Ok(out) => out,
        Err(e) => {
            return Some(BTreeMap::from([
                ("pyyaml".into(), Err(e.clone())),
                ("ruamel".into(), Err(e)),
            ]));
        }
    };
    let answer: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(&out).expect("readers.py answers JSON");
    let mut read = BTreeMap::new();
    for (reader, docs) in answer {
        let docs = match exact(&docs) {
            versions if reader == "versions" => {
                eprintln!("Python readers: {versions}");
                continue;
            }
            Value::Array(docs) => Ok(docs),
            error => {
                let n = error["read"].as_array().map_or(0, Vec::len);
                let at = documents.get(n).map_or("", String::as_str);
                Err(format!("{} at document #{n}:\n{at}", error["error"]))
            }
        };
        read.insert(reader, docs);
    }
    Some(read)
}

/// What kubectl read of each value, written as field `value` of a ConfigMap-shaped object;
/// `None` after [`support::skip_or_fail`] when there is no kubectl.
fn kubectl_reads(values: &[Value]) -> Option<Result<Vec<Value>, String>> {
    let stream: String = values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("c{i}")}, "value": value});
            format!("---\n{}", berth::render::emit::to_string(&object))
        })
        .collect();
    let mut kubectl = support::local_kubectl()?;
    let out = match run(
        kubectl.args(["label", "--local", "-f", "-", "-o", "json", "berth-test=1"]),
        &stream,
    ) {
        Ok(out) => out,
        Err(e) => return Some(Err(e)),
    };
    // One JSON object per document, one after the other.
    let mut read = BTreeMap::new();
    for item in serde_json::Deserializer::from_slice(&out).into_iter::<Box<RawValue>>() {
        let item = exact(&item.expect("kubectl prints JSON"));
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let Some(i) = name.strip_prefix('c').and_then(|i| i.parse::<usize>().ok()) else {
            return Some(Err(format!("an object kubectl did not get: {item}")));
        };
        read.insert(i, item["value"].clone());
    }
    Some(Ok(read.into_values().collect()))
}

/// The standard output of `command` given `input`, or why it failed.
fn run(command: &mut Command, input: &str) -> Result<Vec<u8>, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    // Written from another thread: the reader's output may fill its pipe first.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("the reader's output");
    let written = writer.join().expect("writer");
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    written.expect("writing the stream");
    Ok(out.stdout)
}

/// JSON text as a value, its numbers read exactly: serde_json (without its
/// `float_roundtrip` feature) may read a float a unit in the last place off, Rust's
/// `str::parse` does not.
fn exact(json: &RawValue) -> Value {
    let text = json.get();
    match text.as_bytes().first() {
        Some(b'{') => Value::Object(
            serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(text)
                .expect("a JSON object")
                .into_iter()
                .map(|(k, v)| (k, exact(&v)))
                .collect(),
        ),
        Some(b'[') => Value::Array(
            serde_json::from_str::<Vec<Box<RawValue>>>(text)
                .expect("a JSON array")
                .iter()
                .map(|v| exact(v))
                .collect(),
        ),
        Some(b'-' | b'0'..=b'9') => {
            if !text.contains(['.', 'e', 'E']) {
                if let Ok(n) = text.parse::<i64>() {
                    return json!(n);
                }
                if let Ok(n) = text.parse::<u64>() {
                    return json!(n);
                }
            }
            let f: f64 = text.parse().expect("a JSON number");
            json!(f)
        }
        _ => serde_json::from_str(text).expect("JSON"),
    }
}

/// `value` as kubectl holds it. kubectl carries objects as JSON (sigs.k8s.io/yaml turns
/// go-yaml v2's reading into JSON, and unstructured objects read numbers as int64, else
/// float64), where an integer and a float of the same value are one number: a float with
/// an integral value comes out as an integer (`5.0` as `5`, `1.0e+16` as
/// `10000000000000000`), and an integer beyond int64 as a float64 (`18446744073709551615`
/// as `18446744073709552000`). So for kubectl alone a number is compared as that number:
/// an i64 when it is an integer an i64 holds, else its nearest f64 (which loses the low
/// digits of a u64 above i64::MAX: those are checked exactly by the other readers). Text,
/// booleans and nulls stay exact. (A key kubectl reads as another type comes back as that
/// type's text, `y` as `"true"`: that is kubectl's reading, and it is compared as such.)
fn as_kubectl_holds(value: &Value) -> Value {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => json!(i),
            (None, Some(f)) if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) => {
                json!(f as i64)
            }
            (None, Some(f)) => json!(f),
            (None, None) => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(as_kubectl_holds).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), as_kubectl_holds(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
