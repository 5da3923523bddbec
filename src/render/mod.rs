//! Render: resolved workspaces → the Kubernetes objects that should exist. Pure and
//! deterministic: the same input renders byte-identical YAML, in apply order.
//!
//! Per project: its Namespace. Per workspace, in the project's namespace:
//! - ConfigMap `<ws>-env`: the effective literal variables, with where each came from;
//! - Service `<ws>`: the Mage UI port;
//! - StatefulSet `<ws>`: one replica (0 when suspended) with a volume claim for code and data,
//!   env from the ConfigMap, secret-backed variables as `secretKeyRef`s, and the pod-template
//!   annotation `berth/env-hash` that rolls the workspace exactly when its env changes.

mod object;
mod workspace;

pub use object::{ObjectKey, key_of, kind_rank};
pub use workspace::env_config_map_name;

use crate::resolve::Resolved;
use serde_json::Value;
use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PROJECT_LABEL: &str = "berth/project";
pub const WORKSPACE_LABEL: &str = "berth/workspace";
pub const ENV_HASH: &str = "berth/env-hash";
pub const ENV_SOURCES: &str = "berth/env-sources";
/// StatefulSet annotation: the workspace's idle timeout (`lifecycle.termination`).
pub const IDLE_SECONDS: &str = "berth/idle-seconds";
/// StatefulSet annotation on a workspace suspended for idleness: its last activity.
pub const IDLE_SINCE: &str = "berth/idle-since";
/// Port of the Mage web UI.
pub const MAGE_PORT: i32 = 6789;

/// Facts from outside the repository that change what is rendered.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// resourceVersion of Secrets referenced by env (`namespace/name` → version), so a
    /// change of a shared Secret's data rolls the workspaces using it. Empty offline.
    pub secret_versions: BTreeMap<String, String>,
    /// Workspaces suspended for idleness by the reconciler (`namespace/workspace` → when
    /// their activity stopped, RFC 3339): rendered with `replicas: 0` and
    /// [`IDLE_SINCE`], so a suspension is the desired state, not drift.
    pub idle: BTreeMap<String, String>,
}

/// Every desired object, sorted in apply order (namespaces first, workloads last).
pub fn render(resolved: &Resolved, ctx: &RenderContext) -> Vec<Value> {
    let mut objects = Vec::new();
    let mut namespaces = BTreeMap::new();
    for project in &resolved.projects {
        namespaces
            .entry(project.namespace.clone())
            .or_insert_with(|| workspace::namespace(project));
    }
    objects.extend(namespaces.into_values());
    for ws in &resolved.workspaces {
        objects.extend(workspace::render(ws, ctx));
    }
    objects.sort_by_key(|o| key_of(o).map(|k| (kind_rank(&k.kind), k)));
    objects
}

/// Objects as multi-document YAML that `kubectl apply -f -` accepts.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        // Serializing a JSON value to YAML cannot fail.
        out.push_str(&serde_yaml::to_string(object).unwrap_or_default());
    }
    out
}
