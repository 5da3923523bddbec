//! The reconciler's HTTP endpoints: `/healthz` (the loop is alive), `/readyz` (the source
//! has been read once), `/metrics` (Prometheus) and `POST /hooks/git` (push webhooks).

use super::Shared;
use super::webhook::{self, Hook};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// Push payloads are small, but GitHub allows up to 25 MB.
const MAX_BODY: usize = 25 * 1024 * 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hooks/git", post(hook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.stalled() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the source has not been read yet\n",
        )
            .into_response()
    }
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

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let secret = shared.webhook_secret.as_deref().unwrap_or_default();
    if !webhook::verify(&headers, &body, secret.as_bytes()) {
        tracing::warn!("webhook refused: missing or wrong signature or token");
        return (
            StatusCode::UNAUTHORIZED,
            "signature or token missing or wrong\n",
        )
            .into_response();
    }
    match webhook::parse(&headers, &body) {
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
