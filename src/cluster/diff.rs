//! Diff: the live plan. Cheap when nothing changed — objects whose berth-set fields and
//! applied hash match live are settled locally, with no request. Only objects that really
//! differ are confirmed by a server-side dry-run apply, whose result (with the server's
//! defaults, canonical quantities and other managers' fields) is compared with live.

use super::applyset::{APPLIED_HASH, ApplySet};
use super::inventory::{self, Inventory};
use super::kinds::kind_of;
use super::rollout;
use super::{CONCURRENCY, Cluster, FIELD_MANAGER};
use crate::model::SecretKeyRef;
use crate::plan::live::Live;
use crate::plan::{Action, Plan};
use crate::render::{ObjectKey, ObjectText, RenderContext, key_of};
use crate::resolve::{Resolved, ResolvedWorkspace, VarValue};
use anyhow::{Result, anyhow};
use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// An object for a dry-run task: whole, or JSON text the task reads back.
enum Object {
    Value(Value),
    Text(ObjectText),
}

impl Object {
    fn value(self) -> Value {
        match self {
            Object::Value(object) => object,
            Object::Text(text) => text.value(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub applyset: ApplySet,
}

/// A plan against a cluster, with what applying it needs.
#[derive(Debug, Clone)]
pub struct LivePlan {
    pub plan: Plan,
    pub inventory: Inventory,
    /// Desired objects, decorated as ApplySet members, in apply order; as JSON text (read
    /// one back with [`ObjectText::value`]).
    pub desired: Vec<ObjectText>,
    /// Updates that conflict with other field managers: object → the server's message.
    pub conflicts: Vec<(String, String)>,
}

impl LivePlan {
    /// Objects berth owns now.
    pub fn owned(&self) -> usize {
        self.inventory.members.len()
    }
}

/// Namespaces whose workspaces reference Secrets (in their environment or their
/// pre-start overrides): where Secret versions are read.
fn secret_namespaces(resolved: &Resolved) -> BTreeSet<String> {
    resolved
        .workspaces
        .iter()
        .filter(|w| {
            w.env.iter().any(|v| matches!(v.value, VarValue::Secret(_)))
                || w.spec
                    .lifecycle
                    .pre_start
                    .as_ref()
                    .and_then(|p| p.container.as_ref())
                    .is_some_and(|c| c.env.iter().any(|v| v.secret_ref.is_some()))
        })
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
        read_secrets: inventory.read_secrets,
        reconciler_namespace: options.applyset.namespace.clone(),
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
        read_secrets: inventory.read_secrets.clone(),
        reconciler_namespace: options.applyset.namespace.clone(),
        ..base
    };
    let desired = render_decorated(resolved, &ctx, options);
    let index = Arc::new(inventory::DesiredIndex::new(desired));
    inventory.members = inventory::read_members(
        cluster,
        &options.applyset,
        inventory.parent_group_kinds(),
        index.clone(),
    )
    .await?;
    let desired = inventory::DesiredIndex::into_objects(index);
    let members: BTreeMap<&ObjectKey, &Live> = inventory
        .members
        .iter()
        .map(|m| (&m.key, &m.live))
        .collect();
    // Updates get their diff from the server's dry-run below, not from the local compare.
    // Planned namespace by namespace; an update that applies its desired object as
    // rendered carries none (it is the text of its key in `desired`).
    let mut plan = crate::plan::live::compute(&desired, &members);
    let desired_by_key: HashMap<&ObjectKey, &ObjectText> =
        desired.iter().map(|o| (&o.key, o)).collect();

    gate_restarts(
        cluster,
        options,
        resolved,
        &inventory,
        &mut plan,
        &members,
        &desired_by_key,
    )
    .await?;
    pin_idle_suspensions(&mut plan, &members);
    diff_recreations(&mut plan, &members);
    let mut conflicts = dry_run_updates(cluster, &mut plan, &desired_by_key, &members).await?;
    let removed = removed_objects(&plan, &members);
    drop(members);
    let removed: BTreeMap<ObjectKey, &Value> =
        removed.iter().map(|(k, v)| (k.clone(), v)).collect();
    super::destructive::enrich(cluster, &options.applyset, &mut plan, &removed).await?;
    plan.warnings = secret_warnings(cluster, resolved, &inventory, &plan).await?;
    conflicts.sort();
    Ok(LivePlan {
        plan,
        inventory,
        desired,
        conflicts,
    })
}

/// The repository rendered with the ApplySet's labels; each object is decorated and kept
/// as JSON text as soon as it is rendered: the desired side of 10,000 workspaces in 50 MB
/// instead of 300 MB of `Value`s.
fn render_decorated(
    resolved: &Resolved,
    ctx: &RenderContext,
    options: &PlanOptions,
) -> Vec<ObjectText> {
    let id = options.applyset.id();
    crate::render::render_each(resolved, ctx, |key, mut object| {
        options.applyset.decorate_one(&id, &mut object);
        ObjectText::new(key.clone(), &object)
    })
    .into_iter()
    .map(|(_, text)| text)
    .collect()
}

/// The live objects of the plan's removals and re-creations: what completes them (their
/// claims, a namespace's foreign objects) reads those, and those alone are read back.
fn removed_objects(
    plan: &Plan,
    members: &BTreeMap<&ObjectKey, &Live>,
) -> BTreeMap<ObjectKey, Value> {
    plan.changes
        .iter()
        .filter(|c| matches!(c.action, Action::Delete | Action::Recreate))
        .filter_map(|c| {
            Some((
                c.object.clone(),
                members.get(&c.object)?.full()?.into_owned(),
            ))
        })
        .collect()
}

/// Pod restarts roll in health-gated batches: what the budgets do not admit now is held
/// at its live template, before any dry-run.
async fn gate_restarts(
    cluster: &Cluster,
    options: &PlanOptions,
    resolved: &Resolved,
    inventory: &Inventory,
    plan: &mut Plan,
    members: &BTreeMap<&ObjectKey, &Live>,
    desired_by_key: &HashMap<&ObjectKey, &ObjectText>,
) -> Result<()> {
    // The paused projects are read only when a rollout can be under way: a plan with
    // nothing to roll makes no request for them.
    let rolling = plan.changes.iter().any(crate::plan::rollout::rolls_pods)
        || inventory
            .members
            .iter()
            .any(|m| m.restarted_at.is_some() && m.rolled_out == Some(false));
    let paused = if rolling {
        rollout::paused(cluster, &options.applyset).await?
    } else {
        BTreeSet::new()
    };
    let fleet = rollout::fleet(resolved, inventory, paused);
    crate::plan::rollout::gate(
        plan,
        &fleet,
        |key| {
            members
                .get(key)
                .and_then(|l| l.full())
                .map(|v| v.into_owned())
        },
        |key| desired_by_key.get(key).map(|t| t.value()),
    );
    Ok(())
}

/// A suspension for idleness is applied only to the StatefulSet it was planned against:
/// if anything wrote to it since (`berth wake` scaling it up), the server refuses the
/// stale suspension and the next cycle plans again with fresh activity.
fn pin_idle_suspensions(plan: &mut Plan, members: &BTreeMap<&ObjectKey, &Live>) {
    let idle_since = |o: &Value| {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(crate::render::IDLE_SINCE))
            .is_some()
    };
    for change in &mut plan.changes {
        if change.object.kind != "StatefulSet" || change.action != Action::Update {
            continue;
        }
        let Some(desired) = change.desired.as_mut().filter(|d| idle_since(d)) else {
            continue;
        };
        let Some(live) = members.get(&change.object).and_then(|l| l.full()) else {
            continue;
        };
        if !idle_since(&live)
            && let Some(version) = live.pointer("/metadata/resourceVersion").cloned()
            && let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.insert("resourceVersion".into(), version);
        }
    }
}

/// A re-creation cannot be dry-run as an update (the server refuses immutable fields):
/// its diff is the local one.
fn diff_recreations(plan: &mut Plan, members: &BTreeMap<&ObjectKey, &Live>) {
    for change in &mut plan.changes {
        if change.action == Action::Recreate
            && let Some(desired) = &change.desired
            && let Some(live) = members.get(&change.object).and_then(|l| l.full())
        {
            change.diff = crate::plan::compare::diff(desired, &live);
        }
    }
}

/// Every update confirmed by a server-side dry-run: one the server finds unchanged is
/// dropped from the plan (counted unchanged), one it refuses carries the problem, and the
/// others carry the server's diff. The conflicts with other field managers are returned.
/// Each dry-run is a task of its own: the runtime's worker threads read the objects
/// back, and parse and diff the answers, in parallel. Tasks are made as slots free up,
/// so only the objects of the dry-runs in flight are read back at once.
async fn dry_run_updates(
    cluster: &Cluster,
    plan: &mut Plan,
    desired_by_key: &HashMap<&ObjectKey, &ObjectText>,
    members: &BTreeMap<&ObjectKey, &Live>,
) -> Result<Vec<(String, String)>> {
    let mut checks = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == Action::Update && c.problem.is_none())
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .into_iter();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut results = Vec::new();
    loop {
        while running.len() < CONCURRENCY
            && let Some(i) = checks.next()
        {
            let Some((desired, live)) = dry_run_objects(&plan.changes[i], desired_by_key, members)
            else {
                continue;
            };
            let cluster = cluster.clone();
            running.push(tokio::spawn(async move {
                let desired = desired.value();
                (i, dry_run(&cluster, &desired, live.value()).await)
            }));
        }
        match running.next().await {
            Some(result) => results.push(result),
            None => break,
        }
    }
    let mut settled = BTreeSet::new();
    let mut conflicts = Vec::new();
    for joined in results {
        let (i, result) = joined.map_err(|e| anyhow!("a dry-run failed to run: {e}"))?;
        let change = &mut plan.changes[i];
        // One object the server refuses does not hide the plan of the others.
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(DryRunError::Object(message)) => {
                change.problem = Some(crate::plan::Problem {
                    message,
                    field: None,
                });
                continue;
            }
            Err(DryRunError::Cluster(err)) => return Err(err),
        };
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
    Ok(conflicts)
}

/// The desired and live objects of an update's dry-run, as the plan keeps them (`None`
/// when there is no whole live object to compare with).
fn dry_run_objects(
    change: &crate::plan::Change,
    desired: &HashMap<&ObjectKey, &ObjectText>,
    members: &BTreeMap<&ObjectKey, &Live>,
) -> Option<(Object, Object)> {
    let object = match &change.desired {
        Some(object) => Object::Value(object.clone()),
        None => Object::Text((*desired.get(&change.object)?).clone()),
    };
    let live = match members.get(&change.object)? {
        Live::Full(live) => Object::Value(live.clone()),
        Live::Text(text) => Object::Text(text.clone()),
        Live::Same(_) => return None,
    };
    Some((object, live))
}

/// Referenced Secrets that do not exist, and (for workspaces this plan starts or restarts)
/// keys missing from existing ones. Existence comes from the metadata LIST the plan made
/// anyway; keys need a GET of those few Secrets, whose values are dropped unread.
async fn secret_warnings(
    cluster: &Cluster,
    resolved: &Resolved,
    inventory: &Inventory,
    plan: &Plan,
) -> Result<Vec<String>> {
    let versions = &inventory.secret_versions;
    let starting = starting_workspaces(plan);
    let mut keys_of: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    let mut warnings = Vec::new();
    for ws in &resolved.workspaces {
        if inventory.unreadable_secrets.contains(&ws.namespace) {
            warnings.push(format!(
                "workspace {}/{}: berth may not read Secrets in {} yet, so it cannot check \
                 the ones it references (this apply grants it; see deploy/10-rbac.yaml)",
                ws.namespace, ws.name, ws.namespace
            ));
            continue;
        }
        let checks_keys = starting.contains(&(ws.namespace.clone(), ws.name.clone()));
        for (variable, secret) in secret_refs(ws) {
            let id = format!("{}/{}", ws.namespace, secret.name);
            if !versions.contains_key(&id) {
                warnings.push(format!(
                    "workspace {}/{}: Secret {} does not exist (variable {variable}); the \
                     workspace cannot start until it does",
                    ws.namespace, ws.name, secret.name
                ));
                continue;
            }
            if !checks_keys {
                continue;
            }
            if !keys_of.contains_key(&id) {
                let keys = secret_keys(cluster, &ws.namespace, &secret.name).await?;
                keys_of.insert(id.clone(), keys);
            }
            if let Some(Some(keys)) = keys_of.get(&id)
                && !keys.contains(&secret.key)
            {
                warnings.push(format!(
                    "workspace {}/{}: Secret {} has no key {} (variable {variable}); the \
                     workspace cannot start until it does",
                    ws.namespace, ws.name, secret.name, secret.key
                ));
            }
        }
    }
    warnings.sort();
    warnings.dedup();
    Ok(warnings)
}

/// The workspaces this plan starts (a new StatefulSet) or restarts now.
fn starting_workspaces(plan: &Plan) -> BTreeSet<(String, String)> {
    plan.changes
        .iter()
        .filter(|c| c.object.kind == "StatefulSet" && c.action == Action::Create)
        .map(|c| {
            (
                c.object.namespace.clone().unwrap_or_default(),
                c.object.name.clone(),
            )
        })
        .chain(
            plan.restarts
                .iter()
                .filter(|r| r.pending.is_none())
                .map(|r| (r.namespace.clone(), r.workspace.clone())),
        )
        .collect()
}

/// Every Secret key a workspace's containers reference, with the variable that does:
/// its environment's, then its pre-start container's.
fn secret_refs(ws: &ResolvedWorkspace) -> impl Iterator<Item = (&str, &SecretKeyRef)> {
    let overrides = ws
        .spec
        .lifecycle
        .pre_start
        .as_ref()
        .and_then(|p| p.container.as_ref())
        .map(|c| c.env.as_slice())
        .unwrap_or_default();
    ws.env
        .iter()
        .filter_map(|v| match &v.value {
            VarValue::Secret(s) => Some((v.name.as_str(), s)),
            VarValue::Literal(_) => None,
        })
        .chain(
            overrides
                .iter()
                .filter_map(|v| Some((v.name.as_str(), v.secret_ref.as_ref()?))),
        )
}

/// The names of a Secret's keys (None when it is gone or berth may not read it); its
/// values are dropped as soon as they arrive.
async fn secret_keys(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeSet<String>>> {
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(found) => Ok(found.map(|s| {
            s.data
                .unwrap_or_default()
                .into_keys()
                .chain(s.string_data.unwrap_or_default().into_keys())
                .collect()
        })),
        // Not allowed to read it: say nothing rather than guess.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
        Err(e) => Err(anyhow!(
            "reading the keys of Secret {namespace}/{name}: {}",
            cluster.describe(&e)
        )),
    }
}

struct DryRun {
    fields: Vec<String>,
    diff: String,
    conflict: Option<String>,
}

/// Why a dry-run gave no answer: the server refused this object (the plan goes on without
/// it), or the cluster could not be asked at all (the plan fails).
enum DryRunError {
    Object(String),
    Cluster(anyhow::Error),
}

/// Server-side dry-run apply of `desired`; the fields it would change in `live`. A conflict
/// with another manager is noted, and the forced result is shown.
async fn dry_run(
    cluster: &Cluster,
    desired: &Value,
    live: Value,
) -> std::result::Result<DryRun, DryRunError> {
    let request = request_for(desired).map_err(DryRunError::Cluster)?;
    let name = desired
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // The answer as plain JSON: it is compared as such, no typed round trip needed.
    let send = |params: &PatchParams| {
        let request = request
            .patch(name, params, &Patch::Apply(desired))
            .map_err(|e| DryRunError::Cluster(e.into()))?;
        Ok(cluster.client.request::<Value>(request))
    };
    // An answer about the object (4xx but for throttling) is the object's problem; no
    // answer, or a server error, is the cluster's.
    let classify = |err: kube::Error| match &err {
        kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429 => {
            DryRunError::Object(cluster.describe(&err))
        }
        _ => DryRunError::Cluster(anyhow!(
            "dry-run apply of {name}: {}",
            cluster.describe(&err)
        )),
    };
    let params = PatchParams::apply(FIELD_MANAGER).dry_run();
    let (result, conflict) = match send(&params)?.await {
        Ok(result) => (result, None),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let forced = send(&params.clone().force())?.await.map_err(classify)?;
            (forced, Some(status.message.clone()))
        }
        Err(err) => return Err(classify(err)),
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
