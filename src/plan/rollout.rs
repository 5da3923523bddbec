//! Rollouts: the gate that lets a change restart a fleet only in health-gated batches.
//!
//! A workspace restarts when its pod template changes (its environment's hash, its image).
//! The gate admits such updates of a group (a project's workspaces with one budget) while
//! fewer than the budget are unavailable, and holds back the rest: a held workspace keeps
//! its live pod template, so it keeps running as it is, with the environment it started
//! with. Everything the gate reads is in the cluster — which templates are live, which
//! StatefulSets are rolled out, when berth last restarted each one (an annotation) and
//! which projects are paused — so a restarted reconciler, or a new leader, continues
//! where the last one stopped, and a change during a rollout simply becomes the template
//! the remaining workspaces get.

use super::{Action, Change, Plan, compare};
use crate::render::{ENV_RECORD, ObjectKey};
use crate::resolve::rollout::RolloutPolicy;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// When berth last restarted a workspace (RFC 3339), on its StatefulSet; written by its own
/// field manager, [`MARK_MANAGER`], so applying git's objects never removes it.
pub const RESTARTED_AT: &str = "berth/rollout-restarted-at";
pub const MARK_MANAGER: &str = "berth-rollout";

/// One workspace as the gate sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub project: String,
    pub policy: RolloutPolicy,
    /// Its StatefulSet is rolled out and Ready (or scaled to zero).
    pub ready: bool,
    /// Scaled to zero (idle-suspended): restarting it takes nothing away.
    pub suspended: bool,
    /// When berth last restarted it, in seconds since the epoch.
    pub restarted_at: Option<u64>,
}

/// The fleet: every workspace, by `(namespace, name)`, with the projects whose rollouts
/// are paused and the time the gate decides at.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub members: BTreeMap<(String, String), Member>,
    pub paused: BTreeSet<String>,
    pub now: u64,
}

/// A workspace's StatefulSet as the cluster has it.
#[derive(Debug, Clone, Copy)]
pub struct LiveState {
    pub ready: bool,
    pub suspended: bool,
    pub restarted_at: Option<u64>,
}

impl Fleet {
    /// Every resolved workspace, with the state `live` gives of its StatefulSet (none: not
    /// in the cluster yet, so created rather than restarted, and nothing to wait for).
    pub fn of(
        resolved: &crate::resolve::Resolved,
        paused: BTreeSet<String>,
        now: u64,
        live: impl Fn(&str, &str) -> Option<LiveState>,
    ) -> Fleet {
        let members = resolved
            .workspaces
            .iter()
            .map(|w| {
                let state = live(&w.namespace, &w.name);
                let member = Member {
                    project: w.project.clone(),
                    policy: w.rollout.clone(),
                    ready: state.is_none_or(|s| s.ready),
                    suspended: state.is_some_and(|s| s.suspended),
                    restarted_at: state.and_then(|s| s.restarted_at),
                };
                ((w.namespace.clone(), w.name.clone()), member)
            })
            .collect();
        Fleet {
            members,
            paused,
            now,
        }
    }
}

/// A group's rollout, as a plan reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub project: String,
    /// The group's budget as written (`10%`, `5`).
    pub max_unavailable: String,
    /// Its workspaces, and how many of them may be unavailable at once.
    pub workspaces: usize,
    pub at_once: usize,
    /// Workspaces whose pods this change restarts, in all.
    pub restarts: usize,
    /// Admitted now: restarted by this apply (`namespace/name`).
    pub started: Vec<String>,
    /// Of those, the ones whose pods are not Ready: a StatefulSet does not replace a pod
    /// stuck on a broken template by itself (Kubernetes' "forced rollback"), so berth
    /// deletes such pods once the new template is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<String>,
    /// Restarted earlier and not Ready yet.
    pub in_progress: usize,
    /// Held back for a later batch.
    pub waiting: usize,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
}

/// Why a rollout stopped: a workspace it restarted was not Ready in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    pub workspace: String,
    pub reason: String,
}

impl Rollout {
    /// One line for plans and logs.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "project {}: restarts {} workspace{}, at most {} at a time (maxUnavailable {} of {})",
            self.project,
            self.restarts,
            plural(self.restarts),
            self.at_once,
            self.max_unavailable,
            self.workspaces
        );
        if self.started.len() + self.in_progress < self.restarts || self.waiting > 0 {
            line.push_str(&format!(
                "; now {} starting, {} restarting, {} waiting",
                self.started.len(),
                self.in_progress,
                self.waiting
            ));
        }
        if self.paused {
            line.push_str("; paused (`berth rollout resume`)");
        }
        if let Some(halt) = &self.halted {
            line.push_str(&format!("; HALTED at {}: {}", halt.workspace, halt.reason));
        }
        line
    }

    /// Whether the rollout has more to do that waits only for time or health.
    pub fn in_progress(&self) -> bool {
        !self.paused
            && self.halted.is_none()
            && (self.waiting > 0 || self.in_progress > 0 || !self.started.is_empty())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Whether an update changes the pod template, which restarts the workspace's pods.
pub fn rolls_pods(change: &Change) -> bool {
    change.action == Action::Update
        && change.object.kind == "StatefulSet"
        && change.problem.is_none()
        && change.fields.iter().any(|f| f.starts_with("spec.template"))
}

/// The workspaces (`namespace`, `name`) whose pods a plan's updates restart.
fn rolling(plan: &Plan) -> BTreeSet<(String, String)> {
    plan.changes
        .iter()
        .filter(|c| rolls_pods(c))
        .map(|c| workspace_of(&c.object))
        .collect()
}

/// Groups of a plan's pod-restarting updates, without a live cluster (an offline plan, a
/// diff between revisions): how the change would roll, every restart counted.
pub fn summarize(plan: &mut Plan, fleet: &Fleet) {
    let rolling = rolling(plan);
    plan.rollouts = groups(fleet)
        .into_iter()
        .filter_map(|(group, members)| {
            let restarts = members.iter().filter(|m| rolling.contains(m)).count();
            (restarts > 0).then(|| summary(fleet, &group, &members, restarts))
        })
        .collect();
}

/// The gate: admit what the budgets allow, hold the rest at their live templates (`live`
/// gives each held StatefulSet's live object), and report each group's rollout.
pub fn gate(
    plan: &mut Plan,
    fleet: &Fleet,
    live: impl Fn(&ObjectKey) -> Option<Value>,
    desired: impl Fn(&ObjectKey) -> Option<Value>,
) {
    let rolling = rolling(plan);
    let mut held = Held::new();
    let rollouts = groups(fleet)
        .into_iter()
        .filter_map(|(group, members)| gate_group(fleet, &group, &members, &rolling, &mut held))
        .collect();
    hold_changes(plan, &held, live, desired);
    for restart in &mut plan.restarts {
        if restart.pending.is_none()
            && let Some(reason) = held.get(&(restart.namespace.clone(), restart.workspace.clone()))
        {
            restart.pending = Some(reason.clone());
        }
    }
    plan.rollouts = rollouts;
}

/// The workspaces the gate holds back, each with the reason the plan gives.
type Held = BTreeMap<(String, String), String>;

/// One group's rollout: which of its rolling workspaces restart now and which wait (into
/// `held`), or nothing when none of it rolls or restarts.
fn gate_group(
    fleet: &Fleet,
    group: &Group,
    members: &[&(String, String)],
    rolling: &BTreeSet<(String, String)>,
    held: &mut Held,
) -> Option<Rollout> {
    let candidates: Vec<&(String, String)> = members
        .iter()
        .copied()
        .filter(|m| rolling.contains(*m))
        .collect();
    let restarted: Vec<&(String, String)> = members
        .iter()
        .copied()
        .filter(|m| !rolling.contains(*m))
        .filter(|m| {
            fleet
                .members
                .get(*m)
                .is_some_and(|w| !w.ready && !w.suspended && w.restarted_at.is_some())
        })
        .collect();
    if candidates.is_empty() && restarted.is_empty() {
        return None;
    }
    let mut rollout = summary(fleet, group, members, candidates.len() + restarted.len());
    rollout.in_progress = restarted.len();
    rollout.halted = halt_of(fleet, &restarted);
    let policy = &fleet.members[members[0]].policy;
    let mut unavailable = members
        .iter()
        .filter(|m| {
            fleet
                .members
                .get(*m)
                .is_some_and(|w| !w.ready && !w.suspended)
        })
        .count();
    // Restarting what is already down, or scaled to zero, takes nothing away: first.
    let mut order = candidates;
    order.sort_by_key(|m| {
        let w = &fleet.members[*m];
        (w.ready && !w.suspended, *m)
    });
    for m in order {
        let w = &fleet.members[m];
        let hold = hold_reason(fleet, w, policy, &rollout, &mut unavailable);
        match hold {
            Some(reason) => {
                rollout.waiting += 1;
                held.insert(m.clone(), reason);
            }
            None => {
                let name = format!("{}/{}", m.0, m.1);
                if !w.ready && !w.suspended {
                    rollout.stuck.push(name.clone());
                }
                rollout.started.push(name);
            }
        }
    }
    Some(rollout)
}

/// Why `w` waits, or None when it restarts now (then taking one of the group's slots if
/// it is Ready: `unavailable` counts the taken ones). The group's `policy` is its first
/// member's.
fn hold_reason(
    fleet: &Fleet,
    w: &Member,
    policy: &RolloutPolicy,
    rollout: &Rollout,
    unavailable: &mut usize,
) -> Option<String> {
    let min_interval = policy.min_restart_interval_seconds;
    if let Some(at) = w.restarted_at
        && fleet.now < at + min_interval
    {
        return Some(format!(
            "rollout: restarted {} s ago; next restart after {min_interval} s (minRestartIntervalSeconds)",
            fleet.now - at
        ));
    }
    if rollout.paused {
        return Some("rollout paused: `berth rollout resume` to continue".to_string());
    }
    if let Some(halt) = &rollout.halted {
        return Some(format!(
            "rollout halted: {} {}",
            halt.workspace, halt.reason
        ));
    }
    if !w.ready || w.suspended {
        return None;
    }
    if *unavailable < rollout.at_once {
        *unavailable += 1;
        return None;
    }
    Some(format!(
        "rollout: waiting for a batch slot ({unavailable} of at most {} restarting)",
        rollout.at_once
    ))
}

/// A workspace restarted longer ago than the deadline and still not Ready, whose
/// template git still wants: the change is broken there, so the group stops.
fn halt_of(fleet: &Fleet, restarted: &[&(String, String)]) -> Option<Halt> {
    restarted.iter().find_map(|m| {
        let w = &fleet.members[*m];
        let since = fleet.now.saturating_sub(w.restarted_at?);
        (since > w.policy.progress_deadline_seconds).then(|| Halt {
            workspace: format!("{}/{}", m.0, m.1),
            reason: format!(
                "not Ready {since} s after its restart (progressDeadlineSeconds {})",
                w.policy.progress_deadline_seconds
            ),
        })
    })
}

/// Holds each held workspace's pod-rolling change at its live template; an update left
/// with nothing to change leaves the plan.
fn hold_changes(
    plan: &mut Plan,
    held: &Held,
    live: impl Fn(&ObjectKey) -> Option<Value>,
    desired: impl Fn(&ObjectKey) -> Option<Value>,
) {
    for change in &mut plan.changes {
        let ws = workspace_of(&change.object);
        if !rolls_pods(change) || !held.contains_key(&ws) {
            continue;
        }
        // A live plan's update may carry no object: it is the desired one of its key.
        if change.desired.is_none() {
            change.desired = desired(&change.object);
        }
        if let (Some(desired), Some(live)) = (change.desired.as_mut(), live(&change.object)) {
            hold_at_live(desired, &live);
            change.fields = compare::changed_fields(desired, &live);
            if !change.diff.is_empty() {
                change.diff = compare::diff(desired, &live);
            }
        }
    }
    let before = plan.changes.len();
    plan.changes.retain(|c| {
        !(c.object.kind == "StatefulSet" && c.action == Action::Update && c.fields.is_empty())
    });
    plan.unchanged += before - plan.changes.len();
}

/// The desired StatefulSet with the live pod template and env record: applying it
/// restarts nothing, and the next plan still names what changed since the pods started.
fn hold_at_live(desired: &mut Value, live: &Value) {
    if let (Some(template), Some(spec)) = (
        live.pointer("/spec/template"),
        desired.get_mut("spec").and_then(Value::as_object_mut),
    ) {
        spec.insert("template".into(), template.clone());
    }
    let record = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ENV_RECORD))
        .cloned();
    if let Some(annotations) = desired
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        match record {
            Some(record) => {
                annotations.insert(ENV_RECORD.into(), record);
            }
            None => {
                annotations.shift_remove(ENV_RECORD);
            }
        }
    }
}

fn workspace_of(key: &ObjectKey) -> (String, String) {
    (key.namespace.clone().unwrap_or_default(), key.name.clone())
}

/// A group: a project and a budget as written.
type Group = (String, String);

/// The fleet's workspaces by group, in name order.
fn groups(fleet: &Fleet) -> BTreeMap<Group, Vec<&(String, String)>> {
    let mut out: BTreeMap<Group, Vec<&(String, String)>> = BTreeMap::new();
    for (key, w) in &fleet.members {
        out.entry((w.project.clone(), w.policy.max_unavailable.to_string()))
            .or_default()
            .push(key);
    }
    out
}

/// A group's rollout before the gate: `members` is the group (never empty), all of one
/// budget.
fn summary(
    fleet: &Fleet,
    group: &Group,
    members: &[&(String, String)],
    restarts: usize,
) -> Rollout {
    let workspaces = members.len();
    let budget = members
        .first()
        .and_then(|m| fleet.members.get(*m))
        .map(|w| &w.policy.max_unavailable);
    Rollout {
        project: group.0.clone(),
        max_unavailable: group.1.clone(),
        workspaces,
        at_once: budget.and_then(|b| b.of(workspaces)).unwrap_or(1),
        restarts,
        started: Vec::new(),
        stuck: Vec::new(),
        in_progress: 0,
        waiting: 0,
        paused: fleet.paused.contains(&group.0),
        halted: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Budget;
    use proptest::prelude::*;
    use serde_json::json;

    fn sts(name: &str, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "ns",
                         "labels": {"app.kubernetes.io/managed-by": "berth"}, "annotations": {}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "mage", "image": image}]}}},
        })
    }

    fn member(budget: u32, ready: bool, restarted_at: Option<u64>) -> Member {
        Member {
            project: "p".into(),
            policy: RolloutPolicy {
                max_unavailable: Budget::Count(budget),
                progress_deadline_seconds: 600,
                min_restart_interval_seconds: 60,
            },
            ready,
            suspended: false,
            restarted_at,
        }
    }

    /// The plan from `live` to `desired`, through the gate.
    fn gated(desired: &[Value], live: &[Value], fleet: &Fleet) -> Plan {
        let mut plan = super::super::compute(desired, live);
        let by_key: BTreeMap<ObjectKey, &Value> = live
            .iter()
            .map(|o| (crate::render::key_of(o).unwrap(), o))
            .collect();
        gate(
            &mut plan,
            fleet,
            |k| by_key.get(k).map(|v| (*v).clone()),
            |_| None,
        );
        plan
    }

    fn image(o: &Value) -> &str {
        o.pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// A rollout, cycle after cycle: each cycle plans, gates and "applies" what the gate
    /// let through; a restarted workspace is Ready `ready_after[i]` cycles later. Returns
    /// the most unavailable at once and how often each workspace was restarted.
    fn roll(
        n: usize,
        budget: u32,
        ready_after: &[u64],
        change_at: Option<u64>,
    ) -> (usize, Vec<u32>, Vec<String>) {
        let names: Vec<String> = (0..n).map(|i| format!("ws-{i:03}")).collect();
        let mut live: Vec<Value> = names.iter().map(|w| sts(w, "v1")).collect();
        let mut desired: Vec<Value> = names.iter().map(|w| sts(w, "v2")).collect();
        let mut ready_at: Vec<u64> = vec![0; n];
        let mut marks: Vec<Option<u64>> = vec![None; n];
        let mut restarts = vec![0u32; n];
        let mut worst = 0;
        // Cycles are 100 s apart: the debounce (60 s) never holds a second change back.
        for cycle in 0..(4 * n as u64 + 20) {
            let now = 1_000 + cycle * 100;
            if change_at == Some(cycle) {
                desired = names.iter().map(|w| sts(w, "v3")).collect();
            }
            let fleet = Fleet {
                members: names
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        (
                            ("ns".to_string(), w.clone()),
                            Member {
                                restarted_at: marks[i],
                                ..member(budget, ready_at[i] <= cycle, None)
                            },
                        )
                    })
                    .collect(),
                paused: BTreeSet::new(),
                now,
            };
            let unavailable = (0..n).filter(|i| ready_at[*i] > cycle).count();
            worst = worst.max(unavailable);
            let plan = gated(&desired, &live, &fleet);
            if plan.changes.is_empty() && unavailable == 0 && change_at.is_none_or(|c| c < cycle) {
                break;
            }
            for change in &plan.changes {
                let i = names.iter().position(|w| *w == change.object.name).unwrap();
                let next = change.desired.clone().unwrap();
                if image(&next) != image(&live[i]) {
                    restarts[i] += 1;
                    marks[i] = Some(now);
                    ready_at[i] = cycle + 1 + ready_after[i % ready_after.len()];
                }
                live[i] = next;
            }
        }
        let images = live.iter().map(|o| image(o).to_string()).collect();
        (worst, restarts, images)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However fast or slow workspaces become Ready, no more than the budget are ever
        /// unavailable, every workspace ends on git's template, each restarted once.
        #[test]
        fn a_rollout_stays_within_its_budget_and_restarts_each_workspace_once(
            n in 1usize..40, budget in 1u32..8, ready_after in prop::collection::vec(0u64..4, 1..8),
        ) {
            let (worst, restarts, images) = roll(n, budget, &ready_after, None);
            prop_assert!(worst <= budget as usize, "{worst} unavailable, budget {budget}");
            prop_assert!(restarts.iter().all(|r| *r == 1), "{restarts:?}");
            prop_assert!(images.iter().all(|i| i == "v2"));
        }

        /// A change during the rollout supersedes it: the workspaces not yet restarted get
        /// only the newest template (one restart), the others at most one more.
        #[test]
        fn a_change_during_a_rollout_restarts_nobody_for_a_value_it_will_not_run(
            n in 2usize..40, budget in 1u32..5, change_at in 1u64..6,
        ) {
            let (worst, restarts, images) = roll(n, budget, &[1], Some(change_at));
            prop_assert!(worst <= budget as usize);
            prop_assert!(images.iter().all(|i| i == "v3"));
            prop_assert!(restarts.iter().all(|r| (1..=2).contains(r)), "{restarts:?}");
            let restarted_for_v2 = restarts.iter().filter(|r| **r == 2).count();
            prop_assert!(restarted_for_v2 <= (change_at as usize) * budget as usize);
        }
    }

    #[test]
    fn a_workspace_not_ready_past_its_deadline_halts_the_rest() {
        let live: Vec<Value> = (0..4)
            .map(|i| sts(&format!("w{i}"), if i == 0 { "v2" } else { "v1" }))
            .collect();
        let desired: Vec<Value> = (0..4).map(|i| sts(&format!("w{i}"), "v2")).collect();
        let mut members = BTreeMap::new();
        members.insert(("ns".into(), "w0".into()), member(2, false, Some(0)));
        for i in 1..4 {
            members.insert(("ns".into(), format!("w{i}")), member(2, true, None));
        }
        let fleet = Fleet {
            members,
            paused: BTreeSet::new(),
            now: 601,
        };
        let plan = gated(&desired, &live, &fleet);
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        let rollout = &plan.rollouts[0];
        assert_eq!(
            rollout.halted.as_ref().map(|h| h.workspace.as_str()),
            Some("ns/w0")
        );
        assert_eq!(
            (rollout.waiting, rollout.in_progress, rollout.restarts),
            (3, 1, 4)
        );
        assert!(
            rollout.describe().contains("HALTED at ns/w0"),
            "{}",
            rollout.describe()
        );
        // Within the deadline, the same fleet starts one more (budget 2, one restarting).
        let fleet = Fleet { now: 300, ..fleet };
        let plan = gated(&desired, &live, &fleet);
        assert_eq!(plan.rollouts[0].started, vec!["ns/w1".to_string()]);
        // Paused: nothing starts.
        let fleet = Fleet {
            paused: ["p".to_string()].into(),
            ..fleet
        };
        let plan = gated(&desired, &live, &fleet);
        assert!(plan.rollouts[0].started.is_empty() && plan.rollouts[0].paused);
    }

    #[test]
    fn a_workspace_restarted_within_its_interval_waits() {
        let live = vec![sts("w0", "v1")];
        let desired = vec![sts("w0", "v2")];
        let members: BTreeMap<(String, String), Member> = [(
            ("ns".to_string(), "w0".to_string()),
            member(5, true, Some(1_000)),
        )]
        .into();
        for (now, started) in [(1_030, 0), (1_061, 1)] {
            let fleet = Fleet {
                members: members.clone(),
                paused: BTreeSet::new(),
                now,
            };
            let plan = gated(&desired, &live, &fleet);
            assert_eq!(plan.rollouts[0].started.len(), started, "at {now}");
            assert_eq!(plan.changes.len(), started);
        }
    }

    /// A Secret changed 50 times in a minute: each workspace that uses it restarts at most
    /// twice in that minute, and ends on the last value.
    #[test]
    fn a_flapping_value_restarts_each_workspace_at_most_twice_a_minute() {
        let names: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
        let mut live: Vec<Value> = names.iter().map(|w| sts(w, "v0")).collect();
        let mut marks: Vec<Option<u64>> = vec![None; names.len()];
        let mut restarts = vec![0; names.len()];
        let mut last = String::new();
        // 50 changes, 1.2 s apart, then quiet until the interval has passed once more.
        for step in 0..100u64 {
            let now = 10_000 + step * 12 / 10;
            if step < 50 {
                last = format!("v{}", step + 1);
            }
            let desired: Vec<Value> = names.iter().map(|w| sts(w, &last)).collect();
            let fleet = Fleet {
                members: names
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (("ns".to_string(), w.clone()), member(5, true, marks[i])))
                    .collect(),
                paused: BTreeSet::new(),
                now,
            };
            let plan = gated(&desired, &live, &fleet);
            for change in &plan.changes {
                let i = names.iter().position(|w| *w == change.object.name).unwrap();
                live[i] = change.desired.clone().unwrap();
                marks[i] = Some(now);
                if now < 10_060 {
                    restarts[i] += 1;
                }
            }
        }
        assert!(restarts.iter().all(|r| (1..=2).contains(r)), "{restarts:?}");
        assert!(live.iter().all(|o| image(o) == "v50"));
    }
}
