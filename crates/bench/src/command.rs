//! Command latency: a command sent on the WebSocket → the first `output`
//! event, beside driving the same long-lived Claude Code process directly
//! (a user message written to its stdin → the first `stream_event` text
//! delta on its stdout). The difference is what ClaudeCluster adds: the API,
//! the actor, sessiond, the journal, the store and the gateway relay.
//!
//! The direct baseline runs the Claude Code binary of the same image
//! (`docker run -i --network host --user 1000`, in a fresh git repository)
//! against the same model double on loopback. Both sides get one warm-up
//! turn first, so neither figure includes Claude Code's start.

use crate::session::{delete, err, ready_session, run_turn, Hops, TURN_TIMEOUT};
use crate::spawn::ratio;
use crate::stats::Summary;
use crate::system::docker;
use cc_runtime_docker::LABEL_PREFIX;
use cc_testkit::Harness;
use serde::Serialize;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    pub ours_ms: Option<Summary>,
    pub direct_ms: Option<Summary>,
    /// Our p50 minus the direct p50, in milliseconds.
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p95_ms: Option<f64>,
    pub ratio_p50: Option<f64>,
    /// Our turns hop by hop (see `session::Hops`), in milliseconds.
    pub to_sessiond_ms: Option<Summary>,
    pub in_container_ms: Option<Summary>,
    pub back_ms: Option<Summary>,
    pub failed_turns: usize,
    pub errors: Vec<String>,
}

pub async fn measure(h: &Harness, repo_url: &str, image: &str, n: usize) -> CommandResult {
    let mut errors = Vec::new();
    let mut failed_turns = 0;
    let (ours, hops) = match ours(h, repo_url, n, &mut failed_turns).await {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("through ClaudeCluster: {e}"));
            (Vec::new(), Vec::new())
        }
    };
    let hop = |f: fn(&Hops) -> f64| Summary::of_values(&hops.iter().map(f).collect::<Vec<_>>());
    let direct = match direct(h, image, n).await {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("direct Claude Code: {e}"));
            Vec::new()
        }
    };
    let ours = Summary::of(&ours);
    let direct = Summary::of(&direct);
    let diff = |f: fn(&Summary) -> f64| match (&ours, &direct) {
        (Some(o), Some(d)) => Some(f(o) - f(d)),
        _ => None,
    };
    CommandResult {
        overhead_p50_ms: diff(|s| s.p50),
        overhead_p95_ms: diff(|s| s.p95),
        ratio_p50: ratio(ours.as_ref(), direct.as_ref()),
        to_sessiond_ms: hop(|h| h.to_sessiond),
        in_container_ms: hop(|h| h.in_container),
        back_ms: hop(|h| h.back),
        ours_ms: ours,
        direct_ms: direct,
        failed_turns,
        errors,
    }
}

async fn ours(
    h: &Harness,
    repo_url: &str,
    n: usize,
    failed: &mut usize,
) -> Result<(Vec<Duration>, Vec<Hops>), String> {
    let mut s = ready_session(h, repo_url).await?;
    let mut samples = Vec::new();
    let mut hops = Vec::new();
    let mut result = run_turn(&mut s.ws, "say: warming up").await.map(|_| ());
    for i in 0..n {
        if result.is_err() {
            break;
        }
        match run_turn(&mut s.ws, &format!("say: reply number {i}")).await {
            Ok(t) => {
                *failed += usize::from(t.failed);
                hops.extend(t.hops);
                match t.first_output {
                    Some(d) => samples.push(d),
                    None => *failed += 1,
                }
            }
            Err(e) => result = Err(e),
        }
    }
    s.ws.close().await;
    let deleted = delete(&h.client, &s.id).await;
    result.and(deleted).map(|()| (samples, hops))
}

/// Claude Code's own stream-json input line for one user turn.
fn user_message(text: &str) -> String {
    let msg = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": null,
        "session_id": "default",
    });
    format!("{msg}\n")
}

/// Whether a stdout line is a token-level text delta.
fn is_text_delta(v: &serde_json::Value) -> bool {
    v["type"] == "stream_event"
        && v["event"]["type"] == "content_block_delta"
        && v["event"]["delta"]["type"] == "text_delta"
}

async fn direct(h: &Harness, image: &str, n: usize) -> Result<Vec<Duration>, String> {
    let name = format!("{}bench-direct", h.docker.prefix);
    let label = format!("{LABEL_PREFIX}={}", h.docker.prefix);
    let script = "mkdir -p /tmp/repo && cd /tmp/repo && git init -q && exec claude -p \
        --input-format stream-json --output-format stream-json --verbose \
        --include-partial-messages --permission-mode bypassPermissions";
    let mut child = Command::new("docker")
        .args(["run", "--rm", "-i", "--name", &name, "--label", &label])
        .args(["--network", "host", "--user", "1000:1000"])
        .args(["--entrypoint", "sh"])
        .args(["-e", &format!("ANTHROPIC_BASE_URL={}", h.model.base_url())])
        .args(["-e", &format!("ANTHROPIC_API_KEY={}", h.api_key)])
        .args(["-e", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"])
        .args([image, "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("docker started without pipes".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut samples = Vec::new();
    let mut result = Ok(());
    for i in 0..=n {
        let text = if i == 0 {
            "say: warming up".to_owned()
        } else {
            format!("say: reply number {i}")
        };
        let started = Instant::now();
        if let Err(e) = stdin.write_all(user_message(&text).as_bytes()).await {
            result = Err(format!("writing to Claude Code: {e}"));
            break;
        }
        let mut first = None;
        let turn = tokio::time::timeout(TURN_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.map_err(err)? {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if first.is_none() && is_text_delta(&v) {
                    first = Some(started.elapsed());
                }
                if v["type"] == "result" {
                    return Ok(v["is_error"] == true);
                }
            }
            Err("Claude Code exited".to_owned())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no result within {TURN_TIMEOUT:?}")));
        match (turn, first) {
            (Ok(false), Some(d)) if i > 0 => samples.push(d),
            (Ok(false), _) if i == 0 => {}
            (Ok(_), _) => {
                result = Err(format!("turn {i} ended in an error or without text"));
                break;
            }
            (Err(e), _) => {
                result = Err(e);
                break;
            }
        }
    }
    drop(stdin);
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    let _ = docker(&["rm", "-f", &name]).await;
    result.map(|()| samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_messages_are_one_stream_json_line() {
        let line = user_message("say: hi \"there\"");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["type"], "user");
        assert_eq!(v["message"]["content"], "say: hi \"there\"");
    }

    #[test]
    fn only_text_deltas_count_as_output() {
        let delta = serde_json::json!({"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}});
        let start = serde_json::json!({"type": "stream_event", "event": {"type": "message_start"}});
        assert!(is_text_delta(&delta));
        assert!(!is_text_delta(&start));
        assert!(!is_text_delta(&serde_json::json!({"type": "assistant"})));
    }
}
