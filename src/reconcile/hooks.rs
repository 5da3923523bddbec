//! Bounds and counters of `POST /hooks/git` that outlive one request: how many bodies
//! are read at once, and the rate at which refusals are logged. Part of the shared state
//! ([`super::shared::Shared`]), so it sits below both the state and the server that uses
//! it.

use axum::http::StatusCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Webhook bodies read at once; others wait (up to `BODY_WAIT` in [`super::server`]) or get 503.
pub const BODY_READS: usize = 8;
/// At most one log line per this much time about refused webhooks.
pub(super) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Bounds and counters of `POST /hooks/git`, shared by its requests.
pub struct Hooks {
    pub(super) reads: Semaphore,
    refusals: Mutex<Refusals>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            reads: Semaphore::new(BODY_READS),
            refusals: Mutex::new(Refusals::default()),
        }
    }
}

#[derive(Default)]
struct Refusals {
    /// When the last line was logged.
    logged: Option<Instant>,
    /// Refusals since then, not logged one by one.
    quiet: u64,
}

impl Hooks {
    /// Log a refusal, at most one line per [`REFUSAL_LOG_EVERY`]: a flood of bad requests
    /// must not flood the log too (the metric counts each one).
    pub(super) fn refused(&self, code: StatusCode) {
        let Ok(mut refusals) = self.refusals.lock() else {
            return;
        };
        if refusals
            .logged
            .is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY)
        {
            refusals.quiet += 1;
            return;
        }
        let before = std::mem::take(&mut refusals.quiet);
        refusals.logged = Some(Instant::now());
        tracing::warn!(
            code = code.as_u16(),
            refused_before = before,
            "webhook refused ({}); further refusals in the next {}s are only counted in \
             berth_webhook_requests_total",
            code.canonical_reason().unwrap_or("refused"),
            REFUSAL_LOG_EVERY.as_secs()
        );
    }
}
