//! YAML text of JSON values, byte for byte what `serde_yaml::to_string` writes, several
//! times faster: rendering and diffing thousands of objects spent most of their time in
//! serde_yaml's emitter.
//!
//! Block mappings and sequences (2-space indent, sequences in mappings not indented, empty
//! ones as `{}` / `[]`), integers, booleans and null are written directly, and so are
//! strings that can only be plain scalars. Every other scalar is formatted by serde_yaml
//! itself; an object with a scalar that serde_yaml would spread over several lines (a
//! multi-line string), or a key too long to be a simple key, is written by serde_yaml as a
//! whole. Tests compare both on generated values.

use serde_json::Value;

/// The YAML document of `value`, as `serde_yaml::to_string` writes it.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    if write_root(value, &mut out).is_none() {
        out = serde_yaml::to_string(value).unwrap_or_default();
    }
    out
}

/// `None` when the value needs serde_yaml's full emitter.
fn write_root(value: &Value, out: &mut String) -> Option<()> {
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(map, 0, false, out),
        Value::Array(items) if !items.is_empty() => write_sequence(items, 0, false, out),
        other => {
            scalar(other, out)?;
            out.push('\n');
            Some(())
        }
    }
}

fn indent(out: &mut String, width: usize) {
    out.extend(std::iter::repeat_n(' ', width));
}

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
        // libyaml writes longer keys as complex keys (`? key`).
        if key.len() > 128 {
            return None;
        }
        string(key, out)?;
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
                scalar(other, out)?;
                out.push('\n');
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
        match item {
            Value::Object(m) if !m.is_empty() => write_mapping(m, width + 2, true, out)?,
            Value::Array(inner) if !inner.is_empty() => {
                write_sequence(inner, width + 2, true, out)?
            }
            other => {
                scalar(other, out)?;
                out.push('\n');
            }
        }
    }
    Some(())
}

/// A scalar (or empty collection) on one line.
fn scalar(value: &Value, out: &mut String) -> Option<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_i64() || n.is_u64() => out.push_str(&n.to_string()),
        Value::String(s) => string(s, out)?,
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        other => out.push_str(&delegated(other)?),
    }
    Some(())
}

fn string(s: &str, out: &mut String) -> Option<()> {
    if is_plain(s) {
        out.push_str(s);
    } else if is_single_quoted(s) {
        out.push('\'');
        out.push_str(&s.replace('\'', "''"));
        out.push('\'');
    } else {
        out.push_str(&delegated(&Value::String(s.to_string()))?);
    }
    Some(())
}

/// The scalar as serde_yaml writes it on its own; `None` if that takes several lines.
fn delegated(value: &Value) -> Option<String> {
    let text = serde_yaml::to_string(value).ok()?;
    let line = text.strip_suffix('\n')?;
    (!line.contains('\n')).then(|| line.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn same(value: &Value) {
        let fast = to_string(value);
        let slow = serde_yaml::to_string(value).unwrap();
        assert_eq!(fast, slow, "for {value}");
    }

    /// Written without serde_yaml's emitter for the whole, and the same.
    fn fast(value: &Value) {
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
                    {"name": "N", "value": "5432"}, {"name": "B", "value": "true"},
                    {"name": "C", "value": "0.1"}, {"name": "D", "value": "007"},
                    {"name": "E", "value": "a: b"}, {"name": "F", "value": "x #y"},
                    {"name": "G", "value": "- x"}, {"name": "I", "value": null},
                    {"name": "J", "value": 1.5}, {"name": "K", "value": "it's"},
                    {"name": "L", "value": "ünïcode"}, {"name": "M", "value": "x\ty"}]}],
                "tolerations": [[], [1, [2, 3]], {}, [{"a": 1}]]}}},
        });
        fast(&object);
        fast(&json!({}));
        fast(&json!([]));
        fast(&json!([{"a": [{"b": []}]}, "x", {"c": {"d": [1]}}]));
        fast(&json!({"k": "x".repeat(200), "y".repeat(128): 1}));
        // Multi-line strings and long keys: serde_yaml writes the whole object.
        object["data"] = json!({"script.sh": "#!/bin/sh\necho hi\n", "b": "  x\n\n"});
        same(&object);
        same(&json!({"y".repeat(129): 1}));
    }

    #[test]
    fn rendered_sample_repo_takes_the_fast_path() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
        let desired = crate::desired(crate::source::read_dir(&root).unwrap(), &Default::default());
        assert!(!desired.has_errors());
        for object in &desired.objects {
            // Objects with multi-line strings (scripts) are serde_yaml's to write.
            if !object.to_string().contains("\\n") {
                fast(object);
            } else {
                same(object);
            }
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z_/][a-zA-Z0-9_./:@ #-]{0,12}",
            "[ -~]{0,10}",
            "[0-9.+-]{1,6}[a-zA-Z]{0,2}",
            "[0-9][0-9a-zA-Z.:# -]{0,6}",
            "[0-9]{1,4}(\\.[0-9]{0,4})?",
            "[#,\\[\\]{}&*!|>'\"%@`][ -~]{0,8}",
            prop::sample::select(vec![
                "",
                "null",
                "~",
                "true",
                "False",
                "yes",
                "NO",
                "0x1F",
                "0o7",
                "-0x2",
                ".inf",
                "-.Inf",
                ".nan",
                "1e3",
                "1_000",
                "0",
                "-0",
                "+1",
                "00",
                "a:",
                "a :b",
                "- a",
                "-a",
                "---",
                "...",
                "? x",
                "%x",
                "@x",
                "`x",
                "x\ty",
                "é",
                "a\n",
                "\nb",
                " a",
                "10Gi",
                "500m",
                "1e5",
                "1E5x",
                "0x1F",
                "0b1",
                "1.5Gi",
                "2k",
                "{\"a\": 1}",
                "[x]",
                "'q'",
                "\"q\"",
                "{x ",
                "# c",
                "|",
                ">-",
                "1Gi ",
                "9: x",
                "7 #x",
                "0o17",
                "0O1",
                "2",
                "0.5",
                "00.5",
                "007",
                "1.",
                ".5",
                "1.2.3",
                "123456789012345678901234567890123456789012",
            ])
            .prop_map(str::to_string),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..5)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn writes_what_serde_yaml_writes(v in value()) {
            prop_assert_eq!(to_string(&v), serde_yaml::to_string(&v).unwrap());
        }
    }
}
