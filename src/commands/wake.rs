//! `berth wake`: an idle-suspended workspace scaled back up now.

use super::args::ClusterArgs;
use super::{connected, runtime, within};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Wake an idle workspace: renew its activity Lease and scale it back up now (the
/// reconciler suspends workspaces whose lifecycle.termination.idleSeconds ran out).
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
        let message =
            berth::reconcile::idle::wake(&connection, &repo.resolved, &set, &workspace).await?;
        outln!("{message}");
        cluster.print_stats(&connection);
        Ok(ExitCode::SUCCESS)
    }))
}
