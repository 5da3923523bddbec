//! Resolve: validated documents → what each workspace effectively is. The effective
//! environment (with the source of every variable), the image and code path it runs with,
//! and the policy guardrails it must satisfy. Pure and deterministic.

mod env;
pub mod executor;
mod guardrails;
pub mod rollout;
pub use berth_load::pattern;

pub use env::{
    EffectiveVar, KUBE_NAMESPACE_VAR, Source, VarValue, effective_env, env_hash, inherited_env,
    is_project_setting, with_own_env,
};

use crate::load::{Diagnostic, Located, Repository};
use crate::model::{ProjectDocument, ProjectSpec, Shared, WorkspaceDocument, WorkspaceSpec};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// berth's own image, which runs the activity agent unless a project names another.
pub const DEFAULT_AGENT_IMAGE: &str =
    concat!("ghcr.io/berth-dev/berth:", env!("CARGO_PKG_VERSION"));

/// Mage's default USER_CODE_PATH.
pub const DEFAULT_USER_CODE_PATH: &str = "/home/src/default_repo";

/// One workspace with everything inherited from its project worked out.
#[derive(Debug, Clone)]
pub struct ResolvedWorkspace {
    pub name: String,
    pub project: String,
    pub namespace: String,
    pub environment: Option<String>,
    pub image: String,
    pub user_code_path: String,
    /// The effective environment, sorted by name. What it inherits is shared with the
    /// other workspaces of its project, environment and code path.
    pub env: Vec<Shared<EffectiveVar>>,
    /// Labels and annotations: the project's, then the workspace's own.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The workspace's spec, shared with its loaded document.
    pub spec: Shared<WorkspaceSpec>,
    /// The file that declares the workspace.
    pub file: String,
    /// Its document's place in the repository's workspaces (those it was resolved from).
    pub document: usize,
    /// Whether the project's executor defaults file is mounted (K8S_DEFAULT_CONFIG_PATH).
    pub executor_defaults: bool,
    /// The namespaces the workspace's Mage creates k8s blocks' Jobs in (empty: it runs
    /// none): its Mage server gets a token and the rights its executor needs there.
    pub executor_namespaces: Vec<String>,
    /// Lifecycle scripts from the repository, by their key in the scripts ConfigMap.
    pub scripts: BTreeMap<String, String>,
    /// Image of the activity agent sidecar (workspaces with an idle timeout).
    pub agent_image: String,
    /// How its restarts roll with the rest of its project.
    pub rollout: rollout::RolloutPolicy,
}

/// One project as the cluster sees it.
#[derive(Debug, Clone)]
pub struct ResolvedProject {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub spec: ProjectSpec,
}

/// The resolved repository: sorted by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub projects: Vec<ResolvedProject>,
    pub workspaces: Vec<ResolvedWorkspace>,
    /// The effective executor config of every k8s block, and its run in each workspace.
    pub executors: Vec<executor::BlockExecutor>,
    /// The executor-defaults policy of each project that has one.
    pub executor_policies: Vec<executor::ProjectPolicy>,
}

/// Where workspaces find Mage's default executor config file (K8S_DEFAULT_CONFIG_PATH).
pub const EXECUTOR_DEFAULTS_DIR: &str = "/etc/mage/k8s-executor";
pub const EXECUTOR_DEFAULTS_FILE: &str = "default_config.yaml";

/// Resolve a repository that loaded without errors. Guardrail violations come back as
/// diagnostics (errors), pointing at the workspace field that breaks the policy.
pub fn resolve(repo: &Repository) -> (Resolved, Vec<Diagnostic>) {
    let mut resolved = Resolved::default();
    let (policies, mut diagnostics) = executor::project_policies(repo);
    for p in &repo.projects {
        resolved.projects.push(ResolvedProject {
            name: p.doc.metadata.name.clone(),
            namespace: p.doc.spec.namespace.clone(),
            labels: p.doc.metadata.labels.clone(),
            spec: p.doc.spec.clone(),
        });
    }
    // Projects by name: one lookup per workspace, not a scan of every project.
    let projects = repo.projects_by_name();
    let with_defaults: std::collections::HashSet<&str> =
        policies.iter().map(|p| p.project.as_str()).collect();
    // What the workspaces of one project, environment and code path inherit, built once.
    let mut inherited: HashMap<Group, Vec<Shared<EffectiveVar>>> = HashMap::new();
    for w in &repo.workspaces {
        if let Some(project) = projects.get(w.doc.spec.project.as_str()) {
            let group @ (_, environment, code_path) = group_of(project, w);
            inherited
                .entry(group)
                .or_insert_with(|| inherited_env(&project.doc.spec, environment, code_path));
        }
    }
    resolved.workspaces = repo
        .workspaces
        .par_iter()
        .enumerate()
        .filter_map(|(document, w)| {
            // A workspace of an unknown project is reported by the loader.
            let project = *projects.get(w.doc.spec.project.as_str())?;
            Some(resolve_workspace(
                (document, w),
                project,
                inherited
                    .get(&group_of(project, w))
                    .map_or(&[][..], Vec::as_slice),
                with_defaults.contains(project.doc.metadata.name.as_str()),
                repo,
            ))
        })
        .collect();
    resolved
        .projects
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    resolved
        .workspaces
        .par_sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let (executors, findings) = executor::resolve(repo, &policies, &resolved.workspaces);
    let namespaces = executor::namespaces_by_workspace(&executors);
    for ws in &mut resolved.workspaces {
        if let Some(of_ws) = namespaces.get(ws.name.as_str()) {
            ws.executor_namespaces = of_ws.clone();
        }
    }
    resolved.executors = executors;
    resolved.executor_policies = policies;
    diagnostics.extend(findings);
    diagnostics.extend(guardrails::check(repo, &resolved));
    diagnostics.extend(rollout::resolve(repo, &mut resolved));
    (resolved, diagnostics)
}

/// Workspaces that inherit the same variables: of one project, environment and code path.
type Group<'a> = (&'a str, Option<&'a String>, &'a str);

fn group_of<'a>(
    project: &'a Located<ProjectDocument>,
    w: &'a Located<WorkspaceDocument>,
) -> Group<'a> {
    let (pspec, wspec) = (&project.doc.spec, &w.doc.spec);
    (
        project.doc.metadata.name.as_str(),
        wspec.environment.as_ref(),
        code_path(pspec, wspec),
    )
}

/// The workspace's USER_CODE_PATH: its own, else its project's (the field or its
/// USER_CODE_PATH variable), else Mage's.
fn code_path<'a>(project: &'a ProjectSpec, workspace: &'a WorkspaceSpec) -> &'a str {
    workspace
        .user_code_path
        .as_deref()
        .or_else(|| project.code_path())
        .unwrap_or(DEFAULT_USER_CODE_PATH)
}

/// `inherited`: what the workspace gets from its project and berth ([`inherited_env`]).
fn resolve_workspace(
    (document, w): (usize, &Located<WorkspaceDocument>),
    project: &Located<ProjectDocument>,
    inherited: &[Shared<EffectiveVar>],
    executor_defaults: bool,
    repo: &Repository,
) -> ResolvedWorkspace {
    let (pspec, wspec) = (&project.doc.spec, &w.doc.spec);
    let user_code_path = code_path(pspec, wspec).to_string();
    let mut labels = project.doc.metadata.labels.clone();
    labels.extend(w.doc.metadata.labels.clone());
    let mut annotations = project.doc.metadata.annotations.clone();
    annotations.extend(w.doc.metadata.annotations.clone());
    ResolvedWorkspace {
        name: w.doc.metadata.name.clone(),
        project: project.doc.metadata.name.clone(),
        namespace: pspec.namespace.clone(),
        environment: wspec.environment.clone(),
        image: wspec
            .image
            .clone()
            .or_else(|| pspec.image.clone())
            .unwrap_or_default(),
        env: with_executor_defaults(with_own_env(inherited, wspec), executor_defaults),
        executor_defaults,
        executor_namespaces: Vec::new(),
        scripts: crate::load::lifecycle::scripts(wspec, &repo.files),
        agent_image: pspec
            .activity_agent_image
            .clone()
            .unwrap_or_else(|| DEFAULT_AGENT_IMAGE.to_string()),
        user_code_path,
        labels,
        annotations,
        spec: wspec.clone(),
        file: w.file.clone(),
        document,
        rollout: rollout::RolloutPolicy::default(),
    }
}

/// Workspaces of a project with executor defaults read them from a mounted file, as Mage's
/// Helm chart arranges it.
fn with_executor_defaults(
    mut env: Vec<Shared<EffectiveVar>>,
    has_policy: bool,
) -> Vec<Shared<EffectiveVar>> {
    if has_policy {
        env.retain(|v| v.name != "K8S_DEFAULT_CONFIG_PATH");
        env.push(Shared::from(EffectiveVar {
            name: "K8S_DEFAULT_CONFIG_PATH".into(),
            value: VarValue::Literal(format!("{EXECUTOR_DEFAULTS_DIR}/{EXECUTOR_DEFAULTS_FILE}")),
            source: Source::BuiltIn,
        }));
        env.sort_by(|a, b| a.name.cmp(&b.name));
    }
    env
}
