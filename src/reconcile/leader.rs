//! Leader election with a coordination.k8s.io/v1 Lease, the way client-go does it: the
//! holder renews the Lease every retry period; another instance takes it over only after
//! it has seen the same record, unrenewed, for a whole lease duration (measured on its own
//! clock, so clock skew between nodes does not matter). Writes are optimistic
//! (resourceVersion), so two candidates can never both win. On shutdown the holder
//! releases the Lease, so a rolling update hands over at once.
//!
//! The Lease also carries `berth/fetch-requested`: a follower that receives a verified
//! push webhook stamps it, and the leader fetches when it sees the stamp change.

use crate::cluster::Cluster;
use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
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
    /// lease duration, so it stops writing before anyone else may start.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

/// A running election: who leads, and a way to reach the leader.
#[derive(Clone)]
pub struct Election {
    config: LeaderConfig,
    cluster: Cluster,
    leading: watch::Receiver<bool>,
}

impl Election {
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
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

/// Start campaigning. `fetch` is notified when a follower asks for a fetch. The task ends
/// (releasing the Lease if held) when `shutdown` is cancelled.
pub fn start(
    cluster: Cluster,
    config: LeaderConfig,
    fetch: Arc<Notify>,
    shutdown: CancellationToken,
) -> (Election, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let election = Election {
        config: config.clone(),
        cluster: cluster.clone(),
        leading: rx,
    };
    let task = tokio::spawn(async move {
        let mut candidate = Candidate {
            api: Api::namespaced(cluster.client.clone(), &config.namespace),
            config,
            observed: None,
            last_renew: None,
            fetch_stamp: None,
            fetch_pending: false,
        };
        loop {
            let leading = match candidate.try_acquire_or_renew().await {
                Ok(leading) => {
                    if leading {
                        candidate.last_renew = Some(Instant::now());
                    }
                    leading
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "leader election: cannot reach the Lease");
                    // Keep leading only while inside the renew deadline.
                    *tx.borrow()
                        && candidate
                            .last_renew
                            .is_some_and(|t| t.elapsed() < candidate.config.renew_deadline())
                }
            };
            if leading && candidate.fetch_requested() {
                fetch.notify_one();
            }
            tx.send_if_modified(|current| {
                if *current != leading {
                    tracing::info!(
                        identity = %candidate.config.identity,
                        lease = %format!("{}/{}", candidate.config.namespace, candidate.config.name),
                        "{}",
                        if leading { "became the leader" } else { "is not the leader" }
                    );
                    *current = leading;
                    true
                } else {
                    false
                }
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(candidate.config.retry_period()) => {}
            }
        }
        if *tx.borrow() {
            tx.send_replace(false);
            match candidate.release().await {
                Ok(()) => tracing::info!("released the leader Lease"),
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "releasing the leader Lease")
                }
            }
        }
    });
    (election, task)
}

struct Candidate {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The Lease record last seen (holder, renewTime) and when it was first seen so.
    observed: Option<(String, Option<MicroTime>, Instant)>,
    last_renew: Option<Instant>,
    /// The last `berth/fetch-requested` stamp seen.
    fetch_stamp: Option<Option<String>>,
    fetch_pending: bool,
}

impl Candidate {
    fn record(&self, holder: &str) -> LeaseSpec {
        let now = now_micro();
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let me = self.config.identity.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .context("reading the leader Lease")?
        else {
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
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, _, since)| since.elapsed() >= self.config.lease_duration);
        if !holder.is_empty() && holder != me && !expired {
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
