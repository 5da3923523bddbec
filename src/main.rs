//! The `berth` command line: thin shells over the library's pipeline.

use anyhow::{Context, Result, bail};
use berth::load::diagnostic::render_with_source;
use berth::load::{Diagnostic, SourceFile};
use berth::plan::output::Format;
use berth::render::RenderContext;
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// berth keeps Kubernetes in line with a git repository of data-platform workspaces.
///
/// The repository holds Project, Workspace and Policy YAML (apiVersion berth/v1alpha1).
/// berth validates it, works out each workspace's effective environment, renders the
/// Kubernetes objects it means, and plans what would change in the cluster.
///
/// Exit codes: 0 = success / no changes, 2 = the plan has changes, 1 = error.
#[derive(Parser)]
#[command(name = "berth", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Colour output: auto (on a terminal), always, never.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
}

#[derive(Subcommand)]
enum Command {
    /// Check a repository: every error with file:line:column, all at once. Exit 0 or 1.
    Validate {
        /// The repository folder (default: the current folder).
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Print the Kubernetes objects the repository means, as YAML for `kubectl apply -f -`.
    Render {
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Show what applying the repository would create, update, delete and restart.
    ///
    /// Without a cluster: `--offline` plans against an empty cluster, `--live-from DIR`
    /// against objects exported with `kubectl get -o yaml`. Exit 0 = no changes, 2 =
    /// changes, 1 = error.
    Plan {
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Plan against an empty cluster.
        #[arg(long, conflicts_with = "live_from")]
        offline: bool,
        /// Plan against the objects in the YAML files of this folder (`kubectl get -o yaml`).
        #[arg(long, value_name = "DIR")]
        live_from: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Compare two git revisions, no cluster needed: what a pull request would create,
    /// update, delete, and which workspaces it would restart and why.
    ///
    /// Reads both revisions straight from git (no checkout). PATH is the berth repository,
    /// which may be a folder inside a larger git repository. Exit 0 = no changes, 2 =
    /// changes, 1 = error.
    Diff {
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
    },
    /// Write the JSON Schemas of Project, Workspace and Policy (for editors and CI).
    Schemas {
        /// Folder to write project.json, workspace.json and policy.json into.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    match run(cli.command, color) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command, color: bool) -> Result<ExitCode> {
    match command {
        Command::Validate { path } => {
            let desired =
                berth::desired(berth::source::read_dir(&path)?, &RenderContext::default());
            report(&desired.diagnostics, &desired.loaded.repo.files, color);
            if desired.has_errors() {
                return Ok(ExitCode::from(1));
            }
            let repo = &desired.loaded.repo;
            println!(
                "{}: valid — {} projects, {} workspaces, {} policies",
                path.display(),
                repo.projects.len(),
                repo.workspaces.len(),
                repo.policies.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { path } => {
            let Some(objects) = desired_objects(berth::source::read_dir(&path)?, color) else {
                return Ok(ExitCode::from(1));
            };
            print!("{}", berth::render::to_yaml(&objects));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            path,
            offline,
            live_from,
            format,
        } => {
            let live = match (offline, live_from) {
                (_, Some(dir)) => read_live(&dir)?,
                (true, None) => Vec::new(),
                (false, None) => bail!(
                    "planning against a live cluster is not available yet; use --offline or --live-from DIR"
                ),
            };
            let Some(objects) = desired_objects(berth::source::read_dir(&path)?, color) else {
                return Ok(ExitCode::from(1));
            };
            let plan = berth::plan::compute(&objects, &live);
            print!(
                "{}",
                berth::plan::output::render(&plan, format, "berth plan", color)
            );
            Ok(plan_exit(&plan))
        }
        Command::Diff {
            path,
            base,
            head,
            format,
        } => {
            let base_rev = berth::source::read_revision(&path, &base)?;
            let head_rev = berth::source::read_revision(&path, &head)?;
            let Some(before) = desired_objects(base_rev.files, color) else {
                bail!("the base revision `{base}` is not a valid berth repository (errors above)");
            };
            let Some(after) = desired_objects(head_rev.files, color) else {
                return Ok(ExitCode::from(1));
            };
            let plan = berth::plan::compute(&after, &before);
            let title = format!(
                "berth diff {}..{}",
                &base_rev.commit[..12.min(base_rev.commit.len())],
                &head_rev.commit[..12.min(head_rev.commit.len())]
            );
            print!(
                "{}",
                berth::plan::output::render(&plan, format, &title, color)
            );
            Ok(plan_exit(&plan))
        }
        Command::Schemas { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, schema) in berth::model::schemas() {
                let file = out.join(format!("{name}.json"));
                let text = serde_json::to_string_pretty(&schema)? + "\n";
                std::fs::write(&file, text)
                    .with_context(|| format!("writing {}", file.display()))?;
                println!("wrote {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn plan_exit(plan: &berth::plan::Plan) -> ExitCode {
    if plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// The rendered objects, or `None` after printing why the repository is invalid.
fn desired_objects(files: Vec<SourceFile>, color: bool) -> Option<Vec<Value>> {
    let desired = berth::desired(files, &RenderContext::default());
    report(&desired.diagnostics, &desired.loaded.repo.files, color);
    (!desired.has_errors()).then_some(desired.objects)
}

/// Print diagnostics to stderr, each with its source line, then a count.
fn report(
    diagnostics: &[Diagnostic],
    files: &std::collections::BTreeMap<String, String>,
    color: bool,
) {
    let color = color && std::io::stderr().is_terminal();
    for d in diagnostics {
        let source = files.get(&d.file).map(String::as_str);
        eprint!("{}", render_with_source(d, source, color));
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if errors > 0 || warnings > 0 {
        eprintln!("{errors} error(s), {warnings} warning(s)");
    }
}

/// Live objects exported with `kubectl get -o yaml`: single objects or `kind: List`s.
fn read_live(dir: &Path) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for file in berth::source::read_dir(dir)? {
        if !(file.path.ends_with(".yaml") || file.path.ends_with(".yml")) {
            continue;
        }
        let docs = berth::load::yaml::parse(&file.text).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: {}",
                dir.join(&file.path).display(),
                e.pos.line,
                e.pos.column,
                e.message
            )
        })?;
        for doc in docs {
            match doc.value.get("items").and_then(Value::as_array) {
                Some(items) if doc.value.get("kind").and_then(Value::as_str) == Some("List") => {
                    objects.extend(items.iter().cloned())
                }
                _ => objects.push(doc.value),
            }
        }
    }
    Ok(objects)
}
