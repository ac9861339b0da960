//! REST handlers for sessions.

use super::{public_base, ApiError, ApiJson, AppState};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use cc_core::{rfc3339, CreateSession, Runtime, SessionRecord, Store};
use cc_wire::api::{
    CommandRequest, CommandResponse, CreateSessionRequest, CreateSessionResponse, DeleteResponse,
    Endpoints, LogsResponse, SessionStatus,
};
use serde::Deserialize;

/// Default page of `logs`.
const DEFAULT_LOGS_LIMIT: usize = 500;

pub(super) fn endpoints(base: &str, id: &str) -> Endpoints {
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    Endpoints {
        websocket: format!("{ws_base}/api/v1/sessions/{id}/stream"),
        http: format!("{base}/api/v1/sessions/{id}"),
    }
}

fn status_of(rec: &SessionRecord, base: &str) -> SessionStatus {
    SessionStatus {
        session_id: rec.id.to_string(),
        container_id: rec.container_id.clone(),
        status: rec.state.seed_status(),
        state: rec.state,
        reason: rec.reason.clone(),
        repo_url: rec.repo_url.clone(),
        branch: rec.branch.clone(),
        limits: rec.limits,
        created_at: rfc3339(rec.created_at),
        updated_at: rfc3339(rec.updated_at),
        expires_at: rfc3339(rec.expires_at),
        last_seq: rec.last_seq,
        endpoints: endpoints(base, rec.id.as_str()),
    }
}

pub(super) async fn create<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<CreateSessionResponse>), ApiError> {
    let rec = st
        .manager
        .create(CreateSession {
            repo_url: req.repo_url,
            branch: req.branch,
            claude_api_key: req.claude_api_key,
            config: req.config,
        })
        .await?;
    let base = public_base(&st.config, &headers);
    Ok((
        StatusCode::CREATED,
        Json(CreateSessionResponse {
            session_id: rec.id.to_string(),
            container_id: rec.container_id.clone().unwrap_or_default(),
            status: rec.state.seed_status(),
            endpoints: endpoints(&base, rec.id.as_str()),
            state: rec.state,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn list<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<SessionStatus>>, ApiError> {
    let Query(q) = query?;
    let base = public_base(&st.config, &headers);
    let records = st.manager.list(!q.all).await?;
    Ok(Json(records.iter().map(|r| status_of(r, &base)).collect()))
}

pub(super) async fn status<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SessionStatus>, ApiError> {
    let rec = st.manager.get(&id).await?;
    Ok(Json(status_of(&rec, &public_base(&st.config, &headers))))
}

pub(super) async fn delete<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let rec = st.manager.terminate(&id).await?;
    Ok(Json(DeleteResponse {
        session_id: rec.id.to_string(),
        status: rec.state.seed_status(),
        state: rec.state,
    }))
}

pub(super) async fn command<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommandRequest>,
) -> Result<(StatusCode, Json<CommandResponse>), ApiError> {
    let state = st.manager.command(&id, req.command).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CommandResponse {
            session_id: id,
            accepted: true,
            state,
        }),
    ))
}

pub(super) async fn interrupt<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let interrupted = st.manager.interrupt(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "sessionId": id, "interrupted": interrupted })),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct LogsQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    limit: Option<usize>,
}

pub(super) async fn logs<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogsResponse>, ApiError> {
    let Query(q) = query?;
    let events = st
        .manager
        .logs(&id, q.since, q.limit.unwrap_or(DEFAULT_LOGS_LIMIT))
        .await?;
    let next_since = events.last().map_or(q.since, |e| e.seq());
    Ok(Json(LogsResponse {
        session_id: id,
        events,
        next_since,
    }))
}
