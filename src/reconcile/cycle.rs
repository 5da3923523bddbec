//! One cycle of the reconciler: read the source's latest revision, judge a new one
//! (signature, validation, tenancy), read which workspaces are idle, then plan and apply
//! the revision in force and record how that went (success, failure with backoff). The
//! loop ([`super::run`]) calls [`Reconciler::cycle`] once per trigger; the apply itself is
//! in [`super::apply`], what is reported in [`super::report`].

use super::idle;
use super::state::Reconciler;
use super::state::{Outcome, Refusal, Refused, Target, Trigger, short};
use super::status::{self, ErrorInfo, RevisionInfo};
use crate::cluster::{ApplyReport, Cluster, LivePlan};
use crate::source::{Revision, Verdict};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Reconciler {
    /// One cycle, bounded by `--cycle-timeout`; afterwards, whether it reached the API
    /// server (for /readyz).
    pub(super) async fn cycle(&mut self, trigger: Trigger) {
        let requests = |c: &Cluster| c.requests.snapshot().values().sum::<u64>();
        // Each cycle judges the control plane anew: an outage found by the last one is
        // forgotten ([`crate::cluster::outage`]).
        self.cluster.outage.reset();
        let before = (requests(&self.cluster), self.cluster.errors.unavailable());
        let deadline = tokio::time::Instant::now() + self.config.cycle_timeout;
        self.cycle_within(trigger, deadline).await;
        if requests(&self.cluster) > before.0 {
            let reached = self.cluster.errors.unavailable() == before.1;
            self.shared.api_reached.store(reached, Ordering::Relaxed);
        }
    }

    /// The steps of one cycle, each in its own method below.
    async fn cycle_within(&mut self, trigger: Trigger, deadline: tokio::time::Instant) {
        let leader = self.is_leader();
        self.shared.metrics.leader(leader);
        if trigger == Trigger::Retry {
            self.retry_at = None;
        }
        // 1. The source's latest revision.
        let Some(revision) = self.read_source(leader).await else {
            return;
        };
        if !leader {
            return;
        }

        // 2. A new revision is checked and validated; a refused one is reported and never
        // applied.
        let fresh = [&self.applied, &self.pending]
            .iter()
            .all(|t| t.as_ref().is_none_or(|t| t.commit != revision.commit))
            && self
                .refused
                .as_ref()
                .is_none_or(|r| r.commit != revision.commit || r.signature != revision.signature);
        if fresh {
            self.evaluate(&revision).await;
        }
        let Some(target) = self.pending.clone().or_else(|| self.applied.clone()) else {
            self.write_status().await;
            return;
        };

        // 3. Idle workspaces: one LIST of Leases.
        let idle = self.read_idle(&target, deadline).await;
        let full = self.pending.is_some()
            || idle != self.idle
            || self.first
            || matches!(
                trigger,
                Trigger::Drift | Trigger::Retry | Trigger::Leadership
            );
        if !full {
            self.refresh_workspaces().await;
            self.notify_progress();
            self.write_status().await;
            return;
        }
        self.first = false;
        self.next_drift = Instant::now() + self.config.drift_interval;

        // 4. Plan and apply.
        self.apply_and_record(&target, trigger, &idle, deadline)
            .await;
        self.write_status().await;
    }

    /// Step 1: the source's latest revision, recorded as the last seen (`None`: it could
    /// not be read; the leader records the failure).
    async fn read_source(&mut self, leader: bool) -> Option<Revision> {
        let revision = match self.tracker.latest().await {
            Ok(revision) => revision,
            Err(err) => {
                let message = crate::cluster::error::chain(&err);
                tracing::warn!(error = %message, "reading the source failed");
                self.shared.metrics.fetch_error();
                if leader {
                    self.fail("fetch", None, message).await;
                }
                return None;
            }
        };
        self.shared.ready.store(true, Ordering::Relaxed);
        let signed_by = signer(&revision);
        self.shared.set_status(|s| {
            // A new commit, or the same one judged anew (the allowed signers changed).
            if s.last_seen.as_ref().map(|r| (&r.revision, &r.signer))
                != Some((&revision.commit, &signed_by))
            {
                s.last_seen = Some(RevisionInfo {
                    revision: revision.commit.clone(),
                    summary: revision.summary.clone(),
                    at: status::now(),
                    signer: signed_by,
                });
            }
            if s.error.as_ref().is_some_and(|e| e.kind == "fetch") {
                s.error = None;
            }
        });
        Some(revision)
    }

    /// Step 3: the idle workspaces, by one LIST of Leases; when that fails or takes the
    /// whole cycle, those of the last cycle.
    async fn read_idle(
        &self,
        target: &Target,
        deadline: tokio::time::Instant,
    ) -> BTreeMap<String, String> {
        match tokio::time::timeout_at(
            deadline,
            idle::idle_workspaces(&self.cluster, &self.config.applyset, &target.idle_timeouts),
        )
        .await
        {
            Ok(Ok(idle)) => idle,
            Ok(Err(err)) => {
                tracing::warn!(error = %crate::cluster::error::chain(&err), "reading activity Leases failed");
                self.idle.clone()
            }
            Err(_) => {
                tracing::warn!(cycle_timeout = ?self.config.cycle_timeout, "reading activity Leases took the whole cycle");
                self.idle.clone()
            }
        }
    }

    /// Step 4: plan and apply the revision in force, and record the outcome (metrics,
    /// success or failure).
    async fn apply_and_record(
        &mut self,
        target: &Target,
        trigger: Trigger,
        idle: &BTreeMap<String, String>,
        deadline: tokio::time::Instant,
    ) {
        let started = Instant::now();
        let outcome = self.apply(target, idle, deadline).await;
        let took = started.elapsed();
        self.notify_outcome(target, &outcome);
        match outcome {
            Outcome::Abandoned => {
                self.shared.metrics.reconciled("abandoned", took);
            }
            Outcome::Failed(kind, message) => {
                self.shared.metrics.reconciled("failed", took);
                self.fail(&kind, Some(target.commit.clone()), message).await;
            }
            Outcome::Unchanged => {
                self.shared.metrics.reconciled("unchanged", took);
                self.succeeded(target, trigger, idle, None).await;
            }
            Outcome::Applied(live, report) => {
                self.shared.metrics.reconciled("applied", took);
                self.succeeded(target, trigger, idle, Some((*live, report)))
                    .await;
            }
        }
    }

    /// Check and validate a new revision: signed as required and valid → pending (applied
    /// next), else refused. The signature comes first: an unsigned revision is not even
    /// loaded. It is validated against the cluster's tenancy rule; when that cannot be
    /// read, the revision is neither accepted nor refused, and the next cycle tries again.
    async fn evaluate(&mut self, revision: &Revision) {
        if let Some(Verdict::Refused(why)) = &revision.signature {
            let message = format!(
                "revision {} is not signed by an allowed key ({why}); the last good revision \
                 stays in force",
                short(&revision.commit)
            );
            self.refuse(revision, Refusal::Unverified, message).await;
            return;
        }
        let tenancy = match self.tenancy().await {
            Ok(tenancy) => tenancy,
            Err(message) => {
                self.notify_unreachable(&revision.commit, &message);
                self.fail("tenancy", Some(revision.commit.clone()), message)
                    .await;
                return;
            }
        };
        let files = revision.files.clone();
        // Validated, not rendered: each plan renders with the cluster's facts; here only
        // the idle timeouts are read from the rendered StatefulSets, one at a time.
        let desired = crate::validated_with(files, Some(&tenancy));
        if desired.has_errors() {
            let errors: Vec<String> = desired
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            let message = format!(
                "revision {} is invalid ({} error(s)); the last good revision stays in force:\n{}",
                short(&revision.commit),
                errors.len(),
                errors.join("\n")
            );
            self.refuse(revision, Refusal::Invalid, message).await;
            return;
        }
        tracing::info!(revision = %revision.commit, summary = %revision.summary, "new revision");
        self.pending = Some(Target {
            commit: revision.commit.clone(),
            summary: revision.summary.clone(),
            idle_timeouts: Arc::new(idle::idle_timeouts(&desired.resolved)),
            resolved: Arc::new(desired.resolved),
            signer: signer(revision),
        });
        // A good head replaces a refused one.
        self.refused = None;
        self.backoff.reset();
        self.retry_at = None;
    }

    /// The one way a revision is refused, whatever the reason: never applied (the last
    /// good revision stays in force), reported once in the log, an Event, the status and
    /// the metric.
    async fn refuse(&mut self, revision: &Revision, refusal: Refusal, message: String) {
        tracing::error!(revision = %revision.commit, kind = refusal.kind(), "{message}");
        self.notify_refused(revision, refusal, &message);
        self.refused = Some(Refused {
            commit: revision.commit.clone(),
            signature: revision.signature.clone(),
        });
        self.shared
            .metrics
            .reconciled(refusal.kind(), Duration::ZERO);
        self.event(true, refusal.reason(), &message).await;
        self.shared.set_status(|s| {
            s.error = Some(ErrorInfo {
                kind: refusal.kind().into(),
                revision: Some(revision.commit.clone()),
                message,
                since: status::now(),
            });
        });
    }

    /// A cycle's apply succeeded (or had nothing to do): backoff reset, the revision in
    /// force, and what changed reported ([`super::report`]).
    async fn succeeded(
        &mut self,
        target: &Target,
        trigger: Trigger,
        idle: &BTreeMap<String, String>,
        applied: Option<(LivePlan, ApplyReport)>,
    ) {
        self.backoff.reset();
        self.retry_at = None;
        let new_revision = self.pending.take().is_some();
        let summary = applied
            .as_ref()
            .map(|(live, report)| self.count_applied(live, report))
            .unwrap_or_default();
        if new_revision {
            self.applied = Some(target.clone());
            self.shared.metrics.applied_revision(&target.commit);
            self.report_applied(target, &summary).await;
        } else if let Some((live, _)) = &applied {
            self.report_drift(target, trigger, live, idle).await;
        }
        self.report_idle(idle).await;
        self.idle = idle.clone();
        self.shared.metrics.idle(idle.len());
        // The error of a refused head stays until a good revision replaces it.
        let refused = self.refused.as_ref().map(|r| r.commit.clone());
        self.shared.set_status(|s| {
            if s.error.as_ref().is_some_and(|e| {
                !Refusal::is_refusal(&e.kind) || e.revision.as_deref() != refused.as_deref()
            }) {
                s.error = None;
            }
        });
    }

    /// The metrics of what an apply did, and its one-line summary for the log and the
    /// Event (`3 created, 1 updated, 0 deleted; restarted a, b`).
    fn count_applied(&self, live: &LivePlan, report: &ApplyReport) -> String {
        let (created, updated, deleted) = (
            count(report, "created"),
            count(report, "updated"),
            count(report, "deleted"),
        );
        self.shared.metrics.objects("created", created);
        self.shared.metrics.objects("updated", updated);
        self.shared.metrics.objects("pruned", deleted);
        let restarted: Vec<&str> = live
            .plan
            .restarts
            .iter()
            .filter(|r| r.pending.is_none())
            .map(|r| r.workspace.as_str())
            .collect();
        self.shared.metrics.restarts(restarted.len());
        let mut summary = format!("{created} created, {updated} updated, {deleted} deleted");
        if !restarted.is_empty() {
            summary.push_str(&format!("; restarted {}", restarted.join(", ")));
        }
        summary
    }

    async fn fail(&mut self, kind: &str, revision: Option<String>, message: String) {
        // Whatever step met it, a control plane found gone is one kind of failure.
        let kind = if self.cluster.outage.message().is_some() {
            "unavailable"
        } else {
            kind
        };
        let delay = self.backoff.fail();
        self.retry_at = Some(Instant::now() + delay);
        tracing::error!(kind, error = %message, retry_in = ?delay, "reconcile failed");
        let repeated = self
            .shared
            .status()
            .error
            .is_some_and(|e| e.kind == kind && e.message == message);
        if !repeated {
            self.event(true, "ReconcileFailed", &format!("{kind}: {message}"))
                .await;
        }
        self.shared.set_status(|s| {
            let since = match &s.error {
                Some(e) if e.kind == kind && e.message == message => e.since.clone(),
                _ => status::now(),
            };
            s.error = Some(ErrorInfo {
                kind: kind.to_string(),
                revision,
                message,
                since,
            });
        });
        self.write_status().await;
    }
}

fn count(report: &ApplyReport, verb: &str) -> usize {
    report.done.iter().filter(|(_, v)| *v == verb).count()
}

/// Who signed a revision, for the status (`alice@example.com (ssh-ed25519 SHA256:…)`).
fn signer(revision: &Revision) -> Option<String> {
    match &revision.signature {
        Some(Verdict::Signed(signer)) => Some(signer.to_string()),
        _ => None,
    }
}
