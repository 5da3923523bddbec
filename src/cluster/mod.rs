//! Cluster: berth's other I/O edge, the Kubernetes API. Kept apart from the pure stages the
//! way kube-rs keeps its runtime apart from its client, and split the way Flux's
//! server-side-apply manager is: inventory (what berth owns), diff (what would change),
//! apply (server-side apply and prune) and wait (rollouts).

pub mod api_errors;
pub mod apply;
pub mod applyset;
mod counter;
mod destructive;
mod diff;
pub mod error;
pub mod fence;
mod inventory;
mod kinds;
pub mod outage;
mod retry;
pub mod rollout;
pub mod tenancy;
mod transport;
mod wait;

pub use api_errors::ErrorCounter;
pub use apply::{ApplyOptions, ApplyReport, apply, restart};
pub use counter::RequestCounter;
pub use diff::{LivePlan, PlanOptions, desired, plan, plan_with_context};
pub use inventory::Inventory;
pub use kinds::{ManagedKind, kind_of};
pub use wait::{rolled_out, wait_for_rollouts};

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long one request may wait for the API server's answer (berth never watches, so no
/// answer takes longer when the server is healthy). With [`retry::MAX_RETRIES`] retries, a
/// request on a sick control plane gives up within about two minutes; every command also
/// has an overall deadline (`--timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the API server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Field manager of every server-side apply berth makes.
pub const FIELD_MANAGER: &str = "berth";

/// Dry-runs (and reads of a plan) in flight at once: the plan's dry-runs ([`diff`]) and
/// the rollout's reads of live pods ([`rollout`]) share it.
const CONCURRENCY: usize = 16;

/// Where the cluster is: a kubeconfig file and context, else the usual inference
/// (`$KUBECONFIG`, `~/.kube/config`, or the pod's service account in a cluster).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// A connection to the API server, counting its requests by verb and its errors by kind.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub requests: RequestCounter,
    /// Requests that finally failed (after retries), by kind.
    pub errors: ErrorCounter,
    /// The outage detector every request of this client shares ([`outage`]).
    pub outage: outage::Outage,
    /// The API server's URL, for messages.
    pub server: String,
    /// Set once listing Secrets across all namespaces was refused: this connection lists
    /// them per namespace from then on, without asking again (`inventory`).
    secrets_per_namespace: Arc<AtomicBool>,
}

impl Cluster {
    pub async fn connect(options: &ConnectOptions) -> Result<Cluster> {
        Cluster::from_config(options.kube_config().await?)
    }

    /// A client with berth's timeouts and retries (see [`REQUEST_TIMEOUT`] and
    /// [`retry`]). Must be called within a tokio runtime (the retry buffer runs on it).
    pub fn from_config(config: Config) -> Result<Cluster> {
        Cluster::from_config_fenced(config, None)
    }

    /// The same, with every write fenced by the leader Lease ([`fence`]): the reconciler's
    /// client when it runs with leader election.
    pub fn from_config_fenced(mut config: Config, fence: Option<fence::Fence>) -> Result<Cluster> {
        let requests = RequestCounter::default();
        let errors = ErrorCounter::default();
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        error::remember_server(&server);
        let outage = outage::Outage::new(&server, errors.clone());
        config.default_retry = false;
        let mut probe_config = config.clone();
        probe_config.connect_timeout = Some(Duration::from_secs(3));
        probe_config.read_timeout = Some(outage::PROBE_TIMEOUT);
        probe_config.write_timeout = Some(outage::PROBE_TIMEOUT);
        outage.set_probe(
            kube::Client::try_from(probe_config).context("building the Kubernetes client")?,
        );
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(REQUEST_TIMEOUT);
        config.write_timeout = Some(REQUEST_TIMEOUT);
        let client = kube::client::ClientBuilder::try_from(config)
            .context("building the Kubernetes client")?
            .with_layer(&requests.layer())
            // Every attempt is evidence of an outage (or of none).
            .with_layer(&outage.attempts())
            // Retries need a service they can call again: a buffer in front makes one.
            .with_layer(&tower::buffer::BufferLayer::new(1024))
            .with_layer(&tower::retry::RetryLayer::new(retry::RetryPolicy::default()))
            // Outside the retries: the fence bounds a write with all its attempts, and
            // errors are counted as berth finally saw them.
            .with_layer(&fence::FenceLayer::optional(fence))
            .with_layer(&errors.layer())
            // Outermost: once the control plane is found gone, no request is sent and none
            // in flight is waited for.
            .with_layer(&outage.layer())
            .build();
        Ok(Cluster {
            client,
            requests,
            errors,
            outage,
            server,
            secrets_per_namespace: Arc::default(),
        })
    }

    /// Whether listing Secrets across all namespaces was refused on this connection.
    fn secrets_listed_per_namespace(&self) -> bool {
        self.secrets_per_namespace.load(Ordering::Relaxed)
    }

    fn list_secrets_per_namespace(&self) {
        self.secrets_per_namespace.store(true, Ordering::Relaxed);
    }

    /// A client error in words (see [`error::describe`]).
    pub fn describe(&self, err: &kube::Error) -> String {
        error::describe(err, &self.server)
    }
}

/// Why a kubeconfig could not be used, without the library's nesting.
fn kubeconfig_reason(err: &kube::config::KubeconfigError) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let first = text.lines().next().unwrap_or_default();
    match first.split_once(" (os error") {
        Some((words, _)) if words.contains("No such file") => format!(
            "{} (pass --kubeconfig, set KUBECONFIG, or run berth in a pod)",
            words.to_lowercase()
        ),
        Some((words, _)) => words.to_lowercase(),
        None => first.to_string(),
    }
}

impl ConnectOptions {
    /// The client configuration these options point at.
    pub async fn kube_config(&self) -> Result<Config> {
        let options = self;
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..Default::default()
        };
        // Where the kubeconfig is, as kubectl looks: --kubeconfig, $KUBECONFIG (its first
        // file), ~/.kube/config. Said once, with the reason, when it cannot be used.
        let from_env = std::env::var_os("KUBECONFIG")
            .filter(|v| !v.is_empty())
            .and_then(|v| std::env::split_paths(&v).next());
        let (path, origin) = match (&options.kubeconfig, from_env) {
            (Some(path), _) => (Some(path.clone()), "--kubeconfig"),
            (None, Some(path)) => (Some(path), "$KUBECONFIG"),
            (None, None) => (
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")),
                "the default place",
            ),
        };
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let config = match path.filter(|p| p.exists() || !in_cluster) {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot use the kubeconfig {} (from {origin}): {}",
                        path.display(),
                        kubeconfig_reason(&e)
                    )
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot use the kubeconfig {} (from {origin}): {}",
                            path.display(),
                            kubeconfig_reason(&e)
                        )
                    })?
            }
            None => Config::incluster().map_err(|e| {
                anyhow::anyhow!("no kubeconfig, and the pod's service account cannot be used: {e}")
            })?,
        };
        Ok(config)
    }
}
