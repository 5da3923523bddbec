//! `berth render`: the Kubernetes objects a repository means, as YAML on stdout, written as
//! they are rendered.

use super::args::TenancyArgs;
use super::{report, set_documents_aside};
use anyhow::Result;
use berth::render::RenderContext;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print the Kubernetes objects the repository means, as YAML for `kubectl apply -f -`.
#[derive(clap::Args)]
pub struct Args {
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Print the Kubernetes Job each Mage k8s block runs as, instead of the objects.
    #[arg(long)]
    executor: bool,
    #[command(flatten)]
    tenancy: TenancyArgs,
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let tenancy = args
        .tenancy
        .rule(berth::render::DEFAULT_APPLYSET_NAMESPACE)?;
    let mut desired = berth::validated_with(berth::source::read_dir(&args.path)?, Some(&tenancy));
    report(&desired.diagnostics, &desired.loaded.repo.files, color);
    if desired.has_errors() {
        return Ok(ExitCode::from(1));
    }
    if args.executor {
        let jobs = berth::render::executor::jobs(&desired.resolved);
        out!("{}", berth::render::to_yaml(&jobs));
    } else {
        // What was read is reported: only the resolved workspaces are rendered.
        set_documents_aside(&mut desired);
        // Each object becomes YAML as it is rendered, and the output goes out in pieces of
        // about a megabyte: neither every object nor a second copy of the whole output is
        // held, nor every workspace once its documents are (BENCHMARKS.md).
        let resolved = std::mem::take(&mut desired.resolved);
        let documents = berth::render::yaml_documents(resolved, &RenderContext::default());
        let mut piece = String::with_capacity(1 << 20);
        for document in documents {
            piece.push_str("---\n");
            piece.push_str(&document);
            if piece.len() >= 1 << 20 {
                out!("{piece}");
                piece.clear();
            }
        }
        out!("{piece}");
    }
    // The process ends here: freeing thousands of objects one by one only costs time.
    std::mem::forget(desired);
    Ok(ExitCode::SUCCESS)
}
