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

/// Retries of a create with one `Idempotency-Key`, all at once, make one
/// session and one container; the session they all name reaches `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_key_make_one_container() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let url = h
        .git
        .create_repo("idempotent", &[("README.md", "# Once\n")])?;
    let req = h.create_request(&url, None);
    let key = format!("ci-run-{}", cc_testkit::docker::unique_prefix());
    let creates = (0..6).map(|_| h.client.create_idempotent(&req, &key));
    let answers = futures_util::future::join_all(creates).await;
    let ids: std::collections::BTreeSet<String> = answers
        .into_iter()
        .map(|a| a.map(|c| c.session_id))
        .collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().expect("one id");
    assert_eq!(h.client.list(true).await?.len(), 1);
    assert_eq!(h.docker.leftovers("container").len(), 1);

    // The session they share is an ordinary one.
    let mut ws = h.client.stream(&id, 0).await?;
    cc_testkit::harness::read_until(&mut ws, super::READY_TIMEOUT, |m| {
        cc_testkit::harness::is_state(m, cc_wire::api::SessionState::Ready)
    })
    .await?;
    // A retry after it is ready still names it, with the key's body only.
    assert_eq!(h.client.create_idempotent(&req, &key).await?.session_id, id);
    let mut other = req.clone();
    other.branch = Some("main".into());
    let err = h
        .client
        .create_idempotent(&other, &key)
        .await
        .expect_err("another body under the key");
    assert_eq!(err.code(), Some("idempotency_key_reused"), "{err}");
    h.client.delete(&id).await?;
    ws.close().await;
    Ok(())
}
