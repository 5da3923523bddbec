//! `berth validate`: every finding of a repository at once, for people (text on stderr)
//! and for CI (json, GitHub annotations, SARIF).

use super::args::TenancyArgs;
use super::{git_prefix, report};
use anyhow::Result;
use berth::load::diagnostic;
use std::path::PathBuf;
use std::process::ExitCode;

/// Check a repository: every error with file:line:column, all at once. Exit 0 or 1.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder (default: the current folder).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Output format: text (on stderr, with the source line), json, github (GitHub
    /// Actions annotations on the lines) or sarif (code scanning). Paths in github and
    /// sarif start at the git repository's root. Text goes to stderr in every format.
    #[arg(long, default_value = "text", value_parser = diagnostic::Format::NAMES)]
    format: String,
    #[command(flatten)]
    tenancy: TenancyArgs,
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let Args {
        path,
        format,
        tenancy,
    } = args;
    let format: diagnostic::Format = format.parse().map_err(anyhow::Error::msg)?;
    let tenancy = tenancy.rule(berth::render::DEFAULT_APPLYSET_NAMESPACE)?;
    let desired = berth::validated_with(berth::source::read_dir(&path)?, Some(&tenancy));
    report(&desired.diagnostics, &desired.loaded.repo.files, color);
    let repo = &desired.loaded.repo;
    let counts = format!(
        "{} projects, {} workspaces, {} policies",
        repo.projects.len(),
        repo.workspaces.len(),
        repo.policies.len()
    );
    if format != diagnostic::Format::Text {
        let prefix = git_prefix(&path);
        let mut ctx = diagnostic::Context {
            prefix: &prefix,
            version: env!("CARGO_PKG_VERSION"),
            ..Default::default()
        };
        if !desired.has_errors() {
            ctx.summary = Some(("berth validate", format!("valid — {counts}")));
        }
        for (key, n) in [
            ("projects", repo.projects.len()),
            ("workspaces", repo.workspaces.len()),
            ("policies", repo.policies.len()),
        ] {
            ctx.properties.insert(key.into(), n.into());
        }
        out!(
            "{}",
            diagnostic::render(format, &desired.diagnostics, &repo.files, &ctx)
        );
    }
    if desired.has_errors() {
        return Ok(ExitCode::from(1));
    }
    if format == diagnostic::Format::Text {
        outln!("{}: valid — {counts}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
