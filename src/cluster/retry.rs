//! berth's own retry policy for API requests, instead of the client library's default (up
//! to 15 retries with backoff up to 1,000 s, which stalled an apply for 14 minutes when
//! etcd was down). Bounded: at most [`MAX_RETRIES`] retries, 200 ms doubling to 1.6 s (or
//! the server's `Retry-After`, capped at 5 s), so one request gives up within seconds of
//! its own timeouts.
//!
//! Retried: throttling (429), server errors (500, 502, 503, 504: a restarting API server,
//! an etcd hiccup) and transport failures (connection refused or reset, a read timeout).
//! Every request berth makes is safe to repeat: reads, server-side applies, deletes, and
//! Lease updates guarded by their resourceVersion.

use http::{Request, Response, StatusCode};
use kube::client::Body;
use std::time::Duration;
use tower::BoxError;
use tower::retry::Policy;

/// Retries after the first attempt.
pub const MAX_RETRIES: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_SERVER_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    attempt: u32,
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

impl RetryPolicy {
    fn delay(&self) -> Duration {
        FIRST_DELAY * 2u32.pow(self.attempt.min(4))
    }
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempt >= MAX_RETRIES {
            return None;
        }
        let delay = match result {
            Ok(response) if retryable(response.status()) => response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_SERVER_DELAY))
                .unwrap_or_else(|| self.delay()),
            Ok(_) => return None,
            Err(_) => self.delay(),
        };
        self.attempt += 1;
        tracing::debug!(attempt = self.attempt, ?delay, "retrying an API request");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        let body = request.body().try_clone()?;
        let mut clone = Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .version(request.version())
            .body(body)
            .ok()?;
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> Result<Response<()>, BoxError> {
        Ok(Response::builder().status(status).body(()).unwrap())
    }

    #[tokio::test]
    async fn retries_transient_failures_a_bounded_number_of_times() {
        let mut policy = RetryPolicy::default();
        let mut request = Request::new(Body::empty());
        for status in [503, 429, 504] {
            assert!(
                policy.retry(&mut request, &mut response(status)).is_some(),
                "{status}"
            );
        }
        // The fourth failure is the last: the caller gets it.
        assert!(policy.retry(&mut request, &mut response(503)).is_none());

        let mut policy = RetryPolicy::default();
        let mut refused: Result<Response<()>, BoxError> = Err("connection refused".into());
        assert!(policy.retry(&mut request, &mut refused).is_some());
        // Answers about the request itself are final.
        for status in [200, 404, 409, 422] {
            assert!(
                RetryPolicy::default()
                    .retry(&mut request, &mut response(status))
                    .is_none()
            );
        }
    }
}
