//! Bad input gets a clear answer and leaves nothing behind.

use super::READY_TIMEOUT;
use cc_testkit::harness::{is_state, read_until, summary};
use cc_testkit::Harness;
use cc_wire::api::{ServerMessage, SessionState};

async fn post_raw(
    h: &Harness,
    body: &str,
    content_type: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/sessions/create", h.client.base_url()))
        .bearer_auth(&h.user_token)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_with_json_errors() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (status, body) = post_raw(&h, "{not json", "application/json").await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );

    let (status, body) = post_raw(&h, r#"{"claudeApiKey":"k"}"#, "application/json").await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or("").contains("repoUrl"),
        "{body}"
    );

    let (status, body) = post_raw(&h, r#"{"repoUrl":"x"}"#, "text/plain").await?;
    assert_eq!(status, 415, "{body}");

    let (status, body) = post_raw(
        &h,
        r#"{"repoUrl":"file:///etc","claudeApiKey":"k"}"#,
        "application/json",
    )
    .await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_repo_url")),
        "{body}"
    );

    // A loopback host the admin did not allow.
    let (status, body) = post_raw(
        &h,
        r#"{"repoUrl":"http://127.0.0.1:1/x.git","claudeApiKey":"k"}"#,
        "application/json",
    )
    .await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("repo_host_not_allowed")),
        "{body}"
    );

    let url = h.git.url("x");
    let (status, body) = post_raw(
        &h,
        &format!(r#"{{"repoUrl":"{url}","claudeApiKey":"k","config":{{"memory":"1t"}}}}"#),
        "application/json",
    )
    .await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_config")),
        "{body}"
    );

    for id in ["0123456789abcdef01234567", "nope"] {
        let err = h.client.status(id).await.unwrap_err();
        assert_eq!(err.code(), Some("session_not_found"), "{err}");
        assert_eq!(
            h.client.command(id, "hi").await.unwrap_err().code(),
            Some("session_not_found")
        );
        assert_eq!(
            h.client.logs(id, 0, 10).await.unwrap_err().code(),
            Some("session_not_found")
        );
        assert_eq!(
            h.client.delete(id).await.unwrap_err().code(),
            Some("session_not_found")
        );
    }
    let err = h
        .client
        .stream("0123456789abcdef01234567", 0)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some("session_not_found"));
    assert!(h.docker.all_leftovers().is_empty());
    h.shutdown().await;
    Ok(())
}

/// Creates a session that must fail while cloning; returns its reason.
async fn failed_session(h: &Harness, url: &str, branch: Option<&str>) -> anyhow::Result<String> {
    let created = h.client.create(&h.create_request(url, branch)).await?;
    let mut ws = h.client.stream(&created.session_id, 0).await?;
    let seen = read_until(&mut ws, READY_TIMEOUT, |m| {
        is_state(m, SessionState::Error) || is_state(m, SessionState::Ready)
    })
    .await?;
    let Some(ServerMessage::Status {
        state: SessionState::Error,
        reason,
        ..
    }) = seen.last()
    else {
        anyhow::bail!("expected an error: {}", summary(&seen));
    };
    let status = h.client.status(&created.session_id).await?;
    assert_eq!(status.state, SessionState::Error);
    assert_eq!(status.reason.as_deref(), reason.as_deref());
    assert!(
        h.docker.all_leftovers().is_empty(),
        "{:?}",
        h.docker.all_leftovers()
    );
    Ok(reason.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclonable_repositories_and_branches_end_in_error() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let reason = failed_session(&h, &h.git.url("missing"), None).await?;
    assert!(reason.to_lowercase().contains("clone"), "{reason}");

    let url = h.git.create_repo("real", &[("a.txt", "a\n")])?;
    let reason = failed_session(&h, &url, Some("no-such-branch")).await?;
    assert!(reason.contains("no-such-branch"), "{reason}");
    h.shutdown().await;
    Ok(())
}
