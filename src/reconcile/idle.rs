//! Idle termination (Mage Pro's termination policy): a workspace with
//! `lifecycle.termination.idleSeconds` whose activity Lease (`<workspace>-activity`, renewed
//! by the workspace) has not been renewed for that long is idle. The reconciler renders it
//! suspended (replicas 0, `berth/idle-since`), so the suspension is desired state, not
//! drift; renewed activity, or `berth wake`, brings it back. berth creates the Lease but
//! never owns `spec.renewTime`: wake renews it under its own field manager.

use crate::cluster::Cluster;
use crate::cluster::applyset::ApplySet;
use crate::render::IDLE_SECONDS;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The activity Lease of a workspace.
pub fn lease_name(workspace: &str) -> String {
    format!("{workspace}-activity")
}

/// Workspaces that can go idle: `namespace/workspace` → idle timeout in seconds, from the
/// rendered StatefulSets' `berth/idle-seconds`.
pub fn idle_timeouts(objects: &[Value]) -> BTreeMap<String, u64> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("StatefulSet"))
        .filter_map(|o| {
            let seconds = o
                .pointer("/metadata/annotations")?
                .get(IDLE_SECONDS)?
                .as_str()?
                .parse()
                .ok()?;
            let ns = o.pointer("/metadata/namespace")?.as_str()?;
            let name = o.pointer("/metadata/name")?.as_str()?;
            Some((format!("{ns}/{name}"), seconds))
        })
        .collect()
}

/// The last activity a Lease records: renewTime, else acquireTime, else its creation.
fn last_activity(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref();
    spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0))
        .or_else(|| spec.and_then(|s| s.acquire_time.as_ref().map(|t| t.0)))
        .or_else(|| lease.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Which of `timeouts` are idle at `now`, given the Leases: `namespace/workspace` → last
/// activity (RFC 3339). A workspace without a Lease is never idle.
pub fn idle_at(
    timeouts: &BTreeMap<String, u64>,
    leases: &[Lease],
    now: Timestamp,
) -> BTreeMap<String, String> {
    let mut idle = BTreeMap::new();
    for lease in leases {
        let (Some(ns), Some(name)) = (&lease.metadata.namespace, &lease.metadata.name) else {
            continue;
        };
        let Some(workspace) = name.strip_suffix("-activity") else {
            continue;
        };
        let key = format!("{ns}/{workspace}");
        let (Some(timeout), Some(last)) = (timeouts.get(&key), last_activity(lease)) else {
            continue;
        };
        let quiet = now.as_second() - last.as_second();
        if quiet >= *timeout as i64 {
            // Whole seconds: the annotation must not change between cycles.
            let last = Timestamp::from_second(last.as_second()).unwrap_or(last);
            idle.insert(key, last.to_string());
        }
    }
    idle
}

/// One LIST of the ApplySet's Leases (all namespaces), then [`idle_at`] now.
pub async fn idle_workspaces(
    cluster: Cluster,
    set: ApplySet,
    timeouts: BTreeMap<String, u64>,
) -> Result<BTreeMap<String, String>> {
    if timeouts.is_empty() {
        return Ok(BTreeMap::new());
    }
    let api: Api<Lease> = Api::all(cluster.client.clone());
    let params = ListParams::default().labels(&set.selector());
    let leases = api
        .list(&params)
        .await
        .context("listing the workspaces' activity Leases")?;
    Ok(idle_at(&timeouts, &leases.items, Timestamp::now()))
}

/// Renew a workspace's activity Lease now, as activity would (field manager
/// `berth-wake`, so berth's own applies never own renewTime).
pub async fn renew_activity(cluster: &Cluster, namespace: &str, workspace: &str) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), namespace);
    let name = lease_name(workspace);
    if api
        .get_opt(&name)
        .await
        .with_context(|| format!("reading Lease {namespace}/{name}"))?
        .is_none()
    {
        bail!(
            "workspace {namespace}/{workspace} has no activity Lease {name}: has berth applied \
             it, and does it set lifecycle.termination?"
        );
    }
    let now = Timestamp::now();
    let micro = Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now);
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some("berth-wake".into()),
            ..Default::default()
        },
        &Patch::Merge(
            json!({"spec": {"renewTime": micro.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}}),
        ),
    )
    .await
    .with_context(|| format!("renewing Lease {namespace}/{name}"))?;
    Ok(())
}

/// `berth wake`: renew the workspace's activity Lease, then apply its StatefulSet at once
/// (scaled back up), without waiting for the reconciler's next cycle. Only that
/// StatefulSet is written; the rest of the repository is left to the reconciler.
pub async fn wake(
    cluster: &Cluster,
    resolved: &crate::resolve::Resolved,
    set: &ApplySet,
    workspace: &str,
) -> Result<String> {
    use crate::cluster::{ApplyOptions, PlanOptions};
    let objects = crate::render::render(resolved, &crate::render::RenderContext::default());
    let namespace = objects
        .iter()
        .find(|o| {
            o.get("kind").and_then(Value::as_str) == Some("StatefulSet")
                && o.pointer("/metadata/name").and_then(Value::as_str) == Some(workspace)
        })
        .and_then(|o| o.pointer("/metadata/namespace").and_then(Value::as_str))
        .map(str::to_string)
        .with_context(|| format!("no workspace named `{workspace}` in the repository"))?;
    renew_activity(cluster, &namespace, workspace).await?;
    let idle = idle_workspaces(cluster.clone(), set.clone(), idle_timeouts(&objects)).await?;
    let ctx = crate::render::RenderContext {
        idle,
        ..Default::default()
    };
    let options = PlanOptions {
        applyset: set.clone(),
    };
    let mut live = crate::cluster::plan_with_context(cluster, resolved, &options, ctx).await?;
    live.plan.changes.retain(|c| {
        c.action != crate::plan::Action::Delete
            && c.object.kind == "StatefulSet"
            && c.object.name == workspace
            && c.object.namespace.as_deref() == Some(namespace.as_str())
    });
    if live.plan.changes.is_empty() {
        return Ok(format!(
            "{namespace}/{workspace}: activity renewed; it was not suspended"
        ));
    }
    let apply_options = ApplyOptions {
        applyset: set.clone(),
        force_conflicts: true,
        prune: false,
        allow_mass_prune: false,
        progress_bar: false,
        quiet: true,
    };
    let report = crate::cluster::apply(cluster, &live, &apply_options).await?;
    if let Some((object, message)) = report.failed {
        bail!("applying {object} failed: {message}");
    }
    Ok(format!(
        "{namespace}/{workspace}: woken (activity renewed, scaled back up)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(ns: &str, name: &str, renew: Option<&str>) -> Lease {
        let mut lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {},
        }))
        .unwrap();
        if let Some(r) = renew {
            lease.spec.as_mut().unwrap().renew_time = Some(MicroTime(r.parse().unwrap()));
        }
        lease
    }

    #[test]
    fn idle_after_the_timeout_without_renewal() {
        let timeouts = BTreeMap::from([("a/etl".to_string(), 60), ("a/rep".to_string(), 60)]);
        let now: Timestamp = "2025-01-01T01:00:00Z".parse().unwrap();
        let leases = [
            lease("a", "etl-activity", Some("2025-01-01T00:58:59.5Z")),
            lease("a", "rep-activity", Some("2025-01-01T00:59:30Z")),
            lease("a", "other-activity", Some("2020-01-01T00:00:00Z")),
            lease("b", "etl-activity", Some("2020-01-01T00:00:00Z")),
        ];
        let idle = idle_at(&timeouts, &leases, now);
        assert_eq!(
            idle,
            BTreeMap::from([("a/etl".to_string(), "2025-01-01T00:58:59Z".to_string())])
        );
        // Never renewed: idle since its creation.
        let idle = idle_at(&timeouts, &[lease("a", "rep-activity", None)], now);
        assert_eq!(idle["a/rep"], "2025-01-01T00:00:00Z");
    }

    #[test]
    fn timeouts_come_from_the_rendered_annotation() {
        let objects = [
            json!({"kind": "StatefulSet", "metadata": {"name": "w", "namespace": "n", "annotations": {IDLE_SECONDS: "1800"}}}),
            json!({"kind": "StatefulSet", "metadata": {"name": "v", "namespace": "n"}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n", "annotations": {IDLE_SECONDS: "5"}}}),
        ];
        assert_eq!(
            idle_timeouts(&objects),
            BTreeMap::from([("n/w".to_string(), 1800)])
        );
    }
}
