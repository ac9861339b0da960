//! A session whose container waits for its place (a Pod Pending on a busy
//! cluster), through the public API with the in-memory runtime holding
//! every start: create answers at once with the session `starting`, and
//! what the runtime then says (it runs, it cannot, nobody waits any longer)
//! reaches the session.

use common::Api;

mod common;

#[tokio::test]
async fn create_answers_while_the_container_waits_and_the_runtimes_verdict_reaches_the_session() {
    let rt = common::runtime();
    rt.hold_starts(true);
    let api = Api::start(rt.clone()).await;

    // The answer comes while the container still waits for its place.
    let (id, created) = api.create().await;
    assert!(rt.is_pending(&id), "answered before the container ran");
    assert_eq!(created["status"], "starting", "{created}");
    assert_eq!(created["containerId"], format!("fake-{id}"), "{created}");
    let st = api.status(&id).await;
    assert_eq!(st["state"], "starting", "{st}");

    // The scheduler gives up: the session ends with its reason and
    // nothing of it is left.
    rt.refuse_start(&id, "0/3 nodes are available: 3 Insufficient memory.");
    let st = api.until(&id, "error").await;
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not start") && reason.contains("Insufficient memory"),
        "{reason}"
    );
    assert!(!cc_core::Runtime::list(&rt).await.unwrap().contains(&id));

    // Deleted while it waits: ended, removed, and never placed after.
    let (id, _) = api.create().await;
    assert!(rt.is_pending(&id));
    let (s, v) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(api.status(&id).await["state"], "terminated");
    assert!(!cc_core::Runtime::list(&rt).await.unwrap().contains(&id));

    // Placed: the session goes on to its agent (which nothing answers
    // here, so it fails for that reason, not for its container).
    let (id, _) = api.create().await;
    rt.place(&id);
    let st = api.until(&id, "error").await;
    let reason = st["reason"].as_str().unwrap();
    assert!(reason.contains("session agent did not start"), "{reason}");
}
