use super::{Document, EnvVar, ExecutorConfig, RoleBinding, WorkloadManager};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type ProjectDocument = Document<ProjectSpec>;

/// A Project is the "base cluster" of a data team: the namespace its workspaces run in, the
/// defaults they start from, and the environment they may inherit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProjectSpec {
    /// Kubernetes namespace the project's workspaces run in (a DNS-1123 label).
    pub namespace: String,
    /// Default container image of the project's workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Default `USER_CODE_PATH` of the project's workspaces (Mage's default is
    /// `/home/src/default_repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_code_path: Option<String>,
    /// The project's environment variables (the "main cluster's" variables), which its
    /// workspaces inherit according to `inheritance`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Which of the project's variables each workspace inherits.
    #[serde(default)]
    pub inheritance: Inheritance,
    /// SHARE_SECRETS_ACROSS_WORKSPACES: when true, workspaces also inherit the project's
    /// secret-backed variables (`secretRef`) and get `SHARE_SECRETS_ACROSS_WORKSPACES=1`.
    /// When false, secret-backed project variables stay in the project.
    #[serde(default)]
    pub share_secrets_across_workspaces: bool,
    /// Global roles: apply to every workspace of the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleBinding>,
    /// Project-level Kubernetes executor config (Mage's `k8s_executor_config`), inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_executor: Option<ExecutorConfig>,
    /// Folder of a Mage project in this repository: its `metadata.yaml`
    /// (`k8s_executor_config`) and `pipelines/*/metadata.yaml` (blocks with
    /// `executor_type: k8s`) are read, and the folder holds no berth documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mage_project: Option<String>,
    /// ZenML workload manager: runner namespace, service account and RBAC, and the
    /// settings the workspace server reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_manager: Option<WorkloadManager>,
}

/// How workspaces inherit the project's environment (Mage Pro's USER_DEFINED_VARS rules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inheritance {
    /// `managed` (Mage Pro managed cloud): without `userDefinedVars` every variable is
    /// inherited. `self-hosted` (hybrid, private cloud, on-prem): only the variables named in
    /// `userDefinedVars` (and matched by `byEnvironment`) are inherited.
    #[serde(default)]
    pub mode: InheritanceMode,
    /// USER_DEFINED_VARS: the names of the variables workspaces inherit. When set, only these
    /// (plus `byEnvironment` matches) are inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_defined_vars: Option<Vec<String>>,
    /// Per-environment rules: a workspace whose `environment` is the key also inherits every
    /// variable whose name matches one of the patterns. A pattern is a wildcard (`DEV_ENV_*`,
    /// `?` for one character) or, with the prefix `re:`, a regular expression matched against
    /// the whole name (`re:^PROD_.*$`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_environment: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InheritanceMode {
    #[default]
    Managed,
    SelfHosted,
}
