//! `berth activity-agent`: the sidecar that tells the reconciler a workspace is in use, by
//! renewing its activity Lease.

use super::args::ClusterArgs;
use super::runtime;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Report a workspace's activity (runs as a sidecar of workspaces with an idle timeout;
/// berth renders it). Renews the workspace's activity Lease while the workspace is in
/// use: sessions on the UI port that last a sampling interval, or CPU use of the pod's
/// processes at or above --busy-cpu. Writes a heartbeat every sample, so the reconciler
/// knows the signal works. Runs until SIGTERM or SIGINT.
#[derive(clap::Args)]
pub struct Args {
    /// The activity Lease (`<workspace>-activity`).
    #[arg(long)]
    lease: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Port whose established connections are sessions (Mage's UI).
    #[arg(long, default_value_t = 6789)]
    port: u16,
    /// Seconds between samples.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// CPU of the pod's processes that counts as activity (a Kubernetes quantity).
    #[arg(long, default_value = "100m")]
    busy_cpu: String,
    /// Where the pod's processes and sockets are seen.
    #[arg(long, default_value = "/proc")]
    proc: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let namespace = match args.namespace {
        Some(ns) => ns,
        None => std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|s| s.trim().to_string())
            .context("no --namespace, no $POD_NAMESPACE, and not running in a pod")?,
    };
    let busy_cpu = &args.busy_cpu;
    let cores = berth::quantity::parse(busy_cpu)
        .with_context(|| format!("--busy-cpu `{busy_cpu}` is not a quantity"))?;
    let options = berth::activity::AgentOptions {
        namespace,
        lease: args.lease,
        port: args.port,
        interval: Duration::from_secs(args.interval.max(1)),
        busy_millicores: (cores * 1000.0).round() as u64,
        proc_root: args.proc,
    };
    runtime()?.block_on(async {
        let connection = args.cluster.connect().await?;
        let stop = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        berth::activity::run(connection, options, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}
