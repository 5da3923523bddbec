//! The configuration every k8s block runs with, and what Mage makes of it in each
//! workspace of its project. Mage's own code decides ([`crate::mage::executor`]): the
//! block's `executor_config` over the Mage project's `k8s_executor_config`, then the
//! K8S_CONFIG_FILE template under both — each a top-level-key-by-key `merge_dict`, so a
//! section set in a higher layer replaces the lower one's whole. On top, the two layers of
//! Mage Pro that the seed documents describe and Mage's open-source code lacks: the
//! default config file (a Policy's `k8sExecutorDefaults`), merged the way Mage merges, and
//! the K8S_EXECUTOR_DEFAULT_* variables, which replace Mage's hardcoded defaults.
//!
//! | policy | highest → lowest, per top-level key |
//! |---|---|
//! | `enforce: true` | policy → block → project → template → env-var defaults → defaults |
//! | `enforce: false` | block → project → policy (fills gaps) → template → env-var defaults → defaults |
//! | none, or `enabled: false` | block → project → template → env-var defaults → defaults |
//!
//! [`precedence`] states it once; `berth explain` prints it and the README repeats it.
//! Mage reads KUBE_NAMESPACE, K8S_CONFIG_FILE, MAGE_CONTAINER_NAME, MAGE_CLUSTER_UUID and
//! the K8S_EXECUTOR_DEFAULT_* variables from its server's environment, which is the
//! workspace's: so each workspace gets its own [`Run`] of each block.

use crate::load::mage::{Block, ConfigSource, ExecutorSources, Pipeline};
use crate::load::yaml::{Pos, escape_segment};
use crate::load::{Diagnostic, Located, Repository};
use crate::mage::executor::{self as mage, Crash, Dict, Loaded, Namespace, ServerEnv};
use crate::model::{ExecutorDefaults, PolicyDocument};
use crate::resolve::{ResolvedWorkspace, VarValue};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The layers of executor configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// A policy with `enforce: true`: its top-level keys replace the block's and project's.
    EnforcedPolicy,
    /// The block's `executor_config` in its pipeline's `metadata.yaml`.
    Block,
    /// The Mage project's `k8s_executor_config`.
    Project,
    /// A policy with `enforce: false`: fills the top-level keys block and project leave unset.
    Policy,
    /// The full job template named by the workspace's K8S_CONFIG_FILE.
    Template,
    /// The workspace's K8S_EXECUTOR_DEFAULT_* variables.
    EnvDefaults,
    /// Mage's hardcoded defaults (and the Mage server pod's parts).
    Defaults,
}

impl LayerKind {
    pub fn describe(self) -> &'static str {
        match self {
            LayerKind::EnforcedPolicy => "policy (enforced)",
            LayerKind::Block => "block",
            LayerKind::Project => "project",
            LayerKind::Policy => "policy (fills gaps)",
            LayerKind::Template => "template",
            LayerKind::EnvDefaults => "env-var defaults",
            LayerKind::Defaults => "defaults",
        }
    }
}

/// The layers from highest to lowest priority, for a project whose executor policy has
/// `enforce` (`None`: no enabled policy). The first layer that sets a top-level key wins
/// it whole.
pub fn precedence(enforce: Option<bool>) -> Vec<LayerKind> {
    let mut order = Vec::with_capacity(6);
    if enforce == Some(true) {
        order.push(LayerKind::EnforcedPolicy);
    }
    order.extend([LayerKind::Block, LayerKind::Project]);
    if enforce == Some(false) {
        order.push(LayerKind::Policy);
    }
    order.extend([
        LayerKind::Template,
        LayerKind::EnvDefaults,
        LayerKind::Defaults,
    ]);
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
    /// `block`, `project`, `template`, `policy <name>`, `env <NAME>` or `hardcoded default`.
    pub layer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Exact position, for diagnostics.
    #[serde(skip)]
    pub pos: Option<Pos>,
    /// Pointer of the value in its file, for diagnostics.
    #[serde(skip)]
    pub pointer: Option<String>,
}

impl Origin {
    fn of(kind: LayerKind, layer: &str, source: &ConfigSource, pointer: &str) -> Origin {
        let pos = source.pos_of(pointer);
        Origin {
            kind,
            layer: layer.to_string(),
            file: Some(source.file.clone()),
            line: Some(pos.line),
            pos: Some(pos),
            pointer: Some(source.written_at(pointer)),
        }
    }

    fn hardcoded() -> Origin {
        Origin {
            kind: LayerKind::Defaults,
            layer: "hardcoded default".into(),
            file: None,
            line: None,
            pos: None,
            pointer: None,
        }
    }
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

/// One layer of one block's merge: its dict and where its values are written.
struct Layer<'a> {
    kind: LayerKind,
    name: String,
    value: Dict,
    source: LayerSource<'a>,
}

enum LayerSource<'a> {
    File(&'a ConfigSource),
    Policy(&'a Located<PolicyDocument>),
}

impl Layer<'_> {
    /// Where the value at `pointer` (of the merged config) is written in this layer.
    fn origin(&self, pointer: &str) -> Origin {
        match self.source {
            LayerSource::File(source) => Origin::of(self.kind, &self.name, source, pointer),
            LayerSource::Policy(doc) => {
                let at = format!("/spec/k8sExecutorDefaults/config{pointer}");
                let pos = doc.spans.key(&at);
                Origin {
                    kind: self.kind,
                    layer: self.name.clone(),
                    file: Some(doc.file.clone()),
                    line: Some(pos.line),
                    pos: Some(pos),
                    pointer: Some(at),
                }
            }
        }
    }
}

/// The executor config one block runs with, and its run in each workspace.
#[derive(Debug, Clone)]
pub struct BlockExecutor {
    pub project: String,
    pub pipeline: String,
    pub block: String,
    /// What `K8sBlockExecutor` hands to `K8sExecutorConfig.load`: the project's config
    /// updated with the block's, with Mage Pro's default config file merged in.
    pub config: Dict,
    /// The layer each top-level key of `config` comes from.
    pub origins: BTreeMap<String, Origin>,
    /// The names of the pipeline's triggers (for `{trigger_name}` in job names).
    pub triggers: Vec<String>,
    /// The block as Mage runs it in each workspace of its project, by workspace name.
    pub runs: Vec<Run>,
}

/// One block as the Mage server of one workspace runs it.
#[derive(Debug, Clone)]
pub struct Run {
    pub workspace: String,
    /// What Mage reads from that server's environment.
    pub env: ServerEnv,
    /// The template (repository path) K8S_CONFIG_FILE names there, when berth can read it.
    pub template: Option<String>,
    /// K8S_CONFIG_FILE's value when it names a file berth cannot read.
    pub unseen_template: Option<String>,
    /// The configuration Mage loads there: the block's, over the template.
    pub config: Dict,
    /// The layer of each top-level key of `config`.
    pub origins: BTreeMap<String, Origin>,
    /// What `K8sExecutorConfig.load` makes of it.
    pub loaded: Loaded,
    pub namespace: Namespace,
    /// Mage Pro's K8S_EXECUTOR_DEFAULT_* of the workspace.
    pub defaults: EnvDefaults,
}

/// The executor defaults policy that applies to a project, if any.
#[derive(Debug, Clone)]
pub struct ProjectPolicy {
    pub project: String,
    pub policy: String,
    pub defaults: ExecutorDefaults,
}

/// Mage Pro's K8S_EXECUTOR_DEFAULT_* variables and what each replaces of Mage's hardcoded
/// defaults: the Job container's CPU and memory requests and limits where nothing set
/// them, and the service account where no layer named one.
pub const ENV_DEFAULTS: &[(&str, &str)] = &[
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU",
        "/resources/requests/cpu",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_MEMORY",
        "/resources/requests/memory",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_CPU",
        "/resources/limits/cpu",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_MEMORY",
        "/resources/limits/memory",
    ),
    (
        "K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME",
        "/serviceAccountName",
    ),
];

impl Run {
    /// The resources of the Job's container: Mage's, then Mage Pro's env-var defaults.
    pub fn resources(&self) -> Value {
        let mut job = json!({"spec": {"template": {"spec": {"containers": [
            {"resources": mage::container_resources(&self.loaded)}
        ]}}}});
        self.defaults.fill(&mut job, &self.loaded);
        job.pointer("/spec/template/spec/containers/0/resources")
            .cloned()
            .unwrap_or(json!({}))
    }
}

/// The K8S_EXECUTOR_DEFAULT_* values of one workspace (Mage Pro, from the seed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvDefaults {
    /// (variable, value) for each that is set to a literal.
    pub values: Vec<(&'static str, String)>,
}

impl EnvDefaults {
    fn of(ws: &ResolvedWorkspace) -> EnvDefaults {
        EnvDefaults {
            values: ENV_DEFAULTS
                .iter()
                .filter_map(|(name, _)| Some((*name, literal(ws, name)?.to_string())))
                .collect(),
        }
    }

    /// Fill a Job (as [`mage::job`] built it) where Mage's hardcoded defaults stand:
    /// resources its container lacks, and the service account when no layer named one.
    pub fn fill(&self, job: &mut Value, loaded: &Loaded) {
        let names_account = loaded.pod.service_account_name.is_some();
        for (name, value) in &self.values {
            let Some((_, target)) = ENV_DEFAULTS.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if *target == "/serviceAccountName" {
                if !names_account && let Some(spec) = job.pointer_mut("/spec/template/spec") {
                    spec["serviceAccountName"] = json!(value);
                }
                continue;
            }
            let Some(container) = job.pointer_mut("/spec/template/spec/containers/0") else {
                continue;
            };
            if container.pointer(target).is_some() {
                continue;
            }
            let mut parts = target.trim_start_matches('/').split('/');
            let (Some(resources), Some(section), Some(key)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let slot = &mut container[resources];
            if !slot.is_object() {
                *slot = json!({});
            }
            let section = &mut slot[section];
            if !section.is_object() {
                *section = json!({});
            }
            section[key] = json!(value);
        }
    }
}

/// A literal variable of a workspace's effective environment.
fn literal<'a>(ws: &'a ResolvedWorkspace, name: &str) -> Option<&'a str> {
    ws.env
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| match &v.value {
            VarValue::Literal(s) => Some(s.as_str()),
            VarValue::Secret(_) => None,
        })
}

/// What Mage's executor reads from a workspace's environment.
pub fn server_env(ws: &ResolvedWorkspace) -> ServerEnv {
    ServerEnv {
        kube_namespace: literal(ws, crate::resolve::KUBE_NAMESPACE_VAR).map(str::to_string),
        container_name: literal(ws, "MAGE_CONTAINER_NAME").map(str::to_string),
        cluster_uuid: literal(ws, "MAGE_CLUSTER_UUID").map(str::to_string),
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

/// The effective config of every k8s block of every project, its run in each workspace,
/// and the findings: what Mage would crash on, what the API server would refuse of what
/// Mage sends, and sections an enforced policy replaces.
pub fn resolve(
    repo: &Repository,
    policies: &[ProjectPolicy],
    workspaces: &[ResolvedWorkspace],
) -> (Vec<BlockExecutor>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diagnostics = Vec::new();
    let projects = repo.projects_by_name();
    let by_project: HashMap<&str, &ProjectPolicy> = policies
        .iter()
        .rev()
        .map(|p| (p.project.as_str(), p))
        .collect();
    let mut members_of: HashMap<&str, Vec<&ResolvedWorkspace>> = HashMap::new();
    for w in workspaces {
        members_of.entry(w.project.as_str()).or_default().push(w);
    }
    for sources in &repo.executor {
        let Some(project) = projects.get(sources.project.as_str()).copied() else {
            continue;
        };
        let policy = by_project.get(sources.project.as_str()).copied();
        let policy_doc = policy.and_then(|p| {
            repo.policies
                .iter()
                .find(|d| d.doc.metadata.name == p.policy)
        });
        let members = members_of
            .get(sources.project.as_str())
            .cloned()
            .unwrap_or_default();
        if !sources.pipelines.iter().all(|p| p.blocks.is_empty()) {
            diagnostics.extend(unread_settings(repo, project, &members));
        }
        let mut used = Used::default();
        for pipeline in &sources.pipelines {
            for block in &pipeline.blocks {
                let layers = layers(sources, block.config.as_ref(), policy, policy_doc);
                let (config, origins) = merge(&layers);
                if let (Some(policy), Some(_)) = (policy, policy_doc) {
                    diagnostics.extend(replaced_sections(&layers, policy));
                }
                diagnostics.extend(narrowed_sections(&layers));
                let mut resolved = BlockExecutor {
                    project: sources.project.clone(),
                    pipeline: pipeline.uuid.clone(),
                    block: block.uuid.clone(),
                    config,
                    origins,
                    triggers: pipeline.triggers.iter().map(|t| t.name.clone()).collect(),
                    runs: Vec::new(),
                };
                for ws in &members {
                    let template = template_for(sources, ws).and_then(|t| t.source.as_ref());
                    mark_used(&resolved, template, &mut used);
                    match run(&resolved, &layers, sources, ws) {
                        Ok(run) => {
                            diagnostics.extend(check_run(&resolved, &run, pipeline, block));
                            resolved.runs.push(run);
                        }
                        Err(failed) => {
                            let (crash, at) = *failed;
                            diagnostics.push(crash_diagnostic(
                                &crash, &at, &resolved, ws, pipeline, block,
                            ))
                        }
                    }
                }
                out.push(resolved);
            }
        }
        diagnostics.extend(layer_problems(sources, &used));
    }
    dedup(&mut diagnostics);
    (out, diagnostics)
}

/// The (file, pointer) of every layer section some run takes: its problems are errors,
/// the others' warnings.
type Used = std::collections::HashSet<(String, String)>;

/// Marks the sections a run of `resolved` takes: those its merged config came from, and
/// the workspace template's keys no layer above it set.
fn mark_used(
    resolved: &BlockExecutor,
    template: Option<&crate::load::mage::ConfigSource>,
    used: &mut Used,
) {
    for origin in resolved.origins.values() {
        if let (Some(file), Some(pointer)) = (&origin.file, &origin.pointer) {
            used.insert((file.clone(), pointer.clone()));
        }
    }
    let Some(t) = template else {
        return;
    };
    for key in t.value.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !resolved.config.contains_key(key) {
            used.insert((
                t.file.clone(),
                format!("{}/{}", t.pointer, escape_segment(key)),
            ));
        }
    }
}

/// The problems the loader kept with each layer's top-level keys: errors where a run takes
/// the key from that layer, warnings where none does.
fn layer_problems(sources: &ExecutorSources, used: &Used) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for layer in sources.layers() {
        for (key, problem) in &layer.problems {
            let at = (
                layer.file.clone(),
                format!("{}/{}", layer.pointer, escape_segment(key)),
            );
            if used.contains(&at) {
                out.push(problem.clone());
            } else {
                let mut warning = problem.clone();
                warning.severity = crate::load::Severity::Warning;
                warning.help = Some(format!(
                    "no k8s block takes `{key}` from here now (a higher layer sets it, or no workspace runs it); {}",
                    problem.help.as_deref().unwrap_or("fix it before one does")
                ));
                out.push(warning);
            }
        }
    }
    out
}

/// The variables Mage's executor reads from its server's environment.
pub const SERVER_SETTINGS: &[&str] = &[
    "K8S_CONFIG_FILE",
    "MAGE_CONTAINER_NAME",
    "MAGE_CLUSTER_UUID",
    "K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU",
    "K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_MEMORY",
    "K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_CPU",
    "K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_MEMORY",
    "K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME",
];

/// Project variables Mage's executor reads but no workspace of the project inherits (its
/// inheritance rules leave them out): Mage, which runs in the workspaces, never sees them.
/// Also a MAGE_CONTAINER_NAME that names no container of the workspace's pod, where Mage
/// falls back to the first container.
fn unread_settings(
    repo: &Repository,
    project: &Located<crate::model::ProjectDocument>,
    members: &[&ResolvedWorkspace],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, var) in project.doc.spec.env.iter().enumerate() {
        if !SERVER_SETTINGS.contains(&var.name.as_str()) || members.is_empty() {
            continue;
        }
        let inherits = |ws: &&&ResolvedWorkspace| {
            ws.env
                .iter()
                .any(|v| v.name == var.name && v.source.is_inherited())
        };
        if members.iter().any(|ws| inherits(&ws)) {
            continue;
        }
        let at = format!("/spec/env/{i}");
        out.push(
            Diagnostic::warning(
                &project.file,
                project.spans.key(&at),
                &at,
                format!(
                    "Mage's executor reads {} in the workspaces' Mage servers, and no workspace of project `{}` inherits it: it configures nothing",
                    var.name, project.doc.metadata.name
                ),
            )
            .with_help(format!("add `{}` (or `K8S_*`) to `inheritance.userDefinedVars`", var.name)),
        );
    }
    for ws in members {
        if let Some(name) = literal(ws, "MAGE_CONTAINER_NAME")
            && name != "workspace"
            && !name.is_empty()
        {
            // Where the value is written: the workspace's own env, else the project's.
            let own = repo
                .workspaces
                .iter()
                .find(|w| w.doc.metadata.name == ws.name);
            let written = |env: &[crate::model::EnvVar]| {
                env.iter()
                    .position(|v| v.name == "MAGE_CONTAINER_NAME")
                    .map(|i| format!("/spec/env/{i}/value"))
            };
            let (file, pos, field) = match own.and_then(|w| Some((w, written(&w.doc.spec.env)?))) {
                Some((w, at)) => (w.file.clone(), w.pos(&at), at),
                None => {
                    let at = written(&project.doc.spec.env).unwrap_or_default();
                    (project.file.clone(), project.pos(&at), at)
                }
            };
            out.push(
                Diagnostic::warning(
                    &file,
                    pos,
                    &field,
                    format!(
                        "MAGE_CONTAINER_NAME `{name}` names no container of workspace `{}`'s pod (its Mage container is `workspace`): Mage falls back to the first container",
                        ws.name
                    ),
                )
                .with_help("remove it: berth's workspace pod runs Mage in its first container"),
            );
        }
    }
    out
}

/// The namespaces each workspace's Mage creates Jobs in, sorted, by workspace: grouped in
/// one pass over the runs (a scan of every run per workspace is quadratic in a fleet).
pub fn namespaces_by_workspace(executors: &[BlockExecutor]) -> HashMap<&str, Vec<String>> {
    let mut out: HashMap<&str, Vec<String>> = HashMap::new();
    for run in executors.iter().flat_map(|b| &b.runs) {
        if let Namespace::Known(ns) = &run.namespace {
            out.entry(run.workspace.as_str())
                .or_default()
                .push(ns.clone());
        }
    }
    for namespaces in out.values_mut() {
        namespaces.sort();
        namespaces.dedup();
    }
    out
}

/// The K8S_CONFIG_FILE template of a workspace, by its value there.
fn template_for<'a>(
    sources: &'a ExecutorSources,
    ws: &ResolvedWorkspace,
) -> Option<&'a crate::load::mage::Template> {
    let value = literal(ws, "K8S_CONFIG_FILE")?;
    sources.templates.iter().find(|t| t.value == value)
}

/// One finding per place and message: a block's problem shows once, not once per
/// workspace that runs it.
fn dedup(diagnostics: &mut Vec<Diagnostic>) {
    let mut seen = std::collections::HashSet::new();
    diagnostics.retain(|d| {
        seen.insert(format!(
            "{}\0{}\0{}\0{}",
            d.file, d.line, d.column, d.message
        ))
    });
}

/// The block's run in one workspace: the template its K8S_CONFIG_FILE names, then
/// `K8sExecutorConfig.load`. A crash comes back with the origin of its setting.
fn run(
    block: &BlockExecutor,
    layers: &[Layer<'_>],
    sources: &ExecutorSources,
    ws: &ResolvedWorkspace,
) -> Result<Run, Box<(Crash, Origin)>> {
    let env = server_env(ws);
    let template = template_for(sources, ws);
    let source = template.and_then(|t| t.source.as_ref());
    let template_dict = source.and_then(|s| s.value.as_object());
    let mut origins = block.origins.clone();
    if let (Some(dict), Some(source)) = (template_dict, source) {
        for key in dict.keys().filter(|k| !block.config.contains_key(*k)) {
            let pointer = format!("/{}", escape_segment(key));
            origins.insert(
                key.clone(),
                Origin::of(LayerKind::Template, "template", source, &pointer),
            );
        }
    }
    let origin_of = |pointer: &str| -> Origin {
        let key = pointer
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .replace("~1", "/")
            .replace("~0", "~");
        match origins.get(&key) {
            Some(origin) if origin.kind == LayerKind::Template => source
                .map(|s| Origin::of(LayerKind::Template, "template", s, pointer))
                .unwrap_or_else(Origin::hardcoded),
            Some(origin) => layers
                .iter()
                .find(|l| l.kind == origin.kind && l.value.contains_key(&key))
                .map(|l| l.origin(pointer))
                .unwrap_or_else(Origin::hardcoded),
            None => Origin::hardcoded(),
        }
    };
    let located = |crash: Crash| {
        let at = origin_of(&crash.pointer);
        Box::new((crash, at))
    };
    let loaded = mage::load(&block.config, template_dict, &env).map_err(located)?;
    let namespace = mage::namespace(&loaded, &env).map_err(located)?;
    let config = mage::merge_dict(template_dict.unwrap_or(&Dict::new()), &block.config);
    Ok(Run {
        workspace: ws.name.clone(),
        config,
        env,
        template: source.map(|s| s.file.clone()),
        unseen_template: template
            .filter(|t| t.source.is_none())
            .map(|t| t.value.clone()),
        origins,
        loaded,
        namespace,
        defaults: EnvDefaults::of(ws),
    })
}

fn crash_diagnostic(
    crash: &Crash,
    at: &Origin,
    block: &BlockExecutor,
    ws: &ResolvedWorkspace,
    pipeline: &Pipeline,
    source: &Block,
) -> Diagnostic {
    let message = format!(
        "Mage {} fails k8s block `{}` on this: {}",
        crate::mage::MAGE_VERSION,
        block.block,
        crash.error
    );
    let help = format!(
        "Mage's executor code raises here for every run of the block (seen in workspace `{}`); berth predicts no Job for it",
        ws.name
    );
    match (&at.file, at.pos) {
        (Some(file), Some(pos)) => Diagnostic::error(
            file,
            pos,
            at.pointer.as_deref().unwrap_or(&crash.pointer),
            message,
        )
        .with_help(help),
        _ => {
            Diagnostic::error(&pipeline.file, source.pos, &source.pointer, message).with_help(help)
        }
    }
}

fn layers<'a>(
    sources: &'a ExecutorSources,
    block: Option<&'a ConfigSource>,
    policy: Option<&'a ProjectPolicy>,
    policy_doc: Option<&'a Located<PolicyDocument>>,
) -> Vec<Layer<'a>> {
    let enforce = policy.map(|p| p.defaults.enforce);
    let dict = |source: &ConfigSource| source.value.as_object().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for kind in precedence(enforce) {
        match kind {
            LayerKind::EnforcedPolicy | LayerKind::Policy => {
                if let (Some(p), Some(doc)) = (policy, policy_doc) {
                    out.push(Layer {
                        kind,
                        name: format!("policy {}", p.policy),
                        value: p.defaults.config.clone(),
                        source: LayerSource::Policy(doc),
                    });
                }
            }
            LayerKind::Block => out.extend(block.map(|b| Layer {
                kind,
                name: "block".into(),
                value: dict(b),
                source: LayerSource::File(b),
            })),
            LayerKind::Project => out.extend(sources.project_config.as_ref().map(|c| Layer {
                kind,
                name: "project".into(),
                value: dict(c),
                source: LayerSource::File(c),
            })),
            // Per workspace, in `run`; the last two are not dicts.
            LayerKind::Template | LayerKind::EnvDefaults | LayerKind::Defaults => {}
        }
    }
    out
}

/// `merge_dict` of the layers, lowest first, so that the highest sets each top-level key.
fn merge(layers: &[Layer<'_>]) -> (Dict, BTreeMap<String, Origin>) {
    let mut merged = Dict::new();
    let mut origins = BTreeMap::new();
    for layer in layers.iter().rev() {
        merged = mage::merge_dict(&merged, &layer.value);
        for key in layer.value.keys() {
            let pointer = format!("/{}", escape_segment(key));
            origins.insert(key.clone(), layer.origin(&pointer));
        }
    }
    (merged, origins)
}

/// An enforced policy's top-level keys replace the block's and project's sections whole:
/// say so where a user section with another value is replaced (Mage Pro's "conflicting
/// values"), an error under `strictConflicts`.
fn replaced_sections(layers: &[Layer<'_>], policy: &ProjectPolicy) -> Vec<Diagnostic> {
    let Some(enforced) = layers.iter().find(|l| l.kind == LayerKind::EnforcedPolicy) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for layer in layers
        .iter()
        .filter(|l| matches!(l.kind, LayerKind::Block | LayerKind::Project))
    {
        // `create_job_object` merges `container_config` over the container `container`
        // built: an enforced `container` does not hold against it.
        if enforced.value.contains_key("container")
            && let Some(config) = layer.value.get("container_config")
            && crate::mage::truthy(Some(config))
        {
            let at = layer.origin("/container_config");
            if let (Some(file), Some(pos)) = (&at.file, at.pos) {
                out.push(
                    Diagnostic::warning(
                        file,
                        pos,
                        at.pointer.as_deref().unwrap_or_default(),
                        format!(
                            "the {}'s `container_config` merges over the enforced `container` of policy `{}`: what it sets wins in the Job",
                            layer.name, policy.policy
                        ),
                    )
                    .with_help("a guardrail `forbiddenExecutorSettings: [container_config]` refuses it"),
                );
            }
        }
        for (key, theirs) in &layer.value {
            let Some(ours) = enforced.value.get(key) else {
                continue;
            };
            if ours == theirs {
                continue;
            }
            let at = layer.origin(&format!("/{}", escape_segment(key)));
            let message = format!(
                "policy `{}` enforces `{key}` ({}), which replaces the {}'s `{key}` ({}) whole: Mage merges top-level keys only",
                policy.policy,
                shown(ours),
                layer.name,
                shown(theirs)
            );
            let (Some(file), Some(pos)) = (&at.file, at.pos) else {
                continue;
            };
            let field = at.pointer.clone().unwrap_or_default();
            let help = "repeat in the policy what every block needs of this section, or leave the key out of the policy";
            out.push(if policy.defaults.strict_conflicts {
                Diagnostic::error(file, pos, &field, message)
                    .with_help("the policy asks for strict conflict checking")
            } else {
                Diagnostic::warning(file, pos, &field, message).with_help(help)
            });
        }
    }
    out
}

/// Where a block's section replaces the project's (Mage merges top-level keys only), the
/// keys of the project's that the Job loses: a warning at the block's section, which says
/// what to repeat there to keep them. The change from a key-by-key merge most likely to
/// have changed a repository's meaning (a block's `resource_limits: {memory: 4Gi}` over a
/// project's `{cpu: 1, memory: 2Gi}` leaves no CPU limit).
fn narrowed_sections(layers: &[Layer<'_>]) -> Vec<Diagnostic> {
    let (Some(block), Some(project)) = (
        layers.iter().find(|l| l.kind == LayerKind::Block),
        layers.iter().find(|l| l.kind == LayerKind::Project),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, ours) in &block.value {
        let (Some(ours), Some(theirs)) = (
            ours.as_object(),
            project.value.get(key).and_then(Value::as_object),
        ) else {
            continue;
        };
        let lost: Vec<String> = theirs
            .iter()
            .filter(|(k, _)| !ours.contains_key(*k))
            .map(|(k, v)| format!("{k}: {}", shown(v)))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let at = block.origin(&format!("/{}", escape_segment(key)));
        let from = project.origin(&format!("/{}", escape_segment(key)));
        let from = match (&from.file, from.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            _ => from.layer.clone(),
        };
        let (Some(file), Some(pos)) = (&at.file, at.pos) else {
            continue;
        };
        out.push(
            Diagnostic::warning(
                file,
                pos,
                at.pointer.as_deref().unwrap_or_default(),
                format!(
                    "this `{key}` replaces the project's ({from}) whole, as Mage merges top-level keys only: the Job gets none of {}",
                    lost.join(", ")
                ),
            )
            .with_help("repeat here what the block should keep of the project's section"),
        );
    }
    out
}

/// A value for a message, cut short.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        text.chars().take(57).collect::<String>() + "..."
    } else {
        text
    }
}

/// A place in the repository for a diagnostic: file, position, field.
type Place = (String, Pos, String);

/// The longest block run id: Mage's run ids are database integers (at most 2,147,483,647).
pub const LONGEST_BLOCK_RUN_ID: &str = "2147483647";
/// Longest Job name the API server takes: the Job controller labels its pods with the
/// Job's name (`batch.kubernetes.io/job-name`), and a label value has at most 63
/// characters.
pub const MAX_JOB_NAME: usize = 63;

/// Whether the API server takes a Job name: a DNS-1123 subdomain that fits a label value.
pub fn check_job_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_JOB_NAME {
        return Err(format!(
            "it is {} characters; at most {MAX_JOB_NAME} (the Job's name is a label of its pods)",
            name.len()
        ));
    }
    let ok = name
        .split('.')
        .all(|part| crate::load::check_dns_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err("lower-case letters, digits, `-` and `.` only, starting and ending with a letter or digit".into())
    }
}

/// What the API server would refuse of a run's Job, and what Mage cannot be predicted to
/// do: each at the layer that set the value.
fn check_run(
    block: &BlockExecutor,
    run: &Run,
    pipeline: &Pipeline,
    source: &Block,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let at = |key: &str| -> Option<Place> {
        let origin = run.origins.get(key)?;
        Some((origin.file.clone()?, origin.pos?, origin.pointer.clone()?))
    };
    let fallback = || (pipeline.file.clone(), source.pos, source.pointer.clone());
    out.extend(job_name_checks(block, run, pipeline, &at, &fallback));
    // `metadata` resets the namespace: a `namespace` beside it is not used.
    if run.loaded.meta.is_some()
        && crate::mage::truthy(run.config.get("namespace"))
        && let Some((file, pos, field)) = at("namespace")
    {
        let by = run
            .origins
            .get("metadata")
            .map(|o| o.to_string())
            .unwrap_or_default();
        out.push(
            Diagnostic::warning(
                &file,
                pos,
                &field,
                format!(
                    "Mage ignores it: with `metadata` set (by the {by}), the Jobs of k8s block `{}` go to `metadata.namespace`, else KUBE_NAMESPACE",
                    block.block
                ),
            )
            .with_help("set `metadata.namespace` in the layer that sets `metadata`, or remove this key"),
        );
    }
    out.extend(namespace_checks(block, run, &at, &fallback));
    if run.loaded.pod.image_pull_secrets.is_some() {
        let (file, pos, field) = at("pod").unwrap_or_else(fallback);
        out.push(
            Diagnostic::error(
                &file,
                pos,
                &field,
                format!("Mage {} sends `pod.image_pull_secrets` as one object, not a list: the API server refuses every Job of k8s block `{}`", crate::mage::MAGE_VERSION, block.block),
            )
            .with_help("leave it out: Mage then gives the Job the workspace pod's imagePullSecrets (a workspace's `kubernetes.imagePullSecrets`)"),
        );
    }
    out.extend(resource_checks(block, run, &at, &fallback));
    out
}

/// The Job names Mage gives a run, one per trigger the prefix names (or the prefix
/// alone): a prefix Mage fails on, or names the API server refuses.
fn job_name_checks(
    block: &BlockExecutor,
    run: &Run,
    pipeline: &Pipeline,
    at: &dyn Fn(&str) -> Option<Place>,
    fallback: &dyn Fn() -> Place,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let triggers: Vec<(&str, Option<&crate::load::mage::Trigger>)> = if pipeline.triggers.is_empty()
    {
        vec![("", None)]
    } else {
        pipeline
            .triggers
            .iter()
            .map(|t| (t.name.as_str(), Some(t)))
            .collect()
    };
    for (name, trigger) in triggers {
        let (file, pos, field) = match trigger {
            Some(t) if mage_prefix_uses_trigger(&run.loaded) => {
                (t.file.clone(), t.pos, t.pointer.clone())
            }
            _ => at("job_name_prefix").unwrap_or_else(fallback),
        };
        match mage::job_name_prefix(run.loaded.job_name_prefix.as_ref(), name) {
            Err(crash) => {
                let (file, pos, field) = at("job_name_prefix").unwrap_or_else(fallback);
                out.push(Diagnostic::error(
                    &file,
                    pos,
                    &field,
                    format!("Mage {} fails k8s block `{}` on its job_name_prefix: {}", crate::mage::MAGE_VERSION, block.block, crash.error),
                ).with_help("`{trigger_name}` is the only field Mage fills in; write a literal brace as `{{` or `}}`"));
                break;
            }
            Ok(prefix) => {
                let job = mage::job_name(&run.env, &prefix, LONGEST_BLOCK_RUN_ID);
                if let Err(why) = check_job_name(&job) {
                    let what = match trigger {
                        Some(t) if mage_prefix_uses_trigger(&run.loaded) => {
                            format!("trigger `{}` gives", t.name)
                        }
                        _ => "gives".to_string(),
                    };
                    out.push(Diagnostic::error(
                        &file,
                        pos,
                        &field,
                        format!("k8s block `{}` {what} Job names like `{job}`, which the API server refuses: {why}", block.block),
                    ).with_help("Job names are `{MAGE_CLUSTER_UUID}-{job_name_prefix}-block-{block_run_id}` (block run ids of up to 10 digits)"));
                }
            }
        }
    }
    out
}

/// Where a run's Jobs go: a namespace outside the workspace's (granted nothing), one the
/// API server refuses, or one Mage renders at run time.
fn namespace_checks(
    block: &BlockExecutor,
    run: &Run,
    at: &dyn Fn(&str) -> Option<Place>,
    fallback: &dyn Fn() -> Place,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // The namespace is the layer's `namespace`, else its `metadata`'s.
    let (ns_file, ns_pos, ns_field) = at("namespace")
        .or_else(|| at("metadata"))
        .unwrap_or_else(fallback);
    match &run.namespace {
        Namespace::Known(namespace)
            if namespace.as_str() != run.env.default_namespace()
                && crate::load::check_dns_label(namespace).is_ok() =>
        {
            out.push(Diagnostic::warning(
                &ns_file,
                ns_pos,
                &ns_field,
                format!("k8s block `{}` creates its Jobs in namespace `{namespace}`, outside workspace `{}`'s own: berth grants Mage's executor nothing there", block.block, run.workspace),
            ).with_help("grant the workspace's service account `create`, `get` and `delete` on jobs there, or leave the namespace to KUBE_NAMESPACE"));
        }
        Namespace::Known(namespace) => {
            if let Err(why) = crate::load::check_dns_label(namespace) {
                out.push(Diagnostic::error(
                    &ns_file,
                    ns_pos,
                    &ns_field,
                    format!("k8s block `{}` would create its Jobs in namespace `{namespace}`, which the API server refuses: {why}", block.block),
                ));
            }
        }
        Namespace::Templated(text) => {
            out.push(Diagnostic::warning(
                &ns_file,
                ns_pos,
                &ns_field,
                format!("Mage renders the namespace `{text}` at run time: berth cannot tell where k8s block `{}`'s Jobs go, nor grant anything there", block.block),
            ));
        }
    }
    out
}

fn mage_prefix_uses_trigger(loaded: &Loaded) -> bool {
    loaded
        .job_name_prefix
        .as_ref()
        .and_then(Value::as_str)
        .is_some_and(|p| p.contains(mage::TRIGGER_NAME))
}

/// Quantities the API server cannot read in the resources the Job's container ends up
/// with, and its rules for requests and limits. (What it drops of the rest of what Mage
/// sends is render's finding: it needs the workspace's pod.)
fn resource_checks(
    block: &BlockExecutor,
    run: &Run,
    at: &dyn Fn(&str) -> Option<Place>,
    fallback: &dyn Fn() -> Place,
) -> Vec<Diagnostic> {
    let loaded = &run.loaded;
    let mut out = Vec::new();
    // The resources the Job's container ends up with.
    let resources = run.resources();
    for section in ["limits", "requests"] {
        for (name, quantity) in resources
            .get(section)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let text = match quantity {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if text.as_deref().and_then(crate::quantity::parse).is_none() {
                let key = resource_key(loaded, section);
                let (file, pos, field) = at(key).unwrap_or_else(fallback);
                out.push(Diagnostic::error(
                    &file,
                    pos,
                    &field,
                    format!("`{name}: {}` in the {section} of k8s block `{}`'s Job is not a Kubernetes quantity: the API server refuses the Job", shown(quantity), block.block),
                ).with_help("quantities look like `500m`, `2`, `1.5`, `512Mi`, `4Gi`"));
            }
        }
    }
    out.extend(resource_rules(block, loaded, &resources, at, fallback));
    out
}

/// The API server's rules for a container's resources: a request of an extended resource
/// (`nvidia.com/gpu`) needs an equal limit, and no request exceeds its limit.
fn resource_rules(
    block: &BlockExecutor,
    loaded: &Loaded,
    resources: &Value,
    at: &dyn Fn(&str) -> Option<Place>,
    fallback: &dyn Fn() -> Place,
) -> Vec<Diagnostic> {
    let amount = |v: &Value| match v {
        Value::String(s) => crate::quantity::parse(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    let limits = resources.get("limits").and_then(Value::as_object);
    let mut out = Vec::new();
    for (name, request) in resources
        .get("requests")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let limit = limits.and_then(|l| l.get(name));
        let extended = name.contains('/') && !name.starts_with("kubernetes.io/");
        let problem = match (limit.and_then(amount), amount(request)) {
            (None, Some(_)) if extended => Some(format!(
                "requests `{name}` without a limit: the API server wants an equal limit for a resource it cannot overcommit"
            )),
            (Some(l), Some(r)) if extended && l != r => Some(format!(
                "requests {} of `{name}` but limits {}: the API server wants them equal",
                shown(request),
                limit.map(shown).unwrap_or_default()
            )),
            (Some(l), Some(r)) if r > l => Some(format!(
                "requests {} of `{name}`, above its limit {}: the API server refuses it",
                shown(request),
                limit.map(shown).unwrap_or_default()
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            let (file, pos, field) = at(resource_key(loaded, "requests")).unwrap_or_else(fallback);
            out.push(
                Diagnostic::error(
                    &file,
                    pos,
                    &field,
                    format!("the Job of k8s block `{}` {problem}", block.block),
                )
                .with_help("Mage merges top-level keys whole: limits and requests from different layers do not combine"),
            );
        }
    }
    out
}

/// The top-level key that gives the Job's container its resources
/// ([`mage::container_resources`]).
pub(crate) fn resource_key(loaded: &Loaded, section: &str) -> &'static str {
    if loaded
        .container_config
        .as_ref()
        .is_some_and(|c| c.get("resources").is_some())
    {
        "container_config"
    } else if crate::mage::truthy(loaded.resource_limits.as_ref())
        || crate::mage::truthy(loaded.resource_requests.as_ref())
    {
        if section == "limits" {
            "resource_limits"
        } else {
            "resource_requests"
        }
    } else {
        "container"
    }
}

#[cfg(test)]
mod tests;
