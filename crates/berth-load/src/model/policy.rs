use super::{Budget, Document, ExecutorDefaults, Resources};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub type PolicyDocument = Document<PolicySpec>;

/// A Policy holds cluster-wide rules for the projects and environments it selects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Which projects and environments the policy applies to; everything when empty.
    #[serde(default)]
    pub selector: PolicySelector,
    /// Rules checked by `validate` and `plan`; a violation fails both.
    #[serde(default)]
    pub guardrails: Guardrails,
    /// Mage's default Kubernetes executor config file (K8S_DEFAULT_CONFIG_PATH) for the
    /// selected projects: merged with block and project config, and mounted into their
    /// workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_executor_defaults: Option<ExecutorDefaults>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySelector {
    /// Project names; all projects when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Workspace environments; all environments when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Guardrails {
    /// Upper bounds for every workspace's requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<Resources>,
    /// Image patterns workspaces may use (wildcards, or `re:` regular expressions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_images: Vec<String>,
    /// Labels every selected workspace must carry in its metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_labels: Vec<String>,
    /// Refuse workspaces that mount hostPath volumes.
    #[serde(default)]
    pub forbid_host_path: bool,
    /// Refuse executor configs (block, project or template) that set these keys, e.g.
    /// `pod.volumes` or `pod.scheduler_name` (dotted paths of `k8s_executor_config`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_executor_settings: Vec<String>,
    /// Upper bounds for the requests and limits of every k8s block's Job, as Mage builds
    /// it (after its merges, which replace whole sections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_executor_resources: Option<Resources>,
    /// Resources every k8s block's Job must have a limit for (e.g. `[cpu, memory]`), as
    /// Mage builds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_executor_limits: Vec<String>,
    /// The largest `maxUnavailable` a selected workspace's rollout may use (a count or a
    /// percentage). It also lowers the default (10%) where that is larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rollout_unavailable: Option<Budget>,
}
