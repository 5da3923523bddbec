//! Whether the API server reads a value as the Kubernetes type it stands for: the one
//! round trip through the k8s-openapi types that validation (Mage's executor settings,
//! ZenML's workload-manager settings) and rendering share.

use serde_json::Value;

/// Whether the API server reads `value` as a `T` whole: it decodes, and nothing is lost
/// on the way (a key it does not know is dropped).
pub fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &Value,
) -> Result<(), String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_lost(value, &back, "") {
        Some(path) => Err(format!(
            "it does not know `{}` and drops it",
            path.trim_start_matches('.')
        )),
        None => Ok(()),
    }
}

/// The first key of `sent` that `kept` lacks (nulls count as absent).
pub fn first_lost(sent: &Value, kept: &Value, path: &str) -> Option<String> {
    match (sent, kept) {
        (Value::Object(s), Value::Object(k)) => s.iter().find_map(|(key, v)| {
            if v.is_null() {
                return None;
            }
            let here = format!("{path}.{key}");
            match k.get(key) {
                None => Some(here),
                Some(kv) => first_lost(v, kv, &here),
            }
        }),
        (Value::Array(s), Value::Array(k)) => s
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (a, b))| first_lost(a, b, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Requests and limits as a Kubernetes `ResourceRequirements` (quantities as strings, the
/// way the API server prints them, also when git writes a plain number).
pub fn resources_json(resources: &crate::model::Resources) -> Value {
    let side = |m: &std::collections::BTreeMap<String, crate::model::Quantity>| {
        Value::Object(
            m.iter()
                .map(|(k, q)| (k.clone(), Value::String(q.as_string())))
                .collect(),
        )
    };
    let mut out = serde_json::Map::new();
    if !resources.requests.is_empty() {
        out.insert("requests".into(), side(&resources.requests));
    }
    if !resources.limits.is_empty() {
        out.insert("limits".into(), side(&resources.limits));
    }
    Value::Object(out)
}
