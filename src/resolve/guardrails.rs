//! Policy guardrails: limits that every selected workspace must respect. A violation is an
//! error at the workspace field that breaks it, naming the policy.

use super::pattern::{Pattern, Subject};
use super::{Resolved, ResolvedWorkspace};
use crate::load::{Diagnostic, Located, Repository};
use crate::model::{PolicyDocument, WorkspaceDocument};

pub fn check(repo: &Repository, resolved: &Resolved) -> Vec<Diagnostic> {
    let mut out = forbidden_executor_settings(repo);
    let by_name: std::collections::HashMap<&str, &Located<WorkspaceDocument>> = repo
        .workspaces
        .iter()
        .map(|w| (w.doc.metadata.name.as_str(), w))
        .collect();
    for ws in &resolved.workspaces {
        let Some(located) = by_name.get(ws.name.as_str()).copied() else {
            continue;
        };
        for policy in repo.policies.iter().filter(|p| selects(&p.doc, ws)) {
            check_one(policy, located, ws, &mut out);
        }
    }
    out
}

fn selects(policy: &PolicyDocument, ws: &ResolvedWorkspace) -> bool {
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
    let mut violation = |pointer: &str, rule: &str, message: String| {
        let at = policy.pos(&format!("/spec/guardrails/{rule}"));
        out.push(
            Diagnostic::error(&ws.file, ws.pos(pointer), pointer, message).with_help(format!(
                "policy `{name}` ({}:{}:{})",
                policy.file, at.line, at.column
            )),
        );
    };

    if !rules.allowed_images.is_empty() {
        let allowed = rules
            .allowed_images
            .iter()
            .filter_map(|p| Pattern::parse(p, Subject::Image).ok())
            .any(|p| p.matches(&resolved.image));
        if !allowed {
            let pointer = if ws.doc.spec.image.is_some() {
                "/spec/image"
            } else {
                "/spec/project"
            };
            let inherited = if ws.doc.spec.image.is_some() {
                ""
            } else {
                " (inherited from the project)"
            };
            violation(
                pointer,
                "allowedImages",
                format!(
                    "image `{}`{inherited} is not allowed; allowed: {}",
                    resolved.image,
                    rules.allowed_images.join(", ")
                ),
            );
        }
    }

    if let (Some(max), Some(resources)) = (&rules.max_resources, &ws.doc.spec.resources) {
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
                    violation(
                        &format!("/spec/resources/{section}/{resource}"),
                        "maxResources",
                        format!(
                            "{resource} {section} {} exceeds the maximum {}",
                            quantity.as_string(),
                            ceiling.as_string()
                        ),
                    );
                }
            }
        }
    }

    for label in &rules.required_labels {
        if !resolved.labels.contains_key(label) {
            violation(
                "/metadata",
                "requiredLabels",
                format!("missing required label `{label}`"),
            );
        }
    }

    if rules.forbid_host_path {
        for (i, volume) in ws.doc.spec.kubernetes.volumes.iter().enumerate() {
            if volume.host_path.is_some() {
                violation(
                    &format!("/spec/kubernetes/volumes/{i}/hostPath"),
                    "forbidHostPath",
                    format!("volume `{}` mounts a hostPath", volume.name),
                );
            }
        }
    }
}

/// Executor configs (block, project, template) that set a key a policy forbids.
fn forbidden_executor_settings(repo: &Repository) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for sources in &repo.executor {
        let configs = sources
            .project_config
            .iter()
            .chain(sources.template.iter())
            .chain(
                sources
                    .pipelines
                    .iter()
                    .flat_map(|p| p.blocks.iter().filter_map(|b| b.config.as_ref())),
            );
        for config in configs {
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
                    // Configs are canonical: so is the key, whichever spelling it names.
                    let pointer =
                        crate::model::canonical_pointer(&format!("/{}", key.replace('.', "/")));
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
