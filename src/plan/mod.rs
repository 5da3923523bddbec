//! Plan: desired objects vs live objects → the changes that would make them equal, each with
//! its reason, plus the workspaces whose environment change restarts them.
//!
//! This is the pure half of planning. "Live" is whatever the caller has: nothing (offline),
//! objects exported with `kubectl get -o yaml`, the render of another git revision, or (from
//! `crate::cluster`) the API server's own answer.

pub mod compare;
pub mod output;

use crate::render::{ENV_HASH, ENV_SOURCES, MANAGED_BY, ObjectKey, key_of, kind_rank};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
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
    /// What to apply (creates and updates).
    #[serde(skip)]
    pub desired: Option<Value>,
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
}

impl Plan {
    /// Whether applying the plan would do anything.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
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
    compute_with(desired, live, true)
}

/// [`compute`] without the diffs of updates, for a caller that asks the server for them.
pub fn compute_without_diffs(desired: &[Value], live: &[Value]) -> Plan {
    compute_with(desired, live, false)
}

fn compute_with(desired: &[Value], live: &[Value], diffs: bool) -> Plan {
    let live: BTreeMap<ObjectKey, &Value> =
        live.iter().filter_map(|o| Some((key_of(o)?, o))).collect();
    // Desired objects by key: restarts look up env ConfigMaps by key, not by a scan.
    let desired_by_key: BTreeMap<ObjectKey, &Value> = desired
        .iter()
        .filter_map(|o| Some((key_of(o)?, o)))
        .collect();
    let mut plan = Plan::default();

    for object in desired {
        let Some(key) = key_of(object) else { continue };
        let Some(current) = live.get(&key) else {
            plan.changes.push(Change {
                action: Action::Create,
                object: key,
                reason: "new in git".into(),
                fields: vec![],
                diff: String::new(),
                desired: Some(object.clone()),
            });
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
        plan.changes.push(Change {
            action: Action::Update,
            diff: if diffs {
                compare::diff(&object, current)
            } else {
                String::new()
            },
            object: key,
            reason: "changed in git".into(),
            fields,
            desired: Some(object),
        });
    }

    for (key, object) in &live {
        if !desired_by_key.contains_key(key) && is_managed(object) {
            plan.changes.push(Change {
                action: Action::Delete,
                object: key.clone(),
                reason: "no longer in git".into(),
                fields: vec![],
                diff: String::new(),
                desired: None,
            });
        }
    }
    // Deletes go in reverse apply order: workloads before what they depend on.
    plan.changes.sort_by(|a, b| {
        let rank = |c: &Change| match c.action {
            Action::Delete => (1, u8::MAX - kind_rank(&c.object.kind)),
            _ => (0, kind_rank(&c.object.kind)),
        };
        (rank(a), &a.object).cmp(&(rank(b), &b.object))
    });
    plan
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
    let pending = policy.map(|p| match p.as_str() {
        "manual" => "manual: run `berth restart` to apply".to_string(),
        other => format!("{other}: deferred until the workspace is idle"),
    });
    if pending.is_some()
        && let Some(annotations) = desired
            .pointer_mut("/spec/template/metadata/annotations")
            .and_then(Value::as_object_mut)
    {
        annotations.insert(ENV_HASH.into(), Value::String(old_hash.to_string()));
    }
    Some(Restart {
        namespace: key.namespace.clone().unwrap_or_default(),
        workspace: key.name.clone(),
        variables,
        pending,
    })
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
