//! Push: `POST /sessions/{id}/push` sent → its response, on one ready
//! session; beside a plain `git push` of the same one-commit change from a
//! clone on the host straight to the git server.
//!
//! The first push creates the session's branch and the relay only checks
//! the branch rules; every later one fast-forwards it, and the relay also
//! checks ancestry in its bare mirror (fetch the branches, index the pushed
//! pack, `merge-base --is-ancestor`), so the two are reported apart. Ours
//! also holds the API, the actor, sessiond's `git push` in the container
//! and the relay's hop; the commit itself is made by a turn before each
//! push and is not timed.

use crate::session::{delete, ready_session, run_turn};
use crate::spawn::ratio;
use crate::stats::Summary;
use cc_testkit::Harness;
use cc_wire::api::PushRequest;
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResult {
    /// The push that created the session's branch.
    pub create_ms: Option<f64>,
    /// Pushes that fast-forwarded it.
    pub fast_forward_ms: Option<Summary>,
    /// The baseline's push creating its branch.
    pub git_create_ms: Option<f64>,
    pub git_fast_forward_ms: Option<Summary>,
    /// Our fast-forward p50 minus the baseline's, in milliseconds.
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p95_ms: Option<f64>,
    pub ratio_p50: Option<f64>,
    pub errors: Vec<String>,
}

/// The create push and `n` fast-forward pushes.
struct Pushes {
    create: Option<Duration>,
    fast_forward: Vec<Duration>,
}

pub async fn measure(h: &Harness, repo_url: &str, n: usize) -> PushResult {
    let mut errors = Vec::new();
    let ours = ours(h, repo_url, n).await.unwrap_or_else(|e| {
        errors.push(format!("through ClaudeCluster: {e}"));
        Pushes::empty()
    });
    let url = repo_url.to_owned();
    let git = tokio::task::spawn_blocking(move || plain_git(&url, n))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .unwrap_or_else(|e| {
            errors.push(format!("plain git push: {e}"));
            Pushes::empty()
        });
    let ff = Summary::of(&ours.fast_forward);
    let git_ff = Summary::of(&git.fast_forward);
    let diff = |f: fn(&Summary) -> f64| Some(f(ff.as_ref()?) - f(git_ff.as_ref()?));
    PushResult {
        create_ms: ours.create.map(ms),
        git_create_ms: git.create.map(ms),
        overhead_p50_ms: diff(|s| s.p50),
        overhead_p95_ms: diff(|s| s.p95),
        ratio_p50: ratio(ff.as_ref(), git_ff.as_ref()),
        fast_forward_ms: ff,
        git_fast_forward_ms: git_ff,
        errors,
    }
}

impl Pushes {
    fn empty() -> Self {
        Self {
            create: None,
            fast_forward: Vec::new(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The shell command of change `i`: the first adds `f.txt`, the others
/// append to it; each is one commit.
fn change(i: usize) -> String {
    if i == 0 {
        "echo 0 > f.txt && git add f.txt && git commit -qm 0".into()
    } else {
        format!("echo {i} >> f.txt && git commit -qam {i}")
    }
}

async fn ours(h: &Harness, repo_url: &str, n: usize) -> Result<Pushes, String> {
    let mut s = ready_session(h, repo_url).await?;
    let mut out = Pushes::empty();
    let mut last_commit = String::new();
    let mut result = Ok(());
    for i in 0..=n {
        let step = async {
            let turn = run_turn(&mut s.ws, &format!("bash: {}", change(i))).await?;
            if turn.failed {
                return Err(format!("turn {i} failed"));
            }
            let started = Instant::now();
            let pushed = h
                .client
                .push(&s.id, &PushRequest::default())
                .await
                .map_err(|e| format!("push {i}: {e}"))?;
            let took = started.elapsed();
            // A commit that did not happen would be pushed as "up to date".
            if pushed.commit == last_commit || pushed.created != (i == 0) {
                return Err(format!("push {i} did not carry a new commit: {pushed:?}"));
            }
            last_commit = pushed.commit;
            Ok(took)
        };
        match step.await {
            Ok(d) if i == 0 => out.create = Some(d),
            Ok(d) => out.fast_forward.push(d),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    s.ws.close().await;
    let deleted = delete(&h.client, &s.id).await;
    result.and(deleted).map(|()| out)
}

/// The baseline: a clone in a temporary directory, the same changes
/// committed locally, each `git push` timed alone.
fn plain_git(repo_url: &str, n: usize) -> Result<Pushes, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let work = dir.path().join("repo");
    git(dir.path(), &["clone", "-q", repo_url, "repo"])?;
    git(&work, &["checkout", "-q", "-b", "bench/plain-push"])?;
    let mut out = Pushes::empty();
    for i in 0..=n {
        sh(&work, &change(i))?;
        let started = Instant::now();
        git(&work, &["push", "-q", "origin", "HEAD"])?;
        let took = started.elapsed();
        if i == 0 {
            out.create = Some(took);
        } else {
            out.fast_forward.push(took);
        }
    }
    Ok(out)
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    run(Command::new("git").args(args).current_dir(dir))
}

/// Runs `script` with a committer identity, whatever the host's config.
fn sh(dir: &Path, script: &str) -> Result<(), String> {
    run(Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@localhost")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@localhost"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_one_commit_on_the_last() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]).unwrap();
        for i in 0..3 {
            sh(dir.path(), &change(i)).unwrap();
        }
        let log = Command::new("git")
            .args(["log", "--format=%s"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&log.stdout), "2\n1\n0\n");
    }
}
