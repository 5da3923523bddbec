//! `berth apply`: the cluster made to match the repository, in turns. Each turn plans
//! against the cluster, applies (server-side apply, then prune) and, with `--wait`, waits
//! for what it restarted; a health-gated rollout takes one turn per batch. A signal or
//! the deadline stops it between objects, saying what was and was not applied.

use super::args::ClusterArgs;
use super::plan::report_problems;
use super::{
    read_documents_again, refused_by_cluster_rule, runtime, set_documents_aside, validated,
};
use anyhow::Result;
use berth::cluster::{ApplyOptions, Cluster, LivePlan, PlanOptions};
use berth::plan::output::Format;
use berth::plan::rollout::Rollout;
use std::io::IsTerminal;
use std::ops::ControlFlow::{self, Break, Continue};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Make the cluster match the repository: server-side apply (field manager `berth`) in
/// dependency order, then prune what git no longer holds.
///
/// An invalid repository applies nothing. A prune of more than half of what berth owns
/// needs --allow-mass-prune. Fields owned by other managers are only taken over with
/// --force-conflicts. Exit 0 = applied, 1 = error (nothing applied after a failure).
#[derive(clap::Args)]
pub struct Args {
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Take over fields that other field managers own.
    #[arg(long)]
    force_conflicts: bool,
    /// Keep objects git no longer holds instead of deleting them.
    #[arg(long)]
    no_prune: bool,
    /// Allow deleting more than half of what berth owns (e.g. removing most workspaces).
    #[arg(long)]
    allow_mass_prune: bool,
    /// Re-create StatefulSets whose immutable fields changed (other than a growing
    /// `storage.size`, which needs no flag): deleted without their pods and claims,
    /// then created again.
    #[arg(long)]
    allow_replace: bool,
    /// Wait until changed StatefulSets have rolled out (within --timeout), and run a
    /// rollout's later batches, each once the one before is Ready.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let options = ApplyOptions {
        applyset: args.cluster.applyset(&args.path),
        force_conflicts: args.force_conflicts,
        prune: !args.no_prune,
        allow_mass_prune: args.allow_mass_prune,
        allow_replace: args.allow_replace,
        progress_bar: std::io::stderr().is_terminal(),
        quiet: false,
        stop: CancellationToken::new(),
    };
    runtime()?.block_on(apply(&args.path, options, args.wait, &args.cluster, color))
}

async fn apply(
    path: &Path,
    options: ApplyOptions,
    wait: bool,
    cluster: &ClusterArgs,
    color: bool,
) -> Result<ExitCode> {
    let stop = options.stop.clone();
    let why = stop_on_signal_or_deadline(stop.clone(), cluster.deadline(Duration::from_secs(600)));
    let Some(mut repo) = validated(path, color, &cluster.no_rule())? else {
        errln!("nothing was applied");
        return Ok(ExitCode::from(1));
    };
    let connection = cluster.connect().await?;
    if refused_by_cluster_rule(&connection, cluster, &mut repo, color).await? {
        errln!("nothing was applied");
        return Ok(ExitCode::from(1));
    }
    set_documents_aside(&mut repo);
    let turns = Turns {
        connection,
        cluster,
        options,
        why,
    };
    // One batch of restarts per turn (most applies need one).
    let mut batch = 0;
    let mut bar = None;
    let code = loop {
        let live = match turns.plan(&repo).await? {
            Continue(live) => live,
            Break(code) => break code,
        };
        if batch == 0 {
            out!(
                "{}",
                berth::plan::output::render(&live.plan, Format::Text, "berth apply", color)
            );
        } else {
            for rollout in &live.plan.rollouts {
                outln!("rollout batch {}: {}", batch + 1, rollout.describe());
            }
        }
        if wait && turns.options.progress_bar && batch == 0 {
            bar = RolloutBar::new(&live.plan.rollouts);
        }
        if live.plan.problems().next().is_some() {
            read_documents_again(&mut repo);
            report_problems(&live.plan, &repo, color);
        }
        let report = match turns.apply(&live).await? {
            Continue(report) => report,
            Break(code) => break code,
        };
        if wait && let Break(code) = turns.wait(&report, bar.as_ref(), batch, &live).await {
            break code;
        }
        match turns.next(&live.plan.rollouts, &report, wait).await {
            Continue(()) => batch += 1,
            Break(code) => break code,
        }
    };
    turns.options.stop.cancel();
    turns.cluster.print_stats(&turns.connection);
    Ok(code)
}

/// What every turn of one apply shares. A method that returns `Break(code)` has said why
/// the apply ends there; the caller prints the API statistics and exits with `code`.
struct Turns<'a> {
    connection: Cluster,
    cluster: &'a ClusterArgs,
    options: ApplyOptions,
    why: Arc<Mutex<Option<Stopped>>>,
}

impl Turns<'_> {
    fn stopped(&self) -> Option<Stopped> {
        self.why.lock().ok().and_then(|w| *w)
    }

    fn stopped_code(&self) -> ExitCode {
        self.stopped().map_or(ExitCode::from(1), Stopped::code)
    }

    /// The plan of this turn, against the cluster as it is now.
    async fn plan(&self, repo: &berth::Desired) -> Result<ControlFlow<ExitCode, LivePlan>> {
        let options = PlanOptions {
            applyset: self.options.applyset.clone(),
        };
        let connection = &self.connection;
        tokio::select! {
            live = berth::cluster::plan(connection, &repo.resolved, &options) => match live {
                Ok(live) => Ok(Continue(live)),
                Err(_) if connection.outage.message().is_some() => {
                    let cause = connection.outage.message().unwrap_or_default();
                    errln!("error: {cause}; stopped while planning; nothing was applied");
                    Ok(Break(ExitCode::from(1)))
                }
                Err(err) => Err(err),
            },
            _ = self.options.stop.cancelled() => {
                let why = self.stopped().map(Stopped::describe).unwrap_or_default();
                errln!("error: {why} while planning (API server {}); nothing was applied", connection.server);
                Ok(Break(self.stopped_code()))
            }
        }
    }

    /// The plan applied and its summary printed; `Break` when it stopped early or an
    /// object failed, after saying what was and was not applied.
    async fn apply(
        &self,
        live: &LivePlan,
    ) -> Result<ControlFlow<ExitCode, berth::cluster::ApplyReport>> {
        let connection = &self.connection;
        let report = match berth::cluster::apply(connection, live, &self.options).await {
            Ok(report) => report,
            // Gone before the first object (the ApplySet parent): nothing was applied.
            Err(_) if connection.outage.message().is_some() => {
                let cause = connection.outage.message().unwrap_or_default();
                errln!("error: {cause}; nothing was applied");
                return Ok(Break(ExitCode::from(1)));
            }
            Err(err) => return Err(err),
        };
        outln!("{}", report.summary());
        if report.stopped {
            // A signal or the deadline, else the control plane found gone (said once).
            let why = self
                .stopped()
                .map(Stopped::describe)
                .or_else(|| connection.outage.message())
                .unwrap_or_default();
            errln!("error: {why}; the objects above were applied");
            for object in &report.abandoned {
                errln!(
                    "  in flight: {object} (applied whole, or not at all: the next apply tells)"
                );
            }
            for object in &report.not_sent {
                errln!("  not applied: {object}");
            }
            errln!("nothing was pruned; re-run `berth apply` to finish");
            return Ok(Break(self.stopped_code()));
        }
        if !report.failed.is_empty() {
            // Each failure was named as it happened (`failed  Kind/ns/name: reason`).
            if let Some(why) = &report.prune_skipped {
                errln!("error: prune skipped: {why}");
            }
            errln!(
                "error: {} object(s) failed (named above); the others were applied",
                report.failed.len()
            );
            return Ok(Break(ExitCode::from(1)));
        }
        Ok(Continue(report))
    }

    /// `--wait`: until the StatefulSets this turn changed have rolled out.
    async fn wait(
        &self,
        report: &berth::cluster::ApplyReport,
        bar: Option<&RolloutBar>,
        batch: usize,
        live: &LivePlan,
    ) -> ControlFlow<ExitCode> {
        let shown = bar.map(|bar| bar.batch(batch, &live.plan.rollouts));
        let deadline = self.cluster.deadline(Duration::from_secs(600));
        let late = tokio::select! {
            late = berth::cluster::wait_for_rollouts(&self.connection, &report.stateful_sets, deadline) => late,
            _ = self.options.stop.cancelled() => report.stateful_sets.clone(),
        };
        if let Some(shown) = shown {
            shown.finish_and_clear();
        }
        if !late.is_empty() {
            let why = self.stopped().map(Stopped::describe).unwrap_or_default();
            for (ns, name) in &late {
                errln!("error: StatefulSet {ns}/{name} did not roll out ({why})");
            }
            return Break(ExitCode::from(1));
        }
        outln!("rolled out: {} StatefulSet(s)", report.stateful_sets.len());
        Continue(())
    }

    /// Whether another turn runs. The rollout gate held restarts back for later batches
    /// ([`berth::plan::rollout`]): with --wait this apply runs every batch, each once the
    /// one before is Ready; without, it says who continues.
    async fn next(
        &self,
        rollouts: &[Rollout],
        report: &berth::cluster::ApplyReport,
        wait: bool,
    ) -> ControlFlow<ExitCode> {
        if let Some(halt) = rollouts.iter().find_map(|r| r.halted.as_ref()) {
            errln!(
                "error: rollout halted at {}: {}",
                halt.workspace,
                halt.reason
            );
            return Break(ExitCode::from(1));
        }
        let waiting: usize = rollouts
            .iter()
            .filter(|r| !r.paused)
            .map(|r| r.waiting)
            .sum();
        if waiting == 0 {
            return Break(ExitCode::SUCCESS);
        }
        if !wait {
            outln!(
                "rollout: {waiting} workspace(s) wait for later batches; `berth apply --wait` \
                 runs them batch by batch, or `berth watch` continues the rollout"
            );
            return Break(ExitCode::SUCCESS);
        }
        if report.stateful_sets.is_empty() {
            // Held back only by their restart interval: look again shortly.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = self.options.stop.cancelled() => return Break(ExitCode::SUCCESS),
            }
        }
        Continue(())
    }
}

/// Why an apply stopped early, and the exit code that says so.
#[derive(Clone, Copy)]
enum Stopped {
    Signal(&'static str, u8),
    Deadline(Duration),
}

impl Stopped {
    fn code(self) -> ExitCode {
        match self {
            Stopped::Signal(_, code) => ExitCode::from(code),
            Stopped::Deadline(_) => ExitCode::from(1),
        }
    }

    fn describe(self) -> String {
        match self {
            Stopped::Signal(name, _) => format!("stopped by {name}"),
            Stopped::Deadline(after) => format!("gave up after {}s (--timeout)", after.as_secs()),
        }
    }
}

/// Cancel `stop` on SIGTERM, SIGINT or at `deadline`, and remember which.
fn stop_on_signal_or_deadline(
    stop: CancellationToken,
    deadline: Duration,
) -> Arc<Mutex<Option<Stopped>>> {
    let why = Arc::new(Mutex::new(None));
    let record = why.clone();
    tokio::spawn(async move {
        let stopped = async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => Stopped::Signal("SIGTERM", 143),
                _ = tokio::signal::ctrl_c() => Stopped::Signal("SIGINT", 130),
            }
        };
        let stopped = tokio::select! {
            stopped = stopped => stopped,
            _ = tokio::time::sleep(deadline) => Stopped::Deadline(deadline),
            _ = stop.cancelled() => return,
        };
        if let Ok(mut why) = record.lock() {
            *why = Some(stopped);
        }
        stop.cancel();
    });
    why
}

/// `berth apply --wait` on a terminal: a bar for the whole rollout (the workspaces
/// restarted of those the first plan restarts), drawn only while a batch rolls out, so
/// that it never draws over the apply's own bar.
struct RolloutBar {
    total: usize,
}

impl RolloutBar {
    /// None when the apply restarts nobody in batches (nothing to show).
    fn new(rollouts: &[Rollout]) -> Option<RolloutBar> {
        let total = rollouts.iter().map(|r| r.restarts).sum();
        (rollouts.iter().any(|r| r.waiting > 0)).then_some(RolloutBar { total })
    }

    /// The bar while the batch of this plan rolls out; what the plan still restarts is
    /// what is left. The caller clears it once the batch is Ready.
    fn batch(&self, batch: usize, rollouts: &[Rollout]) -> indicatif::ProgressBar {
        let left: usize = rollouts.iter().map(|r| r.restarts).sum();
        let starting: usize = rollouts.iter().map(|r| r.started.len()).sum();
        let waiting: usize = rollouts.iter().map(|r| r.waiting).sum();
        let bar = indicatif::ProgressBar::new(self.total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "rollout {bar:30} {pos}/{len} workspaces restarted ({elapsed}) {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(self.total.saturating_sub(left) as u64);
        bar.set_message(format!(
            "batch {}: {starting} starting, {waiting} waiting",
            batch + 1
        ));
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}
