//! How `berth watch` runs: the settings the command line (and tests) hand to [`super::start`].
//! Apart from the loop so every file of the reconciler can read them without importing
//! the loop.

use super::leader::LeaderConfig;
use crate::cluster::applyset::ApplySet;
use crate::source::{SignaturePolicy, SourceSpec};
use std::net::SocketAddr;
use std::time::Duration;

/// How `berth watch` runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceSpec,
    pub applyset: ApplySet,
    /// How often the source is fetched (default 30 s).
    pub poll_interval: Duration,
    /// How often the cluster is compared with the last good revision and healed (5 min).
    pub drift_interval: Duration,
    /// This instance's name (the pod name in a cluster).
    pub identity: String,
    /// Leader election; `None` runs as the only writer.
    pub leader: Option<LeaderConfig>,
    /// Where to serve /healthz, /readyz, /metrics and /hooks/git; `None`: no server.
    pub listen: Option<SocketAddr>,
    /// The webhooks' shared secret; without one every webhook is refused.
    pub webhook_secret: Option<String>,
    /// Delete members git no longer holds.
    pub prune: bool,
    pub allow_mass_prune: bool,
    /// First retry delay after a failure, doubling up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long an apply in flight may still run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long one cycle (reading activity, planning, applying) may take before it is
    /// abandoned and retried with backoff.
    pub cycle_timeout: Duration,
    /// Apply only revisions whose commit is signed as this says (`--verify-commits`);
    /// `None`: any commit.
    pub verify_commits: Option<SignaturePolicy>,
    /// Commit statuses and chat notifications ([`super::notify`]); empty: none.
    pub notify: super::notify::Config,
}

impl Config {
    pub fn new(source: SourceSpec, applyset: ApplySet, identity: String) -> Config {
        Config {
            source,
            applyset,
            poll_interval: Duration::from_secs(30),
            drift_interval: Duration::from_secs(300),
            identity,
            leader: None,
            listen: None,
            webhook_secret: None,
            prune: true,
            allow_mass_prune: false,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(20),
            cycle_timeout: Duration::from_secs(300),
            verify_commits: None,
            notify: super::notify::Config::default(),
        }
    }
}
