//! `berth diff`: the plan of a pull request, from one git revision's render to another's,
//! read straight from git with no checkout and no cluster.

use super::args::TenancyArgs;
use super::{git_prefix, plan, report};
use anyhow::{Result, bail};
use berth::plan::output::Format;
use std::path::PathBuf;
use std::process::ExitCode;

/// Compare two git revisions, no cluster needed: what a pull request would create,
/// update, delete, and which workspaces it would restart and why.
///
/// Reads both revisions straight from git (no checkout). PATH is the berth repository,
/// which may be a folder inside a larger git repository. Exit 0 = no changes, 2 =
/// changes, 1 = error.
#[derive(clap::Args)]
pub struct Args {
    #[arg(default_value = ".")]
    path: PathBuf,
    /// The revision the change starts from (e.g. `origin/main`).
    #[arg(long)]
    base: String,
    /// The revision with the change.
    #[arg(long, default_value = "HEAD")]
    head: String,
    /// Output format (`markdown` for a pull-request comment).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The head revision is checked against it; the base only has to load.
    #[command(flatten)]
    tenancy: TenancyArgs,
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let Args {
        path,
        base,
        head,
        format,
        tenancy,
    } = args;
    let tenancy = tenancy.rule(berth::render::DEFAULT_APPLYSET_NAMESPACE)?;
    let base_rev = berth::source::read_revision(&path, &base)?;
    let head_rev = berth::source::read_revision(&path, &head)?;
    // The base is what is in force: judged by the rules of its day, not this one.
    let before = {
        let repo = berth::validated_with(base_rev.files, None);
        report(&repo.diagnostics, &repo.loaded.repo.files, color);
        if repo.has_errors() {
            bail!("the base revision `{base}` is not a valid berth repository (errors above)");
        }
        // Only its objects are needed, as text: the rest goes before the head is read.
        plan::rendered_texts(repo.resolved)
    };
    let title = format!(
        "berth diff {}..{}",
        &base_rev.commit[..12.min(base_rev.commit.len())],
        &head_rev.commit[..12.min(head_rev.commit.len())]
    );
    // Only the head's findings are annotated: they are the pull request's lines.
    let after = berth::validated_with(head_rev.files, Some(&tenancy));
    report(&after.diagnostics, &after.loaded.repo.files, color);
    Ok(plan::between(
        after,
        &before,
        format,
        &title,
        &git_prefix(&path),
        color,
    ))
}
