//! Running git in the checkout with the daemon's clean child environment
//! (see [`Config::child_env`]) and `GIT_TERMINAL_PROMPT=0`, so git fails
//! instead of waiting for a password.

use crate::Config;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};
use tokio::process::Command;

/// Runs `git -C repo args…`; `index` replaces the checkout's index.
pub async fn output(
    config: &Config,
    repo: &Path,
    index: Option<&Path>,
    args: &[&str],
) -> Result<Output, String> {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .envs(config.child_env(&BTreeMap::new()))
        .env("GIT_TERMINAL_PROMPT", "0")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(index) = index {
        cmd.env("GIT_INDEX_FILE", index);
    }
    cmd.output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))
}

/// [`output`]'s stdout; a failure names the command and git's complaint.
pub async fn stdout(
    config: &Config,
    repo: &Path,
    index: Option<&Path>,
    args: &[&str],
) -> Result<String, String> {
    let out = output(config, repo, index, args).await?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
