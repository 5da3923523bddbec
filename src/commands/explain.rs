//! `berth explain`: where each effective value of a block's executor config or a
//! workspace's environment comes from.

use super::validated;
use anyhow::Result;
use berth::tenancy::Tenancy;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show where each effective value comes from: `PROJECT/PIPELINE/BLOCK` for a Mage k8s
/// block's executor config (block, project, template, policy, env var or hardcoded
/// default, with file and line), or `WORKSPACE` for a workspace's environment.
#[derive(clap::Args)]
pub struct Args {
    /// `PROJECT/PIPELINE/BLOCK` or `WORKSPACE`.
    target: String,
    #[arg(default_value = ".")]
    path: PathBuf,
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let Some(repo) = validated(&args.path, color, &Tenancy::default())? else {
        return Ok(ExitCode::from(1));
    };
    out!("{}", berth::explain::explain(&repo.resolved, &args.target)?);
    Ok(ExitCode::SUCCESS)
}
