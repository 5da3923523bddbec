//! Rollout state in the cluster: what the gate ([`crate::plan::rollout`]) reads, and the
//! two things berth writes for it. Each restart is marked on its StatefulSet
//! ([`RESTARTED_AT`], by its own field manager, so applying git's objects never removes
//! it), and paused projects are listed in one small ConfigMap beside the ApplySet parent.

use super::Cluster;
use super::applyset::ApplySet;
use super::inventory::Inventory;
use crate::plan::rollout::{Fleet, LiveState, MARK_MANAGER, RESTARTED_AT};
use crate::resolve::Resolved;
use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// The ConfigMap that lists an ApplySet's paused projects (`<project>: paused`).
pub fn paused_name(set: &ApplySet) -> String {
    format!("{}-rollouts", set.name)
}

/// The gate's view of the fleet: every resolved workspace with its live StatefulSet's
/// health and restart mark.
pub fn fleet(resolved: &Resolved, inventory: &Inventory, paused: BTreeSet<String>) -> Fleet {
    let live: BTreeMap<(&str, &str), LiveState> = inventory
        .members
        .iter()
        .filter(|m| m.key.kind == "StatefulSet")
        .map(|m| {
            let state = LiveState {
                ready: m.rolled_out.unwrap_or(true),
                suspended: m.suspended,
                restarted_at: m.restarted_at,
            };
            (
                (
                    m.key.namespace.as_deref().unwrap_or(""),
                    m.key.name.as_str(),
                ),
                state,
            )
        })
        .collect();
    let now = Timestamp::now().as_second().max(0) as u64;
    Fleet::of(resolved, paused, now, |namespace, name| {
        live.get(&(namespace, name)).copied()
    })
}

/// Projects whose rollouts are paused.
pub async fn paused(cluster: &Cluster, set: &ApplySet) -> Result<BTreeSet<String>> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &set.namespace);
    // A LIST by name: none is an empty list, not an error answer.
    let params =
        kube::api::ListParams::default().fields(&format!("metadata.name={}", paused_name(set)));
    let list = api
        .list(&params)
        .await
        .with_context(|| format!("reading {}/{}", set.namespace, paused_name(set)))?;
    Ok(list
        .items
        .into_iter()
        .next()
        .and_then(|cm| cm.data)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| v == "paused")
        .map(|(k, _)| k)
        .collect())
}

/// Pause or resume a project's rollouts.
pub async fn set_paused(
    cluster: &Cluster,
    set: &ApplySet,
    project: &str,
    paused: bool,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &set.namespace);
    // A merge patch: `null` removes the project's key; the ConfigMap is created on the
    // first pause.
    let value = if paused { json!("paused") } else { json!(null) };
    let params = PatchParams {
        field_manager: Some(MARK_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = json!({"data": {project: value}});
    match api
        .patch(&paused_name(set), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 && paused => {
            let cm = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": paused_name(set), "namespace": set.namespace,
                             "labels": {crate::render::MANAGED_BY: "berth"}},
                "data": {project: "paused"},
            });
            let cm: ConfigMap = serde_json::from_value(cm)?;
            api.create(
                &kube::api::PostParams {
                    field_manager: Some(MARK_MANAGER.into()),
                    ..Default::default()
                },
                &cm,
            )
            .await
            .with_context(|| format!("creating {}/{}", set.namespace, paused_name(set)))?;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "writing {}/{}",
            set.namespace,
            paused_name(set)
        ))),
    }
}

/// Mark each restarted workspace (`namespace/name`) with the time of its restart.
pub async fn mark_restarted(cluster: &Cluster, started: &[String]) -> Result<()> {
    let at = Timestamp::now().to_string();
    let params = PatchParams {
        field_manager: Some(MARK_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = json!({"metadata": {"annotations": {RESTARTED_AT: at}}});
    let requests = started.iter().cloned().map(|ws| {
        let (params, patch, client) = (params.clone(), patch.clone(), cluster.client.clone());
        async move {
            let (namespace, name) = ws.split_once('/').unwrap_or(("", ws.as_str()));
            let api: Api<StatefulSet> = Api::namespaced(client, namespace);
            api.patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .with_context(|| format!("marking the restart of {ws}"))
        }
    });
    let results: Vec<Result<()>> = futures::stream::iter(requests)
        .buffer_unordered(super::CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Delete the pods of these workspaces (`namespace/name`) that are not Ready: after a
/// broken template, a StatefulSet waits for its stuck pod forever instead of replacing it
/// with the pod of the template berth just applied. Ready pods are left to the controller.
pub async fn replace_stuck_pods(cluster: &Cluster, workspaces: &[&String]) -> Result<()> {
    for ws in workspaces {
        let (namespace, name) = ws.split_once('/').unwrap_or(("", ws.as_str()));
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
        let params = kube::api::ListParams::default().labels(&format!(
            "app.kubernetes.io/name=mage-workspace,app.kubernetes.io/instance={name}"
        ));
        let pods = api
            .list(&params)
            .await
            .with_context(|| format!("listing the pods of {ws}"))?;
        for pod in pods.items {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let Some(pod_name) = pod.metadata.name.as_deref().filter(|_| !ready) else {
                continue;
            };
            tracing::info!(workspace = %ws, pod = pod_name, "replacing a pod stuck on the old template");
            match api
                .delete(pod_name, &kube::api::DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("deleting pod {namespace}/{pod_name}")));
                }
            }
        }
    }
    Ok(())
}
