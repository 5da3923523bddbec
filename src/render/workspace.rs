//! The objects one workspace becomes.

use super::meta::{labels_of, managed_labels, meta_of, pod_account, selector_labels};
use super::*;
use crate::model::{ClaimsOnDelete, Quantity as ModelQuantity, Resources, RestartPolicy};
use crate::resolve::{KUBE_NAMESPACE_VAR, ResolvedProject, ResolvedWorkspace, VarValue, env_hash};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EnvFromSource, EnvVar, EnvVarSource, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
    Toleration, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The user and group workspace containers run as unless `kubernetes.runAsUser` says.
pub const DEFAULT_USER: i64 = 1000;

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    // Serializing k8s-openapi types to JSON cannot fail: they hold only strings, numbers
    // and maps with string keys.
    serde_json::to_value(object).unwrap_or(Value::Null)
}

pub fn namespace(project: &ResolvedProject) -> Value {
    let mut labels = project.labels.clone();
    labels.extend(managed_labels());
    labels.insert(PROJECT_LABEL.into(), project.name.clone());
    // Pod Security Admission: the project's level enforced, `restricted` always reported.
    let psa = "pod-security.kubernetes.io";
    labels.insert(
        format!("{psa}/enforce"),
        project.spec.pod_security.as_str().into(),
    );
    labels.insert(format!("{psa}/warn"), "restricted".into());
    labels.insert(format!("{psa}/audit"), "restricted".into());
    let annotations = project
        .spec
        .prune_namespace
        .then(|| BTreeMap::from([(PRUNE_NAMESPACE.to_string(), PRUNE_WHEN_EMPTY.to_string())]));
    to_value(&Namespace {
        metadata: ObjectMeta {
            name: Some(project.namespace.clone()),
            labels: Some(labels),
            annotations,
            ..Default::default()
        },
        ..Default::default()
    })
}

pub fn env_config_map_name(workspace: &str) -> String {
    format!("{workspace}-env")
}

pub fn render(ws: &ResolvedWorkspace, ctx: &RenderContext) -> Vec<Value> {
    let versions: BTreeMap<String, String> = ws
        .env
        .iter()
        .filter_map(|v| match &v.value {
            VarValue::Secret(s) => ctx
                .secret_versions
                .get(&format!("{}/{}", ws.namespace, s.name))
                .map(|version| (s.name.clone(), version.clone())),
            VarValue::Literal(_) => None,
        })
        .collect();
    let hash = env_hash(&ws.env, &versions);
    let idle = ctx.idle.get(&format!("{}/{}", ws.namespace, ws.name));
    let mut sts = stateful_set(ws, &hash, idle.map(String::as_str));
    if let Some(annotations) = sts
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        let readable = ctx.read_secrets.contains(&ws.namespace);
        annotations.insert(
            ENV_RECORD.into(),
            Value::String(env_record(ws, &versions, readable)),
        );
    }
    let mut objects = vec![config_map(ws, &hash), service(ws), sts];
    objects.extend(super::lifecycle::scripts_config_map(ws));
    objects.extend(super::lifecycle::activity_lease(
        ws,
        idle.map(String::as_str),
    ));
    objects.extend(super::lifecycle::pod_account_object(ws));
    objects.extend(super::lifecycle::activity_rbac(ws));
    objects.extend(super::executor::rbac(ws));
    let scope = super::rbac::Scope {
        workspace: Some(&ws.name),
        prefix: ws.name.clone(),
    };
    let rbac_labels = super::rbac::labels(&ws.project, Some(&ws.name));
    objects.extend(super::rbac::render(
        &ws.spec.roles,
        &scope,
        &ws.namespace,
        &rbac_labels,
    ));
    objects
}

/// The [`ENV_RECORD`] of a workspace: variable → `[source, digest]`. Values are digested,
/// never written: a Secret's value is never known, and a literal one is in the ConfigMap.
/// A Secret's digest ends in its resourceVersion, `-` when it does not exist, and nothing
/// when berth could not read the namespace's Secrets (unknown).
fn env_record(
    ws: &ResolvedWorkspace,
    versions: &BTreeMap<String, String>,
    readable: bool,
) -> String {
    use sha2::{Digest, Sha256};
    let short = |text: &str| -> String {
        Sha256::digest(text.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let record: serde_json::Map<String, Value> = ws
        .env
        .iter()
        .map(|var| {
            let (source, digest) = match &var.value {
                VarValue::Literal(value) => (var.source.to_string(), format!("v:{}", short(value))),
                VarValue::Secret(s) => (
                    format!("{} (secret {}/{})", var.source, s.name, s.key),
                    format!(
                        "s:{}:{}",
                        short(&format!("{}\0{}", s.name, s.key)),
                        versions
                            .get(&s.name)
                            .map(String::as_str)
                            .unwrap_or(if readable { "-" } else { "" })
                    ),
                ),
            };
            (var.name.clone(), serde_json::json!([source, digest]))
        })
        .collect();
    serde_json::to_string(&record).unwrap_or_default()
}

fn config_map(ws: &ResolvedWorkspace, hash: &str) -> Value {
    let mut data = BTreeMap::new();
    let mut sources = serde_json::Map::new();
    for var in &ws.env {
        let source = match &var.value {
            VarValue::Literal(value) => {
                if var.name != KUBE_NAMESPACE_VAR {
                    data.insert(var.name.clone(), value.clone());
                }
                var.source.to_string()
            }
            VarValue::Secret(s) => format!("{} (secret {}/{})", var.source, s.name, s.key),
        };
        sources.insert(var.name.clone(), Value::String(source));
    }
    let mut metadata = meta_of(ws, env_config_map_name(&ws.name));
    let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(ENV_HASH.into(), hash.to_string());
    annotations.insert(
        ENV_SOURCES.into(),
        serde_json::to_string(&sources).unwrap_or_default(),
    );
    to_value(&ConfigMap {
        metadata,
        data: Some(data),
        ..Default::default()
    })
}

/// The workspace's headless Service: the StatefulSet's governing Service, so its pod is
/// `<ws>-0.<ws>.<namespace>.svc`, and `<ws>.<namespace>.svc` resolves to the pod. No
/// virtual IP: at thousands of workspaces one each would fill common Service ranges
/// (GKE's default is 4,096 addresses), and kube-apiserver's IP allocator scans every
/// allocated address for each new one.
fn service(ws: &ResolvedWorkspace) -> Value {
    to_value(&Service {
        metadata: meta_of(ws, ws.name.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(ws)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: MAGE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn quantities(map: &BTreeMap<String, ModelQuantity>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.as_string())))
            .collect()
    })
}

fn resources(resources: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: quantities(&resources.requests),
        limits: quantities(&resources.limits),
        ..Default::default()
    }
}

/// A variable's value taken from a key of a Secret.
fn secret_source(secret: &crate::model::SecretKeyRef) -> EnvVarSource {
    EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: secret.name.clone(),
            key: secret.key.clone(),
            optional: None,
        }),
        ..Default::default()
    }
}

/// The pod of a workspace as its StatefulSet's controller makes it, which is what Mage's
/// executor reads as its server pod (`JobManager.pod_config`): the template's spec, with
/// each claim template's volume (`<claim>-<workspace>-0`) before the template's volumes.
pub fn server_pod(ws: &ResolvedWorkspace) -> Value {
    let sts = stateful_set(ws, "", None);
    let mut spec = sts
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    let claims: Vec<Value> = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .map(|claim| {
            serde_json::json!({"name": claim, "persistentVolumeClaim": {"claimName": format!("{claim}-{}-0", ws.name)}})
        })
        .collect();
    if let Some(map) = spec.as_object_mut() {
        let mut volumes = claims;
        volumes.extend(
            map.get("volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .cloned(),
        );
        map.insert("volumes".into(), Value::Array(volumes));
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{}-0", ws.name), "namespace": ws.namespace},
        "spec": spec,
    })
}

/// A workspace's StatefulSet: its container, its pod and its one data claim, each built
/// by a function of its own below.
fn stateful_set(ws: &ResolvedWorkspace, hash: &str, idle_since: Option<&str>) -> Value {
    let spec = &ws.spec;
    let parts = super::lifecycle::pod_parts(ws);
    let (mounts, volumes) = workspace_mounts(ws, &parts);
    let container = workspace_container(ws, &parts, mounts);
    let mut template_labels = labels_of(ws);
    template_labels.extend(selector_labels(ws));
    to_value(&StatefulSet {
        metadata: stateful_set_meta(ws, idle_since),
        spec: Some(StatefulSetSpec {
            replicas: Some(if spec.suspended || idle_since.is_some() {
                0
            } else {
                1
            }),
            service_name: Some(ws.name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(ws)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([(ENV_HASH.to_string(), hash.to_string())])),
                    ..Default::default()
                }),
                spec: Some(workspace_pod(ws, &parts, container, volumes)),
            },
            // Unset means Kubernetes' default, Retain: deleting the StatefulSet keeps the
            // claims. Only an explicit `storage.onDelete: delete` deletes them with it.
            persistent_volume_claim_retention_policy: (spec.storage.on_delete
                == ClaimsOnDelete::Delete)
                .then(|| StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                }),
            volume_claim_templates: Some(vec![data_claim(ws)]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The workspace container's mounts and the pod's volumes: the data claim first, then
/// the declared ones, the lifecycle scripts' and the executor defaults'.
fn workspace_mounts(
    ws: &ResolvedWorkspace,
    parts: &super::lifecycle::PodParts,
) -> (Vec<VolumeMount>, Vec<Volume>) {
    let spec = &ws.spec;
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: spec.storage.mount_path.clone(),
        ..Default::default()
    }];
    mounts.extend(spec.kubernetes.volume_mounts.iter().map(|m| VolumeMount {
        name: m.name.clone(),
        mount_path: m.mount_path.clone(),
        read_only: m.read_only.then_some(true),
        ..Default::default()
    }));
    mounts.extend(parts.mounts.iter().cloned());
    let mut volumes = spec.kubernetes.volumes.clone();
    volumes.extend(parts.volumes.iter().cloned());
    if ws.executor_defaults {
        volumes.push(Volume {
            name: "k8s-executor-defaults".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: super::executor::DEFAULTS_CONFIG_MAP.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "k8s-executor-defaults".into(),
            mount_path: crate::resolve::EXECUTOR_DEFAULTS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    (mounts, volumes)
}

/// The Mage server container, with the declared pre-start overrides applied.
fn workspace_container(
    ws: &ResolvedWorkspace,
    parts: &super::lifecycle::PodParts,
    mounts: Vec<VolumeMount>,
) -> Container {
    let spec = &ws.spec;
    // KUBE_NAMESPACE in the container's own env, as Mage's workspace manager sets it: Mage's
    // executor reads the Mage server container's `env` list, and fails on a container
    // without one. Secrets by reference; the other literals come from the ConfigMap.
    let mut env: Vec<EnvVar> = ws
        .env
        .iter()
        .filter_map(|v| match &v.value {
            VarValue::Secret(s) => Some(EnvVar {
                name: v.name.clone(),
                value_from: Some(secret_source(s)),
                ..Default::default()
            }),
            VarValue::Literal(value) if v.name == KUBE_NAMESPACE_VAR => Some(EnvVar {
                name: v.name.clone(),
                value: Some(value.clone()),
                ..Default::default()
            }),
            VarValue::Literal(_) => None,
        })
        .collect();
    let overrides = spec
        .lifecycle
        .pre_start
        .as_ref()
        .and_then(|p| p.container.clone())
        .unwrap_or_default();
    env.extend(overrides.env.iter().map(|v| EnvVar {
        name: v.name.clone(),
        value: v.value.clone(),
        value_from: v.secret_ref.as_ref().map(secret_source),
    }));
    Container {
        name: "workspace".into(),
        image: Some(overrides.image.clone().unwrap_or_else(|| ws.image.clone())),
        command: parts.command.clone(),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: MAGE_PORT,
            ..Default::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: env_config_map_name(&ws.name),
                optional: None,
            }),
            ..Default::default()
        }]),
        env: (!env.is_empty()).then_some(env),
        resources: overrides
            .resources
            .as_ref()
            .or(spec.resources.as_ref())
            .map(resources),
        volume_mounts: Some(mounts),
        lifecycle: parts.post_start.clone(),
        // Mage writes to its home and /tmp, so the root filesystem stays writable here;
        // everything else of "restricted" holds.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The workspace's pod: its container, the pre-start init container, Mage's executor
/// token and the activity agent when the workspace has them, and the scheduling fields.
fn workspace_pod(
    ws: &ResolvedWorkspace,
    parts: &super::lifecycle::PodParts,
    container: Container,
    mut volumes: Vec<Volume>,
) -> PodSpec {
    let kube = &ws.spec.kubernetes;
    let init = parts
        .pre_start
        .clone()
        .map(|command| vec![super::lifecycle::pre_start_container(&container, command)]);
    let tolerations: Vec<Toleration> = kube
        .tolerations
        .iter()
        .filter_map(|t| serde_json::to_value(t).ok())
        .filter_map(|t| serde_json::from_value(t).ok())
        .collect();
    let user = kube.run_as_user.unwrap_or(DEFAULT_USER);
    let mut containers = vec![container];
    let mut service_account_name = kube.service_account_name.clone();
    // Mage's executor talks to the API server as the pod's account, from the Mage
    // container: it gets a token of its own (the pod mounts none by default).
    if !ws.executor_namespaces.is_empty() {
        let token = super::lifecycle::token_volume("berth-mage-token");
        if let Some(mounts) = containers[0].volume_mounts.as_mut() {
            mounts.push(VolumeMount {
                name: "berth-mage-token".into(),
                mount_path: super::lifecycle::TOKEN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        volumes.push(token);
        service_account_name = Some(pod_account(ws));
    }
    let agent = super::lifecycle::activity_agent(ws);
    if let Some((agent, token, account)) = &agent {
        containers.push(agent.clone());
        volumes.push(token.clone());
        service_account_name = Some(account.clone());
    }
    PodSpec {
        // Pod Security "restricted": never root, the runtime's seccomp profile.
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(user),
            run_as_group: Some(user),
            fs_group: Some(user),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // Kubernetes credentials only for a workspace given an identity.
        automount_service_account_token: Some(kube.service_account_name.is_some()),
        containers,
        // The agent sees the workspace's processes (their CPU) only so.
        share_process_namespace: agent.is_some().then_some(true),
        node_selector: (!kube.node_selector.is_empty()).then(|| kube.node_selector.clone()),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        affinity: kube.affinity.clone(),
        service_account_name,
        volumes: (!volumes.is_empty()).then_some(volumes),
        init_containers: init,
        ..Default::default()
    }
}

/// The StatefulSet's metadata: where it came from and the lifecycle state berth reads
/// back from the cluster (idle timeout, idle since, restart policy).
fn stateful_set_meta(ws: &ResolvedWorkspace, idle_since: Option<&str>) -> ObjectMeta {
    let spec = &ws.spec;
    let mut metadata = meta_of(ws, ws.name.clone());
    let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert("berth/source".into(), ws.file.clone());
    if let Some(t) = &spec.lifecycle.termination {
        annotations.insert(IDLE_SECONDS.into(), t.idle_seconds.to_string());
    }
    if let Some(since) = idle_since {
        annotations.insert(IDLE_SINCE.into(), since.to_string());
    }
    if spec.lifecycle.restart != RestartPolicy::Immediate {
        let policy = serde_json::to_value(spec.lifecycle.restart).unwrap_or_default();
        annotations.insert(
            "berth/restart".into(),
            policy.as_str().unwrap_or_default().to_string(),
        );
    }
    metadata
}

/// The one claim template: the workspace's data, `storage.size` on `storage.storageClassName`.
fn data_claim(ws: &ResolvedWorkspace) -> PersistentVolumeClaim {
    let storage = &ws.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.as_string()),
                )])),
                ..Default::default()
            }),
            storage_class_name: storage.storage_class_name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
