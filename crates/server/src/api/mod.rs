//! The public API under `/api/v1` (see `cc_wire::api` for the types).
//!
//! Handlers parse and validate the request, call the session core, and map
//! its answer; every error is `{code, message}` JSON.

mod admin;
mod audit;
mod error;
mod health;
mod idempotency;
pub mod openapi;
mod push;
pub mod request_log;
mod sessions;
mod stream;
mod webhooks;

pub use error::ApiError;

use crate::auth::{Access, ServerStore};
use crate::{AppManager, ServerConfig};
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cc_core::Runtime;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Largest request body accepted (a command is at most 100 kB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct AppState<R, S> {
    pub manager: AppManager<R, S>,
    pub config: Arc<ServerConfig>,
    pub access: Arc<Access>,
}

impl<R, S> Clone for AppState<R, S> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            config: self.config.clone(),
            access: self.access.clone(),
        }
    }
}

pub fn router<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    config: Arc<ServerConfig>,
) -> Router {
    let access = Arc::new(Access::new(config.access.clone()));
    router_with_access(manager, config, access)
}

/// [`router`] sharing its access-control state (limiters, audit writer)
/// with the caller.
pub fn router_with_access<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    config: Arc<ServerConfig>,
    access: Arc<Access>,
) -> Router {
    let state = AppState {
        manager,
        config,
        access,
    };
    Router::new()
        .route("/api/v1/sessions", get(sessions::list::<R, S>))
        .route("/api/v1/sessions/create", post(sessions::create::<R, S>))
        .route("/api/v1/sessions/{id}", get(sessions::status::<R, S>))
        .route("/api/v1/sessions/{id}", delete(sessions::delete::<R, S>))
        .route(
            "/api/v1/sessions/{id}/status",
            get(sessions::status::<R, S>),
        )
        .route(
            "/api/v1/sessions/{id}/command",
            post(sessions::command::<R, S>),
        )
        .route(
            "/api/v1/sessions/{id}/interrupt",
            post(sessions::interrupt::<R, S>),
        )
        .route("/api/v1/sessions/{id}/fork", post(sessions::fork::<R, S>))
        .route("/api/v1/sessions/{id}/sleep", post(sessions::sleep::<R, S>))
        .route("/api/v1/sessions/{id}/wake", post(sessions::wake::<R, S>))
        .route("/api/v1/sessions/{id}/logs", get(sessions::logs::<R, S>))
        .route("/api/v1/sessions/{id}/diff", get(sessions::diff::<R, S>))
        .route("/api/v1/sessions/{id}/files", get(sessions::files::<R, S>))
        .route("/api/v1/sessions/{id}/push", post(push::push::<R, S>))
        .route(
            "/api/v1/sessions/{id}/permissions/{requestId}",
            post(sessions::answer_permission::<R, S>),
        )
        .route("/api/v1/sessions/{id}/stream", get(stream::upgrade::<R, S>))
        .route("/api/v1/audit", get(audit::list::<R, S>))
        .route(
            openapi::OPENAPI_PATH,
            get(|| async { Json(openapi::document()) }),
        )
        .route(
            "/api/v1/admin/tokens",
            get(admin::list_tokens::<R, S>).post(admin::create_token::<R, S>),
        )
        .route(
            "/api/v1/admin/tokens/{id}",
            delete(admin::revoke_token::<R, S>),
        )
        .route(
            "/api/v1/webhooks",
            get(webhooks::list::<R, S>).post(webhooks::create::<R, S>),
        )
        .route("/api/v1/webhooks/{id}", delete(webhooks::delete::<R, S>))
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries::<R, S>),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Inside authentication: the owner of a session another replica
        // runs gets the request (see `crate::cluster`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::middleware::<R, S>,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::middleware::<R, S>,
        ))
        // Outermost: refusals by the layers above are logged too.
        .layer(axum::middleware::from_fn(request_log::middleware))
        .with_state(state.clone())
        // Probes and metrics bypass authentication (see `health`), and so
        // do the replicas' own calls, which carry their signature instead.
        .merge(crate::cluster::router(state.clone()))
        .merge(health::router(state))
        // The web console's page and assets (no data; see `crate::console`).
        .merge(crate::console::router())
}

/// `Json` whose rejections are our `{code, message}` errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
            .map_err(ApiError::from)
    }
}

/// Base URL clients use for this server: configured, or from `Host` (with
/// `https` when the API serves TLS, so endpoints become `https://`/`wss://`).
fn public_base(config: &ServerConfig, headers: &HeaderMap) -> String {
    if let Some(url) = &config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if config.access.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}
