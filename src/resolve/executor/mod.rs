//! The effective Kubernetes executor config of every k8s block, after Mage's priority rules,
//! key by key, with where each value came from. The precedence is stated once, in
//! [`precedence`]; `berth explain` prints it and the README repeats it:
//!
//! | policy | highest → lowest |
//! |---|---|
//! | `enforce: true` | policy → block → project → template → env-var defaults → defaults |
//! | `enforce: false` | block → project → template → policy (fills gaps) → env-var defaults → defaults |
//! | none, or `enabled: false` | block → project → template → env-var defaults → defaults |
//!
//! Every layer is in the canonical spelling (the loader rewrote Mage's other spellings, see
//! [`crate::model::ExecutorConfig`]), so a setting is one pointer in every layer: an
//! enforced policy cannot be bypassed by spelling a key the other way, and what wins here
//! is what render writes. Everything render puts in a Job comes from this merge, defaults
//! included, so `explain` shows every value of the Job. Maps merge key by key; lists and
//! `pod.affinity` are taken whole from one layer (`model::is_whole`).

use crate::load::mage::{Block, ConfigSource, ExecutorSources, Pipeline};
use crate::load::yaml::Pos;
use crate::load::{Diagnostic, Located, Repository};
use crate::model::{ExecutorConfig, ExecutorDefaults, PolicyDocument, ProjectDocument, is_whole};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// The layers of executor configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// A policy with `enforce: true`: what it sets, nothing below changes.
    EnforcedPolicy,
    /// The block's `executor_config` in its pipeline's `metadata.yaml`.
    Block,
    /// The Project's `k8sExecutor` or the Mage project's `k8s_executor_config`.
    Project,
    /// The full job template named by the project variable K8S_CONFIG_FILE.
    Template,
    /// A policy with `enforce: false`: fills what the layers above leave unset.
    Policy,
    /// The project variables K8S_EXECUTOR_DEFAULT_*, KUBE_NAMESPACE, MAGE_CONTAINER_NAME.
    EnvDefaults,
    /// Mage's hardcoded defaults, and the project's image.
    Defaults,
}

impl LayerKind {
    pub fn describe(self) -> &'static str {
        match self {
            LayerKind::EnforcedPolicy => "policy (enforced)",
            LayerKind::Block => "block",
            LayerKind::Project => "project",
            LayerKind::Template => "template",
            LayerKind::Policy => "policy (fills gaps)",
            LayerKind::EnvDefaults => "env-var defaults",
            LayerKind::Defaults => "defaults",
        }
    }

    /// Block, project and template: what users write, which an enforced policy overrides.
    fn is_user(self) -> bool {
        matches!(
            self,
            LayerKind::Block | LayerKind::Project | LayerKind::Template
        )
    }
}

/// The layers from highest to lowest priority, for a project whose executor policy has
/// `enforce` (`None`: no enabled policy). The first layer that sets a key wins it.
pub fn precedence(enforce: Option<bool>) -> Vec<LayerKind> {
    let mut order = Vec::with_capacity(6);
    if enforce == Some(true) {
        order.push(LayerKind::EnforcedPolicy);
    }
    order.extend([LayerKind::Block, LayerKind::Project, LayerKind::Template]);
    if enforce == Some(false) {
        order.push(LayerKind::Policy);
    }
    order.extend([LayerKind::EnvDefaults, LayerKind::Defaults]);
    order
}

/// [`precedence`] as one line: `policy (enforced) → block → …`.
pub fn precedence_text(enforce: Option<bool>) -> String {
    precedence(enforce)
        .iter()
        .map(|kind| kind.describe())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub kind: LayerKind,
    /// `block`, `project`, `template`, `policy <name>`, `env <NAME>`, `project image` or
    /// `hardcoded default`.
    pub layer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Exact position, for diagnostics.
    #[serde(skip)]
    pub pos: Option<Pos>,
    /// Pointer of the value in its file, spelled as written there, for diagnostics.
    #[serde(skip)]
    pub pointer: Option<String>,
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
    /// The merged config, canonical keys.
    pub value: Value,
    pub config: ExecutorConfig,
    /// JSON pointer of every effective leaf → its origin.
    pub origins: BTreeMap<String, Origin>,
    /// The names of the pipeline's triggers (for `{trigger_name}` in job names).
    pub triggers: Vec<String>,
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
/// The Job's container name when nothing names it.
pub const DEFAULT_CONTAINER_NAME: &str = "mage-job";

/// Project env variables that give executor defaults, and the key each fills.
pub const ENV_DEFAULTS: &[(&str, &str)] = &[
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
    ("MAGE_CONTAINER_NAME", "/container/name"),
];

/// One layer of the merge.
struct Layer<'a> {
    kind: LayerKind,
    value: Value,
    origin: Box<dyn Fn(&str) -> Origin + 'a>,
}

impl<'a> Layer<'a> {
    fn from_source(kind: LayerKind, name: &str, source: &'a ConfigSource) -> Layer<'a> {
        let name = name.to_string();
        Layer {
            kind,
            value: source.value.clone(),
            origin: Box::new(move |pointer| Origin {
                kind,
                layer: name.clone(),
                file: Some(source.file.clone()),
                line: Some(source.line_of(pointer)),
                pos: Some(source.pos_of(pointer)),
                pointer: Some(source.written_at(pointer)),
            }),
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

/// A user value an enforced policy overrode.
struct Conflict {
    pointer: String,
    winner: Value,
    loser: Origin,
    lost: Value,
}

/// The effective config of every k8s block of every project, and the findings: policy
/// overrides, job names Kubernetes would refuse, blocks without an image.
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
        // Empty collections an enforced policy imposes, and the blocks whose own settings
        // they remove: pointer → [(block, what was removed and where)].
        let mut wiped: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pipeline in &sources.pipelines {
            for block in &pipeline.blocks {
                let layers = layers(project, sources, block.config.as_ref(), policy, policy_doc);
                let (value, origins, conflicts) = merge(&layers);
                let id = format!("{}/{}/{}", sources.project, pipeline.uuid, block.uuid);
                for conflict in conflicts {
                    let (Some(policy), Some(doc)) = (policy, policy_doc) else {
                        continue;
                    };
                    if is_empty_collection(&conflict.winner) {
                        wiped
                            .entry(conflict.pointer.clone())
                            .or_default()
                            .push(format!("{id} ({})", conflict.loser));
                    }
                    diagnostics.push(conflict_diagnostic(&conflict, policy, doc));
                }
                // Each layer passed the schema, so this only fails on a combination of
                // layers; say so at the block instead of dropping its settings.
                let config: ExecutorConfig = match serde_json::from_value(value.clone()) {
                    Ok(config) => config,
                    Err(err) => {
                        diagnostics.push(Diagnostic::error(
                            &pipeline.file,
                            block.pos,
                            &block.pointer,
                            format!(
                                "the merged executor config of block `{}` is not valid: {err}",
                                block.uuid
                            ),
                        ));
                        continue;
                    }
                };
                let resolved = BlockExecutor {
                    project: sources.project.clone(),
                    pipeline: pipeline.uuid.clone(),
                    block: block.uuid.clone(),
                    value,
                    config,
                    origins,
                    triggers: pipeline.triggers.iter().map(|t| t.name.clone()).collect(),
                };
                diagnostics.extend(check_block(&resolved, pipeline, block));
                out.push(resolved);
            }
        }
        if let (Some(policy), Some(doc)) = (policy, policy_doc) {
            for (pointer, blocks) in wiped {
                let at = format!("/spec/k8sExecutorDefaults/config{pointer}");
                diagnostics.push(
                    Diagnostic::warning(
                        &doc.file,
                        doc.spans.key(&at),
                        &at,
                        format!(
                            "policy `{}` enforces an empty `{}`, which removes what {} block(s) set: {}",
                            policy.policy,
                            crate::load::diagnostic::field_path(pointer.as_str()),
                            blocks.len(),
                            blocks.join(", ")
                        ),
                    )
                    .with_help("leave the key out of the policy to keep the blocks' settings, or list what every block should get"),
                );
            }
        }
    }
    (out, diagnostics)
}

fn is_empty_collection(value: &Value) -> bool {
    value.as_array().is_some_and(Vec::is_empty) || value.as_object().is_some_and(|m| m.is_empty())
}

fn conflict_diagnostic(
    conflict: &Conflict,
    policy: &ProjectPolicy,
    doc: &Located<PolicyDocument>,
) -> Diagnostic {
    let message = format!(
        "policy `{}` enforces {} over {} set by the {}",
        policy.policy, conflict.winner, conflict.lost, conflict.loser.layer
    );
    let file = conflict
        .loser
        .file
        .clone()
        .unwrap_or_else(|| doc.file.clone());
    let pos = conflict.loser.pos.unwrap_or_default();
    let field = conflict
        .loser
        .pointer
        .as_deref()
        .unwrap_or(&conflict.pointer);
    if policy.defaults.strict_conflicts {
        Diagnostic::error(&file, pos, field, message)
            .with_help("the policy asks for strict conflict checking")
    } else {
        Diagnostic::warning(&file, pos, field, message)
    }
}

/// What the API server or the Job controller would refuse in a block's merged config:
/// its job name, its namespace, a missing image. Each at the layer that set the value.
fn check_block(block: &BlockExecutor, pipeline: &Pipeline, source: &Block) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // The file, position and field (as written) of the layer that set a key.
    let at = |pointer: &str| -> (String, Pos, String) {
        let origin = block.origins.get(pointer);
        (
            origin
                .and_then(|o| o.file.clone())
                .unwrap_or_else(|| pipeline.file.clone()),
            origin.and_then(|o| o.pos).unwrap_or(source.pos),
            origin
                .and_then(|o| o.pointer.clone())
                .unwrap_or_else(|| source.pointer.clone()),
        )
    };
    let prefix = block
        .config
        .job_name_prefix
        .as_deref()
        .unwrap_or(DEFAULT_JOB_NAME_PREFIX);
    // The prefix on its own ({trigger_name} empty) at the prefix, then each trigger at its
    // name, so each problem is reported where it can be fixed.
    let (file, pos, field) = at("/job_name_prefix");
    let alone = job_name(prefix, "", LONGEST_BLOCK_RUN_ID);
    if let Err(why) = check_job_name(&alone) {
        out.push(
            Diagnostic::error(
                &file,
                pos,
                &field,
                format!("job_name_prefix `{prefix}` gives Job names like `{alone}`, which Kubernetes refuses: {why}"),
            )
            .with_help(JOB_NAME_HELP),
        );
    } else if prefix.contains(TRIGGER_NAME) {
        for trigger in &pipeline.triggers {
            let name = job_name(prefix, &trigger.name, LONGEST_BLOCK_RUN_ID);
            if let Err(why) = check_job_name(&name) {
                out.push(
                    Diagnostic::error(
                        &trigger.file,
                        trigger.pos,
                        &trigger.pointer,
                        format!(
                            "trigger `{}` makes job_name_prefix `{prefix}` give Job names like `{name}`, which Kubernetes refuses: {why}",
                            trigger.name
                        ),
                    )
                    .with_help(format!("the prefix is set at {file}:{}", pos.line)),
                );
            }
        }
    }
    if let Some(namespace) = &block.config.namespace
        && let Err(why) = crate::load::check_dns_label(namespace)
    {
        let (file, pos, field) = at("/namespace");
        out.push(Diagnostic::error(
            &file,
            pos,
            &field,
            format!("invalid namespace `{namespace}` for executor Jobs: {why}"),
        ));
    }
    if block
        .config
        .container
        .as_ref()
        .and_then(|c| c.image.as_deref())
        .is_none_or(str::is_empty)
    {
        out.push(
            Diagnostic::error(
                &pipeline.file,
                source.pos,
                &source.pointer,
                format!("k8s block `{}` has no image for its Job", block.block),
            )
            .with_help("set `container.image` (or `container_config.image`) in the block or project config, or the project's `image`"),
        );
    }
    out
}

fn layers<'a>(
    project: &'a Located<ProjectDocument>,
    sources: &'a ExecutorSources,
    block: Option<&'a ConfigSource>,
    policy: Option<&'a ProjectPolicy>,
    policy_doc: Option<&'a Located<PolicyDocument>>,
) -> Vec<Layer<'a>> {
    let enforce = policy.map(|p| p.defaults.enforce);
    let mut out = Vec::new();
    for kind in precedence(enforce) {
        match kind {
            LayerKind::EnforcedPolicy | LayerKind::Policy => {
                if let (Some(p), Some(doc)) = (policy, policy_doc) {
                    let name = format!("policy {}", p.policy);
                    out.push(Layer {
                        kind,
                        value: serde_json::to_value(&p.defaults.config).unwrap_or_default(),
                        origin: Box::new(move |pointer| {
                            let at = format!("/spec/k8sExecutorDefaults/config{pointer}");
                            let pos = doc.spans.key(&at);
                            Origin {
                                kind,
                                layer: name.clone(),
                                file: Some(doc.file.clone()),
                                line: Some(pos.line),
                                pos: Some(pos),
                                pointer: Some(doc.spans.written(&at)),
                            }
                        }),
                    });
                }
            }
            LayerKind::Block => out.extend(block.map(|b| Layer::from_source(kind, "block", b))),
            LayerKind::Project => out.extend(
                sources
                    .project_config
                    .as_ref()
                    .map(|c| Layer::from_source(kind, "project", c)),
            ),
            LayerKind::Template => out.extend(
                sources
                    .template
                    .as_ref()
                    .map(|c| Layer::from_source(kind, "template", c)),
            ),
            LayerKind::EnvDefaults => out.push(env_layer(project)),
            LayerKind::Defaults => out.push(defaults_layer(project)),
        }
    }
    out
}

/// Env-var defaults from the project's literal env.
fn env_layer(project: &Located<ProjectDocument>) -> Layer<'_> {
    let mut value = json!({});
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    for (name, pointer) in ENV_DEFAULTS {
        if let Some((i, text)) = project
            .doc
            .spec
            .env
            .iter()
            .enumerate()
            .find_map(|(i, v)| (v.name == *name).then_some((i, v.value.as_ref()?)))
        {
            set_pointer(&mut value, pointer, Value::String(text.clone()));
            let at = format!("/spec/env/{i}/value");
            let pos = project.pos(&at);
            origins.insert(
                pointer.to_string(),
                Origin {
                    kind: LayerKind::EnvDefaults,
                    layer: format!("env {name}"),
                    file: Some(project.file.clone()),
                    line: Some(pos.line),
                    pos: Some(pos),
                    pointer: Some(at),
                },
            );
        }
    }
    Layer {
        kind: LayerKind::EnvDefaults,
        value,
        origin: Box::new(move |pointer| {
            origins.get(pointer).cloned().unwrap_or(Origin {
                kind: LayerKind::EnvDefaults,
                layer: "env".into(),
                file: None,
                line: None,
                pos: None,
                pointer: None,
            })
        }),
    }
}

/// Mage's hardcoded defaults, and the project's image for the Job's container (the image
/// the project's workspaces run, where Mage takes its own).
fn defaults_layer(project: &Located<ProjectDocument>) -> Layer<'_> {
    let mut value = json!({
        "namespace": DEFAULT_NAMESPACE,
        "job_name_prefix": DEFAULT_JOB_NAME_PREFIX,
        "container": {"name": DEFAULT_CONTAINER_NAME},
    });
    if let Some(image) = &project.doc.spec.image {
        set_pointer(&mut value, "/container/image", Value::String(image.clone()));
    }
    Layer {
        kind: LayerKind::Defaults,
        value,
        origin: Box::new(move |pointer| {
            if pointer == "/container/image" {
                let pos = project.pos("/spec/image");
                Origin {
                    kind: LayerKind::Defaults,
                    layer: "project image".into(),
                    file: Some(project.file.clone()),
                    line: Some(pos.line),
                    pos: Some(pos),
                    pointer: Some("/spec/image".into()),
                }
            } else {
                Origin {
                    kind: LayerKind::Defaults,
                    layer: "hardcoded default".into(),
                    file: None,
                    line: None,
                    pos: None,
                    pointer: None,
                }
            }
        }),
    }
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

type Merged = (Value, BTreeMap<String, Origin>, Vec<Conflict>);

/// Merge layers, highest priority first: the first layer to set a leaf wins it. A mapping
/// that is not taken whole merges key by key, so an empty one sets nothing.
fn merge(layers: &[Layer<'_>]) -> Merged {
    let mut result = json!({});
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    let mut won_by_enforced: BTreeMap<String, Value> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for layer in layers {
        let mut todo = vec![(String::new(), &layer.value)];
        while let Some((pointer, value)) = todo.pop() {
            if value.is_null() {
                continue;
            }
            if pointer.is_empty() || !is_whole(&pointer, value) {
                if let Some(map) = value.as_object() {
                    for (k, v) in map {
                        todo.push((
                            format!("{pointer}/{}", crate::load::yaml::escape_segment(k)),
                            v,
                        ));
                    }
                }
                continue;
            }
            if origins.contains_key(&pointer) {
                if layer.kind.is_user()
                    && let Some(winner) = won_by_enforced.get(&pointer)
                    && winner != value
                {
                    conflicts.push(Conflict {
                        pointer: pointer.clone(),
                        winner: winner.clone(),
                        loser: (layer.origin)(&pointer),
                        lost: value.clone(),
                    });
                }
                continue;
            }
            if layer.kind == LayerKind::EnforcedPolicy {
                won_by_enforced.insert(pointer.clone(), value.clone());
            }
            set_pointer(&mut result, &pointer, value.clone());
            origins.insert(pointer.clone(), (layer.origin)(&pointer));
        }
    }
    conflicts.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    (result, origins, conflicts)
}

/// What `{trigger_name}` in `job_name_prefix` stands for.
pub const TRIGGER_NAME: &str = "{trigger_name}";
/// The longest block run id: Mage's run ids are database integers (at most 2,147,483,647).
pub const LONGEST_BLOCK_RUN_ID: &str = "2147483647";
/// Longest Job name berth accepts. The Job controller names pods `<job name>-<5 random
/// characters>` and pod names are at most 63 characters: beyond 57 characters Kubernetes
/// cuts the Job's name in its pods' names, so pods no longer name their Job.
pub const MAX_JOB_NAME: usize = 63 - 6;

const JOB_NAME_HELP: &str = "Job names are `mage-{job_name_prefix}-block-{block_run_id}`: lower-case letters, digits and `-`, at most 57 characters for block run ids of up to 10 digits";

/// A Job name as Mage makes it: `mage-{job_name_prefix}-block-{block_run_id}`, with
/// `{trigger_name}` interpolated. Nothing is cleaned or cut: [`check_job_name`] says
/// whether Kubernetes takes it.
pub fn job_name(prefix: &str, trigger_name: &str, block_run_id: &str) -> String {
    format!(
        "mage-{}-block-{block_run_id}",
        prefix.replace(TRIGGER_NAME, trigger_name)
    )
}

/// Whether a Job name is a DNS-1123 label of at most [`MAX_JOB_NAME`] characters.
pub fn check_job_name(name: &str) -> Result<(), String> {
    crate::load::check_dns_label(name)?;
    if name.len() > MAX_JOB_NAME {
        return Err(format!(
            "it is {} characters; at most {MAX_JOB_NAME}, so that its pods (`<job>-xxxxx`, at most 63) keep the whole name",
            name.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
