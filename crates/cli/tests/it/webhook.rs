//! `claudecluster webhook …` against a live server: add (the secret on
//! stderr, once), list, the delivery log after a session's create, rm,
//! and a refused URL failing with the server's reason.

use super::{cli, describe, output, stderr, stdout};
use cc_testkit::harness::HarnessOptions;
use cc_testkit::webhook_receiver::WebhookReceiver;
use cc_testkit::Harness;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_added_listed_followed_and_removed() -> anyhow::Result<()> {
    let receiver = WebhookReceiver::start(0).await?;
    let h = Harness::start_with(HarnessOptions {
        webhooks: Some(cc_server::webhook::WebhookConfig {
            user_hosts: vec![receiver.host_port()],
            allow_hosts: vec![receiver.host_port()],
        }),
        ..Default::default()
    })
    .await?;
    let home = tempfile::tempdir()?;
    let webhook = |args: &[&str]| {
        let mut c = cli(home.path());
        c.env("CLAUDECLUSTER_URL", h.client.base_url())
            .env("CLAUDECLUSTER_TOKEN", &h.user_token)
            .arg("webhook")
            .args(args);
        c
    };

    let out = output(&mut webhook(&["add", "ftp://example.com/x"])).await?;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("http:// or https://"),
        "{}",
        describe(&out)
    );

    let url = receiver.url();
    let out = output(&mut webhook(&["add", &url, "--event", "session.created"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    let id = stdout(&out).trim().to_owned();
    assert!(id.starts_with("wh_"), "{}", describe(&out));
    assert!(stderr(&out).contains("whsec_"), "{}", describe(&out));

    let out = output(&mut webhook(&["list"])).await?;
    assert!(stdout(&out).contains(&id) && stdout(&out).contains("session.created"));
    assert!(!stdout(&out).contains("whsec_"), "{}", describe(&out));

    let repo = h
        .git
        .create_repo("hooked", &[("README.md", "# Hooked\n")])?;
    let session = h.client.create(&h.create_request(&repo, None)).await?;
    receiver
        .wait_for(Duration::from_secs(60), |got| {
            got.iter().any(|r| r.status == 204)
        })
        .await?;
    let out = output(&mut webhook(&["deliveries", &id, "--json"])).await?;
    let log: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    assert_eq!(log[0]["state"], "delivered", "{log}");
    assert_eq!(log[0]["sessionId"], session.session_id.as_str());
    let out = output(&mut webhook(&["deliveries", &id])).await?;
    assert!(stdout(&out).contains("delivered"), "{}", describe(&out));

    let out = output(&mut webhook(&["rm", &id])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    let out = output(&mut webhook(&["list"])).await?;
    assert!(stderr(&out).contains("no webhooks"), "{}", describe(&out));
    let out = output(&mut webhook(&["rm", &id])).await?;
    assert_eq!(out.status.code(), Some(3), "not found: {}", describe(&out));
    h.client.delete(&session.session_id).await?;
    Ok(())
}
