//! Webhook endpoints through the public API on the in-memory runtime: who
//! may register what where, who sees which endpoint, and a delivery that
//! outlives the orchestrator that queued it.

use cc_server::webhook::WebhookConfig;
use cc_testkit::webhook_receiver::WebhookReceiver;
use common::{Api, STUCK};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

mod common;

async fn register(api: &Api, token: &str, body: Value) -> (u16, Value) {
    api.call_as(token, Method::POST, "/api/v1/webhooks", Some(body))
        .await
}

async fn deliveries(api: &Api, id: &str) -> Vec<Value> {
    let path = format!("/api/v1/webhooks/{id}/deliveries");
    let (s, v) = api.call(Method::GET, &path, None).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

#[tokio::test]
async fn who_may_register_what_where() {
    let dir = tempfile::tempdir().unwrap();
    let rules = WebhookConfig {
        user_hosts: vec!["hooks.example.com".into(), "127.0.0.1:4444".into()],
        allow_hosts: vec!["127.0.0.1:4444".into()],
    };
    let s = Api::open(common::runtime(), dir.path(), Some(rules)).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    for (url, code) in [
        ("ftp://127.0.0.1:4444/x", "invalid_webhook_url"),
        ("not a url", "invalid_webhook_url"),
        ("http://u:p@127.0.0.1:4444/x", "invalid_webhook_url"),
        ("http://no-such-host.invalid/x", "webhook_host_unresolvable"),
    ] {
        let (st, v) = register(&s, common::ADMIN, json!({ "url": url })).await;
        assert_eq!((st, v["code"].as_str()), (400, Some(code)), "{url}: {v}");
    }
    // Private addresses only where the admin allowed them exactly.
    let (st, v) = register(
        &s,
        common::ADMIN,
        json!({ "url": "http://127.0.0.1:4445/x" }),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("webhook_host_not_allowed")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("--allow-webhook-host"),
        "{v}"
    );
    // Users only on the hosts the admin lets them use, for their own sessions.
    let (st, v) = register(&s, &alice, json!({ "url": "http://10.9.9.9:4444/x" })).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = register(
        &s,
        &alice,
        json!({ "url": "http://127.0.0.1:4444/x", "allSessions": true }),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = register(
        &s,
        &alice,
        json!({ "url": "http://127.0.0.1:4444/x", "events": ["session.slept"] }),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("invalid_webhook_events")),
        "{v}"
    );

    let (st, mine) = register(
        &s,
        &alice,
        json!({ "url": "http://127.0.0.1:4444/x", "events": ["turn.finished"] }),
    )
    .await;
    assert_eq!(st, 201, "{mine}");
    assert!(mine["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(mine["owner"], "alice");
    assert_eq!(mine["events"], json!(["turn.finished"]));
    let (st, all) = register(
        &s,
        common::ADMIN,
        json!({ "url": "http://127.0.0.1:4444/all", "allSessions": true }),
    )
    .await;
    assert_eq!(st, 201, "{all}");

    // Each sees their own (never a secret); the admin sees all.
    let (_, listed) = s
        .call_as(&alice, Method::GET, "/api/v1/webhooks", None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
    let (_, listed) = s.call_as(&bob, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(listed, json!([]));
    let (_, listed) = s
        .call_as(common::ADMIN, Method::GET, "/api/v1/webhooks", None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // Another user's endpoint is a 404, like one that does not exist.
    let mine_path = format!("/api/v1/webhooks/{}", mine["id"].as_str().unwrap());
    let (st, v) = s.call_as(&bob, Method::DELETE, &mine_path, None).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("webhook_not_found")),
        "{v}"
    );
    let (st, _) = s
        .call_as(&bob, Method::GET, &format!("{mine_path}/deliveries"), None)
        .await;
    assert_eq!(st, 404);
    let (st, v) = s.call_as(&alice, Method::DELETE, &mine_path, None).await;
    assert_eq!((st, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    let (st, _) = s.call_as(&alice, Method::DELETE, &mine_path, None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn a_queued_delivery_outlives_its_orchestrator() {
    let receiver = WebhookReceiver::start(usize::MAX).await.unwrap();
    let rules = WebhookConfig {
        user_hosts: vec![],
        allow_hosts: vec![receiver.host_port()],
    };
    let dir = tempfile::tempdir().unwrap();
    let first = Api::open(common::runtime(), dir.path(), Some(rules.clone())).await;
    let (st, hook) = register(
        &first,
        common::ADMIN,
        json!({ "url": receiver.url(), "events": ["session.created"] }),
    )
    .await;
    assert_eq!(st, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let (st, created) = first
        .call_as(
            common::ADMIN,
            Method::POST,
            "/api/v1/sessions/create",
            Some(common::Api::create_body()),
        )
        .await;
    assert_eq!(st, 201, "{created}");

    // The endpoint fails the first attempt, and the orchestrator records it.
    let failed = tokio::time::timeout(STUCK, async {
        loop {
            let log = deliveries(&first, &hook_id).await;
            if log.first().is_some_and(|d| d["lastStatus"] == 500) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first attempt is recorded");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["state"], "pending");
    assert_eq!(failed[0]["lastError"], "HTTP 500 Internal Server Error");
    drop(first);

    // The next orchestrator on the same database delivers it.
    receiver.set_fail_first(0);
    let second = Api::open(common::runtime(), dir.path(), Some(rules)).await;
    let log = tokio::time::timeout(STUCK, async {
        loop {
            let log = deliveries(&second, &hook_id).await;
            if log.first().is_some_and(|d| d["state"] == "delivered") {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("delivered after the restart");
    assert_eq!(log[0]["attempts"], 2, "{log:?}");
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].id, got[1].id, "the same delivery, retried");
    assert!(got[1].verifies(hook["secret"].as_str().unwrap()));
    assert_eq!(got[1].json()["sessionId"], created["sessionId"]);
    assert_eq!(got[1].json()["type"], "session.created");
}
