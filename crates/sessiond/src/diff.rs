//! The session's changes against the commit its checkout started at
//! (`refs/claudecluster/base`): committed work, uncommitted edits and new
//! files alike.
//!
//! Untracked files only show in a diff once they are in an index, and the
//! agent's own index must not change under it, so the diff is taken through
//! a throw-away index (`GIT_INDEX_FILE`) filled from the working tree.

use crate::git::stdout as git;
use crate::Config;
use cc_wire::api::{FileChange, SessionDiff, MAX_DIFF_BYTES};
use cc_wire::sessiond::BASE_REF;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_INDEX: AtomicU64 = AtomicU64::new(1);

pub async fn diff(config: &Config) -> Result<SessionDiff, String> {
    let repo = config.repo_dir.as_path();
    let index = std::env::temp_dir().join(format!(
        "sessiond-diff-index-{}-{}",
        std::process::id(),
        NEXT_INDEX.fetch_add(1, Ordering::Relaxed)
    ));
    let result = diff_with_index(config, repo, &index).await;
    let _ = tokio::fs::remove_file(&index).await;
    result
}

async fn diff_with_index(
    config: &Config,
    repo: &Path,
    index: &Path,
) -> Result<SessionDiff, String> {
    let base = git(config, repo, None, &["rev-parse", "--verify", BASE_REF]).await?;
    let base = base.trim().to_owned();
    let head = git(config, repo, None, &["rev-parse", "HEAD"])
        .await?
        .trim()
        .to_owned();
    git(config, repo, Some(index), &["read-tree", "HEAD"]).await?;
    git(config, repo, Some(index), &["add", "-A"]).await?;
    let numstat = git(
        config,
        repo,
        Some(index),
        &["diff", "--cached", "--numstat", &base],
    )
    .await?;
    let (diff, cut_diff) =
        capped(git(config, repo, Some(index), &["diff", "--cached", &base]).await?);
    let range = format!("{base}..HEAD");
    let (patches, cut_patches) =
        capped(git(config, repo, None, &["format-patch", "--stdout", &range]).await?);
    let files: Vec<FileChange> = numstat.lines().filter_map(parse_numstat).collect();
    Ok(SessionDiff {
        base_commit: base,
        head_commit: head,
        insertions: files.iter().map(|f| f.insertions).sum(),
        deletions: files.iter().map(|f| f.deletions).sum(),
        files,
        diff,
        patches,
        truncated: cut_diff || cut_patches,
    })
}

/// `added<TAB>deleted<TAB>path`; binary files show `-` for both counts.
fn parse_numstat(line: &str) -> Option<FileChange> {
    let mut parts = line.splitn(3, '\t');
    let (ins, del, path) = (parts.next()?, parts.next()?, parts.next()?);
    let binary = ins == "-" && del == "-";
    Some(FileChange {
        path: path.to_owned(),
        insertions: ins.parse().unwrap_or(0),
        deletions: del.parse().unwrap_or(0),
        binary,
    })
}

/// Cuts text at [`MAX_DIFF_BYTES`] on a character boundary.
fn capped(mut s: String) -> (String, bool) {
    if s.len() <= MAX_DIFF_BYTES {
        return (s, false);
    }
    let mut end = MAX_DIFF_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_lines_parse() {
        let f = parse_numstat("3\t1\tsrc/a.rs").unwrap();
        assert_eq!(
            (f.insertions, f.deletions, f.binary, f.path.as_str()),
            (3, 1, false, "src/a.rs")
        );
        let b = parse_numstat("-\t-\timg.png").unwrap();
        assert!(b.binary);
        assert!(parse_numstat("garbage").is_none());
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let s = "é".repeat(MAX_DIFF_BYTES);
        let (cut, truncated) = capped(s);
        assert!(truncated);
        assert!(cut.len() <= MAX_DIFF_BYTES);
        assert_eq!(capped("short".into()), ("short".into(), false));
    }
}
