//! The effective Kubernetes executor config of every k8s block, after Mage's priority rules,
//! key by key, with where each value came from:
//!
//! | policy `enforce` | highest → lowest |
//! |---|---|
//! | `true`  | policy → block → project → env-var defaults → hardcoded |
//! | `false` | block → project → policy (fills gaps) → env-var defaults → hardcoded |
//!
//! A disabled policy (`enabled: false`) takes no part. The project layer is the Project's
//! `k8sExecutor` or the Mage project's `k8s_executor_config`, with the full job template
//! (K8S_CONFIG_FILE) right below it. Maps merge key by key; lists and `pod.affinity` are
//! taken whole from one layer.

use crate::load::mage::{ConfigSource, ExecutorSources};
use crate::load::{Diagnostic, Located, Repository};
use crate::model::{ExecutorConfig, ExecutorDefaults, PolicyDocument, ProjectDocument};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// `block`, `project`, `template`, `policy <name>`, `env <NAME>` or `hardcoded default`.
    pub layer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Exact position, for diagnostics.
    #[serde(skip)]
    pub pos: Option<crate::load::yaml::Pos>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.layer)?;
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, " ({file}:{line})"),
            (Some(file), None) => write!(f, " ({file})"),
            _ => Ok(()),
        }
    }
}

/// The executor config one block runs with.
#[derive(Debug, Clone)]
pub struct BlockExecutor {
    pub project: String,
    pub pipeline: String,
    pub block: String,
    /// The merged config, as Mage's keys.
    pub value: Value,
    pub config: ExecutorConfig,
    /// JSON pointer of every effective leaf → its origin.
    pub origins: BTreeMap<String, Origin>,
}

/// The executor defaults policy that applies to a project, if any.
#[derive(Debug, Clone)]
pub struct ProjectPolicy {
    pub project: String,
    pub policy: String,
    pub defaults: ExecutorDefaults,
}

/// Mage's hardcoded defaults.
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_JOB_NAME_PREFIX: &str = "data-prep";

/// Project env variables that give executor defaults, and the key each fills.
const ENV_DEFAULTS: &[(&str, &str)] = &[
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU",
        "/resource_requests/cpu",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_MEMORY",
        "/resource_requests/memory",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_CPU",
        "/resource_limits/cpu",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_MEMORY",
        "/resource_limits/memory",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME",
        "/service_account_name",
    ),
    ("KUBE_NAMESPACE", "/namespace"),
];

/// What a layer is, for conflict checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An enforced policy: what it sets, block and project cannot change.
    Enforced,
    /// Block, project or template: overriding them with an enforced policy is a conflict.
    User,
    /// Non-enforced policy, env-var defaults, hardcoded defaults.
    Default,
}

/// One layer of the merge.
struct Layer<'a> {
    value: Value,
    origin: Box<dyn Fn(&str) -> Origin + 'a>,
    role: Role,
}

impl<'a> Layer<'a> {
    fn from_source(name: &str, source: &'a ConfigSource) -> Layer<'a> {
        let name = name.to_string();
        Layer {
            value: source.value.clone(),
            origin: Box::new(move |pointer| Origin {
                layer: name.clone(),
                file: Some(source.file.clone()),
                line: Some(source.line_of(pointer)),
                pos: Some(source.pos_of(pointer)),
            }),
            role: Role::User,
        }
    }
}

/// The enabled executor-defaults policy of each project; two for one project is an error.
pub fn project_policies(repo: &Repository) -> (Vec<ProjectPolicy>, Vec<Diagnostic>) {
    let mut out: Vec<ProjectPolicy> = Vec::new();
    let mut diagnostics = Vec::new();
    for project in &repo.projects {
        let name = &project.doc.metadata.name;
        let mut chosen: Option<&Located<PolicyDocument>> = None;
        for policy in &repo.policies {
            let spec = &policy.doc.spec;
            let Some(defaults) = &spec.k8s_executor_defaults else {
                continue;
            };
            if !defaults.enabled
                || !(spec.selector.projects.is_empty() || spec.selector.projects.contains(name))
            {
                continue;
            }
            if let Some(first) = chosen {
                diagnostics.push(Diagnostic::error(
                    &policy.file,
                    policy.pos("/spec/k8sExecutorDefaults"),
                    "/spec/k8sExecutorDefaults",
                    format!(
                        "project `{name}` already gets executor defaults from policy `{}`; Mage reads one default config file",
                        first.doc.metadata.name
                    ),
                ));
                continue;
            }
            chosen = Some(policy);
            out.push(ProjectPolicy {
                project: name.clone(),
                policy: policy.doc.metadata.name.clone(),
                defaults: defaults.clone(),
            });
        }
    }
    (out, diagnostics)
}

/// The effective config of every k8s block of every project.
pub fn resolve(
    repo: &Repository,
    policies: &[ProjectPolicy],
) -> (Vec<BlockExecutor>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diagnostics = Vec::new();
    for sources in &repo.executor {
        let Some(project) = repo.project(&sources.project) else {
            continue;
        };
        let policy = policies.iter().find(|p| p.project == sources.project);
        let policy_doc = policy.and_then(|p| {
            repo.policies
                .iter()
                .find(|d| d.doc.metadata.name == p.policy)
        });
        for pipeline in &sources.pipelines {
            for block in &pipeline.blocks {
                let layers = layers(project, sources, block.config.as_ref(), policy, policy_doc);
                let (value, origins, conflicts) = merge(&layers);
                for (pointer, winner, loser) in conflicts {
                    let (Some(policy), Some(doc)) = (policy, policy_doc) else {
                        continue;
                    };
                    let message = format!(
                        "policy `{}` enforces {} over {} set by the {}",
                        policy.policy, winner, loser.1, loser.0.layer
                    );
                    let file = loser.0.file.clone().unwrap_or_else(|| doc.file.clone());
                    let pos = loser.0.pos.unwrap_or_default();
                    diagnostics.push(if policy.defaults.strict_conflicts {
                        Diagnostic::error(&file, pos, &pointer, message)
                            .with_help("the policy asks for strict conflict checking")
                    } else {
                        Diagnostic::warning(&file, pos, &pointer, message)
                    });
                }
                // Each layer passed the schema, so this only fails on a combination of
                // layers; say so at the block instead of dropping its settings.
                let config = match serde_json::from_value(value.clone()) {
                    Ok(config) => config,
                    Err(err) => {
                        let pos = block
                            .config
                            .as_ref()
                            .map(|c| c.pos_of(""))
                            .unwrap_or_default();
                        diagnostics.push(Diagnostic::error(
                            &pipeline.file,
                            pos,
                            "",
                            format!(
                                "the merged executor config of block `{}` is not valid: {err}",
                                block.uuid
                            ),
                        ));
                        continue;
                    }
                };
                out.push(BlockExecutor {
                    project: sources.project.clone(),
                    pipeline: pipeline.uuid.clone(),
                    block: block.uuid.clone(),
                    value,
                    config,
                    origins,
                });
            }
        }
    }
    (out, diagnostics)
}

fn layers<'a>(
    project: &'a Located<ProjectDocument>,
    sources: &'a ExecutorSources,
    block: Option<&'a ConfigSource>,
    policy: Option<&'a ProjectPolicy>,
    policy_doc: Option<&'a Located<PolicyDocument>>,
) -> Vec<Layer<'a>> {
    let enforce = policy.is_some_and(|p| p.defaults.enforce);
    let mut policy_layer = policy.zip(policy_doc).map(|(p, doc)| {
        let name = format!("policy {}", p.policy);
        Layer {
            value: serde_json::to_value(&p.defaults.config).unwrap_or_default(),
            origin: Box::new(move |pointer| Origin {
                layer: name.clone(),
                file: Some(doc.file.clone()),
                line: Some(
                    doc.spans
                        .key(&format!("/spec/k8sExecutorDefaults/config{pointer}"))
                        .line,
                ),
                pos: Some(
                    doc.spans
                        .key(&format!("/spec/k8sExecutorDefaults/config{pointer}")),
                ),
            }),
            role: if enforce {
                Role::Enforced
            } else {
                Role::Default
            },
        }
    });
    let mut layers = Vec::new();
    if enforce && let Some(layer) = policy_layer.take() {
        layers.push(layer);
    }
    if let Some(block) = block {
        layers.push(Layer::from_source("block", block));
    }
    if let Some(config) = &sources.project_config {
        layers.push(Layer::from_source("project", config));
    }
    if let Some(template) = &sources.template {
        layers.push(Layer::from_source("template", template));
    }
    if let Some(layer) = policy_layer {
        layers.push(layer);
    }
    // Env-var defaults from the project's literal env.
    let mut env = json!({});
    let mut env_lines = BTreeMap::new();
    for (name, pointer) in ENV_DEFAULTS {
        if let Some((i, value)) = project
            .doc
            .spec
            .env
            .iter()
            .enumerate()
            .find_map(|(i, v)| (v.name == *name).then_some((i, v.value.as_ref()?)))
        {
            set_pointer(&mut env, pointer, Value::String(value.clone()));
            env_lines.insert(
                pointer.to_string(),
                (
                    name.to_string(),
                    project.pos(&format!("/spec/env/{i}/value")).line,
                ),
            );
        }
    }
    layers.push(Layer {
        value: env,
        origin: Box::new(move |pointer| {
            let (name, line) = env_lines.get(pointer).cloned().unwrap_or_default();
            Origin {
                layer: format!("env {name}"),
                file: Some(project.file.clone()),
                line: Some(line),
                pos: None,
            }
        }),
        role: Role::Default,
    });
    layers.push(Layer {
        value: json!({"namespace": DEFAULT_NAMESPACE, "job_name_prefix": DEFAULT_JOB_NAME_PREFIX}),
        origin: Box::new(|_| Origin {
            layer: "hardcoded default".into(),
            file: None,
            line: None,
            pos: None,
        }),
        role: Role::Default,
    });
    layers
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut node = root;
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, segment) in segments.iter().enumerate() {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if i + 1 == segments.len() {
            map.insert(segment.to_string(), value);
            return;
        }
        node = map.entry(segment.to_string()).or_insert_with(|| json!({}));
    }
}

/// Whether the value at `pointer` is taken whole rather than merged key by key.
fn is_leaf(pointer: &str, value: &Value) -> bool {
    !value.is_object() || pointer == "/pod/affinity" || value.as_object().is_some_and(Map::is_empty)
}

type Conflict = (String, Value, (Origin, Value));

/// Merge layers, highest priority first: the first layer to set a leaf wins it.
fn merge(layers: &[Layer<'_>]) -> (Value, BTreeMap<String, Origin>, Vec<Conflict>) {
    let mut result = json!({});
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    let mut won_by_enforced: BTreeMap<String, Value> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for layer in layers {
        let mut todo = vec![(String::new(), &layer.value)];
        while let Some((pointer, value)) = todo.pop() {
            if pointer.is_empty() || !is_leaf(&pointer, value) {
                if let Some(map) = value.as_object() {
                    for (k, v) in map {
                        if !v.is_null() {
                            todo.push((
                                format!("{pointer}/{}", crate::load::yaml::escape_segment(k)),
                                v,
                            ));
                        }
                    }
                }
                continue;
            }
            if origins.contains_key(&pointer) {
                if layer.role == Role::User
                    && let Some(winner) = won_by_enforced.get(&pointer)
                    && winner != value
                {
                    conflicts.push((
                        pointer.clone(),
                        winner.clone(),
                        ((layer.origin)(&pointer), value.clone()),
                    ));
                }
                continue;
            }
            if layer.role == Role::Enforced {
                won_by_enforced.insert(pointer.clone(), value.clone());
            }
            set_pointer(&mut result, &pointer, value.clone());
            origins.insert(pointer.clone(), (layer.origin)(&pointer));
        }
    }
    conflicts.sort_by(|a, b| a.0.cmp(&b.0));
    (result, origins, conflicts)
}

/// A Job name as Mage makes it: `mage-{job_name_prefix}-block-{block_run_id}`, with
/// `{trigger_name}` interpolated, made a valid DNS-1123 label and cut to Kubernetes' 63
/// characters by shortening the prefix (the block run id stays whole, so names stay unique).
pub fn job_name(prefix: &str, trigger_name: &str, block_run_id: &str) -> String {
    fn clean(text: &str) -> String {
        let mut out = String::new();
        for c in text.to_lowercase().chars() {
            let c = if c.is_ascii_alphanumeric() { c } else { '-' };
            if !(c == '-' && out.ends_with('-')) {
                out.push(c);
            }
        }
        out.trim_matches('-').to_string()
    }
    let prefix = clean(&prefix.replace("{trigger_name}", trigger_name));
    let id = clean(block_run_id);
    let fixed = "mage-".len() + "-block-".len() + id.len();
    let room = 63usize.saturating_sub(fixed);
    let mut prefix: String = prefix.chars().take(room).collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    let name = if prefix.is_empty() {
        format!("mage-block-{id}")
    } else {
        format!("mage-{prefix}-block-{id}")
    };
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

#[cfg(test)]
mod tests;
