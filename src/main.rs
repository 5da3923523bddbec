//! The `berth` command line: `main` parses the arguments and dispatches to the command's
//! file in `commands/`, where each command's arguments stand beside its code.

#[macro_use]
mod commands;

use clap::{Parser, Subcommand};
use commands::*;
use std::io::IsTerminal;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: berth builds and drops many small JSON nodes, and
/// this alone takes a quarter off rendering and planning 1,000 workspaces (BENCHMARKS.md).
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Log format on stderr: text, or json (one object per line, for log collectors).
    /// The level comes from RUST_LOG (default: info for `watch`, warn otherwise).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// The commands, in the order `berth --help` lists them; each one's help is its `Args`'s.
#[derive(Subcommand)]
enum Command {
    Validate(validate::Args),
    Render(render::Args),
    Explain(explain::Args),
    Plan(plan::Args),
    Apply(apply::Args),
    Restart(restart::Args),
    Rollout(rollout::Args),
    Diff(diff::Args),
    Watch(watch::Args),
    Status(status::Args),
    Wake(wake::Args),
    #[command(name = "activity-agent")]
    ActivityAgent(activity_agent::Args),
    Schemas(schemas::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr, filtered by RUST_LOG (default: warnings only).
    let default_level = if matches!(cli.command, Command::Watch(_) | Command::ActivityAgent(_)) {
        "info"
    } else {
        "warn"
    };
    // The client library logs every failed request at ERROR, in its own words; berth says
    // what failed itself, once, so those lines stay off unless RUST_LOG asks for them.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},kube_client=off"))
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let color = match cli.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let result = match cli.command {
        Command::Validate(args) => validate::run(args, color),
        Command::Render(args) => render::run(args, color),
        Command::Explain(args) => explain::run(args, color),
        Command::Plan(args) => plan::run(args, color),
        Command::Apply(args) => apply::run(args, color),
        Command::Restart(args) => restart::run(args, color),
        Command::Rollout(args) => rollout::run(args, color),
        Command::Diff(args) => diff::run(args, color),
        Command::Watch(args) => watch::run(args),
        Command::Status(args) => status::run(args),
        Command::Wake(args) => wake::run(args, color),
        Command::ActivityAgent(args) => activity_agent::run(args),
        Command::Schemas(args) => schemas::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            errln!("error: {}", berth::cluster::error::chain(&err));
            ExitCode::from(1)
        }
    }
}
