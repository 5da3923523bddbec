//! The cluster half of the destructive paths (the plan half is `crate::plan::destructive`):
//! which volume claims really exist, whether their StorageClass lets them grow, whether a
//! Namespace berth may delete holds anything berth does not own, and the steps of a
//! re-creation that keeps a workspace's pods and data.

use super::Cluster;
use super::applyset::{ApplySet, PART_OF};
use crate::plan::{Action, Change, Plan, Problem, destructive};
use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Complete a live plan's destructive changes with what only the cluster knows.
pub async fn enrich(
    cluster: &Cluster,
    set: &ApplySet,
    plan: &mut Plan,
    live: &BTreeMap<crate::render::ObjectKey, &Value>,
) -> Result<()> {
    let claim_namespaces: BTreeSet<String> = plan
        .changes
        .iter()
        .filter(|c| c.object.kind == "StatefulSet")
        .filter(|c| matches!(c.action, Action::Delete | Action::Recreate))
        .filter_map(|c| c.object.namespace.clone())
        .collect();
    let mut claims: BTreeMap<String, Vec<PersistentVolumeClaim>> = BTreeMap::new();
    for namespace in &claim_namespaces {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), namespace);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            anyhow!(
                "listing the volume claims in {namespace}: {}",
                cluster.describe(&e)
            )
        })?;
        claims.insert(namespace.clone(), list.items);
    }
    let mut classes: BTreeMap<String, Option<bool>> = BTreeMap::new();
    for change in &mut plan.changes {
        let Some(live) = live.get(&change.object) else {
            continue;
        };
        match (change.object.kind.as_str(), change.action) {
            ("StatefulSet", Action::Delete) => {
                let existing = claims_of(live, &claims);
                let names: Vec<String> = existing.iter().map(|c| name_of(c)).collect();
                change.notes = vec![destructive::claims_note(live, Some(&names))];
            }
            ("StatefulSet", Action::Recreate) => {
                let existing = claims_of(live, &claims);
                let Some(recreate) = change.recreate.as_mut() else {
                    continue;
                };
                recreate.claims = existing.iter().map(|c| name_of(c)).collect();
                if let Some((_, to)) = recreate.grow.clone() {
                    for claim in &existing {
                        if let Some(problem) =
                            expansion_problem(cluster, claim, &to, &mut classes).await?
                        {
                            change.problem = Some(problem);
                            break;
                        }
                    }
                }
                let recreate = recreate.clone();
                change.notes = destructive::recreate_notes(change, &recreate);
            }
            ("Namespace", Action::Delete) => {
                let foreign = foreign_objects(cluster, set, &change.object.name).await;
                if !foreign.is_empty() {
                    change.action = Action::Release;
                    change.reason =
                        "no longer in git; kept: it holds what berth does not own".into();
                    change.notes = vec![format!(
                        "kept, and berth stops managing it, because it holds {}. Delete it \
                         with `kubectl delete namespace {}` once that is no longer needed",
                        foreign.join(", "),
                        change.object.name
                    )];
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn name_of(claim: &PersistentVolumeClaim) -> String {
    claim.metadata.name.clone().unwrap_or_default()
}

/// The claims of a StatefulSet that exist: `<template>-<statefulset>-<ordinal>`.
fn claims_of<'a>(
    sts: &Value,
    claims: &'a BTreeMap<String, Vec<PersistentVolumeClaim>>,
) -> Vec<&'a PersistentVolumeClaim> {
    let namespace = sts
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let templates = destructive::claim_prefixes(sts);
    claims
        .get(namespace)
        .into_iter()
        .flatten()
        .filter(|c| {
            let claim = c.metadata.name.as_deref().unwrap_or_default();
            templates.iter().any(|prefix| {
                claim
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
            })
        })
        .collect()
}

/// Why a claim cannot grow to `to`, if it cannot: its StorageClass must allow expansion.
async fn expansion_problem(
    cluster: &Cluster,
    claim: &PersistentVolumeClaim,
    to: &str,
    classes: &mut BTreeMap<String, Option<bool>>,
) -> Result<Option<Problem>> {
    let name = name_of(claim);
    let Some(class) = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
    else {
        return Ok(Some(Problem {
            message: format!(
                "claim {name} has no StorageClass, so it cannot be expanded to {to}; its size \
                 stays as it is"
            ),
            field: Some(destructive::STORAGE_SIZE_FIELD.into()),
        }));
    };
    if !classes.contains_key(&class) {
        let api: Api<StorageClass> = Api::all(cluster.client.clone());
        let found = api
            .get_opt(&class)
            .await
            .map_err(|e| anyhow!("reading StorageClass {class}: {}", cluster.describe(&e)))?;
        classes.insert(
            class.clone(),
            found.map(|c| c.allow_volume_expansion == Some(true)),
        );
    }
    let message = match classes.get(&class).copied().flatten() {
        Some(true) => return Ok(None),
        Some(false) => format!(
            "StorageClass {class} does not allow volume expansion (allowVolumeExpansion is not \
             true), so claim {name} cannot grow to {to}; nothing was changed"
        ),
        None => format!("claim {name} uses StorageClass {class}, which does not exist"),
    };
    Ok(Some(Problem {
        message,
        field: Some(destructive::STORAGE_SIZE_FIELD.into()),
    }))
}

/// Objects the Kubernetes control plane puts in every namespace: not anybody's data.
fn automatic(kind: &str, name: &str) -> bool {
    matches!(
        (kind, name),
        ("ServiceAccount", "default") | ("ConfigMap", "kube-root-ca.crt")
    ) || kind == "Event"
}

/// What a namespace holds that berth does not own, as `Kind/name` (at most a few, then a
/// count), or why that cannot be known. Empty only when berth could list every kind there
/// and found nothing but its members, what they own (pods, revisions, endpoints) and what
/// Kubernetes creates in every namespace. Volume claims always count: they are data.
async fn foreign_objects(cluster: &Cluster, set: &ApplySet, namespace: &str) -> Vec<String> {
    match scan_namespace(cluster, set, namespace).await {
        Ok(foreign) => {
            let mut shown: Vec<String> = foreign.iter().take(5).cloned().collect();
            if foreign.len() > 5 {
                shown.push(format!("{} more", foreign.len() - 5));
            }
            shown
        }
        Err(why) => vec![format!("objects berth could not check ({why})")],
    }
}

async fn scan_namespace(cluster: &Cluster, set: &ApplySet, namespace: &str) -> Result<Vec<String>> {
    Ok(foreign(&list_namespace(cluster, set, namespace).await?))
}

/// One object of a namespace, as far as ownership goes.
struct Found {
    kind: String,
    name: String,
    uid: String,
    owners: Vec<String>,
    /// A member of berth's ApplySet.
    member: bool,
}

/// Every object in `namespace` of every kind the API lists there (Events aside), by
/// metadata only, page by page.
async fn list_namespace(cluster: &Cluster, set: &ApplySet, namespace: &str) -> Result<Vec<Found>> {
    let discovery = Discovery::new(cluster.client.clone())
        .run()
        .await
        .map_err(|e| anyhow!("discovering the API's kinds: {}", cluster.describe(&e)))?;
    let (label, id) = (PART_OF.to_string(), set.id());
    let mut objects = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || resource.kind == "Event"
            {
                continue;
            }
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(cluster.client.clone(), namespace, &resource);
            let mut params = ListParams::default().limit(500);
            loop {
                let page = api.list_metadata(&params).await.map_err(|e| {
                    anyhow!(
                        "listing {} there: {}",
                        resource.plural,
                        cluster.describe(&e)
                    )
                })?;
                objects.extend(page.items.iter().map(|item| {
                    let meta = &item.metadata;
                    Found {
                        kind: resource.kind.clone(),
                        name: meta.name.clone().unwrap_or_default(),
                        uid: meta.uid.clone().unwrap_or_default(),
                        owners: meta
                            .owner_references
                            .iter()
                            .flatten()
                            .map(|o| o.uid.clone())
                            .collect(),
                        member: meta.labels.as_ref().and_then(|l| l.get(&label)) == Some(&id),
                    }
                }));
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
        }
    }
    Ok(objects)
}

/// What of `objects` is not berth's, as `Kind/name`, sorted. Ours: the members, and (to a
/// fixed point) whatever they own; Endpoints carry no owner but the name of their Service.
fn foreign(objects: &[Found]) -> Vec<String> {
    let mut ours: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.member)
        .map(|o| o.uid.as_str())
        .collect();
    let services: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.member && o.kind == "Service")
        .map(|o| o.name.as_str())
        .collect();
    loop {
        let before = ours.len();
        for o in objects {
            if o.kind != "PersistentVolumeClaim"
                && (o.owners.iter().any(|u| ours.contains(u.as_str()))
                    || (o.kind == "Endpoints" && services.contains(o.name.as_str())))
            {
                ours.insert(&o.uid);
            }
        }
        if ours.len() == before {
            break;
        }
    }
    let mut foreign: Vec<String> = objects
        .iter()
        .filter(|o| !ours.contains(o.uid.as_str()) && !automatic(&o.kind, &o.name))
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    foreign.sort();
    foreign.dedup();
    foreign
}

/// How long a re-creation waits for the old StatefulSet to be gone.
const RECREATE_DEADLINE: Duration = Duration::from_secs(60);

/// Re-create a StatefulSet: grow its claims (when that is the change), delete it leaving
/// its pods and claims in place (orphan), wait until it is gone, and apply the desired
/// one, which adopts the pods. The pods keep running throughout; the new StatefulSet only
/// rolls them if their template changed too.
pub async fn recreate(
    cluster: &Cluster,
    change: &Change,
    params: &PatchParams,
) -> Result<(), String> {
    let desired = change
        .desired
        .as_ref()
        .ok_or_else(|| "nothing to apply".to_string())?;
    let recreate = change
        .recreate
        .as_ref()
        .ok_or_else(|| "no re-creation planned".to_string())?;
    let namespace = change.object.namespace.clone().unwrap_or_default();
    let name = &change.object.name;
    if let Some((_, to)) = &recreate.grow {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(cluster.client.clone(), &namespace);
        for claim in &recreate.claims {
            let patch = json!({"spec": {"resources": {"requests": {"storage": to}}}});
            claims
                .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| {
                    format!("expanding claim {claim} to {to}: {}", cluster.describe(&e))
                })?;
        }
    }
    let api = super::kinds::api_for(cluster, desired).map_err(|e| e.to_string())?;
    // A StatefulSet goes without its pods (they keep running, with their claims); a
    // Service with its EndpointSlices, which the new one gets again.
    let (delete, kept) = match change.object.kind.as_str() {
        "StatefulSet" => (DeleteParams::orphan(), " (pods kept)"),
        _ => (DeleteParams::background(), ""),
    };
    match api.delete(name, &delete).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(format!("deleting it{kept}: {}", cluster.describe(&e))),
    }
    let deadline = Instant::now() + RECREATE_DEADLINE;
    loop {
        match api.get_opt(name).await {
            Ok(None) => break,
            Ok(Some(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(Some(_)) => {
                return Err(format!(
                    "the old {} was still there after {}s; the next apply creates it again",
                    change.object.kind,
                    RECREATE_DEADLINE.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for it to go: {}", cluster.describe(&e))),
        }
    }
    api.patch(name, params, &Patch::Apply(desired))
        .await
        .map(|_| ())
        .map_err(|e| format!("creating it again: {}", cluster.describe(&e)))
}

/// Stop managing an object but keep it: apply it bare, so server-side apply removes every
/// field berth set (its ApplySet label among them) and nothing else.
pub async fn release(cluster: &Cluster, change: &Change) -> Result<(), String> {
    let mut bare = json!({
        "apiVersion": change.object.api_version,
        "kind": change.object.kind,
        "metadata": {"name": change.object.name},
    });
    if let Some(ns) = &change.object.namespace {
        bare["metadata"]["namespace"] = json!(ns);
    }
    let api = super::kinds::api_for(cluster, &bare).map_err(|e| e.to_string())?;
    api.patch(
        &change.object.name,
        &PatchParams::apply(super::FIELD_MANAGER).force(),
        &Patch::Apply(&bare),
    )
    .await
    .map(|_| ())
    .map_err(|e| cluster.describe(&e))
}
