//! What the reconciler remembers between cycles ([`Reconciler`]), and the types its
//! stages hand each other: the revision in force ([`Target`]), why one is refused
//! ([`Refusal`]), what woke the loop ([`Trigger`]) and how an apply ended ([`Outcome`]).
//! The loop, the cycle, the apply and the reports each add their methods to
//! [`Reconciler`] in their own file; this one holds only the state they share.

use super::backoff::Backoff;
use super::config::Config;
use super::leader::Handover;
use super::shared::Shared;
use super::status::Status;
use crate::cluster::{ApplyReport, Cluster, LivePlan};
use crate::resolve::Resolved;
use crate::source::{Tracker, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A valid revision and what it renders to.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) commit: String,
    pub(super) summary: String,
    /// Shared: a cycle takes its target by cloning, and 10,000 workspaces resolve to
    /// hundreds of megabytes.
    pub(super) resolved: Arc<Resolved>,
    /// Workspaces that can go idle (`namespace/workspace` → seconds), from the rendered
    /// StatefulSets, read once per revision.
    pub(super) idle_timeouts: Arc<BTreeMap<String, u64>>,
    /// Who signed it (`--verify-commits`).
    pub(super) signer: Option<String>,
}

/// Why a revision is refused. Either way it is never applied, the last good revision stays
/// in force, and the refusal is reported once, the same way: the log, an Event on the
/// ApplySet parent, the status (`berth status`, the status page) and
/// `berth_reconciles_total{result=KIND}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It does not validate.
    Invalid,
    /// Its commit is not signed by an allowed key (`--verify-commits`).
    Unverified,
}

impl Refusal {
    const ALL: [Refusal; 2] = [Refusal::Invalid, Refusal::Unverified];

    /// The status error's kind and the metric's result.
    pub(super) fn kind(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::Unverified => "unverified",
        }
    }

    /// The Event's reason.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Refusal::Invalid => "InvalidRevision",
            Refusal::Unverified => "UnverifiedRevision",
        }
    }

    pub(super) fn is_refusal(kind: &str) -> bool {
        Refusal::ALL.iter().any(|r| r.kind() == kind)
    }
}

/// A refused revision as it was judged: the same commit is judged again only when the
/// signature check says something else (the allowed signers changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    pub(super) commit: String,
    pub(super) signature: Option<Verdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    Poll,
    Webhook,
    Files,
    Retry,
    Drift,
    Leadership,
}

pub(super) struct Reconciler {
    pub(super) config: Config,
    pub(super) cluster: Cluster,
    pub(super) tracker: Tracker,
    pub(super) shared: Arc<Shared>,
    pub(super) shutdown: CancellationToken,
    /// The last good revision: applied, in force.
    pub(super) applied: Option<Target>,
    /// A valid revision not applied yet (its apply failed and is retried).
    pub(super) pending: Option<Target>,
    /// The last refused revision seen, so it is reported once, not every poll.
    pub(super) refused: Option<Refused>,
    pub(super) idle: BTreeMap<String, String>,
    pub(super) backoff: Backoff,
    pub(super) retry_at: Option<Instant>,
    pub(super) next_drift: Instant,
    /// The status last written to the cluster.
    pub(super) written: Option<Status>,
    pub(super) first: bool,
    /// Told when this reconciler has stopped writing for good (with election).
    pub(super) handover: Option<oneshot::Sender<Handover>>,
    /// Whether the last apply was abandoned with requests in flight.
    pub(super) in_flight: bool,
    /// Commit statuses (`--commit-status`), chat notifications (`--notify-webhook`).
    pub(super) notifier: Option<super::notify::Notifier>,
    /// Halts already reported (`project workspace`), so each gets one Event.
    pub(super) halts: BTreeSet<String>,
}

pub(super) enum Outcome {
    Unchanged,
    Applied(Box<LivePlan>, ApplyReport),
    Failed(String, String),
    Abandoned,
}

/// Why an apply was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// SIGTERM/SIGINT, and the shutdown grace ran out.
    Shutdown,
    /// The cycle ran past `--cycle-timeout`.
    Timeout,
    /// The leader Lease was lost (not renewed in time, or taken over).
    Lost,
}

/// How soon the next cycle follows one whose rollout has more to do.
pub(super) const ROLLOUT_TICK: Duration = Duration::from_secs(2);

/// How long a stopped apply may take to return its report (it sends nothing new; this
/// only bounds a request of the ApplySet parent that was on its way).
pub(super) const STOPPING: Duration = Duration::from_secs(5);

impl Reconciler {
    /// Resolves when this instance may no longer write (never without election).
    pub(super) fn lost(&self) -> impl std::future::Future<Output = ()> + use<> {
        let fence = self.shared.election.as_ref().map(|e| e.fence().clone());
        async move {
            match fence {
                Some(fence) => fence.lost().await,
                None => std::future::pending().await,
            }
        }
    }

    pub(super) fn is_leader(&self) -> bool {
        self.shared.is_leader()
    }
}

pub(super) fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}
