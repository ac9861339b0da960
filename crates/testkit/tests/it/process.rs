//! Whole sessions without Docker: the real orchestrator (API, gateway,
//! actor, reconciler) on the [`ProcessRuntime`], whose sessions are local
//! sessiond processes running the fake Claude Code. Create → the clone
//! through the gateway's git relay → ready → turns on the stream → diff and
//! files → an orchestrator restart adopting the running session → the
//! process killed → `error` with the reason, nothing left.

use anyhow::Context;
use cc_core::{Manager, ManagerConfig, Runtime, SessionId};
use cc_server::{HttpAgent, ServerConfig};
use cc_store_sqlite::SqliteStore;
use cc_testkit::git_server::GitServer;
use cc_testkit::harness::{is_state, read_until, summary, until_ready};
use cc_testkit::process_runtime::ProcessRuntime;
use cc_wire::api::{ServerMessage, SessionState};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

const ADMIN: &str = "process-admin-token-0123456789";
/// Only there so a failing test ends.
const WAIT: Duration = Duration::from_secs(60);

/// The built sessiond beside this test's binary (`cargo test --workspace`
/// and `cargo build --workspace` build it).
fn sessiond() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .join("claudecluster-sessiond");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// What a test runs its orchestrators on: a git server with one
/// repository, the process runtime with the fake Claude Code, the
/// gateway's address (fixed across restarts) and a data directory.
struct Local {
    _claude_dir: tempfile::TempDir,
    git: GitServer,
    repo: String,
    gateway: std::net::SocketAddr,
    runtime: ProcessRuntime,
    data: tempfile::TempDir,
}

impl Local {
    async fn new(repo: &str, readme: &str) -> anyhow::Result<Self> {
        let claude_dir = tempfile::tempdir()?;
        let claude = ProcessRuntime::write_fake_claude(claude_dir.path())?;
        let git = GitServer::start().await?;
        let repo = git.create_repo(repo, &[("README.md", readme)])?;
        let gateway = std::net::SocketAddr::from(([127, 0, 0, 1], cc_testkit::ports::fixed_port()));
        let runtime = ProcessRuntime::new(sessiond(), claude, format!("http://{gateway}"))?;
        Ok(Self {
            _claude_dir: claude_dir,
            git,
            repo,
            gateway,
            runtime,
            data: tempfile::tempdir()?,
        })
    }

    /// A create request for the repository (the fake Claude Code calls no
    /// model, so the key is never used).
    fn request(&self) -> cc_wire::api::CreateSessionRequest {
        cc_testkit::harness::session_request(&self.repo, None, "sk-ant-unused-here")
    }
}

/// The gateway's port again: the previous life's listener may take a
/// moment to close after its runtime was dropped.
async fn bind_again(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(anyhow::anyhow!("binding the gateway on {addr}: {e}")),
        }
    }
}

/// One life of the orchestrator: API and gateway on loopback, the
/// reconciler running, on `data`'s database — on a Tokio runtime of its
/// own, so that it can die as its process would, every task at once,
/// while the sessions' processes live on.
struct Orchestrator {
    client: cc_client::Client,
    runtime: tokio::runtime::Runtime,
}

impl Orchestrator {
    async fn start<R: Runtime + Clone>(
        runtime: &R,
        data: &Path,
        gateway: std::net::SocketAddr,
        git: &GitServer,
        key: [u8; 32],
    ) -> anyhow::Result<(Self, cc_core::session::Recovery)> {
        Self::start_with(runtime, data, gateway, git, key, |_| {}).await
    }

    /// [`Self::start`] with the deployment's settings changed by `tune`.
    async fn start_with<R: Runtime + Clone>(
        runtime: &R,
        data: &Path,
        gateway: std::net::SocketAddr,
        git: &GitServer,
        key: [u8; 32],
        tune: fn(&mut ManagerConfig),
    ) -> anyhow::Result<(Self, cc_core::session::Recovery)> {
        let life = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (runtime, data, git_host) = (runtime.clone(), data.to_owned(), git.addr().to_string());
        let started = life
            .spawn(async move {
                let gateway = bind_again(gateway).await?;
                let (life, recovery) =
                    Life::start(&runtime, &data, gateway, &git_host, key, tune).await?;
                // Its tasks run on until the runtime goes.
                std::mem::forget(life.background);
                std::mem::forget(life.stop);
                anyhow::Ok((life.client, recovery))
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        let (client, recovery) = match started {
            Ok(s) => s,
            Err(e) => {
                // Not dropped here: a runtime cannot be in async code.
                life.shutdown_background();
                return Err(e);
            }
        };
        Ok((
            Self {
                client,
                runtime: life,
            },
            recovery,
        ))
    }

    /// Every task of this life ends at once (a `kill -9`); the sessions'
    /// processes live on.
    fn crash(self) {
        self.runtime.shutdown_background();
    }
}

struct Life {
    client: cc_client::Client,
    stop: oneshot::Sender<()>,
    background: cc_core::reconciler::Background,
}

impl Life {
    async fn start<R: Runtime + Clone>(
        runtime: &R,
        data: &Path,
        gateway: tokio::net::TcpListener,
        git_host: &str,
        key: [u8; 32],
        tune: fn(&mut ManagerConfig),
    ) -> anyhow::Result<(Self, cc_core::session::Recovery)> {
        let store = SqliteStore::open(data)?;
        let mut config = ManagerConfig::new("local-processes", gateway.local_addr()?.port());
        config.allowed_repo_hosts = vec![git_host.to_owned()];
        config.seal_key = Some(cc_core::secrets::SealKey::from_bytes(key));
        tune(&mut config);
        let manager = Manager::new(runtime.clone(), HttpAgent::new()?, store, config);
        let recovery = manager.recover().await?;
        let background = cc_core::reconciler::start(&manager);
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", api.local_addr()?);
        let server_config = ServerConfig {
            public_url: None,
            anthropic_upstream: "http://127.0.0.1:9".into(),
            check_api_key: false,
            access: cc_server::AccessConfig {
                admin_token: Some(ADMIN.into()),
                ..Default::default()
            },
            git: cc_server::GitConfig {
                mirror_dir: Some(data.join("git-mirrors")),
                ..Default::default()
            },
            peers: None,
            webhooks: Default::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(cc_server::serve(
            api,
            gateway,
            manager,
            server_config,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok((
            Self {
                client: cc_client::Client::with_token(base, Some(ADMIN.into()))?,
                stop,
                background,
            },
            recovery,
        ))
    }
}

/// Whether Claude Code's events in `msgs` carry `text` (the fake's whole
/// assistant messages are kept as `claude` events).
fn mentions(msgs: &[ServerMessage], text: &str) -> bool {
    serde_json::to_string(msgs).is_ok_and(|s| s.contains(text))
}

async fn turn(ws: &mut cc_client::EventStream, text: &str) -> anyhow::Result<Vec<ServerMessage>> {
    ws.command(text).await?;
    let mut busy = false;
    read_until(ws, WAIT, |m| {
        busy |= is_state(m, SessionState::Busy);
        busy && is_state(m, SessionState::Ready)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_runs_on_local_processes_and_survives_an_orchestrator_restart(
) -> anyhow::Result<()> {
    let l = Local::new("local", "# On a local process\n").await?;
    let runtime = &l.runtime;
    let key = [5u8; 32];

    let (first, _) = Orchestrator::start(runtime, l.data.path(), l.gateway, &l.git, key).await?;
    let request = l.request();
    let created = first.client.create(&request).await?;
    let id = created.session_id.clone();
    let sid = SessionId::parse(&id).expect("a session ID");
    let mut ws = first.client.stream(&id, 0).await?;
    let boot = until_ready(&mut ws, WAIT).await?;
    assert!(
        boot.iter().any(|m| is_state(m, SessionState::Cloning)),
        "{}",
        summary(&boot)
    );
    let first_turn = turn(&mut ws, "hello").await?;
    assert!(mentions(&first_turn, "reply 1"), "{}", summary(&first_turn));
    let readme = first.client.files(&id, "README.md").await?;
    assert!(
        format!("{readme:?}").contains("On a local process"),
        "{readme:?}"
    );
    let diff = first.client.diff(&id).await?;
    assert!(diff.files.is_empty(), "nothing changed yet: {diff:?}");
    drop(ws);

    // The orchestrator dies; the next one (same database, same key, the
    // gateway on the same port) adopts the running session.
    first.crash();
    let (second, recovery) =
        Orchestrator::start(runtime, l.data.path(), l.gateway, &l.git, key).await?;
    assert_eq!(recovery.adopted, 1, "{recovery:?}");
    let status = second.client.status(&id).await?;
    assert_eq!(status.state, SessionState::Ready, "{status:?}");
    let mut ws = second.client.stream_from_now(&id).await?;
    let next = turn(&mut ws, "again")
        .await
        .context("a turn on the adopted session")?;
    assert!(
        mentions(&next, "reply 2"),
        "the same Claude Code goes on: {}",
        summary(&next)
    );

    // Its process killed from outside: `error` with the exit, removed.
    runtime.kill(&sid);
    let ended = read_until(&mut ws, WAIT, |m| is_state(m, SessionState::Error))
        .await
        .context("the session ending")?;
    let Some(ServerMessage::Status { reason, .. }) = ended.last() else {
        unreachable!("read until a status")
    };
    let reason = reason.clone().unwrap_or_default();
    assert!(reason.contains("137"), "the exit in the reason: {reason}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while runtime.list().await?.contains(&sid) {
        assert!(tokio::time::Instant::now() < deadline, "left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.crash();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_in_a_local_session_shows_in_its_diff_and_is_pushed_to_its_branch(
) -> anyhow::Result<()> {
    let l = Local::new("work", "# Work\n").await?;
    let (runtime, git) = (&l.runtime, &l.git);
    let (orchestrator, _) =
        Orchestrator::start(runtime, l.data.path(), l.gateway, git, [6u8; 32]).await?;
    let client = &orchestrator.client;
    let request = l.request();
    let id = client.create(&request).await?.session_id;
    let sid = SessionId::parse(&id).expect("a session ID");
    let mut ws = client.stream(&id, 0).await?;
    read_until(&mut ws, WAIT, |m| is_state(m, SessionState::Ready)).await?;

    // What Claude Code would have written.
    std::fs::write(runtime.checkout(&sid).join("notes.txt"), "written here\n")?;
    let diff = client.diff(&id).await?;
    assert!(
        diff.files.iter().any(|f| f.path == "notes.txt"),
        "the new file in the diff: {diff:?}"
    );
    let pushed = client
        .push(
            &id,
            &cc_wire::api::PushRequest {
                branch: None,
                message: Some("notes".into()),
                pull_request: None,
            },
        )
        .await?;
    assert!(pushed.created && pushed.committed_changes, "{pushed:?}");
    assert_eq!(pushed.branch, format!("claudecluster/{id}"));
    assert_eq!(
        git.show("work", &pushed.branch, "notes.txt")?,
        "written here\n",
        "the branch on the git server has the work"
    );
    client.delete(&id).await?;
    assert!(!runtime.list().await?.contains(&sid), "nothing left");
    orchestrator.crash();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_container_waits_for_its_place_is_adopted_waiting() -> anyhow::Result<()> {
    // The in-memory runtime holds every start, as a cluster holds a Pod
    // Pending; nothing answers as sessiond once one is placed.
    let runtime =
        cc_testkit::fake_runtime::FakeRuntime::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    runtime.hold_starts(true);
    let l = Local::new("pending", "# Pending\n").await?;
    let key = [7u8; 32];
    let (first, _) = Orchestrator::start(&runtime, l.data.path(), l.gateway, &l.git, key).await?;
    let id = first.client.create(&l.request()).await?.session_id;
    let sid = SessionId::parse(&id).expect("a session ID");
    assert!(
        runtime.is_pending(&sid),
        "answered while the container waits"
    );

    // The orchestrator dies while the container still waits; the next one
    // takes the session over and waits for it in turn.
    first.crash();
    let (second, recovery) =
        Orchestrator::start(&runtime, l.data.path(), l.gateway, &l.git, key).await?;
    assert_eq!(recovery.adopted, 1, "{recovery:?}");
    let status = second.client.status(&id).await?;
    assert_eq!(status.state, SessionState::Starting, "{status:?}");

    // Its verdict reaches the session through the new orchestrator.
    let mut ws = second.client.stream(&id, 0).await?;
    runtime.refuse_start(&sid, "0/3 nodes are available: 3 Insufficient memory.");
    let ended = read_until(&mut ws, WAIT, |m| is_state(m, SessionState::Error)).await?;
    let Some(ServerMessage::Status { reason, .. }) = ended.last() else {
        unreachable!("read until a status")
    };
    let reason = reason.clone().unwrap_or_default();
    assert!(reason.contains("Insufficient memory"), "{reason}");
    assert!(!runtime.list().await?.contains(&sid), "nothing left");
    second.crash();
    Ok(())
}

/// A permission question open when the orchestrator dies is still shown
/// and answerable after the next one adopts the session (sessiond reports
/// the questions it waits on when following starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_permission_question_survives_an_orchestrator_restart() -> anyhow::Result<()> {
    let l = Local::new("local-ask", "# Asks\n").await?;
    let runtime = &l.runtime;
    let key = [7u8; 32];
    let (first, _) = Orchestrator::start(runtime, l.data.path(), l.gateway, &l.git, key).await?;
    let mut request = l.request();
    request.options = Some(cc_wire::api::SessionOptions {
        permission_mode: Some("default".into()),
        ..Default::default()
    });
    let id = first.client.create(&request).await?.session_id;
    let mut ws = first.client.stream(&id, 0).await?;
    read_until(&mut ws, WAIT, |m| is_state(m, SessionState::Ready)).await?;
    ws.command("ASK_PERMISSION").await?;
    let asked = read_until(&mut ws, WAIT, |m| {
        matches!(m, ServerMessage::PermissionRequest { .. })
    })
    .await?;
    let Some(ServerMessage::PermissionRequest { request_id, .. }) = asked.last() else {
        unreachable!("read until a question")
    };
    let request_id = request_id.clone();
    drop(ws);

    first.crash();
    let (second, recovery) =
        Orchestrator::start(runtime, l.data.path(), l.gateway, &l.git, key).await?;
    assert_eq!(recovery.adopted, 1, "{recovery:?}");
    // The adopted session's actor learns the open question from sessiond.
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let status = second.client.status(&id).await?;
        if !status.pending_permissions.is_empty() || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.pending_permissions.len(), 1, "{status:?}");
    assert_eq!(status.pending_permissions[0].request_id, request_id);
    assert_eq!(status.pending_permissions[0].tool, "Bash");
    let mut ws = second.client.stream_from_now(&id).await?;
    let answer = cc_wire::api::PermissionResponse {
        request_id: None,
        allow: true,
        message: None,
        always: None,
    };
    let answered = second
        .client
        .answer_permission(&id, &request_id, &answer)
        .await?;
    assert!(answered.allow);
    let rest = read_until(&mut ws, WAIT, |m| is_state(m, SessionState::Ready)).await?;
    assert!(mentions(&rest, "permission allow"), "{}", summary(&rest));
    assert!(second
        .client
        .status(&id)
        .await?
        .pending_permissions
        .is_empty());
    second.client.delete(&id).await?;
    second.crash();
    Ok(())
}

/// The workspace size limit of a runtime that cannot bound a workspace
/// itself (as Docker): the status shows what the workspace holds; once it
/// holds more than the limit the session ends in `error` with both sizes,
/// and its workspace goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_workspace_outgrows_its_limit_ends_and_its_workspace_goes(
) -> anyhow::Result<()> {
    const LIMIT: u64 = 4 * 1024 * 1024;
    let l = Local::new("big", "# Big\n").await?;
    let runtime = &l.runtime;
    let (orchestrator, _) =
        Orchestrator::start_with(runtime, l.data.path(), l.gateway, &l.git, [7u8; 32], |c| {
            c.workspace_limit = Some(LIMIT);
            c.workspace_check_interval = Duration::from_millis(100);
        })
        .await?;
    let client = &orchestrator.client;
    let id = client.create(&l.request()).await?.session_id;
    let sid = SessionId::parse(&id).expect("a session ID");
    let mut ws = client.stream(&id, 0).await?;
    read_until(&mut ws, WAIT, |m| is_state(m, SessionState::Ready)).await?;

    // Under the limit: measured, shown, and the session lives on.
    let deadline = tokio::time::Instant::now() + WAIT;
    let resources = loop {
        let status = client.status(&id).await?;
        match status.resources {
            Some(r) if r.workspace_bytes.is_some() => break r,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => anyhow::bail!("the workspace was never measured: {other:?}"),
        }
    };
    let held = resources.workspace_bytes.expect("matched above");
    assert!(held > 0 && held < LIMIT, "the checkout: {held} bytes");
    assert_eq!(resources.workspace_limit_bytes, Some(LIMIT));
    assert_eq!(client.status(&id).await?.state, SessionState::Ready);

    // What a build or a download would have written.
    std::fs::write(
        runtime.checkout(&sid).join("big.bin"),
        vec![0u8; LIMIT as usize + 1024 * 1024],
    )?;
    let seen = read_until(&mut ws, WAIT, |m| is_state(m, SessionState::Error)).await?;
    let Some(ServerMessage::Status { reason, .. }) = seen.last() else {
        unreachable!("read_until returns the match")
    };
    let reason = reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("the session's workspace grew to ")
            && reason.ends_with(", over its limit of 4 MiB"),
        "{}",
        summary(&seen)
    );
    assert!(
        seen.iter()
            .any(|m| matches!(m, ServerMessage::Error { message, .. } if *message == reason)),
        "the stream says why: {}",
        summary(&seen)
    );
    let status = client.status(&id).await?;
    assert_eq!(
        (status.state, status.reason.as_deref()),
        (SessionState::Error, Some(reason.as_str()))
    );
    assert!(!runtime.list().await?.contains(&sid), "nothing left");
    assert!(!runtime.checkout(&sid).exists(), "the workspace is gone");
    orchestrator.crash();
    Ok(())
}
