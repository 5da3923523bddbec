//! Cluster: berth's other I/O edge, the Kubernetes API. Kept apart from the pure stages the
//! way kube-rs keeps its runtime apart from its client, and split the way Flux's
//! server-side-apply manager is: inventory (what berth owns), diff (what would change),
//! apply (server-side apply and prune) and wait (rollouts).

pub mod apply;
pub mod applyset;
mod counter;
mod diff;
mod inventory;
mod kinds;
mod wait;

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

/// Field manager of every server-side apply berth makes.
pub const FIELD_MANAGER: &str = "berth";

/// Where the cluster is: a kubeconfig file and context, else the usual inference
/// (`$KUBECONFIG`, `~/.kube/config`, or the pod's service account in a cluster).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// A connection to the API server, counting its requests by verb.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub requests: RequestCounter,
}

impl Cluster {
    pub async fn connect(options: &ConnectOptions) -> Result<Cluster> {
        Cluster::from_config(options.kube_config().await?)
    }

    pub fn from_config(config: Config) -> Result<Cluster> {
        let requests = RequestCounter::default();
        let client = kube::client::ClientBuilder::try_from(config)
            .context("building the Kubernetes client")?
            .with_layer(&requests.layer())
            .build();
        Ok(Cluster { client, requests })
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
        let config = match (&options.kubeconfig, &options.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                    .await
                    .with_context(|| format!("using kubeconfig {}", path.display()))?
            }
            (None, Some(context)) => Config::from_kubeconfig(&kube_options)
                .await
                .with_context(|| format!("using kubeconfig context `{context}`"))?,
            (None, None) => Config::infer()
                .await
                .context("finding a cluster (no kubeconfig, and not running in a pod)")?,
        };
        Ok(config)
    }
}
