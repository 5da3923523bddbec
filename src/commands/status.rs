//! `berth status`: what the reconciler last did, read from the status ConfigMap that
//! `berth watch` writes.

use super::args::ClusterArgs;
use super::{runtime, within};
use anyhow::{Result, bail};
use berth::cluster::applyset::ApplySet;
use std::process::ExitCode;
use std::time::Duration;

/// Show what the reconciler last did: the revision applied and the one last seen, the
/// current error (e.g. an invalid revision), and each workspace's state (ready,
/// starting, restarting, suspended, failed) — read from the status ConfigMap
/// `<applyset>-status` that `berth watch` writes.
#[derive(clap::Args)]
pub struct Args {
    /// The SOURCE given to `berth watch` (names the default ApplySet); or use --applyset.
    #[arg(default_value = ".")]
    source: String,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        source,
        format,
        cluster,
    } = args;
    runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
        let set = ApplySet {
            name: match &cluster.applyset {
                Some(name) => name.clone(),
                None => berth::reconcile::cli::default_applyset(&source, false)?,
            },
            namespace: cluster.applyset_namespace.clone(),
        };
        let connection = cluster.connect().await?;
        let Some(status) = berth::reconcile::status::read(&connection, &set).await? else {
            bail!(
                "no status for ApplySet {}/{}: is `berth watch` running for it? \
                 (pass --applyset if it is named otherwise)",
                set.namespace,
                set.name
            );
        };
        if format == "json" {
            outln!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            out!("{}", status.to_text());
        }
        Ok(ExitCode::SUCCESS)
    }))
}
