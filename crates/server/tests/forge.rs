//! Opening pull (merge) requests against the fake GitHub and GitLab APIs
//! (`cc_testkit::fake_forge`), over a real socket: the request each forge
//! receives, what a success returns, and how each kind of failure reaches
//! the caller.

use cc_server::forge::{
    client, forge_for, open_pull_request, Forge, ForgeError, ForgeKind, OpenedPullRequest,
    PullRequestSpec,
};
use cc_testkit::fake_forge::FakeForge;
use serde_json::json;

const TOKEN: &str = "forge-token-0123456789abcdef";
const WRONG_TOKEN: &str = "wrong-token-fedcba9876543210";

fn forge_of(fake: &FakeForge) -> Forge {
    Forge {
        kind: fake.kind(),
        host: fake.addr().to_string(),
        api_url: fake.api_url(),
    }
}

fn spec(draft: bool) -> PullRequestSpec<'static> {
    PullRequestSpec {
        title: "Add a greeting",
        body: "Written by a ClaudeCluster session.",
        head: "cc/session-1",
        base: "main",
        draft,
    }
}

async fn open(
    fake: &FakeForge,
    project: &str,
    token: &str,
    spec: &PullRequestSpec<'_>,
) -> Result<OpenedPullRequest, ForgeError> {
    open_pull_request(&client().unwrap(), &forge_of(fake), project, token, spec).await
}

/// A refusal carrying the forge's message, whose Display holds no token.
fn assert_refused(err: ForgeError, status: u16, needle: &str) {
    assert_eq!(err.code(), "forge_refused");
    let shown = err.to_string();
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(!shown.contains(WRONG_TOKEN), "{shown}");
    match err {
        ForgeError::Refused { status: s, message } => {
            assert_eq!(s, status);
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn github_pull_request_has_the_real_request_shape() {
    let fake = FakeForge::start(ForgeKind::GitHub, TOKEN).unwrap();
    let opened = open(&fake, "octo/hello", TOKEN, &spec(true)).await.unwrap();
    assert_eq!(opened.number, 1);
    assert_eq!(opened.url, format!("{}/octo/hello/pull/1", fake.api_url()));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/v3/repos/octo/hello/pulls");
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(req.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(req.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(req.header("user-agent"), Some("claudecluster"));
    assert_eq!(
        req.body,
        json!({
            "title": "Add a greeting",
            "body": "Written by a ClaudeCluster session.",
            "head": "cc/session-1",
            "base": "main",
            "draft": true,
        })
    );

    // Numbers count up; a non-draft says so.
    let second = open(&fake, "octo/hello", TOKEN, &spec(false))
        .await
        .unwrap();
    assert_eq!(second.number, 2);
    assert_eq!(fake.requests()[1].body["draft"], json!(false));
}

#[tokio::test]
async fn gitlab_merge_request_has_the_real_request_shape() {
    let fake = FakeForge::start(ForgeKind::GitLab, TOKEN).unwrap();
    let opened = open(&fake, "group/sub/repo", TOKEN, &spec(true))
        .await
        .unwrap();
    assert_eq!(opened.number, 1);
    assert_eq!(
        opened.url,
        format!("{}/group/sub/repo/-/merge_requests/1", fake.api_url())
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.path,
        "/api/v4/projects/group%2Fsub%2Frepo/merge_requests"
    );
    assert_eq!(req.header("private-token"), Some(TOKEN));
    assert_eq!(req.header("authorization"), None);
    assert_eq!(
        req.body,
        json!({
            "source_branch": "cc/session-1",
            "target_branch": "main",
            "title": "Draft: Add a greeting",
            "description": "Written by a ClaudeCluster session.",
        })
    );

    let second = open(&fake, "group/sub/repo", TOKEN, &spec(false))
        .await
        .unwrap();
    assert_eq!(second.number, 2);
    assert_eq!(fake.requests()[1].body["title"], json!("Add a greeting"));
}

#[tokio::test]
async fn repository_url_leads_to_the_configured_forge() {
    let fake = FakeForge::start(ForgeKind::GitHub, TOKEN).unwrap();
    let mut forges = vec![forge_of(&fake)];
    forges.extend(cc_server::forge::default_forges());
    let repo_url = format!("http://{}/octo/hello.git", fake.addr());
    let (forge, project) = forge_for(&forges, &repo_url).expect("the fake serves this host");
    assert_eq!(project, "octo/hello");
    let opened = open_pull_request(&client().unwrap(), forge, &project, TOKEN, &spec(false))
        .await
        .unwrap();
    assert_eq!(opened.number, 1);
    assert_eq!(fake.requests()[0].path, "/api/v3/repos/octo/hello/pulls");
}

#[tokio::test]
async fn github_bad_token_is_refused_without_showing_it() {
    let fake = FakeForge::start(ForgeKind::GitHub, TOKEN).unwrap();
    let err = open(&fake, "octo/hello", WRONG_TOKEN, &spec(false))
        .await
        .unwrap_err();
    assert_refused(err, 401, "Bad credentials");
}

#[tokio::test]
async fn gitlab_bad_token_is_refused_without_showing_it() {
    let fake = FakeForge::start(ForgeKind::GitLab, TOKEN).unwrap();
    let err = open(&fake, "group/repo", WRONG_TOKEN, &spec(false))
        .await
        .unwrap_err();
    assert_refused(err, 401, "401 Unauthorized");
}

#[tokio::test]
async fn a_forge_that_echoes_the_token_has_it_scrubbed() {
    let fake = FakeForge::start(ForgeKind::GitHub, TOKEN).unwrap();
    fake.fail_next(401, json!({"message": format!("token {TOKEN} is revoked")}));
    let err = open(&fake, "octo/hello", TOKEN, &spec(false))
        .await
        .unwrap_err();
    assert_refused(err, 401, "token [redacted] is revoked");
}

#[tokio::test]
async fn github_existing_pull_request_surfaces_the_forge_message() {
    let fake = FakeForge::start(ForgeKind::GitHub, TOKEN).unwrap();
    fake.fail_next(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{
                "resource": "PullRequest",
                "code": "custom",
                "message": "A pull request already exists for octo:cc/session-1.",
            }],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
            "status": "422",
        }),
    );
    let err = open(&fake, "octo/hello", TOKEN, &spec(false))
        .await
        .unwrap_err();
    assert_refused(
        err,
        422,
        "Validation Failed: A pull request already exists for octo:cc/session-1.",
    );
    // The scripted failure was one answer; the next request succeeds.
    let opened = open(&fake, "octo/hello", TOKEN, &spec(false))
        .await
        .unwrap();
    assert_eq!(opened.number, 1);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn gitlab_existing_merge_request_surfaces_the_forge_message() {
    let fake = FakeForge::start(ForgeKind::GitLab, TOKEN).unwrap();
    fake.fail_next(
        409,
        json!({"message": ["Another open merge request already exists for this source branch: !7"]}),
    );
    let err = open(&fake, "group/repo", TOKEN, &spec(false))
        .await
        .unwrap_err();
    assert_refused(
        err,
        409,
        "Another open merge request already exists for this source branch: !7",
    );
}

#[tokio::test]
async fn validation_failures_name_the_field() {
    let github = FakeForge::start(ForgeKind::GitHub, TOKEN).unwrap();
    let same_branch = PullRequestSpec {
        head: "main",
        ..spec(false)
    };
    let err = open(&github, "octo/hello", TOKEN, &same_branch)
        .await
        .unwrap_err();
    assert_refused(
        err,
        422,
        "Validation Failed: No commits between main and main",
    );
    let no_title = PullRequestSpec {
        title: "",
        ..spec(false)
    };
    let err = open(&github, "octo/hello", TOKEN, &no_title)
        .await
        .unwrap_err();
    assert_refused(err, 422, "title is invalid");

    let gitlab = FakeForge::start(ForgeKind::GitLab, TOKEN).unwrap();
    let no_head = PullRequestSpec {
        head: "",
        ..spec(false)
    };
    let err = open(&gitlab, "group/repo", TOKEN, &no_head)
        .await
        .unwrap_err();
    assert_refused(err, 400, "source_branch is empty");
}

#[tokio::test]
async fn an_answer_without_a_number_is_a_bad_response() {
    let fake = FakeForge::start(ForgeKind::GitLab, TOKEN).unwrap();
    fake.fail_next(201, json!({"id": 5, "state": "opened"}));
    let err = open(&fake, "group/repo", TOKEN, &spec(false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forge_bad_response");
    assert!(err.to_string().contains("iid"), "{err}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    // A loopback port just freed: the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    for (kind, api, project) in [
        (
            ForgeKind::GitHub,
            format!("http://{addr}/api/v3"),
            "octo/hello",
        ),
        (
            ForgeKind::GitLab,
            format!("http://{addr}/api/v4"),
            "group/repo",
        ),
    ] {
        let forge = Forge {
            kind,
            host: addr.to_string(),
            api_url: api.clone(),
        };
        let err = open_pull_request(&client().unwrap(), &forge, project, TOKEN, &spec(false))
            .await
            .unwrap_err();
        assert!(matches!(err, ForgeError::Unreachable(_)), "{err:?}");
        assert_eq!(err.code(), "forge_unreachable");
        let shown = err.to_string();
        assert!(shown.contains(&api), "{shown}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}
