//! Permission prompts over the API alone: a session in `default` mode runs
//! the real Claude Code, which asks before Bash runs; the question arrives
//! as a `permissionRequest`, and the answer — REST or WebSocket — decides
//! whether the tool runs (allow), the model is told no (deny), or the tool
//! is allowed from then on (always). Unanswered, it is denied at the
//! admin's timeout. A second answer is `409`, another user's `404`.

use super::{run_turn, READY_TIMEOUT, TURN_TIMEOUT};
use cc_client::ClientError;
use cc_testkit::harness::HarnessOptions;
use cc_testkit::harness::{is_state, output_text, read_until, summary, until_ready, HARNESS_USER};
use cc_testkit::Harness;
use cc_wire::api::{PermissionResponse, ServerMessage, SessionOptions, SessionState};
use std::time::Duration;

/// A ready session whose Claude Code asks before running a tool, with its
/// stream followed from the start.
async fn asking_session(
    h: &Harness,
    repo: &str,
) -> anyhow::Result<(String, cc_client::EventStream)> {
    let url = h.git.create_repo(repo, &[("README.md", "# Sample\n")])?;
    let mut req = h.create_request(&url, None);
    req.options = Some(SessionOptions {
        permission_mode: Some("default".into()),
        ..Default::default()
    });
    let created = h.client.create(&req).await?;
    let url = format!("{}&since=0", created.endpoints.websocket);
    let mut ws = cc_client::EventStream::connect(&url).await?;
    until_ready(&mut ws, READY_TIMEOUT).await?;
    Ok((created.session_id, ws))
}

/// Sends a command and reads until Claude Code asks; returns the
/// question's request id, tool and input.
async fn ask(
    ws: &mut cc_client::EventStream,
    command: &str,
) -> anyhow::Result<(String, String, serde_json::Value)> {
    ws.command(command).await?;
    let seen = read_until(ws, TURN_TIMEOUT, |m| {
        matches!(m, ServerMessage::PermissionRequest { .. })
            || is_state(m, SessionState::Ready)
            || is_state(m, SessionState::Error)
    })
    .await?;
    match seen.last() {
        Some(ServerMessage::PermissionRequest {
            request_id,
            tool,
            input,
            timestamp,
            seq,
        }) => {
            assert!(
                *seq > 0 && *timestamp > 1_700_000_000_000,
                "{seq} {timestamp}"
            );
            Ok((request_id.clone(), tool.clone(), input.clone()))
        }
        _ => anyhow::bail!("Claude Code did not ask: {}", summary(&seen)),
    }
}

/// Reads the rest of the turn (until `ready`).
async fn finish_turn(ws: &mut cc_client::EventStream) -> anyhow::Result<Vec<ServerMessage>> {
    read_until(ws, TURN_TIMEOUT, |m| {
        is_state(m, SessionState::Ready) || is_state(m, SessionState::Error)
    })
    .await
}

/// The `permissionAnswer` of `request_id` among `seen`.
fn answer_of<'a>(seen: &'a [ServerMessage], request_id: &str) -> &'a ServerMessage {
    seen.iter()
        .find(|m| matches!(m, ServerMessage::PermissionAnswer { request_id: r, .. } if r == request_id))
        .unwrap_or_else(|| panic!("no permissionAnswer for {request_id}: {}", summary(seen)))
}

/// The newest tool result the model double received.
fn last_tool_result(h: &Harness) -> (String, bool) {
    h.model
        .requests()
        .iter()
        .rev()
        .find_map(|r| r.tool_result.clone().map(|t| (t, r.tool_result_is_error)))
        .expect("the model received a tool result")
}

fn allow(always: bool) -> PermissionResponse {
    PermissionResponse {
        request_id: None,
        allow: true,
        message: None,
        always: always.then_some(true),
    }
}

async fn audit_log(h: &Harness) -> anyhow::Result<Vec<cc_core::audit::AuditRecord>> {
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/audit?action=permission.&limit=1000",
            h.client.base_url()
        ))
        .bearer_auth(&h.admin_token)
        .send()
        .await?
        .json()
        .await?;
    Ok(serde_json::from_value(page["records"].clone())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_allows_denies_and_always_allows_tools() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws) = asking_session(&h, "permissions").await?;

    // Allow (REST): the question, as the stream and the status show it.
    let (rid, tool, input) = ask(&mut ws, "bash: touch allowed-proof && echo allowed-ran").await?;
    assert_eq!(tool, "Bash");
    assert_eq!(input["command"], "touch allowed-proof && echo allowed-ran");
    let status = h.client.status(&id).await?;
    assert_eq!(status.state, SessionState::Busy);
    assert_eq!(status.pending_permissions.len(), 1, "{status:?}");
    assert_eq!(status.pending_permissions[0].request_id, rid);
    assert_eq!(status.pending_permissions[0].input, input);

    // Another user's token: the session does not exist for them.
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/admin/tokens", h.client.base_url()))
        .bearer_auth(&h.admin_token)
        .json(&serde_json::json!({"user": "someone-else"}))
        .send()
        .await?
        .json()
        .await?;
    let other = cc_client::Client::with_token(
        h.client.base_url(),
        Some(created["token"].as_str().expect("token").to_owned()),
    )?;
    match other.answer_permission(&id, &rid, &allow(false)).await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "session_not_found"))
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    // An unknown question of one's own session: 404 too, with its code.
    match h
        .client
        .answer_permission(&id, "no-such-request", &allow(false))
        .await
    {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "permission_not_found"))
        }
        other => panic!("expected a 404, got {other:?}"),
    }

    let answered = h.client.answer_permission(&id, &rid, &allow(false)).await?;
    assert!(answered.allow && !answered.always);
    assert_eq!(answered.tool, "Bash");
    // The first answer stands: a second one (a denial) is refused.
    let deny = PermissionResponse {
        request_id: Some(rid.clone()),
        allow: false,
        message: Some("too late".into()),
        always: None,
    };
    match h.client.answer_permission(&id, &rid, &deny).await {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            assert_eq!(
                (status, code.as_str()),
                (409, "permission_already_answered")
            );
            assert!(message.contains("first answer stands"), "{message}");
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    let turn = finish_turn(&mut ws).await?;
    match answer_of(&turn, &rid) {
        ServerMessage::PermissionAnswer {
            allow,
            source,
            answered_by,
            ..
        } => {
            assert!(*allow);
            assert_eq!(source, "answer");
            assert_eq!(answered_by.as_deref(), Some(HARNESS_USER));
        }
        _ => unreachable!(),
    }
    let text = output_text(&turn);
    assert!(text.contains("allowed-ran"), "{}", summary(&turn));
    let (result, is_error) = last_tool_result(&h);
    assert!(result.contains("allowed-ran") && !is_error, "{result}");
    assert!(h.client.files(&id, "allowed-proof").await.is_ok());
    assert!(h.client.status(&id).await?.pending_permissions.is_empty());

    // Deny (WebSocket), with a reason: the tool does not run, and the model
    // gets the reason as the tool's (error) result.
    let (rid, _, _) = ask(&mut ws, "bash: touch denied-proof").await?;
    ws.answer_permission(&rid, false, Some("not in this repository"), false)
        .await?;
    let turn = finish_turn(&mut ws).await?;
    match answer_of(&turn, &rid) {
        ServerMessage::PermissionAnswer { allow, message, .. } => {
            assert!(!*allow);
            assert_eq!(message.as_deref(), Some("not in this repository"));
        }
        _ => unreachable!(),
    }
    let (result, is_error) = last_tool_result(&h);
    assert!(
        result.contains("not in this repository") && is_error,
        "{result} {is_error}"
    );
    match h.client.files(&id, "denied-proof").await {
        Err(e) => assert_eq!(e.code(), Some("path_not_found"), "{e}"),
        Ok(p) => panic!("the denied tool ran: {p:?}"),
    }

    // Always (WebSocket): allowed now, and Bash is not asked about again.
    let (rid, _, _) = ask(&mut ws, "bash: touch always-one").await?;
    ws.answer_permission(&rid, true, None, true).await?;
    let turn = finish_turn(&mut ws).await?;
    match answer_of(&turn, &rid) {
        ServerMessage::PermissionAnswer { allow, always, .. } => assert!(*allow && *always),
        _ => unreachable!(),
    }
    let turn = run_turn(&mut ws, "bash: touch always-two && echo second-ran").await?;
    assert!(
        !turn
            .iter()
            .any(|m| matches!(m, ServerMessage::PermissionRequest { .. })),
        "{}",
        summary(&turn)
    );
    assert!(
        turn.iter().any(|m| matches!(
            m,
            ServerMessage::PermissionAnswer { source, allow: true, .. } if source == "always"
        )),
        "{}",
        summary(&turn)
    );
    assert!(
        output_text(&turn).contains("second-ran"),
        "{}",
        summary(&turn)
    );
    for file in ["always-one", "always-two"] {
        assert!(h.client.files(&id, file).await.is_ok(), "{file}");
    }

    // Every question and answer is in the audit log, with who answered;
    // never a tool's input.
    let log = audit_log(&h).await?;
    let mine: Vec<(&str, &str, &str)> = log
        .iter()
        .filter(|r| r.event.session_id.as_deref() == Some(id.as_str()))
        .map(|r| {
            (
                r.event.actor.as_str(),
                r.event.action.as_str(),
                r.event.outcome.as_str(),
            )
        })
        .collect();
    for expected in [
        (HARNESS_USER, "permission.request", "asked"),
        (HARNESS_USER, "permission.answer", "ok"),
        (
            HARNESS_USER,
            "permission.answer",
            "permission_already_answered",
        ),
        (HARNESS_USER, "permission.answer", "permission_not_found"),
        ("system", "permission.answer", "always"),
    ] {
        assert!(mine.contains(&expected), "{expected:?}: {mine:?}");
    }
    assert_eq!(
        mine.iter()
            .filter(|m| **m == (HARNESS_USER, "permission.request", "asked"))
            .count(),
        3,
        "{mine:?}"
    );
    let text = serde_json::to_string(&log)?;
    assert!(!text.contains("allowed-proof"), "{text}");
    ws.close().await;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_question_is_denied_at_the_timeout() -> anyhow::Result<()> {
    // The owner's webhook is told of the question: who could answer it.
    let receiver = cc_testkit::webhook_receiver::WebhookReceiver::start(0).await?;
    let rules = cc_server::webhook::WebhookConfig {
        user_hosts: vec![receiver.host_port()],
        allow_hosts: vec![receiver.host_port()],
    };
    let h = Harness::start_configured(
        HarnessOptions {
            webhooks: Some(rules),
            ..Default::default()
        },
        |c| {
            c.permission_timeout = Duration::from_secs(3);
        },
    )
    .await?;
    let hook = h
        .client
        .create_webhook(&cc_wire::api::WebhookRequest {
            url: receiver.url(),
            events: vec!["permission.requested".into()],
            description: None,
            all_sessions: false,
        })
        .await?;
    let (id, mut ws) = asking_session(&h, "permission-timeout").await?;
    let (rid, _, _) = ask(&mut ws, "bash: touch never-answered").await?;
    let got = receiver
        .wait_for(Duration::from_secs(60), |got| !got.is_empty())
        .await?;
    let body = got[0].json();
    assert!(got[0].verifies(&hook.secret), "{body}");
    assert_eq!(
        (
            &body["type"],
            &body["sessionId"],
            &body["data"]["requestId"],
            &body["data"]["tool"]
        ),
        (
            &serde_json::json!("permission.requested"),
            &serde_json::json!(id),
            &serde_json::json!(rid),
            &serde_json::json!("Bash")
        ),
        "{body}"
    );
    assert!(
        body["data"]["input"]["command"]
            .as_str()
            .is_some_and(|c| c.contains("touch never-answered")),
        "{body}"
    );
    let turn = finish_turn(&mut ws).await?;
    match answer_of(&turn, &rid) {
        ServerMessage::PermissionAnswer {
            allow,
            source,
            message,
            answered_by,
            ..
        } => {
            assert!(!*allow);
            assert_eq!(source, "timeout");
            assert!(answered_by.is_none());
            let why = message.as_deref().unwrap_or_default();
            assert!(why.contains("Nobody answered within 3 s"), "{why}");
        }
        _ => unreachable!(),
    }
    let (result, is_error) = last_tool_result(&h);
    assert!(
        result.contains("Nobody answered within 3 s") && is_error,
        "{result}"
    );
    match h.client.files(&id, "never-answered").await {
        Err(e) => assert_eq!(e.code(), Some("path_not_found"), "{e}"),
        Ok(p) => panic!("the tool ran: {p:?}"),
    }
    // Too late for an answer now.
    match h.client.answer_permission(&id, &rid, &allow(false)).await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!(
                (status, code.as_str()),
                (409, "permission_already_answered")
            )
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    let log = audit_log(&h).await?;
    assert!(
        log.iter().any(|r| r.event.action == "permission.answer"
            && r.event.actor == "system"
            && r.event.outcome == "timeout"),
        "{log:?}"
    );
    ws.close().await;
    h.shutdown().await;
    Ok(())
}
