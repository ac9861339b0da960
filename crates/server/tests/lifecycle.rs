//! Sleep, wake and fork through the public API on the in-memory runtime:
//! who may, and what bad input and the wrong moment get. (Sessions really
//! sleeping, waking and forking are the end-to-end tests': here nothing
//! answers as sessiond, so a session never gets ready.)

use common::Api;
use reqwest::Method;
use serde_json::json;

mod common;

#[tokio::test]
async fn only_the_owner_sleeps_wakes_or_forks_and_bad_input_is_refused() {
    let api = Api::start(common::runtime()).await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let (s, created) = api
        .call_as(
            &alice,
            Method::POST,
            "/api/v1/sessions/create",
            Some(Api::create_body()),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap().to_owned();

    // Another user's session is not there, whatever is asked of it.
    for verb in ["sleep", "wake", "fork"] {
        let path = format!("/api/v1/sessions/{id}/{verb}");
        let (s, v) = api.call_as(&bob, Method::POST, &path, None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (404, Some("session_not_found")),
            "{verb}: {v}"
        );
    }

    // Bad fork requests, before anything else is looked at.
    let fork = format!("/api/v1/sessions/{id}/fork");
    for (body, code) in [
        (json!({"count": 0}), "invalid_fork_count"),
        (json!({"count": 11}), "invalid_fork_count"),
        (json!({"count": 1, "color": "red"}), "invalid_request"),
        (json!({"count": "two"}), "invalid_request"),
    ] {
        let (s, v) = api
            .call_as(&alice, Method::POST, &fork, Some(body.clone()))
            .await;
        assert_eq!((s, v["code"].as_str()), (400, Some(code)), "{body}: {v}");
    }
    let (s, v) = api
        .call_as(&alice, Method::POST, &fork, Some(json!({"command": " "})))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_command")),
        "{v}"
    );

    // Nothing answers as sessiond: the session never gets ready, and ends.
    let parsed = cc_core::SessionId::parse(&id).unwrap();
    api.until(&parsed, "error").await;
    for verb in ["sleep", "wake", "fork"] {
        let path = format!("/api/v1/sessions/{id}/{verb}");
        let (s, v) = api.call_as(&alice, Method::POST, &path, None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (409, Some("session_not_active")),
            "{verb}: {v}"
        );
    }
}
