//! Apply: server-side apply in dependency order, then prune what git no longer holds. The
//! ApplySet parent is widened before members are written and narrowed after pruning, so a
//! crash in between never hides a member from the next prune.

use super::applyset::{ADDITIONAL_NAMESPACES, ApplySet, split_list};
use super::diff::{LivePlan, api_for};
use super::kinds::kind_of;
use super::{Cluster, FIELD_MANAGER};
use crate::plan::{Action, Change};
use crate::render::key_of;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write as _;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub applyset: ApplySet,
    /// Take over fields other managers own.
    pub force_conflicts: bool,
    /// Delete members git no longer holds.
    pub prune: bool,
    /// Allow a prune that deletes more than half of what berth owns.
    pub allow_mass_prune: bool,
    /// Show a progress bar (on a terminal) instead of a line per object.
    pub progress_bar: bool,
    /// Report each object through `tracing` (structured logs) instead of stderr lines: the
    /// reconciler's mode.
    pub quiet: bool,
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// `(object, "created" | "updated" | "deleted")`, in order.
    pub done: Vec<(String, &'static str)>,
    /// The first failure; nothing was applied after it.
    pub failed: Option<(String, String)>,
    /// StatefulSets written, for waiting on their rollout.
    pub stateful_sets: Vec<(String, String)>,
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
    if !plan.conflicts.is_empty() && !options.force_conflicts {
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
    let set = &options.applyset;
    let desired_kinds: BTreeSet<String> = plan.desired.iter().filter_map(group_kind).collect();
    let desired_namespaces: BTreeSet<String> = plan
        .desired
        .iter()
        .filter_map(|o| key_of(o)?.namespace)
        .collect();

    let mut report = ApplyReport::default();
    let writes: Vec<_> = plan
        .plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Delete)
        .collect();
    let deletes: Vec<_> = if options.prune {
        plan.plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .collect()
    } else {
        Vec::new()
    };
    if writes.is_empty() && deletes.is_empty() {
        return Ok(report);
    }

    // Widen the parent first: it must list every kind and namespace a member may be in.
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
    write_parent(cluster, set, &kinds, &namespaces).await?;

    let progress = Progress::new(options.progress_bar, writes.len() + deletes.len());
    let progress = Progress {
        quiet: options.quiet,
        ..progress
    };
    let params = PatchParams {
        force: options.force_conflicts,
        ..PatchParams::apply(FIELD_MANAGER)
    };
    // Objects of one rank do not depend on each other: apply each rank as a wave of
    // concurrent requests, and the next rank only once the whole wave succeeded.
    for wave in waves(&writes, |c| crate::render::kind_rank(&c.object.kind)) {
        let requests: Vec<_> = wave
            .iter()
            .map(|change| {
                let cluster = cluster.clone();
                let params = params.clone();
                let object = change.desired.clone();
                let name = change.object.name.clone();
                async move {
                    let object = object.ok_or_else(|| "nothing to apply".to_string())?;
                    let api = api_for(&cluster, &object).map_err(|e| e.to_string())?;
                    api.patch(&name, &params, &Patch::Apply(&object))
                        .await
                        .map(|_| ())
                        .map_err(describe)
                }
            })
            .collect();
        let results = run_concurrently(requests.into_iter()).await;
        let verb = |c: &Change| {
            if c.action == Action::Create {
                "created"
            } else {
                "updated"
            }
        };
        if !record(&mut report, &progress, &wave, results, verb) {
            return Ok(report);
        }
    }

    // Deletes go workloads first (the plan orders them so), one rank at a time.
    for wave in waves(&deletes, |c| {
        u8::MAX - crate::render::kind_rank(&c.object.kind)
    }) {
        let requests: Vec<_> = wave
            .iter()
            .map(|change| {
                let cluster = cluster.clone();
                let object = json!({
                    "apiVersion": change.object.api_version,
                    "kind": change.object.kind,
                    "metadata": {"name": change.object.name, "namespace": change.object.namespace},
                });
                let name = change.object.name.clone();
                async move {
                    let api = api_for(&cluster, &object).map_err(|e| e.to_string())?;
                    match api.delete(&name, &DeleteParams::background()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(err) => Err(describe(err)),
                    }
                }
            })
            .collect();
        let results = run_concurrently(requests.into_iter()).await;
        if !record(&mut report, &progress, &wave, results, |_| "deleted") {
            return Ok(report);
        }
    }
    progress.finish();

    // Narrow the parent to what the set now holds.
    if options.prune {
        write_parent(cluster, set, &desired_kinds, &desired_namespaces).await?;
    }
    Ok(report)
}

/// Note what a wave did; false (with the first failure recorded) when any of it failed.
fn record(
    report: &mut ApplyReport,
    progress: &Progress,
    wave: &[&Change],
    results: Vec<Result<(), String>>,
    verb: impl Fn(&Change) -> &'static str,
) -> bool {
    for (change, result) in wave.iter().zip(results) {
        let object = change.object.to_string();
        match result {
            Ok(()) => {
                progress.done(&object, verb(change));
                report.done.push((object, verb(change)));
                if change.object.kind == "StatefulSet" && change.action != Action::Delete {
                    let namespace = change.object.namespace.clone().unwrap_or_default();
                    report
                        .stateful_sets
                        .push((namespace, change.object.name.clone()));
                }
            }
            Err(message) if report.failed.is_none() => report.failed = Some((object, message)),
            Err(_) => {}
        }
    }
    if report.failed.is_some() {
        progress.finish();
    }
    report.failed.is_none()
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

/// Run futures at most [`CONCURRENCY`] at a time; results in the futures' order.
async fn run_concurrently<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    futures::stream::iter(futures)
        .buffered(CONCURRENCY)
        .collect()
        .await
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
        .map_err(|e| anyhow::anyhow!(describe(e)))?;
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
    .map_err(|e| anyhow::anyhow!(describe(e)))?;
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
        .map_err(|e| anyhow::anyhow!(describe(e)))?;
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
        .map_err(|e| anyhow::anyhow!(describe(e)))?
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
            describe(e)
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
            describe(e)
        )
    })?;
    Ok(())
}

fn group_kind(object: &Value) -> Option<String> {
    let key = key_of(object)?;
    Some(kind_of(&key.api_version, &key.kind)?.group_kind())
}

/// A kube error in words; conflicts name the other field manager, as the server does.
pub(super) fn describe(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) if status.code == 409 && status.message.contains("conflict") => {
            format!(
                "{} (re-run with --force-conflicts to take these fields over)",
                status.message
            )
        }
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
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

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
