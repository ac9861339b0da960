//! Probes and metrics, outside the API's authentication (probes carry no
//! tokens):
//! - `GET /healthz`: the process answers (liveness);
//! - `GET /readyz`: the store and the container runtime answer (readiness);
//! - `GET /metrics`: Prometheus text (see [`crate::metrics`]); it names
//!   sessions, so with `serve --metrics-token` it takes that bearer token
//!   (Prometheus' `authorization` scrape setting) and nothing else, and
//!   without one it answers only loopback clients (`403 forbidden`
//!   otherwise): a scraper on the same host needs no setting, one elsewhere
//!   needs the token.

use super::{ApiError, AppState};
use crate::AppManager;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cc_core::{Runtime, Store};
use std::time::Duration;

/// Longest a readiness dependency may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn router<R: Runtime, S: Store>(state: AppState<R, S>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<R, S>))
        .route("/metrics", get(metrics::<R, S>))
        .with_state(state)
}

async fn readyz<R: Runtime, S: Store>(State(st): State<AppState<R, S>>) -> Response {
    match check(&st.manager).await {
        Ok(()) => "ready".into_response(),
        Err(why) => {
            tracing::warn!(%why, "not ready");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why).into_response()
        }
    }
}

async fn check<R: Runtime, S: Store>(m: &AppManager<R, S>) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, m.store().list_sessions(true)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err("the session store is failing".into()),
        Err(_) => return Err("the session store does not answer".into()),
    }
    match tokio::time::timeout(PROBE_TIMEOUT, m.runtime().list()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err("the container runtime is failing".into()),
        Err(_) => Err("the container runtime does not answer".into()),
    }
}

async fn metrics<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    if st.access.config.metrics_token.is_none()
        && !peer.is_some_and(|p| p.0.ip().to_canonical().is_loopback())
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "without serve --metrics-token the metrics answer only loopback clients",
        )
        .into_response();
    }
    if let Some(expected) = &st.access.config.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| cc_core::ids::secret_eq(p, expected)) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the metrics need the metrics token (Authorization: Bearer …)",
            )
            .into_response();
        }
    }
    let body = crate::metrics::render(&st.manager).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}
