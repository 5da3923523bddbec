//! Rollout policies: for each workspace, how its restarts roll with the rest of its
//! project (the project's `rollout`, the workspace's `lifecycle.rollout` over it, field by
//! field), bounded by the Policies that select it.

use super::guardrails::selects;
use super::{Resolved, ResolvedWorkspace};
use crate::load::yaml::LazySpans;
use crate::load::{Diagnostic, Located, Repository};
use crate::model::{Budget, ProjectDocument, Rollout, WorkspaceDocument};
use rayon::prelude::*;
use std::collections::HashMap;

/// At most this share of a project's workspaces restart at once unless the project says
/// otherwise: one in ten keeps nine in ten of a team's servers (and open notebooks)
/// running, yet a project of 1,000 finishes in ten batches.
pub const DEFAULT_MAX_UNAVAILABLE: &str = "10%";
/// A restarted Mage server pulls its image and starts in well under a minute; ten minutes
/// without Ready is a broken change, not a slow one.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u64 = 600;
/// A Secret rotated every few seconds restarts a workspace at most once a minute.
pub const DEFAULT_MIN_RESTART_INTERVAL_SECONDS: u64 = 60;

/// One workspace's rollout policy, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPolicy {
    /// Workspaces of one project with the same budget roll together, as one group.
    pub max_unavailable: Budget,
    pub progress_deadline_seconds: u64,
    pub min_restart_interval_seconds: u64,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            max_unavailable: Budget::Percent(DEFAULT_MAX_UNAVAILABLE.into()),
            progress_deadline_seconds: DEFAULT_PROGRESS_DEADLINE_SECONDS,
            min_restart_interval_seconds: DEFAULT_MIN_RESTART_INTERVAL_SECONDS,
        }
    }
}

/// Set every workspace's [`ResolvedWorkspace::rollout`]; a budget that is not a count or a
/// percentage, or that a selecting Policy does not allow, is an error where it is written.
pub fn resolve(repo: &Repository, resolved: &mut Resolved) -> Vec<Diagnostic> {
    let projects: HashMap<&str, &Located<ProjectDocument>> = repo
        .projects
        .iter()
        .map(|p| (p.doc.metadata.name.as_str(), p))
        .collect();
    let mut sizes: HashMap<&str, usize> = HashMap::new();
    for ws in &resolved.workspaces {
        *sizes.entry(ws.project.as_str()).or_default() += 1;
    }
    let sizes: HashMap<String, usize> =
        sizes.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    resolved
        .workspaces
        .par_iter_mut()
        .flat_map_iter(|ws| {
            let mut found = Vec::new();
            if let (Some(project), Some(document)) = (
                projects.get(ws.project.as_str()),
                repo.workspaces.get(ws.document),
            ) {
                let total = sizes.get(&ws.project).copied().unwrap_or(1);
                ws.rollout = policy_of(repo, project, document, ws, total, &mut found);
            }
            found
        })
        .collect()
}

fn policy_of(
    repo: &Repository,
    project: &Located<ProjectDocument>,
    document: &Located<WorkspaceDocument>,
    ws: &ResolvedWorkspace,
    total: usize,
    out: &mut Vec<Diagnostic>,
) -> RolloutPolicy {
    let default = Rollout::default();
    let of_project = project.doc.spec.rollout.as_ref().unwrap_or(&default);
    let of_workspace = document
        .doc
        .spec
        .lifecycle
        .rollout
        .as_ref()
        .unwrap_or(&default);
    let mut policy = RolloutPolicy::default();
    // Where the budget is written, to point at it.
    let written: Option<Written> =
        match (&of_workspace.max_unavailable, &of_project.max_unavailable) {
            (Some(b), _) => Some((
                b,
                &document.file,
                &document.spans,
                "/spec/lifecycle/rollout/maxUnavailable",
            )),
            (None, Some(b)) => Some((
                b,
                &project.file,
                &project.spans,
                "/spec/rollout/maxUnavailable",
            )),
            _ => None,
        };
    if let Some((budget, file, spans, pointer)) = written {
        if budget.of(total).is_none() {
            out.push(Diagnostic::error(
                file,
                spans.value(pointer),
                pointer,
                format!(
                    "maxUnavailable `{budget}` is neither a count nor a percentage from 0% to 100%"
                ),
            ));
        } else {
            policy.max_unavailable = budget.clone();
        }
    }
    bound_by_policies(repo, ws, total, written, &mut policy, out);
    if let Some(s) = of_workspace
        .progress_deadline_seconds
        .or(of_project.progress_deadline_seconds)
    {
        policy.progress_deadline_seconds = s;
    }
    if let Some(s) = of_workspace
        .min_restart_interval_seconds
        .or(of_project.min_restart_interval_seconds)
    {
        policy.min_restart_interval_seconds = s;
    }
    policy
}

/// Where a workspace's budget is written (its own, else its project's): the budget, its
/// file, that document's positions (looked up only for an error) and field.
type Written<'a> = (&'a Budget, &'a String, &'a LazySpans, &'static str);

/// The Policies' `maxRolloutUnavailable` bounds: a budget written above one is an error
/// there; the default budget gives way to it.
fn bound_by_policies(
    repo: &Repository,
    ws: &ResolvedWorkspace,
    total: usize,
    written: Option<Written>,
    policy: &mut RolloutPolicy,
    out: &mut Vec<Diagnostic>,
) {
    for p in repo.policies.iter().filter(|p| selects(&p.doc, ws)) {
        let Some(bound) = &p.doc.spec.guardrails.max_rollout_unavailable else {
            continue;
        };
        if !policy.max_unavailable.exceeds(bound, total) {
            continue;
        }
        match written {
            Some((budget, file, spans, pointer)) if budget == &policy.max_unavailable => {
                let at = p.pos("/spec/guardrails/maxRolloutUnavailable");
                out.push(
                    Diagnostic::error(
                        file,
                        spans.value(pointer),
                        pointer,
                        format!(
                            "maxUnavailable `{budget}` of workspace `{}` exceeds the maximum `{bound}`",
                            ws.name
                        ),
                    )
                    .with_help(format!(
                        "policy `{}` ({}:{}:{})",
                        p.doc.metadata.name, p.file, at.line, at.column
                    )),
                );
            }
            // The default gives way to the Policy's bound.
            _ => policy.max_unavailable = bound.clone(),
        }
    }
}
