//! A client written only from the seed's API spec: raw REST with JSON
//! values and a raw WebSocket, no ClaudeCluster types. It must be able to
//! run a whole session and find every field where the seed puts it.

use super::{READY_TIMEOUT, TURN_TIMEOUT};
use cc_testkit::Harness;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One message off the socket, checked against the seed's envelope: an
/// object with a string `type` and an object `data`, the seed's fields of
/// the seed's types.
async fn next_message(ws: &mut Socket, within: Duration) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(within, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no message within {within:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the server closed the stream"))??;
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(text.as_str())?;
        let ty = v["type"].as_str().unwrap_or_default();
        anyhow::ensure!(v["data"].is_object(), "no data object: {v}");
        let data = &v["data"];
        match ty {
            "output" => {
                anyhow::ensure!(data["text"].is_string(), "output.data.text: {v}");
                anyhow::ensure!(data["timestamp"].is_u64(), "output.data.timestamp: {v}");
            }
            "status" => anyhow::ensure!(data["state"].is_string(), "status.data.state: {v}"),
            "error" => anyhow::ensure!(data["message"].is_string(), "error.data.message: {v}"),
            "" => anyhow::bail!("no type: {v}"),
            _ => {}
        }
        return Ok(v);
    }
}

/// Reads until a `status` with `state`; fails on an `error` status.
async fn until_state(ws: &mut Socket, state: &str, within: Duration) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = next_message(ws, left).await?;
        let done = v["type"] == "status" && v["data"]["state"] == state;
        anyhow::ensure!(
            !(v["type"] == "status" && v["data"]["state"] == "error"),
            "the session failed: {v}"
        );
        seen.push(v);
        if done {
            return Ok(seen);
        }
    }
}

/// One turn the seed's way: the command over the socket, then everything
/// up to the next `ready`.
async fn turn(ws: &mut Socket, command: &str) -> anyhow::Result<String> {
    let msg = json!({"type": "command", "data": {"command": command}});
    ws.send(Message::Text(msg.to_string().into())).await?;
    let seen = until_state(ws, "ready", TURN_TIMEOUT).await?;
    Ok(seen
        .iter()
        .filter(|v| v["type"] == "output")
        .filter_map(|v| v["data"]["text"].as_str())
        .collect())
}

/// A GET with the bearer token, answered 2xx with JSON.
async fn get_json(http: &reqwest::Client, url: &str, auth: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(url)
        .header("authorization", auth)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_knows_only_the_seed_runs_a_session() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let repo = h.git.create_repo("seed", &[("README.md", "# Seed\n")])?;
    let http = reqwest::Client::new();
    let base = h.client.base_url().to_owned();
    let auth = format!("Bearer {}", h.user_token);

    let created: Value = http
        .post(format!("{base}/api/v1/sessions/create"))
        .header("authorization", &auth)
        .json(&json!({"repoUrl": repo, "claudeApiKey": h.api_key}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["sessionId"].as_str().expect("sessionId").to_owned();
    assert!(created["containerId"].is_string(), "{created}");
    assert!(
        ["starting", "ready", "error"].contains(&created["status"].as_str().unwrap_or("")),
        "{created}"
    );
    let url = created["endpoints"]["websocket"]
        .as_str()
        .expect("endpoints.websocket");
    assert!(created["endpoints"]["http"].is_string(), "{created}");

    // The stream starts now: its first message is the current state.
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let first = next_message(&mut ws, READY_TIMEOUT).await?;
    assert_eq!(first["type"], "status", "{first}");
    if first["data"]["state"] != "ready" {
        until_state(&mut ws, "ready", READY_TIMEOUT).await?;
    }

    let one = turn(
        &mut ws,
        "bash: echo written by claude > seed.txt && cat seed.txt",
    )
    .await?;
    assert!(one.contains("written by claude"), "{one}");
    // Context carries over to the next turn.
    let two = turn(&mut ws, "recall").await?;
    assert!(
        two.contains("You said before: \"bash: echo written"),
        "{two}"
    );
    // The file Claude Code wrote is in the checkout.
    let three = turn(&mut ws, "bash: cat seed.txt").await?;
    assert!(three.contains("written by claude"), "{three}");

    // Keepalive is answered, and the answer is an envelope too.
    ws.send(Message::Text(
        json!({"type": "keepalive"}).to_string().into(),
    ))
    .await?;
    let answer = next_message(&mut ws, TURN_TIMEOUT).await?;
    assert_eq!(answer["type"], "keepalive", "{answer}");

    // A second connection without `since` does not replay: its first
    // message is the state now, and nothing older follows it.
    let (mut again, _) = tokio_tungstenite::connect_async(url).await?;
    let now = next_message(&mut again, READY_TIMEOUT).await?;
    assert_eq!(now["type"], "status", "{now}");
    assert_eq!(now["data"]["state"], "ready", "{now}");
    again
        .send(Message::Text(
            json!({"type": "command", "data": {"command": "say: once more"}})
                .to_string()
                .into(),
        ))
        .await?;
    let next = next_message(&mut again, TURN_TIMEOUT).await?;
    assert!(
        next["data"]["seq"].as_u64() > now["data"]["seq"].as_u64(),
        "only events after the current state: {now} then {next}"
    );
    until_state(&mut again, "ready", TURN_TIMEOUT).await?;

    let status = get_json(&http, &format!("{base}/api/v1/sessions/{id}/status"), &auth).await?;
    assert_eq!(status["status"], "ready", "{status}");

    // The logs are the same envelopes, numbers as numbers.
    let logs = get_json(&http, &format!("{base}/api/v1/sessions/{id}/logs"), &auth).await?;
    let events = logs["events"].as_array().expect("events");
    assert!(events.len() > 5, "{logs}");
    for e in events {
        assert!(e["type"].is_string() && e["data"].is_object(), "{e}");
        assert!(e["data"]["timestamp"].is_u64(), "{e}");
    }
    assert!(
        events.iter().any(|e| e["type"] == "output"
            && e["data"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("written by claude"))),
        "{logs}"
    );

    let deleted = http
        .delete(format!("{base}/api/v1/sessions/{id}"))
        .header("authorization", &auth)
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    h.shutdown().await;
    Ok(())
}
