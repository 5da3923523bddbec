//! The `berth` command line: thin shells over the library's pipeline.

use anyhow::{Context, Result, bail};
use berth::cluster::applyset::ApplySet;
use berth::cluster::{ApplyOptions, Cluster, ConnectOptions, PlanOptions};
use berth::load::diagnostic::{self, render_report};
use berth::load::{Diagnostic, Files, Severity, SourceFile};
use berth::plan::output::Format;
use berth::render::{ObjectText, RenderContext};
use berth::tenancy::Tenancy;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Standard output and error that may close early (`berth render | head -1`): the rest of
/// that stream's output is dropped and the command goes on to its normal end and exit
/// code, as `head` users expect; Rust's `print!` would panic instead.
fn write_to(stderr: bool, args: std::fmt::Arguments<'_>) {
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
    ($($arg:tt)*) => { write_to(false, format_args!($($arg)*)) };
}

macro_rules! outln {
    ($($arg:tt)*) => { write_to(false, format_args!("{}\n", format_args!($($arg)*))) };
}

macro_rules! err {
    ($($arg:tt)*) => { write_to(true, format_args!($($arg)*)) };
}

macro_rules! errln {
    ($($arg:tt)*) => { write_to(true, format_args!("{}\n", format_args!($($arg)*))) };
}

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

#[derive(Subcommand)]
enum RolloutVerb {
    /// Each project's rollout: how many restart, at most how many at once, what waits,
    /// and where a halted one stopped (a plan against the cluster; nothing is written).
    Status {
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Start no more restarts in this project until `berth rollout resume`.
    Pause {
        project: String,
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Let a paused project's rollout continue.
    Resume {
        project: String,
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Check a repository: every error with file:line:column, all at once. Exit 0 or 1.
    Validate {
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
    },
    /// Print the Kubernetes objects the repository means, as YAML for `kubectl apply -f -`.
    Render {
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Print the Kubernetes Job each Mage k8s block runs as, instead of the objects.
        #[arg(long)]
        executor: bool,
        #[command(flatten)]
        tenancy: TenancyArgs,
    },
    /// Show where each effective value comes from: `PROJECT/PIPELINE/BLOCK` for a Mage k8s
    /// block's executor config (block, project, template, policy, env var or hardcoded
    /// default, with file and line), or `WORKSPACE` for a workspace's environment.
    Explain {
        /// `PROJECT/PIPELINE/BLOCK` or `WORKSPACE`.
        target: String,
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Show what applying the repository would create, update, delete and restart.
    ///
    /// Against the cluster of your kubeconfig by default: live state comes from one LIST per
    /// kind, and only objects that really differ are confirmed with a server-side dry-run.
    /// Nothing is written. Without a cluster: `--offline` plans against an empty cluster,
    /// `--live-from DIR` against objects exported with `kubectl get -o yaml`.
    /// Exit 0 = no changes, 2 = changes, 1 = error.
    Plan {
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Plan against an empty cluster (no cluster needed).
        #[arg(long, conflicts_with = "live_from")]
        offline: bool,
        /// Plan against the objects in the YAML files of this folder (`kubectl get -o yaml`).
        #[arg(long, value_name = "DIR")]
        live_from: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// With --offline or --live-from (a live plan reads the cluster's rule).
        #[command(flatten)]
        tenancy: TenancyArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Make the cluster match the repository: server-side apply (field manager `berth`) in
    /// dependency order, then prune what git no longer holds.
    ///
    /// An invalid repository applies nothing. A prune of more than half of what berth owns
    /// needs --allow-mass-prune. Fields owned by other managers are only taken over with
    /// --force-conflicts. Exit 0 = applied, 1 = error (nothing applied after a failure).
    Apply {
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
    },
    /// Restart a workspace now, with its current environment (also applies a pending
    /// restart of a `restart: manual` workspace).
    Restart {
        /// The workspace's name.
        workspace: String,
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show, pause or resume the rollouts of restarts (as `kubectl rollout`): a paused
    /// project's waiting workspaces keep their running pods until it is resumed.
    Rollout {
        #[command(subcommand)]
        verb: RolloutVerb,
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
        /// The head revision is checked against it; the base only has to load.
        #[command(flatten)]
        tenancy: TenancyArgs,
    },
    /// Run the reconciler: follow a git branch, tag or commit (or a folder) and keep the
    /// cluster in line with it, until SIGTERM or SIGINT.
    ///
    /// Every new revision is validated, planned and applied like `berth apply` (with
    /// --force-conflicts: the reconciler owns its fields). An invalid revision is never
    /// applied: the last good one stays in force and the error is reported (log, Event on
    /// the ApplySet parent, `berth status`, metric). Every --drift-interval the cluster is
    /// compared with the last good revision and live edits are healed. Workspaces with
    /// lifecycle.termination.idleSeconds whose activity Lease goes unrenewed that long are
    /// suspended (replicas 0) until `berth wake` or renewed activity. Failed applies are
    /// retried with exponential backoff.
    ///
    /// Run two replicas: a Lease elects the one that writes; the other takes over within
    /// --lease-duration. Serves a status page at / (every workspace and its state; JSON at
    /// /api/status), /healthz, /readyz, /metrics (Prometheus) and POST /hooks/git (GitHub
    /// or GitLab push webhooks, verified with the shared secret) on --listen. See deploy/
    /// for the in-cluster manifests.
    Watch {
        #[command(flatten)]
        watch: Box<berth::reconcile::cli::WatchArgs>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show what the reconciler last did: the revision applied and the one last seen, the
    /// current error (e.g. an invalid revision), and each workspace's state (ready,
    /// starting, restarting, suspended, failed) — read from the status ConfigMap
    /// `<applyset>-status` that `berth watch` writes.
    Status {
        /// The SOURCE given to `berth watch` (names the default ApplySet); or use --applyset.
        #[arg(default_value = ".")]
        source: String,
        /// Output format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Wake an idle workspace: renew its activity Lease and scale it back up now (the
    /// reconciler suspends workspaces whose lifecycle.termination.idleSeconds ran out).
    Wake {
        /// The workspace's name.
        workspace: String,
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Report a workspace's activity (runs as a sidecar of workspaces with an idle timeout;
    /// berth renders it). Renews the workspace's activity Lease while the workspace is in
    /// use: sessions on the UI port that last a sampling interval, or CPU use of the pod's
    /// processes at or above --busy-cpu. Writes a heartbeat every sample, so the reconciler
    /// knows the signal works. Runs until SIGTERM or SIGINT.
    #[command(name = "activity-agent")]
    ActivityAgent {
        /// The activity Lease (`<workspace>-activity`).
        #[arg(long)]
        lease: String,
        /// Namespace of the Lease (default: $POD_NAMESPACE, else the pod's namespace).
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: Option<String>,
        /// Port whose established connections are sessions (Mage's UI).
        #[arg(long, default_value_t = 6789)]
        port: u16,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// CPU of the pod's processes that counts as activity (a Kubernetes quantity).
        #[arg(long, default_value = "100m")]
        busy_cpu: String,
        /// Where the pod's processes and sockets are seen.
        #[arg(long, default_value = "/proc")]
        proc: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Write the JSON Schemas of Project, Workspace and Policy (for editors and CI).
    Schemas {
        /// Folder to write project.json, workspace.json and policy.json into.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

/// Where projects may go, for the commands that do not read it from a cluster (validate,
/// render, diff, offline plans): the cluster administrators' tenancy rule. Live plans,
/// apply and watch read the ConfigMap berth-tenancy in --applyset-namespace instead.
#[derive(Args, Clone, Default)]
struct TenancyArgs {
    /// The tenancy rule: a YAML file holding the ConfigMap berth-tenancy, as applied to the
    /// cluster (deploy/15-tenancy.yaml; other documents in the file are ignored). A project
    /// outside it is an error at its namespace line. berth's own namespace is the
    /// ConfigMap's. Without this or --allow-namespace, only kube-*, default and berth's
    /// namespace are refused.
    #[arg(long, value_name = "FILE", conflicts_with = "allow_namespace")]
    tenancy: Option<PathBuf>,
    /// An allowed namespace: a name or a glob (`team-*`; `*` any characters, `?` one).
    /// Repeat for more; instead of --tenancy.
    #[arg(long = "allow-namespace", value_name = "PATTERN")]
    allow_namespace: Vec<String>,
}

impl TenancyArgs {
    fn given(&self) -> bool {
        self.tenancy.is_some() || !self.allow_namespace.is_empty()
    }

    /// The rule these flags state, berth being in `berth_namespace` unless the file says
    /// otherwise.
    fn rule(&self, berth_namespace: &str) -> Result<Tenancy> {
        if let Some(path) = &self.tenancy {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the tenancy rule {}", path.display()))?;
            return Tenancy::from_file(&text, &path.display().to_string())
                .map_err(anyhow::Error::msg);
        }
        if !self.allow_namespace.is_empty() {
            return Tenancy::new(
                berth_namespace,
                self.allow_namespace.iter().cloned(),
                "--allow-namespace",
            )
            .map_err(anyhow::Error::msg);
        }
        Ok(Tenancy::unrestricted(
            berth_namespace,
            "no tenancy rule given (--tenancy or --allow-namespace)",
        ))
    }
}

/// Which cluster, and which set of objects in it belongs to this repository.
#[derive(Args, Clone)]
struct ClusterArgs {
    /// Path of a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Name of the ApplySet parent ConfigMap that records what this repository owns
    /// (default: berth-<repository folder name>).
    #[arg(long, global = true)]
    applyset: Option<String>,
    /// Namespace of the ApplySet parent.
    #[arg(long, global = true, default_value = berth::render::DEFAULT_APPLYSET_NAMESPACE)]
    applyset_namespace: String,
    /// Print the API requests made, by verb, to stderr.
    #[arg(long, global = true)]
    api_stats: bool,
    /// Give up after this long (e.g. `90s`, `10m`; a bare number is seconds). Default: 10m
    /// for apply (its --wait included), 5m for plan, 2m for the other commands. Each
    /// request also has its own timeout and a few retries.
    #[arg(long, global = true, value_parser = berth::reconcile::cli::parse_duration)]
    timeout: Option<Duration>,
}

impl ClusterArgs {
    fn applyset(&self, path: &Path) -> ApplySet {
        ApplySet {
            name: self
                .applyset
                .clone()
                .unwrap_or_else(|| ApplySet::default_name(path)),
            namespace: self.applyset_namespace.clone(),
        }
    }

    fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    async fn connect(&self) -> Result<Cluster> {
        Cluster::connect(&self.connect_options()).await
    }

    /// What is refused before the cluster's rule is read: the namespaces no rule can allow
    /// (`kube-*`, `default`, berth's own), so a repository aiming there fails without a
    /// cluster.
    fn no_rule(&self) -> Tenancy {
        Tenancy::unrestricted(
            &self.applyset_namespace,
            "before reading the cluster's tenancy rule",
        )
    }

    /// The command's deadline: `--timeout`, else `default`.
    fn deadline(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }

    fn print_stats(&self, cluster: &Cluster) {
        if self.api_stats {
            let stats = cluster.requests.snapshot();
            errln!(
                "api requests: {}",
                serde_json::to_string(&stats).unwrap_or_default()
            );
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr, filtered by RUST_LOG (default: warnings only).
    let default_level = if matches!(
        cli.command,
        Command::Watch { .. } | Command::ActivityAgent { .. }
    ) {
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
    match run(cli.command, color) {
        Ok(code) => code,
        Err(err) => {
            errln!("error: {}", berth::cluster::error::chain(&err));
            ExitCode::from(1)
        }
    }
}

fn run(command: Command, color: bool) -> Result<ExitCode> {
    match command {
        Command::Validate {
            path,
            format,
            tenancy,
        } => {
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
        Command::Render {
            path,
            executor,
            tenancy,
        } => {
            let tenancy = tenancy.rule(berth::render::DEFAULT_APPLYSET_NAMESPACE)?;
            let mut desired =
                berth::validated_with(berth::source::read_dir(&path)?, Some(&tenancy));
            report(&desired.diagnostics, &desired.loaded.repo.files, color);
            if desired.has_errors() {
                return Ok(ExitCode::from(1));
            }
            if executor {
                let jobs = berth::render::executor::jobs(&desired.resolved);
                out!("{}", berth::render::to_yaml(&jobs));
            } else {
                // What was read is reported: only the resolved workspaces are rendered.
                set_documents_aside(&mut desired);
                // Each object becomes YAML as it is rendered, and the output goes out in
                // pieces of about a megabyte: neither every object nor a second copy of the
                // whole output is held (BENCHMARKS.md).
                let documents =
                    berth::render::yaml_documents(&desired.resolved, &RenderContext::default());
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
        Command::Explain { target, path } => {
            let Some(repo) = validated(&path, color, &Tenancy::default())? else {
                return Ok(ExitCode::from(1));
            };
            out!("{}", berth::explain::explain(&repo.resolved, &target)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            path,
            offline,
            live_from,
            format,
            tenancy,
            cluster,
        } => {
            let live = match (offline, live_from) {
                (_, Some(dir)) => read_live(&dir)?,
                (true, None) => {
                    let tenancy = tenancy.rule(&cluster.applyset_namespace)?;
                    return offline_plan(&path, &tenancy, format, color);
                }
                (false, None) => {
                    if tenancy.given() {
                        bail!(
                            "a live plan reads the cluster's tenancy rule (ConfigMap {}/{}); \
                             --tenancy and --allow-namespace are for --offline and --live-from",
                            cluster.applyset_namespace,
                            berth::tenancy::CONFIG_MAP
                        );
                    }
                    let deadline = cluster.deadline(Duration::from_secs(300));
                    return runtime()?
                        .block_on(within(deadline, live_plan(&path, format, &cluster, color)));
                }
            };
            let tenancy = tenancy.rule(&cluster.applyset_namespace)?;
            let desired = desired_objects(berth::source::read_dir(&path)?, color, Some(&tenancy));
            let prefix = git_prefix(&path);
            if desired.has_errors() {
                print_invalid(&desired, format, "berth plan", &prefix);
                return Ok(ExitCode::from(1));
            }
            let mut plan = berth::plan::compute(&desired.objects, &live);
            berth::plan::rollout::summarize(&mut plan, &offline_fleet(&desired.resolved));
            print_plan(
                &plan,
                &desired,
                format,
                "berth plan",
                &prefix,
                color,
                Vec::new(),
            );
            Ok(plan_exit(&plan, &desired, color))
        }
        Command::Diff {
            path,
            base,
            head,
            format,
            tenancy,
        } => {
            let tenancy = tenancy.rule(berth::render::DEFAULT_APPLYSET_NAMESPACE)?;
            let base_rev = berth::source::read_revision(&path, &base)?;
            let head_rev = berth::source::read_revision(&path, &head)?;
            // The base is what is in force: judged by the rules of its day, not this one.
            let before = {
                let repo = berth::validated_with(base_rev.files, None);
                report(&repo.diagnostics, &repo.loaded.repo.files, color);
                if repo.has_errors() {
                    bail!(
                        "the base revision `{base}` is not a valid berth repository (errors above)"
                    );
                }
                // Only its objects are needed, as text: the rest goes before the head is read.
                rendered_texts(&repo.resolved)
            };
            let title = format!(
                "berth diff {}..{}",
                &base_rev.commit[..12.min(base_rev.commit.len())],
                &head_rev.commit[..12.min(head_rev.commit.len())]
            );
            // Only the head's findings are annotated: they are the pull request's lines.
            let after = berth::validated_with(head_rev.files, Some(&tenancy));
            report(&after.diagnostics, &after.loaded.repo.files, color);
            Ok(plan_between(
                after,
                &before,
                format,
                &title,
                &git_prefix(&path),
                color,
            ))
        }
        Command::Apply {
            path,
            force_conflicts,
            no_prune,
            allow_mass_prune,
            allow_replace,
            wait,
            cluster,
        } => {
            let options = ApplyOptions {
                applyset: cluster.applyset(&path),
                force_conflicts,
                prune: !no_prune,
                allow_mass_prune,
                allow_replace,
                progress_bar: std::io::stderr().is_terminal(),
                quiet: false,
                stop: CancellationToken::new(),
            };
            runtime()?.block_on(apply(&path, options, wait, &cluster, color))
        }
        Command::Restart {
            workspace,
            path,
            cluster,
        } => runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
            let Some((repo, connection, set)) = connected(&path, &cluster, color).await? else {
                return Ok(ExitCode::from(1));
            };
            // Only the objects to apply: a restart needs no inventory and no dry-runs.
            let desired = berth::cluster::desired(
                &connection,
                &repo.resolved,
                &PlanOptions { applyset: set },
            )
            .await?;
            let now = humantime_now();
            let message = berth::cluster::restart(&connection, &desired, &workspace, &now).await?;
            outln!("{message}");
            cluster.print_stats(&connection);
            Ok(ExitCode::SUCCESS)
        })),
        Command::Rollout { verb } => match verb {
            RolloutVerb::Status { path, cluster } => {
                runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
                    let Some((repo, connection, applyset)) =
                        connected(&path, &cluster, color).await?
                    else {
                        return Ok(ExitCode::from(1));
                    };
                    let live = berth::cluster::plan(
                        &connection,
                        &repo.resolved,
                        &PlanOptions { applyset },
                    )
                    .await?;
                    if live.plan.rollouts.is_empty() {
                        outln!("no rollout in progress: every workspace runs git's pod template");
                    }
                    for rollout in &live.plan.rollouts {
                        outln!("{}", rollout.describe());
                    }
                    let halted = live.plan.rollouts.iter().any(|r| r.halted.is_some());
                    Ok(if halted {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }))
            }
            RolloutVerb::Pause {
                project,
                path,
                cluster,
            } => pause(&project, &path, &cluster, true),
            RolloutVerb::Resume {
                project,
                path,
                cluster,
            } => pause(&project, &path, &cluster, false),
        },
        Command::Watch { watch, cluster } => runtime()?.block_on(async {
            let kube_config = cluster.connect_options().kube_config().await?;
            berth::reconcile::cli::watch(
                *watch,
                kube_config,
                cluster.applyset.clone(),
                cluster.applyset_namespace.clone(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Status {
            source,
            format,
            cluster,
        } => runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
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
        })),
        Command::Wake {
            workspace,
            path,
            cluster,
        } => runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
            let Some((repo, connection, set)) = connected(&path, &cluster, color).await? else {
                return Ok(ExitCode::from(1));
            };
            let message =
                berth::reconcile::idle::wake(&connection, &repo.resolved, &set, &workspace).await?;
            outln!("{message}");
            cluster.print_stats(&connection);
            Ok(ExitCode::SUCCESS)
        })),
        Command::ActivityAgent {
            lease,
            namespace,
            port,
            interval,
            busy_cpu,
            proc,
            cluster,
        } => {
            let namespace = match namespace {
                Some(ns) => ns,
                None => std::fs::read_to_string(
                    "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                )
                .map(|s| s.trim().to_string())
                .context("no --namespace, no $POD_NAMESPACE, and not running in a pod")?,
            };
            let cores = berth::quantity::parse(&busy_cpu)
                .with_context(|| format!("--busy-cpu `{busy_cpu}` is not a quantity"))?;
            let options = berth::activity::AgentOptions {
                namespace,
                lease,
                port,
                interval: Duration::from_secs(interval.max(1)),
                busy_millicores: (cores * 1000.0).round() as u64,
                proc_root: proc,
            };
            runtime()?.block_on(async {
                let connection = cluster.connect().await?;
                let stop = async {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(term) => term,
                        Err(_) => return std::future::pending().await,
                    };
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                };
                berth::activity::run(connection, options, stop).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schemas { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, schema) in berth::model::schemas() {
                let file = out.join(format!("{name}.json"));
                let text = serde_json::to_string_pretty(&schema)? + "\n";
                std::fs::write(&file, text)
                    .with_context(|| format!("writing {}", file.display()))?;
                outln!("wrote {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The validated repository, a connection and the repository's ApplySet; `None` after
/// printing why the repository is invalid.
async fn connected(
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
async fn refused_by_cluster_rule(
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The validated (not rendered) repository, or `None` after printing why it is invalid:
/// the callers render with what they learn from the cluster.
fn validated(path: &Path, color: bool, tenancy: &Tenancy) -> Result<Option<berth::Desired>> {
    let desired = berth::validated_with(berth::source::read_dir(path)?, Some(tenancy));
    report(&desired.diagnostics, &desired.loaded.repo.files, color);
    Ok((!desired.has_errors()).then_some(desired))
}

async fn live_plan(
    path: &Path,
    format: Format,
    cluster: &ClusterArgs,
    color: bool,
) -> Result<ExitCode> {
    let mut repo = berth::validated_with(berth::source::read_dir(path)?, Some(&cluster.no_rule()));
    report(&repo.diagnostics, &repo.loaded.repo.files, color);
    let prefix = git_prefix(path);
    if repo.has_errors() {
        print_invalid(&repo, format, "berth plan", &prefix);
        return Ok(ExitCode::from(1));
    }
    let connection = cluster.connect().await?;
    if refused_by_cluster_rule(&connection, cluster, &mut repo, color).await? {
        print_invalid(&repo, format, "berth plan", &prefix);
        return Ok(ExitCode::from(1));
    }
    let options = PlanOptions {
        applyset: cluster.applyset(path),
    };
    set_documents_aside(&mut repo);
    let live = match berth::cluster::plan(&connection, &repo.resolved, &options).await {
        Ok(live) => live,
        Err(_) if connection.outage.message().is_some() => {
            let cause = connection.outage.message().unwrap_or_default();
            errln!("error: {cause}; stopped while planning");
            cluster.print_stats(&connection);
            return Ok(ExitCode::from(1));
        }
        Err(err) => return Err(err),
    };
    if format.findings().is_some() || live.plan.problems().next().is_some() {
        read_documents_again(&mut repo);
    }
    let mass = ApplyOptions {
        applyset: options.applyset.clone(),
        force_conflicts: false,
        prune: true,
        allow_mass_prune: false,
        allow_replace: false,
        progress_bar: false,
        quiet: false,
        stop: CancellationToken::new(),
    };
    let mut refusals = Vec::new();
    if let Err(err) = berth::cluster::apply::check_mass_prune(&live, &mass) {
        errln!("warning: apply would refuse: {err}");
        refusals.push(
            Diagnostic::general(Severity::Warning, format!("apply would refuse: {err}"))
                .with_rule("mass-prune"),
        );
    }
    print_plan(
        &live.plan,
        &repo,
        format,
        "berth plan",
        &prefix,
        color,
        refusals,
    );
    cluster.print_stats(&connection);
    Ok(plan_exit(&live.plan, &repo, color))
}

/// Let go of a valid repository's documents and their positions while planning or
/// rendering (a third of a no-op plan's memory at 10,000 workspaces): both need only what
/// was resolved, and only findings read the documents ([`read_documents_again`]).
fn set_documents_aside(repo: &mut berth::Desired) {
    let documents = &mut repo.loaded.repo;
    drop((
        std::mem::take(&mut documents.projects),
        std::mem::take(&mut documents.workspaces),
        std::mem::take(&mut documents.policies),
    ));
}

/// The documents set aside, read again from the same text: for findings, which place a
/// plan's problems and warnings at their workspace's fields.
fn read_documents_again(repo: &mut berth::Desired) {
    let files = std::mem::take(&mut repo.loaded.repo.files);
    let tenancy = repo.tenancy.take();
    *repo = berth::validated_with(files.into_sources(), tenancy.as_ref());
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

async fn apply(
    path: &Path,
    options: ApplyOptions,
    wait: bool,
    cluster: &ClusterArgs,
    color: bool,
) -> Result<ExitCode> {
    let stop = options.stop.clone();
    let why = stop_on_signal_or_deadline(stop.clone(), cluster.deadline(Duration::from_secs(600)));
    let stopped = || why.lock().ok().and_then(|w| *w);
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
    let plan_options = PlanOptions {
        applyset: options.applyset.clone(),
    };
    // One batch of restarts per turn (most applies need one).
    let mut batch = 0;
    let mut bar = None;
    loop {
        let live = tokio::select! {
            live = berth::cluster::plan(&connection, &repo.resolved, &plan_options) => match live {
                Ok(live) => live,
                Err(_) if connection.outage.message().is_some() => {
                    let cause = connection.outage.message().unwrap_or_default();
                    errln!("error: {cause}; stopped while planning; nothing was applied");
                    cluster.print_stats(&connection);
                    return Ok(ExitCode::from(1));
                }
                Err(err) => return Err(err),
            },
            _ = stop.cancelled() => {
                let why = stopped().map(Stopped::describe).unwrap_or_default();
                errln!("error: {why} while planning (API server {}); nothing was applied", connection.server);
                return Ok(stopped().map_or(ExitCode::from(1), Stopped::code));
            }
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
        if wait && options.progress_bar && batch == 0 {
            bar = RolloutBar::new(&live.plan.rollouts);
        }
        if live.plan.problems().next().is_some() {
            read_documents_again(&mut repo);
            report_problems(&live.plan, &repo, color);
        }
        let report = match berth::cluster::apply(&connection, &live, &options).await {
            Ok(report) => report,
            // Gone before the first object (the ApplySet parent): nothing was applied.
            Err(_) if connection.outage.message().is_some() => {
                let cause = connection.outage.message().unwrap_or_default();
                errln!("error: {cause}; nothing was applied");
                cluster.print_stats(&connection);
                return Ok(ExitCode::from(1));
            }
            Err(err) => return Err(err),
        };
        outln!("{}", report.summary());
        if report.stopped {
            // A signal or the deadline, else the control plane found gone (said once).
            let why = stopped()
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
            cluster.print_stats(&connection);
            return Ok(stopped().map_or(ExitCode::from(1), Stopped::code));
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
            cluster.print_stats(&connection);
            return Ok(ExitCode::from(1));
        }
        if wait {
            let shown = bar
                .as_ref()
                .map(|bar| bar.batch(batch, &live.plan.rollouts));
            let late = tokio::select! {
                late = berth::cluster::wait_for_rollouts(&connection, &report.stateful_sets, cluster.deadline(Duration::from_secs(600))) => late,
                _ = stop.cancelled() => report.stateful_sets.clone(),
            };
            if let Some(shown) = shown {
                shown.finish_and_clear();
            }
            if !late.is_empty() {
                let why = stopped().map(Stopped::describe).unwrap_or_default();
                for (ns, name) in &late {
                    errln!("error: StatefulSet {ns}/{name} did not roll out ({why})");
                }
                cluster.print_stats(&connection);
                return Ok(ExitCode::from(1));
            }
            outln!("rolled out: {} StatefulSet(s)", report.stateful_sets.len());
        }
        // The rollout gate held restarts back for later batches ([`berth::plan::rollout`]):
        // with --wait this apply runs every batch, each once the one before is Ready;
        // without, it says who continues.
        let rollouts = &live.plan.rollouts;
        if let Some(halt) = rollouts.iter().find_map(|r| r.halted.as_ref()) {
            errln!(
                "error: rollout halted at {}: {}",
                halt.workspace,
                halt.reason
            );
            cluster.print_stats(&connection);
            return Ok(ExitCode::from(1));
        }
        let waiting: usize = rollouts
            .iter()
            .filter(|r| !r.paused)
            .map(|r| r.waiting)
            .sum();
        if waiting == 0 {
            break;
        }
        if !wait {
            outln!(
                "rollout: {waiting} workspace(s) wait for later batches; `berth apply --wait` \
                 runs them batch by batch, or `berth watch` continues the rollout"
            );
            break;
        }
        if report.stateful_sets.is_empty() {
            // Held back only by their restart interval: look again shortly.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.cancelled() => break,
            }
        }
        batch += 1;
    }
    stop.cancel();
    cluster.print_stats(&connection);
    Ok(ExitCode::SUCCESS)
}

/// `berth apply --wait` on a terminal: a bar for the whole rollout (the workspaces
/// restarted of those the first plan restarts), drawn only while a batch rolls out, so
/// that it never draws over the apply's own bar.
struct RolloutBar {
    total: usize,
}

impl RolloutBar {
    /// None when the apply restarts nobody in batches (nothing to show).
    fn new(rollouts: &[berth::plan::rollout::Rollout]) -> Option<RolloutBar> {
        let total = rollouts.iter().map(|r| r.restarts).sum();
        (rollouts.iter().any(|r| r.waiting > 0)).then_some(RolloutBar { total })
    }

    /// The bar while the batch of this plan rolls out; what the plan still restarts is
    /// what is left. The caller clears it once the batch is Ready.
    fn batch(
        &self,
        batch: usize,
        rollouts: &[berth::plan::rollout::Rollout],
    ) -> indicatif::ProgressBar {
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

/// `berth rollout pause|resume`: the project's rollout stops starting restarts, or goes on.
fn pause(project: &str, path: &Path, cluster: &ClusterArgs, pause: bool) -> Result<ExitCode> {
    runtime()?.block_on(within(cluster.deadline(Duration::from_secs(120)), async {
        let connection = cluster.connect().await?;
        let set = cluster.applyset(path);
        berth::cluster::rollout::set_paused(&connection, &set, project, pause).await?;
        let what = if pause {
            "paused: no more restarts start"
        } else {
            "resumed"
        };
        outln!("rollout of project {project} {what}");
        Ok(ExitCode::SUCCESS)
    }))
}

/// Run a cluster command within its deadline; past it, one line says so.
async fn within<T>(
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

/// The current time as RFC 3339 (UTC), for `berth/restarted-at`.
fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// The fleet of a plan without a cluster: how its restarts would roll, every workspace
/// counted as Ready.
fn offline_fleet(resolved: &berth::resolve::Resolved) -> berth::plan::rollout::Fleet {
    berth::plan::rollout::Fleet::of(resolved, Default::default(), 0, |_, _| None)
}

/// `berth plan --offline`: the repository's render against an empty cluster.
fn offline_plan(path: &Path, tenancy: &Tenancy, format: Format, color: bool) -> Result<ExitCode> {
    let repo = berth::validated_with(berth::source::read_dir(path)?, Some(tenancy));
    report(&repo.diagnostics, &repo.loaded.repo.files, color);
    Ok(plan_between(
        repo,
        &[],
        format,
        "berth plan",
        &git_prefix(path),
        color,
    ))
}

/// The plan from the render `live` (another revision's, or nothing) to the render of
/// `repo`, printed in `format`, and its exit code. Both renders are kept as JSON text,
/// one object rendered at a time, and only objects that differ are read back
/// ([`berth::plan::live::between_renders`]): a plan costs about what a render costs
/// (BENCHMARKS.md). The documents are set aside meanwhile, as for a live plan.
fn plan_between(
    mut repo: berth::Desired,
    live: &[ObjectText],
    format: Format,
    title: &str,
    prefix: &str,
    color: bool,
) -> ExitCode {
    if repo.has_errors() {
        print_invalid(&repo, format, title, prefix);
        return ExitCode::from(1);
    }
    set_documents_aside(&mut repo);
    let desired = rendered_texts(&repo.resolved);
    let mut plan = berth::plan::live::between_renders(&desired, live);
    berth::plan::rollout::summarize(&mut plan, &offline_fleet(&repo.resolved));
    // The process ends soon: freeing every object one by one only costs time.
    std::mem::forget(desired);
    if format.findings().is_some() || plan.problems().next().is_some() {
        read_documents_again(&mut repo);
    }
    print_plan(&plan, &repo, format, title, prefix, color, Vec::new());
    let code = plan_exit(&plan, &repo, color);
    std::mem::forget((plan, repo));
    code
}

/// Every object of a valid repository as JSON text, in apply order, each kept as text as
/// soon as it is rendered (never every object as a `Value` at once).
fn rendered_texts(resolved: &berth::resolve::Resolved) -> Vec<ObjectText> {
    berth::render::render_each(resolved, &RenderContext::default(), |key, object| {
        ObjectText::new(key.clone(), &object)
    })
    .into_iter()
    .map(|(_, text)| text)
    .collect()
}

/// 1 when some object cannot be applied (after saying which, at its file and line where it
/// has one), else 2 when there are changes, 0 when there are none.
fn plan_exit(plan: &berth::plan::Plan, repo: &berth::Desired, color: bool) -> ExitCode {
    if report_problems(plan, repo, color) {
        ExitCode::from(1)
    } else if plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Print the objects of a plan that cannot be applied, each as a diagnostic: at the
/// workspace field it is about (file:line:column) when there is one. True if any.
fn report_problems(plan: &berth::plan::Plan, repo: &berth::Desired, color: bool) -> bool {
    let problems: Vec<Diagnostic> = berth::plan::output::findings(plan, Some(&repo.loaded.repo))
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    report(&problems, &repo.loaded.repo.files, color);
    !problems.is_empty()
}

/// The rendered repository (nothing rendered when it is invalid), after printing its
/// diagnostics; checked against `tenancy` (`None`: not checked).
fn desired_objects(
    files: Vec<SourceFile>,
    color: bool,
    tenancy: Option<&Tenancy>,
) -> berth::Desired {
    let desired = berth::desired_with(files, &RenderContext::default(), tenancy);
    report(&desired.diagnostics, &desired.loaded.repo.files, color);
    desired
}

/// A plan on stdout in `format`. For github and sarif: the repository's diagnostics, the
/// plan's findings (placed at their workspaces) and `more`, with the plan's summary; for
/// github also the markdown plan in the job summary ($GITHUB_STEP_SUMMARY), which has room
/// for every change where annotations do not.
fn print_plan(
    plan: &berth::plan::Plan,
    desired: &berth::Desired,
    format: Format,
    title: &str,
    prefix: &str,
    color: bool,
    more: Vec<Diagnostic>,
) {
    use berth::plan::output;
    if format.findings().is_none() {
        out!("{}", output::render(plan, format, title, color));
        return;
    }
    let repo = &desired.loaded.repo;
    let mut found = desired.diagnostics.clone();
    found.extend(output::findings(plan, Some(repo)));
    found.extend(more);
    out!(
        "{}",
        output::annotate(Some(plan), &found, format, title, &repo.files, prefix)
    );
    if format == Format::Github
        && let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty())
    {
        use std::io::Write as _;
        let markdown = output::render(plan, Format::Markdown, title, false);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .and_then(|mut file| file.write_all(markdown.as_bytes()));
        if let Err(err) = written {
            errln!(
                "warning: could not write the job summary {}: {err}",
                Path::new(&summary).display()
            );
        }
    }
}

/// For github and sarif: the findings of an invalid repository on stdout (text has them on
/// stderr already).
fn print_invalid(desired: &berth::Desired, format: Format, title: &str, prefix: &str) {
    if format.findings().is_some() {
        out!(
            "{}",
            berth::plan::output::annotate(
                None,
                &desired.diagnostics,
                format,
                title,
                &desired.loaded.repo.files,
                prefix
            )
        );
    }
}

/// The folder of `path` inside its git repository, as CI tools want paths: from the git
/// repository's root ("" at the root). Outside git: `path` itself when it is relative.
fn git_prefix(path: &Path) -> String {
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
fn report(diagnostics: &[Diagnostic], files: &Files, color: bool) {
    let color = color && std::io::stderr().is_terminal();
    err!("{}", render_report(diagnostics, files, color));
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if errors > 0 || warnings > 0 {
        errln!("{errors} error(s), {warnings} warning(s)");
    }
}

/// Live objects exported with `kubectl get -o yaml`: single objects or `kind: List`s.
fn read_live(dir: &Path) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for file in berth::source::read_dir(dir)? {
        if !(file.path.ends_with(".yaml") || file.path.ends_with(".yml")) {
            continue;
        }
        let text = file
            .content
            .map_err(|why| anyhow::anyhow!("{}: {why}", dir.join(&file.path).display()))?;
        let docs = berth::load::yaml::parse(&text).map_err(|e| {
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
