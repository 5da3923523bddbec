//! Mage's Kubernetes executor configuration (`k8s_executor_config`), with Mage's own
//! snake_case keys so configuration can be copied between Mage's files and berth's.

use super::{EnvVar, Quantity};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One layer of executor configuration: a block's `executor_config`, a project's
/// `k8s_executor_config`, a policy's defaults, or the full job template (K8S_CONFIG_FILE).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Namespace the block's Job runs in (KUBE_NAMESPACE; Mage's default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Job names are `mage-{job_name_prefix}-block-{block_run_id}`; `{trigger_name}` is
    /// interpolated. Mage's default: `data-prep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requests: Option<BTreeMap<String, Quantity>>,
    /// Name of the Secret holding registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ExecutorPod>,
    /// Image and env of the block's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<ExecutorContainer>,
    /// The container section of a full job template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ExecutorContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<ExecutorJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ExecutorMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutorPod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Kubernetes tolerations (snake_case or camelCase keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// A Kubernetes `Affinity` (snake_case or camelCase keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<serde_json::Map<String, serde_json::Value>>,
    /// Kubernetes volumes (snake_case or camelCase keys, e.g. `persistent_volume_claim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutorContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// `limits` and `requests` (full template form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, BTreeMap<String, Quantity>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutorJob {
    /// Seconds a block's Job may run (Kubernetes: at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Retries before the Job fails (Kubernetes: not negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backoff_limit: Option<i32>,
    /// Seconds a finished Job is kept (Kubernetes: not negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutorMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Mage's default executor config file, as a berth Policy carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecutorDefaults {
    /// `false` switches the policy off entirely.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `true`: the policy wins over block and project settings. `false`: it only fills keys
    /// that block and project leave unset.
    #[serde(default)]
    pub enforce: bool,
    /// With `enforce`, overriding a different block or project value is an error instead of
    /// a warning.
    #[serde(default)]
    pub strict_conflicts: bool,
    /// The executor settings (same keys as `k8s_executor_config`).
    #[serde(default)]
    pub config: ExecutorConfig,
}

fn yes() -> bool {
    true
}

/// ZenML's Kubernetes workload manager: runner pods for pipelines started from the UI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadManager {
    /// `kubernetes` (any cluster), `aws` (EKS: ECR builds, S3 logs) or `gcp` (GKE).
    #[serde(default)]
    pub implementation: WorkloadManagerKind,
    /// Namespace for runner jobs (rendered by berth).
    pub namespace: String,
    /// Service account for runner jobs (rendered by berth, with its Role).
    pub service_account: String,
    /// Pre-built runner image (used when not building).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_image: Option<String>,
    /// Build runner images instead of using `runnerImage`; needs `dockerRegistry`.
    #[serde(default)]
    pub build_runner_image: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_registry: Option<String>,
    /// Requests and limits of runner pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_resources: Option<super::Resources>,
    /// Seconds before finished jobs are cleaned up (default: 2 days).
    #[serde(default = "two_days")]
    #[schemars(range(max = 2147483647))]
    pub ttl_seconds_after_finished: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<super::Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub job_backoff_limit: Option<u32>,
    /// A Kubernetes Job `podFailurePolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_failure_policy: Option<serde_json::Map<String, serde_json::Value>>,
    /// Concurrent snapshot runs per pod (default: 2).
    #[serde(default = "two")]
    #[schemars(range(min = 1))]
    pub max_concurrent_runs: u32,
    /// Store runner logs externally (AWS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_logs: Option<ExternalLogs>,
    /// AWS region (required on `aws` when building images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadManagerKind {
    #[default]
    Kubernetes,
    Aws,
    Gcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalLogs {
    #[serde(default)]
    pub enabled: bool,
    /// S3 bucket for the logs (required when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

fn two_days() -> u64 {
    2 * 24 * 3600
}

fn two() -> u32 {
    2
}
