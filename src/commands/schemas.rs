//! `berth schemas`: the JSON Schemas of the three kinds, for editors and CI.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Write the JSON Schemas of Project, Workspace and Policy (for editors and CI).
#[derive(clap::Args)]
pub struct Args {
    /// Folder to write project.json, workspace.json and policy.json into.
    #[arg(long, default_value = "schemas")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let out = args.out;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, schema) in berth::model::schemas() {
        let file = out.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&schema)? + "\n";
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        outln!("wrote {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}
