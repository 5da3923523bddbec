//! `berth rollout status|pause|resume`: the health-gated rollouts of restarts, as
//! `kubectl rollout` shows and steers a Deployment's.

use super::args::ClusterArgs;
use super::{connected, runtime, within};
use anyhow::Result;
use berth::cluster::PlanOptions;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Show, pause or resume the rollouts of restarts (as `kubectl rollout`): a paused
/// project's waiting workspaces keep their running pods until it is resumed.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Each project's rollout: how many restart, at most how many at once, what waits,
    /// and where a halted one stopped (a plan against the cluster; nothing is written).
    Status {
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Start no more restarts in this project until `berth rollout resume`.
    Pause {
        project: String,
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Let a paused project's rollout continue.
    Resume {
        project: String,
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    match args.verb {
        Verb::Status { path, cluster } => status(&path, &cluster, color),
        Verb::Pause {
            project,
            path,
            cluster,
        } => pause(&project, &path, &cluster, true),
        Verb::Resume {
            project,
            path,
            cluster,
        } => pause(&project, &path, &cluster, false),
    }
}

/// `berth rollout status`: each project's rollout as a live plan sees it; exit 1 when one
/// is halted.
fn status(path: &Path, cluster: &ClusterArgs, color: bool) -> Result<ExitCode> {
    runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
        let Some((repo, connection, applyset)) = connected(path, cluster, color).await? else {
            return Ok(ExitCode::from(1));
        };
        let live =
            berth::cluster::plan(&connection, &repo.resolved, &PlanOptions { applyset }).await?;
        if live.plan.rollouts.is_empty() {
            outln!("no rollout in progress: every workspace runs git's pod template");
        }
        for rollout in &live.plan.rollouts {
            outln!("{}", rollout.describe());
        }
        let halted = live.plan.rollouts.iter().any(|r| r.halted.is_some());
        Ok(if halted {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }))
}

/// `berth rollout pause|resume`: the project's rollout stops starting restarts, or goes on.
fn pause(project: &str, path: &Path, cluster: &ClusterArgs, pause: bool) -> Result<ExitCode> {
    runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
        let connection = cluster.connect().await?;
        let set = cluster.applyset(path);
        berth::cluster::rollout::set_paused(&connection, &set, project, pause).await?;
        let what = if pause {
            "paused: no more restarts start"
        } else {
            "resumed"
        };
        outln!("rollout of project {project} {what}");
        Ok(ExitCode::SUCCESS)
    }))
}
