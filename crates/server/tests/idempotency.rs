//! `Idempotency-Key` on create, through the public API on the in-memory
//! runtime: a retry answers with the first session, another body under the
//! key is refused, concurrent requests make one session, a failed create
//! frees its key, and a request waits for the one holding its key.

use cc_core::idempotency::{Claim, ClaimOutcome, IdempotencyStore};
use common::Api;
use reqwest::Method;
use serde_json::Value;

mod common;

const CREATE: &str = "/api/v1/sessions/create";

/// A keyed create: its status, whether it was a replay, and its body.
async fn create_keyed(api: &Api, key: &str, body: &Value) -> (u16, bool, Value) {
    let resp = api
        .request(Method::POST, CREATE)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let replayed = match resp.headers().get("idempotent-replayed") {
        None => false,
        Some(v) => {
            assert_eq!(v, "true");
            true
        }
    };
    (status, replayed, resp.json().await.unwrap())
}

async fn live_sessions(api: &Api) -> Vec<Value> {
    let (s, v) = api.call(Method::GET, "/api/v1/sessions", None).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

#[tokio::test]
async fn a_retry_with_the_key_answers_with_the_first_session() {
    let api = Api::start(common::runtime()).await;
    let body = Api::create_body();
    let (s, replayed, first) = create_keyed(&api, "ci-run-1842", &body).await;
    assert_eq!((s, replayed), (201, false), "{first}");

    // The same body, sent again with its fields in another order.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"claudeApiKey": {}, "repoUrl": {}}}"#,
        body["claudeApiKey"], body["repoUrl"]
    ))
    .unwrap();
    let (s, replayed, again) = create_keyed(&api, "ci-run-1842", &reordered).await;
    assert_eq!((s, replayed), (201, true), "{again}");
    assert_eq!(again["sessionId"], first["sessionId"]);
    assert_eq!(again["containerId"], first["containerId"]);
    assert!(again["endpoints"]["websocket"]
        .as_str()
        .unwrap()
        .contains("?token="));
    assert_eq!(live_sessions(&api).await.len(), 1);

    // Still the same session after it ended.
    let id = first["sessionId"].as_str().unwrap();
    let (s, v) = api
        .call(Method::DELETE, &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, replayed, ended) = create_keyed(&api, "ci-run-1842", &body).await;
    assert_eq!((s, replayed), (201, true), "{ended}");
    assert_eq!(ended["sessionId"], first["sessionId"]);
    assert_eq!(ended["state"], "terminated", "{ended}");

    // Another key is another session; no key is always a new one.
    let (s, replayed, other) = create_keyed(&api, "ci-run-1843", &body).await;
    assert_eq!((s, replayed), (201, false));
    assert_ne!(other["sessionId"], first["sessionId"]);
    let (_, plain) = api.create().await;
    assert_ne!(plain["sessionId"], other["sessionId"]);
}

#[tokio::test]
async fn another_body_under_the_key_is_refused_and_bad_keys_are_400() {
    let api = Api::start(common::runtime()).await;
    let body = Api::create_body();
    let (s, _, first) = create_keyed(&api, "k", &body).await;
    assert_eq!(s, 201, "{first}");
    let mut other = body.clone();
    other["branch"] = "dev".into();
    let (s, _, v) = create_keyed(&api, "k", &other).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["code"], "idempotency_key_reused");
    // The user's Anthropic key is part of the body.
    let mut other_key = body.clone();
    other_key["claudeApiKey"] = "sk-ant-other".into();
    let (s, _, v) = create_keyed(&api, "k", &other_key).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(live_sessions(&api).await.len(), 1);

    let long = "k".repeat(256);
    for bad in ["", "two words", long.as_str()] {
        let (s, _, v) = create_keyed(&api, bad, &body).await;
        assert_eq!(s, 400, "{bad:?}: {v}");
        assert_eq!(v["code"], "invalid_idempotency_key", "{v}");
    }
    let resp = api
        .request(Method::POST, CREATE)
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(live_sessions(&api).await.len(), 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_session() {
    let api = std::sync::Arc::new(Api::start(common::runtime()).await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let api = api.clone();
        tasks.spawn(async move { create_keyed(&api, "burst", &Api::create_body()).await });
    }
    let mut answers = Vec::new();
    while let Some(res) = tasks.join_next().await {
        answers.push(res.unwrap());
    }
    let firsts: Vec<_> = answers
        .iter()
        .filter(|(_, replayed, _)| !replayed)
        .collect();
    assert_eq!(firsts.len(), 1, "one request created: {answers:?}");
    for (s, _, v) in &answers {
        assert_eq!(*s, 201, "{v}");
        assert_eq!(v["sessionId"], firsts[0].2["sessionId"]);
    }
    assert_eq!(live_sessions(&api).await.len(), 1);
}

#[tokio::test]
async fn a_failed_create_frees_its_key() {
    let api = Api::start(common::runtime()).await;
    let mut refused = Api::create_body();
    refused["repoUrl"] = "http://10.1.2.3/r.git".into();
    let (s, _, v) = create_keyed(&api, "retry-me", &refused).await;
    assert_eq!(s, 403, "{v}");
    // The retry, with the body fixed, creates.
    let (s, replayed, v) = create_keyed(&api, "retry-me", &Api::create_body()).await;
    assert_eq!((s, replayed), (201, false), "{v}");
}

#[tokio::test]
async fn a_request_waits_for_the_one_holding_its_key() {
    let api = std::sync::Arc::new(Api::start(common::runtime()).await);
    let body = Api::create_body();
    // Another replica holds the key and is still creating. The hash is
    // the server's own, so the waiting request matches it.
    let canonical = serde_json::to_vec(
        &serde_json::from_value::<cc_wire::api::CreateSessionRequest>(body.clone()).unwrap(),
    )
    .unwrap();
    let claim = Claim {
        user: cc_core::identity::BOOTSTRAP_ADMIN.into(),
        key: "held".into(),
        request_hash: cc_core::idempotency::request_hash(&canonical),
        at: std::time::SystemTime::now(),
    };
    assert_eq!(
        api.store.claim_idempotency_key(&claim).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let waiting = tokio::spawn({
        let api = api.clone();
        async move { create_keyed(&api, "held", &Api::create_body()).await }
    });
    // The holder's create fails and frees the key: the waiting request
    // then claims it and creates.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "answered while another request held its key"
    );
    assert!(live_sessions(&api).await.is_empty());
    api.store
        .release_idempotency_key(&claim.user, &claim.key)
        .await
        .unwrap();
    let (s, replayed, v) = waiting.await.unwrap();
    assert_eq!((s, replayed), (201, false), "{v}");
    assert_eq!(live_sessions(&api).await.len(), 1);
}
