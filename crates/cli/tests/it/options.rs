//! Session options and per-turn overrides as flags (issue 8): `run` and
//! `session create` pass them to the server, `session send --model`
//! applies to one turn, and `--env` values are never printed.

use super::{cli, describe, output, stderr, stdout};
use cc_testkit::Harness;
use tokio::process::Command;

/// The binary pointed at the harness's server.
fn at(h: &Harness, home: &std::path::Path) -> Command {
    let mut c = cli(home);
    c.env("CLAUDECLUSTER_URL", h.client.base_url())
        .env("CLAUDECLUSTER_TOKEN", &h.user_token);
    c
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
async fn run_passes_the_model_the_system_prompt_and_tool_limits() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let home = tempfile::tempdir()?;
    let repo = h
        .git
        .create_repo("opts-run", &[("README.md", "# Opts\n")])?;

    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--model",
        "claude-test-model",
        "--append-system-prompt",
        "be brief",
        "say: hello-options",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("hello-options"), "{}", describe(&out));
    let reqs: Vec<_> = h
        .model
        .requests()
        .into_iter()
        .filter(|r| r.typed_prompt == "say: hello-options")
        .collect();
    assert!(!reqs.is_empty(), "the model double saw the turn");
    for r in &reqs {
        assert_eq!(r.model, "claude-test-model");
        assert!(r.system.contains("be brief"), "system prompt: {}", r.system);
    }

    // A disallowed tool is refused, and the refusal is in the output.
    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--disallowed-tools",
        "Bash,WebFetch",
        "bash: echo x",
    ]))
    .await?;
    let text = stdout(&out);
    assert!(
        text.contains("offers no tool named Bash"),
        "refusal visible: {}",
        describe(&out)
    );
    assert!(!text.contains("▶ Bash"), "{}", describe(&out));
    let offered: Vec<_> = h
        .model
        .requests()
        .into_iter()
        .filter(|r| r.typed_prompt == "bash: echo x")
        .collect();
    assert!(!offered.is_empty());
    for r in &offered {
        assert!(
            !r.tool_names.iter().any(|t| t == "Bash" || t == "WebFetch"),
            "{:?}",
            r.tool_names
        );
    }

    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_options_and_a_per_turn_model_on_send() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let home = tempfile::tempdir()?;
    let repo = h
        .git
        .create_repo("opts-send", &[("README.md", "# Opts\n")])?;
    let instructions = home.path().join("extra.md");
    std::fs::write(&instructions, "Instructions mark QWERTY-8.\n")?;
    let secret = "cli-env-value-never-printed";

    let out = output(
        at(&h, home.path())
            .args([
                "session",
                "create",
                "--repo",
                &repo,
                "--model",
                "claude-test-model",
                "--permission-mode",
                "acceptEdits",
                "--allowed-tools",
                "Bash,Read",
                "--max-turns",
                "5",
                "--instructions-file",
            ])
            .arg(&instructions)
            .args(["--env", &format!("CLI_OPT_VAR={secret}"), "--json"])
            .env("ANTHROPIC_API_KEY", &h.api_key),
    )
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !stdout(&out).contains(secret) && !stderr(&out).contains(secret),
        "the --env value is never printed: {}",
        describe(&out)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = st["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", describe(&out)))
        .to_owned();

    // The session's options: the environment and the instructions are
    // there, the session's permission mode applies, and Bash runs without
    // asking because it is allowed.
    let out = output(at(&h, home.path()).args([
        "session",
        "send",
        "--json",
        &id,
        "bash: printenv CLI_OPT_VAR | sed s/never-printed/seen/ && cat /workspace/repo/CLAUDE.md",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("cli-env-value-seen"), "{}", describe(&out));
    assert!(text.contains("QWERTY-8"), "{}", describe(&out));
    assert!(
        text.lines()
            .any(|l| l.contains("\"permissionMode\":\"acceptEdits\"")),
        "{}",
        describe(&out)
    );

    // --model / --permission-mode on send apply to that turn only.
    let out = output(at(&h, home.path()).args([
        "session",
        "send",
        "--json",
        "--model",
        "other-model",
        "--permission-mode",
        "plan",
        &id,
        "say: per-turn",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(models_for(&h, "say: per-turn"), ["other-model"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("\"permissionMode\":\"plan\"")),
        "{}",
        describe(&out)
    );
    let out =
        output(at(&h, home.path()).args(["session", "send", &id, "say: session-model"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(models_for(&h, "say: session-model"), ["claude-test-model"]);

    // --no-wait carries the overrides too.
    let out = output(at(&h, home.path()).args([
        "session",
        "send",
        "--no-wait",
        "--model",
        "queued-model",
        &id,
        "say: queued",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while models_for(&h, "say: queued").is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(models_for(&h, "say: queued"), ["queued-model"]);

    h.client.delete(&id).await?;
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_option_flags_are_usage_errors_that_never_echo_env_values() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let run = |extra: &[&str]| {
        let mut c = cli(home.path());
        c.args([
            "run",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "--repo",
            "https://example.invalid/r",
            "--api-key",
            "k",
        ])
        .args(extra)
        .arg("say: hi");
        c
    };
    for bad in [
        &["--env", "sk-secret-no-equals"][..],
        &["--env", "=sk-secret-no-name"],
        &["--env", "A=sk-secret-1", "--env", "A=sk-secret-2"],
        &[
            "--instructions-file",
            "/nonexistent/claudecluster-instructions.md",
        ],
        &["--mcp-config", "/nonexistent/claudecluster-mcp.json"],
        &["--permission-mode", "yolo"],
    ] {
        let out = output(&mut run(bad)).await?;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", describe(&out));
        assert!(
            !stdout(&out).contains("sk-secret") && !stderr(&out).contains("sk-secret"),
            "{bad:?}: {}",
            describe(&out)
        );
    }
    let mcp = home.path().join("mcp.json");
    std::fs::write(&mcp, "[\"not an object\"]")?;
    let out = output(&mut run(&["--mcp-config", mcp.to_str().expect("utf-8")])).await?;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("--mcp-config"), "{}", describe(&out));
    Ok(())
}
