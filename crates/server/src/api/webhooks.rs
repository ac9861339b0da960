//! Webhook endpoints: register (the signing secret is returned once),
//! list, delete, and read an endpoint's delivery log. Administrators
//! register any URL the address policy allows, for their own sessions or
//! (`allSessions`) everyone's; users register only on the hosts the admin
//! allows them (`--user-webhook-host`), for their own sessions. Every
//! registration and deletion is audited as `webhook.*`.

use super::{ApiError, ApiJson, AppState};
use crate::auth::{audit, require_user_token, Audit, ClientIp, ServerStore};
use crate::webhook::{check_url, seal_secret};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cc_core::webhook::{generate_id, generate_secret, Delivery, Endpoint, EventKind};
use cc_core::{now, rfc3339, Principal, Runtime};
use cc_wire::api::{CreatedWebhook, WebhookDelivery, WebhookInfo, WebhookRequest};
use serde::Deserialize;

/// Longest description.
const MAX_DESCRIPTION_LEN: usize = 200;
/// Endpoints one user may register.
const MAX_ENDPOINTS_PER_USER: usize = 20;
/// Default and largest page of the delivery log.
const DEFAULT_DELIVERIES: usize = 100;
const MAX_DELIVERIES: usize = 1000;

fn info(e: &Endpoint) -> WebhookInfo {
    WebhookInfo {
        id: e.id.clone(),
        url: e.url.clone(),
        events: e.events.iter().map(|k| k.as_str().to_owned()).collect(),
        description: e.description.clone(),
        owner: e.owner.clone(),
        all_sessions: e.all_sessions,
        created_at: rfc3339(e.created_at),
    }
}

fn delivery(d: &Delivery) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id.clone(),
        event: d.kind.as_str().into(),
        session_id: d.session.to_string(),
        state: d.state.as_str().into(),
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error.clone(),
        created_at: rfc3339(d.created_at),
        next_attempt_at: d.next_attempt_at.map(rfc3339),
        finished_at: d.finished_at.map(rfc3339),
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "webhook_not_found",
        format!("no webhook {}", id.chars().take(64).collect::<String>()),
    )
}

/// The endpoint `id` if `p` may see it (its owner, or an administrator).
async fn visible<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    id: &str,
) -> Result<Endpoint, ApiError> {
    st.manager
        .store()
        .endpoints()
        .await?
        .into_iter()
        .find(|e| e.id == id && (p.is_admin() || e.owner == p.user))
        .ok_or_else(|| not_found(id))
}

pub(super) async fn create<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    require_user_token(&p)?;
    let Some(seal) = st.manager.config().seal_key.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_unavailable",
            "this server has no sealing key to keep webhook secrets with",
        ));
    };
    let events = req
        .events
        .iter()
        .map(|name| {
            EventKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                bad(
                    "invalid_webhook_events",
                    format!("unknown event {name:?}; known: {}", known.join(", ")),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        return Err(bad(
            "invalid_description",
            format!("description is longer than {MAX_DESCRIPTION_LEN} bytes"),
        ));
    }
    if req.all_sessions && !p.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an administrator hears of every user's sessions (allSessions)",
        ));
    }
    let url = check_url(&req.url, &st.config.webhooks.allow_hosts)
        .await
        .map_err(|r| {
            let status = if r.code == "webhook_host_not_allowed" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, r.code, r.message)
        })?;
    if !p.is_admin() {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        if !cc_core::policy::egress_allowed(host, port, &st.config.webhooks.user_hosts) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "webhook_host_not_allowed",
                format!(
                    "users may register webhooks only on the hosts an administrator allows \
                     (--user-webhook-host); {host}:{port} is not one of them"
                ),
            ));
        }
    }
    let store = st.manager.store();
    let existing = store.endpoints().await?;
    if existing.iter().filter(|e| e.owner == p.user).count() >= MAX_ENDPOINTS_PER_USER {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("you already have {MAX_ENDPOINTS_PER_USER} webhooks; delete one first"),
        ));
    }
    let id = generate_id("wh");
    let secret = generate_secret();
    let endpoint = Endpoint {
        sealed_secret: seal_secret(&seal, &id, &secret),
        id,
        owner: p.user.clone(),
        all_sessions: req.all_sessions,
        url: url.to_string(),
        events,
        description: req.description,
        created_at: now(),
    };
    store.insert_endpoint(&endpoint).await?;
    let a = Audit {
        actor: &p.user,
        ip,
        action: "webhook.create",
        session_id: None,
        outcome: "ok",
        detail: Some(format!("webhook {}", endpoint.id)),
    };
    audit(&st, a).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            secret,
            info: info(&endpoint),
        }),
    ))
}

pub(super) async fn list<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<WebhookInfo>>, ApiError> {
    require_user_token(&p)?;
    let all = st.manager.store().endpoints().await?;
    Ok(Json(
        all.iter()
            .filter(|e| p.is_admin() || e.owner == p.user)
            .map(info)
            .collect(),
    ))
}

pub(super) async fn delete<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_user_token(&p)?;
    let e = visible(&st, &p, &id).await?;
    if !st.manager.store().delete_endpoint(&e.id).await? {
        return Err(not_found(&id));
    }
    let a = Audit {
        actor: &p.user,
        ip,
        action: "webhook.delete",
        session_id: None,
        outcome: "ok",
        detail: Some(format!("webhook {}", e.id)),
    };
    audit(&st, a).await;
    Ok(Json(serde_json::json!({ "id": e.id, "deleted": true })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveriesQuery {
    #[serde(default)]
    limit: Option<usize>,
}

pub(super) async fn deliveries<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<WebhookDelivery>>, ApiError> {
    let Query(q) = query?;
    require_user_token(&p)?;
    let e = visible(&st, &p, &id).await?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_DELIVERIES)
        .clamp(1, MAX_DELIVERIES);
    let log = st.manager.store().deliveries(&e.id, limit).await?;
    Ok(Json(log.iter().map(delivery).collect()))
}
