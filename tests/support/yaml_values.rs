//! Generated JSON values for the YAML emitter's property tests (`src/render/emit.rs`),
//! shared by its unit tests (included there with `#[path]`) and by tests/yaml.rs, which
//! reads them back in real YAML 1.1 and 1.2 readers: nested mappings and sequences of
//! nulls, booleans, integers (all of i64 and u64), floats, and strings of every shape a
//! reader could take for something else.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Value, json};

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
            "+__",
            "-_",
            "._",
            "0o_",
            "\u{85}",
            "a\u{2028}b",
            "x\n\u{2029}y",
            "\u{1F600}\u{2028}\t\"",
            "\u{feff}x",
            "\u{a0}",
            "ü: x",
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
