//! The reconciler's HTTP endpoints: `/healthz` (the loop is alive), `/readyz` (the source
//! has been read, and the API server could be reached lately), `/metrics` (Prometheus) and
//! `POST /hooks/git` (push webhooks).
//!
//! The webhook faces the internet, so nothing a stranger sends may cost berth unbounded
//! memory or hold a connection for long:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once (past that, new ones wait in the
//!   kernel's accept queue), and each must send its request headers within
//!   [`HEADER_TIMEOUT`] (idle keep-alive connections too), in at most [`MAX_HEADER_BUFFER`];
//! - a request without a signature or token, or with a wrong GitLab token, is refused on
//!   its headers, its body never read; a declared body over [`MAX_BODY`] gets 413 unread;
//! - a signed body is hashed as it arrives and kept only up to [`MAX_BODY`] (a push event
//!   is kilobytes), by at most [`BODY_READS`](super::hooks::BODY_READS) requests at a
//!   time, within [`BODY_TIMEOUT`].
//!
//! So the memory a stranger can make berth hold is about `BODY_READS × MAX_BODY` of bodies
//! plus a few kilobytes per connection (measured in BENCHMARKS.md). Refusals are counted in
//! `berth_webhook_requests_total{code}` and logged at most once a minute.

use super::hooks::REFUSAL_LOG_EVERY;
use super::shared::Shared;
use super::webhook::{self, Hook, Proof};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 2048;
/// The time a client has to send a request's headers (from the connection's start, or
/// from the previous answer on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's read buffer, so its headers: hyper's default is about 400 KiB.
pub const MAX_HEADER_BUFFER: usize = 16 * 1024;
/// The largest webhook body read. A push event is a few kilobytes (GitHub's cap of 25 MB
/// is for events berth does not use).
pub const MAX_BODY: usize = 1024 * 1024;
/// The time a webhook request has from its headers to its answer (reading its body
/// included).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_WAIT: Duration = Duration::from_secs(5);
pub fn router(shared: Arc<Shared>) -> Router {
    let hooks = post(hook).layer(
        ServiceBuilder::new()
            // Outermost: sees the answers of the layers below too (413, 408).
            .layer(axum::middleware::map_response_with_state(
                shared.clone(),
                count_hook,
            ))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                BODY_TIMEOUT,
            ))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY)),
    );
    Router::new()
        .route("/", get(super::page::page))
        .route("/live", get(super::page::live))
        .route("/page.js", get(super::page::script))
        .route("/api/status", get(super::page::api))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hooks/git", hooks)
        .with_state(shared)
}

/// Serve `router` on `listener` until `stop`, within the bounds above.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER);
    let mut accept_failed: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, mostly: wait a little rather than spin,
                    // and say so once a minute.
                    if accept_failed.is_none_or(|at| at.elapsed() > REFUSAL_LOG_EVERY) {
                        tracing::warn!(error = %err, "accepting a connection failed");
                        accept_failed = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol: nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    // Answers in progress get a moment to finish; idle connections close at once.
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.stalled() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the source has not been read yet\n",
        )
            .into_response();
    }
    if !shared.api_reached() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the API server could not be reached (or answered 5xx) in the last cycle; see \
             berth_api_errors_total\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics_text(),
    )
        .into_response()
}

/// Count every answer of `/hooks/git`, and log refusals sparingly.
async fn count_hook<B>(
    State(shared): State<Arc<Shared>>,
    response: axum::http::Response<B>,
) -> axum::http::Response<B> {
    let code = response.status();
    shared.metrics.webhook(code.as_u16());
    if code.is_client_error() || code.is_server_error() {
        shared.hooks.refused(code);
    }
    response
}

fn answer(code: StatusCode, text: &str) -> Response {
    (code, format!("{text}\n")).into_response()
}

async fn hook(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let secret = shared
        .webhook_secret
        .as_deref()
        .unwrap_or_default()
        .as_bytes();
    // Refused on the headers alone: no proof, or a wrong token. The body stays unread.
    let verifier = match webhook::proof(&headers) {
        None => return answer(StatusCode::UNAUTHORIZED, "signature or token missing"),
        Some(Proof::Token(token)) => {
            if !webhook::token_matches(&token, secret) {
                return answer(StatusCode::UNAUTHORIZED, "token wrong");
            }
            None
        }
        Some(Proof::Signature(expected)) => match webhook::Verifier::new(secret, expected) {
            Some(verifier) => Some(verifier),
            None => return answer(StatusCode::UNAUTHORIZED, "signature wrong"),
        },
    };
    let Ok(Ok(_permit)) = tokio::time::timeout(BODY_WAIT, shared.hooks.reads.acquire()).await
    else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy reading other webhooks; try again",
        );
    };
    let body = match read_body(body, verifier).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    dispatch(&shared, &headers, &body).await
}

/// Read a body of at most [`MAX_BODY`] (the limit layer cuts it off past that), hashing
/// it as it comes when a signature is to be checked.
async fn read_body(
    body: Body,
    mut verifier: Option<webhook::Verifier>,
) -> Result<Vec<u8>, Response> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
            let mut too_large = false;
            while let Some(e) = cause {
                too_large |= e.is::<http_body_util::LengthLimitError>();
                cause = e.source();
            }
            if too_large {
                answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("body over {MAX_BODY} bytes"),
                )
            } else {
                answer(StatusCode::BAD_REQUEST, "the body could not be read")
            }
        })?;
        if let Some(verifier) = verifier.as_mut() {
            verifier.update(&chunk);
        }
        bytes.extend_from_slice(&chunk);
    }
    if verifier.is_some_and(|v| !v.finish()) {
        return Err(answer(StatusCode::UNAUTHORIZED, "signature wrong"));
    }
    Ok(bytes)
}

/// What a verified webhook asks for.
async fn dispatch(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    match webhook::parse(headers, body) {
        Hook::Ping => (StatusCode::OK, "pong\n").into_response(),
        Hook::Other(event) => {
            (StatusCode::ACCEPTED, format!("ignored: event `{event}`\n")).into_response()
        }
        Hook::Push { reference, after } => {
            let followed = shared.followed_ref.as_deref();
            if let (Some(pushed), Some(followed)) = (reference.as_deref(), followed)
                && pushed != followed
            {
                return (
                    StatusCode::ACCEPTED,
                    format!("ignored: push to {pushed}, following {followed}\n"),
                )
                    .into_response();
            }
            tracing::info!(
                reference = reference.as_deref().unwrap_or("?"),
                after = after.as_deref().unwrap_or("?"),
                "verified push webhook: fetching now"
            );
            shared.request_fetch().await;
            (StatusCode::ACCEPTED, "fetching\n").into_response()
        }
    }
}
