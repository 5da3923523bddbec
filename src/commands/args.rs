//! The arguments several commands take: where projects may go ([`TenancyArgs`]) and which
//! cluster and ApplySet ([`ClusterArgs`]).

use anyhow::{Context, Result};
use berth::cluster::applyset::ApplySet;
use berth::cluster::{Cluster, ConnectOptions};
use berth::tenancy::Tenancy;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where projects may go, for the commands that do not read it from a cluster (validate,
/// render, diff, offline plans): the cluster administrators' tenancy rule. Live plans,
/// apply and watch read the ConfigMap berth-tenancy in --applyset-namespace instead.
#[derive(Args, Clone, Default)]
pub struct TenancyArgs {
    /// The tenancy rule: a YAML file holding the ConfigMap berth-tenancy, as applied to the
    /// cluster (deploy/15-tenancy.yaml; other documents in the file are ignored). A project
    /// outside it is an error at its namespace line. berth's own namespace is the
    /// ConfigMap's. Without this or --allow-namespace, only kube-*, default and berth's
    /// namespace are refused.
    #[arg(long, value_name = "FILE", conflicts_with = "allow_namespace")]
    tenancy: Option<PathBuf>,
    /// An allowed namespace: a name or a glob (`team-*`; `*` any characters, `?` one).
    /// Repeat for more; instead of --tenancy.
    #[arg(long = "allow-namespace", value_name = "PATTERN")]
    allow_namespace: Vec<String>,
}

impl TenancyArgs {
    pub fn given(&self) -> bool {
        self.tenancy.is_some() || !self.allow_namespace.is_empty()
    }

    /// The rule these flags state, berth being in `berth_namespace` unless the file says
    /// otherwise.
    pub fn rule(&self, berth_namespace: &str) -> Result<Tenancy> {
        if let Some(path) = &self.tenancy {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the tenancy rule {}", path.display()))?;
            return Tenancy::from_file(&text, &path.display().to_string())
                .map_err(anyhow::Error::msg);
        }
        if !self.allow_namespace.is_empty() {
            return Tenancy::new(
                berth_namespace,
                self.allow_namespace.iter().cloned(),
                "--allow-namespace",
            )
            .map_err(anyhow::Error::msg);
        }
        Ok(Tenancy::unrestricted(
            berth_namespace,
            "no tenancy rule given (--tenancy or --allow-namespace)",
        ))
    }
}

/// Which cluster, and which set of objects in it belongs to this repository.
#[derive(Args, Clone)]
pub struct ClusterArgs {
    /// Path of a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Name of the ApplySet parent ConfigMap that records what this repository owns
    /// (default: berth-<repository folder name>).
    #[arg(long, global = true)]
    pub applyset: Option<String>,
    /// Namespace of the ApplySet parent.
    #[arg(long, global = true, default_value = berth::render::DEFAULT_APPLYSET_NAMESPACE)]
    pub applyset_namespace: String,
    /// Print the API requests made, by verb, to stderr.
    #[arg(long, global = true)]
    api_stats: bool,
    /// Give up after this long (e.g. `90s`, `10m`; a bare number is seconds). Default: 10m
    /// for apply (its --wait included), 5m for plan, 2m for the other commands. Each
    /// request also has its own timeout and a few retries.
    #[arg(long, global = true, value_parser = berth::reconcile::cli::parse_duration)]
    timeout: Option<Duration>,
}

impl ClusterArgs {
    pub fn applyset(&self, path: &Path) -> ApplySet {
        ApplySet {
            name: self
                .applyset
                .clone()
                .unwrap_or_else(|| ApplySet::default_name(path)),
            namespace: self.applyset_namespace.clone(),
        }
    }

    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    pub async fn connect(&self) -> Result<Cluster> {
        Cluster::connect(&self.connect_options()).await
    }

    /// What is refused before the cluster's rule is read: the namespaces no rule can allow
    /// (`kube-*`, `default`, berth's own), so a repository aiming there fails without a
    /// cluster.
    pub fn no_rule(&self) -> Tenancy {
        Tenancy::unrestricted(
            &self.applyset_namespace,
            "before reading the cluster's tenancy rule",
        )
    }

    /// The command's deadline: `--timeout`, else `default`.
    pub fn deadline(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }

    pub fn print_stats(&self, cluster: &Cluster) {
        if self.api_stats {
            let stats = cluster.requests.snapshot();
            errln!(
                "api requests: {}",
                serde_json::to_string(&stats).unwrap_or_default()
            );
        }
    }
}
