//! YAML text of JSON values that every reader of berth's output reads back as the same
//! value: kubectl (go-yaml v2, YAML 1.1), Mage (PyYAML, YAML 1.1: the executor files in
//! ConfigMaps) and YAML 1.2 readers (serde_yaml, yaml-rust2).
//!
//! Why hand-written, next to serde_yaml. Two reasons, the first measured (`cargo test
//! --release --lib emit::tests::measure -- --ignored --nocapture`: the sample repository's
//! rendered objects ×170, 7,650 objects and 7.9 MB of YAML, about a 1,000-workspace render;
//! 2 cores): 47 ms here against 123 ms through serde_yaml, 2.6× faster.
//! - **Speed.** Rendering and diffing thousands of objects spent most of their time in
//!   serde_yaml's emitter.
//! - **Correctness.** serde_yaml (unmaintained since 2024) writes YAML 1.2 and leaves
//!   `off`, `y`, `yes`, `0o17`, `1_000`, `12:30`, `2001-12-14`… plain; a YAML 1.1 reader
//!   takes them for booleans, numbers or dates, and kubectl refuses a ConfigMap holding
//!   one ("cannot unmarshal bool into … string"). It has no option for the scalar style;
//!   its maintained forks (serde_norway, serde_yaml_ng) have the same behaviour (quoting is
//!   an open request in both), and yaml-rust2's emitter leaves `y` and `n` plain on
//!   purpose. Here every string that any of those readers would type otherwise
//!   ([`read_as_another_type`]) is single-quoted, and floats keep a `.` and a signed
//!   exponent (`1.0e+30`), which YAML 1.1 requires.
//!
//! Everything else is byte for byte what `serde_yaml::to_string` writes (tests compare
//! both): block mappings and sequences (2-space indent, sequences in mappings not
//! indented, empty ones as `{}` / `[]`), keys over 128 bytes or on several lines as
//! complex keys (`? key`), plain scalars where they are certainly plain, and every other
//! scalar formatted by serde_yaml itself — multi-line strings as its block scalars,
//! re-indented to where they stand.

use regex::{Regex, RegexSet};
use serde_json::Value;
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
enum Text {
    Line(String),
    Block(String),
}

/// A scalar (or empty collection) at the current position, then a line break; a block
/// scalar's lines go under the collection at `width`.
fn write_scalar(value: &Value, width: usize, out: &mut String) -> Option<()> {
    let text = match value {
        Value::Null => Text::Line("null".into()),
        Value::Bool(b) => Text::Line(if *b { "true" } else { "false" }.into()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Text::Line(n.to_string()),
        Value::Number(_) => Text::Line(float(value)?),
        Value::String(s) => string(s)?,
        Value::Object(m) if m.is_empty() => Text::Line("{}".into()),
        Value::Array(a) if a.is_empty() => Text::Line("[]".into()),
        _ => return None,
    };
    write_text(text, width, out);
    Some(())
}

fn write_text(text: Text, width: usize, out: &mut String) {
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

fn string(s: &str) -> Option<Text> {
    if read_as_another_type(s) || is_single_quoted(s) {
        // Every string read_as_another_type finds is one line of printable ASCII.
        return Some(Text::Line(format!("'{}'", s.replace('\'', "''"))));
    }
    if is_plain(s) {
        return Some(Text::Line(s.to_string()));
    }
    let full = serde_yaml::to_string(&Value::String(s.to_string())).ok()?;
    let line = full.strip_suffix('\n')?;
    if !line.contains('\n') {
        Some(Text::Line(line.to_string()))
    } else if full.starts_with('|') {
        // Whole: the trailing empty lines of a `|+` block are part of the value.
        Some(Text::Block(full))
    } else {
        None
    }
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
/// prefixes), or YAML 1.2's core schema.
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

#[cfg(test)]
mod tests {
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
    }

    /// An in-process YAML 1.1 reader: yaml-rust2's parser for the syntax (the same in 1.1
    /// for what is written here), and plain scalars typed by a transcription of PyYAML's
    /// implicit resolvers or of go-yaml v2's `resolve` (kubectl). Written apart from
    /// `read_as_another_type` on purpose. Booleans, nulls and decimal numbers come back as
    /// such; other readings (octal, dates, …) as text no generated value holds.
    mod yaml11 {
        use regex::Regex;
        use serde_json::{Map, Value, json};
        use yaml_rust2::parser::{Event, Parser};
        use yaml_rust2::scanner::TScalarStyle;

        #[derive(Clone, Copy, Debug)]
        pub enum Reader {
            PyYaml,
            GoYamlV2,
        }

        pub fn read(text: &str, reader: Reader) -> Value {
            enum Frame {
                Seq(Vec<Value>),
                Map(Map<String, Value>, Option<String>),
            }
            let mut parser = Parser::new_from_str(text);
            let mut stack: Vec<Frame> = Vec::new();
            let mut root = Value::Null;
            loop {
                let (event, _) = parser.next_token().expect("emitted YAML parses");
                let value = match event {
                    Event::StreamEnd => break,
                    Event::SequenceStart(..) => {
                        stack.push(Frame::Seq(Vec::new()));
                        continue;
                    }
                    Event::MappingStart(..) => {
                        stack.push(Frame::Map(Map::new(), None));
                        continue;
                    }
                    Event::SequenceEnd => match stack.pop() {
                        Some(Frame::Seq(items)) => Value::Array(items),
                        _ => panic!("unbalanced"),
                    },
                    Event::MappingEnd => match stack.pop() {
                        Some(Frame::Map(map, _)) => Value::Object(map),
                        _ => panic!("unbalanced"),
                    },
                    Event::Scalar(text, style, _, _) => {
                        if style == TScalarStyle::Plain {
                            resolve(&text, reader)
                        } else {
                            Value::String(text)
                        }
                    }
                    _ => continue,
                };
                match stack.last_mut() {
                    None => root = value,
                    Some(Frame::Seq(items)) => items.push(value),
                    Some(Frame::Map(map, key)) => match key.take() {
                        None => {
                            *key = Some(match value {
                                Value::String(s) => s,
                                other => format!("<key {other}>"),
                            })
                        }
                        Some(k) => {
                            map.insert(k, value);
                        }
                    },
                }
            }
            root
        }

        fn resolve(text: &str, reader: Reader) -> Value {
            match reader {
                Reader::PyYaml => pyyaml(text),
                Reader::GoYamlV2 => go_yaml_v2(text),
            }
        }

        /// PyYAML's `Resolver.add_implicit_resolver` regexps (resolver.py), YAML 1.1.
        fn pyyaml(text: &str) -> Value {
            let is = |pattern: &'static str| re(pattern).is_match(text);
            if is(
                r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
            ) {
                return json!(matches!(
                    text,
                    "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON"
                ));
            }
            if is(
                r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            ) {
                return text
                    .replace('_', "")
                    .parse::<f64>()
                    .ok()
                    .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                    .unwrap_or_else(|| other("float", text));
            }
            if is(
                r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
            ) {
                return decimal(&text.replace('_', "")).unwrap_or_else(|| other("int", text));
            }
            if is(r"^(?:~|null|Null|NULL|)$") {
                return Value::Null;
            }
            if is(r"^(?:<<|=)$") {
                return other("merge or value", text);
            }
            if is(
                r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
            ) {
                return other("timestamp", text);
            }
            Value::String(text.to_string())
        }

        /// go-yaml v2's `resolve` (resolve.go): a table of words, then by the first
        /// character, numbers with `_` removed and Go's base prefixes.
        fn go_yaml_v2(text: &str) -> Value {
            match text {
                "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On"
                | "ON" | "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off"
                | "Off" | "OFF" => {
                    return json!(matches!(
                        text,
                        "y" | "Y"
                            | "yes"
                            | "Yes"
                            | "YES"
                            | "true"
                            | "True"
                            | "TRUE"
                            | "on"
                            | "On"
                            | "ON"
                    ));
                }
                "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
                "<<" | ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf"
                | "+.INF" | "-.inf" | "-.Inf" | "-.INF" => return other("special", text),
                _ => {}
            }
            let float =
                |s: &str| re(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").is_match(s);
            match text.chars().next() {
                Some(c) if c.is_ascii_digit() || c == '+' || c == '-' => {
                    let plain = text.replace('_', "");
                    if go_int(&plain) {
                        return decimal(&plain).unwrap_or_else(|| other("int", text));
                    }
                    if float(&plain) {
                        return plain
                            .parse::<f64>()
                            .ok()
                            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                            .unwrap_or_else(|| other("float", text));
                    }
                }
                Some('.') if float(text) => return other("float", text),
                _ => {}
            }
            Value::String(text.to_string())
        }

        /// A compiled pattern, compiled once per thread.
        fn re(pattern: &'static str) -> Regex {
            thread_local! {
                static CACHE: std::cell::RefCell<std::collections::HashMap<&'static str, Regex>> =
                    Default::default();
            }
            CACHE.with(|cache| {
                cache
                    .borrow_mut()
                    .entry(pattern)
                    .or_insert_with(|| Regex::new(pattern).unwrap())
                    .clone()
            })
        }

        /// A reading no generated value can equal (generated text has no control bytes).
        fn other(what: &str, text: &str) -> Value {
            json!(format!("\u{1}{what} {text}"))
        }

        /// Whether Go's `strconv.ParseInt(s, 0, 64)` (or ParseUint) accepts `s`.
        fn go_int(s: &str) -> bool {
            let digits = s.trim_start_matches(['+', '-']);
            let (radix, body) = match digits.get(..2) {
                Some("0x" | "0X") => (16, &digits[2..]),
                Some("0o" | "0O") => (8, &digits[2..]),
                Some("0b" | "0B") => (2, &digits[2..]),
                _ if digits.len() > 1 && digits.starts_with('0') => (8, &digits[1..]),
                _ => (10, digits),
            };
            s.len() - digits.len() <= 1
                && !body.is_empty()
                && body.chars().all(|c| c.is_digit(radix))
        }

        /// A plain decimal integer as JSON (what the emitter writes for numbers); other
        /// integer forms are not written for numbers, so they read as a marker.
        fn decimal(text: &str) -> Option<Value> {
            if let Ok(n) = text.parse::<i64>() {
                return Some(json!(n));
            }
            text.parse::<u64>().ok().map(|n| json!(n))
        }
    }

    #[test]
    fn rendered_sample_repo_takes_the_fast_path_and_reads_back_everywhere() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
        let desired = crate::desired(crate::source::read_dir(&root).unwrap(), &Default::default());
        assert!(!desired.has_errors());
        for object in &desired.objects {
            let mut out = String::new();
            assert!(write_root(object, &mut out).is_some());
            assert_eq!(&serde_yaml::from_str::<Value>(&out).unwrap(), object);
            for reader in [yaml11::Reader::PyYaml, yaml11::Reader::GoYamlV2] {
                assert_eq!(&yaml11::read(&out, reader), object, "{reader:?}:\n{out}");
            }
        }
    }

    /// Kept in one piece: one list of string shapes, a line each.
    pub fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z_/][a-zA-Z0-9_./:@ #-]{0,12}",
            "[ -~]{0,10}",
            "[0-9.+-]{1,6}[a-zA-Z]{0,2}",
            "[0-9][0-9a-zA-Z.:# -]{0,6}",
            "[0-9]{1,4}(\\.[0-9]{0,4})?",
            "[-+.]?[0-9_]{1,4}[.:_xXoObBeE+-]?[0-9a-fA-F_:.]{0,5}",
            "[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,2})?( ?Z|[-+][0-9]{1,2})?)?",
            "[#,\\[\\]{}&*!|>'\"%@`][ -~]{0,8}",
            "[ -~]{0,6}\n[ -~\n]{0,8}",
            prop::sample::select(vec![
                "",
                "null",
                "~",
                "true",
                "False",
                "yes",
                "NO",
                "y",
                "Y",
                "n",
                "N",
                "on",
                "Off",
                "OFF",
                "=",
                "<<",
                "0x1F",
                "0o7",
                "0O7",
                "0B1",
                "0b1",
                "-0x2",
                "0x_1F",
                "1_000",
                ".inf",
                "-.Inf",
                "+.inf",
                ".nan",
                "1e3",
                "0",
                "-0",
                "+1",
                "00",
                "017",
                "1.",
                ".5",
                "._5",
                "1:20",
                "1:20:30.5",
                "12:30",
                "2001-12-14",
                "2001-12-14t21:59:43.10-05:00",
                "1.2.3",
                ".",
                "...",
                "a:",
                "a :b",
                "- a",
                "-a",
                "---",
                "? x",
                "%x",
                "@x",
                "`x",
                "x\ty",
                "é",
                "a\n",
                "\nb",
                " a\nb",
                "a \nb",
                "a\n\n",
                "x\r\ny",
                " a",
                "10Gi",
                "500m",
                "1E5x",
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
                "2",
                "0.5",
                "00.5",
                "007",
                "1e+3",
                "1E3",
                "0.1e5",
                "123456789012345678901234567890123456789012",
            ])
            .prop_map(str::to_string),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => text(),
            1 => "[a-z]{120,140}",
            1 => "[a-z]{1,3}\n[a-z]{1,3}",
        ]
    }

    pub fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            prop_oneof![
                Just(1e30),
                Just(2.5e20),
                Just(-1.5e-7),
                Just(1e16),
                Just(0.1)
            ]
            .prop_map(|f| json!(f)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..5)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// Whether `value` holds something YAML 1.1 reads otherwise in serde_yaml's spelling:
    /// an ambiguous string, or a float without a `.` or a signed exponent.
    fn needs_yaml_1_1_care(value: &Value) -> bool {
        match value {
            Value::String(s) => read_as_another_type(s),
            Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
                serde_yaml::to_string(value)
                    .ok()
                    .as_deref()
                    .map(str::trim_end)
                    != float(value).as_deref()
            }
            Value::Array(items) => items.iter().any(needs_yaml_1_1_care),
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| read_as_another_type(k) || needs_yaml_1_1_care(v)),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every value is written without the fallback, read back the same by YAML 1.2
        /// (serde_yaml) and by both YAML 1.1 readers, and is byte for byte serde_yaml's
        /// text whenever nothing in it needs YAML 1.1 care.
        #[test]
        fn every_reader_reads_back_the_value(v in value()) {
            let mut out = String::new();
            prop_assert!(write_root(&v, &mut out).is_some(), "fell back");
            prop_assert_eq!(&serde_yaml::from_str::<Value>(&out).unwrap(), &v);
            for reader in [yaml11::Reader::PyYaml, yaml11::Reader::GoYamlV2] {
                prop_assert_eq!(&yaml11::read(&out, reader), &v, "{:?}:\n{}", reader, out);
            }
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
