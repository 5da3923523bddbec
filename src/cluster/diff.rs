//! Diff: the live plan. Cheap when nothing changed — objects whose berth-set fields and
//! applied hash match live are settled locally, with no request. Only objects that really
//! differ are confirmed by a server-side dry-run apply, whose result (with the server's
//! defaults, canonical quantities and other managers' fields) is compared with live.

use super::applyset::{APPLIED_HASH, ApplySet};
use super::inventory::{self, Inventory};
use super::kinds::kind_of;
use super::{Cluster, FIELD_MANAGER};
use crate::plan::{Action, Plan};
use crate::render::{ObjectKey, RenderContext, key_of};
use crate::resolve::{Resolved, VarValue};
use anyhow::{Result, anyhow};
use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Dry-runs in flight at once.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub applyset: ApplySet,
}

/// A plan against a cluster, with what applying it needs.
#[derive(Debug, Clone)]
pub struct LivePlan {
    pub plan: Plan,
    pub inventory: Inventory,
    /// Desired objects, decorated as ApplySet members.
    pub desired: Vec<Value>,
    /// Updates that conflict with other field managers: object → the server's message.
    pub conflicts: Vec<(String, String)>,
}

impl LivePlan {
    /// Objects berth owns now.
    pub fn owned(&self) -> usize {
        self.inventory.members.len()
    }
}

/// Namespaces whose workspaces reference Secrets: where Secret versions are read.
fn secret_namespaces(resolved: &Resolved) -> BTreeSet<String> {
    resolved
        .workspaces
        .iter()
        .filter(|w| w.env.iter().any(|v| matches!(v.value, VarValue::Secret(_))))
        .map(|w| w.namespace.clone())
        .collect()
}

/// The objects a plan would apply — rendered with the referenced Secrets' versions and
/// decorated as ApplySet members — without listing members or dry-running anything.
pub async fn desired(
    cluster: &Cluster,
    resolved: &Resolved,
    options: &PlanOptions,
) -> Result<Vec<Value>> {
    let inventory = inventory::read_parent_and_secrets(
        cluster,
        &options.applyset,
        &secret_namespaces(resolved),
    )
    .await?;
    let ctx = RenderContext {
        secret_versions: inventory.secret_versions,
        ..RenderContext::default()
    };
    let mut desired = crate::render::render(resolved, &ctx);
    options.applyset.decorate(&mut desired);
    Ok(desired)
}

pub async fn plan(
    cluster: &Cluster,
    resolved: &Resolved,
    options: &PlanOptions,
) -> Result<LivePlan> {
    plan_with_context(cluster, resolved, options, RenderContext::default()).await
}

/// [`plan`] with facts the caller knows (the reconciler's idle workspaces); Secret
/// versions are read from the cluster and replace those of `base`.
pub async fn plan_with_context(
    cluster: &Cluster,
    resolved: &Resolved,
    options: &PlanOptions,
    base: RenderContext,
) -> Result<LivePlan> {
    // The parent and the referenced Secrets' versions first (one round trip), so the
    // repository is rendered once, with them; then the members of the rendered kinds.
    let mut inventory = inventory::read_parent_and_secrets(
        cluster,
        &options.applyset,
        &secret_namespaces(resolved),
    )
    .await?;
    let ctx = RenderContext {
        secret_versions: inventory.secret_versions.clone(),
        ..base
    };
    let mut desired = crate::render::render(resolved, &ctx);
    let kinds: BTreeSet<String> = desired
        .iter()
        .filter_map(key_of)
        .filter_map(|k| kind_of(&k.api_version, &k.kind))
        .map(|k| k.group_kind())
        .collect();
    // The LISTs run while the desired objects are decorated.
    let members = {
        let (cluster, set, parent_kinds) = (
            cluster.clone(),
            options.applyset.clone(),
            inventory.parent_group_kinds(),
        );
        tokio::spawn(
            async move { inventory::read_members(&cluster, &set, parent_kinds, &kinds).await },
        )
    };
    options.applyset.decorate(&mut desired);
    inventory.members = members
        .await
        .map_err(|e| anyhow!("listing berth's objects: {e}"))??;
    // Updates get their diff from the server's dry-run below, not from the local compare.
    let mut plan = crate::plan::compute_without_diffs(&desired, &inventory.members);

    // Confirm each update with a dry-run; drop those the server says change nothing.
    // Live objects by key: one lookup per change, not a scan of every member.
    let live_by_key: BTreeMap<ObjectKey, &Value> = inventory
        .members
        .iter()
        .filter_map(|m| Some((key_of(m)?, m)))
        .collect();
    let live_of =
        |change: &crate::plan::Change| live_by_key.get(&change.object).map(|v| (*v).clone());
    let checks = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == Action::Update)
        .filter_map(|(i, c)| Some((i, c.desired.clone()?, live_of(c)?)))
        .collect::<Vec<_>>()
        .into_iter()
        // Each dry-run is a task of its own: the runtime's worker threads parse and diff
        // the answers in parallel.
        .map(|(i, desired, live)| {
            let cluster = cluster.clone();
            tokio::spawn(async move { (i, dry_run(&cluster, &desired, live).await) })
        });
    let results: Vec<_> = futures::stream::iter(checks)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut settled = BTreeSet::new();
    let mut conflicts = Vec::new();
    for joined in results {
        let (i, result) = joined.map_err(|e| anyhow!("a dry-run failed to run: {e}"))?;
        let outcome = result?;
        let change = &mut plan.changes[i];
        if outcome.fields.is_empty() {
            settled.insert(i);
            continue;
        }
        change.fields = outcome.fields;
        change.diff = outcome.diff;
        if let Some(message) = outcome.conflict {
            let message = message.replace(":\n- ", ": ").replace("\n- ", ", ");
            change.reason = format!("changed; conflicts with another field manager: {message}");
            conflicts.push((change.object.to_string(), message));
        } else if change.reason == "changed in git" {
            change.reason = "differs from git".into();
        }
    }
    plan.unchanged += settled.len();
    let mut index = 0;
    plan.changes.retain(|_| {
        index += 1;
        !settled.contains(&(index - 1))
    });
    conflicts.sort();
    Ok(LivePlan {
        plan,
        inventory,
        desired,
        conflicts,
    })
}

struct DryRun {
    fields: Vec<String>,
    diff: String,
    conflict: Option<String>,
}

/// Server-side dry-run apply of `desired`; the fields it would change in `live`. A conflict
/// with another manager is noted, and the forced result is shown.
async fn dry_run(cluster: &Cluster, desired: &Value, live: Value) -> Result<DryRun> {
    let request = request_for(desired)?;
    let name = desired
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // The answer as plain JSON: it is compared as such, no typed round trip needed.
    let send = |params: &PatchParams| -> Result<_> {
        let request = request.patch(name, params, &Patch::Apply(desired))?;
        Ok(cluster.client.request::<Value>(request))
    };
    let params = PatchParams::apply(FIELD_MANAGER).dry_run();
    let (result, conflict) = match send(&params)?.await {
        Ok(result) => (result, None),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let forced = send(&params.clone().force())?
                .await
                .map_err(|e| anyhow!("dry-run of {name}: {e}"))?;
            (forced, Some(status.message.clone()))
        }
        Err(err) => return Err(anyhow!("dry-run apply of {name}: {err}")),
    };
    let (after, before) = (strip(result), strip(live));
    let fields = crate::plan::compare::all_changed_fields(&after, &before);
    let diff = if fields.is_empty() {
        String::new()
    } else {
        crate::plan::compare::unified(&before, &after)
    };
    Ok(DryRun {
        fields,
        diff,
        conflict,
    })
}

/// Requests for `object`'s kind, in its namespace when it has one.
fn request_for(object: &Value) -> Result<kube::core::Request> {
    let key = key_of(object).ok_or_else(|| anyhow!("object without apiVersion, kind or name"))?;
    let kind = kind_of(&key.api_version, &key.kind)
        .ok_or_else(|| anyhow!("berth does not manage {}/{}", key.api_version, key.kind))?;
    let namespace = key.namespace.as_deref().filter(|_| kind.namespaced);
    Ok(kube::core::Request::new(DynamicObject::url_path(
        &kind.resource,
        namespace,
    )))
}

pub(super) fn api_for(cluster: &Cluster, object: &Value) -> Result<Api<DynamicObject>> {
    let key = key_of(object).ok_or_else(|| anyhow!("object without apiVersion, kind or name"))?;
    let kind = kind_of(&key.api_version, &key.kind)
        .ok_or_else(|| anyhow!("berth does not manage {}/{}", key.api_version, key.kind))?;
    Ok(match (&key.namespace, kind.namespaced) {
        (Some(ns), true) => Api::namespaced_with(cluster.client.clone(), ns, &kind.resource),
        _ => Api::all_with(cluster.client.clone(), &kind.resource),
    })
}

/// An object without what the server maintains on its own: metadata bookkeeping, status,
/// and berth's applied-hash stamp.
pub(super) fn strip(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for noise in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
            "selfLink",
        ] {
            meta.remove(noise);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(APPLIED_HASH);
        }
    }
    object
}
