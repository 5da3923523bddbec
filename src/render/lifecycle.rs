//! Workspace lifecycle policies (Mage Pro's pre-start and post-start scripts, idle
//! termination) as Kubernetes sees them.
//!
//! The pre-start contract: the script (Python, from the repository) defines
//! `get_custom_configs()` returning a dict. An init container with the workspace's image,
//! environment and volumes runs it and writes the dict to a shared volume as shell exports;
//! the workspace container loads them into its environment before starting Mage. So the
//! dict's keys become environment variables of the workspace (non-string values as JSON).

use super::IDLE_SINCE;
use super::meta::{labels_of, meta_of, pod_account};
use crate::resolve::ResolvedWorkspace;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ExecAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// CPU (millicores, over a sampling interval) at which the activity agent counts a
/// workspace as working, unless the workspace says otherwise.
pub const DEFAULT_BUSY_MILLICORES: u64 = 100;

/// How often the agent samples, for a workspace idle after `idle_seconds`: a sixth of it,
/// between 10 seconds and 5 minutes. The agent is rendered with it;
/// the reconciler uses the same to judge staleness.
pub fn sample_interval(idle_seconds: u64) -> Duration {
    Duration::from_secs((idle_seconds / 6).clamp(10, 300))
}

/// A heartbeat older than this means the agent is not working (three missed samples).
pub fn heartbeat_deadline(idle_seconds: u64) -> Duration {
    sample_interval(idle_seconds) * 3
}

pub const SCRIPTS_DIR: &str = "/etc/berth/scripts";
pub const PRE_START_DIR: &str = "/etc/berth/pre-start";
/// Mage's image starts with this when no command is given.
pub const DEFAULT_COMMAND: &str = "/app/run_app.sh";

/// Runs the pre-start script and writes what `get_custom_configs()` returns.
const PRE_START_RUNNER: &str = r#"import importlib.util, json, re, shlex, sys
spec = importlib.util.spec_from_file_location("pre_start", "/etc/berth/scripts/pre_start.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
configs = module.get_custom_configs()
if not isinstance(configs, dict):
    sys.exit("berth pre-start: get_custom_configs() must return a dict, not %s" % type(configs).__name__)
with open("/etc/berth/pre-start/custom.env", "w") as out:
    for key, value in sorted(configs.items()):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
            print("berth pre-start: skipping %r: not an environment variable name" % key, file=sys.stderr)
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        out.write("export %s=%s\n" % (key, shlex.quote(text)))
with open("/etc/berth/pre-start/custom.json", "w") as out:
    json.dump(configs, out, default=str)
print("berth pre-start: %d configuration value(s)" % len(configs))
"#;

/// The name of the ConfigMap with a workspace's scripts.
pub fn scripts_config_map_name(workspace: &str) -> String {
    format!("{workspace}-scripts")
}

/// The ConfigMap holding a workspace's lifecycle scripts, if it has any.
pub fn scripts_config_map(ws: &ResolvedWorkspace) -> Option<Value> {
    let data = &ws.scripts;
    if data.is_empty() {
        return None;
    }
    let mut cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta_of(ws, scripts_config_map_name(&ws.name)),
        "data": data,
    });
    cm["metadata"]["labels"] = json!(labels_of(ws));
    Some(cm)
}

/// The activity Lease of a workspace with an idle timeout. berth creates it and never sets
/// `renewTime` nor the agent's heartbeat: those are the activity agent's. While the
/// reconciler keeps the workspace suspended, the Lease carries [`IDLE_SINCE`], so the
/// suspension outlives the agent (which is gone with the pod) until activity is renewed.
pub fn activity_lease(ws: &ResolvedWorkspace, idle_since: Option<&str>) -> Option<Value> {
    let idle = ws.spec.lifecycle.termination.as_ref()?.idle_seconds;
    let mut meta = meta_of(ws, lease_name(&ws.name));
    if let Some(since) = idle_since {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(IDLE_SINCE.into(), since.into());
    }
    Some(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": ws.name, "leaseDurationSeconds": idle.min(i32::MAX as u64)},
    }))
}

/// The activity Lease of a workspace.
pub fn lease_name(workspace: &str) -> String {
    format!("{workspace}-activity")
}

/// The service account berth renders for a workspace pod that needs one and names none:
/// no token is mounted from it by default; the containers that need one mount their own.
pub fn pod_account_object(ws: &ResolvedWorkspace) -> Option<Value> {
    let needs = ws.spec.lifecycle.termination.is_some() || !ws.executor_namespaces.is_empty();
    (needs && ws.spec.kubernetes.service_account_name.is_none()).then(|| {
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta_of(ws, pod_account(ws)),
            "automountServiceAccountToken": false,
        })
    })
}

/// The Role and RoleBinding that let the activity agent renew exactly one Lease: `get`
/// and `patch`, by `resourceNames`.
pub fn activity_rbac(ws: &ResolvedWorkspace) -> Vec<Value> {
    if ws.spec.lifecycle.termination.is_none() {
        return Vec::new();
    }
    let name = lease_name(&ws.name);
    let account = pod_account(ws);
    let mut objects = Vec::new();
    objects.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta_of(ws, name.clone()),
        "rules": [{
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [name],
            "verbs": ["get", "patch"],
        }],
    }));
    objects.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta_of(ws, name.clone()),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ws.namespace}],
    }));
    objects
}

/// Where a container's own service-account token is mounted (where clients look for it).
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A projected service-account token for one container of the pod (with the CA and the
/// namespace, as the API server's own token volume has them).
pub fn token_volume(name: &str) -> Volume {
    serde_json::from_value(json!({
        "name": name,
        "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]},
    }))
    .unwrap_or_default()
}

/// The activity agent's container and its token volume, and the service account the pod
/// must run as; `None` without an idle timeout.
pub fn activity_agent(ws: &ResolvedWorkspace) -> Option<(Container, Volume, String)> {
    let termination = ws.spec.lifecycle.termination.as_ref()?;
    let busy = termination
        .busy_cpu
        .as_ref()
        .map(|q| q.as_string())
        .unwrap_or_else(|| format!("{}m", DEFAULT_BUSY_MILLICORES));
    let interval = sample_interval(termination.idle_seconds);
    let quantity = |s: &str| Quantity(s.to_string());
    let container = Container {
        name: "activity-agent".into(),
        image: Some(ws.agent_image.clone()),
        args: Some(vec![
            "activity-agent".into(),
            "--lease".into(),
            lease_name(&ws.name),
            "--port".into(),
            super::MAGE_PORT.to_string(),
            "--interval".into(),
            interval.as_secs().to_string(),
            "--busy-cpu".into(),
            busy,
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAMESPACE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity("10m")),
                ("memory".into(), quantity("16Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), quantity("64Mi"))])),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "berth-activity-token".into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(10001),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A token for the agent only: the workspace container gets none from this volume.
    let volume = token_volume("berth-activity-token");
    Some((container, volume, pod_account(ws)))
}

/// What lifecycle policies add to the workspace pod.
#[derive(Default)]
pub struct PodParts {
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    pub post_start: Option<Lifecycle>,
    /// The workspace container's command, when pre-start configuration must be loaded first.
    pub command: Option<Vec<String>>,
    /// The init container's command (it is otherwise the workspace container).
    pub pre_start: Option<Vec<String>>,
}

pub fn pod_parts(ws: &ResolvedWorkspace) -> PodParts {
    let lifecycle = &ws.spec.lifecycle;
    let mut parts = PodParts::default();
    let scripts = lifecycle.pre_start.is_some()
        || lifecycle
            .post_start
            .as_ref()
            .is_some_and(|p| p.script.is_some());
    if scripts {
        parts.volumes.push(Volume {
            name: "berth-scripts".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: scripts_config_map_name(&ws.name),
                ..Default::default()
            }),
            ..Default::default()
        });
        parts.mounts.push(VolumeMount {
            name: "berth-scripts".into(),
            mount_path: SCRIPTS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if let Some(post) = &lifecycle.post_start {
        let command = match &post.script {
            Some(script) if script.ends_with(".py") => {
                vec!["python3".into(), format!("{SCRIPTS_DIR}/post_start.py")]
            }
            Some(_) => vec!["sh".into(), format!("{SCRIPTS_DIR}/post_start.sh")],
            None => post.command.clone(),
        };
        parts.post_start = Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(command),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(pre) = &lifecycle.pre_start {
        parts.volumes.push(Volume {
            name: "berth-pre-start".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        parts.mounts.push(VolumeMount {
            name: "berth-pre-start".into(),
            mount_path: PRE_START_DIR.into(),
            ..Default::default()
        });
        let start = pre
            .container
            .as_ref()
            .map(|c| c.command.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_COMMAND.to_string()]);
        let mut command = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!(". {PRE_START_DIR}/custom.env && exec \"$@\""),
            "berth-pre-start".to_string(),
        ];
        command.extend(start);
        parts.command = Some(command);
        parts.pre_start = Some(vec!["python3".into(), "-c".into(), PRE_START_RUNNER.into()]);
    }
    parts
}

/// The init container that runs the pre-start script: the workspace container's image,
/// environment and volumes, with the runner as its command.
pub fn pre_start_container(workspace: &Container, command: Vec<String>) -> Container {
    Container {
        name: "pre-start".into(),
        command: Some(command),
        args: None,
        ports: None,
        lifecycle: None,
        ..workspace.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_follows_the_idle_timeout() {
        assert_eq!(sample_interval(60), Duration::from_secs(10));
        assert_eq!(sample_interval(1800), Duration::from_secs(300));
        assert_eq!(sample_interval(600), Duration::from_secs(100));
        assert_eq!(heartbeat_deadline(60), Duration::from_secs(30));
    }
}
