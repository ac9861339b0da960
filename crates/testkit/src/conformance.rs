//! One conformance suite for the [`Runtime`] seam, run by every backend:
//! the in-memory [`crate::fake_runtime::FakeRuntime`] (no Docker) and the
//! Docker runtime (the end-to-end tests) and the Kubernetes runtime (on a
//! real cluster, `cc-runtime-kubernetes`'s tests). What the core relies on
//! is asserted here, once.

use anyhow::{ensure, Context};
use cc_core::{Runtime, RuntimeEvent, RuntimeEventKind, SessionId, SessionSpec, Started};
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
    /// Writes `bytes` more into the session's workspace from inside its
    /// running container, as its tools would.
    fn write_to_workspace(
        &self,
        id: &SessionId,
        bytes: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
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
        pooled: false,
    }
}

/// The whole suite against one runtime, failed from outside by `driver`.
pub async fn run<R: Runtime>(
    rt: &R,
    driver: &impl RuntimeDriver,
    image: &str,
) -> anyhow::Result<()> {
    lifecycle(rt, image).await.context("lifecycle")?;
    suspend_and_start_again(rt, image)
        .await
        .context("suspend and start again")?;
    exits_are_reported(rt, driver, image)
        .await
        .context("exits are reported")?;
    workspaces_are_measured(rt, driver, image)
        .await
        .context("workspaces are measured")?;
    Ok(())
}

/// create → (wait until running) → locate/inspect/list/stats → remove,
/// each idempotent.
async fn lifecycle<R: Runtime>(rt: &R, image: &str) -> anyhow::Result<()> {
    let s = spec(image);
    let started = rt.create(&s).await?;
    let placed = match &started {
        Started::Running(p) => p.clone(),
        Started::Pending {
            container_id,
            gateway_url,
        } => {
            // Pending: not located yet, but known, and on its way.
            let st = rt.inspect(&s.id).await?;
            ensure!(
                st.as_ref().is_some_and(|st| (st.starting || st.running)
                    && st.starting != st.running
                    && st.exit_code.is_none()),
                "a pending container is starting (or running by now): {st:?}"
            );
            ensure!(
                rt.list().await?.contains(&s.id),
                "list has a pending session"
            );
            let p = rt.wait_running(&s.id).await?;
            ensure!(
                &p.gateway_url == gateway_url && &p.container_id == container_id,
                "the IDs and gateway URL said at create are those it runs with: {p:?}"
            );
            p
        }
    };
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
    let again = rt.create_running(&s).await?;
    ensure!(
        again.container_id == placed.container_id,
        "create twice: {again:?}"
    );

    let located = rt
        .locate(&s.id)
        .await?
        .context("locate a running session")?;
    ensure!(located == placed, "locate {located:?} != create {placed:?}");
    let waited = rt.wait_running(&s.id).await?;
    ensure!(
        waited == placed,
        "wait_running of a running session: {waited:?}"
    );
    let status = rt.inspect(&s.id).await?.context("inspect")?;
    ensure!(
        status.running && !status.starting && !status.oom_killed,
        "{status:?}"
    );
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
    ensure!(
        rt.wait_running(&s.id).await.is_err(),
        "wait_running of a removed session fails"
    );
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

/// A suspended session has no container but is still the runtime's (its
/// workspace), and `create` starts it again; a runtime that cannot keep a
/// workspace says so instead of removing it.
async fn suspend_and_start_again<R: Runtime>(rt: &R, image: &str) -> anyhow::Result<()> {
    let s = spec(image);
    if !rt.can_suspend() {
        rt.create_running(&s).await?;
        ensure!(
            rt.suspend(&s.id).await.is_err(),
            "a runtime that cannot suspend refuses to"
        );
        ensure!(
            rt.copy_workspace(&s.id, &spec(image)).await.is_err(),
            "nor can it copy a workspace"
        );
        ensure!(
            rt.inspect(&s.id).await?.is_some_and(|st| st.running),
            "a refused suspend leaves the container running"
        );
        rt.remove(&s.id).await?;
        return Ok(());
    }
    let first = rt.create_running(&s).await?;
    rt.suspend(&s.id).await?;
    ensure!(rt.inspect(&s.id).await?.is_none(), "no container asleep");
    ensure!(
        rt.locate(&s.id).await?.is_none(),
        "nothing to locate asleep"
    );
    ensure!(rt.stats(&s.id).await?.is_none(), "no stats asleep");
    ensure!(
        rt.list().await?.contains(&s.id),
        "a sleeping session's workspace is still listed (not an orphan to a sweep that checks the store)"
    );
    rt.suspend(&s.id).await?; // Twice is fine.
                              // A fork's workspace is copied from a sleeping (or running) one.
    let fork = spec(image);
    rt.copy_workspace(&s.id, &fork).await?;
    rt.create_running(&fork).await?;
    ensure!(rt.list().await?.contains(&fork.id), "the fork is listed");
    rt.remove(&fork.id).await?;
    ensure!(
        rt.copy_workspace(&SessionId::generate(), &spec(image))
            .await
            .is_err(),
        "no copy of a workspace that does not exist"
    );
    let again = rt.create_running(&s).await?;
    ensure!(
        rt.inspect(&s.id).await?.is_some_and(|st| st.running),
        "running again after create"
    );
    ensure!(
        again.gateway_url.starts_with("http"),
        "placed again: {again:?} (first: {first:?})"
    );
    rt.remove(&s.id).await?;
    ensure!(
        !rt.list().await?.contains(&s.id),
        "remove takes the workspace"
    );
    Ok(())
}

/// A child's OOM kill (the container lives on) and the container's own
/// exit reach the event feed; a stopped container is not located.
async fn exits_are_reported<R: Runtime>(
    rt: &R,
    driver: &impl RuntimeDriver,
    image: &str,
) -> anyhow::Result<()> {
    let s = spec(image);
    let mut feed = rt.events().await?;
    rt.create_running(&s).await?;
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

    driver.oom_kill_child(&s.id).await?;
    if rt.reports_oom_kills() {
        let ev = next_of_ours().await?;
        ensure!(ev.kind == RuntimeEventKind::OomKill, "{ev:?}");
    }
    ensure!(
        rt.inspect(&s.id).await?.is_some_and(|st| st.running),
        "the container lives on after a child's OOM kill"
    );

    driver.kill(&s.id).await?;
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

/// A runtime that measures workspaces sees what a session wrote into its
/// own, and stops listing it once removed; one that does not (it bounds
/// workspaces itself) says `None`.
async fn workspaces_are_measured<R: Runtime>(
    rt: &R,
    driver: &impl RuntimeDriver,
    image: &str,
) -> anyhow::Result<()> {
    const WRITTEN: u64 = 3 * 1024 * 1024;
    let s = spec(image);
    rt.create_running(&s).await?;
    if rt.workspace_sizes().await?.is_none() {
        rt.remove(&s.id).await?;
        return Ok(());
    }
    driver.write_to_workspace(&s.id, WRITTEN).await?;
    let sizes = rt
        .workspace_sizes()
        .await?
        .context("measured once, always")?;
    let bytes = sizes.get(&s.id).copied();
    ensure!(
        bytes.is_some_and(|b| b >= WRITTEN),
        "the session's workspace holds the {WRITTEN} bytes written: {bytes:?}"
    );
    rt.remove(&s.id).await?;
    let sizes = rt.workspace_sizes().await?.context("measured")?;
    ensure!(
        !sizes.contains_key(&s.id),
        "a removed session's workspace is not measured"
    );
    Ok(())
}

/// Fails session containers from outside through the local Docker Engine:
/// `docker kill`, and a memory hog run with `docker exec` (`tail` holds its
/// endless first line). It serves the Docker runtime and a single-node
/// Kubernetes whose kubelet runs its containers on this engine.
pub struct DockerDriver {
    target: Target,
}

enum Target {
    /// Containers of the Docker runtime with this prefix.
    DockerRuntime { prefix: String },
    /// The kubelet's containers of Pods named `<pod_prefix><id>`.
    Kubelet {
        namespace: String,
        container: String,
        pod_prefix: String,
    },
}

impl DockerDriver {
    /// The Docker runtime's containers, found by their labels.
    pub fn for_docker_runtime(rt: &cc_runtime_docker::DockerRuntime) -> Self {
        Self {
            target: Target::DockerRuntime {
                prefix: rt.prefix().to_owned(),
            },
        }
    }

    /// The container `container` of the Pod `<pod_prefix><id>`, found by
    /// the labels the kubelet's dockershim gives it.
    pub fn for_kubelet(namespace: &str, container: &str, pod_prefix: &str) -> Self {
        Self {
            target: Target::Kubelet {
                namespace: namespace.to_owned(),
                container: container.to_owned(),
                pod_prefix: pod_prefix.to_owned(),
            },
        }
    }

    /// `docker ps --filter` values that find one session's container.
    fn filters(&self, id: &SessionId) -> Vec<String> {
        match &self.target {
            Target::DockerRuntime { prefix } => vec![
                format!("label={}={id}", cc_core::LABEL_SESSION),
                format!("label={}={prefix}", cc_runtime_docker::LABEL_PREFIX),
            ],
            Target::Kubelet {
                namespace,
                container,
                pod_prefix,
            } => vec![
                format!("label=io.kubernetes.pod.name={pod_prefix}{id}"),
                format!("label=io.kubernetes.pod.namespace={namespace}"),
                format!("label=io.kubernetes.container.name={container}"),
            ],
        }
    }

    async fn container(&self, id: &SessionId) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new("docker");
        cmd.args(["ps", "-q"]);
        for f in self.filters(id) {
            cmd.args(["--filter", &f]);
        }
        let out = cmd.output().await?;
        let found = String::from_utf8_lossy(&out.stdout);
        let ids: Vec<&str> = found.split_whitespace().collect();
        ensure!(
            out.status.success() && ids.len() == 1,
            "one running container of session {id}, found {ids:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(ids[0].to_owned())
    }
}

impl RuntimeDriver for DockerDriver {
    async fn kill(&self, id: &SessionId) -> anyhow::Result<()> {
        let name = self.container(id).await?;
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
        let name = self.container(id).await?;
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

    async fn write_to_workspace(&self, id: &SessionId, bytes: u64) -> anyhow::Result<()> {
        let name = self.container(id).await?;
        let out = tokio::process::Command::new("docker")
            .args(["exec", &name, "sh", "-c"])
            .arg(format!(
                "head -c {bytes} /dev/urandom > \"$(mktemp -p {})\"",
                cc_wire::sessiond::WORKSPACE_DIR
            ))
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "writing {bytes} bytes into {name}'s workspace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}
