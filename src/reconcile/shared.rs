//! The state one reconciler shares with its HTTP server and its caller: status, readiness,
//! heartbeat, metrics and the election. The loop writes it; the server (`/healthz`,
//! `/readyz`, `/metrics`, the status page, the webhook) and the caller read it. A file of
//! its own so the server and the page depend on this state, not on the loop.

use super::hooks::Hooks;
use super::leader::Election;
use super::metrics::Metrics;
use super::status::Status;
use crate::cluster::applyset::ApplySet;
use crate::cluster::{ErrorCounter, RequestCounter};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// State shared by the loop, the HTTP server and the caller.
pub struct Shared {
    pub(super) metrics: Metrics,
    pub(super) status: Mutex<Status>,
    pub(super) ready: AtomicBool,
    /// Whether the leader's last cycle reached the API server (no request failed as
    /// unreachable, timed out or answered 5xx).
    pub(super) api_reached: AtomicBool,
    pub(super) heartbeat: Mutex<Instant>,
    pub(super) stall_after: Duration,
    pub(super) fetch: Arc<Notify>,
    pub(super) election: Option<Election>,
    pub(super) webhook_secret: Option<String>,
    pub(super) followed_ref: Option<String>,
    pub(super) requests: RequestCounter,
    pub(super) errors: ErrorCounter,
    /// Bounds and counters of `POST /hooks/git`.
    pub(super) hooks: Hooks,
    /// Where the status page finds the leader's status when this instance is a standby.
    pub(super) page: PageState,
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
    pub(super) fn stalled(&self) -> Option<String> {
        let beat = self.heartbeat.lock().map(|b| *b).ok()?;
        (beat.elapsed() > self.stall_after).then(|| {
            format!(
                "the reconcile loop has not run for {}s",
                beat.elapsed().as_secs()
            )
        })
    }

    pub(super) fn beat(&self) {
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
    pub(super) async fn request_fetch(&self) {
        if let Some(election) = self.election.as_ref().filter(|e| !e.is_leader())
            && let Err(err) = election.request_fetch().await
        {
            tracing::warn!(error = %crate::cluster::error::chain(&err), "could not pass the webhook on to the leader");
        }
        self.fetch.notify_one();
    }

    pub(super) fn set_status(&self, update: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.status.lock() {
            update(&mut status);
        }
    }
}

/// What the page needs besides the shared state: where the leader writes its status, and
/// a standby's last read of it.
pub struct PageState {
    pub(super) applyset: ApplySet,
    pub(super) read: tokio::sync::Mutex<Option<(Instant, Status)>>,
}

impl PageState {
    pub fn new(applyset: ApplySet) -> PageState {
        PageState {
            applyset,
            read: tokio::sync::Mutex::new(None),
        }
    }
}
