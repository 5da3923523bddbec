//! Fencing: the reconciler's writes are allowed only while this replica holds the leader
//! Lease, and none of them is waited for past the moment another replica could take the
//! Lease over.
//!
//! The election grants the fence until `t + renew deadline`, where `t` is taken *before*
//! the renewal that succeeded was sent. Another replica takes the Lease only after it has
//! seen the same record unrenewed for a whole lease duration, and it can only have seen
//! that record after the renewal was written, that is after `t`: so it cannot write before
//! `t + lease duration`. Every write passes through [`FenceLayer`], which refuses it when
//! the fence has expired and drops it (closing its connection) when the fence expires
//! while the answer is still awaited. Between the two instants lie `lease duration −
//! renew deadline` (a third of the lease) of margin for a request already inside the API
//! server. Reads and dry-runs are never fenced: they change nothing.

use http::{Method, Request};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

/// Until when this replica may write; `None`: not at all. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct Fence {
    until: Arc<watch::Sender<Option<Instant>>>,
}

impl Default for Fence {
    fn default() -> Self {
        Fence::new()
    }
}

impl Fence {
    /// A fence that allows nothing until [`Fence::grant_until`].
    pub fn new() -> Fence {
        Fence {
            until: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Allow writes until `deadline` (a successful renewal).
    pub fn grant_until(&self, deadline: Instant) {
        self.until.send_replace(Some(deadline));
    }

    /// Allow no more writes (the Lease was lost or is being released).
    pub fn revoke(&self) {
        self.until.send_replace(None);
    }

    /// The instant writes must be done by, when writes are allowed now.
    pub fn deadline(&self) -> Option<Instant> {
        (*self.until.borrow()).filter(|d| *d > Instant::now())
    }

    /// Whether writes are allowed now.
    pub fn holds(&self) -> bool {
        self.deadline().is_some()
    }

    /// Resolves once writes are no longer allowed (at once if they are not).
    pub async fn lost(&self) {
        let mut rx = self.until.subscribe();
        loop {
            let until = *rx.borrow_and_update();
            match until {
                Some(deadline) if deadline > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
                _ => return,
            }
        }
    }
}

/// A write refused (or given up) because this replica no longer holds the leader Lease.
#[derive(Debug, Clone, Copy)]
pub struct Fenced;

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "not written: this replica no longer holds a fresh leader Lease (another replica \
             may be writing)",
        )
    }
}

impl std::error::Error for Fenced {}

/// Whether a request changes something: every verb but GET, and no dry run.
pub fn is_write<B>(request: &Request<B>) -> bool {
    let method = request.method();
    if *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS {
        return false;
    }
    !request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.starts_with("dryRun="))
}

/// A tower layer that fences writes (see the module documentation); without a fence (a
/// command line tool, a reconciler without election) every request passes.
#[derive(Clone, Debug)]
pub struct FenceLayer {
    fence: Option<Fence>,
}

impl FenceLayer {
    pub fn new(fence: Fence) -> FenceLayer {
        FenceLayer { fence: Some(fence) }
    }

    pub fn optional(fence: Option<Fence>) -> FenceLayer {
        FenceLayer { fence }
    }
}

impl<S> Layer<S> for FenceLayer {
    type Service = FenceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FenceService {
            inner,
            fence: self.fence.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FenceService<S> {
    inner: S,
    fence: Option<Fence>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for FenceService<S>
where
    S: Service<Request<B>, Response = R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = BoxFuture<Result<R, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(fence) = self.fence.clone().filter(|_| is_write(&request)) else {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        };
        if !fence.holds() {
            tracing::debug!(uri = %request.uri(), "write refused: the leader Lease is not held");
            return Box::pin(async { Err(Fenced.into()) });
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            tokio::pin!(future);
            loop {
                // A renewal moves the deadline on while the answer is awaited.
                let Some(deadline) = fence.deadline() else {
                    tracing::debug!(
                        "write dropped: the leader Lease expired while it was in flight"
                    );
                    return Err(Fenced.into());
                };
                tokio::select! {
                    result = &mut future => return result.map_err(Into::into),
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::ServiceExt as _;

    fn request(method: &str, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[test]
    fn writes_are_every_verb_but_reads_and_dry_runs() {
        assert!(!is_write(&request("GET", "/api/v1/namespaces/x")));
        assert!(is_write(&request(
            "PATCH",
            "/api/v1/namespaces/x/configmaps/y?fieldManager=berth&force=true"
        )));
        assert!(!is_write(&request(
            "PATCH",
            "/api/v1/namespaces/x/configmaps/y?fieldManager=berth&dryRun=All"
        )));
        assert!(is_write(&request("DELETE", "/api/v1/namespaces/x")));
        assert!(is_write(&request("POST", "/api/v1/namespaces/x/events")));
        assert!(is_write(&request("PUT", "/apis/coordination.k8s.io/v1/x")));
    }

    /// A service whose answers take `delay`.
    fn slow(
        delay: Duration,
    ) -> impl Service<Request<()>, Response = &'static str, Error = BoxError, Future: Send> + Clone
    {
        tower::service_fn(move |_: Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>("done")
        })
    }

    #[tokio::test]
    async fn writes_need_the_fence_and_are_dropped_when_it_expires() {
        let fence = Fence::new();
        let svc = FenceLayer::new(fence.clone()).layer(slow(Duration::from_millis(10)));
        let write = || request("PATCH", "/api/v1/namespaces/x/configmaps/y");
        // Not granted: writes refused, reads pass.
        let err = svc.clone().oneshot(write()).await.unwrap_err();
        assert!(err.is::<Fenced>(), "{err}");
        assert_eq!(
            svc.clone()
                .oneshot(request("GET", "/api/v1/x"))
                .await
                .unwrap(),
            "done"
        );
        // Granted: the write goes through.
        fence.grant_until(Instant::now() + Duration::from_secs(5));
        assert!(fence.holds());
        assert_eq!(svc.clone().oneshot(write()).await.unwrap(), "done");

        // A write slower than the fence is dropped when the fence expires…
        let svc = FenceLayer::new(fence.clone()).layer(slow(Duration::from_secs(3)));
        fence.grant_until(Instant::now() + Duration::from_millis(100));
        let err = svc.clone().oneshot(write()).await.unwrap_err();
        assert!(err.is::<Fenced>(), "{err}");
        // …unless a renewal moves the fence on meanwhile.
        fence.grant_until(Instant::now() + Duration::from_millis(200));
        let renew = {
            let fence = fence.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    fence.grant_until(Instant::now() + Duration::from_millis(200));
                }
            })
        };
        assert_eq!(svc.clone().oneshot(write()).await.unwrap(), "done");
        renew.abort();

        // lost() resolves on revoke and on expiry.
        fence.grant_until(Instant::now() + Duration::from_secs(60));
        let lost = tokio::spawn({
            let fence = fence.clone();
            async move { fence.lost().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!lost.is_finished());
        fence.revoke();
        tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("lost() after revoke")
            .unwrap();
        fence.grant_until(Instant::now() + Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), fence.lost())
            .await
            .expect("lost() after expiry");
    }
}
