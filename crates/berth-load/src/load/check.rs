//! Checks that need more than one field or document: names, references, duplicates,
//! patterns, quantities and scripts. Every finding points at the offending field.

use super::names::{dns_label, dns_subdomain, map_problems};
use super::{Diagnostic, Files, Loaded, Located, Repository};
use crate::model::{
    EnvVar, InheritanceMode, Quantity, Resources, RoleBinding, WorkloadManager, WorkloadManagerKind,
};
use crate::model::{
    PolicyDocument, ProjectDocument, SHARE_SECRETS_VAR, USER_CODE_PATH_VAR, WorkspaceDocument,
};
use crate::pattern::{Pattern, Subject};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// Variables berth sets itself; a workspace sets them through dedicated fields instead.
pub const BUILT_IN_VARS: &[&str] = &["ENV", "USER_CODE_PATH", "SHARE_SECRETS_ACROSS_WORKSPACES"];

pub fn check(loaded: &mut Loaded) {
    let repo = &loaded.repo;
    let mut out = Vec::new();

    check_unique_names(&repo.projects, "Project", &mut out);
    check_unique_names(&repo.workspaces, "Workspace", &mut out);
    check_unique_names(&repo.policies, "Policy", &mut out);
    check_namespace_owners(&repo.projects, &mut out);
    for p in &repo.projects {
        check_project(p, &repo.projects, &mut out);
    }
    let projects = repo.projects_by_name();
    let pre_start = pre_start_problems(repo);
    // Each workspace on its own, on every core: a fleet has 100,000.
    out.par_extend(repo.workspaces.par_iter().flat_map_iter(|w| {
        let mut found = Vec::new();
        check_workspace(w, repo, &projects, &pre_start, &mut found);
        found
    }));
    for p in &repo.policies {
        check_policy(p, repo, &mut out);
    }
    loaded.diagnostics.extend(out);
}

/// One project's own fields (the names and namespaces it shares with others are checked
/// across all of them above).
fn check_project(
    p: &Located<ProjectDocument>,
    projects: &[Located<ProjectDocument>],
    out: &mut Vec<Diagnostic>,
) {
    let spec = &p.doc.spec;
    check_name(p, out);
    check_metadata(p, out);
    if let Err(why) = dns_label(&spec.namespace) {
        out.push(err(
            p,
            "/spec/namespace",
            format!("invalid namespace `{}`: {why}", spec.namespace),
        ));
    }
    check_env(p, "/spec/env", &spec.env, out);
    check_roles(p, "/spec/roles", &spec.roles, out);
    let inheritance = &spec.inheritance;
    if inheritance.mode == InheritanceMode::SelfHosted && inheritance.user_defined_vars.is_none() {
        out.push(
            err(
                p,
                "/spec/inheritance/mode",
                "self-hosted inheritance needs `userDefinedVars`",
            )
            .with_help("list the variables workspaces inherit, e.g. userDefinedVars: [DB_HOST]"),
        );
    }
    for (i, pattern) in inheritance.user_defined_vars.iter().flatten().enumerate() {
        check_inheritance_pattern(
            p,
            &format!("/spec/inheritance/userDefinedVars/{i}"),
            pattern,
            out,
        );
    }
    check_project_settings(p, out);
    check_runner_namespace(p, projects, out);
    if let Some(wm) = &spec.workload_manager {
        check_map(
            p,
            "/spec/workloadManager/nodeSelector",
            &wm.node_selector,
            true,
            out,
        );
        check_workload_manager(p, wm, out);
    }
    for (environment, patterns) in &inheritance.by_environment {
        for (i, pattern) in patterns.iter().enumerate() {
            let pointer = format!(
                "/spec/inheritance/byEnvironment/{}/{i}",
                super::yaml::escape_segment(environment)
            );
            check_inheritance_pattern(p, &pointer, pattern, out);
        }
    }
}

/// The pre-start scripts parsed so far, by path, with what is wrong in each.
type PreStartProblems<'a> = HashMap<&'a str, Vec<super::python::Problem>>;

/// The problems of every Python pre-start script the workspaces name, by path: workspaces
/// often share a script, and each is parsed once.
fn pre_start_problems(repo: &Repository) -> PreStartProblems<'_> {
    let mut scripts: Vec<&str> = repo
        .workspaces
        .iter()
        .filter_map(|w| w.doc.spec.lifecycle.pre_start.as_ref())
        .map(|pre| pre.script.as_str())
        .filter(|script| script.ends_with(".py"))
        .collect();
    scripts.sort_unstable();
    scripts.dedup();
    scripts
        .into_par_iter()
        .filter_map(|script| match repo.files.get(script) {
            Some(Ok(text)) => Some((script, super::python::check_pre_start(text))),
            _ => None,
        })
        .collect()
}

/// One workspace: its fields, its project, and its lifecycle scripts.
fn check_workspace(
    w: &Located<WorkspaceDocument>,
    repo: &Repository,
    projects: &HashMap<&str, &Located<ProjectDocument>>,
    pre_start: &PreStartProblems<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let spec = &w.doc.spec;
    check_name(w, out);
    check_metadata(w, out);
    check_map(
        w,
        "/spec/kubernetes/nodeSelector",
        &spec.kubernetes.node_selector,
        true,
        out,
    );
    check_workspace_name(w, out);
    check_project_ref(w, repo, projects, out);
    check_env(w, "/spec/env", &spec.env, out);
    check_built_in_vars(w, out);
    if let Some(resources) = &spec.resources {
        check_resources(w, "/spec/resources", resources, out);
    }
    check_quantity(w, "/spec/storage/size", &spec.storage.size, out);
    if let Some(environment) = &spec.environment
        && let Err(why) = dns_label(environment)
    {
        out.push(err(
            w,
            "/spec/environment",
            format!("invalid environment `{environment}`: {why}"),
        ));
    }
    check_volume_mounts(w, out);
    check_lifecycle(w, &repo.files, pre_start, out);
    check_roles(w, "/spec/roles", &spec.roles, out);
}

/// A workspace's lifecycle: idle termination, and the pre-start and post-start scripts
/// (present, of the right kind, small enough together for their ConfigMap).
fn check_lifecycle(
    w: &Located<WorkspaceDocument>,
    files: &Files,
    pre_start: &PreStartProblems<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let lifecycle = &w.doc.spec.lifecycle;
    if let Some(t) = &lifecycle.termination
        && t.idle_seconds < 60
    {
        out.push(err(
            w,
            "/spec/lifecycle/termination/idleSeconds",
            "idle termination below 60 seconds would stop a workspace while it starts",
        ));
    }
    let mut scripts_bytes = 0;
    if let Some(pre) = &lifecycle.pre_start {
        scripts_bytes += check_script(
            w,
            "/spec/lifecycle/preStart/script",
            &pre.script,
            &["py"],
            files,
            out,
        );
        check_pre_start(w, pre_start, out);
        if let Some(container) = &pre.container {
            check_env(
                w,
                "/spec/lifecycle/preStart/container/env",
                &container.env,
                out,
            );
            if let Some(resources) = &container.resources {
                check_resources(
                    w,
                    "/spec/lifecycle/preStart/container/resources",
                    resources,
                    out,
                );
            }
        }
    }
    if let Some(post) = &lifecycle.post_start {
        match (&post.script, post.command.is_empty()) {
            (Some(script), true) => {
                scripts_bytes += check_script(
                    w,
                    "/spec/lifecycle/postStart/script",
                    script,
                    &["sh", "py"],
                    files,
                    out,
                )
            }
            (None, false) => {}
            _ => out.push(err(
                w,
                "/spec/lifecycle/postStart",
                "set exactly one of `command` and `script`",
            )),
        }
    }
    if scripts_bytes > MAX_SCRIPTS_BYTES {
        out.push(err(
            w,
            "/spec/lifecycle",
            format!(
                "the lifecycle scripts total {scripts_bytes} bytes; they travel in one ConfigMap, which holds at most {MAX_SCRIPTS_BYTES}"
            ),
        ));
    }
}

/// A workspace's name: it names a Service (DNS-1035: starts with a letter) and a
/// StatefulSet whose pods carry `controller-revision-hash: <name>-<10 chars>` (≤ 63).
fn check_workspace_name(w: &Located<WorkspaceDocument>, out: &mut Vec<Diagnostic>) {
    let name = &w.doc.metadata.name;
    if name.len() > 52 {
        out.push(err(
            w,
            "/metadata/name",
            "workspace names are at most 52 characters (the StatefulSet's revision label adds 11)",
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push(err(
            w,
            "/metadata/name",
            "workspace names must start with a letter (they name a Service)",
        ));
    }
}

/// A workspace's project is declared, and one of them has an image for it.
fn check_project_ref(
    w: &Located<WorkspaceDocument>,
    repo: &Repository,
    projects: &HashMap<&str, &Located<ProjectDocument>>,
    out: &mut Vec<Diagnostic>,
) {
    let spec = &w.doc.spec;
    let project = projects.get(spec.project.as_str()).copied();
    if project.is_none() {
        let known: Vec<&str> = repo
            .projects
            .iter()
            .map(|p| p.doc.metadata.name.as_str())
            .collect();
        out.push(
            err(
                w,
                "/spec/project",
                format!("unknown project `{}`", spec.project),
            )
            .with_help(if known.is_empty() {
                "no Project is declared in this repository".to_string()
            } else {
                format!("declared projects: {}", known.join(", "))
            }),
        );
    }
    if spec.image.is_none() && project.is_some_and(|p| p.doc.spec.image.is_none()) {
        out.push(err(
            w,
            "/spec",
            "no image: set `image` here or on the project",
        ));
    }
}

/// Variables berth sets itself cannot be declared: each has its own field.
fn check_built_in_vars(w: &Located<WorkspaceDocument>, out: &mut Vec<Diagnostic>) {
    let spec = &w.doc.spec;
    for (i, var) in spec.env.iter().enumerate() {
        if BUILT_IN_VARS.contains(&var.name.as_str()) {
            let field = match var.name.as_str() {
                "ENV" => "`environment`",
                "USER_CODE_PATH" => "`userCodePath`",
                _ => "the project's `shareSecretsAcrossWorkspaces`",
            };
            out.push(
                err(
                    w,
                    &format!("/spec/env/{i}/name"),
                    format!("`{}` is set by berth", var.name),
                )
                .with_help(format!("use {field} instead")),
            );
        }
    }
}

/// Every volume mount names a declared volume; as the API server requires of a pod,
/// volume names are unique, and so are the container's mount paths (the data volume's
/// `storage.mountPath` among them).
fn check_volume_mounts(w: &Located<WorkspaceDocument>, out: &mut Vec<Diagnostic>) {
    let spec = &w.doc.spec;
    let volumes: Vec<&str> = spec
        .kubernetes
        .volumes
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    for (i, name) in volumes.iter().enumerate() {
        if volumes[..i].contains(name) {
            out.push(err(
                w,
                &format!("/spec/kubernetes/volumes/{i}/name"),
                format!("a second volume named `{name}`: the API server refuses the pod"),
            ));
        }
    }
    let mut paths = vec![spec.storage.mount_path.as_str()];
    for (i, mount) in spec.kubernetes.volume_mounts.iter().enumerate() {
        if !volumes.contains(&mount.name.as_str()) {
            out.push(err(
                w,
                &format!("/spec/kubernetes/volumeMounts/{i}/name"),
                format!("no volume named `{}` in `kubernetes.volumes`", mount.name),
            ));
        }
        let path = mount.mount_path.as_str();
        if paths.contains(&path) {
            let what = if path == spec.storage.mount_path {
                "the workspace's data volume (`storage.mountPath`)"
            } else {
                "another volume"
            };
            out.push(err(
                w,
                &format!("/spec/kubernetes/volumeMounts/{i}/mountPath"),
                format!("`{path}` is where {what} is mounted: the API server refuses the pod (mount paths must be unique)"),
            ));
        }
        paths.push(path);
    }
}

/// A Python pre-start script's problems (read once for every workspace that runs it, by
/// [`pre_start_problems`]), at their line in the script.
fn check_pre_start(
    w: &Located<WorkspaceDocument>,
    pre_start: &PreStartProblems<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(pre) = &w.doc.spec.lifecycle.pre_start else {
        return;
    };
    if let Some(problems) = pre_start.get(pre.script.as_str()) {
        for problem in problems {
            let pointer = "/spec/lifecycle/preStart/script";
            out.push(match problem.pos {
                Some(pos) => Diagnostic::error(
                    &pre.script,
                    pos,
                    "",
                    format!("pre-start script: {}", problem.message),
                )
                .with_help(format!(
                    "used by workspace `{}` ({}:{})",
                    w.doc.metadata.name,
                    w.file,
                    w.pos(pointer).line
                )),
                None => err(
                    w,
                    pointer,
                    format!("pre-start script `{}` {}", pre.script, problem.message),
                ),
            });
        }
    }
}

/// One policy: its guardrails and the projects it selects.
fn check_policy(p: &Located<PolicyDocument>, repo: &Repository, out: &mut Vec<Diagnostic>) {
    check_name(p, out);
    check_metadata(p, out);
    let guardrails = &p.doc.spec.guardrails;
    if let Some(max) = &guardrails.max_resources {
        check_resources(p, "/spec/guardrails/maxResources", max, out);
    }
    if let Some(max) = &guardrails.max_executor_resources {
        check_resources(p, "/spec/guardrails/maxExecutorResources", max, out);
    }
    for (i, pattern) in guardrails.allowed_images.iter().enumerate() {
        if let Err(why) = Pattern::parse(pattern, Subject::Image) {
            out.push(err(
                p,
                &format!("/spec/guardrails/allowedImages/{i}"),
                format!("invalid pattern `{pattern}`: {why}"),
            ));
        }
    }
    for (i, project) in p.doc.spec.selector.projects.iter().enumerate() {
        if repo.project(project).is_none() {
            out.push(Diagnostic::warning(
                &p.file,
                p.pos(&format!("/spec/selector/projects/{i}")),
                &format!("/spec/selector/projects/{i}"),
                format!("selects unknown project `{project}`"),
            ));
        }
    }
}

/// A `userDefinedVars` or `byEnvironment` pattern: valid (see [`Pattern`] for what is
/// refused) and matching at least one of the project's variables, or it is a warning.
fn check_inheritance_pattern(
    p: &Located<ProjectDocument>,
    pointer: &str,
    pattern: &str,
    out: &mut Vec<Diagnostic>,
) {
    match Pattern::parse(pattern, Subject::VariableName) {
        Err(why) => out.push(err(
            p,
            pointer,
            format!("invalid pattern `{pattern}`: {why}"),
        )),
        Ok(parsed) => {
            if !p.doc.spec.env.iter().any(|v| parsed.matches(&v.name)) {
                let what = if parsed.is_literal() {
                    format!("`{pattern}` is not a variable of this project's env")
                } else {
                    format!("`{pattern}` matches none of this project's variables")
                };
                out.push(Diagnostic::warning(
                    &p.file,
                    p.pos(pointer),
                    pointer,
                    format!("{what}; nothing to inherit"),
                ));
            }
        }
    }
}

/// Project variables that Mage Pro reads as settings: SHARE_SECRETS_ACROSS_WORKSPACES
/// (`1` shares secrets, `0` does not) and USER_CODE_PATH. Each must be a literal, and must
/// agree with berth's field for the same setting.
fn check_project_settings(p: &Located<ProjectDocument>, out: &mut Vec<Diagnostic>) {
    let spec = &p.doc.spec;
    for (i, var) in spec.env.iter().enumerate() {
        let at = format!("/spec/env/{i}");
        let setting = match var.name.as_str() {
            SHARE_SECRETS_VAR => "shareSecretsAcrossWorkspaces",
            USER_CODE_PATH_VAR => "userCodePath",
            _ => continue,
        };
        if var.secret_ref.is_some() {
            out.push(
                err(
                    p,
                    &at,
                    format!(
                        "`{}` is a setting of the project; it cannot come from a Secret",
                        var.name
                    ),
                )
                .with_help(format!("give it a `value`, or use `{setting}`")),
            );
            continue;
        }
        let Some(value) = var.value.as_deref() else {
            continue; // reported by check_env
        };
        let value_at = format!("{at}/value");
        if var.name == SHARE_SECRETS_VAR {
            // Whether the field was written, and how: the default cannot contradict.
            let field = p
                .spans
                .contains("/spec/shareSecretsAcrossWorkspaces")
                .then_some(spec.share_secrets_across_workspaces);
            match (value, field) {
                ("1", Some(false)) | ("0", Some(true)) => out.push(
                    err(
                        p,
                        &value_at,
                        format!(
                            "{SHARE_SECRETS_VAR}={value} contradicts `shareSecretsAcrossWorkspaces: {}`",
                            field == Some(true)
                        ),
                    )
                    .with_help("they are one setting; keep one"),
                ),
                ("1" | "0", _) => {}
                _ => out.push(
                    err(
                        p,
                        &value_at,
                        format!("{SHARE_SECRETS_VAR} is `{value}`; Mage Pro reads `1` (share secrets across workspaces) or `0`"),
                    )
                    .with_help("or use `shareSecretsAcrossWorkspaces: true`"),
                ),
            }
        } else if let Some(field) = spec.user_code_path.as_deref()
            && field != value
        {
            out.push(
                err(
                    p,
                    &value_at,
                    format!("USER_CODE_PATH `{value}` contradicts `userCodePath: {field}`"),
                )
                .with_help("they are one setting; keep one"),
            );
        }
    }
}

/// ZenML's runner pods need a dedicated namespace: not the namespace of any project (where
/// workspaces run).
fn check_runner_namespace(
    p: &Located<ProjectDocument>,
    projects: &[Located<ProjectDocument>],
    out: &mut Vec<Diagnostic>,
) {
    let Some(wm) = &p.doc.spec.workload_manager else {
        return;
    };
    for other in projects {
        if other.doc.spec.namespace == wm.namespace {
            let at = other.pos("/spec/namespace");
            let whose = if std::ptr::eq(other, p) {
                "this project's namespace".to_string()
            } else {
                format!("the namespace of project `{}`", other.doc.metadata.name)
            };
            out.push(
                err(
                    p,
                    "/spec/workloadManager/namespace",
                    format!(
                        "`{}` is {whose} ({}:{}:{}); ZenML's runner pods need a dedicated namespace",
                        wm.namespace, other.file, at.line, at.column
                    ),
                )
                .with_help("name a namespace no project uses, e.g. `zenml-runners`"),
            );
        }
    }
}

/// One namespace, one project: projects that name the same namespace are an error at each
/// one's `namespace`, unless every one of them sets `sharedNamespace: true`. Runner
/// namespaces of ZenML workload managers are never shared: each project's runner account
/// and its Role and RoleBinding (named alike in every project) need a namespace of their own.
fn check_namespace_owners(projects: &[Located<ProjectDocument>], out: &mut Vec<Diagnostic>) {
    // A project declared twice is its own error (check_unique_names): its first
    // declaration stands for it here.
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&Located<ProjectDocument>> = projects
        .iter()
        .filter(|p| seen.insert(p.doc.metadata.name.as_str()))
        .collect();
    shared_namespaces(&firsts, out);
    runner_namespaces(&firsts, out);
}

/// How a message names a project at one of its fields: project `x` (file:line:column).
fn project_at(p: &Located<ProjectDocument>, pointer: &str) -> String {
    let pos = p.pos(pointer);
    format!(
        "project `{}` ({}:{}:{})",
        p.doc.metadata.name, p.file, pos.line, pos.column
    )
}

/// Projects in one namespace: an error at each, unless every one declares the sharing.
fn shared_namespaces(firsts: &[&Located<ProjectDocument>], out: &mut Vec<Diagnostic>) {
    let mut by_namespace: BTreeMap<&str, Vec<&Located<ProjectDocument>>> = BTreeMap::new();
    for p in firsts {
        by_namespace
            .entry(p.doc.spec.namespace.as_str())
            .or_default()
            .push(p);
    }
    for (namespace, owners) in &by_namespace {
        if owners.len() < 2 || owners.iter().all(|p| p.doc.spec.shared_namespace) {
            continue;
        }
        let unshared: Vec<&str> = owners
            .iter()
            .filter(|p| !p.doc.spec.shared_namespace)
            .map(|p| p.doc.metadata.name.as_str())
            .collect();
        for p in owners {
            let others: Vec<String> = owners
                .iter()
                .filter(|o| !std::ptr::eq(**o, *p))
                .map(|o| project_at(o, "/spec/namespace"))
                .collect();
            out.push(
                err(
                    p,
                    "/spec/namespace",
                    format!(
                        "namespace `{namespace}` is also the namespace of {}; a namespace belongs to one project unless every project in it sets `sharedNamespace: true` (not set by: {})",
                        others.join(", "),
                        unshared.join(", ")
                    ),
                )
                .with_help(if p.doc.spec.shared_namespace {
                    "the other projects must declare the sharing too"
                } else {
                    "give this project a namespace of its own, or set `sharedNamespace: true` on every project that shares it"
                }),
            );
        }
    }
}

/// ZenML runner namespaces, one project each.
fn runner_namespaces(firsts: &[&Located<ProjectDocument>], out: &mut Vec<Diagnostic>) {
    let mut by_runners: BTreeMap<&str, Vec<&Located<ProjectDocument>>> = BTreeMap::new();
    for p in firsts {
        if let Some(wm) = &p.doc.spec.workload_manager {
            by_runners.entry(wm.namespace.as_str()).or_default().push(p);
        }
    }
    for (namespace, owners) in by_runners.iter().filter(|(_, o)| o.len() > 1) {
        for p in owners {
            let others: Vec<String> = owners
                .iter()
                .filter(|o| !std::ptr::eq(**o, *p))
                .map(|o| project_at(o, "/spec/workloadManager/namespace"))
                .collect();
            out.push(
                err(
                    p,
                    "/spec/workloadManager/namespace",
                    format!(
                        "runner namespace `{namespace}` is also the runner namespace of {}; each project's ZenML runners need a namespace of their own",
                        others.join(", ")
                    ),
                )
                .with_help("name a runner namespace no other project uses"),
            );
        }
    }
}

/// ZenML's rules: a registry when building runner images, a bucket for external logs (an
/// AWS feature), a region when building on AWS.
fn check_workload_manager<T>(doc: &Located<T>, wm: &WorkloadManager, out: &mut Vec<Diagnostic>) {
    let base = "/spec/workloadManager";
    for (field, value) in [
        ("namespace", &wm.namespace),
        ("serviceAccount", &wm.service_account),
    ] {
        if let Err(why) = dns_label(value) {
            out.push(err(
                doc,
                &format!("{base}/{field}"),
                format!("invalid {field} `{value}`: {why}"),
            ));
        }
    }
    if wm.build_runner_image && wm.docker_registry.is_none() {
        out.push(
            err(doc, &format!("{base}/buildRunnerImage"), "building runner images needs `dockerRegistry`")
                .with_help("ZENML_KUBERNETES_WORKLOAD_MANAGER_DOCKER_REGISTRY is required when building images"),
        );
    }
    if !wm.build_runner_image && wm.runner_image.is_none() {
        out.push(Diagnostic::warning(
            &doc.file,
            doc.pos(base),
            base,
            "neither `runnerImage` nor `buildRunnerImage`: runner pods use ZenML's default image",
        ));
    }
    if let Some(logs) = wm.external_logs.as_ref().filter(|l| l.enabled) {
        if logs.bucket.is_none() {
            out.push(err(
                doc,
                &format!("{base}/externalLogs"),
                "external logs need a `bucket`",
            ));
        }
        if wm.implementation != WorkloadManagerKind::Aws {
            out.push(err(
                doc,
                &format!("{base}/externalLogs"),
                "external logs are only available with `implementation: aws`",
            ));
        }
    }
    if wm.implementation == WorkloadManagerKind::Aws && wm.build_runner_image && wm.region.is_none()
    {
        out.push(err(
            doc,
            &format!("{base}/buildRunnerImage"),
            "building runner images on AWS needs `region`",
        ));
    }
    if let Some(resources) = &wm.pod_resources {
        check_resources(doc, &format!("{base}/podResources"), resources, out);
    }
    super::zenml::check(doc, wm, out);
}

fn err<T>(doc: &Located<T>, pointer: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(&doc.file, doc.pos(pointer), pointer, message)
}

trait Named {
    fn name(&self) -> &str;
}
impl<S> Named for crate::model::Document<S> {
    fn name(&self) -> &str {
        &self.metadata.name
    }
}

fn check_name<T: Named>(doc: &Located<T>, out: &mut Vec<Diagnostic>) {
    if let Err(why) = dns_label(doc.doc.name()) {
        out.push(err(
            doc,
            "/metadata/name",
            format!("invalid name `{}`: {why}", doc.doc.name()),
        ));
    }
}

fn check_unique_names<T: Named>(docs: &[Located<T>], kind: &str, out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Located<T>> = HashMap::new();
    for doc in docs {
        if let Some(first) = seen.get(doc.doc.name()) {
            let at = first.pos("/metadata/name");
            out.push(
                err(
                    doc,
                    "/metadata/name",
                    format!("duplicate {kind} `{}`", doc.doc.name()),
                )
                .with_help(format!(
                    "first declared at {}:{}:{}",
                    first.file, at.line, at.column
                )),
            );
        } else {
            seen.insert(doc.doc.name(), doc);
        }
    }
}

fn check_map<T>(
    doc: &Located<T>,
    pointer: &str,
    map: &BTreeMap<String, String>,
    labels: bool,
    out: &mut Vec<Diagnostic>,
) {
    for (key, message) in map_problems(map.iter().map(|(k, v)| (k.as_str(), v.as_str())), labels) {
        let at = if key.is_empty() {
            pointer.to_string()
        } else {
            format!("{pointer}/{}", super::yaml::escape_segment(&key))
        };
        out.push(err(doc, &at, message));
    }
}

fn check_metadata<S>(doc: &Located<crate::model::Document<S>>, out: &mut Vec<Diagnostic>) {
    check_map(doc, "/metadata/labels", &doc.doc.metadata.labels, true, out);
    check_map(
        doc,
        "/metadata/annotations",
        &doc.doc.metadata.annotations,
        false,
        out,
    );
}

/// Kubernetes accepts `[-._a-zA-Z][-._a-zA-Z0-9]*` as an environment variable name.
fn env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b"-._".contains(&b))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn check_env<T>(doc: &Located<T>, base: &str, env: &[EnvVar], out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, var) in env.iter().enumerate() {
        let at = format!("{base}/{i}");
        if !env_name(&var.name) {
            out.push(
                err(
                    doc,
                    &format!("{at}/name"),
                    format!("invalid variable name `{}`", var.name),
                )
                .with_help("letters, digits, `_`, `-` and `.`, not starting with a digit"),
            );
        }
        if let Some(first) = seen.insert(&var.name, i) {
            out.push(err(
                doc,
                &format!("{at}/name"),
                format!(
                    "`{}` is set twice (first at {})",
                    var.name,
                    super::diagnostic::field_path(&format!("{base}/{first}"))
                ),
            ));
        }
        match (&var.value, &var.secret_ref) {
            (Some(_), Some(_)) => out.push(err(
                doc,
                &at,
                format!("`{}` has both `value` and `secretRef`; keep one", var.name),
            )),
            (None, None) => out.push(err(
                doc,
                &at,
                format!("`{}` needs a `value` or a `secretRef`", var.name),
            )),
            (None, Some(secret)) => {
                if let Err(why) = dns_subdomain(&secret.name) {
                    out.push(err(
                        doc,
                        &format!("{at}/secretRef/name"),
                        format!("invalid Secret name `{}`: {why}", secret.name),
                    ));
                }
            }
            (Some(_), None) => {}
        }
    }
}

fn check_roles<T>(doc: &Located<T>, base: &str, roles: &[RoleBinding], out: &mut Vec<Diagnostic>) {
    for (i, role) in roles.iter().enumerate() {
        if role.users.is_empty() && role.groups.is_empty() {
            out.push(err(
                doc,
                &format!("{base}/{i}"),
                "a role needs at least one user or group",
            ));
        }
    }
}

fn check_quantity<T>(
    doc: &Located<T>,
    pointer: &str,
    quantity: &Quantity,
    out: &mut Vec<Diagnostic>,
) -> Option<f64> {
    let text = quantity.as_string();
    let parsed = crate::quantity::parse(&text);
    if parsed.is_none_or(|v| v < 0.0) {
        out.push(
            err(
                doc,
                pointer,
                format!("`{text}` is not a Kubernetes quantity"),
            )
            .with_help("e.g. 500m, 2, 1.5, 512Mi, 10Gi"),
        );
    }
    parsed
}

fn check_resources<T>(
    doc: &Located<T>,
    base: &str,
    resources: &Resources,
    out: &mut Vec<Diagnostic>,
) {
    let mut requests = BTreeMap::new();
    for (name, q) in &resources.requests {
        let pointer = format!("{base}/requests/{}", super::yaml::escape_segment(name));
        if let Some(v) = check_quantity(doc, &pointer, q, out) {
            requests.insert(name, v);
        }
    }
    for (name, q) in &resources.limits {
        let pointer = format!("{base}/limits/{}", super::yaml::escape_segment(name));
        if let Some(limit) = check_quantity(doc, &pointer, q, out)
            && let Some(request) = requests.get(name)
            && *request > limit
        {
            out.push(err(
                doc,
                &pointer,
                format!("{name} limit {} is below its request", q.as_string()),
            ));
        }
    }
}

/// A ConfigMap's data may total 1 MiB; leave room for its keys and metadata.
const MAX_SCRIPTS_BYTES: usize = 1_000_000;

/// A lifecycle script: it must exist, be readable, and have one of `extensions` (the
/// interpreter berth runs it with). Returns its size.
fn check_script<T>(
    doc: &Located<T>,
    pointer: &str,
    path: &str,
    extensions: &[&str],
    files: &Files,
    out: &mut Vec<Diagnostic>,
) -> usize {
    let wanted = extensions
        .iter()
        .map(|e| format!(".{e}"))
        .collect::<Vec<_>>()
        .join(" or ");
    if !extensions.iter().any(|e| path.ends_with(&format!(".{e}"))) {
        out.push(err(
            doc,
            pointer,
            format!("script `{path}` must end in {wanted}"),
        ));
        return 0;
    }
    match files.get(path) {
        Some(Ok(text)) => text.len(),
        Some(Err(why)) => {
            out.push(err(doc, pointer, format!("script `{path}` {why}")));
            0
        }
        None => {
            out.push(
                err(
                    doc,
                    pointer,
                    format!("script `{path}` does not exist in the repository"),
                )
                .with_help("paths are relative to the repository root"),
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert!(env_name("DEV_ENV_BUCKET"));
        assert!(env_name("a.b-c"));
        assert!(!env_name("1ABC"));
        assert!(!env_name("A B"));
        assert!(!env_name(""));
    }
}

#[cfg(test)]
mod namespace_owner_tests {
    use crate::load::error_lines as errors;
    use crate::load::{SourceFile, load};
    use proptest::prelude::*;

    fn project(name: &str, namespace: &str, shared: bool) -> SourceFile {
        let mut text = format!(
            "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: {name}}}\nspec:\n  image: i\n  namespace: {namespace}\n"
        );
        if shared {
            text.push_str("  sharedNamespace: true\n");
        }
        SourceFile::new(format!("{name}.yaml"), text)
    }

    #[test]
    fn two_projects_in_one_namespace_are_an_error_at_both_lines() {
        let found = errors(vec![
            project("a", "data", false),
            project("b", "data", false),
        ]);
        assert_eq!(
            found,
            [
                "a.yaml:6:14: error: spec.namespace: namespace `data` is also the namespace of project `b` (b.yaml:6:14); a namespace belongs to one project unless every project in it sets `sharedNamespace: true` (not set by: a, b) (help: give this project a namespace of its own, or set `sharedNamespace: true` on every project that shares it)",
                "b.yaml:6:14: error: spec.namespace: namespace `data` is also the namespace of project `a` (a.yaml:6:14); a namespace belongs to one project unless every project in it sets `sharedNamespace: true` (not set by: a, b) (help: give this project a namespace of its own, or set `sharedNamespace: true` on every project that shares it)",
            ]
        );
    }

    #[test]
    fn sharing_declared_by_one_side_only_is_still_an_error_at_both() {
        let found = errors(vec![
            project("a", "data", true),
            project("b", "data", false),
        ]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("a.yaml:6:14: ") && found[0].contains("(not set by: b)"));
        assert!(found[0].contains("the other projects must declare the sharing too"));
        assert!(found[1].starts_with("b.yaml:6:14: ") && found[1].contains("(not set by: b)"));
    }

    #[test]
    fn sharing_declared_by_both_is_allowed() {
        let found = errors(vec![project("a", "data", true), project("b", "data", true)]);
        assert!(found.is_empty(), "{found:?}");
        // Alone, the field changes nothing.
        assert!(errors(vec![project("a", "data", true)]).is_empty());
    }

    #[test]
    fn a_runner_namespace_is_never_shared() {
        let wm = |name: &str| {
            SourceFile::new(
                format!("{name}.yaml"),
                format!(
                    "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: {name}}}\nspec:\n  image: i\n  namespace: {name}\n  sharedNamespace: true\n  workloadManager:\n    namespace: runners\n    serviceAccount: s\n    runnerImage: z\n"
                ),
            )
        };
        let found = errors(vec![wm("a"), wm("b")]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("a.yaml:9:16: error: spec.workloadManager.namespace: runner namespace `runners` is also the runner namespace of project `b` (b.yaml:9:16)"),
            "{found:?}"
        );
        assert!(found[1].starts_with("b.yaml:9:16: "), "{found:?}");
    }

    proptest! {
        /// Any set of projects over a few namespaces: a namespace's projects are errors
        /// (each one, at its `namespace` line) exactly when there are two or more and one
        /// of them does not declare the sharing.
        #[test]
        fn an_error_exactly_where_sharing_is_not_mutual(
            projects in proptest::collection::vec((0usize..3, any::<bool>()), 1..7),
        ) {
            let files: Vec<SourceFile> = projects
                .iter()
                .enumerate()
                .map(|(i, (ns, shared))| project(&format!("p{i}"), &format!("ns{ns}"), *shared))
                .collect();
            let loaded = load(files);
            for (i, (ns, _)) in projects.iter().enumerate() {
                let owners: Vec<&(usize, bool)> = projects.iter().filter(|(n, _)| n == ns).collect();
                let conflict = owners.len() > 1 && owners.iter().any(|(_, shared)| !shared);
                let file = format!("p{i}.yaml");
                let at_namespace = loaded.diagnostics.iter().filter(|d| {
                    d.is_error() && d.file == file && d.field == "spec.namespace" && d.line == 6
                }).count();
                prop_assert_eq!(at_namespace, usize::from(conflict), "{}: {:?}", file, loaded.diagnostics);
            }
            prop_assert_eq!(loaded.diagnostics.iter().filter(|d| d.is_error() && d.field != "spec.namespace").count(), 0);
        }
    }
}

#[cfg(test)]
mod workload_manager_tests {
    use crate::load::{SourceFile, error_lines};

    fn errors(workload_manager: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  namespace: p\n  workloadManager:\n{workload_manager}"
        );
        error_lines(vec![SourceFile::new("p.yaml", text)])
    }

    #[test]
    fn namespace_and_service_account_are_required() {
        let found = errors("    runnerImage: zenml:1\n");
        assert_eq!(
            found,
            [
                "p.yaml:7:5: error: spec.workloadManager.namespace: missing required field `namespace`",
                "p.yaml:7:5: error: spec.workloadManager.serviceAccount: missing required field `serviceAccount`",
            ]
        );
    }

    #[test]
    fn building_needs_a_registry_and_on_aws_a_region() {
        let found = errors(
            "    implementation: aws\n    namespace: r\n    serviceAccount: s\n    buildRunnerImage: true\n",
        );
        assert_eq!(
            found,
            [
                "p.yaml:10:23: error: spec.workloadManager.buildRunnerImage: building runner images needs `dockerRegistry` (help: ZENML_KUBERNETES_WORKLOAD_MANAGER_DOCKER_REGISTRY is required when building images)",
                "p.yaml:10:23: error: spec.workloadManager.buildRunnerImage: building runner images on AWS needs `region`",
            ]
        );
        let ok = errors(
            "    implementation: aws\n    namespace: r\n    serviceAccount: s\n    buildRunnerImage: true\n    dockerRegistry: ecr.example.com\n    region: eu-west-1\n",
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn external_logs_need_a_bucket_and_aws() {
        let found = errors(
            "    namespace: r\n    serviceAccount: s\n    runnerImage: z\n    externalLogs: {enabled: true}\n",
        );
        assert_eq!(
            found,
            [
                "p.yaml:10:19: error: spec.workloadManager.externalLogs: external logs are only available with `implementation: aws`",
                "p.yaml:10:19: error: spec.workloadManager.externalLogs: external logs need a `bucket`",
            ]
        );
    }

    #[test]
    fn invalid_names_are_errors() {
        let found = errors("    namespace: Runners\n    serviceAccount: s\n    runnerImage: z\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "p.yaml:7:16: error: spec.workloadManager.namespace: invalid namespace `Runners`"
            ),
            "{found:?}"
        );
    }
}

#[cfg(test)]
mod volume_tests {
    use crate::load::{SourceFile, error_lines};

    fn errors(kubernetes: &str) -> Vec<String> {
        let project = "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {name: p}\nspec: {image: i, namespace: p}\n";
        let workspace = format!(
            "apiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {{name: w}}\nspec:\n  project: p\n  kubernetes:\n{kubernetes}"
        );
        error_lines(vec![
            SourceFile::new("p.yaml", project),
            SourceFile::new("w.yaml", workspace),
        ])
    }

    /// The API server's uniqueness rules for a pod, said at the field that repeats.
    #[test]
    fn repeated_volume_names_and_mount_paths_are_errors_at_the_repeat() {
        let found = errors(
            "    volumes: [{name: a, emptyDir: {}}, {name: a, emptyDir: {}}]\n    volumeMounts: [{name: a, mountPath: /a}, {name: a, mountPath: /a}, {name: a, mountPath: /home/src}]\n",
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with(
                "w.yaml:7:47: error: spec.kubernetes.volumes[1].name: a second volume named `a`"
            ),
            "{found:#?}"
        );
        assert!(
            found[1].contains("volumeMounts[1].mountPath: `/a` is where another volume is mounted"),
            "{found:#?}"
        );
        assert!(found[2].contains("volumeMounts[2].mountPath: `/home/src` is where the workspace's data volume (`storage.mountPath`) is mounted"), "{found:#?}");
        // One volume at two paths is what pods may do.
        let found = errors(
            "    volumes: [{name: a, emptyDir: {}}]\n    volumeMounts: [{name: a, mountPath: /a}, {name: a, mountPath: /b}]\n",
        );
        assert_eq!(found, Vec::<String>::new());
    }
}
