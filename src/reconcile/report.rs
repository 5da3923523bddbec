//! What the reconciler tells people: the workspaces' state and the rollouts in the status,
//! Kubernetes Events (applied, drift healed, rollout batches and halts, idle suspensions),
//! and writing the status ConfigMap when it changed. The formats live in
//! [`super::status`]; this file decides what to say after each cycle.

use super::idle::is_idle_change;
use super::state::{ROLLOUT_TICK, Reconciler, Target, Trigger, short};
use super::status::{self, RevisionInfo, WorkspaceStatus};
use crate::cluster::{ApplyReport, LivePlan};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

impl Reconciler {
    /// The rollouts of this cycle's plan: in the status and the metrics, an Event for each
    /// new halt, and the next cycle soon while a batch is under way (a rollout advances as
    /// its restarted workspaces become Ready, not at the next poll).
    pub(super) async fn follow_rollouts(&mut self, rollouts: &[crate::plan::rollout::Rollout]) {
        self.shared.metrics.rollouts(rollouts);
        self.shared.set_status(|s| s.rollouts = rollouts.to_vec());
        let mut halts = BTreeSet::new();
        for r in rollouts {
            let Some(halt) = &r.halted else { continue };
            let key = format!("{} {}", r.project, halt.workspace);
            if !self.halts.contains(&key) {
                let message = format!(
                    "rollout of project {} halted at {}: {}; {} workspace(s) keep their running \
                     pods until a new commit changes or reverts it",
                    r.project, halt.workspace, halt.reason, r.waiting
                );
                tracing::error!("{message}");
                self.event(true, "RolloutHalted", &message).await;
            }
            halts.insert(key);
        }
        self.halts = halts;
        if rollouts
            .iter()
            .any(crate::plan::rollout::Rollout::in_progress)
        {
            self.next_drift = self.next_drift.min(Instant::now() + ROLLOUT_TICK);
        }
    }

    /// Per-workspace state from a plan (live before apply) and what the apply did.
    pub(super) fn workspaces(
        &self,
        live: &LivePlan,
        report: Option<&ApplyReport>,
        idle: &BTreeMap<String, String>,
    ) {
        // The workspaces' StatefulSets, read back from the plan's JSON text; restarts,
        // failures and live StatefulSets by workspace: one lookup each, not a scan of all
        // (at 10,000 workspaces the scans took minutes).
        let desired = statefulsets(live);
        let lookups = Lookups::new(live, report);
        let mut list: Vec<WorkspaceStatus> = desired
            .iter()
            .map(|object| lookups.status(object, idle))
            .collect();
        status::annotate(&mut list, &desired, &live.plan);
        self.shared.set_status(|s| s.workspaces = list);
    }

    /// Between full cycles, follow workspaces that are starting or restarting until they
    /// are ready: one LIST of StatefulSets, only while there is something to follow.
    pub(super) async fn refresh_workspaces(&self) {
        let following = self
            .shared
            .status()
            .workspaces
            .iter()
            .any(|w| w.state == "starting" || w.state == "restarting");
        if !following {
            return;
        }
        let api: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
            kube::Api::all(self.cluster.client.clone());
        let params = kube::api::ListParams::default().labels(&self.config.applyset.selector());
        let Ok(list) = api.list(&params).await else {
            return;
        };
        self.shared.set_status(|s| {
            for w in &mut s.workspaces {
                if w.state != "starting" && w.state != "restarting" {
                    continue;
                }
                let sts = list.items.iter().find(|i| {
                    i.metadata.namespace.as_deref() == Some(w.namespace.as_str())
                        && i.metadata.name.as_deref() == Some(w.name.as_str())
                });
                if sts.is_some_and(crate::cluster::rolled_out) {
                    w.state = "ready".into();
                    w.reason = None;
                }
            }
        });
    }

    pub(super) async fn event(&self, warning: bool, reason: &str, message: &str) {
        if !self.is_leader() {
            return;
        }
        if let Err(err) = status::event(
            &self.cluster,
            &self.config.applyset,
            &self.config.identity,
            warning,
            reason,
            message,
        )
        .await
        {
            tracing::warn!(error = %crate::cluster::error::chain(&err), "recording an Event failed");
        }
    }

    /// Write the status ConfigMap if it changed (leader only).
    pub(super) async fn write_status(&mut self) {
        if !self.is_leader() {
            return;
        }
        let current = self.shared.status();
        if self.written.as_ref() == Some(&current) {
            return;
        }
        match status::write(&self.cluster, &self.config.applyset, &current).await {
            Ok(()) => self.written = Some(current),
            Err(err) => {
                tracing::warn!(error = %crate::cluster::error::chain(&err), "writing the status failed")
            }
        }
    }

    /// A new revision is in force: the status's last applied revision, the log and an
    /// `Applied` Event.
    pub(super) async fn report_applied(&self, target: &Target, summary: &str) {
        self.shared.set_status(|s| {
            s.last_applied = Some(RevisionInfo {
                revision: target.commit.clone(),
                summary: target.summary.clone(),
                at: status::now(),
                signer: target.signer.clone(),
            });
        });
        let message = format!(
            "applied {} {}{}",
            short(&target.commit),
            target.summary,
            if summary.is_empty() {
                String::new()
            } else {
                format!(": {summary}")
            }
        );
        tracing::info!(revision = %target.commit, "{message}");
        self.event(false, "Applied", &message).await;
    }

    /// The same revision applied again: a rollout's next batch (a `RolloutBatch` Event),
    /// or drift healed (a `DriftHealed` Event and the status's last drift). A change that
    /// only suspends or resumes an idle workspace is neither.
    pub(super) async fn report_drift(
        &self,
        target: &Target,
        trigger: Trigger,
        live: &LivePlan,
        idle: &BTreeMap<String, String>,
    ) {
        // A rollout's next batch is git's change going on, not drift.
        let batch: Vec<&str> = live
            .plan
            .rollouts
            .iter()
            .flat_map(|r| r.started.iter().map(String::as_str))
            .collect();
        if !batch.is_empty() {
            let message = format!(
                "rollout of {}: restarting {}",
                short(&target.commit),
                batch.join(", ")
            );
            tracing::info!("{message}");
            self.event(false, "RolloutBatch", &message).await;
        }
        let objects: Vec<String> = live
            .plan
            .changes
            .iter()
            .filter(|c| !is_idle_change(c, idle, &self.idle))
            .filter(|c| {
                !(crate::plan::rollout::rolls_pods(c)
                    && batch.contains(
                        &format!(
                            "{}/{}",
                            c.object.namespace.as_deref().unwrap_or(""),
                            c.object.name
                        )
                        .as_str(),
                    ))
            })
            .map(|c| c.object.to_string())
            .collect();
        if !objects.is_empty() {
            let message = format!(
                "healed drift from {} ({trigger:?}): {}",
                short(&target.commit),
                objects.join(", ")
            );
            tracing::warn!("{message}");
            self.event(true, "DriftHealed", &message).await;
            self.shared.set_status(|s| {
                s.last_drift = Some(status::DriftInfo {
                    at: status::now(),
                    revision: target.commit.clone(),
                    objects,
                });
            });
        }
    }

    /// Idle transitions since the last cycle: a `Suspended` or `Resumed` Event each.
    pub(super) async fn report_idle(&self, idle: &BTreeMap<String, String>) {
        for (key, since) in idle {
            if !self.idle.contains_key(key) {
                let message = format!("{key} is idle since {since}: suspended (replicas 0)");
                tracing::info!("{message}");
                self.event(false, "Suspended", &message).await;
            }
        }
        for key in self.idle.keys() {
            if !idle.contains_key(key) {
                let message = format!("{key} is active again: resumed");
                tracing::info!("{message}");
                self.event(false, "Resumed", &message).await;
            }
        }
    }
}

/// The desired StatefulSets of a plan, with only what the status reads.
fn statefulsets(live: &LivePlan) -> Vec<Value> {
    live.desired
        .iter()
        .filter(|o| o.key.kind == "StatefulSet")
        .map(|o| {
            // What the status reads (names, labels, replicas): read back one at a
            // time, the rest of each StatefulSet dropped at once.
            let object = o.value();
            serde_json::json!({
                "kind": "StatefulSet",
                "metadata": {
                    "namespace": object.pointer("/metadata/namespace"),
                    "name": object.pointer("/metadata/name"),
                    "labels": object.pointer("/metadata/labels"),
                },
                "spec": {"replicas": object.pointer("/spec/replicas")},
            })
        })
        .collect()
}

/// A plan's restarts, halts, failures and live StatefulSets, each by workspace.
struct Lookups<'a> {
    restarts: BTreeMap<(&'a str, &'a str), &'a crate::plan::Restart>,
    halts: BTreeMap<&'a str, &'a crate::plan::rollout::Halt>,
    failures: BTreeMap<(&'a str, &'a str), &'a String>,
    rolled_out: BTreeMap<(&'a str, &'a str), Option<bool>>,
}

impl<'a> Lookups<'a> {
    fn new(live: &'a LivePlan, report: Option<&'a ApplyReport>) -> Lookups<'a> {
        let restarts: BTreeMap<(&str, &str), &crate::plan::Restart> = live
            .plan
            .restarts
            .iter()
            .rev()
            .map(|r| ((r.namespace.as_str(), r.workspace.as_str()), r))
            .collect();
        let halts: BTreeMap<&str, &crate::plan::rollout::Halt> = live
            .plan
            .rollouts
            .iter()
            .filter_map(|r| r.halted.as_ref())
            .map(|h| (h.workspace.as_str(), h))
            .collect();
        let mut failures: BTreeMap<(&str, &str), &String> = BTreeMap::new();
        for (object, message) in report.into_iter().flat_map(|r| &r.failed) {
            // `Kind/namespace/name`: the workspace's own object, or its `<name>-env`.
            let mut parts = object.rsplitn(3, '/');
            let (Some(name), Some(namespace), Some(_)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            failures.entry((namespace, name)).or_insert(message);
            if let Some(workspace) = name.strip_suffix("-env") {
                failures.entry((namespace, workspace)).or_insert(message);
            }
        }
        let rolled_out: BTreeMap<(&str, &str), Option<bool>> = live
            .inventory
            .members
            .iter()
            .filter(|m| m.key.kind == "StatefulSet")
            .map(|m| {
                let namespace = m.key.namespace.as_deref().unwrap_or_default();
                ((namespace, m.key.name.as_str()), m.rolled_out)
            })
            .collect();
        Lookups {
            restarts,
            halts,
            failures,
            rolled_out,
        }
    }

    /// The state of the workspace of one desired StatefulSet, and why.
    fn status(&self, object: &Value, idle: &BTreeMap<String, String>) -> WorkspaceStatus {
        let text = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
        let key = format!("{namespace}/{name}");
        let restart = self.restarts.get(&(namespace, name)).copied();
        let failed = self.failures.get(&(namespace, name));
        let live_sts = self.rolled_out.get(&(namespace, name)).copied();
        let replicas = object
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let (state, reason) = if let Some(message) = failed {
            ("failed", Some(message.to_string()))
        } else if let Some(halt) = self.halts.get(key.as_str()) {
            (
                "halted",
                Some(format!("rollout halted here: {}", halt.reason)),
            )
        } else if let Some(since) = idle.get(&key) {
            ("suspended", Some(format!("idle since {since}")))
        } else if replicas == 0 {
            ("suspended", Some("suspended in git".to_string()))
        } else if let Some(r) = restart.filter(|r| r.pending.is_none()) {
            let names: Vec<&str> = r.variables.iter().map(|v| v.name.as_str()).collect();
            (
                "restarting",
                Some(format!("environment changed: {}", names.join(", "))),
            )
        } else {
            live_state(live_sts)
        };
        WorkspaceStatus {
            namespace: namespace.to_string(),
            name: name.to_string(),
            state: state.to_string(),
            reason,
            pending_restart: restart.and_then(|r| r.pending.clone()),
            ..Default::default()
        }
    }
}

/// A workspace's state from its live StatefulSet: absent (`None`), or whether it is rolled
/// out (the plan's member records it).
fn live_state(live: Option<Option<bool>>) -> (&'static str, Option<String>) {
    match live {
        None => ("starting", Some("created".into())),
        Some(Some(true)) => ("ready", None),
        Some(_) => ("starting", Some("not rolled out yet".into())),
    }
}
