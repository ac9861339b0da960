//! REST handlers for sessions.

use super::idempotency::{self, Begin};
use super::{public_base, ApiError, ApiJson, AppState};
use crate::auth::{audit, error_code, require_user_token, Audit, ClientIp, ServerStore};
use crate::upstream_check::{check_api_key, Verdict};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use cc_core::idempotency::request_hash;
use cc_core::{now, CoreError, Principal, SessionId};
use cc_core::{rfc3339, CreateSession, Runtime, SessionRecord, Store};
use cc_wire::api::{
    CommandRequest, CommandResponse, CreateSessionRequest, CreateSessionResponse, DeleteResponse,
    Endpoints, ForkRequest, ForkResponse, LogsResponse, PermissionAnswered, PermissionResponse,
    SessionStatus,
};
use serde::Deserialize;

/// Default page of `logs`.
const DEFAULT_LOGS_LIMIT: usize = 500;

/// The session's record if `p` may see it; another user's session is a
/// 404, exactly like one that does not exist.
pub(super) async fn owned<R: Runtime, S: Store>(
    st: &AppState<R, S>,
    p: &Principal,
    id: &str,
) -> Result<SessionRecord, ApiError> {
    let rec = st.manager.get(id).await?;
    if !p.may_access(rec.id.as_str(), &rec.owner) {
        return Err(CoreError::NotFound(id.chars().take(64).collect()).into());
    }
    Ok(rec)
}

/// The endpoints of a session, each carrying a fresh session access token
/// (valid until the session expires, at most the configured TTL).
fn endpoints_for<R, S>(st: &AppState<R, S>, base: &str, rec: &SessionRecord) -> Endpoints {
    let expires = rec
        .expires_at
        .min(now() + st.access.config.session_token_ttl);
    let token = st.access.session_key.issue(rec.id.as_str(), expires);
    let mut e = endpoints(base, rec.id.as_str());
    e.websocket = format!("{}?token={token}", e.websocket);
    e.http = format!("{}?token={token}", e.http);
    e
}

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

fn status_of<R: Runtime, S: Store>(
    st: &AppState<R, S>,
    rec: &SessionRecord,
    base: &str,
) -> SessionStatus {
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
        endpoints: endpoints_for(st, base, rec),
        usage: rec.usage.totals,
        oom_kills: rec.usage.oom_kills,
        resources: None,
        pending_permissions: st.manager.pending_permissions(rec.id.as_str()),
    }
}

pub(super) async fn create<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    require_user_token(&p)?;
    let base = public_base(&st.config, &headers);
    let Some(key) = idempotency::key(&headers)? else {
        let created = create_session(&st, &p, ip, &base, req).await?;
        return Ok((StatusCode::CREATED, Json(created)).into_response());
    };
    // The parsed request, serialised: the same body in another field
    // order or formatting is the same request.
    let canonical = serde_json::to_vec(&req)
        .map_err(|e| CoreError::Internal(format!("serialise a create request: {e}")))?;
    let hash = request_hash(&canonical);
    match idempotency::begin(st.manager.store(), &p.user, &key, &hash).await? {
        Begin::Replay(id) => {
            let rec = owned(&st, &p, id.as_str()).await?;
            let a = Audit {
                actor: &p.user,
                ip,
                action: "session.create",
                session_id: Some(id.as_str()),
                outcome: "replayed",
                detail: None,
            };
            audit(&st, a).await;
            let replayed = [(idempotency::REPLAYED, "true")];
            Ok((
                StatusCode::CREATED,
                replayed,
                Json(created(&st, &base, &rec)),
            )
                .into_response())
        }
        Begin::Create => {
            // A task of its own: the create and the key's record finish
            // even when the client hangs up, so its retry finds them.
            let task = tokio::spawn(async move {
                let made = create_session(&st, &p, ip, &base, req).await;
                let id = made
                    .as_ref()
                    .ok()
                    .and_then(|c| SessionId::parse(&c.session_id));
                idempotency::finish(st.manager.store(), &p.user, &key, id.as_ref()).await;
                made
            });
            let made = task
                .await
                .map_err(|e| CoreError::Internal(format!("create task failed: {e}")))??;
            Ok((StatusCode::CREATED, Json(made)).into_response())
        }
    }
}

/// The create answer for `rec`.
fn created<R, S>(st: &AppState<R, S>, base: &str, rec: &SessionRecord) -> CreateSessionResponse {
    CreateSessionResponse {
        session_id: rec.id.to_string(),
        container_id: rec.container_id.clone().unwrap_or_default(),
        status: rec.state.seed_status(),
        endpoints: endpoints_for(st, base, rec),
        state: rec.state,
    }
}

/// The per-user session limit, held across a create (or fork) so
/// concurrent ones cannot all pass it: in this process, and across
/// replicas (a job lock in the store, released when dropped).
struct SessionQuota<R: Runtime, S: ServerStore> {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _cluster: Option<crate::cluster::UserCreateLock<R, S>>,
}

impl<R: Runtime, S: ServerStore> SessionQuota<R, S> {
    /// Holds the user's create lock; `409 too_many_sessions` when `adding`
    /// more sessions would pass the limit.
    async fn hold(
        st: &AppState<R, S>,
        p: &Principal,
        ip: ClientIp,
        adding: usize,
    ) -> Result<Self, ApiError> {
        let local = st.access.create_lock(&p.user).lock_owned().await;
        let cluster = match st.access.config.max_sessions_per_user {
            Some(_) => Some(crate::cluster::UserCreateLock::acquire(&st.manager, &p.user).await?),
            None => None,
        };
        if let Some(max) = st.access.config.max_sessions_per_user {
            let live = st.manager.list(true).await?;
            if live.iter().filter(|r| r.owner == p.user).count() + adding > max {
                let a = Audit {
                    actor: &p.user,
                    ip,
                    action: "limit.hit",
                    session_id: None,
                    outcome: "too_many_sessions",
                    detail: Some(format!("limit {max}")),
                };
                audit(st, a).await;
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many_sessions",
                    format!(
                        "you may have {max} live sessions (sleeping ones count); delete one first"
                    ),
                ));
            }
        }
        Ok(Self {
            _local: local,
            _cluster: cluster,
        })
    }
}

/// Checks the request against the policy and limits, creates the session
/// and audits the outcome.
async fn create_session<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    base: &str,
    req: CreateSessionRequest,
) -> Result<CreateSessionResponse, ApiError> {
    // Before the per-user lock: the upstream may take up to its timeout.
    if st.config.check_api_key {
        let upstream = &st.config.anthropic_upstream;
        if let Verdict::Refused(status) = check_api_key(upstream, &req.claude_api_key).await {
            let a = Audit {
                actor: &p.user,
                ip,
                action: "session.create",
                session_id: None,
                outcome: "invalid_api_key",
                detail: Some(format!("upstream answered {status}")),
            };
            audit(st, a).await;
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_api_key",
                format!("the Anthropic API refused this claudeApiKey ({status})"),
            ));
        }
    }
    let _quota = SessionQuota::hold(st, p, ip, 1).await?;
    let made = st
        .manager
        .create(CreateSession {
            repo_url: req.repo_url,
            branch: req.branch,
            claude_api_key: req.claude_api_key,
            repo_token: req.repo_token,
            config: req.config,
            options: req.options,
            owner: p.user.clone(),
        })
        .await;
    let rec = match made {
        Ok(rec) => rec,
        Err(e) => {
            let e = ApiError::from(e);
            let a = Audit {
                actor: &p.user,
                ip,
                action: "session.create",
                session_id: None,
                outcome: e.code,
                detail: None,
            };
            audit(st, a).await;
            return Err(e);
        }
    };
    audit_started(st, p, ip, &rec, "session.create", None).await;
    Ok(created(st, base, &rec))
}

/// Audits a session's start: `action` (its create or fork) and its
/// container's start.
async fn audit_started<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    rec: &SessionRecord,
    action: &str,
    detail: Option<String>,
) {
    let sid = rec.id.to_string();
    for (action, detail) in [
        (action, detail),
        ("container.start", rec.container_id.clone()),
    ] {
        let a = Audit {
            actor: &p.user,
            ip,
            action,
            session_id: Some(&sid),
            outcome: "ok",
            detail,
        };
        audit(st, a).await;
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn list<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<SessionStatus>>, ApiError> {
    let Query(q) = query?;
    let base = public_base(&st.config, &headers);
    require_user_token(&p)?;
    let records = st.manager.list(!q.all).await?;
    Ok(Json(
        records
            .iter()
            .filter(|r| p.may_access(r.id.as_str(), &r.owner))
            .map(|r| status_of(&st, r, &base))
            .collect(),
    ))
}

pub(super) async fn status<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SessionStatus>, ApiError> {
    let rec = owned(&st, &p, &id).await?;
    let mut status = status_of(&st, &rec, &public_base(&st.config, &headers));
    // Best effort: a slow or failing runtime must not fail the status.
    let usage = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        st.manager.usage(rec.id.as_str()),
    )
    .await;
    if let Ok(Ok(Some(u))) = usage {
        status.resources = Some(cc_wire::api::ContainerResources {
            cpu_percent: u.cpu_percent,
            memory_bytes: u.memory_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            network_rx_bytes: u.net_rx_bytes,
            network_tx_bytes: u.net_tx_bytes,
            pids: u.pids,
            workspace_bytes: u.workspace_bytes,
            workspace_limit_bytes: st.manager.config().workspace_limit,
        });
    }
    Ok(Json(status))
}

pub(super) async fn delete<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    owned(&st, &p, &id).await?;
    let result = st.manager.terminate(&id).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => error_code(e),
    };
    for action in ["session.delete", "container.stop"] {
        let a = Audit {
            actor: &p.user,
            ip,
            action,
            session_id: Some(&id),
            outcome,
            detail: None,
        };
        audit(&st, a).await;
    }
    let rec = result?;
    Ok(Json(DeleteResponse {
        session_id: rec.id.to_string(),
        status: rec.state.seed_status(),
        state: rec.state,
    }))
}

/// `POST …/fork`: new sessions from a copy of this one's workspace and
/// conversation, each with its own container, token and branch.
pub(super) async fn fork<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<ForkResponse>), ApiError> {
    require_user_token(&p)?;
    let parent = owned(&st, &p, &id).await?;
    // The body is optional: none forks once.
    let req: ForkRequest = match body.is_empty() {
        true => ForkRequest::default(),
        false => serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body is not a fork request: {e}"),
            )
        })?,
    };
    let count = req.count.unwrap_or(1) as usize;
    let forked = async {
        cc_core::session::check_fork_count(count)?;
        let _quota = SessionQuota::hold(&st, &p, ip, count).await?;
        st.manager
            .fork(parent.id.as_str(), count, req.command)
            .await
            .map_err(ApiError::from)
    }
    .await;
    let forks = match forked {
        Ok(f) => f,
        Err(e) => {
            let a = Audit {
                actor: &p.user,
                ip,
                action: "session.fork",
                session_id: Some(&id),
                outcome: e.code,
                detail: None,
            };
            audit(&st, a).await;
            return Err(e);
        }
    };
    for rec in &forks {
        let detail = Some(format!("parent={}", parent.id));
        audit_started(&st, &p, ip, rec, "session.fork", detail).await;
    }
    let base = public_base(&st.config, &headers);
    Ok((
        StatusCode::CREATED,
        Json(ForkResponse {
            parent_id: parent.id.to_string(),
            sessions: forks.iter().map(|r| created(&st, &base, r)).collect(),
        }),
    ))
}

/// Why a session was put to sleep by hand, as its status gives it.
const REASON_SLEEP_REQUESTED: &str = "put to sleep by request";

/// `POST …/sleep`: the session's container goes, its workspace and
/// conversation stay; `409` during a turn.
pub(super) async fn sleep<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SessionStatus>, ApiError> {
    owned(&st, &p, &id).await?;
    let result = st
        .manager
        .sleep(&id, REASON_SLEEP_REQUESTED.to_owned())
        .await;
    audit_lifecycle(&st, &p, ip, "session.sleep", &id, &result).await;
    let rec = result?;
    Ok(Json(status_of(
        &st,
        &rec,
        &public_base(&st.config, &headers),
    )))
}

/// `POST …/wake`: starts a sleeping session again (any use does); it is
/// `starting` in the answer and `ready` once Claude Code resumed.
pub(super) async fn wake<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SessionStatus>, ApiError> {
    let before = owned(&st, &p, &id).await?;
    let result = st.manager.wake(&id).await;
    if before.state == cc_wire::api::SessionState::Sleeping {
        audit_lifecycle(&st, &p, ip, "session.wake", &id, &result).await;
    }
    let rec = result?;
    Ok(Json(status_of(
        &st,
        &rec,
        &public_base(&st.config, &headers),
    )))
}

/// Audits a sleep or wake by `p` (an admin's is marked as such).
async fn audit_lifecycle<R: Runtime, S: ServerStore, T>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    action: &str,
    id: &str,
    result: &Result<T, CoreError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => error_code(e),
    };
    let cause = if p.is_admin() {
        "cause=admin"
    } else {
        "cause=api"
    };
    let a = Audit {
        actor: &p.user,
        ip,
        action,
        session_id: Some(id),
        outcome,
        detail: Some(cause.into()),
    };
    audit(st, a).await;
}

pub(super) async fn command<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommandRequest>,
) -> Result<(StatusCode, Json<CommandResponse>), ApiError> {
    owned(&st, &p, &id).await?;
    let bytes = req.command.len();
    let overrides = req.overrides();
    let state = st.manager.command_with(&id, req.command, overrides).await;
    audit_command(&st, &p, ip, &id, bytes, state.as_ref().err()).await;
    let state = state?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CommandResponse {
            session_id: id,
            accepted: true,
            state,
        }),
    ))
}

/// Audits a command by its length only: its text may hold anything the
/// user typed (see `cc_core::audit`).
pub(super) async fn audit_command<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    id: &str,
    bytes: usize,
    err: Option<&CoreError>,
) {
    let a = Audit {
        actor: &p.user,
        ip,
        action: "session.command",
        session_id: Some(id),
        outcome: err.map_or("ok", error_code),
        detail: Some(format!("{bytes} bytes")),
    };
    audit(st, a).await;
}

pub(super) async fn interrupt<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    owned(&st, &p, &id).await?;
    let interrupted = st.manager.interrupt(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "sessionId": id, "interrupted": interrupted })),
    ))
}

/// Answers a permission question the session waits on (the REST twin of
/// the WebSocket's `permissionResponse`). The first answer wins; a later
/// one is `409 permission_already_answered`, an unknown request `404
/// permission_not_found`.
pub(super) async fn answer_permission<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path((id, request_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<PermissionResponse>,
) -> Result<Json<PermissionAnswered>, ApiError> {
    owned(&st, &p, &id).await?;
    let decision = answer_and_audit(&st, &p, ip, &id, &request_id, &req).await?;
    Ok(Json(PermissionAnswered {
        session_id: id,
        request_id: decision.request_id,
        tool: decision.tool,
        allow: decision.allow,
        always: decision.always,
    }))
}

/// Relays a person's answer and audits it, with who gave it — whatever
/// came of it (a second answer, an unknown request).
pub(super) async fn answer_and_audit<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    id: &str,
    request_id: &str,
    req: &PermissionResponse,
) -> Result<cc_wire::sessiond::PermissionDecision, CoreError> {
    let result = st
        .manager
        .answer_permission(id, request_id, req, &p.user)
        .await;
    let verdict = match (req.allow, req.always.unwrap_or(false)) {
        (true, true) => "allow always",
        (true, false) => "allow",
        (false, _) => "deny",
    };
    // The request id only when it is one (it is the client's text).
    let shown = cc_core::session::permissions::check_request_id(request_id)
        .map_or("(malformed)", |()| request_id);
    let detail = match &result {
        Ok(d) => format!("request {shown}: {verdict} {}", d.tool),
        Err(_) => format!("request {shown}: {verdict}"),
    };
    let a = Audit {
        actor: &p.user,
        ip,
        action: "permission.answer",
        session_id: Some(id),
        outcome: result.as_ref().err().map_or("ok", error_code),
        detail: Some(detail),
    };
    audit(st, a).await;
    result
}

/// The session's changes (committed, uncommitted, new files) against the
/// commit it started from, with a summary and the commits as patches.
pub(super) async fn diff<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<cc_wire::api::SessionDiff>, ApiError> {
    owned(&st, &p, &id).await?;
    Ok(Json(st.manager.diff(&id).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct FilesQuery {
    /// Relative to the checkout; absent or empty is its root.
    #[serde(default)]
    path: String,
}

/// One file or directory of the session's checkout. sessiond confines the
/// path to the checkout and keeps `.git` out; its 400/403/404 answers come
/// back as `invalid_path`, `forbidden_path` and `path_not_found`.
pub(super) async fn files<R: Runtime, S: Store>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<cc_wire::api::SessionPath>, ApiError> {
    let Query(q) = query?;
    owned(&st, &p, &id).await?;
    Ok(Json(st.manager.files(&id, &q.path).await?))
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
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogsResponse>, ApiError> {
    let Query(q) = query?;
    owned(&st, &p, &id).await?;
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
