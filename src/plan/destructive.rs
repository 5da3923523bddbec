//! The destructive edge of a plan, decided where a reviewer can see it: which deletes berth
//! really makes, what it keeps instead (and says how to remove it by hand), and what it does
//! when Kubernetes would refuse an update in place (immutable fields).
//!
//! The rules, each safe by default:
//! - a Namespace no longer in git is *released* (kept, left out of berth's set), unless its
//!   live object carries the project's opt-in [`PRUNE_NAMESPACE`]; even then the cluster
//!   side deletes it only when it holds nothing berth does not own;
//! - a StatefulSet deleted keeps its volume claims unless its live object says otherwise
//!   (the claim retention policy `storage.onDelete: delete` rendered); the plan names them;
//! - a StatefulSet whose immutable fields differ is re-created: when only its claims grow,
//!   the claims are expanded and the StatefulSet is re-created without touching its pods;
//!   a shrink is refused; anything else needs `--allow-replace`.

use super::{Action, Change, Problem, Recreate};
use crate::render::{PRUNE_NAMESPACE, PRUNE_WHEN_EMPTY};
use serde_json::Value;

/// The workspace field that sets the size of its claims.
pub const STORAGE_SIZE_FIELD: &str = "/spec/storage/size";

/// How a Namespace that git no longer holds leaves: deleted only with the opt-in.
pub fn namespace_removal(live: &Value) -> (Action, String, Vec<String>) {
    let name = live
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let opted_in = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PRUNE_NAMESPACE))
        .and_then(Value::as_str)
        == Some(PRUNE_WHEN_EMPTY);
    if opted_in {
        (
            Action::Delete,
            "no longer in git; the project allowed it (pruneNamespace)".into(),
            vec!["deleted only if it holds nothing berth does not own".into()],
        )
    } else {
        (
            Action::Release,
            "no longer in git; berth does not delete namespaces".into(),
            vec![format!(
                "kept with everything in it; berth stops managing it. Delete it with \
                 `kubectl delete namespace {name}` once its data is no longer needed, or set \
                 the project's pruneNamespace: true before removing the project"
            )],
        )
    }
}

/// The names of the claims a StatefulSet's pods use: `<template>-<statefulset>-<ordinal>`,
/// for every ordinal it has (at least one: a suspended workspace keeps its claim).
pub fn claim_names(sts: &Value) -> Vec<String> {
    let replicas = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    claim_prefixes(sts)
        .into_iter()
        .flat_map(|prefix| (0..replicas).map(move |i| format!("{prefix}{i}")))
        .collect()
}

/// `<template>-<statefulset>-`: what the names of a StatefulSet's claims start with.
pub fn claim_prefixes(sts: &Value) -> Vec<String> {
    let name = sts
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    templates(sts)
        .iter()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .map(|template| format!("{template}-{name}-"))
        .collect()
}

/// Whether deleting this live StatefulSet deletes its claims too (`storage.onDelete: delete`).
pub fn deletes_claims(sts: &Value) -> bool {
    sts.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete")
}

/// What deleting a StatefulSet does to its claims, in words. `existing` are the claims the
/// cluster holds (a live plan lists them); `None` offline, where they are derived.
pub fn claims_note(sts: &Value, existing: Option<&[String]>) -> String {
    let namespace = sts
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let claims = match existing {
        Some(existing) => existing.to_vec(),
        None => claim_names(sts),
    };
    if claims.is_empty() {
        return "it has no volume claims".into();
    }
    let list = claims.join(", ");
    if deletes_claims(sts) {
        format!("deletes its volume claims with it ({list}): storage.onDelete is delete")
    } else {
        format!(
            "keeps its volume claims and their data ({list}); delete them with \
             `kubectl -n {namespace} delete pvc {}` when no longer needed",
            claims.join(" ")
        )
    }
}

fn templates(sts: &Value) -> Vec<Value> {
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn storage_of(template: &Value) -> Option<&str> {
    template
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
}

/// The parts of a claim template that must not change in place, storage size aside.
fn template_identity(template: &Value, desired: &Value) -> Value {
    let get = |pointer: &str| template.pointer(pointer).cloned().unwrap_or(Value::Null);
    // The storage class only counts when berth sets it: unset, the server fills in the
    // cluster default.
    let class = if desired.pointer("/spec/storageClassName").is_some() {
        get("/spec/storageClassName")
    } else {
        Value::Null
    };
    serde_json::json!([get("/metadata/name"), get("/spec/accessModes"), class])
}

/// How an update must go when an immutable field differs; `None` when it can be made in
/// place (or the kind has no immutable field berth sets).
pub fn immutable_change(
    kind: &str,
    desired: &Value,
    live: &Value,
) -> Option<Result<Recreate, Problem>> {
    match kind {
        "StatefulSet" => stateful_set_change(desired, live),
        "Service" => service_change(desired, live),
        _ => None,
    }
}

/// A Service's cluster IP is set once. Workspace Services are headless (`clusterIP:
/// None`); one made with a virtual IP (by an earlier berth, or by hand) is re-created.
fn service_change(desired: &Value, live: &Value) -> Option<Result<Recreate, Problem>> {
    let wanted = desired.pointer("/spec/clusterIP")?;
    let running = live.pointer("/spec/clusterIP")?;
    (wanted != running).then(|| {
        Ok(Recreate {
            fields: vec!["spec.clusterIP".into()],
            grow: None,
            claims: Vec::new(),
            needs_allow_replace: false,
        })
    })
}

/// Immutable in a StatefulSet: everything in `spec` but replicas, ordinals, template,
/// update strategy, claim retention policy and minReadySeconds.
fn stateful_set_change(desired: &Value, live: &Value) -> Option<Result<Recreate, Problem>> {
    let same = |pointer: &str| match desired.pointer(pointer) {
        None => true,
        Some(d) => Some(d) == live.pointer(pointer),
    };
    if !same("/spec/selector") {
        return Some(Err(Problem {
            message: "the live StatefulSet selects other pods than berth's workspace would; \
                      berth never changes a workspace's selector, so something else made it"
                .into(),
            field: None,
        }));
    }
    let mut fields = Vec::new();
    for (pointer, field) in [
        ("/spec/serviceName", "spec.serviceName"),
        ("/spec/podManagementPolicy", "spec.podManagementPolicy"),
    ] {
        if !same(pointer) {
            fields.push(field.to_string());
        }
    }
    let (wanted, running) = (templates(desired), templates(live));
    let mut grow = None;
    if wanted.len() != running.len() {
        fields.push("spec.volumeClaimTemplates".into());
    } else {
        for (i, (d, l)) in wanted.iter().zip(&running).enumerate() {
            if template_identity(d, d) != template_identity(l, d) {
                fields.push(format!("spec.volumeClaimTemplates[{i}]"));
                continue;
            }
            let (Some(to), Some(from)) = (storage_of(d), storage_of(l)) else {
                continue;
            };
            let (Some(to_bytes), Some(from_bytes)) =
                (crate::quantity::parse(to), crate::quantity::parse(from))
            else {
                continue;
            };
            if crate::quantity::same(to, from) {
                continue;
            }
            if to_bytes < from_bytes {
                return Some(Err(Problem {
                    message: format!(
                        "storage.size cannot shrink ({from} → {to}): Kubernetes volumes only \
                         grow. Keep {from}, or move the data to a new workspace"
                    ),
                    field: Some(STORAGE_SIZE_FIELD.into()),
                }));
            }
            fields.push(format!(
                "spec.volumeClaimTemplates[{i}].spec.resources.requests.storage"
            ));
            grow = Some((from.to_string(), to.to_string()));
        }
    }
    if fields.is_empty() {
        return None;
    }
    // Growth alone keeps the pods and needs no flag; any other field is a replacement.
    let grow = grow.filter(|_| fields.iter().all(|f| f.ends_with("requests.storage")));
    Some(Ok(Recreate {
        fields,
        needs_allow_replace: grow.is_none(),
        grow,
        claims: claim_names(live),
    }))
}

/// Notes for a re-creation, in words.
pub fn recreate_notes(change: &Change, recreate: &Recreate) -> Vec<String> {
    if change.object.kind == "Service" {
        return vec![format!(
            "re-creates Service {}: {} cannot change in place. Workspace Services are \
             headless (each pod gets its own DNS name, no virtual IP is spent); the name \
             does not resolve for the moment between delete and create, and a Service \
             holds no data",
            change.object.name,
            recreate.fields.join(", ")
        )];
    }
    let claims = if recreate.claims.is_empty() {
        "its claims".to_string()
    } else {
        recreate.claims.join(", ")
    };
    match &recreate.grow {
        Some((from, to)) => vec![
            format!("expands {claims} from {from} to {to} (the StorageClass must allow expansion)"),
            format!(
                "re-creates StatefulSet {} without deleting its pods (they keep running, with \
                 their data); volumeClaimTemplates cannot change in place",
                change.object.name
            ),
        ],
        None => vec![format!(
            "must be re-created: {} cannot change in place. `berth apply --allow-replace` \
             deletes the StatefulSet without its pods and claims and creates it again; the \
             existing claims ({claims}) keep their current settings",
            recreate.fields.join(", ")
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(size: &str, class: Option<&str>) -> Value {
        let mut spec =
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
        if let Some(class) = class {
            spec["storageClassName"] = json!(class);
        }
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "w", "namespace": "n"},
            "spec": {
                "replicas": 1, "serviceName": "w",
                "selector": {"matchLabels": {"app": "w"}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": spec}],
            },
        })
    }

    #[test]
    fn growth_alone_keeps_the_pods() {
        let change = immutable_change(
            "StatefulSet",
            &sts("50Gi", None),
            &sts("20Gi", Some("standard")),
        );
        let recreate = change.unwrap().unwrap();
        assert_eq!(recreate.grow, Some(("20Gi".into(), "50Gi".into())));
        assert!(!recreate.needs_allow_replace);
        // The same amount written otherwise is no change at all.
        assert!(immutable_change("StatefulSet", &sts("1024Mi", None), &sts("1Gi", None)).is_none());
    }

    #[test]
    fn a_shrink_is_refused_at_the_storage_field() {
        let problem = immutable_change("StatefulSet", &sts("10Gi", None), &sts("20Gi", None))
            .unwrap()
            .unwrap_err();
        assert_eq!(problem.field.as_deref(), Some(STORAGE_SIZE_FIELD));
        assert!(problem.message.contains("cannot shrink (20Gi → 10Gi)"));
    }

    #[test]
    fn a_service_with_a_virtual_ip_is_re_created_without_a_flag() {
        let service = |ip: Option<&str>| match ip {
            Some(ip) => json!({"kind": "Service", "spec": {"clusterIP": ip, "ports": []}}),
            None => json!({"kind": "Service", "spec": {"ports": []}}),
        };
        let headless = service(Some("None"));
        let recreate = immutable_change("Service", &headless, &service(Some("10.0.0.12")))
            .unwrap()
            .unwrap();
        assert_eq!(recreate.fields, ["spec.clusterIP"]);
        assert!(!recreate.needs_allow_replace && recreate.claims.is_empty());
        assert_eq!(immutable_change("Service", &headless, &headless), None);
        // Only what berth sets counts: a Service that leaves clusterIP to the server.
        assert_eq!(
            immutable_change("Service", &service(None), &service(Some("10.0.0.12"))),
            None
        );
        // Kinds without immutable fields that berth sets are updated in place.
        assert_eq!(
            immutable_change("ConfigMap", &headless, &service(Some("x"))),
            None
        );
    }

    #[test]
    fn other_immutable_fields_need_a_replacement() {
        let recreate = immutable_change(
            "StatefulSet",
            &sts("20Gi", Some("fast")),
            &sts("20Gi", Some("slow")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(recreate.grow, None);
        assert!(recreate.needs_allow_replace);
        assert_eq!(recreate.fields, ["spec.volumeClaimTemplates[0]"]);
        // A class change with growth is still a replacement, not a silent growth.
        let recreate = immutable_change(
            "StatefulSet",
            &sts("50Gi", Some("fast")),
            &sts("20Gi", Some("slow")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(recreate.grow, None);
        let mut other = sts("20Gi", None);
        other["spec"]["selector"] = json!({"matchLabels": {"app": "x"}});
        assert!(
            immutable_change("StatefulSet", &sts("20Gi", None), &other)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn claims_are_named_and_kept_unless_the_workspace_says_delete() {
        let mut live = sts("20Gi", None);
        live["spec"]["replicas"] = json!(0);
        assert_eq!(claim_names(&live), ["data-w-0"]);
        let note = claims_note(&live, None);
        assert!(note.contains("keeps its volume claims") && note.contains("delete pvc data-w-0"));
        live["spec"]["persistentVolumeClaimRetentionPolicy"] = json!({"whenDeleted": "Delete"});
        assert!(claims_note(&live, None).starts_with("deletes its volume claims"));
    }

    #[test]
    fn namespaces_are_released_unless_the_project_opted_in() {
        let ns = json!({"metadata": {"name": "ml"}});
        assert_eq!(namespace_removal(&ns).0, Action::Release);
        let ns =
            json!({"metadata": {"name": "ml", "annotations": {PRUNE_NAMESPACE: PRUNE_WHEN_EMPTY}}});
        assert_eq!(namespace_removal(&ns).0, Action::Delete);
    }
}
