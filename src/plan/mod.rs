//! Plan: desired objects vs live objects → the changes that would make them equal, each with
//! its reason, plus the workspaces whose environment change restarts them.
//!
//! This is the pure half of planning. "Live" is whatever the caller has: nothing (offline),
//! objects exported with `kubectl get -o yaml`, the render of another git revision, or (from
//! `crate::cluster`) the API server's own answer.

pub mod compare;
pub mod delta;
pub mod destructive;
pub mod live;
pub mod output;
pub mod rollout;

use crate::render::{ENV_HASH, ENV_RECORD, ENV_SOURCES, MANAGED_BY, ObjectKey, key_of, kind_rank};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    /// Deleted and created again, because Kubernetes cannot change some fields in place
    /// (see [`Recreate`]).
    Recreate,
    /// No longer in git, but kept in the cluster: berth stops managing it (a Namespace).
    Release,
    Delete,
}

/// One object to create, update or delete.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub action: Action,
    pub object: ObjectKey,
    /// Why, in words: "new in git", "changed in git", "no longer in git".
    pub reason: String,
    /// The fields that change (`spec.replicas`), for updates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Unified diff of the changing fields (live → desired), for updates.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
    /// What else applying this change does, or deliberately does not do, in words: claims
    /// kept or expanded, a namespace kept, how to remove by hand what berth keeps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// How a re-creation goes ([`Action::Recreate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recreate: Option<Recreate>,
    /// Why this object cannot be applied as planned. The rest of the plan is unaffected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// What to apply (updates, re-creations; creates of an offline plan). A live plan's
    /// creates leave it out: the object is the plan's desired one of the same key
    /// (`cluster::LivePlan::desired`), so thousands of new objects are not held twice.
    #[serde(skip)]
    pub desired: Option<Value>,
}

impl Change {
    fn new(action: Action, object: ObjectKey, reason: &str, desired: Option<Value>) -> Change {
        Change {
            action,
            object,
            reason: reason.into(),
            fields: Vec::new(),
            diff: String::new(),
            notes: Vec::new(),
            recreate: None,
            problem: None,
            desired,
        }
    }
}

/// A StatefulSet or Service that must be re-created to reach git's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recreate {
    /// The immutable fields that differ.
    pub fields: Vec<String>,
    /// `(from, to)` when only the claims' storage grows: the claims are expanded and the
    /// StatefulSet re-created without deleting its pods, no flag needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grow: Option<(String, String)>,
    /// The claims of the StatefulSet: those the cluster holds in a live plan, else the
    /// names its pods would use.
    pub claims: Vec<String>,
    /// Whether the re-creation waits for `--allow-replace`: any StatefulSet change other
    /// than claim growth does. A Service holds no data and is re-created without it.
    pub needs_allow_replace: bool,
}

/// Why one object of a plan cannot be applied: refused by berth (a shrink) or by the API
/// server (its reason and field), in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub message: String,
    /// The field of the workspace's document the problem is about (a JSON pointer, e.g.
    /// `/spec/storage/size`), so the command line can point at file:line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VarChange {
    pub name: String,
    /// added, removed or changed.
    pub change: &'static str,
    /// Where the variable comes from now (or came from, if removed).
    pub source: String,
}

/// A workspace whose pods restart because its effective environment changed.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    pub namespace: String,
    pub workspace: String,
    /// The variables that changed: names and sources only, never values.
    pub variables: Vec<VarChange>,
    /// Set when the restart waits (`manual`: for `berth restart`; `when-idle`: until idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub restarts: Vec<Restart>,
    pub unchanged: usize,
    /// What applying will not fix but a person should know, per workspace: e.g. a Secret
    /// or key it references that does not exist (it would never start).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the change adds to or removes from the workspaces' CPU, memory, GPUs, storage
    /// and count, in total and per project ([`delta`]).
    pub resources: delta::Delta,
    /// How the pod restarts roll, per project ([`rollout`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<rollout::Rollout>,
}

impl Plan {
    /// Whether applying the plan would do anything.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Changes that cannot be applied as planned.
    pub fn problems(&self) -> impl Iterator<Item = (&Change, &Problem)> {
        self.changes
            .iter()
            .filter_map(|c| Some((c, c.problem.as_ref()?)))
    }

    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
}

fn is_managed(object: &Value) -> bool {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(MANAGED_BY))
        .and_then(Value::as_str)
        == Some("berth")
}

/// Compare desired with live objects. Live objects berth does not manage are never deleted.
pub fn compute(desired: &[Value], live: &[Value]) -> Plan {
    compute_with(desired, &live.iter().collect::<Vec<_>>(), true)
}

/// [`compute`] without the diffs of updates, for a caller that asks the server for them.
pub fn compute_without_diffs(desired: &[Value], live: &[Value]) -> Plan {
    compute_with(desired, &live.iter().collect::<Vec<_>>(), false)
}

fn compute_with(desired: &[Value], live: &[&Value], diffs: bool) -> Plan {
    let resources = delta::between(desired, live.iter().copied());
    let live: BTreeMap<ObjectKey, &Value> =
        live.iter().filter_map(|o| Some((key_of(o)?, *o))).collect();
    // Desired objects by key: restarts look up env ConfigMaps by key, not by a scan.
    let desired_by_key: BTreeMap<ObjectKey, &Value> = desired
        .iter()
        .filter_map(|o| Some((key_of(o)?, o)))
        .collect();
    let mut plan = Plan {
        resources,
        ..Plan::default()
    };

    for object in desired {
        let Some(key) = key_of(object) else { continue };
        let Some(current) = live.get(&key) else {
            plan.changes.push(Change::new(
                Action::Create,
                key,
                "new in git",
                Some(object.clone()),
            ));
            continue;
        };
        let mut object = object.clone();
        if key.kind == "StatefulSet"
            && let Some(restart) = restart_of(&key, &mut object, current, &desired_by_key, &live)
        {
            plan.restarts.push(restart);
        }
        let fields = compare::changed_fields(&object, current);
        if fields.is_empty() {
            plan.unchanged += 1;
            continue;
        }
        let mut change = Change::new(Action::Update, key, "changed in git", None);
        change.fields = fields;
        if diffs {
            change.diff = compare::diff(&object, current);
        }
        match destructive::immutable_change(&change.object.kind, &object, current) {
            None => {}
            Some(Ok(recreate)) => {
                change.action = Action::Recreate;
                change.notes = destructive::recreate_notes(&change, &recreate);
                change.recreate = Some(recreate);
            }
            Some(Err(problem)) => change.problem = Some(problem),
        }
        change.desired = Some(object);
        plan.changes.push(change);
    }

    for (key, object) in &live {
        if desired_by_key.contains_key(key) || !is_managed(object) {
            continue;
        }
        let mut change = Change::new(Action::Delete, key.clone(), "no longer in git", None);
        match key.kind.as_str() {
            "Namespace" => {
                let (action, reason, notes) = destructive::namespace_removal(object);
                (change.action, change.reason, change.notes) = (action, reason, notes);
            }
            "StatefulSet" => change.notes = vec![destructive::claims_note(object, None)],
            _ => {}
        }
        plan.changes.push(change);
    }
    sort_changes(&mut plan.changes);
    plan
}

/// Changes in the order they are applied: writes in apply order, then deletes in reverse
/// apply order (workloads before what they depend on).
fn sort_changes(changes: &mut [Change]) {
    changes.sort_by(|a, b| {
        let rank = |c: &Change| match c.action {
            Action::Delete | Action::Release => (1, u8::MAX - kind_rank(&c.object.kind)),
            _ => (0, kind_rank(&c.object.kind)),
        };
        (rank(a), &a.object).cmp(&(rank(b), &b.object))
    });
}

fn template_hash(object: &Value) -> Option<&str> {
    object
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(ENV_HASH))
        .and_then(Value::as_str)
}

/// A StatefulSet restarts when its env hash changes. For workspaces that defer restarts,
/// the live hash is kept in the desired object, so applying it does not roll the pods.
fn restart_of(
    key: &ObjectKey,
    desired: &mut Value,
    live: &Value,
    all_desired: &BTreeMap<ObjectKey, &Value>,
    all_live: &BTreeMap<ObjectKey, &Value>,
) -> Option<Restart> {
    let (new_hash, old_hash) = (template_hash(desired)?, template_hash(live)?);
    if new_hash == old_hash {
        return None;
    }
    let env_key = ObjectKey {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: key.namespace.clone(),
        name: crate::render::env_config_map_name(&key.name),
    };
    let mut variables = match (env_record(desired), env_record(live)) {
        // What the pods run with against what git wants: true however many applies and
        // reconciler restarts happened while the restart was pending.
        (Some(new), Some(old)) => record_changes(&new, &old),
        // A StatefulSet applied before berth recorded env: compare the env ConfigMaps.
        _ => {
            let new_env = all_desired.get(&env_key).copied();
            let old_env = all_live.get(&env_key).copied();
            let mut variables = env_changes(new_env, old_env);
            if variables.is_empty() {
                // Same names and references: the data of a referenced Secret changed.
                variables = env_snapshot(new_env)
                    .into_iter()
                    .filter(|(_, (_, value))| value.is_none())
                    .map(|(name, (source, _))| VarChange {
                        name,
                        change: "changed",
                        source: format!("{source}: the Secret's data changed"),
                    })
                    .collect();
            }
            variables
        }
    };
    variables.sort_by(|a, b| a.name.cmp(&b.name));
    if variables.is_empty() {
        // The hashes differ only by Secret versions berth could not read on one side: the
        // pods keep running as they are, and the record keeps every version berth knows,
        // so a later change of such a Secret is seen.
        let known = merge_known_versions(env_record(desired), env_record(live));
        keep_running_env(desired, live, old_hash);
        if let (Some(known), Some(annotations)) = (
            known,
            desired
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut),
        ) {
            annotations.insert(ENV_RECORD.into(), Value::String(known));
        }
        return None;
    }
    let pending = pending_reason(desired);
    if pending.is_some() {
        keep_running_env(desired, live, old_hash);
    }
    Some(Restart {
        namespace: key.namespace.clone().unwrap_or_default(),
        workspace: key.name.clone(),
        variables,
        pending,
    })
}

/// Why a workspace's restart waits, from its restart policy: `manual` until
/// `berth restart`, `when-idle` until it is idle (an idle one takes its restart now).
fn pending_reason(desired: &Value) -> Option<String> {
    let policy = desired
        .pointer("/metadata/annotations/berth~1restart")
        .and_then(Value::as_str)
        .map(str::to_string);
    // A `when-idle` workspace that is idle (suspended for it) takes its restart now.
    let idle = desired
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::render::IDLE_SINCE))
        .is_some();
    let policy = policy.filter(|p| !(p == "when-idle" && idle));
    policy.map(|p| match p.as_str() {
        "manual" => "manual: run `berth restart` to apply".to_string(),
        other => format!("{other}: deferred until the workspace is idle"),
    })
}

/// Keep the pods as they run: the live env hash (no roll) and env record (so the next plan
/// still names what changed since they started).
fn keep_running_env(desired: &mut Value, live: &Value, old_hash: &str) {
    if let Some(annotations) = desired
        .pointer_mut("/spec/template/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(ENV_HASH.into(), Value::String(old_hash.to_string()));
    }
    let old_record = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ENV_RECORD))
        .cloned();
    if let (Some(record), Some(annotations)) = (
        old_record,
        desired
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut),
    ) {
        annotations.insert(ENV_RECORD.into(), record);
    }
}

/// The desired record, with each Secret version it does not know taken from the live one.
fn merge_known_versions(
    new: Option<BTreeMap<String, (String, String)>>,
    old: Option<BTreeMap<String, (String, String)>>,
) -> Option<String> {
    let (mut new, old) = (new?, old?);
    for (name, entry) in new.iter_mut() {
        if entry.1.starts_with("s:")
            && entry.1.ends_with(':')
            && let Some(previous) = old.get(name)
            && previous.1.starts_with(entry.1.as_str())
        {
            entry.1 = previous.1.clone();
        }
    }
    let record: serde_json::Map<String, Value> = new
        .into_iter()
        .map(|(name, (source, digest))| (name, serde_json::json!([source, digest])))
        .collect();
    serde_json::to_string(&record).ok()
}

/// A StatefulSet's [`ENV_RECORD`]: variable → (source, digest).
fn env_record(sts: &Value) -> Option<BTreeMap<String, (String, String)>> {
    let text = sts
        .pointer("/metadata/annotations")?
        .get(ENV_RECORD)?
        .as_str()?;
    serde_json::from_str(text).ok()
}

/// The variables whose value (or Secret reference, or Secret data) differs between two
/// records, with where each comes from now.
fn record_changes(
    new: &BTreeMap<String, (String, String)>,
    old: &BTreeMap<String, (String, String)>,
) -> Vec<VarChange> {
    let names: BTreeSet<&String> = new.keys().chain(old.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (change, source) = match (new.get(name), old.get(name)) {
                (Some(n), None) => ("added", n.0.clone()),
                (None, Some(o)) => ("removed", o.0.clone()),
                (Some(n), Some(o)) if n.1 != o.1 => {
                    // Same Secret reference, another resourceVersion: its data changed. An
                    // unknown version on either side (berth may not read that namespace's
                    // Secrets, or could not when the pods started) is no change: berth
                    // cannot tell, and restarting would only guess.
                    let same_ref = n.1.starts_with("s:")
                        && n.1.rsplit_once(':').map(|p| p.0) == o.1.rsplit_once(':').map(|p| p.0);
                    if same_ref && (n.1.ends_with(':') || o.1.ends_with(':')) {
                        return None;
                    }
                    let source = if same_ref {
                        format!("{}: the Secret's data changed", n.0)
                    } else {
                        n.0.clone()
                    };
                    ("changed", source)
                }
                _ => return None,
            };
            Some(VarChange {
                name: name.clone(),
                change,
                source,
            })
        })
        .collect()
}

/// A workspace's environment as its env ConfigMap records it: name → (source, literal
/// value; `None` for secret-backed variables, whose values are never in the ConfigMap).
fn env_snapshot(cm: Option<&Value>) -> BTreeMap<String, (String, Option<String>)> {
    let sources: BTreeMap<String, String> = cm
        .and_then(|c| c.pointer("/metadata/annotations"))
        .and_then(|a| a.get(ENV_SOURCES))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let data = cm.and_then(|c| c.get("data")).and_then(Value::as_object);
    sources
        .into_iter()
        .map(|(name, source)| {
            let value = data
                .and_then(|d| d.get(&name))
                .and_then(Value::as_str)
                .map(str::to_string);
            (name, (source, value))
        })
        .collect()
}

/// Names of variables (from the env ConfigMaps' data and source annotations) that differ.
fn env_changes(new: Option<&Value>, old: Option<&Value>) -> Vec<VarChange> {
    let (new, old) = (env_snapshot(new), env_snapshot(old));
    let names: BTreeSet<&String> = new.keys().chain(old.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (change, source) = match (new.get(name), old.get(name)) {
                (Some(n), None) => ("added", &n.0),
                (None, Some(o)) => ("removed", &o.0),
                (Some(n), Some(o)) if n.1 != o.1 || (n.1.is_none() && n.0 != o.0) => {
                    ("changed", &n.0)
                }
                _ => return None,
            };
            Some(VarChange {
                name: name.clone(),
                change,
                source: source.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
