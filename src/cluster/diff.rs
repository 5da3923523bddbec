//! Diff: the live plan. Cheap when nothing changed — objects whose berth-set fields and
//! applied hash match live are settled locally, with no request. Only objects that really
//! differ are confirmed by a server-side dry-run apply, whose result (with the server's
//! defaults, canonical quantities and other managers' fields) is compared with live.

use super::applyset::{APPLIED_HASH, ApplySet};
use super::inventory::{self, Inventory};
use super::kinds::kind_of;
use super::{Cluster, FIELD_MANAGER};
use crate::plan::{Action, Plan};
use crate::render::{RenderContext, key_of};
use crate::resolve::{Resolved, VarValue};
use anyhow::{Result, anyhow};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use std::collections::BTreeSet;

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
    let secret_namespaces: BTreeSet<String> = resolved
        .workspaces
        .iter()
        .filter(|w| w.env.iter().any(|v| matches!(v.value, VarValue::Secret(_))))
        .map(|w| w.namespace.clone())
        .collect();
    // Render once with no versions to learn the kinds, then read the cluster.
    let kinds: BTreeSet<String> = crate::render::render(resolved, &RenderContext::default())
        .iter()
        .filter_map(key_of)
        .filter_map(|k| kind_of(&k.api_version, &k.kind))
        .map(|k| k.group_kind())
        .collect();
    let inventory = inventory::read(cluster, &options.applyset, &kinds, &secret_namespaces).await?;
    let ctx = RenderContext {
        secret_versions: inventory.secret_versions.clone(),
        ..base
    };
    let mut desired = crate::render::render(resolved, &ctx);
    options.applyset.decorate(&mut desired);
    let mut plan = crate::plan::compute(&desired, &inventory.members);

    // Confirm each update with a dry-run; drop those the server says change nothing.
    let live_of = |change: &crate::plan::Change| {
        inventory
            .members
            .iter()
            .find(|m| key_of(m).as_ref() == Some(&change.object))
            .cloned()
    };
    let checks = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == Action::Update)
        .filter_map(|(i, c)| Some((i, c.desired.clone()?, live_of(c)?)))
        .collect::<Vec<_>>()
        .into_iter()
        // Each future owns what it needs, so the plan's future stays `Send`.
        .map(|(i, desired, live)| {
            let cluster = cluster.clone();
            async move { (i, dry_run(&cluster, &desired, &live).await) }
        });
    let results: Vec<_> = futures::stream::iter(checks)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut settled = BTreeSet::new();
    let mut conflicts = Vec::new();
    for (i, result) in results {
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
async fn dry_run(cluster: &Cluster, desired: &Value, live: &Value) -> Result<DryRun> {
    let api = api_for(cluster, desired)?;
    let name = desired
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).dry_run();
    let (result, conflict) = match api.patch(name, &params, &Patch::Apply(desired)).await {
        Ok(result) => (result, None),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let forced = api
                .patch(name, &params.clone().force(), &Patch::Apply(desired))
                .await
                .map_err(|e| anyhow!("dry-run of {name}: {e}"))?;
            (forced, Some(status.message.clone()))
        }
        Err(err) => return Err(anyhow!("dry-run apply of {name}: {err}")),
    };
    let (after, before) = (strip(serde_json::to_value(result)?), strip(live.clone()));
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
