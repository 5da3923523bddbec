//! `berth restart`: one workspace restarted now, with its current environment.

use super::args::ClusterArgs;
use super::{connected, runtime, within};
use anyhow::Result;
use berth::cluster::PlanOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Restart a workspace now, with its current environment (also applies a pending
/// restart of a `restart: manual` workspace).
#[derive(clap::Args)]
pub struct Args {
    /// The workspace's name.
    workspace: String,
    #[arg(default_value = ".")]
    path: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let Args {
        workspace,
        path,
        cluster,
    } = args;
    runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
        let Some((repo, connection, set)) = connected(&path, &cluster, color).await? else {
            return Ok(ExitCode::from(1));
        };
        // Only the objects to apply: a restart needs no inventory and no dry-runs.
        let desired =
            berth::cluster::desired(&connection, &repo.resolved, &PlanOptions { applyset: set })
                .await?;
        let message = berth::cluster::restart(&connection, &desired, &workspace, &now()).await?;
        outln!("{message}");
        cluster.print_stats(&connection);
        Ok(ExitCode::SUCCESS)
    }))
}

/// The current time as RFC 3339 (UTC), for `berth/restarted-at`.
fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}
