//! `berth plan`: what applying would change, against the cluster (one LIST per kind, then
//! server-side dry-runs of what differs), an empty one (`--offline`) or exported objects
//! (`--live-from`). Also the pieces `diff` and `apply` share: planning between two
//! renders, printing a plan in each format, and its exit code.

use super::args::{ClusterArgs, TenancyArgs};
use super::{git_prefix, read_documents_again, report, runtime, set_documents_aside, within};
use anyhow::{Result, bail};
use berth::cluster::{ApplyOptions, PlanOptions};
use berth::load::{Diagnostic, Severity, SourceFile};
use berth::plan::output::Format;
use berth::render::{ObjectText, RenderContext};
use berth::tenancy::Tenancy;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Show what applying the repository would create, update, delete and restart.
///
/// Against the cluster of your kubeconfig by default: live state comes from one LIST per
/// kind, and only objects that really differ are confirmed with a server-side dry-run.
/// Nothing is written. Without a cluster: `--offline` plans against an empty cluster,
/// `--live-from DIR` against objects exported with `kubectl get -o yaml`.
/// Exit 0 = no changes, 2 = changes, 1 = error.
#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let Args {
        path,
        offline,
        live_from,
        format,
        tenancy,
        cluster,
    } = args;
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
    if super::refused_by_cluster_rule(&connection, cluster, &mut repo, color).await? {
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

/// The fleet of a plan without a cluster: how its restarts would roll, every workspace
/// counted as Ready.
fn offline_fleet(resolved: &berth::resolve::Resolved) -> berth::plan::rollout::Fleet {
    berth::plan::rollout::Fleet::of(resolved, Default::default(), 0, |_, _| None)
}

/// `berth plan --offline`: the repository's render against an empty cluster.
fn offline_plan(path: &Path, tenancy: &Tenancy, format: Format, color: bool) -> Result<ExitCode> {
    let repo = berth::validated_with(berth::source::read_dir(path)?, Some(tenancy));
    report(&repo.diagnostics, &repo.loaded.repo.files, color);
    Ok(between(
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
/// one object rendered at a time, an object of the same text as in `live` held once,
/// and only objects that differ are read back ([`berth::plan::live::between_renders`]):
/// a plan costs about what a render costs (BENCHMARKS.md). The documents are set aside
/// meanwhile, as for a live plan.
pub fn between(
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
    // The fleet is all the plan needs of the resolved workspaces once they are rendered.
    let fleet = offline_fleet(&repo.resolved);
    let live_texts = berth::plan::live::texts_by_key(live);
    let desired: Vec<_> = berth::render::render_owned(
        std::mem::take(&mut repo.resolved),
        &RenderContext::default(),
        |key, object| berth::plan::live::text_against(&live_texts, key, &object),
    )
    .into_iter()
    .map(|(_, text)| text)
    .collect();
    let mut plan = berth::plan::live::between_renders(&desired, live);
    berth::plan::rollout::summarize(&mut plan, &fleet);
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
/// soon as it is rendered (never every object as a `Value` at once), each workspace let go
/// once it is.
pub fn rendered_texts(resolved: berth::resolve::Resolved) -> Vec<ObjectText> {
    berth::render::render_owned(resolved, &RenderContext::default(), |key, object| {
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
pub fn report_problems(plan: &berth::plan::Plan, repo: &berth::Desired, color: bool) -> bool {
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
