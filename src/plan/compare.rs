//! Field-level comparison of a desired object with its live version, without false drift:
//! only fields berth sets are compared (the server's defaults and other managers' fields are
//! not berth's business), quantities compare by amount (`1000m` = `1`), and list items are
//! compared position by position.

use crate::load::diagnostic::field_path;
use crate::load::yaml::escape_segment;
use serde_json::Value;

/// Paths (`spec.template.spec.containers[0].image`) of desired fields that live differs in.
pub fn changed_fields(desired: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(desired, Some(live), String::new(), &mut out);
    out.into_iter().map(|p| field_path(&p)).collect()
}

fn walk(desired: &Value, live: Option<&Value>, pointer: String, out: &mut Vec<String>) {
    match (desired, live) {
        (Value::Object(d), Some(Value::Object(l))) => {
            for (k, v) in d {
                walk(v, l.get(k), format!("{pointer}/{}", escape_segment(k)), out);
            }
        }
        (Value::Array(d), Some(Value::Array(l))) if d.len() == l.len() => {
            for (i, v) in d.iter().enumerate() {
                walk(v, l.get(i), format!("{pointer}/{i}"), out);
            }
        }
        (d, Some(l)) if same_scalar(d, l) => {}
        // An empty map or list berth sets is the same as the server leaving it out.
        (Value::Object(d), None) if d.is_empty() => {}
        (Value::Array(d), None) if d.is_empty() => {}
        (Value::Null, None) => {}
        _ => out.push(pointer),
    }
}

/// Whether `live` holds exactly `desired`'s values wherever `desired` sets one (fields
/// only live has — the server's defaults, other managers' fields — do not count), so that
/// `desired` can stand in for `live` wherever a plan reads a field `desired` sets. Stricter
/// than [`changed_fields`] being empty: values must be equal as written (`1000m` is not
/// `1` here), list lengths too; like it, an empty map or list or a null that live leaves
/// out is no difference.
pub fn same_where_set(desired: &Value, live: &Value) -> bool {
    let mut todo = vec![(desired, Some(live))];
    while let Some((d, l)) = todo.pop() {
        match (d, l) {
            (Value::Object(d), Some(Value::Object(l))) => {
                todo.extend(d.iter().map(|(k, v)| (v, l.get(k))));
            }
            (Value::Array(d), Some(Value::Array(l))) if d.len() == l.len() => {
                todo.extend(d.iter().zip(l).map(|(d, l)| (d, Some(l))));
            }
            (Value::Object(d), None) if d.is_empty() => {}
            (Value::Array(d), None) if d.is_empty() => {}
            (Value::Null, None) => {}
            (d, Some(l)) if !d.is_object() && !d.is_array() && d == l => {}
            _ => return false,
        }
    }
    true
}

fn same_scalar(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::String(d), Value::String(l)) => d == l || crate::quantity::same(d, l),
        (Value::Number(d), Value::String(l)) | (Value::String(l), Value::Number(d)) => {
            crate::quantity::same(&d.to_string(), l)
        }
        (d, l) => d == l && !d.is_object() && !d.is_array(),
    }
}

/// Live's values at the places the desired object has values. Values equal to the desired
/// ones (up to quantity canonicalisation) are taken from desired, so the diff shows only
/// real differences.
fn project(desired: &Value, live: Option<&Value>) -> Option<Value> {
    match (desired, live?) {
        (Value::Object(d), Value::Object(l)) => Some(Value::Object(
            d.iter()
                .filter_map(|(k, v)| Some((k.clone(), project(v, l.get(k))?)))
                .collect(),
        )),
        (Value::Array(d), Value::Array(l)) => Some(Value::Array(
            l.iter()
                .enumerate()
                .map(|(i, lv)| match d.get(i) {
                    Some(dv) => project(dv, Some(lv)).unwrap_or(Value::Null),
                    None => lv.clone(),
                })
                .collect(),
        )),
        (d, l) if same_scalar(d, l) => Some(d.clone()),
        (_, l) => Some(l.clone()),
    }
}

/// Unified diff (live → desired) of the fields berth sets.
pub fn diff(desired: &Value, live: &Value) -> String {
    unified(
        &project(desired, Some(live)).unwrap_or(Value::Null),
        desired,
    )
}

/// Unified diff of two objects as YAML, `live` → `desired`. Keys are sorted on both sides
/// (apiVersion, kind, metadata, spec…), so the order a server returns them in is no change.
pub fn unified(before: &Value, after: &Value) -> String {
    let before = crate::render::emit::to_string(&sorted(before));
    let after = crate::render::emit::to_string(&sorted(after));
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(2)
        .header("live", "desired")
        .to_string()
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Every path where two whole objects differ, added and removed fields included. For
/// comparing a server's dry-run result with the live object, where both are canonical.
pub fn all_changed_fields(after: &Value, before: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), Some(after), Some(before))];
    while let Some((pointer, a, b)) = todo.pop() {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    todo.push((
                        format!("{pointer}/{}", escape_segment(k)),
                        x.get(k),
                        y.get(k),
                    ));
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                for (i, (xa, ya)) in x.iter().zip(y).enumerate() {
                    todo.push((format!("{pointer}/{i}"), Some(xa), Some(ya)));
                }
            }
            (x, y) if x == y => {}
            _ => out.push(pointer),
        }
    }
    out.sort();
    out.into_iter().map(|p| field_path(&p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaulted_and_foreign_fields_are_not_drift() {
        let desired = json!({"spec": {"replicas": 1, "template": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1000m", "memory": "1Gi"}}}]}}});
        let live = json!({"metadata": {"resourceVersion": "9", "managedFields": []}, "status": {"x": 1},
            "spec": {"replicas": 1, "podManagementPolicy": "OrderedReady",
            "template": {"containers": [{"name": "a", "imagePullPolicy": "Always", "resources": {"limits": {"cpu": "1", "memory": "1024Mi"}}}]}}});
        assert!(changed_fields(&desired, &live).is_empty());
    }

    #[test]
    fn real_changes_are_listed_and_diffed() {
        let desired = json!({"spec": {"replicas": 0, "template": {"containers": [{"name": "a", "image": "b:2"}]}}});
        let live = json!({"spec": {"replicas": 1, "template": {"containers": [{"name": "a", "image": "b:1", "x": 1}]}}});
        assert_eq!(
            changed_fields(&desired, &live),
            ["spec.replicas", "spec.template.containers[0].image"]
        );
        let diff = diff(&desired, &live);
        assert!(
            diff.contains("-  replicas: 1") && diff.contains("+  replicas: 0"),
            "{diff}"
        );
        assert!(diff.contains("+    - image: b:2"), "{diff}");
        assert!(
            !diff.contains("x: 1"),
            "fields berth does not set stay out: {diff}"
        );
    }

    #[test]
    fn list_length_changes_are_changes() {
        let desired = json!({"a": [1, 2]});
        assert_eq!(changed_fields(&desired, &json!({"a": [1]})), ["a"]);
        assert_eq!(changed_fields(&desired, &json!({})), ["a"]);
    }
}
