//! Reconcile: the long-running reconciler behind `berth watch`. It follows a source (a git
//! branch, tag or commit, or a folder), and on every new revision runs the same pipeline
//! as `berth apply` — load, validate, plan, server-side apply, prune — so CI and the
//! cluster compute the same thing. Around it: a periodic drift check that heals live edits
//! (the reconciler owns its fields, so it applies with force-conflicts), idle termination
//! of workspaces, exponential backoff of failed applies, leader election so only one of
//! several replicas writes, and the status, Events, metrics and webhook people see.
//!
//! A refused revision is never applied: one that does not validate, or — with
//! `--verify-commits` — whose commit is not signed by an allowed key. The last good one
//! stays in force, and the refusal is reported once per revision, by one code path for
//! both ([`Refusal`]): log, Event, status, metric.

pub mod backoff;
pub mod cli;
mod commit_status;
pub mod idle;
pub mod leader;
pub mod metrics;
mod page;
mod server;
pub mod status;
pub mod webhook;

use crate::cluster::applyset::ApplySet;
use crate::cluster::fence::Fence;
use crate::cluster::{
    ApplyOptions, ApplyReport, Cluster, ErrorCounter, LivePlan, PlanOptions, RequestCounter,
};
use crate::plan::Action;
use crate::render::{IDLE_SINCE, RenderContext};
use crate::resolve::Resolved;
use crate::source::{Revision, SignaturePolicy, SourceSpec, Tracker, Verdict};
use anyhow::{Context, Result};
use backoff::Backoff;
use leader::{Election, Handover, LeaderConfig};
use metrics::Metrics;
use serde_json::Value;
use status::{ErrorInfo, RevisionInfo, Status, WorkspaceStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How `berth watch` runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceSpec,
    pub applyset: ApplySet,
    /// How often the source is fetched (default 30 s).
    pub poll_interval: Duration,
    /// How often the cluster is compared with the last good revision and healed (5 min).
    pub drift_interval: Duration,
    /// This instance's name (the pod name in a cluster).
    pub identity: String,
    /// Leader election; `None` runs as the only writer.
    pub leader: Option<LeaderConfig>,
    /// Where to serve /healthz, /readyz, /metrics and /hooks/git; `None`: no server.
    pub listen: Option<SocketAddr>,
    /// The webhooks' shared secret; without one every webhook is refused.
    pub webhook_secret: Option<String>,
    /// Delete members git no longer holds.
    pub prune: bool,
    pub allow_mass_prune: bool,
    /// First retry delay after a failure, doubling up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long an apply in flight may still run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long one cycle (reading activity, planning, applying) may take before it is
    /// abandoned and retried with backoff.
    pub cycle_timeout: Duration,
    /// Apply only revisions whose commit is signed as this says (`--verify-commits`);
    /// `None`: any commit.
    pub verify_commits: Option<SignaturePolicy>,
    /// Commit statuses and chat notifications ([`crate::notify`]); empty: none.
    pub notify: crate::notify::Config,
}

impl Config {
    pub fn new(source: SourceSpec, applyset: ApplySet, identity: String) -> Config {
        Config {
            source,
            applyset,
            poll_interval: Duration::from_secs(30),
            drift_interval: Duration::from_secs(300),
            identity,
            leader: None,
            listen: None,
            webhook_secret: None,
            prune: true,
            allow_mass_prune: false,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(20),
            cycle_timeout: Duration::from_secs(300),
            verify_commits: None,
            notify: crate::notify::Config::default(),
        }
    }
}

/// State shared by the loop, the HTTP server and the caller.
pub struct Shared {
    metrics: Metrics,
    status: Mutex<Status>,
    ready: AtomicBool,
    /// Whether the leader's last cycle reached the API server (no request failed as
    /// unreachable, timed out or answered 5xx).
    api_reached: AtomicBool,
    heartbeat: Mutex<Instant>,
    stall_after: Duration,
    fetch: Arc<Notify>,
    election: Option<Election>,
    webhook_secret: Option<String>,
    followed_ref: Option<String>,
    requests: RequestCounter,
    errors: ErrorCounter,
    /// Bounds and counters of `POST /hooks/git`.
    hooks: server::Hooks,
    /// Where the status page finds the leader's status when this instance is a standby.
    page: page::PageState,
}

impl Shared {
    /// The status as this instance knows it (a follower's is not written anywhere).
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether this instance may write (leads, or runs without election).
    pub fn is_leader(&self) -> bool {
        self.election.as_ref().is_none_or(Election::is_leader)
    }

    /// API requests of the reconcile work (not of the election), by verb.
    pub fn api_requests(&self) -> BTreeMap<String, u64> {
        self.requests.snapshot()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether the API server could be used lately: by the leader's last cycle, or for a
    /// standby by its election's last look at the Lease.
    pub fn api_reached(&self) -> bool {
        match &self.election {
            Some(election) if !election.is_leader() => election.reached(),
            _ => self.api_reached.load(Ordering::Relaxed),
        }
    }

    /// Why the loop looks stuck, if it does.
    fn stalled(&self) -> Option<String> {
        let beat = self.heartbeat.lock().map(|b| *b).ok()?;
        (beat.elapsed() > self.stall_after).then(|| {
            format!(
                "the reconcile loop has not run for {}s",
                beat.elapsed().as_secs()
            )
        })
    }

    fn beat(&self) {
        if let Ok(mut beat) = self.heartbeat.lock() {
            *beat = Instant::now();
        }
    }

    pub fn metrics_text(&self) -> String {
        let mut clients = vec![("reconcile", &self.requests, &self.errors)];
        if let Some(election) = &self.election {
            let cluster = election.cluster();
            clients.push(("election", &cluster.requests, &cluster.errors));
        }
        self.metrics.encode(&clients)
    }

    /// Fetch now (a verified webhook). A follower also asks the leader, through the Lease.
    async fn request_fetch(&self) {
        if let Some(election) = self.election.as_ref().filter(|e| !e.is_leader())
            && let Err(err) = election.request_fetch().await
        {
            tracing::warn!(error = %crate::cluster::error::chain(&err), "could not pass the webhook on to the leader");
        }
        self.fetch.notify_one();
    }

    fn set_status(&self, update: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.status.lock() {
            update(&mut status);
        }
    }
}

/// A started reconciler.
pub struct Running {
    /// The address the HTTP server listens on (with the real port for `:0`).
    pub addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    task: JoinHandle<Result<()>>,
}

impl Running {
    /// Wait until the reconciler has stopped (after `shutdown` was cancelled).
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("the reconciler task panicked")?
    }
}

/// Start the reconciler: bind the server, start the election, run the loop until
/// `shutdown` is cancelled. `kube_config` is used for two clients, one for the work and
/// one for the election, so each one's API requests are counted on their own.
pub async fn start(
    config: Config,
    kube_config: kube::Config,
    shutdown: CancellationToken,
) -> Result<Running> {
    // With election, every write of the reconcile client goes through the Lease's fence.
    let fence = config.leader.as_ref().map(|_| Fence::new());
    let cluster = Cluster::from_config_fenced(kube_config.clone(), fence.clone())?;
    let tracker = Tracker::open(config.source.clone())?
        .verifying(config.verify_commits.clone())?
        .reading_secrets_with(cluster.client.clone());
    let fetch = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let (election, handover) = match (&config.leader, fence) {
        (Some(leader_config), Some(fence)) => {
            let election_cluster = Cluster::from_config(kube_config)?;
            // The election goes on trying by itself, through any outage.
            election_cluster.outage.disable();
            let (election, task, handover) = leader::start(
                election_cluster,
                leader_config.clone(),
                fetch.clone(),
                shutdown.clone(),
                fence,
            );
            tasks.push(task);
            (Some(election), Some(handover))
        }
        _ => (None, None),
    };
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        status: Mutex::new(Status {
            source: config.source.describe(),
            writer: config.identity.clone(),
            ..Default::default()
        }),
        ready: AtomicBool::new(false),
        api_reached: AtomicBool::new(true),
        heartbeat: Mutex::new(Instant::now()),
        stall_after: (config.poll_interval * 4).max(Duration::from_secs(600)),
        fetch: fetch.clone(),
        election: election.clone(),
        webhook_secret: config.webhook_secret.clone().filter(|s| !s.is_empty()),
        followed_ref: tracker.followed_ref(),
        requests: cluster.requests.clone(),
        errors: cluster.errors.clone(),
        hooks: server::Hooks::default(),
        page: page::PageState::new(config.applyset.clone()),
    });
    if shared.webhook_secret.is_none() {
        tracing::warn!("no webhook secret: POST /hooks/git refuses every request");
    }
    let mut addr = None;
    // The server also stops when the loop ends on an error.
    let server_stop = shutdown.child_token();
    if let Some(listen) = config.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        addr = Some(listener.local_addr().context("reading the bound address")?);
        let router = server::router(shared.clone());
        tasks.push(tokio::spawn(server::serve(
            listener,
            router,
            server_stop.clone(),
        )));
        tracing::info!(%listen, "serving the status page, /api/status, /healthz, /readyz, /metrics and /hooks/git");
    }
    let notifier = commit_status::start(
        &config,
        cluster.client.clone(),
        addr,
        shutdown.clone(),
        &mut tasks,
    )?;
    let reconciler = Reconciler {
        backoff: Backoff::new(config.backoff_base, config.backoff_max),
        next_drift: Instant::now() + config.drift_interval,
        config,
        cluster,
        tracker,
        shared: shared.clone(),
        shutdown: shutdown.clone(),
        applied: None,
        pending: None,
        refused: None,
        idle: BTreeMap::new(),
        retry_at: None,
        written: None,
        first: true,
        handover,
        in_flight: false,
        notifier,
        halts: BTreeSet::new(),
    };
    let task = tokio::spawn(async move {
        let result = reconciler.run(fetch, election).await;
        server_stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        result
    });
    Ok(Running { addr, shared, task })
}

/// A valid revision and what it renders to.
#[derive(Clone)]
struct Target {
    commit: String,
    summary: String,
    /// Shared: a cycle takes its target by cloning, and 10,000 workspaces resolve to
    /// hundreds of megabytes.
    resolved: Arc<Resolved>,
    /// Workspaces that can go idle (`namespace/workspace` → seconds), from the rendered
    /// StatefulSets, read once per revision.
    idle_timeouts: Arc<BTreeMap<String, u64>>,
    /// Who signed it (`--verify-commits`).
    signer: Option<String>,
}

/// Why a revision is refused. Either way it is never applied, the last good revision stays
/// in force, and the refusal is reported once, the same way: the log, an Event on the
/// ApplySet parent, the status (`berth status`, the status page) and
/// `berth_reconciles_total{result=KIND}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// It does not validate.
    Invalid,
    /// Its commit is not signed by an allowed key (`--verify-commits`).
    Unverified,
}

impl Refusal {
    const ALL: [Refusal; 2] = [Refusal::Invalid, Refusal::Unverified];

    /// The status error's kind and the metric's result.
    fn kind(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::Unverified => "unverified",
        }
    }

    /// The Event's reason.
    fn reason(self) -> &'static str {
        match self {
            Refusal::Invalid => "InvalidRevision",
            Refusal::Unverified => "UnverifiedRevision",
        }
    }

    fn is_refusal(kind: &str) -> bool {
        Refusal::ALL.iter().any(|r| r.kind() == kind)
    }
}

/// A refused revision as it was judged: the same commit is judged again only when the
/// signature check says something else (the allowed signers changed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    commit: String,
    signature: Option<Verdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Poll,
    Webhook,
    Files,
    Retry,
    Drift,
    Leadership,
}

struct Reconciler {
    config: Config,
    cluster: Cluster,
    tracker: Tracker,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    /// The last good revision: applied, in force.
    applied: Option<Target>,
    /// A valid revision not applied yet (its apply failed and is retried).
    pending: Option<Target>,
    /// The last refused revision seen, so it is reported once, not every poll.
    refused: Option<Refused>,
    idle: BTreeMap<String, String>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    next_drift: Instant,
    /// The status last written to the cluster.
    written: Option<Status>,
    first: bool,
    /// Told when this reconciler has stopped writing for good (with election).
    handover: Option<oneshot::Sender<Handover>>,
    /// Whether the last apply was abandoned with requests in flight.
    in_flight: bool,
    /// Commit statuses (`--commit-status`), chat notifications (`--notify-webhook`).
    notifier: Option<crate::notify::Notifier>,
    /// Halts already reported (`project workspace`), so each gets one Event.
    halts: BTreeSet<String>,
}

enum Outcome {
    Unchanged,
    Applied(Box<LivePlan>, ApplyReport),
    Failed(String, String),
    Abandoned,
}

/// Why an apply was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM/SIGINT, and the shutdown grace ran out.
    Shutdown,
    /// The cycle ran past `--cycle-timeout`.
    Timeout,
    /// The leader Lease was lost (not renewed in time, or taken over).
    Lost,
}

/// How soon the next cycle follows one whose rollout has more to do.
const ROLLOUT_TICK: Duration = Duration::from_secs(2);

/// How long a stopped apply may take to return its report (it sends nothing new; this
/// only bounds a request of the ApplySet parent that was on its way).
const STOPPING: Duration = Duration::from_secs(5);

impl Reconciler {
    async fn run(mut self, fetch: Arc<Notify>, election: Option<Election>) -> Result<()> {
        let mut watcher = self.tracker.watcher()?;
        let mut leading = election.as_ref().map(Election::subscribe);
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            source = %self.config.source.describe(),
            applyset = %format!("{}/{}", self.config.applyset.namespace, self.config.applyset.name),
            identity = %self.config.identity,
            "berth watch started"
        );
        loop {
            self.shared.beat();
            if self.shutdown.is_cancelled() {
                break;
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
            let retry_at = self
                .retry_at
                .map(tokio::time::Instant::from_std)
                .unwrap_or(far);
            let drift_at = tokio::time::Instant::from_std(self.next_drift);
            let trigger = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                _ = poll.tick() => Trigger::Poll,
                _ = fetch.notified() => Trigger::Webhook,
                changed = changed(&mut watcher) => {
                    if !changed {
                        watcher = None;
                        continue;
                    }
                    Trigger::Files
                }
                _ = tokio::time::sleep_until(retry_at) => Trigger::Retry,
                _ = tokio::time::sleep_until(drift_at) => Trigger::Drift,
                _ = tokio::time::sleep_until(self.follow_at()) => Trigger::Poll,
                _ = leadership(&mut leading) => Trigger::Leadership,
            };
            self.cycle(trigger).await;
        }
        // Every write of this instance is over (answered, or abandoned in flight): the
        // election may now hand the Lease over.
        if let Some(handover) = self.handover.take() {
            let _ = handover.send(if self.in_flight {
                Handover::Expire
            } else {
                Handover::Release
            });
        }
        tracing::info!("berth watch stopped");
        Ok(())
    }

    /// Resolves when this instance may no longer write (never without election).
    fn lost(&self) -> impl std::future::Future<Output = ()> + use<> {
        let fence = self.shared.election.as_ref().map(|e| e.fence().clone());
        async move {
            match fence {
                Some(fence) => fence.lost().await,
                None => std::future::pending().await,
            }
        }
    }

    fn is_leader(&self) -> bool {
        self.shared.is_leader()
    }

    /// One cycle, bounded by `--cycle-timeout`; afterwards, whether it reached the API
    /// server (for /readyz).
    async fn cycle(&mut self, trigger: Trigger) {
        let requests = |c: &Cluster| c.requests.snapshot().values().sum::<u64>();
        // Each cycle judges the control plane anew: an outage found by the last one is
        // forgotten ([`crate::cluster::outage`]).
        self.cluster.outage.reset();
        let before = (requests(&self.cluster), self.cluster.errors.unavailable());
        let deadline = tokio::time::Instant::now() + self.config.cycle_timeout;
        self.cycle_within(trigger, deadline).await;
        if requests(&self.cluster) > before.0 {
            let reached = self.cluster.errors.unavailable() == before.1;
            self.shared.api_reached.store(reached, Ordering::Relaxed);
        }
    }

    async fn cycle_within(&mut self, trigger: Trigger, deadline: tokio::time::Instant) {
        let leader = self.is_leader();
        self.shared.metrics.leader(leader);
        if trigger == Trigger::Retry {
            self.retry_at = None;
        }
        // 1. The source's latest revision.
        let revision = match self.tracker.latest().await {
            Ok(revision) => revision,
            Err(err) => {
                let message = crate::cluster::error::chain(&err);
                tracing::warn!(error = %message, "reading the source failed");
                self.shared.metrics.fetch_error();
                if leader {
                    self.fail("fetch", None, message).await;
                }
                return;
            }
        };
        self.shared.ready.store(true, Ordering::Relaxed);
        let signed_by = signer(&revision);
        self.shared.set_status(|s| {
            // A new commit, or the same one judged anew (the allowed signers changed).
            if s.last_seen.as_ref().map(|r| (&r.revision, &r.signer))
                != Some((&revision.commit, &signed_by))
            {
                s.last_seen = Some(RevisionInfo {
                    revision: revision.commit.clone(),
                    summary: revision.summary.clone(),
                    at: status::now(),
                    signer: signed_by,
                });
            }
            if s.error.as_ref().is_some_and(|e| e.kind == "fetch") {
                s.error = None;
            }
        });
        if !leader {
            return;
        }

        // 2. A new revision is checked and validated; a refused one is reported and never
        // applied.
        let fresh = [&self.applied, &self.pending]
            .iter()
            .all(|t| t.as_ref().is_none_or(|t| t.commit != revision.commit))
            && self
                .refused
                .as_ref()
                .is_none_or(|r| r.commit != revision.commit || r.signature != revision.signature);
        if fresh {
            self.evaluate(&revision).await;
        }
        let Some(target) = self.pending.clone().or_else(|| self.applied.clone()) else {
            self.write_status().await;
            return;
        };

        // 3. Idle workspaces: one LIST of Leases.
        let idle = match tokio::time::timeout_at(
            deadline,
            idle::idle_workspaces(&self.cluster, &self.config.applyset, &target.idle_timeouts),
        )
        .await
        {
            Ok(Ok(idle)) => idle,
            Ok(Err(err)) => {
                tracing::warn!(error = %crate::cluster::error::chain(&err), "reading activity Leases failed");
                self.idle.clone()
            }
            Err(_) => {
                tracing::warn!(cycle_timeout = ?self.config.cycle_timeout, "reading activity Leases took the whole cycle");
                self.idle.clone()
            }
        };
        let full = self.pending.is_some()
            || idle != self.idle
            || self.first
            || matches!(
                trigger,
                Trigger::Drift | Trigger::Retry | Trigger::Leadership
            );
        if !full {
            self.refresh_workspaces().await;
            self.notify_progress();
            self.write_status().await;
            return;
        }
        self.first = false;
        self.next_drift = Instant::now() + self.config.drift_interval;

        // 4. Plan and apply.
        let started = Instant::now();
        let outcome = self.apply(&target, &idle, deadline).await;
        let took = started.elapsed();
        self.notify_outcome(&target, &outcome);
        match outcome {
            Outcome::Abandoned => {
                self.shared.metrics.reconciled("abandoned", took);
            }
            Outcome::Failed(kind, message) => {
                self.shared.metrics.reconciled("failed", took);
                self.fail(&kind, Some(target.commit.clone()), message).await;
            }
            Outcome::Unchanged => {
                self.shared.metrics.reconciled("unchanged", took);
                self.succeeded(&target, trigger, &idle, None).await;
            }
            Outcome::Applied(live, report) => {
                self.shared.metrics.reconciled("applied", took);
                self.succeeded(&target, trigger, &idle, Some((*live, report)))
                    .await;
            }
        }
        self.write_status().await;
    }

    /// The rollouts of this cycle's plan: in the status and the metrics, an Event for each
    /// new halt, and the next cycle soon while a batch is under way (a rollout advances as
    /// its restarted workspaces become Ready, not at the next poll).
    async fn follow_rollouts(&mut self, rollouts: &[crate::plan::rollout::Rollout]) {
        self.shared.metrics.rollouts(rollouts);
        self.shared.set_status(|s| s.rollouts = rollouts.to_vec());
        let mut halts = BTreeSet::new();
        for r in rollouts {
            let Some(halt) = &r.halted else { continue };
            let key = format!("{} {}", r.project, halt.workspace);
            if !self.halts.contains(&key) {
                let message = format!(
                    "rollout of project {} halted at {}: {}; {} workspace(s) keep their running \
                     pods until a new commit changes or reverts it",
                    r.project, halt.workspace, halt.reason, r.waiting
                );
                tracing::error!("{message}");
                self.event(true, "RolloutHalted", &message).await;
            }
            halts.insert(key);
        }
        self.halts = halts;
        if rollouts
            .iter()
            .any(crate::plan::rollout::Rollout::in_progress)
        {
            self.next_drift = self.next_drift.min(Instant::now() + ROLLOUT_TICK);
        }
    }

    /// Check and validate a new revision: signed as required and valid → pending (applied
    /// next), else refused. The signature comes first: an unsigned revision is not even
    /// loaded. It is validated against the cluster's tenancy rule; when that cannot be
    /// read, the revision is neither accepted nor refused, and the next cycle tries again.
    async fn evaluate(&mut self, revision: &Revision) {
        if let Some(Verdict::Refused(why)) = &revision.signature {
            let message = format!(
                "revision {} is not signed by an allowed key ({why}); the last good revision \
                 stays in force",
                short(&revision.commit)
            );
            self.refuse(revision, Refusal::Unverified, message).await;
            return;
        }
        let tenancy = match self.tenancy().await {
            Ok(tenancy) => tenancy,
            Err(message) => {
                self.notify_unreachable(&revision.commit, &message);
                self.fail("tenancy", Some(revision.commit.clone()), message)
                    .await;
                return;
            }
        };
        let files = revision.files.clone();
        // Validated, not rendered: each plan renders with the cluster's facts; here only
        // the idle timeouts are read from the rendered StatefulSets, one at a time.
        let desired = crate::validated_with(files, Some(&tenancy));
        if desired.has_errors() {
            let errors: Vec<String> = desired
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            let message = format!(
                "revision {} is invalid ({} error(s)); the last good revision stays in force:\n{}",
                short(&revision.commit),
                errors.len(),
                errors.join("\n")
            );
            self.refuse(revision, Refusal::Invalid, message).await;
            return;
        }
        tracing::info!(revision = %revision.commit, summary = %revision.summary, "new revision");
        self.pending = Some(Target {
            commit: revision.commit.clone(),
            summary: revision.summary.clone(),
            idle_timeouts: Arc::new(idle::idle_timeouts(&desired.resolved)),
            resolved: Arc::new(desired.resolved),
            signer: signer(revision),
        });
        // A good head replaces a refused one.
        self.refused = None;
        self.backoff.reset();
        self.retry_at = None;
    }

    /// The one way a revision is refused, whatever the reason: never applied (the last
    /// good revision stays in force), reported once in the log, an Event, the status and
    /// the metric.
    async fn refuse(&mut self, revision: &Revision, refusal: Refusal, message: String) {
        tracing::error!(revision = %revision.commit, kind = refusal.kind(), "{message}");
        self.notify_refused(revision, refusal, &message);
        self.refused = Some(Refused {
            commit: revision.commit.clone(),
            signature: revision.signature.clone(),
        });
        self.shared
            .metrics
            .reconciled(refusal.kind(), Duration::ZERO);
        self.event(true, refusal.reason(), &message).await;
        self.shared.set_status(|s| {
            s.error = Some(ErrorInfo {
                kind: refusal.kind().into(),
                revision: Some(revision.commit.clone()),
                message,
                since: status::now(),
            });
        });
    }

    /// The cluster's tenancy rule (the ConfigMap berth-tenancy in berth's namespace).
    async fn tenancy(&self) -> Result<crate::tenancy::Tenancy, String> {
        crate::cluster::tenancy::read(&self.cluster, &self.config.applyset.namespace)
            .await
            .map_err(|err| crate::cluster::error::chain(&err))
    }

    async fn apply(
        &mut self,
        target: &Target,
        idle: &BTreeMap<String, String>,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        // The rule may have changed since the revision was accepted: nothing outside the
        // rule of now is applied.
        let tenancy = tokio::select! {
            tenancy = self.tenancy() => tenancy,
            _ = tokio::time::sleep_until(deadline) => {
                Err("reading the tenancy rule took longer than the cycle timeout".to_string())
            }
        };
        let refused: Vec<String> = match tenancy {
            Ok(tenancy) => crate::cluster::tenancy::refusals(&tenancy, &target.resolved)
                .into_iter()
                .map(|why| format!("{why} ({})", tenancy.describe()))
                .collect(),
            Err(message) => return Outcome::Failed("tenancy".into(), message),
        };
        if !refused.is_empty() {
            return Outcome::Failed(
                "tenancy".into(),
                format!(
                    "revision {} is outside the tenancy rule; nothing was applied: {}",
                    short(&target.commit),
                    refused.join("; ")
                ),
            );
        }
        let options = PlanOptions {
            applyset: self.config.applyset.clone(),
        };
        let ctx = RenderContext {
            idle: idle.clone(),
            ..Default::default()
        };
        // A plan writes nothing: on shutdown, a lost Lease or the cycle's deadline it is
        // simply dropped.
        let plan =
            crate::cluster::plan_with_context(&self.cluster, &target.resolved, &options, ctx);
        let live = tokio::select! {
            live = plan => match live {
                Ok(live) => live,
                Err(err) => {
                    if let Some(cause) = self.cluster.outage.message() {
                        return Outcome::Failed(
                            "unavailable".into(),
                            format!("{cause}: stopped planning; nothing was written"),
                        );
                    }
                    return Outcome::Failed("plan".into(), crate::cluster::error::chain(&err));
                }
            },
            _ = self.shutdown.cancelled() => {
                tracing::info!("shutting down: dropped the plan in progress; nothing was written");
                return Outcome::Abandoned;
            }
            _ = self.lost() => return Outcome::Abandoned,
            _ = tokio::time::sleep_until(deadline) => {
                return Outcome::Failed(
                    "timeout".into(),
                    format!(
                        "planning took longer than the cycle timeout ({}); nothing was written",
                        humantime(self.config.cycle_timeout)
                    ),
                );
            }
        };
        self.follow_rollouts(&live.plan.rollouts).await;
        if !live.plan.has_changes() {
            self.workspaces(&live, None, idle);
            return Outcome::Unchanged;
        }
        // Leadership may have moved while planning; and no apply starts after a signal.
        if !self.is_leader() || self.shutdown.is_cancelled() {
            return Outcome::Abandoned;
        }
        self.notify_applying(target);
        let stop = CancellationToken::new();
        let apply_options = ApplyOptions {
            applyset: self.config.applyset.clone(),
            force_conflicts: true,
            prune: self.config.prune,
            allow_mass_prune: self.config.allow_mass_prune,
            // Re-creating a StatefulSet for anything but claim growth is for a person to
            // decide (`berth apply --allow-replace`), never for the reconciler. (A Service
            // holds no data: its re-creation needs no flag.)
            allow_replace: false,
            progress_bar: false,
            quiet: true,
            stop: stop.clone(),
        };
        self.in_flight = false;
        let mut why = None;
        let result = {
            let apply = crate::cluster::apply(&self.cluster, &live, &apply_options);
            tokio::pin!(apply);
            let lost = self.lost();
            tokio::pin!(lost);
            let grace = async {
                self.shutdown.cancelled().await;
                tracing::info!(grace = ?self.config.shutdown_grace, "shutting down: letting the apply in flight finish");
                tokio::time::sleep(self.config.shutdown_grace).await;
            };
            tokio::pin!(grace);
            let finished = tokio::select! {
                result = &mut apply => Some(result),
                _ = &mut grace => {
                    why = Some(Stop::Shutdown);
                    None
                }
                _ = &mut lost => {
                    why = Some(Stop::Lost);
                    None
                }
                _ = tokio::time::sleep_until(deadline) => {
                    why = Some(Stop::Timeout);
                    None
                }
            };
            match finished {
                Some(result) => Some(result),
                // Stop sending; the requests in flight are abandoned at once.
                None => {
                    stop.cancel();
                    tokio::time::timeout(STOPPING, &mut apply).await.ok()
                }
            }
        };
        let Some(result) = result else {
            // Not even a report: whatever was on its way is abandoned.
            self.in_flight = true;
            return self.stopped(why, None);
        };
        if let Ok(report) = &result
            && (report.stopped || why == Some(Stop::Lost))
        {
            self.in_flight = !report.abandoned.is_empty();
            return self.stopped(why, Some(report));
        }
        if why == Some(Stop::Lost) {
            return self.stopped(why, None);
        }
        match result {
            Err(_) if self.cluster.outage.message().is_some() => Outcome::Failed(
                "unavailable".into(),
                format!(
                    "{}: stopped the apply; nothing was pruned",
                    self.cluster.outage.message().unwrap_or_default()
                ),
            ),
            Err(err) => Outcome::Failed("apply".into(), crate::cluster::error::chain(&err)),
            Ok(report) => {
                self.workspaces(&live, Some(&report), idle);
                if !report.failed.is_empty() {
                    let list: Vec<String> = report
                        .failed
                        .iter()
                        .map(|(object, message)| format!("{object}: {message}"))
                        .collect();
                    let mut message = format!(
                        "{} object(s) failed: {}",
                        report.failed.len(),
                        list.join("; ")
                    );
                    if let Some(why) = &report.prune_skipped {
                        message.push_str(&format!("; {why}"));
                    }
                    return Outcome::Failed("apply".into(), message);
                }
                Outcome::Applied(Box::new(live), report)
            }
        }
    }

    /// The outcome of an apply stopped early, said once in the log.
    fn stopped(&self, why: Option<Stop>, report: Option<&ApplyReport>) -> Outcome {
        let (applied, not_sent, in_flight) = report
            .map(|r| (r.done.len(), r.not_sent.len(), r.abandoned.len()))
            .unwrap_or_default();
        let counts = match report {
            Some(_) => format!(
                "{applied} applied, {in_flight} in flight (each applied whole or not at all), {not_sent} not sent"
            ),
            None => "the requests in flight were abandoned".to_string(),
        };
        if why.is_none()
            && let Some(cause) = self.cluster.outage.message()
        {
            // The control plane is gone: one failure of the cycle, said once.
            return Outcome::Failed(
                "unavailable".into(),
                format!("{cause}: stopped the apply ({counts}); nothing was pruned"),
            );
        }
        match why {
            Some(Stop::Timeout) => Outcome::Failed(
                "timeout".into(),
                format!(
                    "the cycle took longer than the cycle timeout ({}): stopped the apply ({counts}); \
                     nothing was pruned",
                    humantime(self.config.cycle_timeout)
                ),
            ),
            Some(Stop::Lost) => {
                tracing::warn!(
                    applied,
                    not_sent,
                    in_flight,
                    "lost the leader Lease: abandoned the apply in flight; the new leader re-plans"
                );
                Outcome::Abandoned
            }
            _ => {
                tracing::warn!(
                    applied,
                    not_sent,
                    in_flight,
                    "shutting down: abandoned the apply in flight; the next leader re-plans"
                );
                Outcome::Abandoned
            }
        }
    }

    async fn succeeded(
        &mut self,
        target: &Target,
        trigger: Trigger,
        idle: &BTreeMap<String, String>,
        applied: Option<(LivePlan, ApplyReport)>,
    ) {
        self.backoff.reset();
        self.retry_at = None;
        let new_revision = self.pending.take().is_some();
        let mut summary = String::new();
        if let Some((live, report)) = &applied {
            let (created, updated, deleted) = (
                count(report, "created"),
                count(report, "updated"),
                count(report, "deleted"),
            );
            self.shared.metrics.objects("created", created);
            self.shared.metrics.objects("updated", updated);
            self.shared.metrics.objects("pruned", deleted);
            let restarted: Vec<&str> = live
                .plan
                .restarts
                .iter()
                .filter(|r| r.pending.is_none())
                .map(|r| r.workspace.as_str())
                .collect();
            self.shared.metrics.restarts(restarted.len());
            summary = format!("{created} created, {updated} updated, {deleted} deleted");
            if !restarted.is_empty() {
                summary.push_str(&format!("; restarted {}", restarted.join(", ")));
            }
        }
        if new_revision {
            self.applied = Some(target.clone());
            self.shared.metrics.applied_revision(&target.commit);
            self.shared.set_status(|s| {
                s.last_applied = Some(RevisionInfo {
                    revision: target.commit.clone(),
                    summary: target.summary.clone(),
                    at: status::now(),
                    signer: target.signer.clone(),
                });
            });
            let message = format!(
                "applied {} {}{}",
                short(&target.commit),
                target.summary,
                if summary.is_empty() {
                    String::new()
                } else {
                    format!(": {summary}")
                }
            );
            tracing::info!(revision = %target.commit, "{message}");
            self.event(false, "Applied", &message).await;
        } else if let Some((live, _)) = &applied {
            // A rollout's next batch is git's change going on, not drift.
            let batch: Vec<&str> = live
                .plan
                .rollouts
                .iter()
                .flat_map(|r| r.started.iter().map(String::as_str))
                .collect();
            if !batch.is_empty() {
                let message = format!(
                    "rollout of {}: restarting {}",
                    short(&target.commit),
                    batch.join(", ")
                );
                tracing::info!("{message}");
                self.event(false, "RolloutBatch", &message).await;
            }
            let objects: Vec<String> = live
                .plan
                .changes
                .iter()
                .filter(|c| !is_idle_change(c, idle, &self.idle))
                .filter(|c| {
                    !(crate::plan::rollout::rolls_pods(c)
                        && batch.contains(
                            &format!(
                                "{}/{}",
                                c.object.namespace.as_deref().unwrap_or(""),
                                c.object.name
                            )
                            .as_str(),
                        ))
                })
                .map(|c| c.object.to_string())
                .collect();
            if !objects.is_empty() {
                let message = format!(
                    "healed drift from {} ({trigger:?}): {}",
                    short(&target.commit),
                    objects.join(", ")
                );
                tracing::warn!("{message}");
                self.event(true, "DriftHealed", &message).await;
                self.shared.set_status(|s| {
                    s.last_drift = Some(status::DriftInfo {
                        at: status::now(),
                        revision: target.commit.clone(),
                        objects,
                    });
                });
            }
        }
        // Idle transitions.
        for (key, since) in idle {
            if !self.idle.contains_key(key) {
                let message = format!("{key} is idle since {since}: suspended (replicas 0)");
                tracing::info!("{message}");
                self.event(false, "Suspended", &message).await;
            }
        }
        for key in self.idle.keys() {
            if !idle.contains_key(key) {
                let message = format!("{key} is active again: resumed");
                tracing::info!("{message}");
                self.event(false, "Resumed", &message).await;
            }
        }
        self.idle = idle.clone();
        self.shared.metrics.idle(idle.len());
        // The error of a refused head stays until a good revision replaces it.
        let refused = self.refused.as_ref().map(|r| r.commit.clone());
        self.shared.set_status(|s| {
            if s.error.as_ref().is_some_and(|e| {
                !Refusal::is_refusal(&e.kind) || e.revision.as_deref() != refused.as_deref()
            }) {
                s.error = None;
            }
        });
    }

    async fn fail(&mut self, kind: &str, revision: Option<String>, message: String) {
        // Whatever step met it, a control plane found gone is one kind of failure.
        let kind = if self.cluster.outage.message().is_some() {
            "unavailable"
        } else {
            kind
        };
        let delay = self.backoff.fail();
        self.retry_at = Some(Instant::now() + delay);
        tracing::error!(kind, error = %message, retry_in = ?delay, "reconcile failed");
        let repeated = self
            .shared
            .status()
            .error
            .is_some_and(|e| e.kind == kind && e.message == message);
        if !repeated {
            self.event(true, "ReconcileFailed", &format!("{kind}: {message}"))
                .await;
        }
        self.shared.set_status(|s| {
            let since = match &s.error {
                Some(e) if e.kind == kind && e.message == message => e.since.clone(),
                _ => status::now(),
            };
            s.error = Some(ErrorInfo {
                kind: kind.to_string(),
                revision,
                message,
                since,
            });
        });
        self.write_status().await;
    }

    /// Per-workspace state from a plan (live before apply) and what the apply did.
    fn workspaces(
        &self,
        live: &LivePlan,
        report: Option<&ApplyReport>,
        idle: &BTreeMap<String, String>,
    ) {
        let mut list = Vec::new();
        // The workspaces' StatefulSets, read back from the plan's JSON text; restarts,
        // failures and live StatefulSets by workspace: one lookup each, not a scan of all
        // (at 10,000 workspaces the scans took minutes).
        let desired: Vec<Value> = live
            .desired
            .iter()
            .filter(|o| o.key.kind == "StatefulSet")
            .map(|o| {
                // What the status reads (names, labels, replicas): read back one at a
                // time, the rest of each StatefulSet dropped at once.
                let object = o.value();
                serde_json::json!({
                    "kind": "StatefulSet",
                    "metadata": {
                        "namespace": object.pointer("/metadata/namespace"),
                        "name": object.pointer("/metadata/name"),
                        "labels": object.pointer("/metadata/labels"),
                    },
                    "spec": {"replicas": object.pointer("/spec/replicas")},
                })
            })
            .collect();
        let restarts: BTreeMap<(&str, &str), &crate::plan::Restart> = live
            .plan
            .restarts
            .iter()
            .rev()
            .map(|r| ((r.namespace.as_str(), r.workspace.as_str()), r))
            .collect();
        let halts: BTreeMap<&str, &crate::plan::rollout::Halt> = live
            .plan
            .rollouts
            .iter()
            .filter_map(|r| r.halted.as_ref())
            .map(|h| (h.workspace.as_str(), h))
            .collect();
        let mut failures: BTreeMap<(&str, &str), &String> = BTreeMap::new();
        for (object, message) in report.into_iter().flat_map(|r| &r.failed) {
            // `Kind/namespace/name`: the workspace's own object, or its `<name>-env`.
            let mut parts = object.rsplitn(3, '/');
            let (Some(name), Some(namespace), Some(_)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            failures.entry((namespace, name)).or_insert(message);
            if let Some(workspace) = name.strip_suffix("-env") {
                failures.entry((namespace, workspace)).or_insert(message);
            }
        }
        let rolled_out: BTreeMap<(&str, &str), Option<bool>> = live
            .inventory
            .members
            .iter()
            .filter(|m| m.key.kind == "StatefulSet")
            .map(|m| {
                let namespace = m.key.namespace.as_deref().unwrap_or_default();
                ((namespace, m.key.name.as_str()), m.rolled_out)
            })
            .collect();
        for object in &desired {
            let text = |p: &str| {
                object
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
            let key = format!("{namespace}/{name}");
            let restart = restarts.get(&(namespace, name)).copied();
            let failed = failures.get(&(namespace, name));
            let live_sts = rolled_out.get(&(namespace, name)).copied();
            let replicas = object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (state, reason) = if let Some(message) = failed {
                ("failed", Some(message.to_string()))
            } else if let Some(halt) = halts.get(key.as_str()) {
                (
                    "halted",
                    Some(format!("rollout halted here: {}", halt.reason)),
                )
            } else if let Some(since) = idle.get(&key) {
                ("suspended", Some(format!("idle since {since}")))
            } else if replicas == 0 {
                ("suspended", Some("suspended in git".to_string()))
            } else if let Some(r) = restart.filter(|r| r.pending.is_none()) {
                let names: Vec<&str> = r.variables.iter().map(|v| v.name.as_str()).collect();
                (
                    "restarting",
                    Some(format!("environment changed: {}", names.join(", "))),
                )
            } else {
                live_state(live_sts)
            };
            list.push(WorkspaceStatus {
                namespace: namespace.to_string(),
                name: name.to_string(),
                state: state.to_string(),
                reason,
                pending_restart: restart.and_then(|r| r.pending.clone()),
                ..Default::default()
            });
        }
        status::annotate(&mut list, &desired, &live.plan);
        self.shared.set_status(|s| s.workspaces = list);
    }

    /// Between full cycles, follow workspaces that are starting or restarting until they
    /// are ready: one LIST of StatefulSets, only while there is something to follow.
    async fn refresh_workspaces(&self) {
        let following = self
            .shared
            .status()
            .workspaces
            .iter()
            .any(|w| w.state == "starting" || w.state == "restarting");
        if !following {
            return;
        }
        let api: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
            kube::Api::all(self.cluster.client.clone());
        let params = kube::api::ListParams::default().labels(&self.config.applyset.selector());
        let Ok(list) = api.list(&params).await else {
            return;
        };
        self.shared.set_status(|s| {
            for w in &mut s.workspaces {
                if w.state != "starting" && w.state != "restarting" {
                    continue;
                }
                let sts = list.items.iter().find(|i| {
                    i.metadata.namespace.as_deref() == Some(w.namespace.as_str())
                        && i.metadata.name.as_deref() == Some(w.name.as_str())
                });
                if sts.is_some_and(crate::cluster::rolled_out) {
                    w.state = "ready".into();
                    w.reason = None;
                }
            }
        });
    }

    async fn event(&self, warning: bool, reason: &str, message: &str) {
        if !self.is_leader() {
            return;
        }
        if let Err(err) = status::event(
            &self.cluster,
            &self.config.applyset,
            &self.config.identity,
            warning,
            reason,
            message,
        )
        .await
        {
            tracing::warn!(error = %crate::cluster::error::chain(&err), "recording an Event failed");
        }
    }

    /// Write the status ConfigMap if it changed (leader only).
    async fn write_status(&mut self) {
        if !self.is_leader() {
            return;
        }
        let current = self.shared.status();
        if self.written.as_ref() == Some(&current) {
            return;
        }
        match status::write(&self.cluster, &self.config.applyset, &current).await {
            Ok(()) => self.written = Some(current),
            Err(err) => {
                tracing::warn!(error = %crate::cluster::error::chain(&err), "writing the status failed")
            }
        }
    }
}

/// A change that is only the suspension or resumption of an idle workspace: its
/// StatefulSet, or its activity Lease (which carries the suspension too).
fn is_idle_change(
    change: &crate::plan::Change,
    idle: &BTreeMap<String, String>,
    before: &BTreeMap<String, String>,
) -> bool {
    let workspace = match change.object.kind.as_str() {
        "StatefulSet" => change.object.name.as_str(),
        "Lease" => match change.object.name.strip_suffix("-activity") {
            Some(workspace) => workspace,
            None => return false,
        },
        _ => return false,
    };
    let key = format!(
        "{}/{}",
        change.object.namespace.as_deref().unwrap_or_default(),
        workspace
    );
    change.action == Action::Update
        && (idle.contains_key(&key) != before.contains_key(&key)
            || change
                .desired
                .as_ref()
                .and_then(|d| d.pointer("/metadata/annotations"))
                .is_some_and(|a| a.get(IDLE_SINCE).is_some()))
}

/// A workspace's state from its live StatefulSet: absent (`None`), or whether it is rolled
/// out (the plan's member records it).
fn live_state(live: Option<Option<bool>>) -> (&'static str, Option<String>) {
    match live {
        None => ("starting", Some("created".into())),
        Some(Some(true)) => ("ready", None),
        Some(_) => ("starting", Some("not rolled out yet".into())),
    }
}

fn count(report: &ApplyReport, verb: &str) -> usize {
    report.done.iter().filter(|(_, v)| *v == verb).count()
}

/// `5m`, `90s`, `1m30s`: a duration as the flags take it.
fn humantime(duration: Duration) -> String {
    let secs = duration.as_secs();
    match (secs / 60, secs % 60) {
        (0, _) => format!("{:?}", duration),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Who signed a revision, for the status (`alice@example.com (ssh-ed25519 SHA256:…)`).
fn signer(revision: &Revision) -> Option<String> {
    match &revision.signature {
        Some(Verdict::Signed(signer)) => Some(signer.to_string()),
        _ => None,
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

async fn changed(watcher: &mut Option<crate::source::FolderWatcher>) -> bool {
    match watcher {
        Some(w) => w.changed(crate::source::DEBOUNCE).await,
        None => std::future::pending().await,
    }
}

async fn leadership(leading: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match leading {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *leading = None;
            }
        }
        None => std::future::pending().await,
    }
}
