//! Mage's Kubernetes executor, rendered: the Job each k8s block runs as in each workspace
//! of its project, as Mage's own code builds it from the configuration and the workspace's
//! pod (kept in a ConfigMap per project, so a pull request that raises a block's memory
//! shows the change), and the default config file of the project's executor policy,
//! mounted into its workspaces with K8S_DEFAULT_CONFIG_PATH as Mage's Helm chart does.

use super::{MANAGED_BY, PROJECT_LABEL};
use crate::mage::executor::{self as mage, Namespace};
use crate::resolve::executor::{BlockExecutor, ProjectPolicy, Run};
use crate::resolve::{EXECUTOR_DEFAULTS_FILE, Resolved, ResolvedProject, ResolvedWorkspace};
use berth_load::k8s::round_trip;
use berth_load::load::yaml::Pos;
use rayon::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

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
    let groups = Groups::of(resolved);
    // The first policy of a project wins, as a search from the front would find.
    let policies: HashMap<&str, &ProjectPolicy> = resolved
        .executor_policies
        .iter()
        .rev()
        .map(|p| (p.project.as_str(), p))
        .collect();
    for project in &resolved.projects {
        if let Some(policy) = policies.get(project.name.as_str()) {
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
        let jobs: BTreeMap<String, Value> = groups
            .jobs(&project.name)
            .map(|(block, run, job)| {
                let key = format!("{}.{}.{}.yaml", run.workspace, block.pipeline, block.block)
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
                (key, Value::String(super::emit::to_string(&job)))
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

/// The Job of every k8s block in every workspace, for `berth render --executor`.
pub fn jobs(resolved: &Resolved) -> Vec<Value> {
    let groups = Groups::of(resolved);
    resolved
        .projects
        .iter()
        .flat_map(|p| groups.jobs(&p.name).map(|(_, _, job)| job))
        .collect()
}

/// Each project's blocks and the workspaces that run them, grouped once: a scan of every
/// workspace for each project would be quadratic in a fleet of thousands of projects.
struct Groups<'a> {
    blocks: HashMap<&'a str, Vec<&'a BlockExecutor>>,
    workspaces: HashMap<&'a str, Vec<&'a ResolvedWorkspace>>,
}

impl<'a> Groups<'a> {
    fn of(resolved: &'a Resolved) -> Groups<'a> {
        let mut blocks: HashMap<&str, Vec<&BlockExecutor>> = HashMap::new();
        for block in &resolved.executors {
            blocks
                .entry(block.project.as_str())
                .or_default()
                .push(block);
        }
        let mut workspaces: HashMap<&str, Vec<&ResolvedWorkspace>> = HashMap::new();
        for w in &resolved.workspaces {
            if blocks.contains_key(w.project.as_str()) {
                workspaces.entry(w.project.as_str()).or_default().push(w);
            }
        }
        Groups { blocks, workspaces }
    }

    /// Each block's Job in each workspace of a project.
    fn jobs(&self, project: &str) -> impl Iterator<Item = (&'a BlockExecutor, &'a Run, Value)> {
        // Each workspace's pod once, for all the blocks it runs.
        let pods: BTreeMap<&str, (&ResolvedWorkspace, Value)> = self
            .workspaces
            .get(project)
            .into_iter()
            .flatten()
            .map(|w| (w.name.as_str(), (*w, super::server_pod(w))))
            .collect();
        self.blocks
            .get(project)
            .into_iter()
            .flatten()
            .copied()
            .flat_map(|block| block.runs.iter().map(move |run| (block, run)))
            .filter_map(move |(block, run)| {
                let (ws, pod) = pods.get(run.workspace.as_str())?;
                Some((block, run, job(block, run, ws, pod).ok()?))
            })
    }
}

/// What Mage's executor does as the workspace's account in the workspace's namespace
/// (`JobManager`): read its own pod (`<workspace>-0`), and create, read and delete the
/// Jobs of its k8s blocks. Jobs Mage creates elsewhere get nothing (validate says so).
pub fn rbac(ws: &ResolvedWorkspace) -> Vec<Value> {
    if !ws.executor_namespaces.contains(&ws.namespace) {
        return Vec::new();
    }
    let name = format!("{}-mage-executor", ws.name);
    let labels =
        json!({MANAGED_BY: "berth", PROJECT_LABEL: ws.project, super::WORKSPACE_LABEL: ws.name});
    let meta = json!({"name": name, "namespace": ws.namespace, "labels": labels});
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "resourceNames": [format!("{}-0", ws.name)], "verbs": ["get"]},
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "delete"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": super::meta::pod_account(ws), "namespace": ws.namespace}],
        }),
    ]
}

/// Mage's default config file format: `enabled`, `enforce` and the executor keys.
fn defaults_file(policy: &ProjectPolicy) -> String {
    let mut file = Map::new();
    file.insert("enabled".into(), Value::Bool(policy.defaults.enabled));
    file.insert("enforce".into(), Value::Bool(policy.defaults.enforce));
    file.extend(policy.defaults.config.clone());
    // Mage reads this file with PyYAML (YAML 1.1): see `emit`.
    super::emit::to_string(&Value::Object(file))
}

/// The command Mage's `BlockExecutor._run_commands` gives a block's Job, with Mage's
/// per-run values as placeholders.
pub fn command(ws: &ResolvedWorkspace, block: &BlockExecutor) -> Vec<String> {
    [
        "/app/run_app.sh",
        "mage",
        "run",
        &ws.user_code_path,
        &block.pipeline,
        "--block-uuid",
        &block.block,
        "--executor-type",
        "local_python",
        "--block-run-id",
        "{block_run_id}",
        "--pipeline-run-id",
        "{pipeline_run_id}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The Job a block runs as in one workspace, as Mage's `create_job_object` builds it from
/// the workspace's pod (`server_pod`), with Mage Pro's env-var defaults, in the namespace
/// Mage creates it in. Its name keeps Mage's per-run `{block_run_id}` (and, where the
/// prefix has one, `{trigger_name}`) as placeholders.
pub fn job(
    block: &BlockExecutor,
    run: &Run,
    ws: &ResolvedWorkspace,
    server_pod: &Value,
) -> Result<Value, mage::Crash> {
    let prefix = match run.loaded.job_name_prefix.as_ref().and_then(Value::as_str) {
        Some(p) if p.contains(mage::TRIGGER_NAME) => p.to_string(),
        _ => mage::job_name_prefix(run.loaded.job_name_prefix.as_ref(), "")?,
    };
    let name = mage::job_name(&run.env, &prefix, "{block_run_id}");
    let mut job = mage::job(
        &run.loaded,
        server_pod,
        &run.env,
        &name,
        &command(ws, block),
    )?;
    run.defaults.fill(&mut job, &run.loaded);
    if let Namespace::Known(namespace) = &run.namespace
        && let Some(meta) = job.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.entry("namespace").or_insert(json!(namespace));
    }
    Ok(job)
}

/// What the API server would refuse of the Jobs Mage builds from the workspaces' pods, and
/// what Mage cannot do with them: run at validate (the Jobs need the workspaces' pods, so
/// these are render's findings), each at the layer that set the value.
pub fn findings(resolved: &Resolved) -> Vec<crate::load::Diagnostic> {
    let groups = Groups::of(resolved);
    // Each project's Jobs are built from its workspaces' pods: projects in parallel.
    let mut out: Vec<crate::load::Diagnostic> = resolved
        .projects
        .par_iter()
        .flat_map_iter(|project| {
            groups
                .jobs(&project.name)
                .flat_map(|(block, run, job)| job_findings(block, run, &job))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    out.retain(|d| seen.insert((d.file.clone(), d.line, d.column, d.message.clone())));
    out
}

/// What is wrong with one block's Job in one workspace.
fn job_findings(block: &BlockExecutor, run: &Run, job: &Value) -> Vec<crate::load::Diagnostic> {
    use crate::load::Diagnostic;
    let mut out = unreadable(block, run, job);
    let spec = &job["spec"]["template"]["spec"];
    let names = |list: &Value, field: &str| -> Vec<String> {
        let items = list.as_array().into_iter().flatten();
        items
            .filter_map(|v| Some(v[field].as_str()?.to_string()))
            .collect()
    };
    let volumes = names(&spec["volumes"], "name");
    let mounts = &spec["containers"][0]["volumeMounts"];
    // Mounts come from the config's container (the workspace's own mounts are added after,
    // and are valid), volumes from its pod and the workspace's pod: a problem among them
    // is said at the config's key.
    let container = ["container", "container_config"]
        .iter()
        .find_map(|k| written_at(run, k));
    let pod = written_at(run, "pod");
    let error = |(file, pos, pointer): &(String, Pos, String), message: String| {
        Diagnostic::error(file, *pos, pointer, message)
    };
    for name in names(mounts, "name") {
        let Some(at) = container.as_ref().filter(|_| !volumes.contains(&name)) else {
            continue;
        };
        let pod_from = run
            .origins
            .get("pod")
            .map(|o| format!(" (`pod` comes from the {})", o.layer))
            .unwrap_or_default();
        out.push(
            error(at, format!(
                "k8s block `{}` mounts volume `{name}`, which its Job does not have{pod_from}: the API server refuses the Job",
                block.block
            ))
            .with_help("declare the volume in the same layer's `pod.volumes` (Mage merges top-level keys whole, so a `pod` from another layer replaces this one's), or in the workspace's pod, whose volumes the Job may mount"),
        );
    }
    // The API server's uniqueness rules: one volume per name, one mount per path.
    if let Some(at) = &container {
        for path in repeated(names(mounts, "mountPath")) {
            out.push(
                error(at, format!(
                    "k8s block `{}` mounts two volumes at `{path}` in its Job's container: the API server refuses the Job (mount paths must be unique)",
                    block.block
                ))
                .with_help("mount each path once; Mage adds the workspace's own mounts after the config's, so a path the workspace's Mage server already mounts cannot be mounted again"),
            );
        }
    }
    if let Some(at) = &pod {
        for name in repeated(volumes) {
            out.push(
                error(at, format!(
                    "k8s block `{}`'s Job has two volumes named `{name}`: the API server refuses the Job (volume names must be unique)",
                    block.block
                ))
                .with_help("name each volume once; Mage adds the workspace's own volumes to the config's, so a name of the workspace's pod cannot be used again"),
            );
        }
    }
    out
}

/// Where the executor config's key `key` is written for this run, when in a file.
fn written_at(run: &Run, key: &str) -> Option<(String, Pos, String)> {
    let origin = run.origins.get(key)?;
    Some((
        origin.file.clone()?,
        origin.pos?,
        origin.pointer.clone().unwrap_or_default(),
    ))
}

/// The values that occur more than once, each once, in order of their second occurrence.
fn repeated(values: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for value in values {
        if !seen.insert(value.clone()) && !out.contains(&value) {
            out.push(value);
        }
    }
    out
}

/// What the API server cannot read of what Mage sends from the configuration: nested keys
/// in snake_case (the client converts only each item's top level: `secret: {secret_name:
/// x}` loses `secret_name`), values of the wrong type (a YAML 1.1 `yes` in a node
/// selector), terms in a shape the API does not have. Only what reaches the Job counts:
/// a volume nothing mounts is filtered out by Mage.
fn unreadable(block: &BlockExecutor, run: &Run, job: &Value) -> Vec<crate::load::Diagnostic> {
    let loaded = &run.loaded;
    let spec = &job["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let container_key = if loaded.container_config.is_some() {
        "container_config"
    } else {
        "container"
    };
    let mut pieces = pod_pieces(loaded, spec, container);
    if let Err((what, why)) = read_container(container) {
        pieces.push((container_key, format!("{container_key}: {what}"), Err(why)));
    }
    let mut out = Vec::new();
    for (key, what, result) in pieces {
        let Err(why) = result else {
            continue;
        };
        let Some((file, pos, field)) = run
            .origins
            .get(key)
            .and_then(|o| Some((o.file.clone()?, o.pos?, o.pointer.clone()?)))
        else {
            continue;
        };
        out.push(
            crate::load::Diagnostic::error(
                &file,
                pos,
                &field,
                format!("the API server cannot read `{what}` as Mage sends it for k8s block `{}`: {why}", block.block),
            )
            .with_help("Mage's client turns only the top-level keys of each item into the API's names; write the keys inside as the API does (`secretName`, `claimName`, `secretKeyRef`)"),
        );
    }
    out
}

/// One piece of what Mage sends, read as the API's type: the configuration key that set
/// it, its name in messages, and why the API server cannot read it.
type Piece = (&'static str, String, Result<(), String>);

/// The pod-level pieces (`pod` and `metadata` keys): mounted volumes, tolerations,
/// affinity, node selector, metadata.
fn pod_pieces(loaded: &mage::Loaded, spec: &Value, container: &Value) -> Vec<Piece> {
    use k8s_openapi::api::core::v1::{Affinity, Toleration, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let mounted: Vec<&str> = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    let mut pieces: Vec<Piece> = Vec::new();
    for (i, v) in loaded.pod.volumes.iter().enumerate() {
        if v["name"].as_str().is_some_and(|n| mounted.contains(&n)) {
            pieces.push(("pod", format!("pod.volumes[{i}]"), round_trip::<Volume>(v)));
        }
    }
    for (i, v) in loaded.pod.tolerations.iter().enumerate() {
        pieces.push((
            "pod",
            format!("pod.tolerations[{i}]"),
            round_trip::<Toleration>(v),
        ));
    }
    if let Some(affinity) = &loaded.pod.affinity {
        pieces.push((
            "pod",
            "pod.affinity".into(),
            round_trip::<Affinity>(affinity),
        ));
    }
    if crate::mage::truthy(loaded.pod.node_selector.as_ref()) {
        pieces.push((
            "pod",
            "pod.node_selector".into(),
            serde_json::from_value::<BTreeMap<String, String>>(spec["nodeSelector"].clone())
                .map(|_| ())
                .map_err(|e| format!("the API server takes text values only ({e}); PyYAML reads unquoted `yes`, `on`, `1` as booleans and numbers: quote them")),
        ));
    }
    if let Some(meta) = &loaded.meta {
        pieces.push((
            "metadata",
            "metadata".into(),
            round_trip::<ObjectMeta>(&Value::Object(meta.clone())),
        ));
    }
    pieces
}

/// The container read whole, and on failure item by item for a readable place: the
/// first env entry or volume mount the API cannot read, else the container.
fn read_container(container: &Value) -> Result<(), (String, String)> {
    use k8s_openapi::api::core::v1::{Container, EnvVar, VolumeMount};
    let mut whole = container.clone();
    if let Some(resources) = whole.get_mut("resources") {
        stringify_quantities(resources);
    }
    let Err(why) = round_trip::<Container>(&whole) else {
        return Ok(());
    };
    let items = |field: &str| {
        container[field]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
    };
    for (i, v) in items("env") {
        if let Err(why) = round_trip::<EnvVar>(&v) {
            return Err((format!("env[{i}]"), why));
        }
    }
    for (i, v) in items("volumeMounts") {
        if let Err(why) = round_trip::<VolumeMount>(&v) {
            return Err((format!("volumeMounts[{i}]"), why));
        }
    }
    Err(("the container".into(), why))
}

/// Quantities as the API's types read them (numbers are quantities to the API server).
fn stringify_quantities(resources: &mut Value) {
    for section in ["limits", "requests"] {
        if let Some(map) = resources.get_mut(section).and_then(Value::as_object_mut) {
            for v in map.values_mut() {
                if let Value::Number(n) = v {
                    *v = Value::String(n.to_string());
                }
            }
        }
    }
}
