//! Mage's Kubernetes executor configuration (`k8s_executor_config`, a block's
//! `executor_config`, the K8S_CONFIG_FILE job template, Mage Pro's default config file),
//! described as mage-ai's own code reads it (`K8sExecutorConfig.load` in
//! `mage_ai/services/k8s/config.py`, mage-ai 0.9.80).
//!
//! berth keeps every layer as written: Mage merges layers key by key at the top level only
//! (`merge_dict`, a `dict.update`), and the spellings that look alike are separate settings
//! with rules of their own (a top-level `service_account_name` beats `pod.service_account_name`
//! from any layer; `metadata` resets the namespace; `container_config` builds a second
//! container merged over `container`'s). The types here only describe what Mage accepts,
//! for validation and the JSON Schema; the merge and the Job follow Mage's code in the
//! berth crate's `mage` module.

use super::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One layer of executor configuration as written: the dict Mage reads.
pub type MageConfig = Map<String, Value>;

/// Mage's Kubernetes executor configuration: exactly the fields of Mage's
/// `K8sExecutorConfig` dataclass a file may set (any other top-level key makes
/// `K8sExecutorConfig(**config)` raise TypeError).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageExecutorConfig {
    /// Namespace of the block's Jobs (a Jinja template, rendered by Mage at run time).
    /// Unset: KUBE_NAMESPACE of the Mage server, else `default`. Ignored when `metadata` is
    /// set: then `metadata.namespace` (else KUBE_NAMESPACE, else `default`) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Job names are `{MAGE_CLUSTER_UUID}-{job_name_prefix}-block-{block_run_id}`
    /// (MAGE_CLUSTER_UUID defaults to `mage`, the prefix to `data-prep`); `{trigger_name}`
    /// is replaced by the trigger's name, cleaned (lower case, other characters to `-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name_prefix: Option<String>,
    /// Service account of the Job's pods; wins over `pod.service_account_name` from any
    /// layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Limits of the Job's container; with `resource_requests`, replaces
    /// `container.resources` whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requests: Option<BTreeMap<String, Quantity>>,
    /// Accepted by Mage and without effect (the template is K8S_CONFIG_FILE's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<MageExecutorPod>,
    /// A whole Kubernetes container (`V1Container(**container_config)`: snake_case keys,
    /// values inside as the API writes them), named `mage-data` unless named, merged over
    /// the container `container` builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<MageContainerConfig>,
    /// The Job's container: name (default `mage-job-container`), image (default: the Mage
    /// server's), pull policy (default `IfNotPresent`), env, mounts, resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<MageExecutorContainer>,
    /// Without it the Job has `backoffLimit: 0`; with it, only what it sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<ExecutorJob>,
    /// `V1ObjectMeta(**metadata)`: the Job's and its pods' metadata. Setting it resets the
    /// namespace to `metadata.namespace`, else KUBE_NAMESPACE, else `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MageObjectMeta>,
}

/// The `pod` section. Mage reads these keys and ignores any other (berth warns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MageExecutorPod {
    /// Unset: the Mage server pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// `V1Toleration(**item)`: snake_case keys. Unset or empty: the Mage server pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<MageToleration>>,
    /// Kubernetes affinity in the API's camelCase (`nodeAffinity`, `podAntiAffinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Map<String, Value>>,
    /// `V1Volume(**item)`: top-level keys snake_case (`persistent_volume_claim`), the values
    /// inside as the API writes them (`claimName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Map<String, Value>>>,
    /// Loses to a top-level `service_account_name` from any layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Name of the Secret holding registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageToleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// The `container` section. Mage reads these keys and ignores any other (berth warns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MageExecutorContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// `V1EnvVar(**item)`: `name`, `value`, `value_from` (its inside in the API's
    /// camelCase: `{secretKeyRef: {name, key}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<MageEnvVar>>,
    /// `V1ResourceRequirements(**resources)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<MageResources>,
    /// `V1VolumeMount(**item)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<MageVolumeMount>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageEnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageVolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path_expr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_propagation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive_read_only: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Vec<Value>>,
}

/// `V1ObjectMeta(**metadata)`: its attributes, snake_case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<Vec<Value>>,
}

/// `V1Container(**container_config)`: the client's attributes, snake_case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Items as the API writes them (`{name, value}` or `{name, valueFrom}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<Map<String, Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<MageResources>,
    /// Items as the API writes them (`{name, mountPath}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<Map<String, Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_policy: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy_rules: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_once: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_devices: Option<Vec<Value>>,
}

/// The `job` section: Mage reads these three keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutorJob {
    /// Seconds a block's Job may run (Kubernetes: at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Retries before the Job fails (Kubernetes: not negative; unset here: Kubernetes'
    /// default, 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backoff_limit: Option<i32>,
    /// Seconds a finished Job is kept (Kubernetes: not negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// The keys Mage reads in the `pod` and `container` sections; any other is ignored by
/// Mage, which berth says.
pub const POD_KEYS: &[&str] = &[
    "node_selector",
    "scheduler_name",
    "tolerations",
    "affinity",
    "volumes",
    "service_account_name",
    "image_pull_secrets",
];
pub const CONTAINER_KEYS: &[&str] = &[
    "name",
    "image",
    "image_pull_policy",
    "env",
    "resources",
    "volume_mounts",
];
pub const JOB_KEYS: &[&str] = &[
    "active_deadline_seconds",
    "backoff_limit",
    "ttl_seconds_after_finished",
];

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
    /// The executor settings (same keys as `k8s_executor_config`), merged with the block's
    /// and project's configuration top-level key by top-level key, as Mage merges.
    #[serde(default)]
    #[schemars(with = "MageExecutorConfig")]
    pub config: MageConfig,
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
