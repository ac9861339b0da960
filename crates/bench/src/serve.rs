//! A `claudecluster serve` of a phase's own, as a child process (the
//! replicas and Kubernetes phases): started from a command line, ready when
//! it prints where it listens.

use crate::session::err;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The admin token every phase's `serve` is started with.
pub const ADMIN: &str = "bench-serve-admin-token-0123456";

/// Starts `cmd` (a `serve` command line, its stdout piped to us) and
/// returns it with an admin client once it prints `listening on URL`.
pub async fn start(mut cmd: Command, name: &str) -> Result<(Child, cc_client::Client), String> {
    let mut child = cmd
        .args(["--admin-token", ADMIN])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let first = tokio::time::timeout(
        Duration::from_secs(60),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .map_err(|_| format!("{name} did not start"))?
    .map_err(err)?
    .unwrap_or_default();
    let base = first
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("{name}: unexpected first line {first:?}"))?;
    let client = cc_client::Client::with_token(base, Some(ADMIN.into())).map_err(err)?;
    Ok((child, client))
}

/// SIGTERM, then waits for the process to finish its shutdown (a `serve`
/// drains its warm pool on the way out).
pub async fn stop(mut child: Child) -> Result<(), String> {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(r) => r.map(|_| ()).map_err(err),
        Err(_) => {
            let _ = child.kill().await;
            Err("serve did not stop within 60 s of SIGTERM".into())
        }
    }
}
