//! What Mage's own code does with what berth gives it. Mage's open-source core (`mage-ai`
//! on PyPI, pinned in [`MAGE_VERSION`]) is the specification here, the way kube-apiserver
//! is for Kubernetes objects: each function names the Mage function it follows, and the
//! test suite runs that Mage code on generated inputs and compares (tests/mage.rs, with
//! the oracle in tests/mage/).
//!
//! Mage works on Python dicts read by PyYAML, so these functions work on
//! `serde_json::Value`s as Mage's files are written (snake_case keys, no rewriting), and
//! answer with the Kubernetes JSON the Python client would send.

pub mod activity;
pub mod executor;

use serde_json::Value;

/// The mage-ai release whose code berth follows and tests against.
pub const MAGE_VERSION: &str = "0.9.80";

/// Python's truth value of a JSON value (`if x:`): null, false, 0, "", [] and {} are false.
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
    }
}

/// Python's `str(value)` of a scalar, for messages.
pub fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}
