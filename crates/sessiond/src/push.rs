//! Pushing the session's work: uncommitted changes are committed first (so
//! what is pushed is what the diff shows), then `HEAD` goes to the branch
//! the orchestrator named, through the `origin` remote — the git relay,
//! which holds the push rules and the repository's credentials. Never
//! forced: a branch that moved on the server is reported, not overwritten.

use crate::git;
use crate::Config;
use cc_wire::sessiond::{PushOutcome, PushRequest};

/// Message of the commit made of uncommitted work when none is given.
const DEFAULT_MESSAGE: &str = "Work from a ClaudeCluster session";

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The request itself is unusable.
    Invalid(String),
    /// The server has commits the checkout lacks (not a fast-forward).
    Rejected(String),
    /// The relay (or the server) refused the update, with its reason.
    Refused(String),
    /// Anything else: git missing, the relay unreachable, ...
    Failed(String),
}

pub async fn push(config: &Config, req: &PushRequest) -> Result<PushOutcome, PushError> {
    let branch = req.branch.as_str();
    if branch.is_empty() || branch.starts_with('-') || branch.contains(char::is_whitespace) {
        return Err(PushError::Invalid(format!("invalid branch {branch:?}")));
    }
    let repo = config.repo_dir.as_path();
    let run = |args: &'static [&'static str]| git::stdout(config, repo, None, args);
    let dirty = !run(&["status", "--porcelain"])
        .await
        .map_err(PushError::Failed)?
        .trim()
        .is_empty();
    if dirty {
        run(&["add", "-A"]).await.map_err(PushError::Failed)?;
        let message = req.message.as_deref().unwrap_or(DEFAULT_MESSAGE);
        git::stdout(
            config,
            repo,
            None,
            &["commit", "--quiet", "--no-verify", "-m", message],
        )
        .await
        .map_err(PushError::Failed)?;
    }
    let commit = run(&["rev-parse", "HEAD"])
        .await
        .map_err(PushError::Failed)?
        .trim()
        .to_owned();
    let target = format!("HEAD:refs/heads/{branch}");
    let out = git::output(
        config,
        repo,
        None,
        &["push", "--porcelain", "origin", &target],
    )
    .await
    .map_err(PushError::Failed)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let status = porcelain_status(&stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(classify_failure(status, stderr.trim()));
    }
    let default_branch = run(&[
        "symbolic-ref",
        "--quiet",
        "--short",
        "refs/remotes/origin/HEAD",
    ])
    .await
    .ok()
    .and_then(|s| s.trim().strip_prefix("origin/").map(str::to_owned));
    Ok(PushOutcome {
        branch: branch.to_owned(),
        commit,
        created: status.is_some_and(|(flag, _)| flag == '*'),
        committed_changes: dirty,
        default_branch,
    })
}

/// The flag and summary of the one ref line of `git push --porcelain`
/// (`<flag>\t<from>:<to>\t<summary>`).
fn porcelain_status(stdout: &str) -> Option<(char, &str)> {
    stdout.lines().find_map(|line| {
        let mut parts = line.splitn(3, '\t');
        let flag = parts.next()?.chars().next()?;
        let _refs = parts.next()?;
        Some((flag, parts.next()?))
    })
}

fn classify_failure(status: Option<(char, &str)>, stderr: &str) -> PushError {
    match status {
        Some(('!', summary)) if summary.starts_with("[remote rejected]") => {
            let reason = summary
                .trim_start_matches("[remote rejected]")
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')');
            PushError::Refused(reason.to_owned())
        }
        Some(('!', summary)) if summary.starts_with("[rejected]") => PushError::Rejected(format!(
            "the branch has commits the session does not have {}; fetch and merge them first",
            summary.trim_start_matches("[rejected]").trim()
        )),
        _ => PushError::Failed(format!("git push failed: {stderr}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_lines_are_read() {
        let out = "To http://gw/git/x\n*\tHEAD:refs/heads/claudecluster/x\t[new branch]\nDone\n";
        assert_eq!(porcelain_status(out), Some(('*', "[new branch]")));
        assert_eq!(porcelain_status("Done\n"), None);
    }

    #[test]
    fn failures_are_told_apart() {
        let refused = classify_failure(
            Some((
                '!',
                "[remote rejected] (deleting refs/heads/x is not allowed)",
            )),
            "",
        );
        assert_eq!(
            refused,
            PushError::Refused("deleting refs/heads/x is not allowed".into())
        );
        assert!(matches!(
            classify_failure(Some(('!', "[rejected] (fetch first)")), ""),
            PushError::Rejected(m) if m.contains("fetch first")
        ));
        assert!(matches!(
            classify_failure(None, "fatal: unable to access"),
            PushError::Failed(m) if m.contains("unable to access")
        ));
    }
}
