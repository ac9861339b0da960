//! The gateway's relays, no Docker. The git relay with the real git CLI
//! and a real smart-HTTP upstream: which pushes reach the upstream, how the
//! fast-forward check keeps its mirror up to date (fetching only when it
//! lacks history), how git shows a refusal, what the audit trail says about
//! each push, that bodies keep their framing (a server that needs a
//! `Content-Length`), and which upstreams the relay and the gateway's
//! egress proxy refuse to reach (this host's own addresses, a redirect's
//! target). The Anthropic relay against a fake upstream that records what
//! reaches it.
//!
//! Sessions are written straight into the store and the credential
//! registry; no container is ever started. The test bodies run git through
//! `std::process::Command`: a multi-thread test runs its body on the main
//! thread, so the runtime's workers keep serving the gateway meanwhile (the
//! upstream `GitServer` has a thread of its own anyway).

use axum::http::HeaderMap;
use cc_core::audit::{AuditFilter, AuditRecord};
use cc_core::{
    AuditStore, Manager, ManagerConfig, PushPolicy, SessionCredentials, SessionId, SessionRecord,
    Store, Token,
};
use cc_server::auth::Access;
use cc_server::{HttpAgent, ServerConfig};
use cc_store_sqlite::SqliteStore;
use cc_testkit::git_server::GitServer;
use cc_wire::api::{EgressMode, SessionLimits, SessionState};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod common;
use common::FakeRuntime;

const OWNER: &str = "alice";
const REPO: &str = "app";
/// The user's real Claude API key, which only the upstream may see.
const USER_KEY: &str = "sk-ant-api03-the-users-real-key";

/// A request as it reached the fake Anthropic upstream.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    content_length: Option<String>,
    transfer_encoding: Option<String>,
    api_key: Option<String>,
    body: bytes::Bytes,
}

/// An Anthropic API stand-in that records every request and answers each
/// with a small message.
struct FakeAnthropic {
    url: String,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl FakeAnthropic {
    async fn start() -> FakeAnthropic {
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: bytes::Bytes| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                record.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    uri: uri.to_string(),
                    content_length: header("content-length"),
                    transfer_encoding: header("transfer-encoding"),
                    api_key: header("x-api-key"),
                    body,
                });
                axum::Json(serde_json::json!({"type": "message", "content": []}))
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeAnthropic { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The upstreams, the gateway in front of them, and the store behind it.
struct Relay {
    upstream: GitServer,
    anthropic: FakeAnthropic,
    /// `http://127.0.0.1:PORT` of the gateway.
    gateway: String,
    manager: Manager<FakeRuntime, HttpAgent, SqliteStore>,
    store: SqliteStore,
    /// Where the relay keeps its mirrors.
    mirrors: PathBuf,
    _dir: tempfile::TempDir,
}

/// Push rules allowing these admin prefixes.
fn push_prefixes(prefixes: &[&str]) -> PushPolicy {
    PushPolicy {
        prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
    }
}

impl Relay {
    /// An upstream with repository [`REPO`] (`main` holding `README.md`),
    /// and a gateway whose push rules allow `prefixes`.
    async fn start(prefixes: &[&str]) -> Relay {
        Self::start_with(push_prefixes(prefixes), |_| {}).await
    }

    /// [`Self::start`] with these push rules, and the manager's
    /// configuration (the admin's agent policy, the egress allowlist)
    /// changed by `configure`.
    async fn start_with(push: PushPolicy, configure: impl FnOnce(&mut ManagerConfig)) -> Relay {
        Self::start_against(push, configure, None).await
    }

    /// [`Self::start_with`], relaying model calls to `anthropic_upstream`
    /// (`None`: the [`FakeAnthropic`]).
    async fn start_against(
        push: PushPolicy,
        configure: impl FnOnce(&mut ManagerConfig),
        anthropic_upstream: Option<String>,
    ) -> Relay {
        let anthropic = FakeAnthropic::start().await;
        let upstream = GitServer::start().await.expect("starting the git server");
        upstream
            .create_repo(REPO, &[("README.md", "hello\n")])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store")).unwrap();
        let mut manager_config = ManagerConfig::new("no-image", 1);
        // The upstream is on loopback, as `serve --allow-repo-host` allows.
        manager_config.allowed_repo_hosts = vec![upstream.addr().to_string()];
        configure(&mut manager_config);
        let manager = Manager::new(
            common::runtime(),
            HttpAgent::new().unwrap(),
            store.clone(),
            manager_config,
        );
        let mut config = ServerConfig {
            public_url: None,
            anthropic_upstream: anthropic_upstream.unwrap_or_else(|| anthropic.url.clone()),
            check_api_key: false,
            access: Default::default(),
            git: Default::default(),
            peers: None,
            webhooks: Default::default(),
        };
        config.git.push = push;
        let mirrors = dir.path().join("mirrors");
        config.git.mirror_dir = Some(mirrors.clone());
        let access = Arc::new(Access::new(config.access.clone()));
        let app = cc_server::gateway::router(manager.clone(), Arc::new(config), access);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Relay {
            upstream,
            anthropic,
            gateway: format!("http://{addr}"),
            manager,
            store,
            mirrors,
            _dir: dir,
        }
    }

    /// A ready session of [`OWNER`] on [`REPO`], started from `branch`
    /// (`None`: the upstream's default branch); its ID and token.
    async fn session(&self, branch: Option<&str>) -> (SessionId, String) {
        self.session_with(branch, EgressMode::default()).await
    }

    /// [`Self::session`] with this egress mode.
    async fn session_with(&self, branch: Option<&str>, egress: EgressMode) -> (SessionId, String) {
        let id = SessionId::generate();
        let now = SystemTime::now();
        let repo_url = self.upstream.url(REPO);
        let record = SessionRecord {
            id: id.clone(),
            container_id: None,
            state: SessionState::Ready,
            reason: None,
            repo_url: repo_url.clone(),
            branch: branch.map(str::to_owned),
            limits: SessionLimits {
                memory_bytes: 1 << 30,
                cpu: 1.0,
                timeout_secs: 3600,
                egress,
                idle_timeout_secs: Some(1800),
            },
            owner: OWNER.into(),
            created_at: now,
            updated_at: now,
            expires_at: now + Duration::from_secs(3600),
            last_seq: 0,
            agent_seq: 0,
            usage: Default::default(),
            lease: Default::default(),
        };
        self.store.insert_session(&record).await.unwrap();
        let token = Token::generate();
        self.manager.credentials().insert(SessionCredentials {
            session_id: id.clone(),
            token: token.clone(),
            claude_api_key: USER_KEY.into(),
            repo_token: None,
            egress,
            repo_url,
        });
        (id, token.expose().to_owned())
    }

    /// The relay URL of a session's repository.
    fn url(&self, id: &SessionId) -> String {
        format!("{}/git/{id}", self.gateway)
    }

    /// The Anthropic relay URL of `path` (`v1/messages`) for a session.
    fn anthropic(&self, id: &SessionId, path: &str) -> String {
        format!("{}/anthropic/{id}/{path}", self.gateway)
    }

    /// The session's `git.push` audit records, oldest first.
    async fn pushes(&self, id: &SessionId) -> Vec<AuditRecord> {
        let filter = AuditFilter {
            action: Some("git.push".into()),
            session_id: Some(id.to_string()),
            ..Default::default()
        };
        self.store.audit_records(&filter).await.unwrap()
    }

    /// Requests the upstream's `git-upload-pack` has served (a fetch is
    /// one or two): the mirror's fetches, while no clone fetches.
    fn upstream_fetches(&self) -> u64 {
        self.upstream.request_count_for("/git-upload-pack")
    }

    /// The upstream's branches, sorted.
    fn branches(&self) -> Vec<String> {
        self.upstream.branches(REPO).unwrap()
    }

    /// `path` at `rev` on the upstream; empty when it is not there.
    fn file(&self, rev: &str, path: &str) -> String {
        self.upstream.show(REPO, rev, path).unwrap_or_default()
    }

    /// Whether the session's mirror holds commit `oid`.
    fn mirror_has(&self, id: &SessionId, oid: &str) -> bool {
        let mirror = self.mirrors.join(format!("{id}.git"));
        let spec = format!("{oid}^{{commit}}");
        mirror.exists()
            && run_git(&mirror, None, &["cat-file", "-e", &spec])
                .status
                .success()
    }

    /// `git` on the upstream's bare repository itself.
    fn upstream_git(&self, args: &[&str]) -> String {
        let bare = self.upstream.repo_path(REPO).unwrap();
        stdout(&run_git(&bare, None, args))
    }
}

/// A working clone, through the relay (with the session's token) or
/// straight from the upstream (without one).
struct Clone {
    path: PathBuf,
    token: Option<String>,
    _dir: tempfile::TempDir,
}

impl Clone {
    fn of(url: &str, token: Option<&str>) -> Clone {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work");
        let out = run_git(
            dir.path(),
            token,
            &["clone", "--quiet", url, path.to_str().unwrap()],
        );
        assert!(out.status.success(), "clone of {url}: {}", text(&out));
        Clone {
            path,
            token: token.map(str::to_owned),
            _dir: dir,
        }
    }

    fn git(&self, args: &[&str]) -> Output {
        run_git(&self.path, self.token.as_deref(), args)
    }

    /// `git` that must succeed; its stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.git(args);
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
        stdout(&out)
    }

    /// `git push origin <args>`: whether it succeeded, and what it said.
    fn push(&self, args: &[&str]) -> (bool, String) {
        let out = self.git(&[&["push", "origin"], args].concat());
        (out.status.success(), text(&out))
    }

    /// Writes `file` and commits it; the new commit.
    fn commit(&self, file: &str, content: &str) -> String {
        std::fs::write(self.path.join(file), content).unwrap();
        self.ok(&["add", file]);
        self.ok(&["commit", "--quiet", "-m", &format!("update {file}")]);
        self.ok(&["rev-parse", "HEAD"])
    }
}

/// git with no system or user configuration, a fixed identity and, given
/// a token, the header the relay authenticates the session by.
fn run_git(dir: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=Session",
            "-c",
            "user.email=session@test.invalid",
        ]);
    if let Some(token) = token {
        cmd.arg("-c")
            .arg(format!("http.extraHeader=Authorization: Bearer {token}"));
    }
    cmd.args(args).output().expect("running git")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// stdout and stderr together (git reports a push on stderr).
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn outcomes(records: &[AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.event.outcome.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_pushes_reach_the_upstream_and_the_mirror_fetches_only_when_it_lacks_history() {
    let relay = Relay::start(&["bots/"]).await;
    let (id, token) = relay.session(None).await;
    let own = format!("claudecluster/{id}");
    let work = Clone::of(&relay.url(&id), Some(&token));
    work.ok(&["checkout", "--quiet", "-b", &own]);

    // Creating the session's branch needs no ancestry check.
    let v1 = work.commit("feature.txt", "v1\n");
    let fetches = relay.upstream_fetches();
    let (ok, out) = work.push(&["--set-upstream", &own]);
    assert!(ok, "{out}");
    assert_eq!(relay.branches(), [own.as_str(), "main"]);
    assert_eq!(relay.file(&own, "feature.txt"), "v1\n");
    assert_eq!(
        relay.upstream_fetches(),
        fetches,
        "a creation fetches nothing"
    );
    assert!(!relay.mirror_has(&id, &v1));

    // The first fast-forward: the mirror lacks the branch's current commit
    // (`old`), so it is fetched from the upstream.
    let v2 = work.commit("feature.txt", "v2\n");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");
    assert_eq!(relay.file(&own, "feature.txt"), "v2\n");
    let fetched = relay.upstream_fetches();
    assert!(fetched > fetches, "the mirror was fetched");
    assert!(relay.mirror_has(&id, &v1) && relay.mirror_has(&id, &v2));

    // The second: the mirror holds `old` (the pack it indexed last time).
    let v3 = work.commit("feature.txt", "v3\n");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");
    assert_eq!(relay.file(&own, "feature.txt"), "v3\n");
    assert_eq!(relay.upstream_fetches(), fetched, "no fetch was needed");

    // `main` moves on the upstream behind the session's back.
    let maintainer = Clone::of(&relay.upstream.url(REPO), None);
    let moved = maintainer.commit("notes.txt", "from upstream\n");
    let (ok, out) = maintainer.push(&["main"]);
    assert!(ok, "{out}");

    // The session merges it. The mirror holds `old` but not the new
    // `main` the merge commit descends from: the ancestry check fails for
    // the missing history, the mirror is refreshed, and it is asked again.
    // (No deltas in the pack, so indexing it does not need that history
    // first: this is the refresh path, not the missing-delta-base one.)
    work.ok(&["fetch", "--quiet", "origin"]);
    work.ok(&["merge", "--quiet", "--no-edit", "origin/main"]);
    let merge = work.ok(&["rev-parse", "HEAD"]);
    assert!(relay.mirror_has(&id, &v3) && !relay.mirror_has(&id, &moved));
    let fetches = relay.upstream_fetches();
    let out = work.git(&["-c", "pack.window=0", "push", "origin", &own]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        relay.upstream_fetches() > fetches,
        "the mirror was refreshed"
    );
    assert!(relay.mirror_has(&id, &moved));
    assert_eq!(relay.upstream_git(&["rev-parse", &own]), merge);
    assert_eq!(relay.file(&own, "notes.txt"), "from upstream\n");

    // A branch under the extra prefix.
    let (ok, out) = work.push(&["HEAD:refs/heads/bots/cleanup"]);
    assert!(ok, "{out}");

    assert_eq!(relay.branches(), ["bots/cleanup", own.as_str(), "main"]);
    // `main` has exactly the commit made on the upstream since it began.
    assert_eq!(relay.upstream_git(&["rev-parse", "main"]), moved);
    assert_eq!(relay.upstream_git(&["rev-list", "--count", "main"]), "2");
    assert_eq!(relay.file("main", "feature.txt"), "");

    let audited = relay.pushes(&id).await;
    assert_eq!(outcomes(&audited), ["ok"; 5], "{audited:#?}");
    assert!(
        audited.iter().all(|r| r.event.actor == OWNER),
        "{audited:#?}"
    );
    let last = audited[4].event.detail.as_deref().unwrap_or("");
    assert!(
        last.starts_with("refs/heads/bots/cleanup 0000000.."),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_pushes_are_rejected_with_their_reason_and_audited() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let own = format!("claudecluster/{id}");
    let work = Clone::of(&relay.url(&id), Some(&token));
    work.ok(&["checkout", "--quiet", "-b", &own]);
    work.commit("feature.txt", "v1\n");
    let tip = work.commit("feature.txt", "v2\n");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");

    let own_ref = format!("refs/heads/{own}");
    let rewind = format!("HEAD~1:{own_ref}");
    // What is pushed, and the reason git must print for refusing it.
    let refused: [(&[&str], &str); 5] = [
        (&["--force", &rewind], "force pushes are not allowed"),
        // `main` is the upstream's advertised HEAD, so the session's base.
        (
            &["HEAD:main"],
            "main is the branch the session started from",
        ),
        (&["--delete", &own], "deleting refs/heads/claudecluster/"),
        (&["HEAD:refs/tags/v1"], "only branches may be pushed"),
        (&["HEAD:feature/x"], "sessions may only push to"),
    ];
    for (args, reason) in refused {
        let (ok, out) = work.push(args);
        assert!(!ok, "{args:?} was accepted: {out}");
        assert!(out.contains("[remote rejected]"), "{args:?}: {out}");
        assert!(
            out.contains(reason),
            "{args:?}: {reason:?} missing from {out}"
        );
    }

    // One refused update refuses the whole push: the fast-forward of the
    // session's branch beside it does not go out either.
    work.commit("feature.txt", "v3\n");
    let (ok, out) = work.push(&[&own, "HEAD:main"]);
    assert!(!ok, "{out}");
    assert_eq!(out.matches("[remote rejected]").count(), 2, "{out}");

    assert_eq!(relay.branches(), [own.as_str(), "main"]);
    assert_eq!(relay.upstream_git(&["rev-parse", &own]), tip);
    assert_eq!(relay.upstream_git(&["rev-list", "--count", "main"]), "1");
    assert_eq!(relay.upstream_git(&["tag", "--list"]), "");

    let audited = relay.pushes(&id).await;
    let mut expected = vec!["push_refused"; refused.len() + 1];
    expected.insert(0, "ok");
    assert_eq!(outcomes(&audited), expected, "{audited:#?}");
    for ((args, reason), record) in refused.iter().zip(&audited[1..]) {
        let detail = record.event.detail.as_deref().unwrap_or("");
        assert!(
            detail.contains(reason),
            "{args:?}: {reason:?} missing from {detail}"
        );
        assert_eq!(record.event.actor, OWNER);
    }
    let force = audited[1].event.detail.as_deref().unwrap_or("");
    assert!(
        force.starts_with(&format!("{own_ref} {}..", &tip[..7])),
        "{force}"
    );
    let both = audited[6].event.detail.as_deref().unwrap_or("");
    assert!(
        both.contains(&own_ref) && both.contains("refs/heads/main"),
        "{both}"
    );
}

/// The files of the session's mirror's `objects/pack`.
fn mirror_packs(relay: &Relay, id: &SessionId) -> Vec<String> {
    let dir = relay.mirrors.join(format!("{id}.git/objects/pack"));
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_leaves_nothing_in_the_mirror() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let own = format!("claudecluster/{id}");
    let work = Clone::of(&relay.url(&id), Some(&token));
    work.ok(&["checkout", "--quiet", "-b", &own]);
    work.commit("feature.txt", "v1\n");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");
    // A fast-forward: checked in the mirror, whose pack stays there.
    let tip = work.commit("feature.txt", "v2\n");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");
    assert!(relay.mirror_has(&id, &tip));
    let packs = mirror_packs(&relay, &id);

    // A rewrite with new objects: refused, and its pack is gone again.
    work.ok(&["reset", "--quiet", "--hard", "HEAD~1"]);
    let forced = work.commit("other.txt", &"not in the mirror\n".repeat(1000));
    let (ok, out) = work.push(&["--force", &own]);
    assert!(!ok && out.contains("force pushes are not allowed"), "{out}");
    assert!(!relay.mirror_has(&id, &forced), "the refused commit stayed");
    assert_eq!(mirror_packs(&relay, &id), packs);
    // What was allowed before is still there.
    assert!(relay.mirror_has(&id, &tip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cannot_push_to_another_sessions_branch() {
    // The default rules, and rules built in code with the sessions' own
    // prefix (`serve` refuses that one at startup).
    for push in [
        PushPolicy::default(),
        PushPolicy {
            prefixes: vec!["claudecluster/".into()],
        },
    ] {
        let relay = Relay::start_with(push, |_| {}).await;
        let (alice, alice_token) = relay.session(None).await;
        let (bob, bob_token) = relay.session(None).await;
        let bobs = format!("claudecluster/{bob}");

        // Bob's branch exists, with Bob's work on it.
        let bob_work = Clone::of(&relay.url(&bob), Some(&bob_token));
        bob_work.ok(&["checkout", "--quiet", "-b", &bobs]);
        let bob_tip = bob_work.commit(
            "bob.txt", "bob
",
        );
        let (ok, out) = bob_work.push(&[&bobs]);
        assert!(ok, "{out}");

        // Alice fast-forwards it, creates a branch under it, and creates
        // the branch of a session that has not pushed yet: all refused.
        let alice_work = Clone::of(&relay.url(&alice), Some(&alice_token));
        alice_work.ok(&["fetch", "--quiet", "origin", &bobs]);
        alice_work.ok(&["checkout", "--quiet", "-b", "steal", "FETCH_HEAD"]);
        alice_work.commit(
            "alice.txt",
            "alice
",
        );
        let unborn = format!("claudecluster/{}", SessionId::generate());
        for target in [
            format!("refs/heads/{bobs}"),
            format!("refs/heads/{bobs}/x"),
            format!("refs/heads/{unborn}"),
        ] {
            let (ok, out) = alice_work.push(&[&format!("HEAD:{target}")]);
            assert!(!ok, "{target} was accepted: {out}");
            assert!(out.contains("! [remote rejected]"), "{target}: {out}");
            assert!(
                out.contains("belongs to another session"),
                "{target}: {out}"
            );
            assert!(out.contains(&format!("claudecluster/{alice}")), "{out}");
        }
        assert_eq!(relay.upstream_git(&["rev-parse", &bobs]), bob_tip);
        assert_eq!(relay.branches(), [bobs.as_str(), "main"]);

        // Her own branch and a branch under it are hers.
        let own = format!("claudecluster/{alice}");
        let (ok, out) = alice_work.push(&[&format!("HEAD:refs/heads/{own}")]);
        assert!(ok, "{out}");
        let (ok, out) = alice_work.push(&[&format!("HEAD:refs/heads/{own}-2")]);
        assert!(!ok && out.contains("belongs to another session"), "{out}");
        let audited = relay.pushes(&alice).await;
        assert_eq!(
            outcomes(&audited),
            [
                "push_refused",
                "push_refused",
                "push_refused",
                "ok",
                "push_refused"
            ],
            "{audited:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_records_branch_is_its_base_even_under_an_allowed_prefix() {
    let relay = Relay::start(&["bots/"]).await;
    relay
        .upstream
        .create_branch(REPO, "bots/base", &[("base.txt", "base\n")])
        .unwrap();
    let (id, token) = relay.session(Some("bots/base")).await;
    let work = Clone::of(&relay.url(&id), Some(&token));
    work.ok(&["checkout", "--quiet", "-b", "work", "origin/bots/base"]);
    work.commit("feature.txt", "v1\n");

    let (ok, out) = work.push(&["HEAD:bots/base"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("bots/base is the branch the session started from"),
        "{out}"
    );
    // `main` is then just a branch outside the prefixes.
    let (ok, out) = work.push(&["HEAD:main"]);
    assert!(!ok && out.contains("sessions may only push to"), "{out}");
    let (ok, out) = work.push(&["HEAD:bots/other"]);
    assert!(ok, "{out}");

    assert_eq!(relay.branches(), ["bots/base", "bots/other", "main"]);
    let audited = relay.pushes(&id).await;
    assert_eq!(
        outcomes(&audited),
        ["push_refused", "push_refused", "ok"],
        "{audited:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_name_with_line_breaks_or_escapes_forges_no_log_or_audit_line() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let zero = "0".repeat(40);
    let tip = "1".repeat(40);
    let forged = format!(
        "refs/heads/claudecluster/{id}\r\n2026-01-01T00:00:00Z INFO push accepted \u{1b}]52;c;aGk=\u{7}"
    );
    let line = format!("{zero} {tip} {forged}\0report-status\n");
    let mut body = format!("{:04x}{line}0000", line.len() + 4).into_bytes();
    body.extend_from_slice(b"PACK");
    let resp = reqwest::Client::new()
        .post(format!("{}/git-receive-pack", relay.url(&id)))
        .bearer_auth(&token)
        .header("content-type", "application/x-git-receive-pack-request")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("control characters"), "{text}");
    assert!(relay
        .branches()
        .iter()
        .all(|b| !b.contains("claudecluster")));
    let audited = relay.pushes(&id).await;
    assert_eq!(outcomes(&audited), ["push_refused"], "{audited:#?}");
    let detail = audited[0].event.detail.as_deref().unwrap_or("");
    assert!(detail.contains("control characters"), "{detail}");
    assert!(!detail.chars().any(char::is_control), "{detail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_sessions_token_or_for_other_services_are_refused() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let (_, other_token) = relay.session(None).await;
    let http = reqwest::Client::new();
    let refs = |service: &str| format!("{}/info/refs?service={service}", relay.url(&id));

    let status = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap().status() };
    let upload = refs("git-upload-pack");
    assert_eq!(status(http.get(&upload)).await, 401);
    assert_eq!(status(http.get(&upload).bearer_auth("wrong")).await, 401);
    assert_eq!(
        status(http.get(&upload).bearer_auth(&other_token)).await,
        401,
        "another session's token"
    );
    assert_eq!(status(http.get(&upload).bearer_auth(&token)).await, 200);
    assert_eq!(
        status(http.get(&upload).header("x-api-key", &token)).await,
        200
    );
    assert_eq!(
        status(http.get(refs("other")).bearer_auth(&token)).await,
        403
    );
    let unrelayed = format!("{}/objects/info/packs", relay.url(&id));
    assert_eq!(status(http.get(unrelayed).bearer_auth(&token)).await, 403);

    // git itself, without the token, cannot clone.
    let dir = tempfile::tempdir().unwrap();
    let out = run_git(
        dir.path(),
        None,
        &["clone", "--quiet", &relay.url(&id), "x"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(relay.pushes(&id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_beyond_gits_post_buffer_is_checked_and_relayed_whole() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let own = format!("claudecluster/{id}");
    let work = Clone::of(&relay.url(&id), Some(&token));
    work.ok(&["checkout", "--quiet", "-b", &own]);
    work.commit("feature.txt", "v1\n");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");

    // Hardly compressible, so the pack outgrows git's 1 MiB post buffer:
    // git probes with an empty request, then streams the push chunked.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: String = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    let big = work.commit("big.txt", &noise);
    let posts = relay.upstream.request_count_for("/git-receive-pack");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");
    let probe_and_push = relay.upstream.request_count_for("/git-receive-pack") - posts;
    assert_eq!(probe_and_push, 2);
    assert_eq!(relay.upstream_git(&["rev-parse", &own]), big);
    assert_eq!(relay.file(&own, "big.txt").len(), noise.len());
    assert_eq!(outcomes(&relay.pushes(&id).await), ["ok", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_fetch_and_push_work_against_a_server_that_needs_a_content_length() {
    let relay = Relay::start(&["claudecluster/"]).await;
    relay.upstream.require_content_length();
    // The server really refuses a chunked body.
    let chunked = reqwest::Client::new()
        .post(format!("{}/git-upload-pack", relay.upstream.url(REPO)))
        .header("content-type", "application/x-git-upload-pack-request")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter([
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0000")),
        ])))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 411);
    assert_eq!(relay.upstream.length_required_count(), 1);

    let (id, token) = relay.session(None).await;
    let own = format!("claudecluster/{id}");
    let work = Clone::of(&relay.url(&id), Some(&token));
    assert_eq!(work.ok(&["show", "HEAD:README.md"]), "hello");
    work.ok(&["checkout", "--quiet", "-b", &own]);
    work.commit("feature.txt", "v1\n");
    let (ok, out) = work.push(&["--set-upstream", &own]);
    assert!(ok, "{out}");
    let v2 = work.commit("feature.txt", "v2\n");
    let (ok, out) = work.push(&[&own]);
    assert!(ok, "{out}");
    assert_eq!(relay.upstream_git(&["rev-parse", &own]), v2);

    let maintainer = Clone::of(&relay.upstream.url(REPO), None);
    let moved = maintainer.commit("notes.txt", "from upstream\n");
    let (ok, out) = maintainer.push(&["main"]);
    assert!(ok, "{out}");
    work.ok(&["fetch", "--quiet", "origin"]);
    assert_eq!(work.ok(&["rev-parse", "origin/main"]), moved);

    assert_eq!(relay.upstream.length_required_count(), 1, "only the probe");
    assert_eq!(outcomes(&relay.pushes(&id).await), ["ok", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_relay_forwards_a_body_with_its_length_and_the_users_key() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let http = reqwest::Client::new();
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = http
        .post(relay.anthropic(&id, "v1/messages?beta=true"))
        .header("x-api-key", &token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A body sent chunked arrives whole, framed either way.
    let (head, tail) = body.split_at(20);
    let resp = http
        .post(relay.anthropic(&id, "v1/messages/count_tokens"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter([
            Ok::<_, std::io::Error>(head.to_owned()),
            Ok(tail.to_owned()),
        ])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let seen = relay.anthropic.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let length = body.len().to_string();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/v1/messages?beta=true")
    );
    assert_eq!(seen[0].content_length.as_deref(), Some(length.as_str()));
    assert_eq!(seen[0].transfer_encoding, None);
    assert_eq!(seen[1].uri, "/v1/messages/count_tokens");
    for s in &seen {
        assert_eq!(s.body, body.as_bytes());
        assert_eq!(s.api_key.as_deref(), Some(USER_KEY));
    }
}

/// One HTTP/1.1 request with its path exactly as given (an HTTP client
/// would normalise dot segments away); its status and JSON body.
async fn raw_request(
    gateway: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.strip_prefix("http://").unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// An Anthropic error's `error.type` and `error.message`.
fn anthropic_error(body: &serde_json::Value) -> (&str, &str) {
    assert_eq!(body["type"], "error", "{body}");
    let field = |name: &str| body["error"][name].as_str().unwrap_or("");
    (field("type"), field("message"))
}

fn message_body(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_admin_does_not_allow_never_reaches_the_upstream() {
    let relay = Relay::start_with(PushPolicy::default(), |c| {
        c.agent.allowed_models = vec!["claude-sonnet-4-5".into()];
    })
    .await;
    let (id, token) = relay.session(None).await;
    let base = format!("/anthropic/{id}");
    for path in ["v1/messages?beta=true", "v1/messages/count_tokens"] {
        let (status, body) = raw_request(
            &relay.gateway,
            "POST",
            &format!("{base}/{path}"),
            &token,
            &message_body("claude-opus-4-1"),
        )
        .await;
        assert_eq!(status, 403, "{path}: {body}");
        let (kind, message) = anthropic_error(&body);
        assert_eq!(kind, "permission_error");
        assert!(
            message.contains("\"claude-opus-4-1\" is not allowed")
                && message.contains("claude-sonnet-4-5"),
            "{message}"
        );
    }
    for (body, reason) in [
        (r#"{"max_tokens":16}"#.to_owned(), "names no model"),
        ("not json".to_owned(), "not a JSON object"),
    ] {
        let path = format!("{base}/v1/messages");
        let (status, answer) = raw_request(&relay.gateway, "POST", &path, &token, &body).await;
        assert_eq!(status, 400, "{answer}");
        let (kind, message) = anthropic_error(&answer);
        assert_eq!(kind, "invalid_request_error");
        assert!(message.contains(reason), "{message}");
    }
    assert!(
        relay.anthropic.seen().is_empty(),
        "{:#?}",
        relay.anthropic.seen()
    );

    let path = format!("{base}/v1/messages");
    let allowed = message_body("claude-sonnet-4-5");
    let (status, body) = raw_request(&relay.gateway, "POST", &path, &token, &allowed).await;
    assert_eq!(status, 200, "{body}");
    let seen = relay.anthropic.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, allowed.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_endpoints_claude_code_calls_are_relayed_whatever_the_spelling() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let base = format!("/anthropic/{id}");
    let body = message_body("claude-sonnet-4-5");
    // Not relayed: 404 naming what is.
    for (method, path) in [
        ("GET", "v1/files"),
        ("POST", "v1/files"),
        ("GET", "v1/models"),
        ("GET", "v1/messages"),
        ("POST", "v1/messages/batches"),
        ("POST", "v1/complete"),
        ("POST", "v2/messages"),
    ] {
        let (status, answer) = raw_request(
            &relay.gateway,
            method,
            &format!("{base}/{path}"),
            &token,
            &body,
        )
        .await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        let (kind, message) = anthropic_error(&answer);
        assert_eq!(kind, "not_found_error");
        assert!(
            message.contains("relays only POST /v1/messages and POST /v1/messages/count_tokens"),
            "{message}"
        );
    }
    // Spellings that could reach another endpoint: 400.
    for path in [
        "v1/..%2Ffoo",
        "v1/..%2ffiles",
        "v1/messages/..%2F..%2Fv1%2Ffiles",
        "v1/%2E%2E/files",
        "v1/messages%5C..%5Cfiles",
        "v1/messages/../files",
        "v1/./messages",
        "v1/../v1/messages",
    ] {
        let (status, answer) = raw_request(
            &relay.gateway,
            "POST",
            &format!("{base}/{path}"),
            &token,
            &body,
        )
        .await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(
            anthropic_error(&answer).0,
            "invalid_request_error",
            "{path}"
        );
    }
    // And nothing at all without the session's token.
    let (status, answer) = raw_request(
        &relay.gateway,
        "GET",
        &format!("{base}/v1/files"),
        "wrong",
        "",
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(anthropic_error(&answer).0, "authentication_error");
    assert!(
        relay.anthropic.seen().is_empty(),
        "{:#?}",
        relay.anthropic.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_call_is_refused_once_the_users_budget_is_spent() {
    let relay = Relay::start_with(PushPolicy::default(), |c| {
        c.agent.max_user_budget_usd = Some(1.0)
    })
    .await;
    let (id, token) = relay.session(None).await;
    let path = format!("/anthropic/{id}/v1/messages");
    let body = message_body("claude-sonnet-4-5");
    let (status, answer) = raw_request(&relay.gateway, "POST", &path, &token, &body).await;
    assert_eq!(status, 200, "{answer}");

    // Another session of the same user spent more than the user may.
    let (other, _) = relay.session(None).await;
    let mut spent = relay.store.get_session(&other).await.unwrap().unwrap();
    spent.state = SessionState::Terminated;
    spent.usage.totals.cost_usd = 1.25;
    relay.store.update_session(&spent).await.unwrap();

    let (status, answer) = raw_request(&relay.gateway, "POST", &path, &token, &body).await;
    assert_eq!(status, 403, "{answer}");
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "permission_error");
    assert!(
        message.contains("spent 1.2500 USD of the 1 USD") && message.contains("per user"),
        "{message}"
    );
    assert_eq!(relay.anthropic.seen().len(), 1, "only the call before");
}

/// The usage an answer shows: a JSON answer's `model` and `usage`, or a
/// stream's `message_start` usage updated by its `message_delta`s.
fn shown_usage(answer: &str) -> (String, cc_wire::api::TokenUsage) {
    let mut model = String::new();
    let mut usage = serde_json::Map::new();
    let mut take = |u: &serde_json::Value| {
        for (k, v) in u.as_object().into_iter().flatten() {
            usage.insert(k.clone(), v.clone());
        }
    };
    if let Ok(whole) = serde_json::from_str::<serde_json::Value>(answer) {
        model = whole["model"].as_str().unwrap().to_owned();
        take(&whole["usage"]);
    } else {
        for data in answer.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let event: serde_json::Value = serde_json::from_str(data).unwrap();
            match event["type"].as_str() {
                Some("message_start") => {
                    model = event["message"]["model"].as_str().unwrap().to_owned();
                    take(&event["message"]["usage"]);
                }
                Some("message_delta") => take(&event["usage"]),
                _ => {}
            }
        }
    }
    let n = |k: &str| {
        usage
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let usage = cc_wire::api::TokenUsage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_creation_input_tokens: n("cache_creation_input_tokens"),
        cache_read_input_tokens: n("cache_read_input_tokens"),
    };
    (model, usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_spend_is_what_the_gateway_measured_and_budgets_hold_on_it() {
    let double = cc_model_double::spawn(cc_model_double::ModelDoubleConfig {
        api_key: None,
        latency_ms: 0,
    })
    .await
    .unwrap();
    let relay = Relay::start_against(
        PushPolicy::default(),
        |c| c.agent.max_user_budget_usd = Some(0.01),
        Some(double.base_url()),
    )
    .await;
    let (id, token) = relay.session(None).await;
    let http = reqwest::Client::new();
    let prices = cc_core::pricing::PriceTable::default();
    let mut expected = 0.0;
    let mut tokens = cc_wire::api::TokenUsage::default();
    // Token counting is free.
    let resp = http
        .post(relay.anthropic(&id, "v1/messages/count_tokens"))
        .header("x-api-key", &token)
        .header("content-type", "application/json")
        .body(message_body("claude-sonnet-4-5"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A small plain call within the budget, then a large streamed one
    // beyond it (the double counts ~4 bytes a token).
    for (model, stream, words) in [
        ("claude-haiku-4-5", false, 10),
        ("claude-sonnet-4-5", true, 4000),
    ] {
        let prompt = "say: ".to_owned() + &"many words to count ".repeat(words);
        let body = serde_json::json!({
            "model": model, "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        });
        let resp = http
            .post(relay.anthropic(&id, "v1/messages"))
            .header("x-api-key", &token)
            // Asked for compressed, it still arrives readable to the gateway.
            .header("accept-encoding", "gzip")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let (shown_model, shown) = shown_usage(&resp.text().await.unwrap());
        assert!(
            shown.input_tokens > 0 && shown.output_tokens > 1,
            "{shown:?}"
        );
        expected += prices.cost(&shown_model, &shown);
        tokens.input_tokens += shown.input_tokens;
        tokens.output_tokens += shown.output_tokens;
    }

    let usage = relay.store.get_session(&id).await.unwrap().unwrap().usage;
    assert!(expected > 0.01, "{expected}");
    assert!(
        (usage.totals.cost_usd - expected).abs() < 1e-12,
        "measured {} USD, the double's usage prices at {expected}",
        usage.totals.cost_usd
    );
    assert_eq!(usage.totals.tokens, tokens);
    // The measured spend is what the budget sees: the next call is refused.
    let path = format!("/anthropic/{id}/v1/messages");
    let body = message_body("claude-sonnet-4-5");
    let (status, answer) = raw_request(&relay.gateway, "POST", &path, &token, &body).await;
    assert_eq!(status, 403, "{answer}");
    // The double records model calls only (not token counts).
    assert_eq!(double.requests().len(), 2, "the refused call never left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_call_beyond_the_size_limit_or_compressed_is_refused_unread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    let addr = relay.gateway.strip_prefix("http://").unwrap();
    for (extra, status, kind) in [
        ("content-length: 40000000\r\n", "413", "request_too_large"),
        (
            "content-length: 4\r\ncontent-encoding: gzip\r\n",
            "415",
            "invalid_request_error",
        ),
    ] {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /anthropic/{id}/v1/messages HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {token}\r\n\
             content-type: application/json\r\n{extra}connection: close\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(&answer[9..12], status, "{answer}");
        assert!(answer.contains(kind), "{answer}");
    }
    assert!(relay.anthropic.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_fetch_follows_no_redirect_so_the_token_goes_nowhere_else() {
    use base64::Engine as _;
    // Where a hostile (or moved) upstream points: a server that would
    // serve the same repository to anyone holding the token.
    let elsewhere = GitServer::start().await.unwrap();
    elsewhere
        .create_repo(REPO, &[("README.md", "hello\n")])
        .unwrap();
    let upstream = GitServer::start().await.unwrap();
    upstream
        .create_repo(REPO, &[("README.md", "hello\n")])
        .unwrap();
    let main = stdout(&run_git(
        &upstream.repo_path(REPO).unwrap(),
        None,
        &["rev-parse", "main"],
    ));
    upstream.redirect_to(&format!("http://{}", elsewhere.addr()));

    let dir = tempfile::tempdir().unwrap();
    let mirrors = cc_server::gateway::push::Mirrors::new(dir.path().join("mirrors"))
        .allowing(vec![upstream.addr().to_string()]);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("x-access-token:repo-secret")
    );
    // The mirror lacks `main`, so preparing it fetches from the upstream.
    let fetched = mirrors
        .prepare(
            &SessionId::generate(),
            &upstream.url(REPO),
            Some(&auth),
            &[&main],
            &[],
        )
        .await;
    let err = fetched.expect_err("a redirected fetch must fail");
    assert!(err.contains("git fetch failed"), "{err}");
    assert!(
        !err.contains("repo-secret") && !err.contains(&auth),
        "{err}"
    );
    assert!(upstream.request_count() > 0, "the upstream was asked");
    assert_eq!(
        elsewhere.request_count(),
        0,
        "the redirect was followed: {err}"
    );
}

/// `CONNECT target` through the gateway's proxy as `session`; the status
/// line and headers of the answer.
async fn connect(gateway: &str, session: &SessionId, token: &str, target: &str) -> String {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{session}:{token}"));
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {creds}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap() == 1 {
        head.push(byte[0]);
    }
    let mut text = String::from_utf8_lossy(&head).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        // The refusal's body, for the message.
        let mut body = vec![0u8; 4096];
        let n = stream.read(&mut body).await.unwrap_or(0);
        text.push_str(&String::from_utf8_lossy(&body[..n]));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_the_hosts_own_addresses_even_with_open_egress() {
    use futures_util::FutureExt as _;
    // A service bound on every interface of the host.
    let service = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = service.local_addr().unwrap().port();
    let loopback = format!("127.0.0.1:{port}");
    let relay = Relay::start_with(PushPolicy::default(), |c| {
        c.egress_allow = vec![loopback.clone()]
    })
    .await;
    let (id, token) = relay.session_with(None, EgressMode::Open).await;

    let own: Vec<std::net::Ipv4Addr> = cc_core::addresses::HostAddresses::read()
        .addresses()
        .into_iter()
        .filter_map(|a| match a {
            std::net::IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .collect();
    assert!(!own.is_empty(), "the host has no non-loopback IPv4 address");
    for addr in own {
        let answer = connect(&relay.gateway, &id, &token, &format!("{addr}:{port}")).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{addr}: {answer}");
        assert!(
            answer.contains(&format!("address {addr}")),
            "{addr}: {answer}"
        );
        assert!(
            service.accept().now_or_never().is_none(),
            "{addr}: the tunnel reached the service"
        );
    }

    // The same service, named exactly by the allowlist, is reachable: the
    // refusals above are the address check, not a broken proxy.
    let answer = connect(&relay.gateway, &id, &token, &loopback).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(service.accept().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_a_repository_on_the_hosts_own_address_without_an_allowance() {
    let relay = Relay::start(&[]).await;
    let (id, token) = relay.session(None).await;
    // The session's repository moves to an address the admin never
    // allowed: this host's own, on the upstream's port.
    let own = cc_core::addresses::HostAddresses::read()
        .addresses()
        .into_iter()
        .find(|a| a.is_ipv4() && !a.is_loopback())
        .expect("a non-loopback IPv4 address");
    let moved = format!("http://{own}:{}/{REPO}.git", relay.upstream.addr().port());
    let old = relay.manager.credentials().get(&id).unwrap();
    relay.manager.credentials().insert(SessionCredentials {
        session_id: id.clone(),
        token: old.token.clone(),
        claude_api_key: old.claude_api_key.clone(),
        repo_token: None,
        egress: old.egress,
        repo_url: moved,
    });

    let before = relay.upstream.request_count();
    let answer = reqwest::Client::new()
        .get(format!(
            "{}/info/refs?service=git-upload-pack",
            relay.url(&id)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let body = answer.text().await.unwrap();
    assert!(body.contains("--allow-repo-host"), "{body}");
    assert!(body.contains(&format!("address {own}")), "{body}");
    assert_eq!(
        relay.upstream.request_count(),
        before,
        "the upstream was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_fetches_a_named_host_only_when_allowed_and_from_the_checked_address() {
    let upstream = GitServer::start().await.unwrap();
    upstream
        .create_repo(REPO, &[("README.md", "hello\n")])
        .unwrap();
    let main = stdout(&run_git(
        &upstream.repo_path(REPO).unwrap(),
        None,
        &["rev-parse", "main"],
    ));
    let port = upstream.addr().port();
    let named = format!("http://localhost:{port}/{REPO}.git");
    let dir = tempfile::tempdir().unwrap();
    let id = SessionId::generate();

    // `localhost` resolves to loopback: refused unless allowed exactly.
    let refused = cc_server::gateway::push::Mirrors::new(dir.path().join("a"))
        .allowing(vec![format!("localhost:{}", port + 1)]);
    let err = refused
        .prepare(&id, &named, None, &[&main], &[])
        .await
        .expect_err("a loopback name without an allowance");
    assert!(err.contains("loopback address"), "{err}");
    assert_eq!(upstream.request_count(), 0);

    // Allowed: git is handed the addresses checked, and fetches.
    let allowed = cc_server::gateway::push::Mirrors::new(dir.path().join("b"))
        .allowing(vec![format!("localhost:{port}")]);
    let _prepared = allowed
        .prepare(&id, &named, None, &[&main], &[])
        .await
        .expect("fetching from an allowed host");
    assert!(upstream.request_count() > 0);
}
