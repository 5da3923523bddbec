//! Applying one revision: check it against the tenancy rule of now, plan it against the
//! cluster, and apply the plan, stopping in good order on shutdown, a lost Lease or the
//! cycle's deadline. Returns an [`Outcome`] for the cycle to record; writes nothing but
//! the apply itself and the workspaces' state in the status.

use super::state::{Outcome, Reconciler, STOPPING, Stop, Target, short};
use crate::cluster::{ApplyOptions, ApplyReport, LivePlan, PlanOptions};
use crate::render::RenderContext;
use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Reconciler {
    /// The cluster's tenancy rule (the ConfigMap berth-tenancy in berth's namespace).
    pub(super) async fn tenancy(&self) -> Result<crate::tenancy::Tenancy, String> {
        crate::cluster::tenancy::read(&self.cluster, &self.config.applyset.namespace)
            .await
            .map_err(|err| crate::cluster::error::chain(&err))
    }

    /// Apply `target`: within the tenancy rule of now, planned against the cluster, then
    /// sent, stopping in good order on shutdown, a lost Lease or the deadline.
    pub(super) async fn apply(
        &mut self,
        target: &Target,
        idle: &BTreeMap<String, String>,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        if let Err(outcome) = self.within_tenancy(target, deadline).await {
            return outcome;
        }
        let live = match self.plan(target, idle, deadline).await {
            Ok(live) => live,
            Err(outcome) => return outcome,
        };
        self.follow_rollouts(&live.plan.rollouts).await;
        if !live.plan.has_changes() {
            self.workspaces(&live, None, idle);
            return Outcome::Unchanged;
        }
        // Leadership may have moved while planning; and no apply starts after a signal.
        if !self.is_leader() || self.shutdown.is_cancelled() {
            return Outcome::Abandoned;
        }
        self.notify_applying(target);
        self.in_flight = false;
        let (result, why) = self.send(&live, deadline).await;
        let Some(result) = result else {
            // Not even a report: whatever was on its way is abandoned.
            self.in_flight = true;
            return self.stopped(why, None);
        };
        if let Ok(report) = &result
            && (report.stopped || why == Some(Stop::Lost))
        {
            self.in_flight = !report.abandoned.is_empty();
            return self.stopped(why, Some(report));
        }
        if why == Some(Stop::Lost) {
            return self.stopped(why, None);
        }
        match result {
            Err(_) if self.cluster.outage.message().is_some() => Outcome::Failed(
                "unavailable".into(),
                format!(
                    "{}: stopped the apply; nothing was pruned",
                    self.cluster.outage.message().unwrap_or_default()
                ),
            ),
            Err(err) => Outcome::Failed("apply".into(), crate::cluster::error::chain(&err)),
            Ok(report) => {
                self.workspaces(&live, Some(&report), idle);
                if !report.failed.is_empty() {
                    let list: Vec<String> = report
                        .failed
                        .iter()
                        .map(|(object, message)| format!("{object}: {message}"))
                        .collect();
                    let mut message = format!(
                        "{} object(s) failed: {}",
                        report.failed.len(),
                        list.join("; ")
                    );
                    if let Some(why) = &report.prune_skipped {
                        message.push_str(&format!("; {why}"));
                    }
                    return Outcome::Failed("apply".into(), message);
                }
                Outcome::Applied(Box::new(live), report)
            }
        }
    }

    /// Whether `target` is within the tenancy rule of now (`Err`: the failure to report).
    async fn within_tenancy(
        &self,
        target: &Target,
        deadline: tokio::time::Instant,
    ) -> Result<(), Outcome> {
        // The rule may have changed since the revision was accepted: nothing outside the
        // rule of now is applied.
        let tenancy = tokio::select! {
            tenancy = self.tenancy() => tenancy,
            _ = tokio::time::sleep_until(deadline) => {
                Err("reading the tenancy rule took longer than the cycle timeout".to_string())
            }
        };
        let refused: Vec<String> = match tenancy {
            Ok(tenancy) => crate::cluster::tenancy::refusals(&tenancy, &target.resolved)
                .into_iter()
                .map(|why| format!("{why} ({})", tenancy.describe()))
                .collect(),
            Err(message) => return Err(Outcome::Failed("tenancy".into(), message)),
        };
        if !refused.is_empty() {
            return Err(Outcome::Failed(
                "tenancy".into(),
                format!(
                    "revision {} is outside the tenancy rule; nothing was applied: {}",
                    short(&target.commit),
                    refused.join("; ")
                ),
            ));
        }
        Ok(())
    }

    /// The live plan of `target` (`Err`: the outcome of a plan that failed or was
    /// dropped).
    async fn plan(
        &self,
        target: &Target,
        idle: &BTreeMap<String, String>,
        deadline: tokio::time::Instant,
    ) -> Result<LivePlan, Outcome> {
        let options = PlanOptions {
            applyset: self.config.applyset.clone(),
        };
        let ctx = RenderContext {
            idle: idle.clone(),
            ..Default::default()
        };
        // A plan writes nothing: on shutdown, a lost Lease or the cycle's deadline it is
        // simply dropped.
        let plan =
            crate::cluster::plan_with_context(&self.cluster, &target.resolved, &options, ctx);
        let live = tokio::select! {
            live = plan => match live {
                Ok(live) => live,
                Err(err) => {
                    if let Some(cause) = self.cluster.outage.message() {
                        return Err(Outcome::Failed(
                            "unavailable".into(),
                            format!("{cause}: stopped planning; nothing was written"),
                        ));
                    }
                    return Err(Outcome::Failed("plan".into(), crate::cluster::error::chain(&err)));
                }
            },
            _ = self.shutdown.cancelled() => {
                tracing::info!("shutting down: dropped the plan in progress; nothing was written");
                return Err(Outcome::Abandoned);
            }
            _ = self.lost() => return Err(Outcome::Abandoned),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Outcome::Failed(
                    "timeout".into(),
                    format!(
                        "planning took longer than the cycle timeout ({}); nothing was written",
                        humantime(self.config.cycle_timeout)
                    ),
                ));
            }
        };
        Ok(live)
    }

    /// Send the plan's changes until they are done, or shutdown's grace, a lost Lease or
    /// the deadline stops them; then the report (`None`: not even one came back in time)
    /// and what stopped it.
    async fn send(
        &self,
        live: &LivePlan,
        deadline: tokio::time::Instant,
    ) -> (Option<Result<ApplyReport>>, Option<Stop>) {
        let stop = CancellationToken::new();
        let apply_options = ApplyOptions {
            applyset: self.config.applyset.clone(),
            force_conflicts: true,
            prune: self.config.prune,
            allow_mass_prune: self.config.allow_mass_prune,
            // Re-creating a StatefulSet for anything but claim growth is for a person to
            // decide (`berth apply --allow-replace`), never for the reconciler. (A Service
            // holds no data: its re-creation needs no flag.)
            allow_replace: false,
            progress_bar: false,
            quiet: true,
            stop: stop.clone(),
        };
        let mut why = None;
        let result = {
            let apply = crate::cluster::apply(&self.cluster, live, &apply_options);
            tokio::pin!(apply);
            let lost = self.lost();
            tokio::pin!(lost);
            let grace = async {
                self.shutdown.cancelled().await;
                tracing::info!(grace = ?self.config.shutdown_grace, "shutting down: letting the apply in flight finish");
                tokio::time::sleep(self.config.shutdown_grace).await;
            };
            tokio::pin!(grace);
            let finished = tokio::select! {
                result = &mut apply => Some(result),
                _ = &mut grace => {
                    why = Some(Stop::Shutdown);
                    None
                }
                _ = &mut lost => {
                    why = Some(Stop::Lost);
                    None
                }
                _ = tokio::time::sleep_until(deadline) => {
                    why = Some(Stop::Timeout);
                    None
                }
            };
            match finished {
                Some(result) => Some(result),
                // Stop sending; the requests in flight are abandoned at once.
                None => {
                    stop.cancel();
                    tokio::time::timeout(STOPPING, &mut apply).await.ok()
                }
            }
        };
        (result, why)
    }

    /// The outcome of an apply stopped early, said once in the log.
    fn stopped(&self, why: Option<Stop>, report: Option<&ApplyReport>) -> Outcome {
        let (applied, not_sent, in_flight) = report
            .map(|r| (r.done.len(), r.not_sent.len(), r.abandoned.len()))
            .unwrap_or_default();
        let counts = match report {
            Some(_) => format!(
                "{applied} applied, {in_flight} in flight (each applied whole or not at all), {not_sent} not sent"
            ),
            None => "the requests in flight were abandoned".to_string(),
        };
        if why.is_none()
            && let Some(cause) = self.cluster.outage.message()
        {
            // The control plane is gone: one failure of the cycle, said once.
            return Outcome::Failed(
                "unavailable".into(),
                format!("{cause}: stopped the apply ({counts}); nothing was pruned"),
            );
        }
        match why {
            Some(Stop::Timeout) => Outcome::Failed(
                "timeout".into(),
                format!(
                    "the cycle took longer than the cycle timeout ({}): stopped the apply ({counts}); \
                     nothing was pruned",
                    humantime(self.config.cycle_timeout)
                ),
            ),
            Some(Stop::Lost) => {
                tracing::warn!(
                    applied,
                    not_sent,
                    in_flight,
                    "lost the leader Lease: abandoned the apply in flight; the new leader re-plans"
                );
                Outcome::Abandoned
            }
            _ => {
                tracing::warn!(
                    applied,
                    not_sent,
                    in_flight,
                    "shutting down: abandoned the apply in flight; the next leader re-plans"
                );
                Outcome::Abandoned
            }
        }
    }
}

/// `5m`, `90s`, `1m30s`: a duration as the flags take it.
fn humantime(duration: Duration) -> String {
    let secs = duration.as_secs();
    match (secs / 60, secs % 60) {
        (0, _) => format!("{:?}", duration),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}
