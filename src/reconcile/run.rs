//! The loop and its triggers: [`start`] builds the reconciler (clients, election, HTTP
//! server, notifier), and [`Reconciler::run`] waits for the next reason to look at the
//! source (a poll tick, a webhook, changed files, a retry, a drift check, a change of
//! leadership) and runs one cycle for it, until shutdown. What a cycle does is in
//! [`super::cycle`].

use super::backoff::Backoff;
use super::config::Config;
use super::hooks::Hooks;
use super::leader::{self, Election, Handover};
use super::metrics::Metrics;
use super::shared::{PageState, Shared};
use super::state::{Reconciler, Trigger};
use super::status::Status;
use super::{commit_status, server};
use crate::cluster::Cluster;
use crate::cluster::fence::Fence;
use crate::source::Tracker;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    let (election, handover) = elect(&config, kube_config, fence, &fetch, &shutdown, &mut tasks)?;
    let shared = Arc::new(shared_state(
        &config,
        &tracker,
        &cluster,
        election.clone(),
        fetch.clone(),
    ));
    if shared.webhook_secret.is_none() {
        tracing::warn!("no webhook secret: POST /hooks/git refuses every request");
    }
    // The server also stops when the loop ends on an error.
    let server_stop = shutdown.child_token();
    let addr = serve(config.listen, &shared, &server_stop, &mut tasks).await?;
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

/// With `--leader-elect`: the election, on a client of its own, its task pushed on
/// `tasks`, and the sender the loop tells when it has stopped writing.
fn elect(
    config: &Config,
    kube_config: kube::Config,
    fence: Option<Fence>,
    fetch: &Arc<Notify>,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(Option<Election>, Option<oneshot::Sender<Handover>>)> {
    Ok(match (&config.leader, fence) {
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
    })
}

/// The state the loop shares with the server and the caller, before the first cycle.
fn shared_state(
    config: &Config,
    tracker: &Tracker,
    cluster: &Cluster,
    election: Option<Election>,
    fetch: Arc<Notify>,
) -> Shared {
    Shared {
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
        fetch,
        election,
        webhook_secret: config.webhook_secret.clone().filter(|s| !s.is_empty()),
        followed_ref: tracker.followed_ref(),
        requests: cluster.requests.clone(),
        errors: cluster.errors.clone(),
        hooks: Hooks::default(),
        page: PageState::new(config.applyset.clone()),
    }
}

/// With `--listen`: bind it and serve the HTTP endpoints until `stop`, the task pushed on
/// `tasks`; the address bound (with the real port for `:0`).
async fn serve(
    listen: Option<SocketAddr>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Option<SocketAddr>> {
    let mut addr = None;
    if let Some(listen) = listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        addr = Some(listener.local_addr().context("reading the bound address")?);
        let router = server::router(shared.clone());
        tasks.push(tokio::spawn(server::serve(listener, router, stop.clone())));
        tracing::info!(%listen, "serving the status page, /api/status, /healthz, /readyz, /metrics and /hooks/git");
    }
    Ok(addr)
}

impl Reconciler {
    pub(super) async fn run(
        mut self,
        fetch: Arc<Notify>,
        election: Option<Election>,
    ) -> Result<()> {
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
