//! Webhooks end to end: a user registers an endpoint, runs a real session
//! (a turn, a delete), and the endpoint hears every event of it, in order,
//! signed with its secret — the first delivery retried after the endpoint
//! failed it twice — and the delivery log says so.

use super::{ready_session, run_turn};
use cc_testkit::harness::HarnessOptions;
use cc_testkit::webhook_receiver::WebhookReceiver;
use cc_testkit::Harness;
use cc_wire::api::WebhookRequest;
use std::time::Duration;

/// Retries wait 1 s, then 2 s (±25 %); a loaded machine adds its own.
const DELIVERED: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_hears_a_sessions_events_in_order_and_signed() -> anyhow::Result<()> {
    let receiver = WebhookReceiver::start(2).await?;
    let rules = cc_server::webhook::WebhookConfig {
        user_hosts: vec![receiver.host_port()],
        allow_hosts: vec![receiver.host_port()],
    };
    let h = Harness::start_with(HarnessOptions {
        webhooks: Some(rules),
        ..Default::default()
    })
    .await?;
    let hook = h
        .client
        .create_webhook(&WebhookRequest {
            url: receiver.url(),
            events: vec![],
            description: Some("e2e".into()),
            all_sessions: false,
        })
        .await?;
    assert!(hook.secret.starts_with("whsec_"));

    let (id, mut ws, _) = ready_session(&h, "webhooks").await?;
    run_turn(&mut ws, "say: hello webhooks").await?;
    h.client.delete(&id).await?;
    ws.close().await;

    let delivered = |r: &cc_testkit::webhook_receiver::Received| r.status == 204;
    let got = receiver
        .wait_for(DELIVERED, |got| {
            got.iter()
                .any(|r| delivered(r) && r.json()["type"] == "session.terminated")
        })
        .await?;
    for r in &got {
        assert!(r.verifies(&hook.secret), "unsigned or stale: {r:?}");
        let body = r.json();
        assert_eq!(body["id"], r.id.as_str());
        assert_eq!(body["sessionId"], id.as_str());
    }
    // The endpoint failed the first two requests: both were the first
    // delivery, and its third attempt went through.
    assert_eq!(
        (got[0].status, got[1].status, got[2].status),
        (500, 500, 204)
    );
    assert!(got[0].id == got[1].id && got[1].id == got[2].id, "{got:?}");
    let events: Vec<String> = got
        .iter()
        .filter(|r| delivered(r))
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        events,
        [
            "session.created",
            "session.ready",
            "turn.finished",
            "session.terminated"
        ],
        "in order, each once"
    );
    let turn = got
        .iter()
        .find(|r| r.json()["type"] == "turn.finished")
        .map(|r| r.json())
        .expect("a turn");
    assert!(turn["data"]["turn"]["costUsd"].is_number(), "{turn}");
    assert_eq!(turn["data"]["totals"]["turns"], 1, "{turn}");
    let result = turn["data"]["result"].as_str().unwrap_or_default();
    assert!(result.contains("hello webhooks"), "{turn}");

    // The delivery log, newest first: the first delivery took three attempts.
    let log = h.client.webhook_deliveries(&hook.info.id, 10).await?;
    assert_eq!(log.len(), 4, "{log:?}");
    let first = log.last().expect("the first delivery");
    assert_eq!(first.event, "session.created");
    assert_eq!((first.state.as_str(), first.attempts), ("delivered", 3));
    assert_eq!(first.last_status, Some(204));
    assert!(log.iter().all(|d| d.state == "delivered"), "{log:?}");
    Ok(())
}
