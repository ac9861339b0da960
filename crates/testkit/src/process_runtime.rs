//! A [`Runtime`] whose sessions are local `claudecluster-sessiond`
//! processes: no container and no isolation, each on a loopback port in a
//! directory of its own, running the Claude Code it is given (a fake, or
//! the real one). The real sessiond and the real core meet over the real
//! protocol, so a session's whole life — boot, the clone through the
//! gateway's git relay, turns and the stream, diff, adoption by a
//! restarted orchestrator, a process that dies — runs in-process, fast,
//! without Docker. A stand-in for tests only: it isolates nothing.

use cc_core::{
    ContainerStatus, Placement, ResourceUsage, Runtime, RuntimeError, RuntimeEvent,
    RuntimeEventKind, RuntimeEventStream, SessionId, SessionSpec, Started,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, oneshot};

/// The fake Claude Code sessiond's own tests use: per user line an
/// assistant text `reply N` and a `result` (see the script for the rest).
pub const FAKE_CLAUDE: &str = include_str!("../../sessiond/tests/it/fake_claude.sh");

/// One session's process, as the runtime tracks it.
struct Proc {
    pid: u32,
    port: u16,
    /// Set once the process has ended.
    exit: Option<i64>,
    /// Asks the process's watcher to kill it.
    kill: Option<oneshot::Sender<()>>,
}

#[derive(Clone)]
pub struct ProcessRuntime {
    procs: Arc<Mutex<HashMap<SessionId, Proc>>>,
    events: broadcast::Sender<RuntimeEvent>,
    sessiond: PathBuf,
    claude: PathBuf,
    root: Arc<tempfile::TempDir>,
    gateway_url: String,
    /// Where the processes' watchers run: the runtime this one was made
    /// on, so an orchestrator run on a runtime of its own can die (as its
    /// process would) while its sessions live on.
    tasks: tokio::runtime::Handle,
}

impl ProcessRuntime {
    /// Sessions run `sessiond` with `claude` as their Claude Code and reach
    /// the gateway at `gateway_url`. Made inside a Tokio runtime, which
    /// then runs the processes' watchers.
    pub fn new(
        sessiond: impl Into<PathBuf>,
        claude: impl Into<PathBuf>,
        gateway_url: impl Into<String>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            procs: Arc::default(),
            events: broadcast::channel(256).0,
            sessiond: sessiond.into(),
            claude: claude.into(),
            root: Arc::new(tempfile::Builder::new().prefix("cc-procs-").tempdir()?),
            gateway_url: gateway_url.into(),
            tasks: tokio::runtime::Handle::current(),
        })
    }

    /// [`FAKE_CLAUDE`] as an executable in `dir`.
    pub fn write_fake_claude(dir: &Path) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-claude");
        std::fs::write(&path, FAKE_CLAUDE)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<SessionId, Proc>) -> T) -> T {
        f(&mut self.procs.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn dir(&self, id: &SessionId) -> PathBuf {
        self.root.path().join(id.as_str())
    }

    /// The session's checkout, for a test to change as Claude Code would.
    pub fn checkout(&self, id: &SessionId) -> PathBuf {
        self.dir(id).join("repo")
    }

    fn placement(&self, p: &Proc) -> Placement {
        Placement {
            container_id: format!("proc-{}", p.pid),
            agent_url: format!("http://127.0.0.1:{}", p.port),
            gateway_url: self.gateway_url.clone(),
        }
    }

    /// Kills the session's process (SIGKILL), as a container killed from
    /// outside; its end is reported as an event.
    pub fn kill(&self, id: &SessionId) {
        if let Some(kill) = self.with(|m| m.get_mut(id).and_then(|p| p.kill.take())) {
            let _ = kill.send(());
        }
    }

    fn spawn(&self, spec: &SessionSpec) -> Result<Proc, RuntimeError> {
        let dir = self.dir(&spec.id);
        let home = dir.join("home");
        std::fs::create_dir_all(&home)
            .map_err(|e| RuntimeError::Internal(format!("creating {}: {e}", home.display())))?;
        let port = crate::ports::fixed_port();
        // Spawned from the watchers' runtime, which then owns the child.
        let _entered = self.tasks.enter();
        let mut child = tokio::process::Command::new(&self.sessiond)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("SESSIOND_TOKEN", spec.agent_token.expose())
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
            .env("SESSIOND_CLAUDE_BIN", &self.claude)
            .env("SESSIOND_REPO_DIR", self.checkout(&spec.id))
            .env("SESSIOND_ALLOW_LOCAL", "1")
            .env("RUST_LOG", "warn")
            // Under `cargo llvm-cov`, sessiond's coverage counts too.
            .envs(std::env::var_os("LLVM_PROFILE_FILE").map(|v| ("LLVM_PROFILE_FILE", v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                RuntimeError::Invalid(format!("starting {}: {e}", self.sessiond.display()))
            })?;
        let pid = child.id().unwrap_or_default();
        let (kill, killed) = oneshot::channel::<()>();
        let (procs, events, id) = (self.procs.clone(), self.events.clone(), spec.id.clone());
        self.tasks.spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = killed => {
                    let _ = child.kill().await;
                    child.wait().await
                }
            };
            // A signal's end reads as a shell would put it (137: SIGKILL).
            let code = status.ok().map(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.code()
                    .map_or_else(|| 128 + i64::from(s.signal().unwrap_or(0)), i64::from)
            });
            let known = {
                let mut m = procs.lock().unwrap_or_else(|p| p.into_inner());
                match m.get_mut(&id).filter(|p| p.pid == pid) {
                    Some(p) => {
                        p.exit = Some(code.unwrap_or(-1));
                        true
                    }
                    None => false,
                }
            };
            if known {
                let _ = events.send(RuntimeEvent {
                    session: id,
                    kind: RuntimeEventKind::Exited { code, oom: false },
                });
            }
        });
        Ok(Proc {
            pid,
            port,
            exit: None,
            kill: Some(kill),
        })
    }
}

impl Runtime for ProcessRuntime {
    async fn create(&self, spec: &SessionSpec) -> Result<Started, RuntimeError> {
        if let Some(p) = self.with(|m| m.get(&spec.id).map(|p| self.placement(p))) {
            return Ok(Started::Running(p));
        }
        let proc = self.spawn(spec)?;
        let placed = self.placement(&proc);
        self.with(|m| m.insert(spec.id.clone(), proc));
        Ok(Started::Running(placed))
    }

    async fn wait_running(&self, id: &SessionId) -> Result<Placement, RuntimeError> {
        self.locate(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound("the session's process does not run".into()))
    }

    async fn remove(&self, id: &SessionId) -> Result<(), RuntimeError> {
        if let Some(mut p) = self.with(|m| m.remove(id)) {
            if let Some(kill) = p.kill.take() {
                let _ = kill.send(());
            }
        }
        match std::fs::remove_dir_all(self.dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Internal(format!(
                "removing its directory: {e}"
            ))),
        }
    }

    async fn inspect(&self, id: &SessionId) -> Result<Option<ContainerStatus>, RuntimeError> {
        Ok(self.with(|m| {
            m.get(id).map(|p| ContainerStatus {
                running: p.exit.is_none(),
                starting: false,
                exit_code: p.exit,
                oom_killed: false,
            })
        }))
    }

    async fn list(&self) -> Result<Vec<SessionId>, RuntimeError> {
        Ok(self.with(|m| m.keys().cloned().collect()))
    }

    async fn locate(&self, id: &SessionId) -> Result<Option<Placement>, RuntimeError> {
        Ok(self.with(|m| {
            m.get(id)
                .filter(|p| p.exit.is_none())
                .map(|p| self.placement(p))
        }))
    }

    async fn events(&self) -> Result<RuntimeEventStream, RuntimeError> {
        let rx = self.events.subscribe();
        Ok(tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|r| async move { r.ok().map(Ok) })
            .boxed())
    }

    /// No memory cgroup of its own: sessiond's reports are all there is.
    fn reports_oom_kills(&self) -> bool {
        false
    }

    /// Each session's directory, walked: these processes write where the
    /// test's user can read.
    async fn workspace_sizes(&self) -> Result<Option<HashMap<SessionId, u64>>, RuntimeError> {
        let dirs: Vec<(SessionId, PathBuf)> =
            self.with(|m| m.keys().map(|id| (id.clone(), self.dir(id))).collect());
        tokio::task::spawn_blocking(move || {
            Some(
                dirs.into_iter()
                    .map(|(id, dir)| (id, bytes_under(&dir)))
                    .collect(),
            )
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("measuring workspaces: {e}")))
    }

    /// The process's own resident memory (`/proc/<pid>/status`).
    async fn stats(&self, id: &SessionId) -> Result<Option<ResourceUsage>, RuntimeError> {
        let Some(pid) = self.with(|m| m.get(id).filter(|p| p.exit.is_none()).map(|p| p.pid)) else {
            return Ok(None);
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Some(ResourceUsage {
            memory_bytes: rss_kib * 1024,
            pids: 1,
            ..Default::default()
        }))
    }
}

/// Bytes in the files under `dir` (symbolic links not followed); what
/// cannot be read counts as nothing.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
