//! Mage's Kubernetes executor: from the configuration a k8s block runs with to the Job
//! Mage creates, step by step as mage-ai's code does it.
//!
//! | step | Mage's code |
//! |---|---|
//! | block over project, top-level keys replaced whole | `K8sBlockExecutor.__init__`, `shared/hash.py::merge_dict` |
//! | config over the K8S_CONFIG_FILE template, the same way | `shared/config.py::BaseConfig.load` |
//! | pod, container and job parts; `metadata` resets the namespace | `services/k8s/config.py::K8sExecutorConfig.load` |
//! | Job name and namespace | `K8sBlockExecutor._execute`, `_get_job_name_prefix`, `shared/utils.py::clean_name` |
//! | the Mage server pod's env, mounts, volumes, scheduling | `services/k8s/job_manager.py::JobManager.create_job_object`, `merge_pod_spec`, `merge_container_spec`, `filter_used_volumes`, `merge_containers` |
//!
//! Where Mage's code raises, these functions return a [`Crash`] naming the setting and the
//! Python error, so that berth refuses the input at validate instead of predicting a Job
//! Mage never creates.

use super::truthy;
use serde_json::{Map, Value, json};

/// A Python dict as Mage holds it.
pub type Dict = Map<String, Value>;

/// Where Mage's code raises on a configuration, and the Python error it raises.
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    /// JSON pointer of the setting in the configuration Mage loads (`/pod/tolerations/0`).
    pub pointer: String,
    /// `TypeError: …` as Python would say it.
    pub error: String,
}

impl Crash {
    fn new(pointer: impl Into<String>, error: impl Into<String>) -> Crash {
        Crash {
            pointer: pointer.into(),
            error: error.into(),
        }
    }
}

/// `merge_dict(a, b)`: a copy of `a` updated with `b`, top-level keys only.
pub fn merge_dict(a: &Dict, b: &Dict) -> Dict {
    let mut merged = a.clone();
    merged.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

/// A model class of the Kubernetes Python client: `Model(**item)` takes exactly these
/// keyword arguments (snake_case), refuses `None` for the required ones, and serialises
/// each attribute under its API name. Values inside are sent as written: the client does
/// not convert nested dicts, so their keys must already be the API's camelCase.
#[derive(Debug)]
pub struct Model {
    pub class: &'static str,
    /// (Python attribute, API name).
    pub attributes: &'static [(&'static str, &'static str)],
    pub required: &'static [&'static str],
}

pub const V1_TOLERATION: Model = Model {
    class: "V1Toleration",
    attributes: &[
        ("effect", "effect"),
        ("key", "key"),
        ("operator", "operator"),
        ("toleration_seconds", "tolerationSeconds"),
        ("value", "value"),
    ],
    required: &[],
};

pub const V1_VOLUME: Model = Model {
    class: "V1Volume",
    attributes: &[
        ("aws_elastic_block_store", "awsElasticBlockStore"),
        ("azure_disk", "azureDisk"),
        ("azure_file", "azureFile"),
        ("cephfs", "cephfs"),
        ("cinder", "cinder"),
        ("config_map", "configMap"),
        ("csi", "csi"),
        ("downward_api", "downwardAPI"),
        ("empty_dir", "emptyDir"),
        ("ephemeral", "ephemeral"),
        ("fc", "fc"),
        ("flex_volume", "flexVolume"),
        ("flocker", "flocker"),
        ("gce_persistent_disk", "gcePersistentDisk"),
        ("git_repo", "gitRepo"),
        ("glusterfs", "glusterfs"),
        ("host_path", "hostPath"),
        ("image", "image"),
        ("iscsi", "iscsi"),
        ("name", "name"),
        ("nfs", "nfs"),
        ("persistent_volume_claim", "persistentVolumeClaim"),
        ("photon_persistent_disk", "photonPersistentDisk"),
        ("portworx_volume", "portworxVolume"),
        ("projected", "projected"),
        ("quobyte", "quobyte"),
        ("rbd", "rbd"),
        ("scale_io", "scaleIO"),
        ("secret", "secret"),
        ("storageos", "storageos"),
        ("vsphere_volume", "vsphereVolume"),
    ],
    required: &["name"],
};

pub const V1_VOLUME_MOUNT: Model = Model {
    class: "V1VolumeMount",
    attributes: &[
        ("mount_path", "mountPath"),
        ("mount_propagation", "mountPropagation"),
        ("name", "name"),
        ("read_only", "readOnly"),
        ("recursive_read_only", "recursiveReadOnly"),
        ("sub_path", "subPath"),
        ("sub_path_expr", "subPathExpr"),
    ],
    required: &["mount_path", "name"],
};

pub const V1_ENV_VAR: Model = Model {
    class: "V1EnvVar",
    attributes: &[
        ("name", "name"),
        ("value", "value"),
        ("value_from", "valueFrom"),
    ],
    required: &["name"],
};

pub const V1_RESOURCE_REQUIREMENTS: Model = Model {
    class: "V1ResourceRequirements",
    attributes: &[
        ("claims", "claims"),
        ("limits", "limits"),
        ("requests", "requests"),
    ],
    required: &[],
};

pub const V1_OBJECT_META: Model = Model {
    class: "V1ObjectMeta",
    attributes: &[
        ("annotations", "annotations"),
        ("creation_timestamp", "creationTimestamp"),
        (
            "deletion_grace_period_seconds",
            "deletionGracePeriodSeconds",
        ),
        ("deletion_timestamp", "deletionTimestamp"),
        ("finalizers", "finalizers"),
        ("generate_name", "generateName"),
        ("generation", "generation"),
        ("labels", "labels"),
        ("managed_fields", "managedFields"),
        ("name", "name"),
        ("namespace", "namespace"),
        ("owner_references", "ownerReferences"),
        ("resource_version", "resourceVersion"),
        ("self_link", "selfLink"),
        ("uid", "uid"),
    ],
    required: &[],
};

pub const V1_CONTAINER: Model = Model {
    class: "V1Container",
    attributes: &[
        ("args", "args"),
        ("command", "command"),
        ("env", "env"),
        ("env_from", "envFrom"),
        ("image", "image"),
        ("image_pull_policy", "imagePullPolicy"),
        ("lifecycle", "lifecycle"),
        ("liveness_probe", "livenessProbe"),
        ("name", "name"),
        ("ports", "ports"),
        ("readiness_probe", "readinessProbe"),
        ("resize_policy", "resizePolicy"),
        ("resources", "resources"),
        ("restart_policy", "restartPolicy"),
        ("restart_policy_rules", "restartPolicyRules"),
        ("security_context", "securityContext"),
        ("startup_probe", "startupProbe"),
        ("stdin", "stdin"),
        ("stdin_once", "stdinOnce"),
        ("termination_message_path", "terminationMessagePath"),
        ("termination_message_policy", "terminationMessagePolicy"),
        ("tty", "tty"),
        ("volume_devices", "volumeDevices"),
        ("volume_mounts", "volumeMounts"),
        ("working_dir", "workingDir"),
    ],
    required: &["name"],
};

/// The fields of the `K8sExecutorConfig` dataclass: `K8sExecutorConfig(**config)` takes
/// exactly these keys and raises TypeError on any other.
pub const EXECUTOR_CONFIG_FIELDS: &[&str] = &[
    "container_config",
    "job_name_prefix",
    "namespace",
    "resource_limits",
    "resource_requests",
    "service_account_name",
    "config_file",
    "metadata",
    "container",
    "pod",
    "job",
    "pod_config",
    "job_config",
    "meta",
];

/// `Model(**item)`, serialised as the client sends it (attributes that are `None` left out).
pub fn construct(model: &Model, item: &Value, pointer: &str) -> Result<Dict, Crash> {
    let Some(map) = item.as_object() else {
        return Err(Crash::new(
            pointer,
            format!(
                "TypeError: {}() argument after ** must be a mapping, not {}",
                model.class,
                python_type(item)
            ),
        ));
    };
    let mut out = Dict::new();
    for (key, value) in map {
        let Some((_, api)) = model.attributes.iter().find(|(attr, _)| attr == key) else {
            return Err(Crash::new(
                format!("{pointer}/{}", crate::load::yaml::escape_segment(key)),
                format!(
                    "TypeError: {}.__init__() got an unexpected keyword argument '{key}'",
                    model.class
                ),
            ));
        };
        if !value.is_null() {
            out.insert((*api).to_string(), value.clone());
        }
    }
    for required in model.required {
        if map.get(*required).is_none_or(Value::is_null) {
            return Err(Crash::new(
                pointer,
                format!("ValueError: Invalid value for `{required}`, must not be `None`"),
            ));
        }
    }
    Ok(out)
}

fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `x.get(key)` on a value Mage expects to be a dict.
fn get<'a>(dict: &'a Value, key: &str, pointer: &str) -> Result<Option<&'a Value>, Crash> {
    match dict {
        Value::Object(map) => Ok(map.get(key).filter(|v| !v.is_null())),
        other => Err(Crash::new(
            pointer,
            format!(
                "AttributeError: '{}' object has no attribute 'get'",
                python_type(other)
            ),
        )),
    }
}

/// Iterate a value Mage expects to be a list (`for e in x`).
fn items<'a>(value: &'a Value, pointer: &str) -> Result<Vec<(String, &'a Value)>, Crash> {
    match value {
        Value::Array(list) => Ok(list
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{pointer}/{i}"), v))
            .collect()),
        other => Err(Crash::new(
            pointer,
            format!(
                "TypeError: Mage iterates this as a list, not a {}",
                python_type(other)
            ),
        )),
    }
}

/// The settings Mage reads from its server's environment at import time
/// (`services/k8s/constants.py`, `settings/server.py`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerEnv {
    /// KUBE_NAMESPACE: the namespace of Mage's server pod, and the Jobs' default.
    pub kube_namespace: Option<String>,
    /// MAGE_CONTAINER_NAME: the container of the server pod whose env, mounts and image
    /// the Job inherits (else the first container).
    pub container_name: Option<String>,
    /// MAGE_CLUSTER_UUID: the first part of every Job name (default `mage`).
    pub cluster_uuid: Option<String>,
}

impl ServerEnv {
    /// `DEFAULT_NAMESPACE = os.getenv('KUBE_NAMESPACE', 'default')`.
    pub fn default_namespace(&self) -> &str {
        self.kube_namespace.as_deref().unwrap_or("default")
    }

    /// `MAGE_CLUSTER_UUID = os.getenv('MAGE_CLUSTER_UUID') or 'mage'`.
    pub fn cluster_uuid(&self) -> &str {
        self.cluster_uuid
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("mage")
    }
}

/// What `K8sExecutorConfig.load` made of a configuration: the fields `create_job_object`
/// and `_execute` read afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// `executor_config.namespace`, after `metadata` reset it.
    pub namespace: Option<Value>,
    pub job_name_prefix: Option<Value>,
    pub resource_limits: Option<Value>,
    pub resource_requests: Option<Value>,
    pub container_config: Option<Value>,
    /// `V1ObjectMeta(**metadata)`: the Job's and its pod template's metadata.
    pub meta: Option<Dict>,
    /// The Job's container before the server's parts are merged in.
    pub container: Dict,
    pub pod: PodParts,
    pub active_deadline_seconds: Option<Value>,
    pub backoff_limit: Option<Value>,
    pub ttl_seconds_after_finished: Option<Value>,
}

/// The pod parts of `K8sExecutorConfig.load`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodParts {
    pub affinity: Option<Value>,
    /// One `V1LocalObjectReference`, not a list, as Mage builds it.
    pub image_pull_secrets: Option<Value>,
    pub node_selector: Option<Value>,
    pub scheduler_name: Option<Value>,
    /// `None`: no layer named one, and the Job gets Mage's hardcoded `default`.
    pub service_account_name: Option<Value>,
    pub tolerations: Vec<Value>,
    pub volumes: Vec<Value>,
}

/// `BaseConfig.load` and `K8sExecutorConfig.load` on the configuration a block runs with
/// (`config`, after project, block and Mage Pro's layers) and the K8S_CONFIG_FILE
/// template (`None`: no template). `kube_namespace` is KUBE_NAMESPACE.
///
/// Kept in one piece: it follows the two Python `load`s in their order, so it reads
/// beside Mage's code.
pub fn load(config: &Dict, template: Option<&Dict>, env: &ServerEnv) -> Result<Loaded, Crash> {
    // `if config_class_key in config: config = config[config_class_key]`.
    let config = match config.get("k8s_executor_config") {
        Some(Value::Object(inner)) => inner.clone(),
        Some(other) => {
            return Err(Crash::new(
                "/k8s_executor_config",
                format!(
                    "TypeError: Mage merges this as a dict, not a {}",
                    python_type(other)
                ),
            ));
        }
        None => config.clone(),
    };
    let config = merge_dict(template.unwrap_or(&Dict::new()), &config);
    for key in config.keys() {
        if !EXECUTOR_CONFIG_FIELDS.contains(&key.as_str()) {
            return Err(Crash::new(
                format!("/{}", crate::load::yaml::escape_segment(key)),
                format!(
                    "TypeError: K8sExecutorConfig.__init__() got an unexpected keyword argument '{key}'"
                ),
            ));
        }
    }
    let field = |key: &str| config.get(key).filter(|v| !v.is_null()).cloned();

    let mut pod = PodParts::default();
    let pod_config = field("pod");
    if truthy(pod_config.as_ref()) {
        let pod_value = pod_config.unwrap_or_default();
        let p = |key: &str| get(&pod_value, key, "/pod");
        pod.service_account_name = p("service_account_name")?
            .filter(|v| truthy(Some(v)))
            .cloned();
        if let Some(affinity) = p("affinity")?
            && truthy(Some(affinity))
        {
            pod.affinity = Some(parse_affinity(affinity, "/pod/affinity")?);
        }
        if let Some(selector) = p("node_selector")?.filter(|v| truthy(Some(v))) {
            pod.node_selector = Some(selector.clone());
        }
        if let Some(scheduler) = p("scheduler_name")?.filter(|v| truthy(Some(v))) {
            pod.scheduler_name = Some(scheduler.clone());
        }
        if let Some(list) = p("tolerations")?.filter(|v| truthy(Some(v))) {
            for (at, item) in items(list, "/pod/tolerations")? {
                pod.tolerations
                    .push(Value::Object(construct(&V1_TOLERATION, item, &at)?));
            }
        }
        if let Some(list) = p("volumes")?.filter(|v| truthy(Some(v))) {
            for (at, item) in items(list, "/pod/volumes")? {
                pod.volumes
                    .push(Value::Object(construct(&V1_VOLUME, item, &at)?));
            }
        }
        if let Some(secret) = p("image_pull_secrets")?.filter(|v| truthy(Some(v))) {
            pod.image_pull_secrets = Some(json!({"name": secret}));
        }
    }
    // "to keep backward compatibility": the top-level spelling wins over the pod's.
    if let Some(account) = field("service_account_name").filter(|v| truthy(Some(v))) {
        pod.service_account_name = Some(account);
    }

    let mut namespace = field("namespace");
    let mut meta = None;
    if let Some(metadata) = field("metadata").filter(|v| truthy(Some(v))) {
        meta = Some(construct(&V1_OBJECT_META, &metadata, "/metadata")?);
        let written = get(&metadata, "namespace", "/metadata")?;
        namespace = Some(if truthy(written) {
            written.cloned().unwrap_or_default()
        } else {
            json!(env.default_namespace())
        });
    }

    let mut env_list = Vec::new();
    let mut mounts = Vec::new();
    let mut resources = Dict::new();
    let container_value = field("container");
    let container_set = truthy(container_value.as_ref());
    if container_set {
        let c = container_value.clone().unwrap_or_default();
        if let Some(res) = get(&c, "resources", "/container")?
            && truthy(Some(res))
            && res.is_object()
        {
            resources = construct(&V1_RESOURCE_REQUIREMENTS, res, "/container/resources")?;
        }
        if let Some(list) = get(&c, "env", "/container")?.filter(|v| truthy(Some(v))) {
            for (at, item) in items(list, "/container/env")? {
                env_list.push(Value::Object(construct(&V1_ENV_VAR, item, &at)?));
            }
        }
        if let Some(list) = get(&c, "volume_mounts", "/container")?.filter(|v| truthy(Some(v))) {
            for (at, item) in items(list, "/container/volume_mounts")? {
                mounts.push(Value::Object(construct(&V1_VOLUME_MOUNT, item, &at)?));
            }
        }
    }
    // `get_safe_value(container, key, default)`: a key written as null stays None.
    let safe = |key: &str, default: &str| -> Value {
        match container_value.as_ref().and_then(Value::as_object) {
            Some(map) if container_set => map.get(key).cloned().unwrap_or(json!(default)),
            _ => json!(default),
        }
    };
    let mut container = Dict::new();
    let name = safe("name", "mage-job-container");
    if name.is_null() {
        return Err(Crash::new(
            "/container/name",
            "ValueError: Invalid value for `name`, must not be `None`",
        ));
    }
    container.insert("name".into(), name);
    for (key, api, default) in [
        ("image_pull_policy", "imagePullPolicy", "IfNotPresent"),
        ("image", "image", ""),
    ] {
        let value = safe(key, default);
        if !value.is_null() {
            container.insert(api.into(), value);
        }
    }
    container.insert("env".into(), Value::Array(env_list));
    container.insert("volumeMounts".into(), Value::Array(mounts));
    container.insert("resources".into(), Value::Object(resources));

    let (mut deadline, mut backoff, mut ttl) = (None, Some(json!(0)), None);
    if let Some(job) = field("job").filter(|v| truthy(Some(v))) {
        deadline = get(&job, "active_deadline_seconds", "/job")?.cloned();
        backoff = get(&job, "backoff_limit", "/job")?.cloned();
        ttl = get(&job, "ttl_seconds_after_finished", "/job")?.cloned();
    }
    Ok(Loaded {
        namespace,
        job_name_prefix: field("job_name_prefix"),
        resource_limits: field("resource_limits"),
        resource_requests: field("resource_requests"),
        container_config: field("container_config"),
        meta,
        container,
        pod,
        active_deadline_seconds: deadline,
        backoff_limit: backoff,
        ttl_seconds_after_finished: ttl,
    })
}

/// `services/k8s/utils.py::parse_affinity_config`: node affinity keeps only the required
/// terms' `matchExpressions`; pod (anti-)affinity terms, required or preferred, are all
/// built as weighted terms (`weight`, `podAffinityTerm`) with only a label selector and
/// a topology key.
fn parse_affinity(config: &Value, pointer: &str) -> Result<Value, Crash> {
    let mut out = Dict::new();
    if let Some(node) = get(config, "nodeAffinity", pointer)?.filter(|v| truthy(Some(v))) {
        let at = format!("{pointer}/nodeAffinity");
        let required = match get(node, "requiredDuringSchedulingIgnoredDuringExecution", &at)? {
            Some(r) => get(
                r,
                "nodeSelectorTerms",
                &format!("{at}/requiredDuringSchedulingIgnoredDuringExecution"),
            )?
            .cloned()
            .unwrap_or(json!([])),
            None => json!([]),
        };
        let terms_at =
            format!("{at}/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms");
        let mut terms = Vec::new();
        for (term_at, term) in items(&required, &terms_at)? {
            let expressions = get(term, "matchExpressions", &term_at)?
                .cloned()
                .unwrap_or(json!([]));
            let mut built = Vec::new();
            for (expr_at, expr) in items(&expressions, &format!("{term_at}/matchExpressions"))? {
                built.push(requirement(expr, &expr_at)?);
            }
            terms.push(json!({"matchExpressions": built}));
        }
        out.insert(
            "nodeAffinity".into(),
            json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}),
        );
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(section) = get(config, kind, pointer)?.filter(|v| truthy(Some(v))) else {
            continue;
        };
        let at = format!("{pointer}/{kind}");
        let mut built = Dict::new();
        for when in [
            "requiredDuringSchedulingIgnoredDuringExecution",
            "preferredDuringSchedulingIgnoredDuringExecution",
        ] {
            let Some(list) = get(section, when, &at)?.filter(|v| truthy(Some(v))) else {
                continue;
            };
            let mut terms = Vec::new();
            for (term_at, term) in items(list, &format!("{at}/{when}"))? {
                terms.push(weighted_term(term, &term_at)?);
            }
            built.insert(when.into(), Value::Array(terms));
        }
        out.insert(kind.into(), Value::Object(built));
    }
    Ok(Value::Object(out))
}

/// `V1NodeSelectorRequirement` / `V1LabelSelectorRequirement(key, operator, values)`.
fn requirement(expr: &Value, pointer: &str) -> Result<Value, Crash> {
    let mut out = Dict::new();
    for key in ["key", "operator"] {
        match get(expr, key, pointer)? {
            Some(v) => {
                out.insert(key.into(), v.clone());
            }
            None => {
                return Err(Crash::new(
                    pointer,
                    format!("ValueError: Invalid value for `{key}`, must not be `None`"),
                ));
            }
        }
    }
    if let Some(values) = get(expr, "values", pointer)? {
        out.insert("values".into(), values.clone());
    }
    Ok(Value::Object(out))
}

/// `parse_affinity_term_list`'s `V1WeightedPodAffinityTerm`.
fn weighted_term(term: &Value, pointer: &str) -> Result<Value, Crash> {
    let selector_at = format!("{pointer}/labelSelector");
    let selector = get(term, "labelSelector", pointer)?
        .cloned()
        .unwrap_or(json!({}));
    let labels = get(&selector, "matchLabels", &selector_at)?
        .cloned()
        .unwrap_or(json!({}));
    let expressions = get(&selector, "matchExpressions", &selector_at)?
        .cloned()
        .unwrap_or(json!([]));
    let mut built = Vec::new();
    for (at, expr) in items(&expressions, &format!("{selector_at}/matchExpressions"))? {
        built.push(requirement(expr, &at)?);
    }
    let Some(topology) = get(term, "topologyKey", pointer)?.cloned() else {
        return Err(Crash::new(
            pointer,
            "ValueError: Invalid value for `topology_key`, must not be `None`",
        ));
    };
    let Some(weight) = get(term, "weight", pointer)?.cloned() else {
        return Err(Crash::new(
            pointer,
            "ValueError: Invalid value for `weight`, must not be `None`",
        ));
    };
    let mut selector = Dict::new();
    selector.insert("matchExpressions".into(), Value::Array(built));
    selector.insert("matchLabels".into(), labels);
    Ok(json!({
        "podAffinityTerm": {"labelSelector": selector, "topologyKey": topology},
        "weight": weight,
    }))
}

/// What `{trigger_name}` in `job_name_prefix` stands for.
pub const TRIGGER_NAME: &str = "{trigger_name}";
/// `_get_job_name_prefix`'s default.
pub const DEFAULT_JOB_NAME_PREFIX: &str = "data-prep";

/// `shared/utils.py::clean_name` as `_get_job_name_prefix` calls it, then `_` to `-`:
/// a few characters dropped, every non-word character to `_`, `letter_` before a leading
/// digit, lower case.
pub fn clean_trigger_name(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| !matches!(c, '\u{feff}' | '"' | '$' | '\n' | '\r' | '\t'))
        .collect();
    let mut cleaned: String = kept
        .chars()
        .map(|c| if is_python_word(c) { c } else { '_' })
        .collect();
    if cleaned.chars().next().is_some_and(is_python_digit) {
        cleaned = format!("letter_{cleaned}");
    }
    cleaned.to_lowercase().replace('_', "-")
}

/// Python's `\w` on text: letters, digits (any script) and `_`.
fn is_python_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Python's `\d`: decimal digits of any script (Unicode category Nd).
fn is_python_digit(c: char) -> bool {
    static DIGIT: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^\d$").ok());
    let mut buf = [0u8; 4];
    DIGIT
        .as_ref()
        .is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
}

/// `_get_job_name_prefix`: the prefix (default `data-prep`), with `{trigger_name}`
/// replaced through Python's `str.format`, whose other `{…}` fields raise.
pub fn job_name_prefix(prefix: Option<&Value>, trigger: &str) -> Result<String, Crash> {
    let prefix = match prefix {
        Some(v) if truthy(Some(v)) => v,
        _ => return Ok(DEFAULT_JOB_NAME_PREFIX.into()),
    };
    let Some(text) = prefix.as_str() else {
        return Err(Crash::new(
            "/job_name_prefix",
            format!(
                "TypeError: argument of type '{}' is not iterable",
                python_type(prefix)
            ),
        ));
    };
    if !text.contains(TRIGGER_NAME) {
        return Ok(text.to_string());
    }
    python_format_trigger(text, &clean_trigger_name(trigger))
}

/// `text.format(trigger_name=value)`.
fn python_format_trigger(text: &str, value: &str) -> Result<String, Crash> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    field.push(c);
                }
                if !closed {
                    return Err(Crash::new(
                        "/job_name_prefix",
                        "ValueError: expected '}' before end of string",
                    ));
                }
                if field != "trigger_name" {
                    let error = if field.is_empty() || field.chars().all(|c| c.is_ascii_digit()) {
                        "IndexError: Replacement index 0 out of range for positional args tuple"
                            .to_string()
                    } else {
                        format!("KeyError: '{field}'")
                    };
                    return Err(Crash::new("/job_name_prefix", error));
                }
                out.push_str(value);
            }
            '}' => {
                return Err(Crash::new(
                    "/job_name_prefix",
                    "ValueError: Single '}' encountered in format string",
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `f'{MAGE_CLUSTER_UUID}-{job_name_prefix}-block-{block_run_id}'`.
pub fn job_name(env: &ServerEnv, prefix: &str, block_run_id: &str) -> String {
    format!("{}-{prefix}-block-{block_run_id}", env.cluster_uuid())
}

/// The namespace `_execute` creates the Job in.
#[derive(Debug, Clone, PartialEq)]
pub enum Namespace {
    Known(String),
    /// A Jinja template Mage renders at run time (variables, secrets): berth cannot know it.
    Templated(String),
}

/// `_execute`: the (Jinja-rendered) `namespace`, else KUBE_NAMESPACE, else `default`.
pub fn namespace(loaded: &Loaded, env: &ServerEnv) -> Result<Namespace, Crash> {
    match &loaded.namespace {
        Some(v) if truthy(Some(v)) => match v.as_str() {
            Some(text) if text.contains("{{") || text.contains("{%") || text.contains("{#") => {
                Ok(Namespace::Templated(text.to_string()))
            }
            // Jinja drops one trailing newline.
            Some(text) => Ok(Namespace::Known(
                text.strip_suffix('\n').unwrap_or(text).to_string(),
            )),
            None => Err(Crash::new(
                "/namespace",
                format!("TypeError: Jinja renders text, not a {}", python_type(v)),
            )),
        },
        _ => Ok(Namespace::Known(env.default_namespace().to_string())),
    }
}

/// `create_job_object`: the Job Mage sends, from the loaded configuration, the Mage server
/// pod (`read_namespaced_pod(HOSTNAME, KUBE_NAMESPACE)`, as JSON) and the block's command.
///
/// Kept in one piece: it follows `create_job_object` statement by statement, so it reads
/// beside Mage's code and a difference shows where it is.
pub fn job(
    loaded: &Loaded,
    server_pod: &Value,
    env: &ServerEnv,
    name: &str,
    command: &[String],
) -> Result<Value, Crash> {
    let server_spec = server_pod.get("spec").cloned().unwrap_or(json!({}));
    let server_containers = server_spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // `get_mage_server_container`: MAGE_CONTAINER_NAME if it names a container, else the
    // first one.
    let server = env
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .and_then(|n| {
            server_containers
                .iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(n))
        })
        .or(server_containers.first())
        .cloned()
        .unwrap_or(json!({}));

    // `merge_container_spec`.
    let mut container = loaded.container.clone();
    let own_env = list(&container, "env");
    let server_env = server.get("env").and_then(Value::as_array).ok_or_else(|| {
        Crash::new(
            "",
            "TypeError: 'NoneType' object is not iterable (the Mage server container has no `env`)",
        )
    })?;
    let mut merged_env = own_env.clone();
    merged_env.extend(
        server_env
            .iter()
            .filter(|item| !own_env.iter().any(|own| same_env_var(own, item)))
            .cloned(),
    );
    container.insert("env".into(), Value::Array(merged_env));
    let server_env_from = server
        .get("envFrom")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    container.insert("envFrom".into(), Value::Array(server_env_from));
    let own_mounts = list(&container, "volumeMounts");
    let server_mounts = server
        .get("volumeMounts")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Crash::new(
                "",
                "TypeError: 'NoneType' object is not iterable (the Mage server container has no `volumeMounts`)",
            )
        })?;
    let mut merged_mounts = own_mounts.clone();
    merged_mounts.extend(
        server_mounts
            .iter()
            .filter(|m| !own_mounts.iter().any(|own| same_model(own, m)))
            .cloned(),
    );
    container.insert("volumeMounts".into(), Value::Array(merged_mounts));
    if !truthy(container.get("image")) {
        match server.get("image") {
            Some(image) => container.insert("image".into(), image.clone()),
            None => container.remove("image"),
        };
    }
    container.insert("command".into(), json!(command));

    // `merge_pod_spec`.
    let pod = &loaded.pod;
    let mut volumes = pod.volumes.clone();
    let server_volumes = server_spec
        .get("volumes")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Crash::new(
                "",
                "TypeError: 'NoneType' object is not iterable (the Mage server pod has no `volumes`)",
            )
        })?;
    volumes.extend(server_volumes.iter().cloned());
    let tolerations = if pod.tolerations.is_empty() {
        server_spec.get("tolerations").cloned()
    } else {
        Some(Value::Array(pod.tolerations.clone()))
    };
    let from_server = |own: &Option<Value>, key: &str| -> Option<Value> {
        if truthy(own.as_ref()) {
            own.clone()
        } else {
            server_spec.get(key).cloned()
        }
    };
    let node_selector = from_server(&pod.node_selector, "nodeSelector");
    let scheduler_name = from_server(&pod.scheduler_name, "schedulerName");
    let pull_secrets = from_server(&pod.image_pull_secrets, "imagePullSecrets");
    // `filter_used_volumes`: only volumes the container mounts.
    let used: Vec<String> = list(&container, "volumeMounts")
        .iter()
        .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    volumes.retain(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| used.iter().any(|u| u == n))
    });

    let mut meta = loaded.meta.clone().unwrap_or_default();
    meta.insert("name".into(), json!(name));

    container.insert("resources".into(), container_resources(loaded));
    if let Some(config) = loaded.container_config.as_ref().filter(|c| truthy(Some(c))) {
        let mut config = config.clone();
        if let Some(map) = config.as_object_mut() {
            map.entry("name").or_insert(json!("mage-data"));
        }
        let left = construct(&V1_CONTAINER, &config, "/container_config")?;
        container = merge_containers(&left, &container);
    }

    let mut pod_spec = Dict::new();
    if let Some(affinity) = &pod.affinity {
        pod_spec.insert("affinity".into(), affinity.clone());
    }
    pod_spec.insert("containers".into(), json!([container]));
    for (key, value) in [
        ("imagePullSecrets", pull_secrets),
        ("nodeSelector", node_selector),
        ("schedulerName", scheduler_name),
    ] {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            pod_spec.insert(key.into(), value);
        }
    }
    pod_spec.insert("restartPolicy".into(), json!("Never"));
    pod_spec.insert(
        "serviceAccountName".into(),
        pod.service_account_name.clone().unwrap_or(json!("default")),
    );
    if let Some(tolerations) = tolerations.filter(|v| !v.is_null()) {
        pod_spec.insert("tolerations".into(), tolerations);
    }
    pod_spec.insert("volumes".into(), Value::Array(volumes));

    let mut spec = Dict::new();
    for (key, value) in [
        ("activeDeadlineSeconds", &loaded.active_deadline_seconds),
        ("backoffLimit", &loaded.backoff_limit),
    ] {
        if let Some(v) = value {
            spec.insert(key.into(), v.clone());
        }
    }
    spec.insert(
        "template".into(),
        json!({"metadata": meta, "spec": pod_spec}),
    );
    if let Some(v) = &loaded.ttl_seconds_after_finished {
        spec.insert("ttlSecondsAfterFinished".into(), v.clone());
    }
    Ok(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}))
}

/// The resources of the Job's container as `create_job_object` leaves them:
/// `container_config`'s (`merge_containers` keeps the left side's), else the top-level
/// `resource_limits` / `resource_requests` ("to keep backward compatibility", replacing
/// the container's whole), else `container.resources`.
pub fn container_resources(loaded: &Loaded) -> Value {
    if let Some(resources) = loaded
        .container_config
        .as_ref()
        .and_then(|c| c.get("resources"))
        .filter(|r| !r.is_null())
    {
        return resources.clone();
    }
    let (limits, requests) = (&loaded.resource_limits, &loaded.resource_requests);
    if truthy(limits.as_ref()) || truthy(requests.as_ref()) {
        let mut out = Dict::new();
        for (key, value) in [("limits", limits), ("requests", requests)] {
            if truthy(value.as_ref()) {
                out.insert(key.into(), value.clone().unwrap_or_default());
            }
        }
        return Value::Object(out);
    }
    loaded
        .container
        .get("resources")
        .cloned()
        .unwrap_or(json!({}))
}

fn list(container: &Dict, key: &str) -> Vec<Value> {
    container
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `V1EnvVar.__eq__` (their `to_dict()`s): a variable with a `valueFrom` built from a
/// dict as written never equals the server's, whose `valueFrom` is a model.
fn same_env_var(own: &Value, server: &Value) -> bool {
    own.get("valueFrom").is_none()
        && server.get("valueFrom").is_none()
        && own.get("name") == server.get("name")
        && own.get("value") == server.get("value")
}

/// Equality of two flat models of the client (`V1VolumeMount`): every attribute equal,
/// absent and `None` alike.
fn same_model(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Dict {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(a) == strip(b)
}

/// `job_manager.py::merge_containers(left, right)`: for each attribute of V1Container,
/// the left one if set — lists get the right one's items appended (a dict from Mage's
/// file never equals the right's model objects, so every item is appended) — else the
/// right one; `command` is never merged.
fn merge_containers(left: &Dict, right: &Dict) -> Dict {
    let mut merged = Dict::new();
    for (_, api) in V1_CONTAINER.attributes {
        let l = left.get(*api).filter(|v| !v.is_null());
        let r = right.get(*api).filter(|v| !v.is_null());
        let value = match (l, r) {
            (Some(l), _) if *api == "command" => Some(l.clone()),
            (None, r) if *api == "command" => r.cloned(),
            (Some(Value::Array(l)), Some(Value::Array(r))) => {
                let mut all = l.clone();
                all.extend(r.iter().cloned());
                Some(Value::Array(all))
            }
            (Some(l), _) => Some(l.clone()),
            (None, r) => r.cloned(),
        };
        if let Some(value) = value {
            merged.insert((*api).to_string(), value);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(v: Value) -> Dict {
        v.as_object().cloned().unwrap()
    }

    fn server_pod() -> Value {
        json!({"spec": {
            "containers": [{"name": "workspace", "image": "mageai/mageai:1",
                "env": [{"name": "KUBE_NAMESPACE", "value": "ns"}],
                "envFrom": [{"configMapRef": {"name": "ws-env"}}],
                "volumeMounts": [{"name": "data", "mountPath": "/home/src"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-ws-0"}},
                {"name": "scripts", "configMap": {"name": "s"}}],
            "nodeSelector": {"pool": "ws"},
        }})
    }

    fn build(config: Value, template: Option<Value>) -> Result<Value, Crash> {
        let env = ServerEnv {
            kube_namespace: Some("ns".into()),
            ..Default::default()
        };
        let template = template.map(dict);
        let loaded = load(&dict(config), template.as_ref(), &env)?;
        job(
            &loaded,
            &server_pod(),
            &env,
            "mage-data-prep-block-1",
            &["run".into()],
        )
    }

    #[test]
    fn block_over_project_replaces_whole_sections() {
        let project = dict(json!({"resource_limits": {"cpu": "1", "memory": "2Gi"}}));
        let block = dict(json!({"resource_limits": {"memory": "4Gi"}}));
        let job = build(Value::Object(merge_dict(&project, &block)), None).unwrap();
        assert_eq!(
            job.pointer("/spec/template/spec/containers/0/resources"),
            Some(&json!({"limits": {"memory": "4Gi"}}))
        );
    }

    #[test]
    fn template_metadata_resets_the_namespace_and_labels_the_pod_too() {
        let env = ServerEnv::default();
        let loaded = load(
            &dict(json!({"namespace": "analytics"})),
            Some(&dict(json!({"metadata": {"labels": {"a": "b"}}}))),
            &env,
        )
        .unwrap();
        assert_eq!(
            namespace(&loaded, &env).unwrap(),
            Namespace::Known("default".into())
        );
        let job = build(json!({}), Some(json!({"metadata": {"labels": {"a": "b"}}}))).unwrap();
        assert_eq!(
            job.pointer("/spec/template/metadata/labels/a"),
            Some(&json!("b"))
        );
        assert_eq!(job.pointer("/spec/backoffLimit"), Some(&json!(0)));
    }

    #[test]
    fn the_server_pod_lends_env_mounts_image_and_scheduling() {
        let job = build(
            json!({"container": {"env": [{"name": "A", "value": "1"}]}}),
            None,
        )
        .unwrap();
        let c = job.pointer("/spec/template/spec/containers/0").unwrap();
        assert_eq!(c["name"], "mage-job-container");
        assert_eq!(c["image"], "mageai/mageai:1");
        assert_eq!(c["env"].as_array().unwrap().len(), 2);
        assert_eq!(
            job.pointer("/spec/template/spec/nodeSelector/pool"),
            Some(&json!("ws"))
        );
        // Only mounted volumes stay.
        assert_eq!(
            job.pointer("/spec/template/spec/volumes")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn camel_case_toleration_keys_crash_mage() {
        let err = build(
            json!({"pod": {"tolerations": [{"key": "a", "tolerationSeconds": 5}]}}),
            None,
        )
        .unwrap_err();
        assert_eq!(err.pointer, "/pod/tolerations/0/tolerationSeconds");
        assert!(err.error.starts_with("TypeError"), "{}", err.error);
    }

    #[test]
    fn trigger_names_are_cleaned_and_other_fields_raise() {
        assert_eq!(clean_trigger_name("Daily Run"), "daily-run");
        assert_eq!(clean_trigger_name("nightly_sync"), "nightly-sync");
        assert_eq!(clean_trigger_name("2am job"), "letter-2am-job");
        assert_eq!(
            job_name_prefix(Some(&json!("etl-{trigger_name}")), "Daily Run").unwrap(),
            "etl-daily-run"
        );
        assert!(job_name_prefix(Some(&json!("etl-{x}-{trigger_name}")), "t").is_err());
        assert_eq!(job_name_prefix(None, "t").unwrap(), "data-prep");
    }

    #[test]
    fn container_config_becomes_the_container_named_mage_data() {
        let job = build(
            json!({"container_config": {"working_dir": "/w", "env": [{"name": "B", "value": "2"}]}}),
            None,
        )
        .unwrap();
        let c = job.pointer("/spec/template/spec/containers/0").unwrap();
        assert_eq!(c["name"], "mage-data");
        assert_eq!(c["workingDir"], "/w");
        assert_eq!(c["env"][0], json!({"name": "B", "value": "2"}));
    }
}
