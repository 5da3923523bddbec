//! Outages: a control plane that is gone is found out once per command, not once per
//! object (issue 30). One [`Outage`] is shared by every request of a [`super::Cluster`]
//! (one command, one reconcile cycle), in two layers of the client path: [`AttemptLayer`]
//! below the retries sees every attempt; [`OutageLayer`], outermost, watches each request
//! for slowness and, once tripped, ends them all.
//!
//! Evidence, from every attempt's outcome:
//! - a transport failure (connection refused or reset, no answer in time) or a 5xx answer,
//!   and a request still unanswered after [`SLOW`], make the detector **probe** the API
//!   server's `/readyz?verbose` (one probe at a time, its own client, 10 s at most). The
//!   probe refused or unanswered: the server is unreachable. It answers that its `etcd`
//!   check fails: the server answers but cannot read or write its storage. (With etcd
//!   down, kube-apiserver accepts requests and lets them hang: a GET answers 504 after
//!   60 s, a create 504 `context deadline exceeded` after 34 s, a LIST is reset after
//!   60 s; `/readyz?verbose` answers 500 `[-]etcd failed` in about 4 s.)
//! - [`CONSECUTIVE`] failed attempts in a row, on at least two kinds of resource, with no
//!   answer in between, trip it even when the probe cannot tell (a server whose /readyz
//!   is healthy but that serves nothing).
//! - Any other answer (2xx, 3xx, 4xx: a refusal of one object) is not an outage, and ends
//!   a run of failures.
//!
//! Once tripped, every request not yet sent fails at once, and every request in flight is
//! abandoned, all with the same [`OutageError`] (said once by the caller). A reconciler
//! [`Outage::reset`]s it at the start of each cycle.

use http::{Request, Response, StatusCode};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower::{BoxError, Layer, Service};

/// A request unanswered this long is evidence: the API server is probed.
pub const SLOW: Duration = Duration::from_secs(4);
/// Attempts in a row that failed (timeouts, server errors: on two kinds or more) that trip
/// the detector without a probe's confirmation.
pub const CONSECUTIVE: u32 = 16;
/// How long the probe may take. With etcd down, kube-apiserver's `/readyz` takes about
/// 4 s to say so (its `etcd` and `etcd-readiness` checks, 2 s each).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a healthy probe, no other for this long.
const PROBE_COOLDOWN: Duration = Duration::from_secs(2);

/// Why the control plane cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Not reached: connection refused, reset, or no answer in time (the words).
    Unreachable(String),
    /// It answers, but its storage (etcd) does not.
    Storage,
    /// It answers that it is not ready (its failed checks).
    NotReady(String),
    /// Timeouts or server errors on every request, `n` in a row.
    Failing(u32),
}

impl Cause {
    /// The cause in words, naming the server.
    pub fn describe(&self, server: &str) -> String {
        match self {
            Cause::Unreachable(words) => {
                format!("cannot reach the API server at {server}: {words}")
            }
            Cause::Storage => format!(
                "the API server at {server} answers but cannot read or write its storage \
                 (its etcd check fails)"
            ),
            Cause::NotReady(checks) => {
                format!("the API server at {server} answers but is not ready ({checks})")
            }
            Cause::Failing(n) => format!(
                "the API server at {server} failed {n} requests in a row (timeouts or server \
                 errors, on several kinds)"
            ),
        }
    }

    /// The kind of API error it counts as (`berth_api_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Unreachable(words) if words.contains("timed out") => "timeout",
            Cause::Unreachable(_) => "unreachable",
            _ => "server",
        }
    }
}

/// One request's outcome, as the detector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// An answer that is not a server error: the server works (a 4xx is a refusal of one
    /// object, not an outage).
    Answered,
    /// A transport failure, a timeout or a 5xx, on a resource of `kind`.
    Failed { kind: String },
    /// Still unanswered after [`SLOW`].
    Slow,
}

/// What the API server's readiness endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy,
    /// Not allowed to ask, or an answer that says nothing: no conclusion.
    Unknown,
    /// Refused or unanswered (the words).
    Unreachable(String),
    /// `[-]etcd` among the failed checks.
    Storage,
    /// Other failed checks.
    NotReady(String),
}

/// What the detector wants done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Nothing,
    Probe,
    Trip(Cause),
}

/// The pure state of the detector: a run of failures, and whether it has tripped.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    run: u32,
    kinds: BTreeSet<String>,
    tripped: Option<Cause>,
}

impl Detector {
    pub fn observe(&mut self, evidence: Evidence) -> Next {
        if self.tripped.is_some() {
            return Next::Nothing;
        }
        match evidence {
            Evidence::Answered => {
                self.run = 0;
                self.kinds.clear();
                Next::Nothing
            }
            Evidence::Failed { kind } => {
                self.run += 1;
                self.kinds.insert(kind);
                if self.run >= CONSECUTIVE && self.kinds.len() >= 2 {
                    self.trip(Cause::Failing(self.run))
                } else {
                    Next::Probe
                }
            }
            Evidence::Slow => Next::Probe,
        }
    }

    pub fn probed(&mut self, probe: Probe) -> Next {
        if self.tripped.is_some() {
            return Next::Nothing;
        }
        match probe {
            Probe::Healthy | Probe::Unknown => Next::Nothing,
            Probe::Unreachable(words) => self.trip(Cause::Unreachable(words)),
            Probe::Storage => self.trip(Cause::Storage),
            Probe::NotReady(checks) => self.trip(Cause::NotReady(checks)),
        }
    }

    fn trip(&mut self, cause: Cause) -> Next {
        self.tripped = Some(cause.clone());
        Next::Trip(cause)
    }

    pub fn tripped(&self) -> Option<&Cause> {
        self.tripped.as_ref()
    }
}

/// The error of every request once the detector has tripped: the cause, in words.
#[derive(Debug, Clone)]
pub struct OutageError(pub String);

impl std::fmt::Display for OutageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutageError {}

/// The detector shared by every request of one client. Cheap to clone.
#[derive(Clone)]
pub struct Outage {
    inner: Arc<Inner>,
}

struct Inner {
    server: String,
    enabled: AtomicBool,
    state: Mutex<Detector>,
    /// The cause once tripped, in words; watched by the requests in flight.
    tripped: watch::Sender<Option<String>>,
    probe: OnceLock<kube::Client>,
    probing: AtomicBool,
    last_healthy: Mutex<Option<Instant>>,
    errors: super::ErrorCounter,
}

impl Outage {
    pub fn new(server: &str, errors: super::ErrorCounter) -> Outage {
        Outage {
            inner: Arc::new(Inner {
                server: server.to_string(),
                enabled: AtomicBool::new(true),
                state: Mutex::new(Detector::default()),
                tripped: watch::Sender::new(None),
                probe: OnceLock::new(),
                probing: AtomicBool::new(false),
                last_healthy: Mutex::new(None),
                errors,
            }),
        }
    }

    /// The client that probes `/readyz` (without this detector in its path).
    pub(super) fn set_probe(&self, client: kube::Client) {
        let _ = self.inner.probe.set(client);
    }

    /// Never trip: for a client that must go on trying by itself (the leader election's).
    pub fn disable(&self) {
        self.inner.enabled.store(false, Ordering::Relaxed);
    }

    /// Forget a trip: the start of a new reconcile cycle.
    pub fn reset(&self) {
        if let Ok(mut state) = self.inner.state.lock() {
            *state = Detector::default();
        }
        self.inner.tripped.send_replace(None);
    }

    /// The cause in words, once tripped.
    pub fn message(&self) -> Option<String> {
        self.inner.tripped.borrow().clone()
    }

    /// Whether `text` is this detector's error (a request failed because it tripped).
    pub fn is_message(&self, text: &str) -> bool {
        self.message().is_some_and(|m| m == text)
    }

    /// Resolves once tripped (at once if it is).
    pub async fn tripped(&self) {
        let mut rx = self.inner.tripped.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// The outermost layer of the client path (see [`OutageLayer`]).
    pub fn layer(&self) -> OutageLayer {
        OutageLayer {
            outage: self.clone(),
        }
    }

    /// The innermost layer, below the retries (see [`AttemptLayer`]).
    pub fn attempts(&self) -> AttemptLayer {
        AttemptLayer {
            outage: self.clone(),
        }
    }

    fn enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    fn act(&self, next: Next) {
        match next {
            Next::Nothing => {}
            Next::Trip(cause) => self.trip(cause),
            Next::Probe => self.probe(),
        }
    }

    fn observe(&self, evidence: Evidence) {
        if !self.enabled() {
            return;
        }
        let next = match self.inner.state.lock() {
            Ok(mut state) => state.observe(evidence),
            Err(_) => return,
        };
        self.act(next);
    }

    fn trip(&self, cause: Cause) {
        let message = cause.describe(&self.inner.server);
        self.inner.errors.record(cause.kind());
        tracing::info!(cause = %message, "the control plane cannot be used: stopping every request");
        self.inner.tripped.send_replace(Some(message));
    }

    /// Ask `/readyz?verbose`, once at a time, and act on the answer.
    fn probe(&self) {
        let Some(client) = self.inner.probe.get().cloned() else {
            return;
        };
        let recent = self
            .inner
            .last_healthy
            .lock()
            .ok()
            .and_then(|l| *l)
            .is_some_and(|at| at.elapsed() < PROBE_COOLDOWN);
        if recent || self.inner.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let outage = self.clone();
        tokio::spawn(async move {
            let mut answer = probe(&client).await;
            // A refused connection twice, half a second apart: not a restart's blink.
            if matches!(&answer, Probe::Unreachable(words) if words.contains("refused")) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                answer = probe(&client).await;
            }
            tracing::debug!(?answer, "probed the API server's /readyz");
            if answer == Probe::Healthy
                && let Ok(mut last) = outage.inner.last_healthy.lock()
            {
                *last = Some(Instant::now());
            }
            let next = match outage.inner.state.lock() {
                Ok(mut state) => state.probed(answer),
                Err(_) => Next::Nothing,
            };
            outage.inner.probing.store(false, Ordering::SeqCst);
            outage.act(next);
        });
    }
}

/// One look at `/readyz?verbose`.
async fn probe(client: &kube::Client) -> Probe {
    let Ok(request) = Request::get("/readyz?verbose").body(Vec::new()) else {
        return Probe::Unknown;
    };
    let send = client.send(request.map(kube::client::Body::from));
    let response = match tokio::time::timeout(PROBE_TIMEOUT, send).await {
        Err(_) => return Probe::Unreachable("no answer in time (timed out)".into()),
        Ok(Err(err)) => {
            return match &err {
                kube::Error::Api(_) | kube::Error::SerdeError(_) => Probe::Unknown,
                other => Probe::Unreachable(super::transport::transport_cause(other)),
            };
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Probe::Healthy;
    }
    let body = {
        use http_body_util::BodyExt;
        match tokio::time::timeout(PROBE_TIMEOUT, response.into_body().collect()).await {
            Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            _ => String::new(),
        }
    };
    readyz_answer(status, &body)
}

/// What a `/readyz?verbose` answer other than 200 says.
pub fn readyz_answer(status: StatusCode, body: &str) -> Probe {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Probe::Unknown;
    }
    let failed: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[-]"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if failed.iter().any(|c| c.starts_with("etcd")) {
        Probe::Storage
    } else if !failed.is_empty() {
        Probe::NotReady(format!("failed checks: {}", failed.join(", ")))
    } else if status.is_server_error() {
        Probe::NotReady(format!("/readyz answered {status}"))
    } else {
        Probe::Unknown
    }
}

/// The kind of resource a request is about: `configmaps`, `apps/statefulsets`.
pub fn resource_of(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (format!("{group}/"), rest),
        _ => return path.to_string(),
    };
    let (group, rest) = rest;
    let resource = match rest {
        ["namespaces", _ns, resource, ..] => *resource,
        [resource, ..] => *resource,
        [] => "",
    };
    format!("{group}{resource}")
}

fn is_server_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Outermost in the client path: once tripped, no request is sent and none in flight is
/// waited for; a request unanswered for [`SLOW`] is evidence.
#[derive(Clone)]
pub struct OutageLayer {
    outage: Outage,
}

impl<S> Layer<S> for OutageLayer {
    type Service = OutageService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OutageService {
            inner,
            outage: self.outage.clone(),
        }
    }
}

#[derive(Clone)]
pub struct OutageService<S> {
    inner: S,
    outage: Outage,
}

impl<S, B, R> Service<Request<B>> for OutageService<S>
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
        let outage = self.outage.clone();
        if !outage.enabled() {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        }
        if let Some(message) = outage.message() {
            return Box::pin(async move { Err(OutageError(message).into()) });
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut tripped = outage.inner.tripped.subscribe();
            tokio::pin!(future);
            let slow = tokio::time::sleep(SLOW);
            tokio::pin!(slow);
            let mut said_slow = false;
            loop {
                tokio::select! {
                    biased;
                    result = &mut future => {
                        let result: Result<Response<R>, BoxError> = result.map_err(Into::into);
                        return match (result, outage.message()) {
                            // A transport failure once the outage is known is the outage.
                            (Err(err), Some(message)) if !err.is::<super::fence::Fenced>() => {
                                Err(OutageError(message).into())
                            }
                            (result, _) => result,
                        };
                    }
                    Ok(_) = tripped.wait_for(Option::is_some) => {
                        // Abandoned: the answer, if any, is not waited for.
                        let message = outage.message().unwrap_or_default();
                        return Err(OutageError(message).into());
                    }
                    _ = &mut slow, if !said_slow => {
                        said_slow = true;
                        outage.observe(Evidence::Slow);
                    }
                }
            }
        })
    }
}

/// Innermost in the client path (below the retries): every attempt's outcome is evidence,
/// so a refused connection is probed at once, not after a request's retries.
#[derive(Clone)]
pub struct AttemptLayer {
    outage: Outage,
}

impl<S> Layer<S> for AttemptLayer {
    type Service = AttemptService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptService {
            inner,
            outage: self.outage.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AttemptService<S> {
    inner: S,
    outage: Outage,
}

impl<S, B, R> Service<Request<B>> for AttemptService<S>
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
        let outage = self.outage.clone();
        let kind = resource_of(request.uri().path());
        let future = self.inner.call(request);
        Box::pin(async move {
            let result: Result<Response<R>, BoxError> = future.await.map_err(Into::into);
            match &result {
                Ok(response) if is_server_error(response.status()) => {
                    outage.observe(Evidence::Failed { kind });
                }
                Ok(_) => outage.observe(Evidence::Answered),
                Err(_) => outage.observe(Evidence::Failed { kind }),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resources_of_paths() {
        assert_eq!(
            resource_of("/api/v1/namespaces/a/configmaps/b"),
            "configmaps"
        );
        assert_eq!(
            resource_of("/apis/apps/v1/namespaces/a/statefulsets/b"),
            "apps/statefulsets"
        );
        assert_eq!(resource_of("/api/v1/namespaces/a"), "namespaces");
        assert_eq!(
            resource_of("/apis/apps/v1/statefulsets"),
            "apps/statefulsets"
        );
    }

    #[test]
    fn readyz_answers() {
        let etcd = "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\n\
                    [-]etcd-readiness failed: reason withheld\nreadyz check failed";
        assert_eq!(
            readyz_answer(StatusCode::INTERNAL_SERVER_ERROR, etcd),
            Probe::Storage
        );
        assert_eq!(
            readyz_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "[+]ping ok\n[-]shutdown failed: reason withheld"
            ),
            Probe::NotReady("failed checks: shutdown".into())
        );
        assert_eq!(
            readyz_answer(StatusCode::FORBIDDEN, "forbidden"),
            Probe::Unknown
        );
        assert!(Cause::Storage.describe("https://h:1").starts_with(
            "the API server at https://h:1 answers but cannot read or write its storage"
        ));
    }

    /// The layers in a client path: answers (refusals among them) pass and never trip it;
    /// failed attempts on two kinds do; then a request not yet sent fails at once, and one
    /// in flight is abandoned, both with the one cause.
    #[tokio::test]
    async fn the_layers_end_every_request_once_tripped() {
        use tower::ServiceExt as _;
        let errors = super::super::ErrorCounter::default();
        let outage = Outage::new("https://h:1", errors.clone());
        // The server: 422 for `/refuse`, 503 for `/fail`, never an answer for `/hang`.
        let server = tower::service_fn(|request: Request<()>| async move {
            let code = match request.uri().path() {
                p if p.ends_with("/hang") => {
                    std::future::pending::<()>().await;
                    200
                }
                p if p.contains("/fail") => 503,
                _ => 422,
            };
            Ok::<_, BoxError>(Response::builder().status(code).body(()).unwrap())
        });
        let client = outage.layer().layer(outage.attempts().layer(server));
        let get = |path: &str| Request::get(path).body(()).unwrap();
        for _ in 0..100 {
            let answer = client
                .clone()
                .oneshot(get("/api/v1/namespaces/a/configmaps/refuse"))
                .await
                .unwrap();
            assert_eq!(answer.status(), 422);
        }
        assert_eq!(outage.message(), None, "refusals never trip it");
        let hanging = tokio::spawn(
            client
                .clone()
                .oneshot(get("/apis/apps/v1/namespaces/a/statefulsets/hang")),
        );
        // Sent before the outage is found.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        for i in 0..CONSECUTIVE {
            let kind = if i % 2 == 0 { "configmaps" } else { "services" };
            let path = format!("/api/v1/namespaces/a/{kind}/fail");
            let _ = client.clone().oneshot(get(&path)).await;
        }
        let message = outage.message().expect("tripped by failures on two kinds");
        assert!(message.contains("https://h:1"), "{message}");
        let err = client
            .clone()
            .oneshot(get("/api/v1/namespaces/a/configmaps/refuse"))
            .await
            .unwrap_err();
        assert!(
            err.is::<OutageError>() && err.to_string() == message,
            "{err}"
        );
        let abandoned = tokio::time::timeout(Duration::from_secs(5), hanging)
            .await
            .expect("the request in flight is abandoned at once")
            .unwrap()
            .unwrap_err();
        assert_eq!(abandoned.to_string(), message);
        assert_eq!(errors.snapshot().get("server"), Some(&1), "counted once");
        // A new cycle judges anew.
        outage.reset();
        assert_eq!(outage.message(), None);
        assert_eq!(
            client
                .clone()
                .oneshot(get("/api/v1/namespaces/a/configmaps/refuse"))
                .await
                .unwrap()
                .status(),
            422
        );
    }

    fn refusal() -> impl Strategy<Value = Evidence> {
        prop_oneof![
            Just(Evidence::Answered),
            // Server errors on one kind only (a broken webhook): not an outage by count.
            Just(Evidence::Failed {
                kind: "configmaps".into()
            }),
            Just(Evidence::Slow),
        ]
    }

    fn healthy_probe() -> impl Strategy<Value = Probe> {
        prop_oneof![Just(Probe::Healthy), Just(Probe::Unknown)]
    }

    fn outage_probe() -> impl Strategy<Value = Probe> {
        prop_oneof![
            "[a-z ]{1,20}".prop_map(Probe::Unreachable),
            Just(Probe::Storage),
            "[a-z]{1,10}".prop_map(Probe::NotReady),
        ]
    }

    /// One step: a request's outcome, or a probe's answer.
    #[derive(Debug, Clone)]
    enum Step {
        Saw(Evidence),
        Probed(Probe),
    }

    fn run(detector: &mut Detector, steps: &[Step]) -> Option<Cause> {
        for step in steps {
            let next = match step {
                Step::Saw(e) => detector.observe(e.clone()),
                Step::Probed(p) => detector.probed(p.clone()),
            };
            if let Next::Trip(cause) = next {
                return Some(cause);
            }
        }
        None
    }

    proptest! {
        /// Answers (4xx refusals among them), server errors on a single kind, slowness,
        /// and probes that find the server healthy never trip the detector.
        #[test]
        fn refusals_never_trip(steps in prop::collection::vec(prop_oneof![
            refusal().prop_map(Step::Saw),
            healthy_probe().prop_map(Step::Probed),
        ], 0..200)) {
            let mut detector = Detector::default();
            prop_assert_eq!(run(&mut detector, &steps), None);
            prop_assert!(detector.tripped().is_none());
        }

        /// Whatever came before, a probe that finds the server gone or its storage dead
        /// trips it, with that cause; and so do CONSECUTIVE failures on two kinds.
        #[test]
        fn outage_evidence_always_trips(
            before in prop::collection::vec(prop_oneof![
                refusal().prop_map(Step::Saw),
                healthy_probe().prop_map(Step::Probed),
            ], 0..100),
            probe in outage_probe(),
            kinds in prop::collection::vec("[a-z]{1,8}", 2..6),
        ) {
            let mut detector = Detector::default();
            prop_assert_eq!(run(&mut detector, &before), None);
            let mut by_probe = detector.clone();
            let expected = match &probe {
                Probe::Unreachable(w) => Cause::Unreachable(w.clone()),
                Probe::Storage => Cause::Storage,
                Probe::NotReady(c) => Cause::NotReady(c.clone()),
                _ => unreachable!(),
            };
            prop_assert_eq!(by_probe.probed(probe), Next::Trip(expected.clone()));
            prop_assert_eq!(by_probe.tripped(), Some(&expected));
            // Once tripped, it stays so: nothing after changes the cause.
            prop_assert_eq!(by_probe.observe(Evidence::Answered), Next::Nothing);
            prop_assert_eq!(by_probe.tripped(), Some(&expected));

            // Failures in a row across kinds, without a probe: tripped by the count.
            let distinct: BTreeSet<String> = kinds.iter().cloned().collect();
            prop_assume!(distinct.len() >= 2);
            let mut tripped = None;
            for i in 0..CONSECUTIVE as usize {
                let kind = kinds[i % kinds.len()].clone();
                if let Next::Trip(cause) = detector.observe(Evidence::Failed { kind }) {
                    tripped = Some(cause);
                }
            }
            prop_assert!(
                matches!(tripped, Some(Cause::Failing(n)) if n >= CONSECUTIVE),
                "{:?}", tripped
            );
        }
    }
}
