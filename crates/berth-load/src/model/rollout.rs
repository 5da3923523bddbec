//! How a change that restarts workspaces rolls through a fleet: in batches, each waiting
//! for the one before it to be Ready.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A rollout policy. On a Project it applies to every workspace of the project; a
/// workspace's `lifecycle.rollout` overrides it field by field; a Policy's
/// `maxRolloutUnavailable` bounds `maxUnavailable`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollout {
    /// How many workspaces of the project may be restarting (not Ready) at once: a count
    /// (`5`) or a share of the project's workspaces (`"10%"`, rounded down, at least 1).
    /// Default `10%`. Workspaces that override it roll as a group of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<Budget>,
    /// Seconds a restarted workspace has to become Ready. A batch not Ready in time halts
    /// the rollout: the remaining workspaces keep their running pods. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u64>,
    /// A workspace is restarted at most once in this many seconds: a Secret that changes
    /// again and again restarts it once per interval, with the latest value. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_restart_interval_seconds: Option<u64>,
}

/// A number of workspaces, or a share of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Budget {
    Count(u32),
    /// A percentage, written `"25%"`.
    Percent(String),
}

impl Budget {
    /// How many of `total` workspaces this allows at once (at least 1), or `None` when a
    /// percentage is not written as one (`"ten"`, `"150%"`).
    pub fn of(&self, total: usize) -> Option<usize> {
        match self {
            Budget::Count(n) => Some((*n as usize).max(1)),
            Budget::Percent(text) => {
                let percent: usize = text.strip_suffix('%')?.trim().parse().ok()?;
                (percent <= 100).then(|| (total * percent / 100).max(1))
            }
        }
    }

    /// Whether this allows more at once than `other` would, out of `total`.
    pub fn exceeds(&self, other: &Budget, total: usize) -> bool {
        match (self.of(total), other.of(total)) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Count(n) => write!(f, "{n}"),
            Budget::Percent(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn a_budget_is_a_count_or_a_share_of_at_least_one() {
        assert_eq!(Budget::Count(5).of(1000), Some(5));
        assert_eq!(Budget::Count(0).of(1000), Some(1));
        assert_eq!(Budget::Percent("10%".into()).of(1000), Some(100));
        assert_eq!(Budget::Percent("10%".into()).of(5), Some(1));
        assert_eq!(Budget::Percent("ten".into()).of(5), None);
        assert_eq!(Budget::Percent("150%".into()).of(5), None);
        assert!(Budget::Percent("50%".into()).exceeds(&Budget::Count(20), 100));
        assert!(!Budget::Count(20).exceeds(&Budget::Percent("50%".into()), 100));
    }
}
