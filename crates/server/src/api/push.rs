//! `POST /api/v1/sessions/{id}/push`: the session's work to a branch of its
//! repository, and optionally a pull request from it.
//!
//! The branch is checked here against the push rules (so a bad request is
//! refused before anything runs), then sessiond commits uncommitted work
//! and runs `git push` in the container — through the git relay, which
//! checks the same rules again, refuses force pushes and adds the
//! repository token. The pull request is opened from the orchestrator with
//! that token; it never enters the container.

use super::sessions::owned;
use super::{ApiError, ApiJson, AppState};
use crate::auth::{audit, error_code, Audit, ClientIp, ServerStore};
use crate::forge::{self, PullRequestSpec};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cc_core::session::notices::on_api;
use cc_core::webhook::EventKind;
use cc_core::{session_branch, Principal, Runtime, SessionRecord};
use cc_wire::api::{
    short_commit, PullRequest, PullRequestOptions, PushRequest, PushResponse, ServerMessage,
};
use cc_wire::sessiond::PushOutcome;

/// Longest pull request title taken from a result's first line.
const MAX_TITLE_CHARS: usize = 72;
/// Events read per page while looking for the last result.
const LOG_PAGE: usize = 1000;

pub(super) async fn push<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PushRequest>,
) -> Result<Json<PushResponse>, ApiError> {
    let rec = owned(&st, &p, &id).await?;
    let branch = req
        .branch
        .clone()
        .unwrap_or_else(|| session_branch(&rec.id));
    // The name as audit records and logs show it: control characters
    // escaped (a CR/LF would forge a line, an escape sequence rewrite a
    // terminal); a name git accepts has none and reads as it is.
    let shown = branch.escape_debug().to_string();
    let audited = |outcome: &'static str, detail: String| {
        record(
            &st,
            &p,
            ip,
            rec.id.as_str(),
            "session.push",
            outcome,
            detail,
        )
    };
    let checked = st
        .config
        .git
        .push
        .check_branch(&rec.id, rec.branch.as_deref(), &branch);
    if let Err(refusal) = checked {
        audited("push_refused", format!("{shown}: {refusal}")).await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "push_refused",
            refusal.to_string(),
        ));
    }
    let pushed = st
        .manager
        .push(
            &id,
            cc_wire::sessiond::PushRequest {
                branch: branch.clone(),
                message: req.message.clone(),
            },
        )
        .await;
    let outcome = match pushed {
        Ok(o) => {
            audited("ok", format!("{shown} at {}", short_commit(&o.commit))).await;
            o
        }
        Err(e) => {
            audited(error_code(&e), format!("{shown}: {e}")).await;
            return Err(e.into());
        }
    };
    let notices = st.manager.config().notices.as_ref();
    let pushed = serde_json::json!({
        "branch": outcome.branch,
        "commit": outcome.commit,
        "created": outcome.created,
        "committedChanges": outcome.committed_changes,
    });
    on_api(notices, &rec, EventKind::SessionPushed, pushed);
    let pull_request = match req.pull_request {
        Some(opts) => {
            let pr = open_pull_request(&st, &p, ip, &rec, &outcome, opts).await?;
            let opened = serde_json::json!({ "branch": outcome.branch, "pullRequest": pr });
            on_api(notices, &rec, EventKind::PullRequestOpened, opened);
            Some(pr)
        }
        None => None,
    };
    Ok(Json(PushResponse {
        session_id: id,
        branch: outcome.branch,
        commit: outcome.commit,
        created: outcome.created,
        committed_changes: outcome.committed_changes,
        pull_request,
    }))
}

/// Opens the pull request after a successful push; its errors say that the
/// branch is pushed, so the client knows what happened.
async fn open_pull_request<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    rec: &SessionRecord,
    pushed: &PushOutcome,
    opts: PullRequestOptions,
) -> Result<PullRequest, ApiError> {
    let result = try_open(st, rec, pushed, opts).await;
    let (outcome, detail) = match &result {
        Ok(pr) => ("ok", format!("#{} {}", pr.number, pr.url)),
        Err(e) => (e.code, e.message.clone()),
    };
    record(st, p, ip, rec.id.as_str(), "pr.create", outcome, detail).await;
    result.map_err(|mut e| {
        e.message = format!(
            "pushed {} at {}, but the pull request was not opened: {}",
            pushed.branch,
            short_commit(&pushed.commit),
            e.message
        );
        e
    })
}

/// One audit record of the user's push or pull request.
async fn record<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    session: &str,
    action: &str,
    outcome: &str,
    detail: String,
) {
    let a = Audit {
        actor: &p.user,
        ip,
        action,
        session_id: Some(session),
        outcome,
        detail: Some(detail),
    };
    audit(st, a).await;
}

async fn try_open<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    rec: &SessionRecord,
    pushed: &PushOutcome,
    opts: PullRequestOptions,
) -> Result<PullRequest, ApiError> {
    let invalid =
        |code: &'static str, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let creds = st
        .manager
        .credentials()
        .get(&rec.id)
        .ok_or_else(|| invalid("session_not_active", "the session has ended".into()))?;
    let token = creds.repo_token.as_deref().ok_or_else(|| {
        invalid(
            "no_repo_token",
            "opening a pull request needs the session's repoToken".into(),
        )
    })?;
    let mut forges = st.config.git.forges.clone();
    forges.extend(forge::default_forges());
    let (forge, project) = forge::forge_for(&forges, &rec.repo_url).ok_or_else(|| {
        invalid(
            "no_forge",
            format!(
                "no forge API is configured for {}; an admin can add one with `serve --forge`",
                rec.repo_url
            ),
        )
    })?;
    let base = opts
        .base
        .or_else(|| rec.branch.clone())
        .or_else(|| pushed.default_branch.clone())
        .ok_or_else(|| {
            invalid(
                "no_base_branch",
                "the branch the session started from is unknown; name one in pullRequest.base"
                    .into(),
            )
        })?;
    let last = last_result(st, rec).await;
    let title = opts
        .title
        .or_else(|| last.as_deref().and_then(title_of))
        .unwrap_or_else(|| format!("Work from ClaudeCluster session {}", rec.id));
    let body = opts.body.unwrap_or_else(|| {
        let mut body = last.unwrap_or_default();
        if !body.is_empty() {
            body.push_str("\n\n");
        }
        body.push_str(&format!(
            "Opened by ClaudeCluster from session `{}`.",
            rec.id
        ));
        body
    });
    let spec = PullRequestSpec {
        title: &title,
        body: &body,
        head: &pushed.branch,
        base: &base,
        draft: opts.draft,
    };
    let client = forge::client().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("building the forge client: {e}"),
        )
    })?;
    let opened = forge::open_pull_request(&client, forge, &project, token, &spec)
        .await
        .map_err(|e| {
            let status = match e {
                // Nothing was sent: the repository or token cannot be used.
                forge::ForgeError::Invalid(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            ApiError::new(status, e.code(), e.to_string())
        })?;
    Ok(PullRequest {
        number: opened.number,
        url: opened.url,
        base,
    })
}

/// The text of the session's last `result`, if a turn ended with one.
async fn last_result<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    rec: &SessionRecord,
) -> Option<String> {
    let mut since = 0;
    let mut last = None;
    loop {
        let page = st
            .manager
            .logs(rec.id.as_str(), since, LOG_PAGE)
            .await
            .ok()?;
        let Some(end) = page.last().map(ServerMessage::seq) else {
            return last;
        };
        for m in &page {
            if let Some(text) = result_text(m) {
                last = Some(text);
            }
        }
        if page.len() < LOG_PAGE {
            return last;
        }
        since = end;
    }
}

fn result_text(m: &ServerMessage) -> Option<String> {
    let event = match m {
        ServerMessage::Output { event, .. } => event.as_ref()?,
        ServerMessage::Claude { event, .. } => event,
        _ => return None,
    };
    if event.get("type")?.as_str()? != "result" {
        return None;
    }
    let text = event.get("result")?.as_str()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The first non-empty line, without Markdown heading marks, cut short.
fn title_of(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .find(|l| !l.is_empty())?;
    let mut title: String = line.chars().take(MAX_TITLE_CHARS).collect();
    if line.chars().count() > MAX_TITLE_CHARS {
        title.pop();
        title.push('…');
    }
    Some(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_is_the_first_line_cut_short() {
        assert_eq!(
            title_of("\n## Fixed the bug\nmore").as_deref(),
            Some("Fixed the bug")
        );
        let long = "x".repeat(100);
        let t = title_of(&long).unwrap();
        assert_eq!(t.chars().count(), MAX_TITLE_CHARS);
        assert!(t.ends_with('…'));
        assert_eq!(title_of("  \n \n"), None);
    }

    #[test]
    fn only_result_events_carry_a_result() {
        let result = ServerMessage::Claude {
            seq: 3,
            timestamp: 0,
            event: serde_json::json!({"type": "result", "result": " done \n"}),
        };
        assert_eq!(result_text(&result).as_deref(), Some("done"));
        let other = ServerMessage::Claude {
            seq: 4,
            timestamp: 0,
            event: serde_json::json!({"type": "assistant", "result": "x"}),
        };
        assert_eq!(result_text(&other), None);
    }
}
