use super::{Document, EnvVar, MageExecutorConfig, RoleBinding, Rollout, WorkloadManager};
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
    /// Whether berth may delete the Namespace when the project leaves git. Default
    /// `false`: the Namespace is kept (with whatever it holds) and berth stops managing it.
    /// With `true`, berth deletes it only if it holds nothing but berth's own objects and
    /// what Kubernetes creates in every namespace: no volume claims, nothing of other tools.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune_namespace: bool,
    /// Whether this project shares its namespace with other projects. Each namespace
    /// belongs to one project (its roles, Secrets and pruning are the project's); two or
    /// more projects may name the same namespace only when every one of them sets
    /// `sharedNamespace: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_namespace: bool,
    /// The Pod Security Standard enforced in the project's namespace (Kubernetes' Pod
    /// Security Admission): `baseline` (default), `restricted` or `privileged`. `restricted`
    /// is always warned about and audited; berth's own workspace pods meet it.
    #[serde(default)]
    pub pod_security: PodSecurity,
    /// Image of berth's activity agent, the sidecar that reports activity of workspaces
    /// with an idle timeout. Default: berth's own image of this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_agent_image: Option<String>,
    /// Default container image of the project's workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Default `USER_CODE_PATH` of the project's workspaces (Mage's default is
    /// `/home/src/default_repo`). A project variable `USER_CODE_PATH` (Mage Pro's way) is
    /// the same setting; set one of them.
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
    /// When false, secret-backed project variables stay in the project. A project variable
    /// `SHARE_SECRETS_ACROSS_WORKSPACES` with value `1` (Mage Pro's way) turns it on too;
    /// `0` leaves it off.
    #[serde(default)]
    pub share_secrets_across_workspaces: bool,
    /// How restarts roll through the project's workspaces: at most `maxUnavailable`
    /// restarting at once, each batch Ready before the next (default 10%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Global roles: apply to every workspace of the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleBinding>,
    /// Refused: Mage reads its project-level executor config only from
    /// `k8s_executor_config` in the Mage project's `metadata.yaml` (`mageProject`), so a
    /// copy here would configure nothing. Kept in the schema to say so where it is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<MageExecutorConfig>")]
    pub k8s_executor: Option<serde_json::Value>,
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

/// A Pod Security Standard level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurity {
    Privileged,
    #[default]
    Baseline,
    Restricted,
}

impl PodSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Privileged => "privileged",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }
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
    /// USER_DEFINED_VARS: the variables workspaces inherit, by name or by pattern (the same
    /// patterns as `byEnvironment`: `DEV_ENV_*`, `re:^PROD_.*$`). When set, only these (plus
    /// `byEnvironment` matches) are inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_defined_vars: Option<Vec<String>>,
    /// Per-environment rules: a workspace whose `environment` is the key also inherits every
    /// variable whose name matches one of the patterns. A pattern is a wildcard (`DEV_ENV_*`,
    /// `?` for one character, every other character literal) or, with the prefix `re:`, a
    /// regular expression matched against the whole name (`re:^PROD_.*$`). A wildcard with
    /// characters no variable name has (`^`, `$`, `(`, `|`, …) or with `.*` is refused: it
    /// would match nothing; write it with `re:`.
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

/// The project variable that is Mage Pro's switch for sharing secrets.
pub const SHARE_SECRETS_VAR: &str = "SHARE_SECRETS_ACROSS_WORKSPACES";
/// The project variable that is Mage Pro's code path of the project.
pub const USER_CODE_PATH_VAR: &str = "USER_CODE_PATH";

impl ProjectSpec {
    /// The literal value of a project variable.
    pub fn literal(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.as_deref())
    }

    /// Whether secret-backed variables cross into workspaces: the field, or the project
    /// variable SHARE_SECRETS_ACROSS_WORKSPACES set to `1` as Mage Pro documents it. The
    /// one place that decides; validation refuses other values and contradictions.
    pub fn shares_secrets(&self) -> bool {
        self.share_secrets_across_workspaces || self.literal(SHARE_SECRETS_VAR) == Some("1")
    }

    /// The project's USER_CODE_PATH: the field, else the project variable.
    pub fn code_path(&self) -> Option<&str> {
        self.user_code_path
            .as_deref()
            .or_else(|| self.literal(USER_CODE_PATH_VAR))
    }
}
