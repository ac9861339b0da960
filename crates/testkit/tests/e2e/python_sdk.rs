//! The Python SDK (`clients/python`) against the real stack: its whole
//! `unittest` suite, the integration test included, run by the Python of
//! the virtualenv `ensure_python_sdk` (scripts/lib.sh) made and installed
//! the package into, with this harness's server (webhooks on, a receiver
//! port of the suite's allowed), model double and git server. The suite
//! decides what passes; this test gives it the stack, makes sure the
//! integration tests ran rather than skipped, and checks the SDK's push on
//! the git server.

use anyhow::Context;
use cc_testkit::harness::HarnessOptions;
use cc_testkit::Harness;
use std::path::PathBuf;
use std::time::Duration;

/// The interpreter to run the suite with (`ensure_python_sdk` exports it).
const PYTHON_ENV: &str = "CLAUDECLUSTER_TEST_PYTHON";
/// The suite's integration tests run four sessions, one of them through
/// three turns (one slowed down by the model double) and a push: 15 s
/// here, far more on a loaded 2-core CI machine.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
/// The repository the SDK's sessions work on.
const REPO: &str = "python-sdk";
/// The suite's tests that need the stack: each must run and pass.
const INTEGRATION_TESTS: [&str; 3] = [
    "test_a_whole_session",
    "test_a_real_delivery_verifies",
    "test_create_with_an_idempotency_key",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_suite_passes_against_a_real_server() -> anyhow::Result<()> {
    // Fails rather than skips: CI must run the SDK's suite.
    let python = std::env::var(PYTHON_ENV)
        .ok()
        .filter(|p| !p.trim().is_empty())
        .with_context(|| {
            format!(
                "{PYTHON_ENV} is not set: run `source scripts/lib.sh && ensure_python_sdk` \
                 (scripts/test.sh does) to make the SDK's virtualenv"
            )
        })?;
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    // The suite's webhook receiver listens on this port, on loopback,
    // which endpoints may use only when allowed.
    let webhook_port = cc_testkit::ports::fixed_port();
    let receiver = format!("127.0.0.1:{webhook_port}");
    let h = Harness::start_with(HarnessOptions {
        webhooks: Some(cc_server::webhook::WebhookConfig {
            user_hosts: vec![receiver.clone()],
            allow_hosts: vec![receiver],
        }),
        ..Default::default()
    })
    .await?;
    let repo = h
        .git
        .create_repo(REPO, &[("README.md", "# Python SDK\n")])?;

    let mut suite = tokio::process::Command::new(&python);
    suite
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "clients/python/tests",
            "-v",
        ])
        .current_dir(&workspace)
        .env("CLAUDECLUSTER_TEST_URL", h.client.base_url())
        .env("CLAUDECLUSTER_TEST_TOKEN", &h.user_token)
        .env("CLAUDECLUSTER_TEST_REPO", &repo)
        .env("CLAUDECLUSTER_TEST_CLAUDE_KEY", &h.api_key)
        .env("CLAUDECLUSTER_TEST_WEBHOOK_PORT", webhook_port.to_string())
        // The unit tests choose these themselves.
        .env_remove("CLAUDECLUSTER_URL")
        .env_remove("CLAUDECLUSTER_TOKEN")
        // No __pycache__ left in the checkout.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(SUITE_TIMEOUT, suite.output())
        .await
        .with_context(|| format!("the Python SDK's suite ran longer than {SUITE_TIMEOUT:?}"))?
        .with_context(|| format!("running {python}"))?;
    // unittest reports on stderr.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    anyhow::ensure!(
        out.status.success(),
        "the Python SDK's suite failed ({}):\n{report}",
        out.status
    );
    for test in INTEGRATION_TESTS {
        anyhow::ensure!(
            report
                .lines()
                .any(|l| l.starts_with(&format!("{test} ")) && l.ends_with(" ok")),
            "the SDK's {test} did not run and pass:\n{report}"
        );
    }

    // What the SDK pushed is on the git server, beside the untouched base.
    let branches = h.git.branches(REPO)?;
    let pushed = branches
        .iter()
        .find(|b| b.starts_with("claudecluster/"))
        .with_context(|| format!("no session branch on the git server: {branches:?}"))?;
    assert_eq!(h.git.show(REPO, pushed, "sdk.txt")?, "written by the sdk\n");
    assert!(h.git.show(REPO, "main", "sdk.txt").is_err());
    h.shutdown().await;
    Ok(())
}
