//! API errors by kind, as berth finally saw them (after its own retries): the reconciler's
//! `berth_api_errors_total{kind}`, and whether a cycle could reach the API server at all
//! (its `/readyz`).

use http::{Request, Response, StatusCode};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower::{BoxError, Layer, Service};

/// The kinds, in the order they are documented.
pub const KINDS: [&str; 8] = [
    "unreachable",
    "timeout",
    "throttled",
    "server",
    "forbidden",
    "conflict",
    "invalid",
    "other",
];

/// The kinds that say the API server could not be used at all (not reached, no answer in
/// time, or an answer that it cannot serve).
const UNAVAILABLE: [&str; 3] = ["unreachable", "timeout", "server"];

/// Final API errors of one client, by kind.
#[derive(Debug, Clone, Default)]
pub struct ErrorCounter {
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl ErrorCounter {
    pub fn layer(&self) -> ErrorLayer {
        ErrorLayer {
            counter: self.clone(),
        }
    }

    /// Count one error of `kind`; also for a caller that stopped waiting for an answer
    /// itself (the election's own deadline: `timeout`).
    pub fn record(&self, kind: &'static str) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(kind).or_default() += 1;
        }
    }

    /// Errors so far, by kind.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Errors so far that mean the API server could not be used (unreachable, timeout,
    /// server).
    pub fn unavailable(&self) -> u64 {
        let counts = self.snapshot();
        UNAVAILABLE
            .iter()
            .map(|k| counts.get(k).copied().unwrap_or(0))
            .sum()
    }
}

/// The kind of an answer, `None` when it is not an error. 404 is not one: berth reads
/// objects that may be absent.
pub fn kind_of_status(status: StatusCode) -> Option<&'static str> {
    let code = status.as_u16();
    Some(match code {
        _ if code < 400 => return None,
        404 => return None,
        401 | 403 => "forbidden",
        409 => "conflict",
        400 | 422 => "invalid",
        429 => "throttled",
        408 | 504 => "timeout",
        _ if code >= 500 => "server",
        _ => "other",
    })
}

/// The kind of a transport failure: a timeout anywhere in its chain, else unreachable.
/// `None` for a write berth itself refused (the fence), which never reached the server.
pub fn kind_of_error(err: &BoxError) -> Option<&'static str> {
    if err.is::<super::fence::Fenced>() {
        return None;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Some("timeout");
        }
        if e.is::<tokio::time::error::Elapsed>() || e.to_string().contains("deadline has elapsed") {
            return Some("timeout");
        }
        cause = e.source();
    }
    Some("unreachable")
}

#[derive(Debug, Clone)]
pub struct ErrorLayer {
    counter: ErrorCounter,
}

impl<S> Layer<S> for ErrorLayer {
    type Service = ErrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorService {
            inner,
            counter: self.counter.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ErrorService<S> {
    inner: S,
    counter: ErrorCounter,
}

impl<S, B, R> Service<Request<B>> for ErrorService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        let counter = self.counter.clone();
        Box::pin(async move {
            let result = future.await.map_err(Into::into);
            let kind = match &result {
                Ok(response) => kind_of_status(response.status()),
                Err(err) => kind_of_error(err),
            };
            if let Some(kind) = kind {
                counter.record(kind);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_answers_and_failures() {
        let kind = |code: u16| kind_of_status(StatusCode::from_u16(code).unwrap());
        assert_eq!(kind(200), None);
        assert_eq!(kind(404), None);
        assert_eq!(kind(403), Some("forbidden"));
        assert_eq!(kind(409), Some("conflict"));
        assert_eq!(kind(422), Some("invalid"));
        assert_eq!(kind(429), Some("throttled"));
        assert_eq!(kind(504), Some("timeout"));
        assert_eq!(kind(503), Some("server"));
        assert_eq!(kind(410), Some("other"));
        let refused: BoxError = Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(kind_of_error(&refused), Some("unreachable"));
        let slow: BoxError = Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        assert_eq!(kind_of_error(&slow), Some("timeout"));
        let fenced: BoxError = Box::new(super::super::fence::Fenced);
        assert_eq!(kind_of_error(&fenced), None);
        for kind in KINDS {
            assert!(!kind.is_empty());
        }
    }
}
