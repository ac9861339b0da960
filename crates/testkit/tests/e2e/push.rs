//! Getting the work out: pushes to the session's branch through the git
//! relay, the refusals (from the API and from inside the container) and
//! their audit records, and pull requests on a scripted forge.

use super::{ready_session, run_turn};
use cc_core::audit::{AuditFilter, AuditRecord};
use cc_core::AuditStore;
use cc_server::forge::ForgeKind;
use cc_testkit::fake_forge::FakeForge;
use cc_testkit::harness::{is_state, output_text, read_until, summary, HarnessOptions};
use cc_testkit::Harness;
use cc_wire::api::{PullRequestOptions, PushRequest, SessionState};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// The session's audit records of `action` with `outcome`.
async fn audited(h: &Harness, id: &str, action: &str, outcome: &str) -> Vec<AuditRecord> {
    let filter = AuditFilter {
        action: Some(action.into()),
        session_id: Some(id.into()),
        limit: 1000,
        ..Default::default()
    };
    let all = h
        .manager
        .store()
        .audit_records(&filter)
        .await
        .expect("reading the audit log");
    all.into_iter()
        .filter(|r| r.event.outcome == outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_creates_the_session_branch_and_refuses_base_force_and_delete() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws, _) = ready_session(&h, "pushing").await?;
    let own = format!("claudecluster/{id}");

    let turn = run_turn(
        &mut ws,
        "bash: printf 'v1\\n' > feature.txt && git add feature.txt && git commit -qm 'add feature'",
    )
    .await?;
    assert!(output_text(&turn).contains("✓ done"), "{}", summary(&turn));
    let d = h.client.diff(&id).await?;
    let paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["feature.txt"], "{d:?}");

    let first = h.client.push(&id, &PushRequest::default()).await?;
    assert_eq!(first.branch, own);
    assert!(first.created && !first.committed_changes, "{first:?}");
    assert_eq!(
        first.commit, d.head_commit,
        "the diff's head is what was pushed"
    );
    assert_eq!(h.git.branches("pushing")?, [own.as_str(), "main"]);
    assert_eq!(h.git.show("pushing", &own, "feature.txt")?, "v1\n");
    assert!(
        h.git.show("pushing", "main", "feature.txt").is_err(),
        "the base branch is untouched"
    );

    // Uncommitted work is committed, and the branch fast-forwards (through
    // the relay's ancestry check).
    let turn = run_turn(&mut ws, "bash: printf 'v2\\n' > feature.txt").await?;
    assert!(output_text(&turn).contains("✓ done"), "{}", summary(&turn));
    let second = h
        .client
        .push(
            &id,
            &PushRequest {
                message: Some("Second version".into()),
                ..Default::default()
            },
        )
        .await?;
    assert!(!second.created && second.committed_changes, "{second:?}");
    assert_eq!(h.git.show("pushing", &own, "feature.txt")?, "v2\n");

    // Claude Code's own plain `git push` goes to the session's branch.
    let turn = run_turn(
        &mut ws,
        "bash: printf 'v3\\n' > feature.txt && git commit -qam v3 && git push 2>&1",
    )
    .await?;
    assert!(output_text(&turn).contains("✓ done"), "{}", summary(&turn));
    assert_eq!(h.git.show("pushing", &own, "feature.txt")?, "v3\n");

    // From the API: the base branch, and a branch outside the prefixes.
    for branch in ["main", "feature/x"] {
        let req = PushRequest {
            branch: Some(branch.into()),
            ..Default::default()
        };
        let err = h.client.push(&id, &req).await.expect_err(branch);
        assert_eq!(err.code(), Some("push_refused"), "{err}");
    }

    let denied_before = super::metric(&h, "relay=\"git\",decision=\"deny\"").await?;
    // From inside the container: to the base branch, a force push that
    // rewinds the session branch, a deletion and a tag. The relay refuses
    // each with a reason git prints.
    for (push, reason) in [
        (
            "HEAD:main".to_owned(),
            "is the branch the session started from",
        ),
        (
            format!("--force HEAD~1:refs/heads/{own}"),
            "force pushes are not allowed",
        ),
        (format!("--delete {own}"), "deleting refs/heads/"),
        (
            "HEAD:refs/tags/v1".to_owned(),
            "only branches may be pushed",
        ),
    ] {
        let turn = run_turn(&mut ws, &format!("bash: git push origin {push} 2>&1; true")).await?;
        let text = output_text(&turn);
        assert!(text.contains(reason), "{reason:?} missing from {text}");
        assert!(text.contains("[remote rejected]"), "{text}");
    }
    assert_eq!(h.git.branches("pushing")?, [own.as_str(), "main"]);
    assert_eq!(h.git.show("pushing", &own, "feature.txt")?, "v3\n");
    assert!(h.git.show("pushing", "main", "feature.txt").is_err());
    // Refused pushes answer 200 (git's report-status) but count as denied.
    let denied = super::metric(&h, "relay=\"git\",decision=\"deny\"").await?;
    assert!(denied >= denied_before + 4, "{denied_before} → {denied}");

    // Someone else moves the session's branch on the server: the API's
    // push is rejected (never forced over it) and says why.
    let other = tempfile::tempdir()?;
    let work = other.path().join("w");
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=Other",
                "-c",
                "user.email=other@example.invalid",
            ])
            .args(args)
            .output()?;
        anyhow::ensure!(out.status.success(), "git {args:?}: {out:?}");
        Ok(())
    };
    git(&[
        "clone",
        "-q",
        "-b",
        &own,
        &h.git.url("pushing"),
        path(&work),
    ])?;
    std::fs::write(work.join("other.txt"), "theirs\n")?;
    git(&["-C", path(&work), "add", "other.txt"])?;
    git(&["-C", path(&work), "commit", "-qm", "theirs"])?;
    git(&["-C", path(&work), "push", "-q", "origin", "HEAD"])?;
    let turn = run_turn(&mut ws, "bash: echo v4 > feature.txt && git commit -qam v4").await?;
    assert!(output_text(&turn).contains("✓ done"), "{}", summary(&turn));
    let err = h
        .client
        .push(&id, &PushRequest::default())
        .await
        .expect_err("the branch moved on the server");
    assert_eq!(err.code(), Some("push_rejected"), "{err}");
    assert_eq!(h.git.show("pushing", &own, "other.txt")?, "theirs\n");
    assert_eq!(
        audited(&h, &id, "session.push", "push_rejected")
            .await
            .len(),
        1
    );

    // Every refusal is in the audit log, beside the pushes that went out.
    let relay_refused = audited(&h, &id, "git.push", "push_refused").await;
    assert_eq!(relay_refused.len(), 4, "{relay_refused:#?}");
    let details: Vec<&str> = relay_refused
        .iter()
        .filter_map(|r| r.event.detail.as_deref())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("refs/heads/main")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("force push")),
        "{details:?}"
    );
    assert_eq!(audited(&h, &id, "git.push", "ok").await.len(), 3);
    assert_eq!(
        audited(&h, &id, "session.push", "push_refused").await.len(),
        2
    );
    assert_eq!(audited(&h, &id, "session.push", "ok").await.len(), 2);
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_is_opened_with_the_last_result() -> anyhow::Result<()> {
    const TOKEN: &str = "repo-token-for-the-forge";
    let forge = FakeForge::start(ForgeKind::GitHub, TOKEN)?;
    let h = Harness::start_with(HarnessOptions {
        forge: Some((ForgeKind::GitHub, forge.api_url())),
        ..Default::default()
    })
    .await?;
    let url = h
        .git
        .create_repo("acme/widgets", &[("README.md", "# Widgets\n")])?;
    let mut req = h.create_request(&url, None);
    req.repo_token = Some(TOKEN.into());
    let created = h.client.create(&req).await?;
    let id = created.session_id;
    let mut ws = cc_client::EventStream::connect(&created.endpoints.websocket).await?;
    read_until(&mut ws, std::time::Duration::from_secs(120), |m| {
        is_state(m, SessionState::Ready)
    })
    .await?;
    run_turn(
        &mut ws,
        "bash: echo fixed >> README.md && git commit -qam 'Fix the README'",
    )
    .await?;
    run_turn(&mut ws, "say: ## Fix the README\n\nAdded the missing line.").await?;

    let pushed = h
        .client
        .push(
            &id,
            &PushRequest {
                pull_request: Some(PullRequestOptions {
                    draft: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    let pr = pushed.pull_request.expect("a pull request");
    assert_eq!((pr.number, pr.base.as_str()), (1, "main"), "{pr:?}");
    assert!(pr.url.contains("/pull/1"), "{pr:?}");

    let seen = forge.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert!(r.path.ends_with("/repos/acme/widgets/pulls"), "{}", r.path);
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(r.body["title"], "Fix the README");
    assert_eq!(r.body["head"], format!("claudecluster/{id}"));
    assert_eq!(r.body["base"], "main");
    assert_eq!(r.body["draft"], true);
    let body = r.body["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("Added the missing line.") && body.contains(&id),
        "{body}"
    );

    // The forge's refusal reaches the user, who learns the push happened.
    forge.fail_next(
        422,
        serde_json::json!({
            "message": "Validation Failed",
            "errors": [{ "message": "A pull request already exists for acme:claudecluster." }]
        }),
    );
    let req = PushRequest {
        pull_request: Some(PullRequestOptions::default()),
        ..Default::default()
    };
    let err = h
        .client
        .push(&id, &req)
        .await
        .expect_err("refused by the forge");
    assert_eq!(err.code(), Some("forge_refused"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("already exists") && text.contains("pushed"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    assert_eq!(audited(&h, &id, "pr.create", "ok").await.len(), 1);
    assert_eq!(
        audited(&h, &id, "pr.create", "forge_refused").await.len(),
        1
    );
    h.shutdown().await;
    Ok(())
}

/// The README's `409 session_busy`: a push while a turn runs is refused
/// (HEAD and the working tree are moving), and works once the turn ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_turn_is_409_session_busy() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws, _) = ready_session(&h, "busy-push").await?;
    ws.command("slow: 20000 one two three four five six seven eight nine finale")
        .await?;
    // Running: its first word has streamed.
    read_until(&mut ws, super::TURN_TIMEOUT, |m| {
        matches!(m, cc_wire::api::ServerMessage::Output { event: Some(e), .. } if e["type"] == "stream_event")
            || matches!(m, cc_wire::api::ServerMessage::Output { text, .. } if text.contains("one"))
    })
    .await?;
    let err = h
        .client
        .push(&id, &PushRequest::default())
        .await
        .expect_err("a push during a turn");
    assert!(
        matches!(&err, cc_client::ClientError::Api { status: 409, code, .. } if code == "session_busy"),
        "{err}"
    );
    assert_eq!(h.git.branches("busy-push")?, ["main"], "nothing pushed");
    h.client.interrupt(&id).await?;
    read_until(&mut ws, super::TURN_TIMEOUT, |m| {
        is_state(m, SessionState::Ready)
    })
    .await?;
    let pushed = h.client.push(&id, &PushRequest::default()).await?;
    assert_eq!(pushed.branch, format!("claudecluster/{id}"));
    h.shutdown().await;
    Ok(())
}
