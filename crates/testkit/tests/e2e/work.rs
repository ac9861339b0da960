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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_show_the_checkout_but_not_git() -> anyhow::Result<()> {
    use cc_wire::api::{EntryKind, FileEncoding, SessionPath};
    let h = Harness::start().await?;
    let (id, mut ws, _) = ready_session(&h, "files").await?;

    // A file written by the turn's Write tool, a binary file and a symlink
    // pointing out of the checkout.
    let turn = run_turn(
        &mut ws,
        "write: /workspace/repo/src/notes.txt\nfirst line\nsecond line",
    )
    .await?;
    assert!(output_text(&turn).contains("✓ done"), "{}", summary(&turn));
    let turn = run_turn(
        &mut ws,
        "bash: printf 'a\\000b' > blob.bin && ln -s /etc/passwd escape",
    )
    .await?;
    assert!(output_text(&turn).contains("✓ done"), "{}", summary(&turn));

    let SessionPath::Dir { path, entries, .. } = h.client.files(&id, "").await? else {
        anyhow::bail!("the root is not a directory");
    };
    assert_eq!(path, "");
    let listed: Vec<(&str, EntryKind)> =
        entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        listed,
        [
            ("README.md", EntryKind::File),
            ("blob.bin", EntryKind::File),
            ("escape", EntryKind::Symlink),
            ("src", EntryKind::Dir),
        ],
        "{entries:?}"
    );
    assert_eq!(entries[0].size, "# Sample\n".len() as u64);

    let file = h.client.files(&id, "src/notes.txt").await?;
    let SessionPath::File {
        path,
        encoding,
        content,
        truncated,
        size,
    } = &file
    else {
        anyhow::bail!("not a file: {file:?}");
    };
    assert_eq!(path, "src/notes.txt");
    assert_eq!(*encoding, FileEncoding::Utf8);
    assert!(
        content.starts_with("first line\nsecond line"),
        "{content:?}"
    );
    assert_eq!(*size, content.len() as u64);
    assert!(!truncated);
    let blob = h.client.files(&id, "blob.bin").await?;
    assert!(
        matches!(&blob, SessionPath::File { encoding: FileEncoding::Base64, content, .. } if content == "YQBi"),
        "{blob:?}"
    );

    for (path, status, code) in [
        (".git/config", 403, "forbidden_path"),
        ("escape", 403, "forbidden_path"),
        ("missing.txt", 404, "path_not_found"),
        ("../../etc/passwd", 400, "invalid_path"),
        ("/etc/passwd", 400, "invalid_path"),
    ] {
        match h.client.files(&id, path).await {
            Err(cc_client::ClientError::Api {
                status: s,
                code: c,
                message,
            }) => {
                assert_eq!((s, c.as_str()), (status, code), "{path}: {message}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    let err = h
        .client
        .files("0123456789abcdef01234567", "")
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Some("session_not_found"));
    h.shutdown().await;
    Ok(())
}
