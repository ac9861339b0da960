//! The agent's control surface (issue 8): session options, per-turn
//! overrides, limits, interrupt, cost and usage, and the admin's policy —
//! through the public API, with the real Claude Code and the model double.

use super::{run_turn, READY_TIMEOUT, TURN_TIMEOUT};
use cc_client::ClientError;
use cc_testkit::harness::{
    is_state, output_text, read_until, summary, until_ready, HarnessOptions,
};
use cc_testkit::Harness;
use cc_wire::api::{
    ClientMessage, CommandRequest, ServerMessage, SessionOptions, SessionState, TurnSummary,
    UsageTotals,
};
use std::collections::BTreeMap;

const SYSTEM_MARK: &str = "Always answer like a control-surface test (XYZZY-42).";

/// Creates a session with `options` on a fresh repository; waits for `ready`.
async fn session_with(
    h: &Harness,
    repo: &str,
    options: SessionOptions,
) -> anyhow::Result<(String, cc_client::EventStream)> {
    let url = h.git.create_repo(repo, &[("README.md", "# Sample\n")])?;
    let mut req = h.create_request(&url, None);
    req.options = Some(options);
    let created = h.client.create(&req).await?;
    let mut ws = cc_client::EventStream::connect(&created.endpoints.websocket).await?;
    until_ready(&mut ws, READY_TIMEOUT).await?;
    Ok((created.session_id, ws))
}

/// The turn's `turnResult`, which must be there.
fn turn_result(msgs: &[ServerMessage]) -> (TurnSummary, UsageTotals) {
    msgs.iter()
        .find_map(|m| match m {
            ServerMessage::TurnResult { turn, totals, .. } => Some((turn.clone(), *totals)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no turnResult in: {}", summary(msgs)))
}

/// Models the double was asked for with this typed prompt.
fn models_for(h: &Harness, prompt: &str) -> Vec<String> {
    h.model
        .requests()
        .into_iter()
        .filter(|r| r.typed_prompt == prompt)
        .map(|r| r.model)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_reach_claude_code_and_turns_report_their_cost() -> anyhow::Result<()> {
    // The probe's stdio command is on the admin's list (none by default).
    let h = Harness::start_configured(HarnessOptions::default(), |c| {
        c.agent.allowed_mcp_commands = vec!["/bin/false".into()];
    })
    .await?;
    let (id, mut ws) = session_with(
        &h,
        "options",
        SessionOptions {
            model: Some("claude-sonnet-4-5".into()),
            append_system_prompt: Some(SYSTEM_MARK.into()),
            disallowed_tools: Some(vec!["Bash".into()]),
            instructions: Some("Prefer tabs (instructions mark QWERTY-7).".into()),
            mcp_servers: Some(BTreeMap::from([(
                "probe".to_owned(),
                serde_json::json!({"command": "/bin/false"}),
            )])),
            env: Some(BTreeMap::from([(
                "MY_SECRET".to_owned(),
                "hunter2-do-not-log".to_owned(),
            )])),
            ..Default::default()
        },
    )
    .await?;

    // The chosen model and the appended system prompt reach the model.
    let turn1 = run_turn(&mut ws, "say: hello").await?;
    assert!(output_text(&turn1).contains("hello"), "{}", summary(&turn1));
    let reqs: Vec<_> = h
        .model
        .requests()
        .into_iter()
        .filter(|r| r.typed_prompt == "say: hello")
        .collect();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.model, "claude-sonnet-4-5");
        assert!(
            r.system.contains(SYSTEM_MARK),
            "system prompt: {}",
            r.system
        );
        // The disallowed tool is not offered to the model at all.
        assert!(
            !r.tool_names.iter().any(|t| t == "Bash"),
            "{:?}",
            r.tool_names
        );
        assert!(
            r.tool_names.iter().any(|t| t == "Read"),
            "{:?}",
            r.tool_names
        );
    }

    // Per-turn cost and usage in the stream.
    let (t1, totals1) = turn_result(&turn1);
    assert_eq!(t1.subtype, "success");
    assert!(!t1.is_error);
    assert!(t1.cost_usd > 0.0, "{t1:?}");
    assert!(
        t1.usage.input_tokens > 0 && t1.usage.output_tokens > 0,
        "{t1:?}"
    );
    assert_eq!(t1.num_turns, 1);
    assert_eq!(totals1.turns, 1);

    // A disallowed tool: Claude Code never offers it, so the model cannot
    // call it; the double says so in the stream.
    let turn2 = run_turn(&mut ws, "bash: echo should-not-run").await?;
    let text2 = output_text(&turn2);
    assert!(
        text2.contains("offers no tool named Bash"),
        "refusal visible: {text2}"
    );
    assert!(!text2.contains("▶ Bash"), "{text2}");
    let init_tools = turn2
        .iter()
        .find_map(|m| match m {
            ServerMessage::Claude { event, .. } if event["subtype"] == "init" => {
                Some(event["tools"].clone())
            }
            _ => None,
        })
        .expect("a system/init event");
    assert!(
        !init_tools
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t == "Bash"),
        "{init_tools}"
    );

    // A per-turn model (REST), then the session's model again (WS).
    let turn3 = {
        h.client
            .command_with(
                &id,
                &CommandRequest {
                    command: "say: switched".into(),
                    model: Some("claude-haiku-4-5".into()),
                    permission_mode: Some("acceptEdits".into()),
                },
            )
            .await?;
        let mut busy = false;
        read_until(&mut ws, TURN_TIMEOUT, |m| {
            busy |= is_state(m, SessionState::Busy);
            busy && is_state(m, SessionState::Ready)
        })
        .await?
    };
    assert_eq!(models_for(&h, "say: switched"), ["claude-haiku-4-5"]);
    let init3 = turn3
        .iter()
        .find_map(|m| match m {
            ServerMessage::Claude { event, .. } if event["subtype"] == "init" => Some(event),
            _ => None,
        })
        .expect("a system/init event");
    assert_eq!(init3["permissionMode"], "acceptEdits", "{init3}");
    let turn4 = run_turn(&mut ws, "say: back").await?;
    assert_eq!(models_for(&h, "say: back"), ["claude-sonnet-4-5"]);
    let init4 = turn4
        .iter()
        .find_map(|m| match m {
            ServerMessage::Claude { event, .. } if event["subtype"] == "init" => Some(event),
            _ => None,
        })
        .expect("a system/init event");
    assert_eq!(init4["permissionMode"], "bypassPermissions", "{init4}");
    // The MCP server was handed to Claude Code (it fails to start: the
    // command exits at once).
    assert!(
        init4["mcp_servers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "probe"),
        "{init4}"
    );

    // Totals in the status: four turns, and at least the spend the last
    // turn's totals held. (The gateway meters each model call as its
    // answer ends; the last call's record may reach the session just after
    // the turn's result, so the status can only have more.)
    let (_, totals4) = turn_result(&turn4);
    let status = h.client.status(&id).await?;
    assert_eq!(
        (status.usage.turns, status.usage.num_turns),
        (totals4.turns, totals4.num_turns)
    );
    assert!(
        status.usage.cost_usd >= totals4.cost_usd,
        "{:?} < {totals4:?}",
        status.usage
    );
    assert!(
        status.usage.tokens.input_tokens >= totals4.tokens.input_tokens,
        "{:?} < {totals4:?}",
        status.usage
    );
    assert_eq!(status.usage.turns, 4);
    assert!(status.usage.cost_usd > t1.cost_usd);
    assert!(status.usage.tokens.input_tokens > t1.usage.input_tokens);

    // A model the session may not use is refused per turn, too? (The
    // default policy allows any model; an empty name is malformed.)
    let err = h
        .client
        .command_with(
            &id,
            &CommandRequest {
                command: "say: x".into(),
                model: Some("--evil".into()),
                permission_mode: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 400, code, message } if code == "invalid_option" && message.contains("model")),
        "{err}"
    );

    // Repository instructions: a CLAUDE.md in the checkout, kept out of git.
    let container = status.container_id.clone().expect("a container");
    let exec = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new("docker")
            .args(["exec", &container])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(exec(&["cat", "/workspace/repo/CLAUDE.md"])?.contains("QWERTY-7"));
    assert_eq!(
        exec(&["git", "-C", "/workspace/repo", "status", "--porcelain"])?,
        ""
    );
    // The extra environment reaches the agent's tools.
    assert_eq!(
        exec(&[
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null \
             | grep -qx 'MY_SECRET=hunter2-do-not-log' && echo found && break; done",
        ])?
        .trim(),
        "found"
    );

    // The extra environment's value never shows in the session's log.
    let logs = h.client.logs(&id, 0, 1000).await?;
    let all = serde_json::to_string(&logs.events)?;
    assert!(!all.contains("hunter2-do-not-log"));
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_turns_stops_a_turn_and_interrupt_ends_a_slow_one() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws) = session_with(
        &h,
        "limits",
        SessionOptions {
            max_turns: Some(1),
            ..Default::default()
        },
    )
    .await?;

    // A Bash call needs a second model call: maxTurns 1 stops the turn.
    let turn = run_turn(&mut ws, "bash: echo one-call").await?;
    let (t, totals) = turn_result(&turn);
    assert_eq!(t.subtype, "error_max_turns", "{t:?}");
    assert!(t.is_error);
    assert_eq!(t.terminal_reason.as_deref(), Some("max_turns"));
    assert_eq!(
        t.error.as_deref(),
        Some("Reached maximum number of turns (1)")
    );
    assert_eq!(totals.errored_turns, 1);
    let text = output_text(&turn);
    assert!(
        text.contains("✗ Reached maximum number of turns (1)"),
        "{text}"
    );

    // The session stays usable.
    let next = run_turn(&mut ws, "say: still here").await?;
    assert!(output_text(&next).contains("still here"));

    // Interrupt over REST or the socket ends a 30 s turn part-way: it is
    // aborted while streaming and its last word never arrives (asserted as
    // behaviour, not as a time limit a loaded machine could miss).
    for via_ws in [false, true] {
        ws.command("slow: 30000 one two three four five six seven eight nine finale")
            .await?;
        read_until(&mut ws, TURN_TIMEOUT, |m| {
            matches!(m, ServerMessage::Output { event: Some(e), .. } if e["type"] == "stream_event")
                || matches!(m, ServerMessage::Output { text, .. } if text.contains("one"))
        })
        .await?;
        if via_ws {
            ws.send(&ClientMessage::Interrupt).await?;
        } else {
            let answer = h.client.interrupt(&id).await?;
            assert_eq!(answer["interrupted"], true, "{answer}");
        }
        let ended = read_until(&mut ws, TURN_TIMEOUT, |m| is_state(m, SessionState::Ready)).await?;
        let (t, _) = turn_result(&ended);
        assert_eq!(
            t.terminal_reason.as_deref(),
            Some("aborted_streaming"),
            "{t:?}"
        );
        let text = output_text(&ended);
        assert!(
            !text.contains("finale"),
            "ws: {via_ws}: the whole reply arrived, so nothing was interrupted: {text}"
        );
        let after = run_turn(&mut ws, "say: after interrupt").await?;
        assert!(output_text(&after).contains("after interrupt"));
    }
    h.shutdown().await;
    Ok(())
}

/// `POST /v1/messages` straight to the gateway with the session's own
/// token, as a process in its container could: the status and the error
/// message.
async fn direct_model_call(h: &Harness, id: &str) -> anyhow::Result<(u16, String)> {
    let sid = cc_core::SessionId::parse(id).expect("a session ID");
    let creds = h.manager.credentials().get(&sid).expect("live credentials");
    let url = format!(
        "http://127.0.0.1:{}/anthropic/{id}/v1/messages",
        h.manager.config().gateway_port
    );
    let resp = reqwest::Client::new()
        .post(url)
        .header("x-api-key", creds.token.expose())
        .json(&serde_json::json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await?;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    Ok((status, message.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_budget_stops_a_turn() -> anyhow::Result<()> {
    let h = Harness::start_configured(
        HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        |c| c.agent.max_user_budget_usd = Some(0.04),
    )
    .await?;
    // A second session of the same user, created while nothing is spent.
    let (other, _other_ws) = session_with(&h, "budget-other", SessionOptions::default()).await?;
    // One call with Claude Code's ~20k-token prompt costs ~$0.05 at list
    // prices (the double reports realistic input sizes).
    let (id, mut ws) = session_with(
        &h,
        "budget",
        SessionOptions {
            max_budget_usd: Some(0.01),
            ..Default::default()
        },
    )
    .await?;
    let turn = run_turn(&mut ws, "bash: echo over-budget").await?;
    let (t, totals) = turn_result(&turn);
    assert_eq!(t.subtype, "error_max_budget_usd", "{t:?}");
    assert_eq!(t.terminal_reason.as_deref(), Some("budget_exhausted"));
    assert!(
        t.error.as_deref().unwrap_or("").contains("maximum budget"),
        "{t:?}"
    );
    assert!(totals.cost_usd > 0.01, "{totals:?}");
    // The model asked for the tool, but it never ran: no tool result.
    let text = output_text(&turn);
    assert!(text.contains("▶ Bash: echo over-budget"), "{text}");
    assert!(!text.contains("⎿"), "{text}");
    assert!(text.contains("✗ Reached maximum budget"), "{text}");
    let status = h.client.status(&id).await?;
    assert_eq!(status.usage.errored_turns, 1);
    // Further turns are refused, even if Claude Code restarted.
    match h.client.command(&id, "say: more").await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (403, "budget_exhausted"))
        }
        other => panic!("expected a 403, got {other:?}"),
    }

    // Nor does the relay take the session's model calls: calling the API
    // directly with the session's token spends nothing more.
    let calls = h.model.requests().len();
    let (status, message) = direct_model_call(&h, &id).await?;
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("maxBudgetUsd: the session has spent"),
        "{message}"
    );

    // The user's budget (0.04 USD) is spent now: the other session takes no
    // more turns nor model calls, and no new session starts.
    let (status, message) = direct_model_call(&h, &other).await?;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("per user"), "{message}");
    assert_eq!(h.model.requests().len(), calls, "no call reached the model");
    match h.client.command(&other, "say: on the user's budget").await {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            assert_eq!((status, code.as_str()), (403, "budget_exhausted"));
            assert!(message.contains("per user"), "{message}");
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    let url = h
        .git
        .create_repo("budget2", &[("README.md", "# Sample\n")])?;
    match h.client.create(&h.create_request(&url, None)).await {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            assert_eq!(
                (status, code.as_str()),
                (403, "budget_exhausted"),
                "{message}"
            );
            assert!(message.contains("options.maxBudgetUsd"), "{message}");
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_policy_refuses_forbidden_options_at_create() -> anyhow::Result<()> {
    let h = Harness::start_configured(
        HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        |c| {
            c.agent.allowed_models = vec!["claude-sonnet-4-5".into()];
            c.agent.max_budget_usd = Some(1.0);
            c.agent.forbidden_tools = vec!["WebFetch".into()];
        },
    )
    .await?;
    let url = h
        .git
        .create_repo("policy", &[("README.md", "# Sample\n")])?;
    let cases: [(SessionOptions, &str); 5] = [
        (
            SessionOptions {
                model: Some("claude-opus-5-5".into()),
                ..Default::default()
            },
            "options.model",
        ),
        (
            SessionOptions {
                max_budget_usd: Some(5.0),
                ..Default::default()
            },
            "options.maxBudgetUsd",
        ),
        (
            SessionOptions {
                allowed_tools: Some(vec!["WebFetch(domain:example.com)".into()]),
                ..Default::default()
            },
            "options.allowedTools",
        ),
        (
            SessionOptions {
                env: Some(BTreeMap::from([(
                    "ANTHROPIC_BASE_URL".to_owned(),
                    "http://evil.example/secret-value".to_owned(),
                )])),
                ..Default::default()
            },
            "options.env.ANTHROPIC_BASE_URL",
        ),
        (
            SessionOptions {
                permission_mode: Some("yolo".into()),
                ..Default::default()
            },
            "options.permissionMode",
        ),
    ];
    for (options, named) in cases {
        let mut req = h.create_request(&url, None);
        req.options = Some(options);
        match h.client.create(&req).await {
            Err(ClientError::Api {
                status,
                code,
                message,
            }) => {
                assert_eq!(
                    (status, code.as_str()),
                    (400, "invalid_option"),
                    "{message}"
                );
                assert!(message.contains(named), "{named}: {message}");
                assert!(!message.contains("secret-value"), "{message}");
            }
            other => panic!("{named}: expected a 400, got {other:?}"),
        }
    }
    // Nothing was created for the refused requests.
    assert!(h.client.list(true).await?.is_empty());
    h.shutdown().await;
    Ok(())
}
