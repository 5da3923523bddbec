//! Mage's Kubernetes executor configuration (`k8s_executor_config`), with Mage's own
//! snake_case keys so configuration can be copied between Mage's files and berth's.

use super::{EnvVar, Quantity};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One layer of executor configuration — a block's `executor_config`, a project's
/// `k8s_executor_config`, a policy's defaults, or the full job template (K8S_CONFIG_FILE) —
/// in berth's **canonical** spelling: one field per setting.
///
/// Mage accepts several settings under two spellings (see [`MageExecutorConfig`] and
/// [`ALIASES`]). The loader rewrites every layer to this form ([`canonicalise`]) before
/// anything merges layers, so precedence, policy enforcement, `explain` and the rendered
/// Job all read one representation: no setting can be written in a spelling that one of
/// them does not look at. Deserializing this type from Mage's other spellings fails
/// (`deny_unknown_fields`) rather than dropping them.
///
/// The canonical spellings, and why:
/// - `namespace` (not `metadata.namespace`): the spelling of block and project config, and
///   the key KUBE_NAMESPACE defaults;
/// - `service_account_name` (not `pod.service_account_name`): the spelling of project
///   config and of Mage's default policy file, and the key
///   K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME defaults;
/// - `pod.image_pull_secrets` (not `image_pull_secrets`): a pod setting, kept with the
///   other pod settings as the job template writes it;
/// - `container` (not `container_config`): the full container section (name, image, pull
///   policy, env, mounts) of the job template and of Mage's default policy file;
/// - `resource_limits` / `resource_requests` (not `container.resources.limits|requests`):
///   the spelling of block, project and policy config, and the keys the
///   K8S_EXECUTOR_DEFAULT_RESOURCE_* variables default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requests: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ExecutorPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ExecutorContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<ExecutorJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ExecutorMetadata>,
}

/// Pod settings of a block's Job (canonical spelling; see [`ExecutorConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorPod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<String>,
}

/// The block's container (canonical spelling; see [`ExecutorConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// Labels and annotations of the block's Job (canonical spelling; see [`ExecutorConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Mage's Kubernetes executor configuration as it may be written: `k8s_executor_config`,
/// a block's `executor_config`, the K8S_CONFIG_FILE job template and the default policy
/// file, with every spelling Mage accepts. This is what the JSON Schema describes; berth
/// rewrites it to one spelling per setting before merging layers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageExecutorConfig {
    /// Namespace the block's Job runs in (KUBE_NAMESPACE; Mage's default: `default`).
    /// `metadata.namespace` is the same setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Job names are `mage-{job_name_prefix}-block-{block_run_id}`; `{trigger_name}` is
    /// interpolated. Mage's default: `data-prep`. The name must be a DNS-1123 label of at
    /// most 57 characters for the longest block run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name_prefix: Option<String>,
    /// Service account of the Job's pods. `pod.service_account_name` is the same setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// `container.resources.limits` is the same setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<BTreeMap<String, Quantity>>,
    /// `container.resources.requests` is the same setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requests: Option<BTreeMap<String, Quantity>>,
    /// Name of the Secret holding registry credentials. The same setting as
    /// `pod.image_pull_secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<MageExecutorPod>,
    /// Image and env of the block's container: the same settings as `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<MageExecutorContainer>,
    /// The block's container (the job template's and the default policy file's spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<MageExecutorContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<ExecutorJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MageExecutorMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageExecutorPod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Kubernetes tolerations (snake_case or camelCase keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// A Kubernetes `Affinity` (snake_case or camelCase keys), taken whole from one layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<serde_json::Map<String, serde_json::Value>>,
    /// Kubernetes volumes (snake_case or camelCase keys, e.g. `persistent_volume_claim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// The same setting as the top-level `service_account_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Name of the Secret holding registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageExecutorContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// `limits` and `requests`: the same settings as `resource_limits` and
    /// `resource_requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<MageExecutorResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageExecutorResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MageExecutorMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// The same setting as the top-level `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A spelling Mage accepts besides the canonical one, as JSON pointers into one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    pub written: &'static str,
    pub canonical: &'static str,
}

/// Every other spelling, applied in this order: `container_config` first, so that its
/// `resources` move on to `resource_limits`/`resource_requests` like `container`'s.
pub const ALIASES: &[Alias] = &[
    Alias {
        written: "/container_config",
        canonical: "/container",
    },
    Alias {
        written: "/container/resources/limits",
        canonical: "/resource_limits",
    },
    Alias {
        written: "/container/resources/requests",
        canonical: "/resource_requests",
    },
    Alias {
        written: "/metadata/namespace",
        canonical: "/namespace",
    },
    Alias {
        written: "/pod/service_account_name",
        canonical: "/service_account_name",
    },
    Alias {
        written: "/image_pull_secrets",
        canonical: "/pod/image_pull_secrets",
    },
];

/// Whether the value at `pointer` of an executor config is taken whole from one layer
/// rather than merged key by key: every value that is not a mapping (lists included), and
/// `pod.affinity`, a Kubernetes Affinity whose parts only make sense together.
pub fn is_whole(pointer: &str, value: &serde_json::Value) -> bool {
    !value.is_object() || pointer == "/pod/affinity"
}

/// The canonical pointer of a setting written at `pointer` (any spelling).
pub fn canonical_pointer(pointer: &str) -> String {
    let mut pointer = pointer.to_string();
    for alias in ALIASES {
        if let Some(rest) = pointer.strip_prefix(alias.written)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            pointer = format!("{}{rest}", alias.canonical);
        }
    }
    pointer
}

/// What [`canonicalise`] did to one layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Canonicalised {
    /// Values moved: (pointer as written, canonical pointer), for positions.
    pub moved: Vec<(String, String)>,
    /// Settings written in two spellings with different values. The canonical value is
    /// kept.
    pub clashes: Vec<Clash>,
}

/// One setting written in two spellings of one layer, with different values.
#[derive(Debug, Clone, PartialEq)]
pub struct Clash {
    /// Pointer of the other spelling, as written.
    pub written: String,
    pub written_value: serde_json::Value,
    /// Pointer of the canonical spelling, which holds another value.
    pub canonical: String,
    pub canonical_value: serde_json::Value,
}

/// Rewrite one layer (as Mage writes it, schema-valid) to the canonical spelling, in
/// place. A setting written in both spellings with the same value is kept once; with
/// different values, the canonical spelling's value is kept and the clash is returned.
pub fn canonicalise(config: &mut serde_json::Value) -> Canonicalised {
    let mut done = Canonicalised::default();
    for alias in ALIASES {
        if let Some(value) = take(config, alias.written) {
            place(config, alias.written, alias.canonical, value, &mut done);
        }
    }
    done
}

/// Remove the value at `pointer`, then the mappings it leaves empty on the way up (a
/// `container: {resources: {}}` has nothing left to say). A null counts as absent.
fn take(root: &mut serde_json::Value, pointer: &str) -> Option<serde_json::Value> {
    fn remove_at(node: &mut serde_json::Value, segments: &[&str]) -> Option<serde_json::Value> {
        let (first, rest) = segments.split_first()?;
        let map = node.as_object_mut()?;
        if rest.is_empty() {
            return map.remove(*first).filter(|v| !v.is_null());
        }
        remove_at(map.get_mut(*first)?, rest)
    }
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    let taken = remove_at(root, &segments);
    // Innermost first: an outer mapping can only be empty once its inner one is gone.
    for depth in (1..segments.len()).rev() {
        let parent: String = segments[..depth - 1]
            .iter()
            .map(|s| format!("/{s}"))
            .collect();
        if let Some(map) = root.pointer_mut(&parent).and_then(|p| p.as_object_mut())
            && map
                .get(segments[depth - 1])
                .is_some_and(|v| v.is_null() || v.as_object().is_some_and(|m| m.is_empty()))
        {
            map.remove(segments[depth - 1]);
        }
    }
    taken
}

/// Put `value` (written at `written`) at `canonical`, merging key by key with what is
/// there the way layers merge.
fn place(
    root: &mut serde_json::Value,
    written: &str,
    canonical: &str,
    value: serde_json::Value,
    done: &mut Canonicalised,
) {
    match root.pointer_mut(canonical) {
        Some(existing) if !existing.is_null() => {
            if is_whole(canonical, existing) || is_whole(canonical, &value) {
                if *existing != value {
                    done.clashes.push(Clash {
                        written: written.to_string(),
                        written_value: value,
                        canonical: canonical.to_string(),
                        canonical_value: existing.clone(),
                    });
                }
                return;
            }
            let serde_json::Value::Object(map) = value else {
                return;
            };
            for (key, child) in map {
                // RFC 6901 escaping, as the loader's pointers use.
                let segment = key.replace('~', "~0").replace('/', "~1");
                place(
                    root,
                    &format!("{written}/{segment}"),
                    &format!("{canonical}/{segment}"),
                    child,
                    done,
                );
            }
        }
        _ => {
            set(root, canonical, value);
            done.moved
                .push((written.to_string(), canonical.to_string()));
        }
    }
}

/// Set the value at `pointer`, creating mappings on the way.
fn set(root: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut node = root;
    for segment in parents {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        let child = map
            .entry(segment.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if child.is_null() {
            *child = serde_json::Value::Object(Default::default());
        }
        node = child;
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(last.clone(), value);
    }
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
    #[schemars(with = "MageExecutorConfig")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Seed 001 writes the same settings in block/project config, the job template and the
    /// default policy file with different keys; each comes out in one spelling.
    #[test]
    fn every_spelling_becomes_the_canonical_one() {
        let mut config = json!({
            "metadata": {"namespace": "ns", "labels": {"a": "b"}},
            "pod": {"service_account_name": "sa", "node_selector": {"k": "v"}},
            "image_pull_secrets": "pull",
            "container_config": {"image": "img:1", "resources": {"limits": {"cpu": "1"}}},
            "container": {"env": [], "resources": {"requests": {"memory": "1Gi"}}},
        });
        let done = canonicalise(&mut config);
        assert_eq!(
            config,
            json!({
                "namespace": "ns",
                "metadata": {"labels": {"a": "b"}},
                "service_account_name": "sa",
                "pod": {"node_selector": {"k": "v"}, "image_pull_secrets": "pull"},
                "container": {"env": [], "image": "img:1"},
                "resource_limits": {"cpu": "1"},
                "resource_requests": {"memory": "1Gi"},
            })
        );
        assert!(done.clashes.is_empty());
        // Positions follow every move, chained ones included.
        assert!(done.moved.contains(&(
            "/container/resources/limits".into(),
            "/resource_limits".into()
        )));
        assert!(
            done.moved
                .contains(&("/container_config/image".into(), "/container/image".into()))
        );
        // The canonical type holds it: no spelling is left over.
        assert!(serde_json::from_value::<ExecutorConfig>(config).is_ok());
    }

    #[test]
    fn two_spellings_with_different_values_clash_and_the_canonical_one_stays() {
        let mut config = json!({"namespace": "a", "metadata": {"namespace": "b"},
            "resource_limits": {"cpu": "1"}, "container": {"resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}});
        let done = canonicalise(&mut config);
        assert_eq!(
            done.clashes,
            [Clash {
                written: "/metadata/namespace".into(),
                written_value: json!("b"),
                canonical: "/namespace".into(),
                canonical_value: json!("a"),
            }]
        );
        // Equal values agree; maps merge key by key.
        assert_eq!(
            config,
            json!({"namespace": "a", "resource_limits": {"cpu": "1", "memory": "2Gi"}})
        );
    }

    #[test]
    fn canonical_pointers_of_paths() {
        assert_eq!(
            canonical_pointer("/pod/service_account_name"),
            "/service_account_name"
        );
        assert_eq!(
            canonical_pointer("/container_config/resources/limits/cpu"),
            "/resource_limits/cpu"
        );
        assert_eq!(
            canonical_pointer("/image_pull_secrets"),
            "/pod/image_pull_secrets"
        );
        assert_eq!(
            canonical_pointer("/pod/scheduler_name"),
            "/pod/scheduler_name"
        );
        assert_eq!(
            canonical_pointer("/container_configs"),
            "/container_configs"
        );
    }
}
