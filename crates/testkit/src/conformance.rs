//! One conformance suite for the [`Runtime`] seam, run by every backend:
//! the in-memory [`crate::fake_runtime::FakeRuntime`] (no Docker) and the
//! Docker runtime (the end-to-end tests), and the Kubernetes one when it
//! comes. What the core relies on is asserted here, once.

use anyhow::{ensure, Context};
use cc_core::{Runtime, RuntimeEvent, RuntimeEventKind, SessionId, SessionSpec};
use cc_wire::api::SessionLimits;
use futures_util::StreamExt;
use std::future::Future;
use std::time::Duration;

/// How long an event may take to arrive: generous, a loaded machine's
/// container engine is slow; the suite never asserts a duration.
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// What the suite needs beyond the seam: ways to make a session's
/// container fail as the outside world would.
pub trait RuntimeDriver {
    /// Kills the container's main process (SIGKILL: exit code 137).
    fn kill(&self, id: &SessionId) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Makes the kernel kill a process in the container for exceeding the
    /// memory limit, the container living on.
    fn oom_kill_child(&self, id: &SessionId) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A spec for a new session of `image` with a 256 MiB memory limit.
pub fn spec(image: &str) -> SessionSpec {
    SessionSpec {
        id: SessionId::generate(),
        image: image.into(),
        limits: SessionLimits {
            memory_bytes: 256 * 1024 * 1024,
            cpu: 0.5,
            timeout_secs: 600,
            egress: Default::default(),
            idle_timeout_secs: None,
        },
        agent_token: cc_core::Token::generate(),
    }
}

/// The whole suite against one runtime.
pub async fn run<R: Runtime + RuntimeDriver>(rt: &R, image: &str) -> anyhow::Result<()> {
    lifecycle(rt, image).await.context("lifecycle")?;
    exits_are_reported(rt, image)
        .await
        .context("exits are reported")?;
    Ok(())
}

/// create → locate/inspect/list/stats → remove, each idempotent.
async fn lifecycle<R: Runtime>(rt: &R, image: &str) -> anyhow::Result<()> {
    let s = spec(image);
    let placed = rt.create(&s).await?;
    ensure!(!placed.container_id.is_empty(), "a container ID");
    ensure!(
        placed.agent_url.starts_with("http://") || placed.agent_url.starts_with("https://"),
        "sessiond's URL: {}",
        placed.agent_url
    );
    ensure!(
        placed.gateway_url.starts_with("http") && !placed.gateway_url.ends_with('/'),
        "the gateway URL sessions use: {}",
        placed.gateway_url
    );
    // Idempotent per session: the same container again.
    let again = rt.create(&s).await?;
    ensure!(
        again.container_id == placed.container_id,
        "create twice: {again:?}"
    );

    let located = rt
        .locate(&s.id)
        .await?
        .context("locate a running session")?;
    ensure!(located == placed, "locate {located:?} != create {placed:?}");
    let status = rt.inspect(&s.id).await?.context("inspect")?;
    ensure!(status.running && !status.oom_killed, "{status:?}");
    ensure!(rt.list().await?.contains(&s.id), "list has the session");
    let usage = rt
        .stats(&s.id)
        .await?
        .context("stats of a running session")?;
    ensure!(
        usage.memory_limit_bytes == 0 || usage.memory_limit_bytes == s.limits.memory_bytes,
        "the memory limit in force: {usage:?}"
    );

    rt.remove(&s.id).await?;
    ensure!(rt.inspect(&s.id).await?.is_none(), "inspect after remove");
    ensure!(rt.locate(&s.id).await?.is_none(), "locate after remove");
    ensure!(rt.stats(&s.id).await?.is_none(), "stats after remove");
    ensure!(!rt.list().await?.contains(&s.id), "list after remove");
    // Removing what is gone is fine.
    rt.remove(&s.id).await?;
    // A session that never existed.
    let unknown = SessionId::generate();
    ensure!(rt.inspect(&unknown).await?.is_none());
    ensure!(rt.locate(&unknown).await?.is_none());
    Ok(())
}

/// A child's OOM kill (the container lives on) and the container's own
/// exit reach the event feed; a stopped container is not located.
async fn exits_are_reported<R: Runtime + RuntimeDriver>(rt: &R, image: &str) -> anyhow::Result<()> {
    let s = spec(image);
    let mut feed = rt.events().await?;
    rt.create(&s).await?;
    let mut next_of_ours = async || -> anyhow::Result<RuntimeEvent> {
        loop {
            let ev = tokio::time::timeout(EVENT_WAIT, feed.next())
                .await
                .context("no event")?
                .context("the feed ended")??;
            // Other sessions of a shared engine are not ours to judge.
            if ev.session == s.id {
                return Ok(ev);
            }
        }
    };

    rt.oom_kill_child(&s.id).await?;
    let ev = next_of_ours().await?;
    ensure!(ev.kind == RuntimeEventKind::OomKill, "{ev:?}");
    ensure!(
        rt.inspect(&s.id).await?.is_some_and(|st| st.running),
        "the container lives on after a child's OOM kill"
    );

    rt.kill(&s.id).await?;
    // One hog may take more than one kill to stop (one event each).
    let ev = loop {
        let ev = next_of_ours().await?;
        if ev.kind != RuntimeEventKind::OomKill {
            break ev;
        }
    };
    // `oom` may be set here: Docker marks a container OOM-killed once any
    // of its processes was, even if a signal ended it.
    ensure!(
        matches!(
            ev.kind,
            RuntimeEventKind::Exited {
                code: Some(137),
                ..
            }
        ),
        "{ev:?}"
    );
    let st = rt.inspect(&s.id).await?.context("a stopped container")?;
    ensure!(!st.running && st.exit_code == Some(137), "{st:?}");
    ensure!(
        rt.locate(&s.id).await?.is_none(),
        "a stopped container is not located"
    );
    ensure!(
        rt.list().await?.contains(&s.id),
        "its resources are still listed"
    );
    rt.remove(&s.id).await?;
    ensure!(rt.inspect(&s.id).await?.is_none());
    Ok(())
}

/// Docker as the outside world would fail it: `docker kill`, and a memory
/// hog run with `docker exec` (`tail` holds its endless first line).
impl RuntimeDriver for cc_runtime_docker::DockerRuntime {
    async fn kill(&self, id: &SessionId) -> anyhow::Result<()> {
        let name = format!("{}{id}", self.prefix());
        let out = tokio::process::Command::new("docker")
            .args(["kill", &name])
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "docker kill {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    async fn oom_kill_child(&self, id: &SessionId) -> anyhow::Result<()> {
        let name = format!("{}{id}", self.prefix());
        let out = tokio::process::Command::new("docker")
            .args(["exec", &name, "bash", "-c"])
            .arg("head -c 1500M /dev/zero | tail > /dev/null")
            .output()
            .await?;
        // 137: the hog was killed (by the kernel, for memory).
        ensure!(
            out.status.code() == Some(137),
            "the memory hog in {name} was not killed: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}
