//! Idle termination (Mage Pro's termination policy): a workspace with
//! `lifecycle.termination.idleSeconds` is idle when its activity agent (see
//! [`crate::activity`]) is demonstrably running and has seen no activity for that long.
//! The reconciler renders it suspended (replicas 0, `berth/idle-since` on the StatefulSet
//! and on the Lease), so the suspension is desired state, not drift; renewed activity (the
//! Lease's `renewTime` after the suspension), e.g. from `berth wake`, brings it back.
//!
//! Never suspended: a workspace whose agent has no fresh heartbeat (not deployed yet,
//! crashing, no permission), or that has not reported any activity at all.

use crate::activity::HEARTBEAT;
use crate::cluster::Cluster;
use crate::cluster::applyset::ApplySet;
use crate::plan::Action;
use crate::render::lifecycle::heartbeat_deadline;
use crate::render::{IDLE_SECONDS, IDLE_SINCE};
use crate::resolve::Resolved;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub use crate::render::lifecycle::lease_name;

/// Workspaces that can go idle: `namespace/workspace` → idle timeout in seconds, from the
/// rendered StatefulSets' `berth/idle-seconds` (rendered one at a time, none kept).
pub fn idle_timeouts(resolved: &Resolved) -> BTreeMap<String, u64> {
    let ctx = crate::render::RenderContext::default();
    crate::render::render_each(resolved, &ctx, |key, object| {
        (key.kind == "StatefulSet").then(|| idle_timeout(&object))?
    })
    .into_iter()
    .filter_map(|(key, seconds)| Some((format!("{}/{}", key.namespace?, key.name), seconds?)))
    .collect()
}

fn idle_timeout(sts: &Value) -> Option<u64> {
    sts.pointer("/metadata/annotations")?
        .get(IDLE_SECONDS)?
        .as_str()?
        .parse()
        .ok()
}

fn annotation(lease: &Lease, key: &str) -> Option<Timestamp> {
    lease.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Whole seconds: the `berth/idle-since` annotation must not change between cycles.
fn whole(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Which of `timeouts` are idle at `now`, given the Leases: `namespace/workspace` → when
/// their activity stopped (RFC 3339). Idle means, for a workspace not suspended yet: the
/// agent's heartbeat is fresh, and its last activity (`renewTime`) is older than the
/// timeout. A suspended workspace (its Lease carries `berth/idle-since`) stays idle until
/// activity is renewed after the suspension.
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
        let Some(&timeout) = timeouts.get(&key) else {
            continue;
        };
        let renewed = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        if let Some(since) = annotation(lease, IDLE_SINCE) {
            // `since` is the last renewal cut to whole seconds: compared in whole seconds,
            // that same renewal (`…:00.5Z`) is not activity after the suspension.
            if renewed.is_none_or(|r| r.as_second() <= since.as_second()) {
                idle.insert(key, whole(since));
            }
            continue;
        }
        let Some(heartbeat) = annotation(lease, HEARTBEAT) else {
            continue; // no agent has ever reported
        };
        let age = |t: Timestamp| now.as_second() - t.as_second();
        if age(heartbeat) > heartbeat_deadline(timeout).as_secs() as i64 {
            continue; // the agent is not working: never suspend on silence
        }
        // Mage's own comparison: more than the timeout since the last activity.
        if let Some(last) = renewed
            && crate::mage::activity::idle_longer_than(last, now, timeout as i64)
        {
            idle.insert(key, whole(last));
        }
    }
    idle
}

/// One LIST of the ApplySet's Leases (all namespaces), then [`idle_at`] now.
pub async fn idle_workspaces(
    cluster: &Cluster,
    set: &ApplySet,
    timeouts: &BTreeMap<String, u64>,
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
    Ok(idle_at(timeouts, &leases.items, Timestamp::now()))
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

/// `berth wake`: renew the workspace's activity Lease, then scale its StatefulSet back to
/// one replica at once, without waiting for the reconciler's next cycle. Only `replicas`
/// is written (through the scale subresource, as `berth-wake`): wake never applies a
/// revision of its own, so it cannot undo what the reconciler applied. The reconciler's
/// next cycle sees the renewed activity and renders the workspace running again; a
/// suspension it planned before the wake is refused by the API server, because it was
/// planned against the StatefulSet's older resourceVersion.
pub async fn wake(
    cluster: &Cluster,
    resolved: &crate::resolve::Resolved,
    _set: &ApplySet,
    workspace: &str,
) -> Result<String> {
    let namespace = resolved
        .workspaces
        .iter()
        .find(|w| w.name == workspace)
        .map(|w| w.namespace.clone())
        .with_context(|| format!("no workspace named `{workspace}` in the repository"))?;
    renew_activity(cluster, &namespace, workspace).await?;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &namespace);
    let sts = api
        .get_opt(workspace)
        .await
        .with_context(|| format!("reading StatefulSet {namespace}/{workspace}"))?;
    let suspended = sts.as_ref().is_some_and(|s| {
        s.spec.as_ref().and_then(|s| s.replicas) == Some(0)
            && s.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(IDLE_SINCE))
    });
    if !suspended {
        return Ok(format!(
            "{namespace}/{workspace}: activity renewed; it was not suspended"
        ));
    }
    let params = PatchParams {
        field_manager: Some("berth-wake".into()),
        ..Default::default()
    };
    api.patch_scale(
        workspace,
        &params,
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .with_context(|| format!("scaling StatefulSet {namespace}/{workspace} back up"))?;
    Ok(format!(
        "{namespace}/{workspace}: woken (activity renewed, scaled back up)"
    ))
}

/// A change that is only the suspension or resumption of an idle workspace: its
/// StatefulSet, or its activity Lease (which carries the suspension too).
pub(super) fn is_idle_change(
    change: &crate::plan::Change,
    idle: &BTreeMap<String, String>,
    before: &BTreeMap<String, String>,
) -> bool {
    let workspace = match change.object.kind.as_str() {
        "StatefulSet" => change.object.name.as_str(),
        "Lease" => match change.object.name.strip_suffix("-activity") {
            Some(workspace) => workspace,
            None => return false,
        },
        _ => return false,
    };
    let key = format!(
        "{}/{}",
        change.object.namespace.as_deref().unwrap_or_default(),
        workspace
    );
    change.action == Action::Update
        && (idle.contains_key(&key) != before.contains_key(&key)
            || change
                .desired
                .as_ref()
                .and_then(|d| d.pointer("/metadata/annotations"))
                .is_some_and(|a| a.get(IDLE_SINCE).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(name: &str, renew: Option<&str>, annotations: &[(&str, &str)]) -> Lease {
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let mut lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "a", "annotations": annotations},
            "spec": {},
        }))
        .unwrap();
        if let Some(r) = renew {
            lease.spec.as_mut().unwrap().renew_time = Some(MicroTime(r.parse().unwrap()));
        }
        lease
    }

    const NOW: &str = "2025-01-01T01:00:00Z";

    fn idle_of(lease: Lease) -> Option<String> {
        let timeouts = BTreeMap::from([("a/w".to_string(), 60)]);
        idle_at(&timeouts, &[lease], NOW.parse().unwrap()).remove("a/w")
    }

    #[test]
    fn idle_only_with_a_live_agent_and_no_recent_activity() {
        let fresh = (HEARTBEAT, "2025-01-01T00:59:55Z");
        // The agent reports, the last activity is 61 s old: idle since then.
        assert_eq!(
            idle_of(lease(
                "w-activity",
                Some("2025-01-01T00:58:59.5Z"),
                &[fresh]
            ))
            .as_deref(),
            Some("2025-01-01T00:58:59Z")
        );
        // Activity 30 s ago: busy.
        assert_eq!(
            idle_of(lease("w-activity", Some("2025-01-01T00:59:30Z"), &[fresh])),
            None
        );
        // No heartbeat, or a stale one (31 s > 3 × 10 s): the signal is not working, so the
        // workspace is never suspended, however old its activity.
        assert_eq!(
            idle_of(lease("w-activity", Some("2020-01-01T00:00:00Z"), &[])),
            None
        );
        let stale = (HEARTBEAT, "2025-01-01T00:59:29Z");
        assert_eq!(
            idle_of(lease("w-activity", Some("2020-01-01T00:00:00Z"), &[stale])),
            None
        );
        // An agent that never reported activity: not idle either.
        assert_eq!(idle_of(lease("w-activity", None, &[fresh])), None);
    }

    #[test]
    fn a_suspension_lasts_until_activity_is_renewed_after_it() {
        let since = (IDLE_SINCE, "2025-01-01T00:30:00Z");
        // The agent is gone with the pod: the suspension stands on its own.
        assert_eq!(
            idle_of(lease("w-activity", Some("2025-01-01T00:29:00Z"), &[since])).as_deref(),
            Some("2025-01-01T00:30:00Z")
        );
        // `berth wake` renewed it: running again.
        assert_eq!(
            idle_of(lease("w-activity", Some("2025-01-01T00:45:00Z"), &[since])),
            None
        );
    }

    #[test]
    fn a_suspension_stays_when_the_last_renewal_had_a_fraction_of_a_second() {
        // The agent renews in microseconds; the suspension records whole seconds. The
        // renewal it was made from must not wake it (it did, every poll: a flapping loop).
        let renewed = "2025-01-01T00:29:59.734512Z";
        let first = idle_of(lease(
            "w-activity",
            Some(renewed),
            &[(HEARTBEAT, "2025-01-01T01:00:00Z")],
        ))
        .expect("idle");
        assert_eq!(first, "2025-01-01T00:29:59Z");
        assert_eq!(
            idle_of(lease("w-activity", Some(renewed), &[(IDLE_SINCE, &first)])).as_deref(),
            Some(first.as_str())
        );
    }

    #[test]
    fn timeouts_come_from_the_rendered_annotation() {
        let text = "
apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec: {namespace: n, image: mageai/mageai:1}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: w}
spec: {project: p, lifecycle: {termination: {idleSeconds: 1800}}}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: v}
spec: {project: p}
";
        let desired = crate::validated(vec![crate::load::SourceFile::new("r.yaml", text)]);
        assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
        assert_eq!(
            idle_timeouts(&desired.resolved),
            BTreeMap::from([("n/w".to_string(), 1800)])
        );
    }
}
