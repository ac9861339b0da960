//! The git relay: smart-HTTP clone, fetch and push of the session's own
//! repository. The container only knows the relay URL; the relay checks the
//! session token and forwards to the repository the session was created
//! for, adding the session's repository token (`repoToken`) when it has
//! one, and only while that repository's host passes the public-address
//! check (see [`super::check_upstream`]). A push is forwarded only once every ref update in it passed the
//! push rules ([`super::push`]); a refusal is audited.

use super::push::{self, PushRequest, Reservation, MAX_PUSH_BYTES};
use super::{
    authenticate, check_upstream, read_whole, refuse, relay_response, with_streamed_body,
    BodyError, GatewayState,
};
use crate::auth::container_audit::SYSTEM_ACTOR;
use crate::auth::{audit_to, Audit, ClientIp};
use crate::ServerStore;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, Response, StatusCode};
use base64::Engine as _;
use cc_core::{Runtime, SessionCredentials, SessionId};
use std::sync::Arc;

/// Request headers git's smart protocol needs upstream.
const FORWARDED: &[&str] = &[
    "accept",
    "accept-encoding",
    "content-type",
    "content-encoding",
    "git-protocol",
    "user-agent",
];

/// Audit action of every push the relay sees.
const PUSH_ACTION: &str = "git.push";

pub(super) async fn relay<R: Runtime, S: ServerStore>(
    State(st): State<GatewayState<R, S>>,
    Path((session, rest)): Path<(String, String)>,
    req: Request,
) -> Response<Body> {
    let (session, creds) = match authenticate(&st, &session, req.headers()).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let is_push = match (req.method(), rest.as_str()) {
        (&Method::GET, "info/refs") => {
            if query != "service=git-upload-pack" && query != "service=git-receive-pack" {
                return refuse(StatusCode::FORBIDDEN, "unknown git service");
            }
            false
        }
        (&Method::POST, "git-upload-pack") => false,
        (&Method::POST, "git-receive-pack") => true,
        _ => {
            return refuse(
                StatusCode::FORBIDDEN,
                "only clone, fetch and push of the session's repository are relayed",
            )
        }
    };
    if let Err(refusal) = check_upstream(&st, &creds.repo_url).await {
        return refusal;
    }
    let mut url = format!("{}/{rest}", creds.repo_url);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    let mut upstream = st.git_client.request(req.method().clone(), &url);
    for name in FORWARDED {
        if let Some(v) = req.headers().get(*name) {
            upstream = upstream.header(*name, v);
        }
    }
    if let Some(header) = auth_header(&creds) {
        upstream = upstream.header("authorization", header);
    }
    // A push is read whole to be checked, and leaves with its length; the
    // rest is streamed as the client framed it.
    let (upstream, pushed) = if is_push {
        match checked_push(&st, &session, &creds, req).await {
            Ok(allowed) => (upstream.body(allowed.body.clone()), Some(allowed)),
            Err(refusal) => return refusal,
        }
    } else {
        (with_streamed_body(upstream, req), None)
    };
    let answer = upstream.send().await;
    // Dropping `pushed` afterwards gives its memory back.
    if let Some(refs) = pushed.as_ref().and_then(|p| p.refs.clone()) {
        // The upstream's per-ref verdict is inside its answer; its HTTP
        // status says whether it took the request at all.
        let (outcome, detail) = match &answer {
            Ok(resp) if resp.status().is_success() => ("ok", refs),
            Ok(resp) => (
                "upstream_refused",
                format!("{refs}: HTTP {}", resp.status()),
            ),
            Err(_) => ("upstream_unreachable", refs),
        };
        let owner = pushed.as_ref().and_then(|p| p.owner.as_deref());
        audit_push(&st, &session, owner, outcome, detail).await;
    }
    match answer {
        Ok(resp) => relay_response(resp),
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "git upstream unreachable");
            refuse(
                StatusCode::BAD_GATEWAY,
                "the repository's git server is unreachable",
            )
        }
    }
}

/// The `Authorization` value for the upstream. GitHub and GitLab both take
/// a token as the password of any user.
fn auth_header(creds: &SessionCredentials) -> Option<String> {
    creds.repo_token.as_ref().map(|token| {
        let pair = format!("x-access-token:{token}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    })
}

/// A push that passed the rules, to audit once the upstream has answered.
struct Allowed {
    body: bytes::Bytes,
    /// The ref updates, for the audit record; `None` for git's empty probe.
    refs: Option<String>,
    /// The session's owner, the actor of the audit record.
    owner: Option<String>,
    /// The body's memory, held until it has been forwarded.
    _held: Reservation,
}

/// The whole push request, within [`MAX_PUSH_BYTES`] and the gateway's
/// memory for pushes in flight; else the status and reason to refuse it.
async fn read_body(
    req: Request,
    held: &mut Reservation,
) -> Result<bytes::Bytes, (StatusCode, String)> {
    read_whole(req, held, MAX_PUSH_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::Compressed => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed push requests are not supported".to_owned(),
            ),
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a push is limited to {} MiB", MAX_PUSH_BYTES >> 20),
            ),
            BodyError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is taking in other large pushes; try again in a moment".to_owned(),
            ),
            BodyError::Broken(e) => (
                StatusCode::BAD_REQUEST,
                format!("the push request broke off: {e}"),
            ),
        })
}

/// Reads a push and checks it; what to forward, or the answer that refuses
/// it (audited).
async fn checked_push<R: Runtime, S: ServerStore>(
    st: &GatewayState<R, S>,
    session: &SessionId,
    creds: &SessionCredentials,
    req: Request,
) -> Result<Allowed, Response<Body>> {
    // Read once: its owner is the actor of every audit record of this
    // push, its branch the base the push may not touch.
    let rec = st.manager.get(session.as_str()).await.ok();
    let owner = rec
        .as_ref()
        .map(|r| r.owner.clone())
        .filter(|o| !o.is_empty());
    let branch = rec.and_then(|r| r.branch);
    let actor = owner.as_deref();
    let refused = |status: StatusCode, reason: String| async move {
        audit_push(st, session, actor, "push_refused", reason.clone()).await;
        Err(refuse(status, &reason))
    };
    let mut held = st.push_budget.reserve();
    let body = match read_body(req, &mut held).await {
        Ok(body) => body,
        Err((status, reason)) => return refused(status, reason).await,
    };
    let parsed = match push::parse(&body) {
        Ok(p) => p,
        Err(e) => return refused(StatusCode::BAD_REQUEST, format!("malformed push: {e}")).await,
    };
    // git probes with an empty request before a large push.
    if parsed.updates.is_empty() {
        return Ok(Allowed {
            body,
            refs: None,
            owner,
            _held: held,
        });
    }
    let refs = parsed
        .updates
        .iter()
        .map(push::RefUpdate::describe)
        .collect::<Vec<_>>()
        .join(", ");
    let verdict = verdict(st, session, creds, branch.as_deref(), &parsed).await;
    forget_ended(st).await;
    match verdict {
        Ok(()) => Ok(Allowed {
            body: body.clone(),
            refs: Some(refs),
            owner,
            _held: held,
        }),
        Err(reason) => {
            tracing::info!(session = %session, %reason, "push refused");
            let detail = format!("{refs}: {reason}");
            audit_push(st, session, owner.as_deref(), "push_refused", detail).await;
            Err(refusal(&parsed, &reason))
        }
    }
}

/// One `git.push` audit record, in the name of the session's owner.
async fn audit_push<R: Runtime, S: ServerStore>(
    st: &GatewayState<R, S>,
    session: &SessionId,
    owner: Option<&str>,
    outcome: &str,
    detail: String,
) {
    let a = Audit {
        actor: owner.unwrap_or(SYSTEM_ACTOR),
        ip: ClientIp(None),
        action: PUSH_ACTION,
        session_id: Some(session.as_str()),
        outcome,
        detail: Some(detail),
    };
    audit_to(st.manager.store(), &st.access, a).await;
}

/// Every update of the push against the push rules; the first reason to
/// refuse it.
async fn verdict<R: Runtime, S: ServerStore>(
    st: &GatewayState<R, S>,
    session: &SessionId,
    creds: &SessionCredentials,
    branch: Option<&str>,
    parsed: &PushRequest<'_>,
) -> Result<(), String> {
    let base = base_branch(st, session, creds, branch).await;
    for u in &parsed.updates {
        st.config
            .git
            .push
            .check_ref(session, base.as_deref(), &u.refname)
            .map_err(|r| r.0)?;
        if u.is_delete() {
            return Err(format!("deleting {} is not allowed", u.refname));
        }
    }
    if parsed.updates.iter().all(push::RefUpdate::is_create) {
        return Ok(());
    }
    let lock = {
        let mut locks = st.push_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(session.clone()).or_default().clone()
    };
    let _one_at_a_time = lock.lock().await;
    let auth = auth_header(creds);
    let olds: Vec<&str> = parsed
        .updates
        .iter()
        .filter(|u| !u.is_create())
        .map(|u| u.old.as_str())
        .collect();
    // Dropped unkept on every refusal below: the pack leaves the mirror.
    let (mirror, pushed) = st
        .mirrors
        .prepare(
            session,
            &creds.repo_url,
            auth.as_deref(),
            &olds,
            parsed.pack,
        )
        .await
        .map_err(|e| {
            tracing::warn!(session = %session, error = %e, "fast-forward check");
            "the fast-forward check could not be made".to_owned()
        })?;
    for u in parsed.updates.iter().filter(|u| !u.is_create()) {
        let mut answer = push::Mirrors::is_ancestor(&mirror, &u.old, &u.new).await;
        if !matches!(answer, Ok(true)) {
            // History between the two that the mirror has not fetched yet
            // (e.g. a merge of a branch that moved upstream) makes git fail,
            // or, with some versions, answer "no": ask again after a fetch.
            let refreshed = st
                .mirrors
                .refresh(session, &creds.repo_url, auth.as_deref())
                .await;
            if refreshed.is_ok() {
                answer = push::Mirrors::is_ancestor(&mirror, &u.old, &u.new).await;
            }
        }
        match answer {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "force pushes are not allowed: {} is not a fast-forward of {}",
                    cc_wire::api::short_commit(&u.new),
                    u.refname
                ))
            }
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "fast-forward check");
                return Err("the fast-forward check could not be made".into());
            }
        }
    }
    pushed.keep();
    Ok(())
}

/// The branch the session started from: the one it was created with
/// (`branch`), else the repository's default branch as its server
/// advertises it (asked once per session: each ask costs the upstream a
/// full ref advertisement).
async fn base_branch<R: Runtime, S: ServerStore>(
    st: &GatewayState<R, S>,
    session: &SessionId,
    creds: &SessionCredentials,
    branch: Option<&str>,
) -> Option<String> {
    if let Some(b) = branch {
        return Some(b.to_owned());
    }
    let known = st
        .default_branches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(session)
        .cloned();
    if known.is_some() {
        return known;
    }
    let head = advertised_default_branch(st, creds).await?;
    st.default_branches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(session.clone(), head.clone());
    Some(head)
}

async fn advertised_default_branch<R: Runtime, S: ServerStore>(
    st: &GatewayState<R, S>,
    creds: &SessionCredentials,
) -> Option<String> {
    let url = format!("{}/info/refs?service=git-upload-pack", creds.repo_url);
    let mut req = st.git_client.get(url);
    if let Some(header) = auth_header(creds) {
        req = req.header("authorization", header);
    }
    let advert = req
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .ok()?
        .bytes()
        .await
        .ok()?;
    push::advertised_head(&advert)
}

/// Drops the mirrors, push locks and known default branches of sessions
/// that ended.
async fn forget_ended<R: Runtime, S: ServerStore>(st: &GatewayState<R, S>) {
    if let Ok(live) = st.manager.list(true).await {
        let live: std::collections::HashSet<String> =
            live.into_iter().map(|r| r.id.to_string()).collect();
        st.push_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, lock| live.contains(id.as_str()) || Arc::strong_count(lock) > 1);
        st.default_branches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live.contains(id.as_str()));
        st.mirrors.prune(|id| live.contains(id)).await;
    }
}

fn refusal(parsed: &PushRequest<'_>, reason: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .extension(crate::metrics::Refused)
        .header("content-type", "application/x-git-receive-pack-result")
        .header("cache-control", "no-cache")
        .body(Body::from(push::refusal_report(parsed, reason)))
        .unwrap_or_default()
}
