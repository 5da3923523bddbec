//! YAML text of JSON values that every reader of berth's output reads back as the same
//! value: kubectl (go-yaml v2, YAML 1.1), Mage (PyYAML, YAML 1.1: the executor files in
//! ConfigMaps) and YAML 1.2 readers (serde_yaml, yaml-rust2).
//!
//! Why hand-written, next to serde_yaml. Two reasons, the first measured (`cargo test
//! --release --lib emit::tests::measure -- --ignored --nocapture`: the sample repository's
//! rendered objects ×170, 9,860 objects and 15.9 MB of YAML; 2 cores, 2026-12-07, three
//! runs): 149–151 ms here against 271–277 ms through serde_yaml, 1.8–1.9× faster.
//! - **Speed.** Rendering and diffing thousands of objects spent most of their time in
//!   serde_yaml's emitter.
//! - **Correctness.** serde_yaml (unmaintained since 2024) writes YAML 1.2 and leaves
//!   `off`, `y`, `yes`, `0o17`, `1_000`, `12:30`, `2001-12-14`… plain; a YAML 1.1 reader
//!   takes them for booleans, numbers or dates, and kubectl refuses a ConfigMap holding
//!   one ("cannot unmarshal bool into … string"). It has no option for the scalar style;
//!   its maintained forks (serde_norway, serde_yaml_ng) have the same behaviour (quoting is
//!   an open request in both), and yaml-rust2's emitter leaves `y` and `n` plain on
//!   purpose. Here every string that any of those readers would type otherwise
//!   ([`read_as_another_type`]) is single-quoted, floats keep a `.` and a signed
//!   exponent (`1.0e+30`), which YAML 1.1 requires, and strings holding a line or
//!   paragraph separator (a line break to YAML 1.1, not to 1.2) are double-quoted with
//!   escapes.
//!
//! Everything else is byte for byte what `serde_yaml::to_string` writes (tests compare
//! both): block mappings and sequences (2-space indent, sequences in mappings not
//! indented, empty ones as `{}` / `[]`), keys over 128 bytes or on several lines as
//! complex keys (`? key`), plain scalars where they are certainly plain, and every other
//! scalar formatted by serde_yaml itself — multi-line strings as its block scalars,
//! re-indented to where they stand.
//!
//! Checked against the real readers, not imitations of them: tests/yaml.rs writes
//! generated documents (the property-test values of tests/support/yaml_values.rs) and the
//! sample repository's objects, and PyYAML (YAML 1.1), ruamel.yaml (YAML 1.2), kubectl
//! (go-yaml v2) and serde_yaml must each read back exactly the value written.

use regex::{Regex, RegexSet};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::OnceLock;

/// The YAML document of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    if write_root(value, &mut out).is_none() {
        // Not reached for values serde_yaml can write (a property test checks); JSON is
        // YAML that every reader types alike, so it is the safe last resort.
        out = serde_json::to_string_pretty(value).unwrap_or_default();
        out.push('\n');
    }
    out
}

/// `None` when a scalar comes out of serde_yaml in a form this emitter cannot place.
fn write_root(value: &Value, out: &mut String) -> Option<()> {
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(map, 0, false, out),
        Value::Array(items) if !items.is_empty() => write_sequence(items, 0, false, out),
        other => write_scalar(other, 0, out),
    }
}

fn indent(out: &mut String, width: usize) {
    out.extend(std::iter::repeat_n(' ', width));
}

/// Longest key libyaml writes as a simple key (`key: value`); longer ones are complex keys.
const MAX_SIMPLE_KEY: usize = 128;

/// A block mapping at `width`; with `inline`, its first key continues the current line
/// (after a sequence's `- `).
fn write_mapping(
    map: &serde_json::Map<String, Value>,
    width: usize,
    inline: bool,
    out: &mut String,
) -> Option<()> {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, width);
        }
        match string(key)? {
            // libyaml's simple keys: at most 128 bytes, no line break even when escaped.
            Text::Line(text)
                if key.len() <= MAX_SIMPLE_KEY
                    && !key.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) =>
            {
                out.push_str(&text);
                out.push(':');
                match value {
                    Value::Object(m) if !m.is_empty() => {
                        out.push('\n');
                        write_mapping(m, width + 2, false, out)?;
                    }
                    // A sequence in a mapping is not indented.
                    Value::Array(items) if !items.is_empty() => {
                        out.push('\n');
                        write_sequence(items, width, false, out)?;
                    }
                    other => {
                        out.push(' ');
                        write_scalar(other, width, out)?;
                    }
                }
            }
            // `? key` then `: value`, the value placed like a sequence item's.
            text => {
                out.push_str("? ");
                write_text(text, width, out);
                indent(out, width);
                out.push_str(": ");
                write_item(value, width, out)?;
            }
        }
    }
    Some(())
}

/// A block sequence at `width`; with `inline`, its first item continues the current line.
fn write_sequence(items: &[Value], width: usize, inline: bool, out: &mut String) -> Option<()> {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, width);
        }
        out.push_str("- ");
        write_item(item, width, out)?;
    }
    Some(())
}

/// A value after `- ` (or `: ` of a complex key) of a collection at `width`.
fn write_item(item: &Value, width: usize, out: &mut String) -> Option<()> {
    match item {
        Value::Object(m) if !m.is_empty() => write_mapping(m, width + 2, true, out),
        Value::Array(inner) if !inner.is_empty() => write_sequence(inner, width + 2, true, out),
        other => write_scalar(other, width, out),
    }
}

/// A scalar as written: one line, or serde_yaml's block scalar document on its own (a
/// header line, then content lines indented by 2, each ending in a line break) to be
/// re-indented under its collection.
enum Text<'a> {
    /// Borrowed when the scalar is written as it is (most keys and values).
    Line(Cow<'a, str>),
    Block(String),
}

/// A scalar (or empty collection) at the current position, then a line break; a block
/// scalar's lines go under the collection at `width`.
fn write_scalar(value: &Value, width: usize, out: &mut String) -> Option<()> {
    let text = match value {
        Value::Null => Text::Line("null".into()),
        Value::Bool(b) => Text::Line(if *b { "true" } else { "false" }.into()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Text::Line(n.to_string().into()),
        Value::Number(_) => Text::Line(float(value)?.into()),
        Value::String(s) => string(s)?,
        Value::Object(m) if m.is_empty() => Text::Line("{}".into()),
        Value::Array(a) if a.is_empty() => Text::Line("[]".into()),
        _ => return None,
    };
    write_text(text, width, out);
    Some(())
}

fn write_text(text: Text<'_>, width: usize, out: &mut String) {
    match text {
        Text::Line(line) => {
            out.push_str(&line);
            out.push('\n');
        }
        Text::Block(block) => {
            // serde_yaml indents a lone block scalar's content by 2; nested under a
            // collection at `width`, libyaml indents it by `width + 2`.
            for (i, line) in block.split_terminator('\n').enumerate() {
                if i > 0 && !line.is_empty() {
                    indent(out, width);
                }
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

fn string(s: &str) -> Option<Text<'_>> {
    if read_as_another_type(s) || is_single_quoted(s) {
        // Every string read_as_another_type finds is one line of printable ASCII.
        return Some(Text::Line(format!("'{}'", s.replace('\'', "''")).into()));
    }
    if is_plain(s) {
        return Some(Text::Line(Cow::Borrowed(s)));
    }
    if s.contains(SEPARATORS) {
        return Some(Text::Line(escaped(s).into()));
    }
    let full = serde_yaml::to_string(&Value::String(s.to_string())).ok()?;
    let line = full.strip_suffix('\n')?;
    if !line.contains('\n') {
        Some(Text::Line(line.to_string().into()))
    } else if full.starts_with('|') {
        // Whole: the trailing empty lines of a `|+` block are part of the value.
        Some(Text::Block(full))
    } else {
        None
    }
}

/// The line and paragraph separators. serde_yaml writes them raw inside quotes, then the
/// indentation of a continuation line (placed for the string alone, not where it stands):
/// YAML 1.1 readers take them for line breaks and drop that indentation, a YAML 1.2 reader
/// (to which they are not breaks) would keep it. Escaped they read the same everywhere.
const SEPARATORS: [char; 2] = ['\u{2028}', '\u{2029}'];

/// `s` double-quoted, everything but printable ASCII escaped (`\uXXXX`, `\UXXXXXXXX`: the
/// same in YAML 1.1 and 1.2).
fn escaped(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 8);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// A float as serde_yaml writes it, with what YAML 1.1 needs to read it as one: a `.` in
/// the mantissa and a sign on the exponent (`1e30` is a string to PyYAML; `1.0e+30` is
/// a float to every reader).
fn float(value: &Value) -> Option<String> {
    let text = serde_yaml::to_string(value).ok()?;
    let text = text.trim_end();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (text, None),
    };
    let digits = mantissa.trim_start_matches(['-', '+']);
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Some(text.to_string()); // .inf, .nan: not in JSON, kept as they are
    }
    let mut out = mantissa.to_string();
    if !mantissa.contains('.') {
        out.push_str(".0");
    }
    if let Some(exponent) = exponent {
        out.push('e');
        if !exponent.starts_with(['-', '+']) {
            out.push('+');
        }
        out.push_str(exponent);
    }
    Some(out)
}

/// Whether a reader of berth's output would take the plain scalar `s` for something other
/// than a string: a YAML 1.1 reader (the type regexps of yaml.org/type: bool with `y`/`n`,
/// null, int with `0b`/`0x`/octal/`_`/base 60, float, timestamp, merge, value), PyYAML's
/// reading of them, go-yaml v2's (kubectl: `_` removed, then Go's numbers with `0o`/`0B`
/// prefixes), YAML 1.2's core schema, or ruamel.yaml's YAML 1.2 reading (which takes `_` in
/// numbers: `+__` is an int to it, and one it fails to read).
pub fn read_as_another_type(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "~", "null", "Null", "NULL", "",
        "<<", "=",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    // Every numeric or date form starts with a digit, a sign or a dot.
    if !s.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)) {
        return false;
    }
    static YAML: OnceLock<Option<RegexSet>> = OnceLock::new();
    static GO: OnceLock<Option<(Regex, Regex)>> = OnceLock::new();
    let yaml = YAML.get_or_init(|| {
        RegexSet::new([
            // YAML 1.1 int
            r"^[-+]?0b[0-1_]+$",
            r"^[-+]?0[0-7_]+$",
            r"^[-+]?(0|[1-9][0-9_]*)$",
            r"^[-+]?0x[0-9a-fA-F_]+$",
            r"^[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+$",
            // YAML 1.1 float, and PyYAML's variant of it
            r"^[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?$",
            r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*$",
            r"^[-+]?\.(inf|Inf|INF)$",
            r"^\.(nan|NaN|NAN)$",
            r"^[-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?$",
            r"^\.[0-9][0-9_]*([eE][-+][0-9]+)?$",
            // YAML 1.1 timestamp
            r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?([ \t]*Z|[-+][0-9]{1,2}(:[0-9]{2})?)?$",
            // YAML 1.2 core
            r"^[-+]?[0-9]+$",
            r"^0o[0-7]+$",
            r"^0x[0-9a-fA-F]+$",
            r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$",
            // ruamel.yaml's YAML 1.2 int and float (resolver.py)
            r"^[-+]?0o?[0-7_]+$",
            r"^[-+]?[0-9_]+$",
            r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?$",
            r"^[-+]?\.[0-9_]+([eE][-+][0-9]+)?$",
        ])
        .ok()
    });
    let go = GO.get_or_init(|| {
        Some((
            Regex::new(r"^[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[0-9]+)$").ok()?,
            Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").ok()?,
        ))
    });
    // Without the patterns (they are constants; this does not happen) quote to be safe.
    let (Some(yaml), Some((go_int, go_float))) = (yaml, go) else {
        return true;
    };
    if yaml.is_match(s) {
        return true;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    go_int.is_match(&plain) || go_float.is_match(&plain)
}

/// Whether serde_yaml certainly writes `s` as a plain scalar: it cannot read as a number
/// (it starts with a letter, `_` or `/`, or with a digit and has a letter no number has,
/// like `10Gi` or `500m`), is not a null or boolean word, holds only printable ASCII, and
/// has none of the sequences that make libyaml quote (`: `, ` #`, a trailing `:` or space).
fn is_plain(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    let not_a_number = first.is_ascii_alphabetic()
        || first == b'_'
        || first == b'/'
        || (first.is_ascii_digit()
            && bytes.iter().any(|b| {
                // Numbers hold hex digits, exponents and the 0x/0o/0b prefixes, no more.
                b.is_ascii_alphabetic() && !b"abcdefABCDEFxXoO".contains(b)
            }));
    if !not_a_number {
        return false;
    }
    if matches!(
        s,
        "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
    ) {
        return false;
    }
    if !bytes.iter().all(|b| (b' '..=b'~').contains(b)) {
        return false;
    }
    if matches!(bytes.last(), Some(b' ' | b':')) {
        return false;
    }
    !bytes.windows(2).any(|w| w == b": " || w == b" #")
}

/// Whether serde_yaml certainly writes `s` single-quoted: one line of printable ASCII that
/// starts with a character libyaml never leaves plain there (`{`, `[`, `#`, quotes, …), or
/// digits with at most one `.` between them, which read as a number (`2`, `0.5`) or as a
/// string of digits (`007`) and are quoted to stay strings.
fn is_single_quoted(s: &str) -> bool {
    let bytes = s.as_bytes();
    let indicator = bytes
        .first()
        .is_some_and(|b| b"#,[]{}&*!|>'\"%@`".contains(b))
        && bytes.iter().all(|b| (b' '..=b'~').contains(b));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let decimal = match s.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(s),
    };
    indicator || decimal
}

/// The generated values of the property tests, shared with tests/yaml.rs.
#[cfg(test)]
#[path = "../../tests/support/yaml_values.rs"]
mod values;

#[cfg(test)]
mod tests {
    use super::values::value;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Written without falling back, and byte for byte what serde_yaml writes.
    fn same(value: &Value) {
        let mut out = String::new();
        assert!(
            write_root(value, &mut out).is_some(),
            "fell back for {value}"
        );
        assert_eq!(out, serde_yaml::to_string(value).unwrap(), "for {value}");
    }

    #[test]
    fn nested_objects_as_serde_yaml_writes_them() {
        let mut object = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "etl-dev", "labels": {"app.kubernetes.io/name": "x", "team": "a b"},
                "annotations": {"berth/env-sources": "{\"A\":\"project (secret x/y)\"}", "empty": ""}},
            "spec": {"replicas": 1, "selector": {}, "template": {"spec": {"containers": [
                {"name": "mage", "image": "mageai/mageai:0.9.76", "args": [], "env": [
                    {"name": "P", "value": "5432"}, {"name": "B", "value": "true"},
                    {"name": "C", "value": "0.1"}, {"name": "D", "value": "007"},
                    {"name": "E", "value": "a: b"}, {"name": "F", "value": "x #y"},
                    {"name": "G", "value": "- x"}, {"name": "I", "value": null},
                    {"name": "J", "value": 1.5}, {"name": "K", "value": "it's"},
                    {"name": "L", "value": "ünïcode"}, {"name": "M", "value": "x\ty"}]}],
                "tolerations": [[], [1, [2, 3]], {}, [{"a": 1}]]}}},
        });
        same(&object);
        same(&json!({}));
        same(&json!([]));
        same(&json!([{"a": [{"b": []}]}, "x", {"c": {"d": [1]}}]));
        same(&json!({"k": "x".repeat(200), "y".repeat(128): 1}));
        // Multi-line strings and long keys, placed at every depth.
        object["data"] = json!({"script.sh": "#!/bin/sh\necho hi\n", "b": "  x\n\n", "c": "x\n"});
        same(&object);
        let long = "k".repeat(129);
        same(
            &json!({&long: {"a": 1, "b": [1, {"c": "x\ny"}]}, "x": [{&long: [1, 2], "z": " a\nb"}],
            "nl\nkey": {"m": "p\nq"}, "s": [["a\nb", "c"]]}),
        );
    }

    /// Seed-independent rule of `berth render`: output is for `kubectl apply -f -`, which
    /// reads YAML 1.1. Strings it would take for booleans, numbers, nulls or dates are
    /// quoted; so are they as keys.
    #[test]
    fn yaml_1_1_scalars_are_quoted() {
        let value = json!({"data": {"a": "off", "b": "y", "c": "N", "d": "yes", "e": "On",
            "f": "0o17", "g": "1_000", "h": "12:30", "i": "2001-12-14", "j": "0x_1F",
            "k": "=", "l": "<<", "m": "~", "n": "1.", "o": "+1", "p": "0B1", "q": "-.inf",
            "y": "plain", "on": 1, "10Gi": "500m"}});
        let text = to_string(&value);
        for quoted in [
            "'off'",
            "'y'",
            "'N'",
            "'yes'",
            "'On'",
            "'0o17'",
            "'1_000'",
            "'12:30'",
            "'2001-12-14'",
            "'0x_1F'",
            "'='",
            "'<<'",
            "'~'",
            "'1.'",
            "'+1'",
            "'0B1'",
            "'-.inf'",
        ] {
            assert!(
                text.contains(&format!(": {quoted}\n")),
                "{quoted} in\n{text}"
            );
        }
        assert!(
            text.contains("  'y': plain\n  'on': 1\n  10Gi: 500m\n"),
            "{text}"
        );
        assert_eq!(
            to_string(&json!([1e30, 2.5e20, 1.5e-7, 0.5])),
            "- 1.0e+30\n- 2.5e+20\n- 1.5e-7\n- 0.5\n"
        );
        assert_eq!(
            to_string(&json!({"a": ["x\u{2028}y\u{1F600}\"\n"]})),
            "a:\n- \"x\\u2028y\\U0001F600\\\"\\u000A\"\n"
        );
    }

    /// The sample repository's objects are written without the fallback and read back by
    /// serde_yaml (tests/yaml.rs reads them in PyYAML, ruamel.yaml and kubectl too).
    #[test]
    fn rendered_sample_repo_takes_the_fast_path_and_reads_back() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
        let desired = crate::desired(crate::source::read_dir(&root).unwrap(), &Default::default());
        assert!(!desired.has_errors());
        for object in &desired.objects {
            let mut out = String::new();
            assert!(write_root(object, &mut out).is_some());
            assert_eq!(&serde_yaml::from_str::<Value>(&out).unwrap(), object);
        }
    }

    /// Whether `value` holds something YAML 1.1 reads otherwise in serde_yaml's spelling:
    /// an ambiguous string, a line or paragraph separator, or a float without a `.` or a
    /// signed exponent.
    fn needs_yaml_1_1_care(value: &Value) -> bool {
        let text = |s: &str| read_as_another_type(s) || s.contains(SEPARATORS);
        match value {
            Value::String(s) => text(s),
            Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
                serde_yaml::to_string(value)
                    .ok()
                    .as_deref()
                    .map(str::trim_end)
                    != float(value).as_deref()
            }
            Value::Array(items) => items.iter().any(needs_yaml_1_1_care),
            Value::Object(map) => map.iter().any(|(k, v)| text(k) || needs_yaml_1_1_care(v)),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every value is written without the fallback, read back the same by serde_yaml,
        /// and is byte for byte serde_yaml's text whenever nothing in it needs YAML 1.1
        /// care. (The real YAML 1.1 and 1.2 readers read the same values in tests/yaml.rs.)
        #[test]
        fn serde_yaml_reads_back_the_value(v in value()) {
            let mut out = String::new();
            prop_assert!(write_root(&v, &mut out).is_some(), "fell back");
            prop_assert_eq!(&serde_yaml::from_str::<Value>(&out).unwrap(), &v);
            if !needs_yaml_1_1_care(&v) {
                prop_assert_eq!(out, serde_yaml::to_string(&v).unwrap());
            }
        }
    }

    /// The measured reason for this module (see the module comment). Run with
    /// `cargo test --release --lib emit::tests::measure -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
        let desired = crate::desired(crate::source::read_dir(&root).unwrap(), &Default::default());
        // The sample's objects, repeated to the size of a 1,000-workspace render.
        let objects: Vec<Value> = desired
            .objects
            .iter()
            .cycle()
            .take(desired.objects.len() * 170)
            .cloned()
            .collect();
        let time = |f: &dyn Fn(&Value) -> String| {
            (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    let bytes: usize = objects.iter().map(|o| f(o).len()).sum();
                    (start.elapsed(), bytes)
                })
                .min()
                .unwrap()
        };
        let (ours, bytes) = time(&to_string);
        let (theirs, _) = time(&|v| serde_yaml::to_string(v).unwrap());
        println!(
            "{} objects, {bytes} bytes: emit {ours:?}, serde_yaml {theirs:?} ({:.1}x)",
            objects.len(),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
