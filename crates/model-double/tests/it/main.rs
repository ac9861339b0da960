//! Integration tests: the double served on port 0, driven over HTTP.

use cc_model_double::{spawn, ModelDoubleConfig};
use serde_json::{json, Value};

const KEY: &str = "sk-test-key";

async fn double() -> cc_model_double::ModelDouble {
    spawn(ModelDoubleConfig {
        api_key: Some(KEY.into()),
        latency_ms: 0,
    })
    .await
    .expect("spawn double")
}

fn body(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "You are a test."}],
        "tools": [{"name": "Bash", "input_schema": {}}, {"name": "Write", "input_schema": {}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\ncontext\n</system-reminder>"},
            {"type": "text", "text": prompt},
        ]}],
    })
}

async fn post(url: &str, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("send")
}

/// Parses an SSE body into (event, data) pairs.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let mut lines = frame.lines();
            let event = lines
                .next()
                .and_then(|l| l.strip_prefix("event: "))
                .expect("event line");
            let data = lines
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .expect("data line");
            (
                event.to_owned(),
                serde_json::from_str(data).expect("json data"),
            )
        })
        .collect()
}

#[tokio::test]
async fn streamed_text_reply() {
    let double = double().await;
    let url = format!("{}/v1/messages?beta=true", double.base_url());
    let resp = post(
        &url,
        KEY,
        &body("say: hello there, streaming world of tests", true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = events(&resp.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let start = &events[0].1["message"];
    assert!(start["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("msg_double_")));
    assert_eq!(start["model"], "claude-test");
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert!(deltas.len() > 1, "text should arrive in several chunks");
    assert_eq!(deltas.concat(), "hello there, streaming world of tests");
    let delta = events
        .iter()
        .find(|(e, _)| e == "message_delta")
        .expect("message_delta");
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn tool_use_reply_and_follow_up() {
    let double = double().await;
    let url = format!("{}/prefix/v1/messages", double.base_url());
    let resp = post(&url, KEY, &body("bash: echo hi", false)).await;
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.expect("json");
    assert_eq!(msg["stop_reason"], "tool_use");
    let tool = &msg["content"][0];
    assert_eq!(tool["type"], "tool_use");
    assert_eq!(tool["name"], "Bash");
    assert_eq!(tool["input"]["command"], "echo hi");
    assert!(tool["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("toolu_double_")));

    let mut follow = body("bash: echo hi", true);
    let messages = follow["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": [tool]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool["id"], "content": "hi"}
    ]}));
    let resp = post(&url, KEY, &follow).await;
    let events = events(&resp.text().await.expect("body"));
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Ran `echo hi`.\nhi");
    let first_id = &msg["id"];
    assert_ne!(&events[0].1["message"]["id"], first_id);
}

#[tokio::test]
async fn wrong_key_is_rejected_and_requests_are_recorded() {
    let double = double().await;
    let url = format!("{}/v1/messages", double.base_url());
    let resp = post(&url, "sk-wrong", &body("say: x", true)).await;
    assert_eq!(resp.status(), 401);
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "authentication_error");

    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(KEY)
        .json(&body("hello", false))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);

    let recorded = double.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].api_key.as_deref(), Some("sk-wrong"));
    assert_eq!(recorded[1].api_key.as_deref(), Some(KEY));
    assert_eq!(recorded[1].typed_prompt, "hello");
    assert_eq!(recorded[1].system, "You are a test.");
    assert_eq!(recorded[1].tool_names, ["Bash", "Write"]);
    assert_eq!(recorded[1].max_tokens, Some(1024));
    assert!(recorded[0].stream && !recorded[1].stream);

    let over_http: Value = reqwest::get(format!("{}/_double/requests", double.base_url()))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(over_http.as_array().map(Vec::len), Some(2));
    assert_eq!(over_http[1]["typed_prompt"], "hello");
    let cleared = reqwest::Client::new()
        .delete(format!("{}/_double/requests", double.base_url()))
        .send()
        .await
        .expect("delete");
    assert!(cleared.status().is_success());
    assert!(double.requests().is_empty());
}

#[tokio::test]
async fn scripted_errors_and_count_tokens() {
    let double = spawn(ModelDoubleConfig::default()).await.expect("spawn");
    let url = format!("{}/v1/messages", double.base_url());
    let resp = post(&url, "any", &body("error: 429", true)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert_eq!(err["error"]["message"], "model double: scripted 429");

    let resp = post(&format!("{url}/count_tokens"), "any", &body("x", false)).await;
    let count: Value = resp.json().await.expect("json");
    assert!(count["input_tokens"].as_u64().is_some_and(|n| n >= 1));

    let resp = post(&url, "any", &json!("not an object")).await;
    assert_eq!(resp.status(), 400);
    double.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn slow_reply_is_paced() {
    let double = spawn(ModelDoubleConfig::default()).await.expect("spawn");
    let url = format!("{}/v1/messages", double.base_url());
    let started = std::time::Instant::now();
    let resp = post(&url, "any", &body("slow: 300 one two three", true)).await;
    let text = resp.text().await.expect("body");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    let deltas: String = events(&text)
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(deltas, "one two three");
}

#[tokio::test]
async fn count_tokens_checks_the_key() {
    let double = double().await;
    let url = format!("{}/v1/messages/count_tokens", double.base_url());
    let ping =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "ping"}]});
    let resp = post(&url, "sk-wrong", &ping).await;
    assert_eq!(resp.status(), 401);
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["error"]["type"], "authentication_error");
    let resp = post(&url, KEY, &ping).await;
    assert_eq!(resp.status(), 200);
    let count: Value = resp.json().await.expect("json");
    assert!(count["input_tokens"].as_u64().is_some_and(|n| n >= 1));
    double.shutdown().await.expect("shutdown");
}
