//! Mage's idle rule, as its instance manager applies it to a workspace
//! (`cluster_manager/manage.py::check_auto_termination`, mage-ai 0.9.80): it reads the
//! workspace's own status (`/api/statuses?_format=with_activity_details`, built by
//! `api/resources/StatusResource.py`) and stops the workspace only when it has no running
//! pipeline run and the later of its last user request and last scheduler activity is
//! older than `max_idle_seconds`. A status without a last user request is never stopped
//! (Mage's `fromisoformat(None)` raises, and the manager skips the workspace).
//!
//! The activity agent reads the same status and writes the time this rule counts from as
//! the activity Lease's `renewTime`, so berth's "idle for longer than `idleSeconds`" is
//! Mage's rule.

use k8s_openapi::jiff::{Timestamp, civil::DateTime, tz::TimeZone};
use serde::Deserialize;
use serde_json::Value;

/// The status route Mage's instance manager reads from each workspace (through `curl` in
/// the pod: `workload_manager.py::get_workload_activity`). It is a health check: reading
/// it is not a user request.
pub const STATUS_PATH: &str = "/api/statuses?_format=with_activity_details";

/// The fields of a workspace's status that the idle rule reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Status {
    /// Pipeline runs of the project's schedules that are running.
    #[serde(default)]
    pub active_pipeline_run_count: Value,
    /// `str(datetime)`: `2026-12-02 00:59:48.840573+00:00`.
    #[serde(default)]
    pub last_user_request: Option<String>,
    /// The last update of the project's latest pipeline run, often without an offset.
    #[serde(default)]
    pub last_scheduler_activity: Option<String>,
}

#[derive(Deserialize)]
struct Statuses {
    statuses: Vec<Status>,
}

/// The first status of the route's answer (`statuses[0]`, as the manager takes it).
pub fn parse(body: &str) -> Result<Status, String> {
    let answer: Statuses =
        serde_json::from_str(body).map_err(|e| format!("not Mage's status answer: {e}"))?;
    answer
        .statuses
        .into_iter()
        .next()
        .ok_or_else(|| "Mage's status answer lists no status".to_string())
}

/// What the rule makes of a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A pipeline run is running: never idle.
    Running,
    /// Idle time counts from here.
    Since(Timestamp),
    /// No readable last user request: Mage never stops the workspace.
    Never,
}

/// `datetime.fromisoformat(text).timestamp()`: a time without an offset is local time, which
/// is UTC in Mage's containers.
pub fn timestamp(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    let civil: DateTime = text.parse().ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The rule's reading of a status.
pub fn activity(status: &Status) -> Activity {
    if crate::mage::truthy(Some(&status.active_pipeline_run_count)) {
        return Activity::Running;
    }
    let Some(user) = status.last_user_request.as_deref().and_then(timestamp) else {
        return Activity::Never;
    };
    let scheduler = status
        .last_scheduler_activity
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(timestamp);
    Activity::Since(scheduler.map_or(user, |s| s.max(user)))
}

/// The time idleness counts from, as the activity agent writes it into the Lease at `now`:
/// now while a pipeline runs (or when Mage would never stop the workspace), else Mage's
/// latest activity (never after now).
pub fn renew_time(status: &Status, now: Timestamp) -> Timestamp {
    match activity(status) {
        Activity::Running | Activity::Never => now,
        Activity::Since(t) => t.min(now),
    }
}

/// Mage's comparison: idle when more than `seconds` have passed since `latest`
/// (`now - latest > max_idle`, strictly, to the microsecond). berth's reconciler judges the
/// activity Lease with the same function.
pub fn idle_longer_than(latest: Timestamp, now: Timestamp, seconds: i64) -> bool {
    now.as_microsecond() - latest.as_microsecond() > seconds.saturating_mul(1_000_000)
}

/// Whether Mage stops the workspace at `now`, idle after `max_idle_seconds` (0 or less:
/// never).
pub fn stops(status: &Status, now: Timestamp, max_idle_seconds: i64) -> bool {
    match activity(status) {
        Activity::Since(latest) => {
            max_idle_seconds > 0 && idle_longer_than(latest, now, max_idle_seconds)
        }
        Activity::Running | Activity::Never => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a real `mage start` of mage-ai 0.9.80 (tests/mage/examples.jsonl).
    const REAL: &str = r#"{"statuses": [{"is_instance_manager": false, "repo_path": "/tmp/mage/server/demo_project", "scheduler_status": "running", "project_type": "standalone", "active_pipeline_run_count": 2, "last_scheduler_activity": "2026-12-02 01:00:20", "last_user_request": "2026-12-02 00:59:48.840573+00:00"}], "metadata": {}}"#;

    #[test]
    fn a_real_status_reads_as_mage_reads_it() {
        let status = parse(REAL).unwrap();
        assert_eq!(activity(&status), Activity::Running);
        let idle = Status {
            active_pipeline_run_count: Value::from(0),
            ..status
        };
        assert_eq!(
            activity(&idle),
            Activity::Since("2026-12-02T01:00:20Z".parse().unwrap())
        );
        assert!(parse(r#"{"statuses": []}"#).is_err());
        assert!(parse("<html>").is_err());
    }
}
