//! Preparing the checkout: `git clone` (skipped when the repository
//! directory already holds one, i.e. after a container restart or a wake),
//! `origin` and the relay headers stored in the local git config so the
//! agent's own fetch/push work, and a commit identity when none is
//! configured.
//!
//! git runs with a clean environment (see [`Config::child_env`]) plus
//! `GIT_TERMINAL_PROMPT=0`, so it fails instead of waiting for a password.

use crate::journal::Journal;
use crate::Config;
use cc_wire::sessiond::{AgentEvent, InitRequest};
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Commit identity set in the repository when git has none configured.
const DEFAULT_USER_NAME: &str = "Claude Code";
const DEFAULT_USER_EMAIL: &str = "claude@claudecluster.invalid";
/// `git config --unset-all` exit status when the key does not exist.
const GIT_CONFIG_MISSING_KEY: i32 = 5;

/// Rejects requests git would misread (an option where a URL belongs, a
/// header that would smuggle a second header or config line).
pub fn validate(req: &InitRequest) -> Result<(), String> {
    if req.clone_url.trim().is_empty() {
        return Err("cloneUrl is empty".into());
    }
    if req.clone_url.starts_with('-') {
        return Err("cloneUrl must not start with '-'".into());
    }
    for branch in [&req.branch, &req.push_branch].into_iter().flatten() {
        if branch.is_empty() || branch.starts_with('-') || branch.contains(char::is_whitespace) {
            return Err(format!("invalid branch {branch:?}"));
        }
    }
    if req
        .git_headers
        .iter()
        .any(|h| h.contains(['\n', '\r', '\0']))
    {
        return Err("gitHeaders must not contain line breaks".into());
    }
    if req
        .claude
        .env
        .iter()
        .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err("claude.env holds an invalid variable".into());
    }
    Ok(())
}

/// Makes sure `config.repo_dir` holds a configured checkout of the request's
/// repository. On failure, returns the reason to report as the error state.
pub async fn prepare_repo(
    config: &Config,
    req: &InitRequest,
    journal: &Journal,
) -> Result<(), String> {
    let repo = config.repo_dir.as_path();
    if repo.join(".git").exists() {
        tracing::info!(repo = %repo.display(), "checkout already present, skipping clone");
    } else {
        clone(config, req, journal).await?;
        // The base of the session's diff, kept in the repository so a
        // restarted sessiond finds it.
        expect_success(
            config,
            req,
            repo,
            &["update-ref", cc_wire::sessiond::BASE_REF, "HEAD"],
            "recording the session's base commit",
        )
        .await?;
        // Only after a fresh clone: a restarted container has them already.
        if let Some(text) = &req.instructions {
            add_instructions(repo, text).await?;
        }
    }
    // A checkout kept from an earlier container (a session woken from
    // sleep, or a fork's copy) names the relay as it was reached then:
    // another address, or another session's path.
    expect_success(
        config,
        req,
        repo,
        &["config", "--local", "remote.origin.url", &req.clone_url],
        "pointing origin at the session's relay",
    )
    .await?;
    store_headers(config, req, repo).await?;
    ensure_identity(config, req, repo).await?;
    if let Some(branch) = &req.push_branch {
        // A plain `git push` goes to the session's branch, the one place
        // the relay lets it push by default.
        let refspec = format!("HEAD:refs/heads/{branch}");
        expect_success(
            config,
            req,
            repo,
            &["config", "--local", "remote.origin.push", &refspec],
            "setting the session's push branch",
        )
        .await?;
    }
    Ok(())
}

/// Appends the session's instructions to the checkout's `CLAUDE.md`, which
/// Claude Code reads at start. A file created here is listed in
/// `.git/info/exclude` so the agent's commits do not pick it up.
async fn add_instructions(repo: &Path, text: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let path = repo.join("CLAUDE.md");
    let existed = tokio::fs::try_exists(&path).await.unwrap_or(false);
    let mut body = String::new();
    if existed {
        body.push_str("\n\n");
    }
    body.push_str(text);
    if !text.ends_with('\n') {
        body.push('\n');
    }
    let fail = |e: std::io::Error| format!("writing the session's instructions to CLAUDE.md: {e}");
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(fail)?;
    f.write_all(body.as_bytes()).await.map_err(fail)?;
    f.flush().await.map_err(fail)?;
    if !existed {
        let exclude = repo.join(".git/info/exclude");
        if let Some(dir) = exclude.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(fail)?;
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&exclude)
            .await
            .map_err(fail)?;
        f.write_all(b"\n/CLAUDE.md\n").await.map_err(fail)?;
    }
    tracing::info!(
        appended = existed,
        bytes = text.len(),
        "wrote the session's instructions to CLAUDE.md"
    );
    Ok(())
}

fn git(config: &Config, req: &InitRequest) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .envs(config.child_env(&req.claude.env))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn clone(config: &Config, req: &InitRequest, journal: &Journal) -> Result<(), String> {
    let repo = config.repo_dir.as_path();
    let mut cmd = git(config, req);
    for header in &req.git_headers {
        cmd.arg("-c").arg(format!("http.extraHeader={header}"));
    }
    cmd.args(["clone", "--no-tags"]);
    if let Some(branch) = &req.branch {
        cmd.arg("--branch").arg(branch).arg("--single-branch");
    }
    cmd.arg("--")
        .arg(&req.clone_url)
        .arg(repo)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    tracing::info!(repo = %repo.display(), branch = ?req.branch, "cloning");

    let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    let mut last_line = None;
    if let Some(stderr) = child.stderr.take() {
        let mut lines = BufReader::new(stderr).split(b'\n');
        while let Ok(Some(raw)) = lines.next_segment().await {
            // Progress output separates updates with '\r'; keep the last one.
            let text = String::from_utf8_lossy(&raw);
            let Some(line) = text.split('\r').map(str::trim_end).rfind(|l| !l.is_empty()) else {
                continue;
            };
            journal.append(AgentEvent::Stderr {
                line: line.to_owned(),
            });
            last_line = Some(line.to_owned());
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for git clone failed: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let what = match &req.branch {
        Some(b) => format!("git clone of branch {b}"),
        None => "git clone".to_owned(),
    };
    let why = last_line.unwrap_or_else(|| "no output from git".to_owned());
    Err(format!("{what} failed ({status}): {why}"))
}

/// Runs a git command in the checkout; `Ok(exit code)` when it ran.
async fn run_in_repo(
    config: &Config,
    req: &InitRequest,
    repo: &Path,
    args: &[&str],
) -> Result<(i32, String), String> {
    let out = git(config, req)
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Ok((out.status.code().unwrap_or(-1), stderr))
}

async fn expect_success(
    config: &Config,
    req: &InitRequest,
    repo: &Path,
    args: &[&str],
    what: &str,
) -> Result<(), String> {
    match run_in_repo(config, req, repo, args).await? {
        (0, _) => Ok(()),
        (code, stderr) => Err(format!("{what} failed (exit {code}): {stderr}")),
    }
}

/// Replaces the checkout's `http.extraHeader` values with the request's, so
/// the agent's later fetch/push reach the relay too.
async fn store_headers(config: &Config, req: &InitRequest, repo: &Path) -> Result<(), String> {
    match run_in_repo(
        config,
        req,
        repo,
        &["config", "--local", "--unset-all", "http.extraHeader"],
    )
    .await?
    {
        (0 | GIT_CONFIG_MISSING_KEY, _) => {}
        (code, stderr) => {
            return Err(format!(
                "clearing http.extraHeader failed (exit {code}): {stderr}"
            ))
        }
    }
    for header in &req.git_headers {
        expect_success(
            config,
            req,
            repo,
            &["config", "--local", "--add", "http.extraHeader", header],
            "storing http.extraHeader",
        )
        .await?;
    }
    Ok(())
}

/// Sets `user.name`/`user.email` locally unless git already has them (from
/// any config level).
async fn ensure_identity(config: &Config, req: &InitRequest, repo: &Path) -> Result<(), String> {
    for (key, value) in [
        ("user.name", DEFAULT_USER_NAME),
        ("user.email", DEFAULT_USER_EMAIL),
    ] {
        let (code, _) = run_in_repo(config, req, repo, &["config", "--get", key]).await?;
        if code != 0 {
            expect_success(
                config,
                req,
                repo,
                &["config", "--local", key, value],
                &format!("setting {key}"),
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_wire::sessiond::ClaudeSettings;

    fn req(url: &str) -> InitRequest {
        InitRequest {
            clone_url: url.to_owned(),
            git_headers: vec!["Authorization: Bearer x".into()],
            branch: Some("main".into()),
            claude: ClaudeSettings::default(),
            instructions: None,
            push_branch: None,
            fork: false,
            permission_timeout_secs: None,
        }
    }

    #[test]
    fn validation() {
        assert!(validate(&req("https://relay/r.git")).is_ok());
        assert!(validate(&req("")).is_err());
        assert!(validate(&req("--upload-pack=evil")).is_err());
        let mut r = req("https://relay/r.git");
        r.branch = Some("-x".into());
        assert!(validate(&r).is_err());
        let mut r = req("https://relay/r.git");
        r.git_headers = vec!["A: b\nC: d".into()];
        assert!(validate(&r).is_err());
    }
}
