//! Getting the work out: the session's diff against where it started.

use super::{ready_session, run_turn};
use cc_testkit::harness::{output_text, summary};
use cc_testkit::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_shows_committed_uncommitted_and_new_work() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws, _) = ready_session(&h, "work").await?;
    let before = h.client.diff(&id).await?;
    assert!(before.files.is_empty(), "{before:?}");
    assert_eq!(before.base_commit, before.head_commit);

    // One committed file, one edited tracked file, one new untracked file.
    let turn = run_turn(
        &mut ws,
        "bash: printf 'one\\ntwo\\n' > added.txt && git add added.txt && git commit -qm 'add added.txt' && echo more >> README.md && echo fresh > untracked.txt && git status --short",
    )
    .await?;
    assert!(output_text(&turn).contains("✓ done"), "{}", summary(&turn));

    let d = h.client.diff(&id).await?;
    assert_ne!(d.base_commit, d.head_commit, "the commit moved HEAD");
    let mut paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["README.md", "added.txt", "untracked.txt"], "{d:?}");
    assert_eq!((d.insertions, d.deletions), (4, 0), "{d:?}");
    assert!(d.diff.contains("+fresh"), "{}", d.diff);
    assert!(d.diff.contains("+more"), "{}", d.diff);
    assert!(
        d.patches.contains("Subject: [PATCH] add added.txt"),
        "{}",
        d.patches
    );
    assert!(
        !d.patches.contains("untracked.txt"),
        "only commits are patches"
    );
    assert!(!d.truncated);

    // Taking the diff left the agent's index alone: the new file is still
    // untracked for it.
    let turn = run_turn(&mut ws, "bash: git status --short untracked.txt").await?;
    assert!(
        output_text(&turn).contains("?? untracked.txt"),
        "{}",
        summary(&turn)
    );

    let err = h
        .client
        .diff("0123456789abcdef01234567")
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Some("session_not_found"));
    h.shutdown().await;
    Ok(())
}
