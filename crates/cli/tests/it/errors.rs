//! Failures a person meets first: no server, a refused token, bad usage.
//! Each is one clear line on stderr and a documented exit code.

use super::{cli, describe, output, stderr, stdout};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A port nothing listens on (outside the ephemeral range, so no other
/// test's `bind(:0)` takes it meanwhile).
async fn dead_port() -> anyhow::Result<u16> {
    Ok(cc_testkit::ports::fixed_port())
}

#[tokio::test]
async fn a_server_that_is_down_is_one_line_and_exit_5() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let url = format!("http://127.0.0.1:{}", dead_port().await?);
    for args in [
        vec!["session", "list"],
        vec!["session", "status", "01JD0000000000000000000000"],
        vec![
            "run",
            "--repo",
            "http://example.invalid/r.git",
            "--api-key",
            "k",
            "say: hi",
        ],
    ] {
        let out = output(cli(home.path()).args(&args).args(["--url", &url])).await?;
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {}", describe(&out));
        assert!(
            err.starts_with(&format!(
                "error: cannot reach the ClaudeCluster server at {url}: connection refused"
            )),
            "{err}"
        );
        assert!(err.contains("claudecluster serve"), "{err}");
        assert_eq!(stdout(&out), "");
    }
    Ok(())
}

/// Answers every request with 401 and records the requests' heads.
async fn refusing_server() -> anyhow::Result<(String, Arc<Mutex<Vec<String>>>)> {
    answering_server(
        "401 Unauthorized",
        "unauthorized",
        "invalid or missing token",
    )
    .await
}

/// Answers every request with `status` and the error `{code, message}`,
/// and records the requests' heads.
async fn answering_server(
    status: &'static str,
    code: &'static str,
    message: &'static str,
) -> anyhow::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let body = serde_json::json!({"code": code, "message": message}).to_string();
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((url, seen))
}

#[tokio::test]
async fn a_refused_token_is_one_line_and_exit_4() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let (url, seen) = refusing_server().await?;
    let out = output(
        cli(home.path())
            .args(["session", "list", "--url", &url])
            .env("CLAUDECLUSTER_TOKEN", "wrong-token"),
    )
    .await?;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{}", describe(&out));
    assert!(
        err.starts_with(&format!(
            "error: the server at {url} refused the token: invalid or missing token"
        )),
        "{err}"
    );
    assert!(err.contains("CLAUDECLUSTER_TOKEN"), "{err}");
    assert!(
        !err.contains("wrong-token"),
        "the token is never echoed: {err}"
    );
    let heads = seen.lock().unwrap().clone();
    assert!(
        heads
            .iter()
            .any(|h| h.contains("authorization: bearer wrong-token")),
        "{heads:?}"
    );
    Ok(())
}

#[tokio::test]
async fn only_a_refused_token_is_exit_4_other_refusals_say_why_and_exit_1() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let refusals = [
        (
            "budget_exhausted",
            "the session spent its budget of 1.00 USD",
        ),
        ("forbidden_path", "the path leaves the checkout"),
        ("ip_not_allowed", "requests from 10.1.2.3 are not allowed"),
        (
            "egress_not_allowed",
            "the session's egress policy refuses it",
        ),
        ("push_refused", "the push rules refuse main"),
        ("quota_exceeded", "another refusal"),
    ];
    for (code, message) in refusals {
        let (url, _) = answering_server("403 Forbidden", code, message).await?;
        let out = output(
            cli(home.path())
                .args([
                    "session",
                    "status",
                    "01JD0000000000000000000000",
                    "--url",
                    &url,
                ])
                .env("CLAUDECLUSTER_TOKEN", "good-token"),
        )
        .await?;
        assert_eq!(out.status.code(), Some(1), "{code}: {}", describe(&out));
        let err = stderr(&out);
        assert_eq!(err, format!("error: {message} ({code})\n"), "{code}");
    }
    // A token that may not do this is the token's problem.
    let (url, _) = answering_server("403 Forbidden", "forbidden", "admin token required").await?;
    let out = output(
        cli(home.path())
            .args(["session", "list", "--url", &url])
            .env("CLAUDECLUSTER_TOKEN", "user-token"),
    )
    .await?;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: the server at {url} refused the token: admin token required"
        )),
        "{}",
        describe(&out)
    );
    Ok(())
}

#[tokio::test]
async fn the_config_file_supplies_url_and_token_and_flags_win() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let (url, seen) = refusing_server().await?;
    let dir = home.path().join("claudecluster");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("config.toml"),
        format!("# test\nurl = \"{url}\"\ntoken = \"from-file\"\n"),
    )?;
    let out =
        output(cli(home.path()).args(["session", "status", "01JD0000000000000000000000"])).await?;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let out = output(cli(home.path()).args([
        "session",
        "status",
        "01JD0000000000000000000000",
        "--token",
        "from-flag",
    ]))
    .await?;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[0].contains("authorization: bearer from-file"),
        "{heads:?}"
    );
    assert!(
        heads[1].contains("authorization: bearer from-flag"),
        "{heads:?}"
    );

    // A broken config file is a usage error naming the line.
    std::fs::write(dir.join("config.toml"), "url = http://x\n")?;
    let out = output(cli(home.path()).args(["session", "list"])).await?;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("line 1"), "{}", describe(&out));
    Ok(())
}

#[tokio::test]
async fn run_without_an_api_key_is_a_usage_error() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let out = output(cli(home.path()).args(["run", "--repo", "http://h/r.git", "say: hi"])).await?;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
    Ok(())
}

#[tokio::test]
async fn every_command_has_help_with_an_example_and_completions_exist() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    for args in [
        vec!["run"],
        vec!["doctor"],
        vec!["session", "create"],
        vec!["session", "list"],
        vec!["session", "status"],
        vec!["session", "send"],
        vec!["session", "attach"],
        vec!["session", "logs"],
        vec!["session", "diff"],
        vec!["session", "push"],
        vec!["session", "delete"],
        vec!["completions"],
    ] {
        let out = output(cli(home.path()).args(&args).arg("--help")).await?;
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        let text = stdout(&out);
        assert!(text.contains("Example"), "{args:?} has no example:\n{text}");
        assert!(text.contains("claudecluster "), "{args:?}:\n{text}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = output(cli(home.path()).args(["completions", shell])).await?;
        assert!(out.status.success(), "{shell}: {}", describe(&out));
        let text = stdout(&out);
        assert!(
            text.contains("attach") && text.contains("doctor"),
            "{shell}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn doctor_names_each_failure_with_a_fix_and_exits_1() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let dead = format!("http://127.0.0.1:{}", dead_port().await?);
    let out = output(cli(home.path()).args([
        "doctor",
        "--url",
        &dead,
        "--data-dir",
        &data.path().display().to_string(),
        "--anthropic-base-url",
        &dead,
    ]))
    .await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "✗ cannot reach the ClaudeCluster server at {dead}"
        )),
        "{text}"
    );
    assert!(
        text.contains("fix: start it with `claudecluster serve`"),
        "{text}"
    );
    assert!(
        text.contains(&format!("✗ the Anthropic upstream {dead} is unreachable")),
        "{text}"
    );
    assert!(text.contains("✓ data directory"), "{text}");
    // Every ✗ line is followed by its fix.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with('✗') {
            assert!(
                lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("fix:")),
                "{text}"
            );
        }
    }
    assert!(stderr(&out).contains("checks failed"), "{}", describe(&out));
    Ok(())
}
