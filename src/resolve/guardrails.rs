//! Policy guardrails: limits that every selected workspace must respect. A violation is an
//! error at the workspace field that breaks it, naming the policy.

use super::pattern::{Pattern, Subject};
use super::{Resolved, ResolvedWorkspace};
use crate::load::{Diagnostic, Located, Repository};
use crate::model::{Guardrails, PolicyDocument, WorkspaceDocument};
use rayon::prelude::*;

pub fn check(repo: &Repository, resolved: &Resolved) -> Vec<Diagnostic> {
    let mut out = forbidden_executor_settings(repo);
    out.extend(executor_resources(repo, resolved));
    out.par_extend(resolved.workspaces.par_iter().flat_map_iter(|ws| {
        let mut found = Vec::new();
        if let Some(located) = repo.workspaces.get(ws.document) {
            for policy in repo.policies.iter().filter(|p| selects(&p.doc, ws)) {
                check_one(policy, located, ws, &mut found);
            }
        }
        found
    }));
    out
}

pub(super) fn selects(policy: &PolicyDocument, ws: &ResolvedWorkspace) -> bool {
    let selector = &policy.spec.selector;
    (selector.projects.is_empty() || selector.projects.contains(&ws.project))
        && (selector.environments.is_empty()
            || ws
                .environment
                .as_ref()
                .is_some_and(|e| selector.environments.contains(e)))
}

fn check_one(
    policy: &Located<PolicyDocument>,
    ws: &Located<WorkspaceDocument>,
    resolved: &ResolvedWorkspace,
    out: &mut Vec<Diagnostic>,
) {
    let name = &policy.doc.metadata.name;
    let rules = &policy.doc.spec.guardrails;
    let violations = image_violation(rules, ws, resolved)
        .into_iter()
        .chain(resource_violations(rules, ws))
        .chain(
            rules
                .required_labels
                .iter()
                .filter(|label| !resolved.labels.contains_key(*label))
                .map(|label| Violation {
                    pointer: "/metadata".into(),
                    rule: "requiredLabels",
                    message: format!("missing required label `{label}`"),
                }),
        )
        .chain(
            ws.doc
                .spec
                .kubernetes
                .volumes
                .iter()
                .enumerate()
                .filter(|(_, volume)| rules.forbid_host_path && volume.host_path.is_some())
                .map(|(i, volume)| Violation {
                    pointer: format!("/spec/kubernetes/volumes/{i}/hostPath"),
                    rule: "forbidHostPath",
                    message: format!("volume `{}` mounts a hostPath", volume.name),
                }),
        );
    for v in violations {
        let at = policy.pos(&format!("/spec/guardrails/{}", v.rule));
        out.push(
            Diagnostic::error(&ws.file, ws.pos(&v.pointer), &v.pointer, v.message).with_help(
                format!(
                    "policy `{name}` ({}:{}:{})",
                    policy.file, at.line, at.column
                ),
            ),
        );
    }
}

/// One broken guardrail: the workspace's field, the policy's rule, what is wrong.
struct Violation {
    pointer: String,
    rule: &'static str,
    message: String,
}

/// `allowedImages`: the workspace's image (its own, or its project's) matches one.
fn image_violation(
    rules: &Guardrails,
    ws: &Located<WorkspaceDocument>,
    resolved: &ResolvedWorkspace,
) -> Option<Violation> {
    if rules.allowed_images.is_empty()
        || rules
            .allowed_images
            .iter()
            .filter_map(|p| Pattern::parse(p, Subject::Image).ok())
            .any(|p| p.matches(&resolved.image))
    {
        return None;
    }
    let (pointer, inherited) = if ws.doc.spec.image.is_some() {
        ("/spec/image", "")
    } else {
        ("/spec/project", " (inherited from the project)")
    };
    Some(Violation {
        pointer: pointer.into(),
        rule: "allowedImages",
        message: format!(
            "image `{}`{inherited} is not allowed; allowed: {}",
            resolved.image,
            rules.allowed_images.join(", ")
        ),
    })
}

/// `maxResources`: each request and limit the workspace declares, against its ceiling.
fn resource_violations(rules: &Guardrails, ws: &Located<WorkspaceDocument>) -> Vec<Violation> {
    let (Some(max), Some(resources)) = (&rules.max_resources, &ws.doc.spec.resources) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (section, have, limit) in [
        ("requests", &resources.requests, &max.requests),
        ("limits", &resources.limits, &max.limits),
    ] {
        for (resource, quantity) in have {
            let Some(ceiling) = limit.get(resource) else {
                continue;
            };
            let (Some(v), Some(c)) = (
                crate::quantity::parse(&quantity.as_string()),
                crate::quantity::parse(&ceiling.as_string()),
            ) else {
                continue;
            };
            if v > c {
                out.push(Violation {
                    pointer: format!("/spec/resources/{section}/{resource}"),
                    rule: "maxResources",
                    message: format!(
                        "{resource} {section} {} exceeds the maximum {}",
                        quantity.as_string(),
                        ceiling.as_string()
                    ),
                });
            }
        }
    }
    out
}

/// The resources of each k8s block's Job as Mage builds it in each workspace, against the
/// policies that select the workspace: `maxExecutorResources` and
/// `requiredExecutorLimits`. A violation is at the layer whose section decided the
/// resources (Mage takes the section whole from one layer), else at the block.
fn executor_resources(repo: &Repository, resolved: &Resolved) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for block in &resolved.executors {
        for run in &block.runs {
            let Some(ws) = resolved.workspaces.iter().find(|w| w.name == run.workspace) else {
                continue;
            };
            let resources = run.resources();
            for policy in repo.policies.iter().filter(|p| selects(&p.doc, ws)) {
                let rules = &policy.doc.spec.guardrails;
                let mut problems: Vec<(&str, &str, String)> = Vec::new();
                for name in &rules.required_executor_limits {
                    if resources.pointer(&format!("/limits/{name}")).is_none() {
                        problems.push((
                            "limits",
                            "requiredExecutorLimits",
                            format!("the Job of k8s block `{}` has no {name} limit", block.block),
                        ));
                    }
                }
                if let Some(max) = &rules.max_executor_resources {
                    for (section, ceilings) in
                        [("requests", &max.requests), ("limits", &max.limits)]
                    {
                        for (name, ceiling) in ceilings {
                            let have = resources.pointer(&format!("/{section}/{name}"));
                            let amount = have.and_then(|v| match v {
                                serde_json::Value::String(s) => crate::quantity::parse(s),
                                serde_json::Value::Number(n) => n.as_f64(),
                                _ => None,
                            });
                            if let (Some(v), Some(c)) =
                                (amount, crate::quantity::parse(&ceiling.as_string()))
                                && v > c
                            {
                                problems.push((section, "maxExecutorResources", format!(
                                    "the Job of k8s block `{}` {section} {} of {name}, above the maximum {}",
                                    block.block,
                                    have.map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string())).unwrap_or_default(),
                                    ceiling.as_string()
                                )));
                            }
                        }
                    }
                }
                for (section, rule, message) in problems {
                    let key = super::executor::resource_key(&run.loaded, section);
                    let at = policy.pos(&format!("/spec/guardrails/{rule}"));
                    let help = format!(
                        "policy `{}` ({}:{}:{}); Mage takes `{key}` whole from one layer, so a section set here replaces the others' (workspace `{}`)",
                        policy.doc.metadata.name, policy.file, at.line, at.column, run.workspace
                    );
                    let origin = run
                        .origins
                        .get(key)
                        .and_then(|o| Some((o.file.clone()?, o.pos?, o.pointer.clone()?)));
                    let diagnostic = match origin {
                        Some((file, pos, field)) => Diagnostic::error(&file, pos, &field, message),
                        None => match block_position(repo, block) {
                            Some((file, pos, field)) => {
                                Diagnostic::error(&file, pos, &field, message)
                            }
                            None => continue,
                        },
                    };
                    out.push(diagnostic.with_help(help));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|d| seen.insert((d.file.clone(), d.line, d.column, d.message.clone())));
    out
}

/// Where a k8s block is declared.
fn block_position(
    repo: &Repository,
    block: &super::executor::BlockExecutor,
) -> Option<(String, crate::load::yaml::Pos, String)> {
    let sources = repo.executor.iter().find(|s| s.project == block.project)?;
    let pipeline = sources
        .pipelines
        .iter()
        .find(|p| p.uuid == block.pipeline)?;
    let found = pipeline.blocks.iter().find(|b| b.uuid == block.block)?;
    Some((pipeline.file.clone(), found.pos, found.pointer.clone()))
}

/// Executor configs (block, project, template) that set a key a policy forbids.
fn forbidden_executor_settings(repo: &Repository) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for sources in &repo.executor {
        for config in sources.layers() {
            for policy in &repo.policies {
                let selector = &policy.doc.spec.selector;
                if !(selector.projects.is_empty() || selector.projects.contains(&sources.project)) {
                    continue;
                }
                for (i, key) in policy
                    .doc
                    .spec
                    .guardrails
                    .forbidden_executor_settings
                    .iter()
                    .enumerate()
                {
                    // Mage's keys as written: each spelling is a setting of its own.
                    let pointer = format!("/{}", key.replace('.', "/"));
                    if config
                        .value
                        .pointer(&pointer)
                        .is_none_or(serde_json::Value::is_null)
                    {
                        continue;
                    }
                    let at = policy.pos(&format!("/spec/guardrails/forbiddenExecutorSettings/{i}"));
                    let full = config.written_at(&pointer);
                    out.push(
                        Diagnostic::error(
                            &config.file,
                            config.pos_of(&pointer),
                            &full,
                            format!("`{key}` is forbidden"),
                        )
                        .with_help(format!(
                            "policy `{}` ({}:{}:{})",
                            policy.doc.metadata.name, policy.file, at.line, at.column
                        )),
                    );
                }
            }
        }
    }
    out
}
