//! Prometheus metrics of the reconciler (prometheus-client), served on `/metrics`: what a
//! platform team alerts on — failing or slow reconciles, the revision in force, objects
//! written and pruned, restarts, API load and errors, git fetch errors, and what the
//! webhook answered.

use crate::cluster::api_errors::KINDS;
use crate::cluster::{ErrorCounter, RequestCounter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `applied`, `unchanged`, `failed`, `abandoned`, or a refused revision's reason:
    /// `invalid` (it does not validate), `unverified` (not signed by an allowed key).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabel {
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// `reconcile` (plans, applies, status) or `election` (the leader Lease).
    pub client: String,
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub client: String,
    /// `unreachable`, `timeout`, `throttled`, `server`, `forbidden`, `conflict`,
    /// `invalid`, `other` (see [`crate::cluster::api_errors`]).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectLabel {
    pub project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HaltLabel {
    pub project: String,
    /// `namespace/name` of the workspace that was not Ready in time.
    pub workspace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// What a client's counters hold: its name, requests by verb, errors by kind.
pub type Client<'a> = (&'a str, &'a RequestCounter, &'a ErrorCounter);

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    duration: Family<ResultLabel, Histogram, fn() -> Histogram>,
    revision: Family<RevisionLabel, Gauge>,
    objects: Family<ActionLabel, Counter>,
    restarts: Counter,
    api_requests: Family<VerbLabel, Counter>,
    api_errors: Family<ErrorLabel, Counter>,
    webhooks: Family<CodeLabel, Counter>,
    fetch_errors: Counter,
    leader: Gauge,
    suspended: Gauge,
    rollout_waiting: Family<ProjectLabel, Gauge>,
    rollout_halted: Family<HaltLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Kept in one piece: one registration per metric, in the order /metrics lists them;
    /// split, the names and help texts would be scattered over helpers that each
    /// register a few.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "berth_reconciles",
            "Reconcile cycles that planned against the cluster, by result",
            reconciles.clone(),
        );
        let duration = Family::<ResultLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "berth_reconcile_duration_seconds",
            "Duration of reconcile cycles (plan and apply), by result",
            duration.clone(),
        );
        let revision = Family::<RevisionLabel, Gauge>::default();
        registry.register(
            "berth_last_applied_revision_info",
            "The revision last applied (value 1, the revision as a label)",
            revision.clone(),
        );
        let objects = Family::<ActionLabel, Counter>::default();
        registry.register(
            "berth_objects",
            "Objects written by the reconciler: created, updated, pruned",
            objects.clone(),
        );
        let restarts = Counter::default();
        registry.register(
            "berth_workspace_restarts",
            "Workspaces restarted because their environment changed",
            restarts.clone(),
        );
        let api_requests = Family::<VerbLabel, Counter>::default();
        registry.register(
            "berth_api_requests",
            "Kubernetes API requests, by client and verb",
            api_requests.clone(),
        );
        let api_errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "berth_api_errors",
            "Kubernetes API requests that failed after berth's retries, by client and kind",
            api_errors.clone(),
        );
        let webhooks = Family::<CodeLabel, Counter>::default();
        registry.register(
            "berth_webhook_requests",
            "Answers of POST /hooks/git by HTTP status (202 accepted, 401 unauthenticated, \
             413 body too large, 408 too slow, 503 busy)",
            webhooks.clone(),
        );
        let fetch_errors = Counter::default();
        registry.register(
            "berth_git_fetch_errors",
            "Failed fetches (or reads) of the source",
            fetch_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "berth_leader",
            "Whether this instance holds the leader Lease and writes (1) or stands by (0)",
            leader.clone(),
        );
        let suspended = Gauge::default();
        registry.register(
            "berth_idle_workspaces",
            "Workspaces suspended because they are idle",
            suspended.clone(),
        );
        let rollout_waiting = Family::<ProjectLabel, Gauge>::default();
        registry.register(
            "berth_rollout_waiting_workspaces",
            "Workspaces whose restart waits for a later batch of their project's rollout",
            rollout_waiting.clone(),
        );
        let rollout_halted = Family::<HaltLabel, Gauge>::default();
        registry.register(
            "berth_rollout_halted",
            "Rollouts halted (value 1) because a restarted workspace was not Ready in time",
            rollout_halted.clone(),
        );
        Metrics {
            registry,
            rollout_waiting,
            rollout_halted,
            reconciles,
            duration,
            revision,
            objects,
            restarts,
            api_requests,
            api_errors,
            webhooks,
            fetch_errors,
            leader,
            suspended,
        }
    }

    pub fn reconciled(&self, result: &str, took: Duration) {
        let label = ResultLabel {
            result: result.to_string(),
        };
        self.reconciles.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    pub fn applied_revision(&self, revision: &str) {
        self.revision.clear();
        self.revision
            .get_or_create(&RevisionLabel {
                revision: revision.to_string(),
            })
            .set(1);
    }

    pub fn objects(&self, action: &str, count: usize) {
        if count > 0 {
            self.objects
                .get_or_create(&ActionLabel {
                    action: action.to_string(),
                })
                .inc_by(count as u64);
        }
    }

    pub fn restarts(&self, count: usize) {
        self.restarts.inc_by(count as u64);
    }

    pub fn webhook(&self, code: u16) {
        self.webhooks
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    pub fn fetch_error(&self) {
        self.fetch_errors.inc();
    }

    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The rollouts of the last plan: what waits, and what halted where.
    pub fn rollouts(&self, rollouts: &[crate::plan::rollout::Rollout]) {
        self.rollout_waiting.clear();
        self.rollout_halted.clear();
        for r in rollouts {
            let project = ProjectLabel {
                project: r.project.clone(),
            };
            self.rollout_waiting
                .get_or_create(&project)
                .inc_by(r.waiting as i64);
            if let Some(halt) = &r.halted {
                self.rollout_halted
                    .get_or_create(&HaltLabel {
                        project: r.project.clone(),
                        workspace: halt.workspace.clone(),
                    })
                    .set(1);
            }
        }
    }

    pub fn idle(&self, count: usize) {
        self.suspended.set(count as i64);
    }

    /// The text exposition, with API request and error counts brought up to date first.
    pub fn encode(&self, clients: &[Client<'_>]) -> String {
        let catch_up = |metric: &Counter, count: u64| {
            let seen = metric.get();
            if count > seen {
                metric.inc_by(count - seen);
            }
        };
        for (client, requests, errors) in clients {
            for (verb, count) in requests.snapshot() {
                let metric = self.api_requests.get_or_create(&VerbLabel {
                    client: client.to_string(),
                    verb,
                });
                catch_up(&metric, count);
            }
            let errors = errors.snapshot();
            // Every kind, zeros included, so a rate() has a series from the start.
            for kind in KINDS {
                let metric = self.api_errors.get_or_create(&ErrorLabel {
                    client: client.to_string(),
                    kind: kind.to_string(),
                });
                catch_up(&metric, errors.get(kind).copied().unwrap_or(0));
            }
        }
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::new();
        m.reconciled("applied", Duration::from_millis(30));
        m.applied_revision("abc");
        m.applied_revision("def");
        m.objects("created", 3);
        m.fetch_error();
        m.webhook(401);
        let text = m.encode(&[(
            "reconcile",
            &RequestCounter::default(),
            &ErrorCounter::default(),
        )]);
        for needle in [
            "berth_reconciles_total{result=\"applied\"} 1",
            "berth_reconcile_duration_seconds_count{result=\"applied\"} 1",
            "berth_last_applied_revision_info{revision=\"def\"} 1",
            "berth_objects_total{action=\"created\"} 3",
            "berth_git_fetch_errors_total 1",
            "berth_leader 0",
            "berth_webhook_requests_total{code=\"401\"} 1",
            "berth_api_errors_total{client=\"reconcile\",kind=\"unreachable\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert!(!text.contains("revision=\"abc\""), "{text}");
    }
}
