//! ZenML's Kubernetes workload manager: the runner namespace, its service account with
//! exactly the permissions runner jobs need, and the settings the workspace server reads
//! (`ZENML_KUBERNETES_WORKLOAD_MANAGER_*`, `ZENML_SERVER_*`) as a ConfigMap.

use super::{MANAGED_BY, PROJECT_LABEL};
use crate::model::{WorkloadManager, WorkloadManagerKind};
use crate::resolve::ResolvedProject;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const CONFIG_MAP: &str = "zenml-workload-manager";
const ROLE: &str = "zenml-workload-manager";

pub fn render(project: &ResolvedProject, wm: &WorkloadManager) -> Vec<Value> {
    let labels = json!({MANAGED_BY: "berth", PROJECT_LABEL: project.name});
    let ns = &wm.namespace;
    let mut out = Vec::new();
    if *ns != project.namespace {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}));
    }
    out.push(json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": wm.service_account, "namespace": ns, "labels": labels},
    }));
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": ROLE, "namespace": ns, "labels": labels},
        "rules": [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ],
    }));
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": ROLE, "namespace": ns, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": wm.service_account, "namespace": ns}],
    }));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": project.namespace, "labels": labels},
        "data": settings(wm),
    }));
    out
}

/// The workspace server's environment, as the seed names it (JSON where it says JSON).
pub fn settings(wm: &WorkloadManager) -> BTreeMap<String, String> {
    const P: &str = "ZENML_KUBERNETES_WORKLOAD_MANAGER_";
    let mut env = BTreeMap::new();
    let source = match wm.implementation {
        WorkloadManagerKind::Kubernetes => {
            "zenml_cloud_plugins.kubernetes_workload_manager.KubernetesWorkloadManager"
        }
        WorkloadManagerKind::Aws => {
            "zenml_cloud_plugins.aws_kubernetes_workload_manager.AWSKubernetesWorkloadManager"
        }
        WorkloadManagerKind::Gcp => {
            "zenml_cloud_plugins.gcp_kubernetes_workload_manager.GCPKubernetesWorkloadManager"
        }
    };
    env.insert(
        "ZENML_SERVER_WORKLOAD_MANAGER_IMPLEMENTATION_SOURCE".into(),
        source.into(),
    );
    env.insert(format!("{P}NAMESPACE"), wm.namespace.clone());
    env.insert(format!("{P}SERVICE_ACCOUNT"), wm.service_account.clone());
    env.insert(
        format!("{P}BUILD_RUNNER_IMAGE"),
        wm.build_runner_image.to_string(),
    );
    if let Some(registry) = &wm.docker_registry {
        env.insert(format!("{P}DOCKER_REGISTRY"), registry.clone());
    }
    if let Some(image) = &wm.runner_image {
        env.insert(format!("{P}RUNNER_IMAGE"), image.clone());
    }
    let external = wm.external_logs.as_ref().is_some_and(|l| l.enabled);
    env.insert(format!("{P}ENABLE_EXTERNAL_LOGS"), external.to_string());
    if let Some(resources) = &wm.pod_resources {
        env.insert(
            format!("{P}POD_RESOURCES"),
            json(&berth_load::k8s::resources_json(resources)),
        );
    }
    env.insert(
        format!("{P}TTL_SECONDS_AFTER_FINISHED"),
        wm.ttl_seconds_after_finished.to_string(),
    );
    if !wm.node_selector.is_empty() {
        env.insert(format!("{P}NODE_SELECTOR"), json(&wm.node_selector));
    }
    if !wm.tolerations.is_empty() {
        env.insert(format!("{P}TOLERATIONS"), json(&wm.tolerations));
    }
    if let Some(limit) = wm.job_backoff_limit {
        env.insert(format!("{P}JOB_BACKOFF_LIMIT"), limit.to_string());
    }
    if let Some(policy) = &wm.pod_failure_policy {
        env.insert(format!("{P}POD_FAILURE_POLICY"), json(policy));
    }
    env.insert(
        "ZENML_SERVER_MAX_CONCURRENT_SNAPSHOT_RUNS".into(),
        wm.max_concurrent_runs.to_string(),
    );
    if let Some(bucket) = wm.external_logs.as_ref().and_then(|l| l.bucket.clone()) {
        env.insert(
            "ZENML_AWS_KUBERNETES_WORKLOAD_MANAGER_BUCKET".into(),
            bucket,
        );
    }
    if let Some(region) = &wm.region {
        env.insert(
            "ZENML_AWS_KUBERNETES_WORKLOAD_MANAGER_REGION".into(),
            region.clone(),
        );
    }
    env
}

/// Compact JSON (the seed's "JSON format" settings).
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_json_settings() {
        let wm: WorkloadManager = serde_json::from_value(json!({
            "namespace": "zenml-runners",
            "serviceAccount": "runner",
            "nodeSelector": {"pool": "runners"},
            "podResources": {"requests": {"cpu": "500m"}},
        }))
        .unwrap();
        let env = settings(&wm);
        assert_eq!(
            env["ZENML_KUBERNETES_WORKLOAD_MANAGER_TTL_SECONDS_AFTER_FINISHED"],
            "172800"
        );
        assert_eq!(env["ZENML_SERVER_MAX_CONCURRENT_SNAPSHOT_RUNS"], "2");
        assert_eq!(
            env["ZENML_KUBERNETES_WORKLOAD_MANAGER_NODE_SELECTOR"],
            r#"{"pool":"runners"}"#
        );
        assert_eq!(
            env["ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_RESOURCES"],
            r#"{"requests":{"cpu":"500m"}}"#
        );
        assert_eq!(
            env["ZENML_KUBERNETES_WORKLOAD_MANAGER_BUILD_RUNNER_IMAGE"],
            "false"
        );
        assert!(
            env["ZENML_SERVER_WORKLOAD_MANAGER_IMPLEMENTATION_SOURCE"]
                .ends_with(".KubernetesWorkloadManager")
        );
    }

    /// Quantities reach the plugin as Kubernetes prints them, also when git writes a number.
    #[test]
    fn pod_resources_quantities_are_strings() {
        let wm: WorkloadManager = serde_json::from_value(json!({
            "namespace": "zenml-runners",
            "serviceAccount": "runner",
            "podResources": {"requests": {"cpu": 0.5}, "limits": {"cpu": 2, "memory": "4Gi"}},
        }))
        .unwrap();
        assert_eq!(
            settings(&wm)["ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_RESOURCES"],
            r#"{"requests":{"cpu":"0.5"},"limits":{"cpu":"2","memory":"4Gi"}}"#
        );
    }
}
