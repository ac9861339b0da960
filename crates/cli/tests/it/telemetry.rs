//! `serve --otlp-endpoint`: a real session (create, a turn, delete) leaves
//! its trace in an OpenTelemetry collector — the API request with the
//! create under it, and the session's own trace with its start, turn and
//! end — and no secret in any span.

use super::{await_ready, cli, run_turn, spawn_serve};
use cc_testkit::otlp_receiver::{OtlpReceiver, Span};
use std::process::Stdio;
use std::time::Duration;

const ADMIN: &str = "telemetry-admin-token-0123456789";
/// Spans are exported within about a second of closing.
const EXPORTED: Duration = Duration::from_secs(60);

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name}: {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_trace_reaches_the_collector() -> anyhow::Result<()> {
    let collector = OtlpReceiver::start().await?;
    let api_key = format!("sk-ant-otel-{}", cc_core::Token::generate().expose());
    let model = cc_model_double::spawn(cc_model_double::ModelDoubleConfig {
        api_key: Some(api_key.clone()),
        latency_ms: 0,
    })
    .await?;
    let git = cc_testkit::git_server::GitServer::start().await?;
    let guard = cc_testkit::docker::PrefixGuard::new();
    let (home, data) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let image = std::env::var("CLAUDECLUSTER_TEST_IMAGE")
        .unwrap_or_else(|_| cc_testkit::harness::DEFAULT_TEST_IMAGE.into());
    let mut c = cli(home.path());
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "0.0.0.0:0",
    ])
    .args(["--image", &image, "--admin-token", ADMIN])
    .args(["--resource-prefix", &guard.prefix])
    .args(["--anthropic-base-url", &model.base_url()])
    .args(["--allow-repo-host", &git.addr().to_string()])
    .args(["--otlp-endpoint", &collector.url()])
    .args(["--otel-service-name", "cc-telemetry-test"])
    .arg("--data-dir")
    .arg(data.path())
    // Spans are exported whatever the log level.
    .env("RUST_LOG", "error")
    .stderr(Stdio::null());
    let (mut serve, base) = spawn_serve(c).await?;
    let client = cc_client::Client::with_token(base, Some(ADMIN.into()))?;

    let repo = git.create_repo("traced", &[("README.md", "# Traced\n")])?;
    let request = cc_testkit::harness::session_request(&repo, None, &api_key);
    let id = client.create(&request).await?.session_id;
    let mut ws = client.stream(&id, 0).await?;
    await_ready(&mut ws, Duration::from_secs(90)).await?;
    run_turn(&mut ws, "say: traced").await?;
    client.delete(&id).await?;
    ws.close().await;

    // The session's own span closes last, when its actor ends.
    let spans = collector
        .wait_for(EXPORTED, |s| s.iter().any(|s| s.name == "session"))
        .await?;
    serve.kill().await?;
    assert!(spans.iter().all(|s| s.service == "cc-telemetry-test"));
    assert!(spans.iter().all(|s| s.end_ns >= s.start_ns));

    // The create: the API request, the core's create under it, the
    // runtime's under that, one trace.
    let create_request = spans
        .iter()
        .find(|s| {
            s.name == "request" && s.attr("path").as_deref() == Some("/api/v1/sessions/create")
        })
        .expect("the create request's span");
    assert_eq!(create_request.kind, 2, "a server span");
    assert_eq!(create_request.parent_span_id, "");
    let create = one(&spans, "session.create");
    assert_eq!(create.parent_span_id, create_request.span_id);
    assert_eq!(create.trace_id, create_request.trace_id);
    assert_eq!(create.attr("session.id").as_deref(), Some(id.as_str()));
    let runtime = one(&spans, "runtime.create");
    assert_eq!(runtime.parent_span_id, create.span_id);

    // The session's trace: start, the turn (with its cost), the end.
    let session = one(&spans, "session");
    assert_eq!(session.parent_span_id, "", "a trace of its own");
    assert_eq!(session.attr("session.id").as_deref(), Some(id.as_str()));
    for name in ["session.start", "session.turn", "session.end"] {
        let s = one(&spans, name);
        assert_eq!(
            (s.trace_id.as_str(), s.parent_span_id.as_str()),
            (session.trace_id.as_str(), session.span_id.as_str()),
            "{name} under the session"
        );
    }
    let turn = one(&spans, "session.turn");
    assert!(turn.attr("turn.cost_usd").is_some(), "{:?}", turn.raw);
    assert_eq!(turn.attr("turn.is_error").as_deref(), Some("false"));

    // Never a secret.
    let raw = collector.raw();
    assert!(!raw.contains(&api_key), "the user's key in a span");
    assert!(!raw.contains(ADMIN), "the admin token in a span");
    Ok(())
}
