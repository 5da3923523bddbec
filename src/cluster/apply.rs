//! Apply: server-side apply in dependency order, then prune what git no longer holds. The
//! ApplySet parent is widened before members are written and narrowed after pruning, so a
//! crash in between never hides a member from the next prune.

use super::applyset::{ADDITIONAL_NAMESPACES, ApplySet, split_list};
use super::diff::LivePlan;
use super::kinds::kind_of;
use super::kinds::{api_for, api_for_key};
use super::{Cluster, FIELD_MANAGER};
use crate::plan::{Action, Change};
use crate::render::{ObjectKey, ObjectText};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub applyset: ApplySet,
    /// Take over fields other managers own.
    pub force_conflicts: bool,
    /// Delete members git no longer holds.
    pub prune: bool,
    /// Allow a prune that deletes more than half of what berth owns.
    pub allow_mass_prune: bool,
    /// Re-create StatefulSets whose immutable fields changed other than by claim growth.
    pub allow_replace: bool,
    /// Show a progress bar (on a terminal) instead of a line per object.
    pub progress_bar: bool,
    /// Report each object through `tracing` (structured logs) instead of stderr lines: the
    /// reconciler's mode.
    pub quiet: bool,
    /// Cancelled to stop early (a signal, a deadline): no new request is sent, those in
    /// flight are abandoned, nothing is pruned, and the report says which is which.
    pub stop: CancellationToken,
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// `(object, "created" | "updated" | "re-created" | "released" | "deleted")`, in order.
    pub done: Vec<(String, &'static str)>,
    /// Every object that failed, with the reason in one line. The others were applied.
    pub failed: Vec<(String, String)>,
    /// Why nothing was pruned although the plan had deletes (a failure above).
    pub prune_skipped: Option<String>,
    /// Set when the apply was stopped early ([`ApplyOptions::stop`]).
    pub stopped: bool,
    /// Objects never sent, because the apply was stopped first.
    pub not_sent: Vec<String>,
    /// Objects whose request was in flight when the apply stopped: server-side apply
    /// writes an object whole or not at all, so each is either as planned or as before.
    pub abandoned: Vec<String>,
    /// StatefulSets written, for waiting on their rollout.
    pub stateful_sets: Vec<(String, String)>,
}

impl ApplyReport {
    pub fn count(&self, verb: &str) -> usize {
        self.done.iter().filter(|(_, v)| *v == verb).count()
    }

    /// `applied: 3 created, 1 updated, 0 deleted` (plus re-created, released and failed
    /// when there are any).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "applied: {} created, {} updated, {} deleted",
            self.count("created"),
            self.count("updated"),
            self.count("deleted")
        );
        for verb in ["re-created", "released"] {
            let n = self.count(verb);
            if n > 0 {
                s.push_str(&format!(", {n} {verb}"));
            }
        }
        if !self.failed.is_empty() {
            s.push_str(&format!("; {} failed", self.failed.len()));
        }
        if self.stopped {
            s.push_str(&format!(
                "; stopped early: {} not sent, {} in flight (each either applied whole or not at all)",
                self.not_sent.len(),
                self.abandoned.len()
            ));
        }
        s
    }
}

/// Refuse plans that would prune most of what berth owns: usually a wrong path or branch.
pub fn check_mass_prune(plan: &LivePlan, options: &ApplyOptions) -> Result<()> {
    let deletes = plan.plan.count(Action::Delete);
    let owned = plan.owned();
    if options.prune
        && deletes > 0
        && (deletes * 2 > owned || deletes == owned)
        && !options.allow_mass_prune
    {
        bail!(
            "refusing to prune {deletes} of the {owned} objects berth owns here (more than half); \
             if that is really meant, re-run with --allow-mass-prune"
        );
    }
    Ok(())
}

pub async fn apply(
    cluster: &Cluster,
    plan: &LivePlan,
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    check_mass_prune(plan, options)?;
    check_conflicts(plan, options)?;
    let set = &options.applyset;
    let (desired_kinds, desired_namespaces) = desired_scope(plan);

    let mut report = ApplyReport::default();
    // A change the plan could not make applicable fails here, and only it.
    for (change, problem) in plan.plan.problems() {
        report
            .failed
            .push((change.object.to_string(), problem.message.clone()));
    }
    let (writes, removals) = writes_and_removals(plan, options.prune);
    if writes.is_empty() && removals.is_empty() {
        return Ok(report);
    }

    widen_parent(cluster, plan, set, &desired_kinds, &desired_namespaces).await?;

    let progress = Progress::new(options.progress_bar, writes.len() + removals.len());
    let progress = Progress {
        quiet: options.quiet,
        ..progress
    };
    send_writes(cluster, plan, &writes, options, &progress, &mut report).await;
    mark_rollout_restarts(cluster, plan, &report).await;
    if report.stopped {
        list_not_sent(&mut report, writes.iter().chain(&removals));
        progress.finish();
        return Ok(report);
    }

    // Removals only after every write succeeded: pruning is the destructive half, and
    // after a failure the repository's state is not what the plan assumed.
    if !report.failed.is_empty() {
        if !removals.is_empty() {
            report.prune_skipped = Some(format!(
                "{} object(s) failed, so the {} removal(s) of the plan were not made",
                report.failed.len(),
                removals.len()
            ));
        }
        progress.finish();
        return Ok(report);
    }
    send_removals(cluster, &removals, options, &progress, &mut report).await;
    progress.finish();

    // Narrow the parent to what the set now holds.
    if options.prune && report.failed.is_empty() && !report.stopped {
        write_parent(cluster, set, &desired_kinds, &desired_namespaces).await?;
    }
    Ok(report)
}

/// The kinds and namespaces the desired objects span: what the ApplySet's parent lists.
fn desired_scope(plan: &LivePlan) -> (BTreeSet<String>, BTreeSet<String>) {
    let kinds = plan
        .desired
        .iter()
        .filter_map(|o| group_kind(&o.key))
        .collect();
    let namespaces = plan
        .desired
        .iter()
        .filter_map(|o| o.key.namespace.clone())
        .collect();
    (kinds, namespaces)
}

/// The plan's applicable writes, and its removals when pruning.
fn writes_and_removals(plan: &LivePlan, prune: bool) -> (Vec<&Change>, Vec<&Change>) {
    let applicable = || plan.plan.changes.iter().filter(|c| c.problem.is_none());
    let writes = applicable()
        .filter(|c| matches!(c.action, Action::Create | Action::Update | Action::Recreate))
        .collect();
    let removals = applicable()
        .filter(|c| prune && matches!(c.action, Action::Delete | Action::Release))
        .collect();
    (writes, removals)
}

/// The creates, updates and re-creations, one wave per kind rank. Objects of one rank do
/// not depend on each other: each wave is sent as concurrent requests. A failed object
/// does not stop the others: each one that can be applied is, and every failure is
/// reported. A stop ends it after the wave in flight.
async fn send_writes(
    cluster: &Cluster,
    plan: &LivePlan,
    writes: &[&Change],
    options: &ApplyOptions,
    progress: &Progress,
    report: &mut ApplyReport,
) {
    let params = PatchParams {
        force: options.force_conflicts,
        ..PatchParams::apply(FIELD_MANAGER)
    };
    // A live plan's creates carry no object: theirs is the plan's desired one of the key.
    let desired_by_key: HashMap<&ObjectKey, &ObjectText> =
        plan.desired.iter().map(|o| (&o.key, o)).collect();
    for wave in waves(writes, |c| crate::render::kind_rank(&c.object.kind)) {
        let requests: Vec<_> = wave
            .iter()
            .map(|change| {
                let cluster = cluster.clone();
                let params = params.clone();
                let allow_replace = options.allow_replace;
                let text = desired_by_key.get(&change.object).copied();
                async move { write_one(&cluster, change, text, &params, allow_replace).await }
            })
            .collect();
        let results = run_until_stopped(requests, &options.stop, &cluster.outage).await;
        let verb = |c: &Change| match c.action {
            Action::Create => "created",
            Action::Recreate => "re-created",
            _ => "updated",
        };
        record(report, progress, &wave, results, verb);
        if report.stopped {
            break;
        }
    }
}

/// The removals, workloads first (the plan orders them so), one rank at a time.
async fn send_removals(
    cluster: &Cluster,
    removals: &[&Change],
    options: &ApplyOptions,
    progress: &Progress,
    report: &mut ApplyReport,
) {
    for wave in waves(removals, |c| {
        u8::MAX - crate::render::kind_rank(&c.object.kind)
    }) {
        let requests: Vec<_> = wave
            .iter()
            .map(|change| {
                let cluster = cluster.clone();
                let change = (*change).clone();
                async move { remove_one(&cluster, &change).await }
            })
            .collect();
        let results = run_until_stopped(requests, &options.stop, &cluster.outage).await;
        let verb = |c: &Change| {
            if c.action == Action::Release {
                "released"
            } else {
                "deleted"
            }
        };
        record(report, progress, &wave, results, verb);
        if report.stopped {
            break;
        }
    }
}

/// Refuse a plan whose objects have fields other managers own, unless told to take them.
fn check_conflicts(plan: &LivePlan, options: &ApplyOptions) -> Result<()> {
    if plan.conflicts.is_empty() || options.force_conflicts {
        return Ok(());
    }
    let list: Vec<String> = plan
        .conflicts
        .iter()
        .map(|(o, m)| format!("  {o}: {m}"))
        .collect();
    bail!(
        "{} object(s) conflict with other field managers; nothing was applied:\n{}\n\
         re-run with --force-conflicts to take those fields over",
        plan.conflicts.len(),
        list.join("\n")
    );
}

/// The ApplySet parent widened before any write: it must list every kind and namespace a
/// member may be in, the ones it held and the ones the plan adds.
async fn widen_parent(
    cluster: &Cluster,
    plan: &LivePlan,
    set: &ApplySet,
    desired_kinds: &BTreeSet<String>,
    desired_namespaces: &BTreeSet<String>,
) -> Result<()> {
    ensure_namespace(cluster, &set.namespace).await?;
    let mut kinds = plan.inventory.parent_group_kinds();
    kinds.extend(desired_kinds.iter().cloned());
    let mut namespaces = split_list(
        plan.inventory
            .parent
            .as_ref()
            .and_then(|p| p.pointer("/metadata/annotations"))
            .and_then(|a| a.get(ADDITIONAL_NAMESPACES))
            .and_then(Value::as_str),
    );
    namespaces.extend(desired_namespaces.iter().cloned());
    write_parent(cluster, set, &kinds, &namespaces).await
}

/// One create, update or re-creation, sent as a server-side apply of the desired object
/// (a live plan's creates carry none: theirs is the plan's desired text).
async fn write_one(
    cluster: &Cluster,
    change: &Change,
    text: Option<&ObjectText>,
    params: &PatchParams,
    allow_replace: bool,
) -> Result<(), String> {
    if change.action == Action::Recreate {
        let needs_flag = change
            .recreate
            .as_ref()
            .is_none_or(|r| r.needs_allow_replace);
        if needs_flag && !allow_replace {
            return Err("must be re-created (immutable fields changed); \
                        re-run with --allow-replace to do it"
                .to_string());
        }
        return super::destructive::recreate(cluster, change, params).await;
    }
    let api = api_for_key(cluster, &change.object).map_err(|e| e.to_string())?;
    let name = &change.object.name;
    let applied = match (&change.desired, text) {
        (Some(object), _) => api.patch(name, params, &Patch::Apply(object)).await,
        (None, Some(text)) => api.patch(name, params, &Patch::Apply(text.json())).await,
        (None, None) => return Err("nothing to apply".to_string()),
    };
    applied.map(|_| ()).map_err(|e| describe(cluster, &e))
}

/// One prune: deleted in the background (already gone is done), or released from the
/// set without deleting it.
async fn remove_one(cluster: &Cluster, change: &Change) -> Result<(), String> {
    if change.action == Action::Release {
        return super::destructive::release(cluster, change).await;
    }
    let object = json!({
        "apiVersion": change.object.api_version,
        "kind": change.object.kind,
        "metadata": {"name": change.object.name, "namespace": change.object.namespace},
    });
    let api = api_for(cluster, &object).map_err(|e| e.to_string())?;
    match api
        .delete(&change.object.name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(err) => Err(describe(cluster, &err)),
    }
}

/// After a stop: every change of the plan that was neither done, failed, in flight nor
/// already listed is listed as not sent.
fn list_not_sent<'a>(report: &mut ApplyReport, changes: impl Iterator<Item = &'a &'a Change>) {
    let sent: BTreeSet<String> = report
        .done
        .iter()
        .map(|(o, _)| o.clone())
        .chain(report.failed.iter().map(|(o, _)| o.clone()))
        .chain(report.abandoned.iter().cloned())
        .chain(report.not_sent.iter().cloned())
        .collect();
    report.not_sent.extend(
        changes
            .map(|c| c.object.to_string())
            .filter(|o| !sent.contains(o)),
    );
}

/// Mark the restarts the rollout gate admitted and the API server took, so the next plan
/// knows when each began (its progress deadline, its debounce). A mark that cannot be
/// written is logged: the restart happened, and its deadline is not enforced.
async fn mark_rollout_restarts(cluster: &Cluster, plan: &LivePlan, report: &ApplyReport) {
    let applied: BTreeSet<&str> = report.done.iter().map(|(o, _)| o.as_str()).collect();
    let started: Vec<String> = plan
        .plan
        .changes
        .iter()
        .filter(|c| crate::plan::rollout::rolls_pods(c))
        .filter(|c| applied.contains(c.object.to_string().as_str()))
        .map(|c| {
            format!(
                "{}/{}",
                c.object.namespace.as_deref().unwrap_or(""),
                c.object.name
            )
        })
        .collect();
    if started.is_empty() {
        return;
    }
    if let Err(err) = super::rollout::mark_restarted(cluster, &started).await {
        tracing::warn!(error = %super::error::chain(&err), "marking restarts for the rollout failed");
    }
    let stuck: Vec<&String> = plan
        .plan
        .rollouts
        .iter()
        .flat_map(|r| &r.stuck)
        .filter(|w| started.contains(w))
        .collect();
    if let Err(err) = super::rollout::replace_stuck_pods(cluster, &stuck).await {
        tracing::warn!(error = %super::error::chain(&err), "replacing pods stuck on the old template failed");
    }
}

/// Note what a wave did: each success, and each failure with its reason.
fn record(
    report: &mut ApplyReport,
    progress: &Progress,
    wave: &[&Change],
    results: Vec<Outcome>,
    verb: impl Fn(&Change) -> &'static str,
) {
    for (change, result) in wave.iter().zip(results) {
        let object = change.object.to_string();
        let result = match result {
            Outcome::Done(result) => result,
            Outcome::NotSent => {
                report.stopped = true;
                report.not_sent.push(object);
                continue;
            }
            Outcome::Abandoned => {
                report.stopped = true;
                report.abandoned.push(object);
                continue;
            }
        };
        match result {
            Ok(()) => {
                progress.done(&object, verb(change));
                report.done.push((object, verb(change)));
                if change.object.kind == "StatefulSet"
                    && matches!(
                        change.action,
                        Action::Create | Action::Update | Action::Recreate
                    )
                {
                    let namespace = change.object.namespace.clone().unwrap_or_default();
                    report
                        .stateful_sets
                        .push((namespace, change.object.name.clone()));
                }
            }
            Err(message) => {
                progress.failed(&object, &message);
                report.failed.push((object, message));
            }
        }
    }
}

/// Requests in flight at once during an apply.
const CONCURRENCY: usize = 16;

/// Consecutive runs of changes with the same rank, in order.
fn waves<'a, T>(items: &[&'a T], rank: impl Fn(&T) -> u8) -> Vec<Vec<&'a T>> {
    let mut out: Vec<Vec<&'a T>> = Vec::new();
    let mut last = None;
    for item in items {
        let r = rank(item);
        if last != Some(r) {
            out.push(Vec::new());
            last = Some(r);
        }
        if let Some(wave) = out.last_mut() {
            wave.push(*item);
        }
    }
    out
}

/// What became of one request of a wave.
enum Outcome {
    Done(Result<(), String>),
    /// Stopped before it was sent.
    NotSent,
    /// Sent, and stopped before the answer came.
    Abandoned,
}

/// Run a wave's requests, at most [`CONCURRENCY`] at a time, until they are done, `stop`
/// is cancelled or the control plane is found gone ([`super::outage`]); outcomes in the
/// requests' order. After an outage, a request that failed with the outage's error was
/// abandoned (sent or not: either way it is whole or not at all), never a failure of its
/// own: the cause is said once, by the caller.
async fn run_until_stopped<F>(
    requests: Vec<F>,
    stop: &CancellationToken,
    outage: &super::outage::Outage,
) -> Vec<Outcome>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    use futures::StreamExt;
    let started: Vec<std::sync::atomic::AtomicBool> =
        requests.iter().map(|_| Default::default()).collect();
    let mut outcomes: Vec<Option<Result<(), String>>> = requests.iter().map(|_| None).collect();
    {
        let started = &started;
        let mut stream = futures::stream::iter(requests.into_iter().enumerate().map(
            |(i, request)| async move {
                started[i].store(true, std::sync::atomic::Ordering::SeqCst);
                (i, request.await)
            },
        ))
        .buffer_unordered(CONCURRENCY);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = outage.tripped() => break,
                next = stream.next() => match next {
                    Some((i, result)) => outcomes[i] = Some(result),
                    None => break,
                },
            }
        }
    }
    outcomes
        .into_iter()
        .zip(started)
        .map(|(outcome, started)| match outcome {
            Some(Err(message)) if outage.is_message(&message) => Outcome::Abandoned,
            Some(result) => Outcome::Done(result),
            None if started.into_inner() => Outcome::Abandoned,
            None => Outcome::NotSent,
        })
        .collect()
}

/// Restart one workspace now: apply its StatefulSet with the current env hash and, if the
/// hash did not change, stamp `berth/restarted-at` under a separate field manager so the
/// next apply does not take the stamp away again.
pub async fn restart(
    cluster: &Cluster,
    desired: &[Value],
    workspace: &str,
    now: &str,
) -> Result<String> {
    let sts = desired
        .iter()
        .find(|o| {
            o.get("kind").and_then(Value::as_str) == Some("StatefulSet")
                && o.pointer("/metadata/name").and_then(Value::as_str) == Some(workspace)
        })
        .with_context(|| format!("no workspace named `{workspace}` in the repository"))?;
    let api = api_for(cluster, sts)?;
    let live = api
        .get_opt(workspace)
        .await
        .map_err(|e| anyhow::anyhow!(describe(cluster, &e)))?;
    let hash = |o: &Value| {
        o.pointer("/spec/template/metadata/annotations")
            .and_then(|a| a.get(crate::render::ENV_HASH))
            .cloned()
    };
    let live_hash = live
        .as_ref()
        .and_then(|l| serde_json::to_value(l).ok())
        .and_then(|l| hash(&l));
    api.patch(
        workspace,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(sts),
    )
    .await
    .map_err(|e| anyhow::anyhow!(describe(cluster, &e)))?;
    if live_hash.is_some() && live_hash == hash(sts) {
        let stamp = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": workspace, "namespace": sts.pointer("/metadata/namespace")},
            "spec": {"template": {"metadata": {"annotations": {"berth/restarted-at": now}}}},
        });
        api.patch(
            workspace,
            &PatchParams::apply("berth-restart").force(),
            &Patch::Apply(&stamp),
        )
        .await
        .map_err(|e| anyhow::anyhow!(describe(cluster, &e)))?;
        return Ok(format!(
            "{workspace}: restarted (environment unchanged; stamped berth/restarted-at)"
        ));
    }
    Ok(format!(
        "{workspace}: restarted with its current environment"
    ))
}

async fn ensure_namespace(cluster: &Cluster, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    if api
        .get_opt(name)
        .await
        .map_err(|e| anyhow::anyhow!(describe(cluster, &e)))?
        .is_some()
    {
        return Ok(());
    }
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {crate::render::MANAGED_BY: "berth"}},
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&namespace),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "creating namespace {name} for the ApplySet parent: {}",
            describe(cluster, &e)
        )
    })?;
    Ok(())
}

async fn write_parent(
    cluster: &Cluster,
    set: &ApplySet,
    kinds: &BTreeSet<String>,
    namespaces: &BTreeSet<String>,
) -> Result<()> {
    let parent = set.parent(kinds, namespaces);
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client.clone(), &set.namespace);
    api.patch(
        &set.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&parent),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "writing ApplySet parent {}/{}: {}",
            set.namespace,
            set.name,
            describe(cluster, &e)
        )
    })?;
    Ok(())
}

fn group_kind(key: &crate::render::ObjectKey) -> Option<String> {
    Some(kind_of(&key.api_version, &key.kind)?.group_kind())
}

/// A kube error in words; conflicts say how to take the fields over.
pub(super) fn describe(cluster: &Cluster, err: &kube::Error) -> String {
    let text = cluster.describe(err);
    match err {
        kube::Error::Api(status) if status.code == 409 && status.message.contains("conflict") => {
            format!("{text} (re-run with --force-conflicts to take these fields over)")
        }
        _ => text,
    }
}

/// A progress bar on a terminal, a line per object elsewhere (CI logs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(bar: bool, total: usize) -> Progress {
        let bar = bar.then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        Progress { bar, quiet: false }
    }

    fn done(&self, object: &str, verb: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{verb} {object}"));
                bar.inc(1);
            }
            None if self.quiet => tracing::info!(%object, "{verb}"),
            None => {
                // A closed stderr must not stop an apply half-way.
                let _ = writeln!(std::io::stderr().lock(), "{verb:>8}  {object}");
            }
        }
    }

    fn failed(&self, object: &str, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("  failed  {object}: {message}")),
            None if self.quiet => tracing::warn!(%object, "failed: {message}"),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "  failed  {object}: {message}");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
