//! Render: resolved workspaces → the Kubernetes objects that should exist. Pure and
//! deterministic: the same input renders byte-identical YAML, in apply order.
//!
//! Per project: its Namespace, Roles and RoleBindings of its global roles, the ZenML
//! workload manager's namespace, service account, RBAC and settings, and the Mage executor's
//! ConfigMaps (the policy's default config file, the Job of every k8s block).
//!
//! Per workspace, in the project's namespace:
//! - ConfigMap `<ws>-env`: the effective literal variables, with where each came from;
//! - Service `<ws>`: headless (no virtual IP), the Mage UI port;
//! - StatefulSet `<ws>`: one replica (0 when suspended) with a volume claim for code and data,
//!   env from the ConfigMap, secret-backed variables as `secretKeyRef`s, and the pod-template
//!   annotation `berth/env-hash` that rolls the workspace exactly when its env changes;
//! - ConfigMap `<ws>-scripts` and an init container for lifecycle scripts, a Lease
//!   `<ws>-activity` for idle termination, Roles and RoleBindings of its workspace roles.

pub mod emit;
pub mod executor;
pub mod lifecycle;
mod meta;
mod object;
pub mod rbac;
mod workload_manager;
mod workspace;
pub use workspace::server_pod;

pub use object::{ObjectKey, ObjectText, key_of, kind_rank};
pub use workspace::env_config_map_name;

use crate::resolve::Resolved;
use rayon::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PROJECT_LABEL: &str = "berth/project";
pub const WORKSPACE_LABEL: &str = "berth/workspace";
pub const ENV_HASH: &str = "berth/env-hash";
pub const ENV_SOURCES: &str = "berth/env-sources";
/// StatefulSet annotation: what each variable of the environment its pods were started
/// with was (source, and a digest of the value or of the Secret reference and version),
/// so a pending restart's reason stays true after the env ConfigMap moved on.
pub const ENV_RECORD: &str = "berth/env-record";
/// StatefulSet annotation: the workspace's idle timeout (`lifecycle.termination`).
pub const IDLE_SECONDS: &str = "berth/idle-seconds";
/// StatefulSet annotation on a workspace suspended for idleness: its last activity.
pub const IDLE_SINCE: &str = "berth/idle-since";
/// Namespace annotation: the project lets berth delete the Namespace when it leaves git
/// (only when it holds nothing berth does not own). Read from the live object, because
/// by then the project is gone from git.
pub const PRUNE_NAMESPACE: &str = "berth/prune";
/// The value of [`PRUNE_NAMESPACE`] that allows it.
pub const PRUNE_WHEN_EMPTY: &str = "when-empty";
/// Port of the Mage web UI.
pub const MAGE_PORT: i32 = 6789;

/// Facts from outside the repository that change what is rendered.
#[derive(Debug, Clone)]
pub struct RenderContext {
    /// resourceVersion of Secrets referenced by env (`namespace/name` → version), so a
    /// change of a shared Secret's data rolls the workspaces using it. Empty offline.
    pub secret_versions: BTreeMap<String, String>,
    /// Namespaces whose Secrets berth listed: a Secret missing from `secret_versions`
    /// there is absent. Elsewhere (offline, or where berth may not list Secrets yet) it is
    /// unknown, and never a reason to restart.
    pub read_secrets: std::collections::BTreeSet<String>,
    /// Workspaces suspended for idleness by the reconciler (`namespace/workspace` → when
    /// their activity stopped, RFC 3339): rendered with `replicas: 0` and
    /// [`IDLE_SINCE`], so a suspension is the desired state, not drift.
    pub idle: BTreeMap<String, String>,
    /// The namespace of berth's ApplySet, where the reconciler runs as the service account
    /// [`RECONCILER_ACCOUNT`] (`--applyset-namespace`; offline, its default). Each project
    /// namespace gets a RoleBinding that lets that account read Secret versions there, and
    /// nowhere else.
    pub reconciler_namespace: String,
}

/// `--applyset-namespace`'s default: where the ApplySet parent and the reconciler live.
pub const DEFAULT_APPLYSET_NAMESPACE: &str = "berth-system";

impl Default for RenderContext {
    fn default() -> Self {
        RenderContext {
            secret_versions: BTreeMap::new(),
            read_secrets: Default::default(),
            idle: BTreeMap::new(),
            reconciler_namespace: DEFAULT_APPLYSET_NAMESPACE.to_string(),
        }
    }
}

/// The service account `berth watch` runs as (deploy/10-rbac.yaml), in the ApplySet's
/// namespace.
pub const RECONCILER_ACCOUNT: &str = "berth";
/// The ClusterRole (deploy/10-rbac.yaml) that reads Secrets' metadata, granted to the
/// reconciler per project namespace only.
pub const SECRET_READER_ROLE: &str = "berth-secret-reader";

/// The RoleBinding that lets the reconciler read Secret versions in one namespace.
fn secret_reader_binding(namespace: &str, reconciler_namespace: &str, project: &str) -> Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": SECRET_READER_ROLE,
            "namespace": namespace,
            "labels": {MANAGED_BY: "berth", PROJECT_LABEL: project},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SECRET_READER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": RECONCILER_ACCOUNT, "namespace": reconciler_namespace}],
    })
}

/// Every desired object, sorted in apply order (namespaces first, workloads last).
pub fn render(resolved: &Resolved, ctx: &RenderContext) -> Vec<Value> {
    render_each(resolved, ctx, |_, object| object)
        .into_iter()
        .map(|(_, object)| object)
        .collect()
}

/// [`render`], with each object handed to `keep` as soon as it is rendered (on rayon's
/// threads): a caller keeps only what it needs of each object — its YAML, its JSON text —
/// and never holds every object as a `Value` at once (8 KB each on average: 300 MB at
/// 10,000 workspaces). In apply order, with each object's key.
pub fn render_each<T: Send>(
    resolved: &Resolved,
    ctx: &RenderContext,
    keep: impl Fn(&ObjectKey, Value) -> T + Sync,
) -> Vec<(ObjectKey, T)> {
    let projects = keyed(project_objects(resolved, ctx), &keep);
    let workspaces = resolved
        .workspaces
        .par_iter()
        .map(|ws| keyed(workspace::render(ws, ctx), &keep))
        .collect();
    in_apply_order(projects, workspaces)
}

/// [`render_each`] of a resolved repository that is not needed afterwards: each workspace
/// is let go once its objects are kept, so what is kept of them takes the memory it held
/// instead of adding to it (at 100,000 workspaces, half a gigabyte).
pub fn render_owned<T: Send>(
    mut resolved: Resolved,
    ctx: &RenderContext,
    keep: impl Fn(&ObjectKey, Value) -> T + Sync,
) -> Vec<(ObjectKey, T)> {
    let projects = keyed(project_objects(&resolved, ctx), &keep);
    let workspaces = std::mem::take(&mut resolved.workspaces)
        .into_par_iter()
        .map(|ws| keyed(workspace::render(&ws, ctx), &keep))
        .collect();
    in_apply_order(projects, workspaces)
}

/// The repository's objects as multi-document YAML that `kubectl apply -f -` accepts
/// (what [`to_yaml`] of [`render`] writes), each object written out as soon as it is
/// rendered: the documents, in apply order.
pub fn yaml_documents(resolved: Resolved, ctx: &RenderContext) -> Vec<String> {
    render_owned(resolved, ctx, |_, object| {
        let mut document = emit::to_string(&object);
        // Written as it grew, a document holds up to twice its length.
        document.shrink_to_fit();
        document
    })
    .into_iter()
    .map(|(_, document)| document)
    .collect()
}

/// Objects with their sort key (kind rank, then key), each handed to `keep`.
fn keyed<T>(
    objects: Vec<Value>,
    keep: &impl Fn(&ObjectKey, Value) -> T,
) -> Vec<((u8, ObjectKey), T)> {
    objects
        .into_iter()
        .filter_map(|o| {
            let key = key_of(&o)?;
            let kept = keep(&key, o);
            Some(((kind_rank(&key.kind), key), kept))
        })
        .collect()
}

/// The objects of the projects: namespaces, their RBAC, ZenML's workload manager and the
/// Mage executor's ConfigMaps.
fn project_objects(resolved: &Resolved, ctx: &RenderContext) -> Vec<Value> {
    let mut objects = Vec::new();
    for project in &resolved.projects {
        objects.push(workspace::namespace(project));
        objects.push(secret_reader_binding(
            &project.namespace,
            &ctx.reconciler_namespace,
            &project.name,
        ));
        let scope = rbac::Scope {
            workspace: None,
            prefix: format!("berth-{}", project.name),
        };
        let labels = rbac::labels(&project.name, None);
        objects.extend(rbac::render(
            &project.spec.roles,
            &scope,
            &project.namespace,
            &labels,
        ));
        if let Some(wm) = &project.spec.workload_manager {
            objects.extend(workload_manager::render(project, wm));
        }
    }
    objects.extend(executor::config_maps(resolved));
    objects
}

/// The projects' objects and the workspaces', in apply order.
fn in_apply_order<T: Send>(
    mut all: Vec<((u8, ObjectKey), T)>,
    workspaces: Vec<Vec<((u8, ObjectKey), T)>>,
) -> Vec<(ObjectKey, T)> {
    // Grown once: doubling as it goes would hold 1.5 copies of every key at its last step.
    all.reserve_exact(workspaces.iter().map(Vec::len).sum());
    all.extend(workspaces.into_iter().flatten());
    // Projects may share a namespace: each object once, the first rendering wins (the sort
    // is stable, so the first of equal keys stays first).
    all.par_sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|later, first| later.0 == first.0);
    all.into_iter()
        .map(|((_, key), kept)| (key, kept))
        .collect()
}

/// Objects as multi-document YAML that `kubectl apply -f -` accepts.
pub fn to_yaml(objects: &[Value]) -> String {
    let documents: Vec<String> = objects.par_iter().map(emit::to_string).collect();
    let mut out = String::with_capacity(documents.iter().map(|d| d.len() + 4).sum());
    for document in documents {
        out.push_str("---\n");
        out.push_str(&document);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample repository, with and without cluster facts: rendering object by object
    /// writes exactly what rendering everything writes, in the same order.
    #[test]
    fn rendering_each_object_writes_what_rendering_all_writes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
        let files = crate::source::read_dir(&root).expect("the sample repository");
        let desired = crate::validated(files);
        assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
        let facts = RenderContext {
            secret_versions: desired
                .resolved
                .workspaces
                .iter()
                .flat_map(|w| &w.env)
                .filter_map(|v| match &v.value {
                    crate::resolve::VarValue::Secret(s) => Some(s.name.clone()),
                    crate::resolve::VarValue::Literal(_) => None,
                })
                .flat_map(|name| {
                    desired
                        .resolved
                        .projects
                        .iter()
                        .map(move |p| (format!("{}/{name}", p.namespace), "7".to_string()))
                })
                .collect(),
            ..RenderContext::default()
        };
        for ctx in [RenderContext::default(), facts] {
            let objects = render(&desired.resolved, &ctx);
            let documents = yaml_documents(desired.resolved.clone(), &ctx);
            let joined: String = documents.iter().map(|d| format!("---\n{d}")).collect();
            assert_eq!(joined, to_yaml(&objects));
            let keys: Vec<ObjectKey> = render_each(&desired.resolved, &ctx, |_, _| ())
                .into_iter()
                .map(|(key, ())| key)
                .collect();
            let expected: Vec<ObjectKey> = objects.iter().filter_map(key_of).collect();
            assert_eq!(keys, expected);
        }
    }
}
