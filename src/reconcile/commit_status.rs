//! Where the reconcile loop tells [`super::notify`] what happened to a revision. Kept
//! apart from the loop so the loop carries one call per point (refused, applying, apply
//! outcome, workspace progress) and this file maps its outcomes to the notifier's terms.

use super::config::Config;
use super::notify::{ApplyResult, Notifier};
use super::state::{Outcome, Reconciler, Refusal, Target, short};
use crate::source::Revision;
use anyhow::Result;
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a revision's restarted workspaces are looked at until they are Ready.
const FOLLOW: std::time::Duration = std::time::Duration::from_secs(1);

/// The notifier of `config`, its task pushed on `tasks`; `None` when nothing is to be
/// notified. The statuses link to `config.notify.target_url`, else to the status page on
/// the address served. `kube` reads a token kept in a Secret.
pub(super) fn start(
    config: &Config,
    kube: kube::Client,
    served: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Option<Notifier>> {
    if config.notify.is_empty() {
        return Ok(None);
    }
    let mut notify = config.notify.clone();
    if notify.context.is_empty() {
        notify.context = format!("berth/{}", config.applyset.name);
    }
    if notify.target_url.is_none()
        && let Some(addr) = served
    {
        notify.target_url = Some(format!("http://{addr}/"));
    }
    let (notifier, task) = Notifier::start(notify, Some(kube), shutdown)?;
    tasks.push(task);
    Ok(Some(notifier))
}

impl Reconciler {
    /// A revision refused before any apply: `failure` with its first diagnostic.
    pub(super) fn notify_refused(&mut self, revision: &Revision, refusal: Refusal, message: &str) {
        let Some(notifier) = self.notifier.as_mut() else {
            return;
        };
        // An invalid revision's message lists its errors from the second line on.
        let first = match refusal {
            Refusal::Invalid => message.lines().nth(1).unwrap_or(message),
            Refusal::Unverified => message,
        };
        let workspaces = self.shared.status().workspaces;
        notifier.finished(
            &revision.commit,
            ApplyResult::Refused {
                first: first.to_string(),
            },
            Vec::new(),
            &workspaces,
        );
    }

    /// An apply of `target` starts (the plan has changes): `pending`.
    pub(super) fn notify_applying(&mut self, target: &Target) {
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.applying(&target.commit);
        }
    }

    /// How the cycle's apply of `target` came out.
    pub(super) fn notify_outcome(&mut self, target: &Target, outcome: &Outcome) {
        let Some(notifier) = self.notifier.as_mut() else {
            return;
        };
        let (result, restarted) = match outcome {
            // Leadership moved or berth stops: the next leader decides.
            Outcome::Abandoned => return,
            Outcome::Unchanged => (ApplyResult::Unchanged, Vec::new()),
            Outcome::Applied(live, report) => {
                let restarted: Vec<String> = live
                    .plan
                    .restarts
                    .iter()
                    .filter(|r| r.pending.is_none())
                    .map(|r| format!("{}/{}", r.namespace, r.workspace))
                    .collect();
                let count = |verb: &str| report.done.iter().filter(|(_, v)| *v == verb).count();
                let mut summary = format!(
                    "applied {}: {} created, {} updated, {} deleted",
                    short(&target.commit),
                    count("created"),
                    count("updated"),
                    count("deleted")
                );
                if !restarted.is_empty() {
                    summary.push_str(&format!("; {} restarted and Ready", restarted.len()));
                }
                (ApplyResult::Applied { summary }, restarted)
            }
            Outcome::Failed(kind, message) => {
                let first = message.lines().next().unwrap_or_default().to_string();
                match kind.as_str() {
                    // The revision cannot be applied as it is.
                    "apply" | "tenancy" => (ApplyResult::Failed { first }, Vec::new()),
                    // The cluster (or berth's access to it) is the trouble, not the revision.
                    _ => (ApplyResult::Unreachable { cause: first }, Vec::new()),
                }
            }
        };
        let workspaces = self.shared.status().workspaces;
        notifier.finished(&target.commit, result, restarted, &workspaces);
    }

    /// A new revision could not even be judged: the cluster (its tenancy rule) could not
    /// be read. `error`, retried.
    pub(super) fn notify_unreachable(&mut self, commit: &str, message: &str) {
        if let Some(notifier) = self.notifier.as_mut() {
            let cause = message.lines().next().unwrap_or_default().to_string();
            notifier.finished(commit, ApplyResult::Unreachable { cause }, Vec::new(), &[]);
        }
    }

    /// While a revision waits for its restarted workspaces, the loop looks at them every
    /// second (one LIST of StatefulSets, no plan) instead of at the next poll.
    pub(super) fn follow_at(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match &self.notifier {
            Some(notifier) if notifier.is_awaiting() => now + FOLLOW,
            _ => now + std::time::Duration::from_secs(86_400),
        }
    }

    /// The workspaces' states were refreshed: a revision waiting for its restarts may be
    /// done.
    pub(super) fn notify_progress(&mut self) {
        if let Some(notifier) = self.notifier.as_mut() {
            let workspaces = self.shared.status().workspaces;
            notifier.progress(&workspaces);
        }
    }
}
