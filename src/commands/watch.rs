//! `berth watch`: the long-running reconciler (its flags and loop are `berth::reconcile`'s;
//! this only connects it to the cluster flags).

use super::args::ClusterArgs;
use super::runtime;
use anyhow::Result;
use std::process::ExitCode;

/// Run the reconciler: follow a git branch, tag or commit (or a folder) and keep the
/// cluster in line with it, until SIGTERM or SIGINT.
///
/// Every new revision is validated, planned and applied like `berth apply` (with
/// --force-conflicts: the reconciler owns its fields). An invalid revision is never
/// applied: the last good one stays in force and the error is reported (log, Event on
/// the ApplySet parent, `berth status`, metric). Every --drift-interval the cluster is
/// compared with the last good revision and live edits are healed. Workspaces with
/// lifecycle.termination.idleSeconds whose activity Lease goes unrenewed that long are
/// suspended (replicas 0) until `berth wake` or renewed activity. Failed applies are
/// retried with exponential backoff.
///
/// Run two replicas: a Lease elects the one that writes; the other takes over within
/// --lease-duration. Serves a status page at / (every workspace and its state; JSON at
/// /api/status), /healthz, /readyz, /metrics (Prometheus) and POST /hooks/git (GitHub
/// or GitLab push webhooks, verified with the shared secret) on --listen. See deploy/
/// for the in-cluster manifests.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    watch: Box<berth::reconcile::cli::WatchArgs>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args { watch, cluster } = args;
    runtime()?.block_on(async {
        let kube_config = cluster.connect_options().kube_config().await?;
        berth::reconcile::cli::watch(
            *watch,
            kube_config,
            cluster.applyset.clone(),
            cluster.applyset_namespace.clone(),
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}
