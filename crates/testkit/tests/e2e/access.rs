//! Access control end to end: the harness's user runs a real session
//! (its WebSocket opened with the session token from `endpoints`), another
//! user cannot see it, requests without a token are refused, and the audit
//! log records it all in a chain that verifies.

use super::{ready_session, run_turn};
use cc_core::audit::{verify, AuditRecord};
use cc_testkit::harness::{output_text, HARNESS_USER};
use cc_testkit::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_session_is_theirs_and_audited() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let http = reqwest::Client::new();
    let base = h.client.base_url().to_owned();

    let resp = http.get(format!("{base}/api/v1/sessions")).send().await?;
    assert_eq!(resp.status().as_u16(), 401);

    let (id, mut ws, _) = ready_session(&h, "access").await?;
    let seen = run_turn(&mut ws, "say: hello from an owned session").await?;
    assert!(
        output_text(&seen).contains("hello from an owned session"),
        "{}",
        cc_testkit::harness::summary(&seen)
    );

    // Another user, made by the admin through the API.
    let created: serde_json::Value = http
        .post(format!("{base}/api/v1/admin/tokens"))
        .bearer_auth(&h.admin_token)
        .json(&serde_json::json!({"user": "other"}))
        .send()
        .await?
        .json()
        .await?;
    let other = cc_client::Client::with_token(
        base.clone(),
        Some(created["token"].as_str().expect("token").to_owned()),
    )?;
    let err = other.status(&id).await.expect_err("another user's session");
    assert_eq!(err.code(), Some("session_not_found"), "{err}");
    assert!(other.list(true).await?.is_empty());
    assert_eq!(h.admin.status(&id).await?.session_id, id);

    h.client.delete(&id).await?;
    ws.close().await;

    // The container's exit comes from the runtime's events, a moment later.
    let mut log: Vec<AuditRecord> = Vec::new();
    // Polled for up to a minute: the exit is recorded when Docker's event
    // arrives, which a loaded engine may delay.
    for _ in 0..600 {
        let page: serde_json::Value = http
            .get(format!("{base}/api/v1/audit?limit=1000"))
            .bearer_auth(&h.admin_token)
            .send()
            .await?
            .json()
            .await?;
        log = serde_json::from_value(page["records"].clone())?;
        if log.iter().any(|r| {
            r.event.action == "container.exit" && r.event.session_id.as_deref() == Some(&id)
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(verify(&log), Ok(log.len() as u64));
    let mine: Vec<(&str, &str)> = log
        .iter()
        .filter(|r| r.event.session_id.as_deref() == Some(id.as_str()))
        .map(|r| (r.event.actor.as_str(), r.event.action.as_str()))
        .collect();
    for action in [
        "session.create",
        "container.start",
        "session.command",
        "session.delete",
        "container.stop",
        "container.exit",
    ] {
        assert!(mine.contains(&(HARNESS_USER, action)), "{action}: {mine:?}");
    }
    assert!(log.iter().any(|r| r.event.action == "auth.failure"));
    // Never the Claude API key or the command text.
    let text = serde_json::to_string(&log)?;
    assert!(!text.contains(&h.api_key) && !text.contains("hello from"));
    h.shutdown().await;
    Ok(())
}
