//! Leader election with a coordination.k8s.io/v1 Lease, the way client-go does it: the
//! holder renews the Lease every retry period; another instance takes it over only after
//! it has seen the same record, unrenewed, for a whole lease duration (measured on its own
//! clock, so clock skew between nodes does not matter). Writes are optimistic
//! (resourceVersion), so two candidates can never both win.
//!
//! **One writer at a time.** Each successful renewal grants the reconciler's client a
//! [`Fence`] until `t + renew deadline` (`t` taken before the renewal was sent), and every
//! write checks it ([`crate::cluster::fence`]): a holder that cannot renew stops writing a
//! third of a lease before anyone else may start. On shutdown the holder keeps renewing
//! until the reconciler has finished (or abandoned) its apply in flight, and only then
//! releases the Lease ([`Handover`]), so a rolling update hands over at once but never
//! while the old leader still writes.
//!
//! The Lease also carries `berth/fetch-requested`: a follower that receives a verified
//! push webhook stamps it, and the leader fetches when it sees the stamp change.

use crate::cluster::Cluster;
use crate::cluster::fence::Fence;
use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Annotation a follower stamps to ask the leader for a fetch.
pub const FETCH_REQUESTED: &str = "berth/fetch-requested";

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// This instance's name in the Lease (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal (default 15 s).
    pub lease_duration: Duration,
}

impl LeaderConfig {
    /// How often the Lease is renewed or checked.
    pub fn retry_period(&self) -> Duration {
        (self.lease_duration / 5).max(Duration::from_millis(100))
    }

    /// How long the holder keeps acting as leader when it cannot renew: well inside the
    /// lease duration, so it stops writing before anyone else may start. Also the longest
    /// one attempt to renew may take.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

/// What the reconciler tells the election when it has stopped writing for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Every write was answered: release the Lease, the standby takes over at once.
    Release,
    /// Writes were abandoned in flight (a shutdown grace ran out): leave the Lease to
    /// expire, so the standby starts writing only a lease duration after the last renewal,
    /// when any abandoned request has long landed or failed.
    Expire,
}

/// A running election: who leads, and a way to reach the leader.
#[derive(Clone)]
pub struct Election {
    config: LeaderConfig,
    cluster: Cluster,
    leading: watch::Receiver<bool>,
    fence: Fence,
    reached: Arc<AtomicBool>,
}

impl Election {
    /// Whether this instance holds a fresh Lease now (and so may write): decided by the
    /// clock against the last renewal, not by the election task's last look.
    pub fn is_leader(&self) -> bool {
        self.fence.holds()
    }

    /// The fence the reconciler's writes go through.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether the last attempt to read or renew the Lease reached the API server.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Ask the leader to fetch now (from a follower that got a webhook).
    pub async fn request_fetch(&self) -> Result<()> {
        let api: Api<Lease> = Api::namespaced(self.cluster.client.clone(), &self.config.namespace);
        let patch =
            json!({"metadata": {"annotations": {FETCH_REQUESTED: now_micro().0.to_string()}}});
        api.patch(
            &self.config.name,
            &PatchParams {
                field_manager: Some("berth-webhook".into()),
                ..Default::default()
            },
            &Patch::Merge(patch),
        )
        .await
        .with_context(|| {
            format!(
                "asking the leader for a fetch through Lease {}/{}",
                self.config.namespace, self.config.name
            )
        })?;
        Ok(())
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Start campaigning. `fetch` is notified when a follower asks for a fetch; `fence` is
/// granted while this instance holds the Lease. After `shutdown` the task only renews a
/// Lease it holds (it never takes one), until the [`Handover`] comes (or its sender is
/// dropped, taken as [`Handover::Expire`]); a follower stops at once.
pub fn start(
    cluster: Cluster,
    config: LeaderConfig,
    fetch: Arc<Notify>,
    shutdown: CancellationToken,
    fence: Fence,
) -> (
    Election,
    tokio::task::JoinHandle<()>,
    oneshot::Sender<Handover>,
) {
    let (tx, rx) = watch::channel(false);
    let (handover_tx, mut handover_rx) = oneshot::channel();
    let reached = Arc::new(AtomicBool::new(true));
    let election = Election {
        config: config.clone(),
        cluster: cluster.clone(),
        leading: rx,
        fence: fence.clone(),
        reached: reached.clone(),
    };
    let task = tokio::spawn(async move {
        let mut candidate = Candidate {
            api: Api::namespaced(cluster.client.clone(), &config.namespace),
            config,
            observed: None,
            fetch_stamp: None,
            fetch_pending: false,
        };
        let mut stopping = false;
        let mut warned: Option<(String, Instant)> = None;
        let handover = loop {
            let renew_deadline = candidate.config.renew_deadline();
            // Taken before anything is sent: the Lease cannot have been renewed earlier.
            let sent = tokio::time::Instant::now();
            let attempt =
                tokio::time::timeout(renew_deadline, candidate.try_acquire_or_renew(!stopping))
                    .await;
            let failure = judge(attempt, &fence, &reached, &cluster, sent, renew_deadline);
            warn_once(&mut warned, failure);
            let leading = fence.holds();
            if leading && candidate.fetch_requested() {
                fetch.notify_one();
            }
            announce(&tx, &candidate.config, leading);
            if stopping && !leading {
                // Nothing (any more) to hand over.
                break None;
            }
            // Renew again one retry period after this attempt started, or at once when
            // the attempt itself took longer.
            let next = sent + candidate.config.retry_period();
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    if !leading {
                        break None;
                    }
                    tracing::info!("shutting down: keeping the leader Lease until the apply in flight is done");
                }
                handover = &mut handover_rx => break Some(handover.unwrap_or(Handover::Expire)),
                _ = tokio::time::sleep_until(next) => {}
            }
        };
        finish(&mut candidate, &fence, &tx, handover).await;
    });
    (election, task, handover_tx)
}

/// What one try to acquire or renew the Lease says: the fence granted until the renew
/// deadline (holder), revoked (follower) or kept (an error), whether the API server was
/// reached, and the failure to report, if any.
fn judge(
    attempt: Result<Result<bool>, tokio::time::error::Elapsed>,
    fence: &Fence,
    reached: &AtomicBool,
    cluster: &Cluster,
    sent: tokio::time::Instant,
    renew_deadline: Duration,
) -> Option<String> {
    match attempt {
        Ok(Ok(true)) => {
            fence.grant_until(sent + renew_deadline);
            reached.store(true, Ordering::Relaxed);
            None
        }
        Ok(Ok(false)) => {
            fence.revoke();
            reached.store(true, Ordering::Relaxed);
            None
        }
        // The fence keeps its deadline: a holder stays leader within it.
        Ok(Err(err)) => {
            reached.store(answered(&err), Ordering::Relaxed);
            Some(crate::cluster::error::chain(&err))
        }
        Err(_) => {
            reached.store(false, Ordering::Relaxed);
            // The request was dropped unanswered: counted here, as a timeout.
            cluster.errors.record("timeout");
            Some(format!(
                "the API server did not answer within {renew_deadline:?}"
            ))
        }
    }
}

/// Log a failure of the election: one line when the cause changes, then one every 30 s.
fn warn_once(warned: &mut Option<(String, Instant)>, failure: Option<String>) {
    if let Some(message) = failure {
        // One line when the cause changes, then one every 30 s, not one per try.
        let repeat = warned
            .as_ref()
            .is_some_and(|(last, at)| *last == message && at.elapsed() < Duration::from_secs(30));
        if !repeat {
            tracing::warn!(error = %message, "leader election: cannot read or renew the Lease");
            *warned = Some((message, Instant::now()));
        }
    } else {
        *warned = None;
    }
}

/// Tell the loop (and the log) when leadership changed.
fn announce(tx: &watch::Sender<bool>, config: &LeaderConfig, leading: bool) {
    tx.send_if_modified(|current| {
        if *current == leading {
            return false;
        }
        let lease = format!("{}/{}", config.namespace, config.name);
        let identity = &config.identity;
        if leading {
            tracing::info!(%identity, %lease, "became the leader");
        } else {
            tracing::warn!(%identity, %lease, "lost the leader Lease: stopped writing");
        }
        *current = leading;
        true
    });
}

/// The election is over: no write may start, and the Lease is released, or left to
/// expire when requests were abandoned in flight.
async fn finish(
    candidate: &mut Candidate,
    fence: &Fence,
    tx: &watch::Sender<bool>,
    handover: Option<Handover>,
) {
    // No write may start from here on.
    let held = fence.holds();
    fence.revoke();
    tx.send_replace(false);
    match handover {
        Some(Handover::Release) if held => match candidate.release().await {
            Ok(()) => tracing::info!("released the leader Lease"),
            Err(err) => {
                tracing::warn!(error = %crate::cluster::error::chain(&err), "releasing the leader Lease")
            }
        },
        Some(Handover::Expire) if held => tracing::warn!(
            lease_duration = ?candidate.config.lease_duration,
            "left the leader Lease to expire: requests were abandoned in flight, so the \
             standby takes over only after a lease duration"
        ),
        _ => {}
    }
}

/// Whether an election error still means the API server answered (a refusal, a conflict)
/// rather than that it could not be reached or used.
fn answered(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<kube::Error>(),
            Some(kube::Error::Api(status)) if status.code < 500
        )
    })
}

struct Candidate {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The Lease record last seen (holder, renewTime) and when it was first seen so.
    observed: Option<(String, Option<MicroTime>, Instant)>,
    /// The last `berth/fetch-requested` stamp seen.
    fetch_stamp: Option<Option<String>>,
    fetch_pending: bool,
}

impl Candidate {
    fn record(&self, holder: &str) -> LeaseSpec {
        let now = now_micro();
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            // Rounded up: a reader that trusts the record must not wait less than we do.
            lease_duration_seconds: Some(
                self.config.lease_duration.as_secs_f64().ceil().max(1.0) as i32
            ),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        }
    }

    /// Renew the Lease if this instance holds it, else take it if it is free or expired
    /// (only when `may_acquire`). Whether this instance holds it now.
    async fn try_acquire_or_renew(&mut self, may_acquire: bool) -> Result<bool> {
        let me = self.config.identity.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .context("reading the leader Lease")?
        else {
            if !may_acquire {
                return Ok(false);
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    labels: Some(
                        [(crate::render::MANAGED_BY.to_string(), "berth".to_string())].into(),
                    ),
                    ..Default::default()
                },
                spec: Some(self.record(&me)),
            };
            let mut result = self.api.create(&PostParams::default(), &lease).await;
            if matches!(&result, Err(kube::Error::Api(s)) if s.code == 404) {
                // A first run: berth's namespace does not exist yet.
                self.create_namespace().await?;
                result = self.api.create(&PostParams::default(), &lease).await;
            }
            return match result {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(err) => Err(err).context("creating the leader Lease"),
            };
        };
        self.fetch_stamp_seen(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        self.observe(&lease);
        // The longer of our duration and the holder's: a holder configured with a longer
        // lease (a rolling update that changes the flag) is never cut short.
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or_default()
            .max(self.config.lease_duration);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, _, since)| since.elapsed() >= duration);
        if holder != me && (!may_acquire || (!holder.is_empty() && !expired)) {
            return Ok(false);
        }
        let mut record = self.record(&me);
        if holder == me {
            record.acquire_time = spec.acquire_time.clone();
            record.lease_transitions = spec.lease_transitions;
        } else {
            record.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(record);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            // Someone else wrote first: they won this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err).context("renewing the leader Lease"),
        }
    }

    async fn create_namespace(&self) -> Result<()> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(self.api.clone().into_client());
        let namespace = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.config.namespace,
                "labels": {crate::render::MANAGED_BY: "berth"},
            },
        });
        api.patch(
            &self.config.namespace,
            &PatchParams::apply(crate::cluster::FIELD_MANAGER),
            &Patch::Apply(&namespace),
        )
        .await
        .with_context(|| {
            format!(
                "creating namespace {} for the leader Lease",
                self.config.namespace
            )
        })?;
        Ok(())
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.unwrap_or_default();
        let renew = spec.renew_time;
        let changed = match &self.observed {
            Some((h, r, _)) => *h != holder || *r != renew,
            None => true,
        };
        if changed {
            self.observed = Some((holder, renew, Instant::now()));
        }
    }

    fn fetch_stamp_seen(&mut self, lease: &Lease) {
        let stamp = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FETCH_REQUESTED).cloned());
        // The first look only learns the current stamp.
        if self.fetch_stamp.as_ref().is_some_and(|seen| *seen != stamp) {
            self.fetch_pending = true;
        }
        self.fetch_stamp = Some(stamp);
    }

    /// Whether a new fetch request was seen since the last call.
    fn fetch_requested(&mut self) -> bool {
        std::mem::take(&mut self.fetch_pending)
    }

    /// Give the Lease up: no holder, so a follower takes over at its next try.
    async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .context("releasing the leader Lease")?;
        Ok(())
    }
}
