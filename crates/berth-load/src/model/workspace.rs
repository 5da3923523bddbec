use super::{Document, EnvVar, Quantity, Resources, RoleBinding, Rollout, Shared, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Its spec is [`Shared`] with the resolved workspace.
pub type WorkspaceDocument = Document<Shared<WorkspaceSpec>>;

/// A Workspace is one isolated Mage workspace of a project: its own container, storage and
/// configuration, running in the project's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Name of the Project this workspace belongs to.
    pub project: String,
    /// The workspace's environment, exported as `ENV` (e.g. `dev`, `prod`); selects the
    /// project's `inheritance.byEnvironment` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Container image; defaults to the project's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `USER_CODE_PATH`; defaults to the project's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_code_path: Option<String>,
    /// The workspace's own variables. They win over inherited ones of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory requests and limits of the workspace container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The persistent volume holding the workspace's code and data.
    #[serde(default)]
    pub storage: Storage,
    /// Kubernetes scheduling and pod settings.
    #[serde(default)]
    pub kubernetes: KubernetesSettings,
    /// A suspended workspace keeps its storage but runs no pod (replicas 0).
    #[serde(default)]
    pub suspended: bool,
    /// Lifecycle policies: idle termination, pre-start and post-start scripts, restarts.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// Workspace-specific roles, in addition to the project's global roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleBinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Storage {
    /// Size of the volume (default `10Gi`).
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// Storage class; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Where the volume is mounted in the container (default `/home/src`).
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
    /// What happens to the workspace's volume claims (its code and data) when the
    /// workspace leaves git: `keep` (default) leaves them for you to delete; `delete`
    /// deletes them with the workspace (the StatefulSet's claim retention policy).
    #[serde(default, skip_serializing_if = "ClaimsOnDelete::is_keep")]
    pub on_delete: ClaimsOnDelete,
}

/// What deleting a workspace does to its volume claims.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClaimsOnDelete {
    #[default]
    Keep,
    Delete,
}

impl ClaimsOnDelete {
    pub fn is_keep(&self) -> bool {
        *self == ClaimsOnDelete::Keep
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            size: default_storage_size(),
            storage_class_name: None,
            mount_path: default_mount_path(),
            on_delete: ClaimsOnDelete::Keep,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity::Text("10Gi".to_string())
}

fn default_mount_path() -> String {
    "/home/src".to_string()
}

/// Pod-level Kubernetes settings of a workspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSettings {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// A Kubernetes `Affinity`, passed through to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
    /// Service account the workspace pod runs as (must exist). Only then is a token of it
    /// mounted into the workspace (e.g. for Mage's Kubernetes executor to create Jobs);
    /// without it the workspace gets no Kubernetes credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// User (and group) id the workspace's containers run as; never root. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub run_as_user: Option<i64>,
    /// Extra volumes (Kubernetes `Volume`s), mounted through `volumeMounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    /// Mounts of the extra volumes into the workspace container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Lifecycle management policies of a workspace (Mage Pro's termination, pre-start and
/// post-start policies) and how berth restarts it when its environment changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Lifecycle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<Termination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_start: Option<PreStart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<PostStart>,
    /// What happens when the workspace's effective environment changes: `immediate`
    /// (default) rolls it at once, `when-idle` waits until it is idle, `manual` waits for
    /// `berth restart`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Overrides of the project's rollout policy for this workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Termination {
    /// Shut the workspace down after this many seconds without activity (e.g. 1800).
    /// Activity is reported by berth's activity agent, a sidecar of the workspace pod: UI
    /// or API sessions on Mage's port, and CPU use of the workspace's processes.
    pub idle_seconds: u64,
    /// CPU use of the workspace's processes that counts as activity (a running pipeline
    /// or kernel), as a Kubernetes quantity. Default `100m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_cpu: Option<Quantity>,
}

/// A script run before the workspace container starts. It must define
/// `get_custom_configs()`, returning a dictionary of configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreStart {
    /// Path of the script, relative to the repository root.
    pub script: String,
    /// Container overrides applied on top of the workspace's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerOverrides>,
}

/// Declarative overrides of the workspace container, visible in plans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerOverrides {
    /// The command the workspace container runs after the pre-start configuration is
    /// loaded (default: Mage's `/app/run_app.sh`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// A command, or a script from the repository, run after the workspace has started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PostStart {
    /// Command run in the container (exec form), e.g. `["sh", "-c", "pip install -e ."]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Path of a script, relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Immediate,
    WhenIdle,
    Manual,
}
