//! Mage's Kubernetes executor, rendered: the Job each k8s block would run as (kept in a
//! ConfigMap per project, so a pull request that raises a block's memory shows the change),
//! and the default config file of the project's executor policy, mounted into its
//! workspaces with K8S_DEFAULT_CONFIG_PATH as Mage's Helm chart does.

use super::{MANAGED_BY, PROJECT_LABEL};
use crate::model::{ExecutorConfig, Quantity};
use crate::resolve::executor::{
    BlockExecutor, DEFAULT_JOB_NAME_PREFIX, DEFAULT_NAMESPACE, ProjectPolicy,
};
use crate::resolve::{EXECUTOR_DEFAULTS_FILE, Resolved, ResolvedProject};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// ConfigMap holding the executor policy file in a project's namespace.
pub const DEFAULTS_CONFIG_MAP: &str = "mage-k8s-executor-defaults";
/// ConfigMap holding the rendered Job of every k8s block of a project.
pub const JOBS_CONFIG_MAP: &str = "mage-executor-jobs";

fn labels(project: &ResolvedProject) -> Value {
    json!({MANAGED_BY: "berth", PROJECT_LABEL: project.name})
}

/// The executor ConfigMaps of every project.
pub fn config_maps(resolved: &Resolved) -> Vec<Value> {
    let mut out = Vec::new();
    for project in &resolved.projects {
        if let Some(policy) = resolved
            .executor_policies
            .iter()
            .find(|p| p.project == project.name)
        {
            out.push(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": DEFAULTS_CONFIG_MAP,
                    "namespace": project.namespace,
                    "labels": labels(project),
                    "annotations": {"berth/policy": policy.policy},
                },
                "data": {EXECUTOR_DEFAULTS_FILE: defaults_file(policy)},
            }));
        }
        let jobs: BTreeMap<String, Value> = resolved
            .executors
            .iter()
            .filter(|b| b.project == project.name)
            .map(|b| {
                let key = format!("{}.{}.yaml", b.pipeline, b.block)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "-._".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                // Mage's side reads these files with a YAML 1.1 reader (PyYAML): written
                // by the emitter that quotes what such a reader would take for another type.
                (key, Value::String(super::emit::to_string(&job(b))))
            })
            .collect();
        if !jobs.is_empty() {
            out.push(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": JOBS_CONFIG_MAP, "namespace": project.namespace, "labels": labels(project)},
                "data": jobs,
            }));
        }
    }
    out
}

/// The Job of every k8s block, for `berth render --executor`.
pub fn jobs(resolved: &Resolved) -> Vec<Value> {
    resolved.executors.iter().map(job).collect()
}

/// Mage's default config file format: `enabled`, `enforce` and the executor keys.
fn defaults_file(policy: &ProjectPolicy) -> String {
    let mut file = Map::new();
    file.insert("enabled".into(), Value::Bool(policy.defaults.enabled));
    file.insert("enforce".into(), Value::Bool(policy.defaults.enforce));
    if let Ok(Value::Object(config)) = serde_json::to_value(&policy.defaults.config) {
        file.extend(config);
    }
    // Mage reads this file with PyYAML (YAML 1.1): see `emit`.
    super::emit::to_string(&Value::Object(file))
}

/// The Job a block runs as. Its name keeps Mage's `{block_run_id}` placeholder: Mage fills
/// it in per run (`resolve::executor::check_job_name` checked it fits). Every value comes
/// from the block's merged, canonical config, defaults included, which is what `berth
/// explain` shows: there is no other spelling or fallback to read here.
fn job(block: &BlockExecutor) -> Value {
    let c: &ExecutorConfig = &block.config;
    let container_config = c.container.clone().unwrap_or_default();
    let pod = c.pod.clone().unwrap_or_default();
    let quantities = |map: &Option<BTreeMap<String, Quantity>>| -> Map<String, Value> {
        map.iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::String(v.as_string())))
            .collect()
    };
    let env: Vec<Value> = container_config
        .env
        .iter()
        .flatten()
        .map(|v| match (&v.value, &v.secret_ref) {
            (_, Some(s)) => json!({"name": v.name, "valueFrom": {"secretKeyRef": {"name": s.name, "key": s.key}}}),
            (value, None) => json!({"name": v.name, "value": value.clone().unwrap_or_default()}),
        })
        .collect();
    let mut container = Map::new();
    if let Some(name) = &container_config.name {
        container.insert("name".into(), name.clone().into());
    }
    if let Some(image) = &container_config.image {
        container.insert("image".into(), image.clone().into());
    }
    if let Some(policy) = &container_config.image_pull_policy {
        container.insert("imagePullPolicy".into(), policy.clone().into());
    }
    if !env.is_empty() {
        container.insert("env".into(), Value::Array(env));
    }
    let mut resources = Map::new();
    for (section, map) in [
        ("limits", quantities(&c.resource_limits)),
        ("requests", quantities(&c.resource_requests)),
    ] {
        if !map.is_empty() {
            resources.insert(section.into(), Value::Object(map));
        }
    }
    if !resources.is_empty() {
        container.insert("resources".into(), Value::Object(resources));
    }
    if let Some(mounts) = &container_config.volume_mounts {
        container.insert("volumeMounts".into(), camel_list(mounts));
    }

    let mut pod_spec = Map::new();
    pod_spec.insert("restartPolicy".into(), "Never".into());
    pod_spec.insert("containers".into(), json!([container]));
    if let Some(sa) = &c.service_account_name {
        pod_spec.insert("serviceAccountName".into(), sa.clone().into());
    }
    if let Some(secret) = &pod.image_pull_secrets {
        pod_spec.insert("imagePullSecrets".into(), json!([{"name": secret}]));
    }
    if let Some(selector) = &pod.node_selector {
        pod_spec.insert("nodeSelector".into(), json!(selector));
    }
    if let Some(scheduler) = &pod.scheduler_name {
        pod_spec.insert("schedulerName".into(), scheduler.clone().into());
    }
    if let Some(tolerations) = &pod.tolerations {
        pod_spec.insert("tolerations".into(), camel_list(tolerations));
    }
    if let Some(affinity) = &pod.affinity {
        pod_spec.insert("affinity".into(), camel(&Value::Object(affinity.clone())));
    }
    if let Some(volumes) = &pod.volumes {
        pod_spec.insert("volumes".into(), camel_list(volumes));
    }

    let mut job_spec = Map::new();
    if let Some(job) = &c.job {
        if let Some(v) = job.active_deadline_seconds {
            job_spec.insert("activeDeadlineSeconds".into(), v.into());
        }
        if let Some(v) = job.backoff_limit {
            job_spec.insert("backoffLimit".into(), v.into());
        }
        if let Some(v) = job.ttl_seconds_after_finished {
            job_spec.insert("ttlSecondsAfterFinished".into(), v.into());
        }
    }
    job_spec.insert("template".into(), json!({"spec": pod_spec}));

    let mut labels = json!({"berth/project": block.project, "mage.ai/pipeline": block.pipeline, "mage.ai/block": block.block});
    let mut annotations = json!({});
    if let Some(meta) = &c.metadata {
        for (target, extra) in [
            (&mut labels, &meta.labels),
            (&mut annotations, &meta.annotations),
        ] {
            if let (Some(map), Some(extra)) = (target.as_object_mut(), extra) {
                map.extend(
                    extra
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone()))),
                );
            }
        }
    }
    let prefix = c
        .job_name_prefix
        .as_deref()
        .unwrap_or(DEFAULT_JOB_NAME_PREFIX);
    let mut metadata = json!({
        "name": format!("mage-{prefix}-block-{{block_run_id}}"),
        "namespace": c.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        "labels": labels,
    });
    if annotations.as_object().is_some_and(|a| !a.is_empty()) {
        metadata["annotations"] = annotations;
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec})
}

fn camel_list(items: &[Map<String, Value>]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|m| camel(&Value::Object(m.clone())))
            .collect(),
    )
}

/// Mage accepts Kubernetes fields in snake_case (`persistent_volume_claim: {claim_name}`);
/// the API wants camelCase. Keys of label and selector maps are user data and stay as they
/// are.
fn camel(value: &Value) -> Value {
    const USER_MAPS: &[&str] = &["matchLabels", "labels", "annotations", "nodeSelector"];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = to_camel(k);
                    let v = if USER_MAPS.contains(&key.as_str()) {
                        v.clone()
                    } else {
                        camel(v)
                    };
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(camel).collect()),
        other => other.clone(),
    }
}

fn to_camel(key: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_becomes_camel_case_except_user_maps() {
        let v = json!({"persistent_volume_claim": {"claim_name": "x"}, "match_labels": {"node_type": "a"}});
        assert_eq!(
            camel(&v),
            json!({"persistentVolumeClaim": {"claimName": "x"}, "matchLabels": {"node_type": "a"}})
        );
        assert_eq!(
            to_camel("requiredDuringSchedulingIgnoredDuringExecution"),
            "requiredDuringSchedulingIgnoredDuringExecution"
        );
    }
}
