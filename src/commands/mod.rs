//! berth's commands, one file each: its arguments (a clap `Args` struct, whose doc comment
//! is the command's help) beside the code that runs it (`run`). `main.rs` only parses and
//! dispatches. What several commands share lives here and in [`args`]: standard output that
//! may close early, the async runtime, reading and checking a repository, reporting
//! diagnostics.

use anyhow::{Context, Result, bail};
use berth::cluster::Cluster;
use berth::cluster::applyset::ApplySet;
use berth::load::Files;
use berth::load::diagnostic::render_report;
use berth::tenancy::Tenancy;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// Standard output and error that may close early (`berth render | head -1`): the rest of
/// that stream's output is dropped and the command goes on to its normal end and exit
/// code, as `head` users expect; Rust's `print!` would panic instead.
pub fn write_to(stderr: bool, args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
    let closed = &CLOSED[usize::from(stderr)];
    if closed.load(Ordering::Relaxed) {
        return;
    }
    let result = if stderr {
        let mut err = std::io::stderr().lock();
        err.write_fmt(args).and_then(|()| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_fmt(args).and_then(|()| out.flush())
    };
    if result.is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

macro_rules! out {
    ($($arg:tt)*) => { $crate::commands::write_to(false, format_args!($($arg)*)) };
}

macro_rules! outln {
    ($($arg:tt)*) => { $crate::commands::write_to(false, format_args!("{}\n", format_args!($($arg)*))) };
}

macro_rules! err {
    ($($arg:tt)*) => { $crate::commands::write_to(true, format_args!($($arg)*)) };
}

macro_rules! errln {
    ($($arg:tt)*) => { $crate::commands::write_to(true, format_args!("{}\n", format_args!($($arg)*))) };
}

pub mod activity_agent;
pub mod apply;
pub mod args;
pub mod diff;
pub mod explain;
pub mod plan;
pub mod render;
pub mod restart;
pub mod rollout;
pub mod schemas;
pub mod status;
pub mod validate;
pub mod wake;
pub mod watch;

use args::ClusterArgs;

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Run a cluster command within its deadline; past it, one line says so.
pub async fn within<T>(
    deadline: Duration,
    command: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, command).await {
        Ok(result) => result,
        Err(_) => bail!(
            "gave up after {}s (--timeout): the API server did not answer in time",
            deadline.as_secs()
        ),
    }
}

/// The validated (not rendered) repository, or `None` after printing why it is invalid:
/// the callers render with what they learn from the cluster.
pub fn validated(path: &Path, color: bool, tenancy: &Tenancy) -> Result<Option<berth::Desired>> {
    let desired = berth::validated_with(berth::source::read_dir(path)?, Some(tenancy));
    report(&desired.diagnostics, &desired.loaded.repo.files, color);
    Ok((!desired.has_errors()).then_some(desired))
}

/// The validated repository, a connection and the repository's ApplySet; `None` after
/// printing why the repository is invalid.
pub async fn connected(
    path: &Path,
    cluster: &ClusterArgs,
    color: bool,
) -> Result<Option<(berth::Desired, Cluster, ApplySet)>> {
    let Some(mut desired) = validated(path, color, &cluster.no_rule())? else {
        return Ok(None);
    };
    let connection = cluster.connect().await?;
    if refused_by_cluster_rule(&connection, cluster, &mut desired, color).await? {
        return Ok(None);
    }
    Ok(Some((desired, connection, cluster.applyset(path))))
}

/// Check a repository against the cluster's tenancy rule (the ConfigMap berth-tenancy in
/// berth's namespace); true, after reporting each one, when it refuses some namespace.
pub async fn refused_by_cluster_rule(
    connection: &Cluster,
    cluster: &ClusterArgs,
    repo: &mut berth::Desired,
    color: bool,
) -> Result<bool> {
    let tenancy = berth::cluster::tenancy::read(connection, &cluster.applyset_namespace).await?;
    let found = tenancy.check(&repo.loaded.repo);
    repo.tenancy = Some(tenancy);
    if found.is_empty() {
        return Ok(false);
    }
    report(&found, &repo.loaded.repo.files, color);
    repo.diagnostics.extend(found);
    berth::load::sort_diagnostics(&mut repo.diagnostics);
    Ok(true)
}

/// Let go of a valid repository's documents and their positions while planning or
/// rendering (a third of a no-op plan's memory at 10,000 workspaces): both need only what
/// was resolved, and only findings read the documents ([`read_documents_again`]).
pub fn set_documents_aside(repo: &mut berth::Desired) {
    use rayon::prelude::*;
    let documents = &mut repo.loaded.repo;
    drop((
        std::mem::take(&mut documents.projects),
        std::mem::take(&mut documents.policies),
    ));
    // Freed on every core: one by one, 100,000 workspaces took a tenth of a second.
    std::mem::take(&mut documents.workspaces)
        .into_par_iter()
        .for_each(drop);
}

/// The documents set aside, read again from the same text: for findings, which place a
/// plan's problems and warnings at their workspace's fields.
pub fn read_documents_again(repo: &mut berth::Desired) {
    let files = std::mem::take(&mut repo.loaded.repo.files);
    let tenancy = repo.tenancy.take();
    *repo = berth::validated_with(files.into_sources(), tenancy.as_ref());
}

/// The folder of `path` inside its git repository, as CI tools want paths: from the git
/// repository's root ("" at the root). Outside git: `path` itself when it is relative.
pub fn git_prefix(path: &Path) -> String {
    let inside = git2::Repository::discover(path).ok().and_then(|repo| {
        let workdir = repo.workdir()?.canonicalize().ok()?;
        let absolute = path.canonicalize().ok()?;
        Some(
            absolute
                .strip_prefix(&workdir)
                .ok()?
                .to_string_lossy()
                .replace('\\', "/"),
        )
    });
    inside.unwrap_or_else(|| {
        if path.is_relative() {
            path.components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        } else {
            String::new()
        }
    })
}

/// Print diagnostics to stderr, each with its source line, then a count.
pub fn report(diagnostics: &[berth::load::Diagnostic], files: &Files, color: bool) {
    let color = color && std::io::stderr().is_terminal();
    err!("{}", render_report(diagnostics, files, color));
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if errors > 0 || warnings > 0 {
        errln!("{errors} error(s), {warnings} warning(s)");
    }
}
