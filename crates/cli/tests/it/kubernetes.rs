//! `claudecluster serve --runtime kubernetes` on the real test cluster
//! (`scripts/kubernetes.sh`: kube-apiserver and kubelet 1.20 on this
//! machine's Docker): a whole session as a Pod — create, the Pod running,
//! the clone through the gateway, a turn of the real Claude Code streamed
//! over the WebSocket, an orchestrator `kill -9` and adoption, a process
//! killed for memory reported as such, delete, the
//! Pod and its objects gone; a session from the warm pool's Pod; a Pod
//! killed from outside; a Pod the kubelet refuses while create has already
//! answered. `#[ignore]`d in a plain `cargo test`; `scripts/test.sh` runs
//! it with the cluster up.

mod orchestrator_pod;

use super::{await_ready, cli, run_turn, spawn_serve, TURN_TIMEOUT};
use anyhow::Context;
use cc_core::Runtime;
use cc_testkit::harness::{
    is_oom_report, is_state, oom_reports_logged, output_text, read_until, summary,
};
use cc_wire::api::{ServerMessage, SessionState};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ADMIN: &str = "kube-admin-token-0123456789";
/// A cold Pod on a loaded 2-core machine, then the clone and sessiond.
const READY_TIMEOUT: Duration = Duration::from_secs(240);

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: start the test cluster with scripts/kubernetes.sh (scripts/test.sh does)")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (scripts/kubernetes.sh)"]
async fn a_session_runs_as_a_pod_from_create_to_delete() -> anyhow::Result<()> {
    let image = var("CLAUDECLUSTER_TEST_IMAGE")?;
    let kubeconfig = var("CLAUDECLUSTER_TEST_KUBECONFIG")?;
    let namespace = var("CLAUDECLUSTER_TEST_KUBE_NAMESPACE")?;
    let node = var("CLAUDECLUSTER_TEST_KUBE_NODE")?;
    let host_ip = var("CLAUDECLUSTER_TEST_KUBE_HOST_IP")?;

    let api_key = format!("sk-ant-kube-{}", cc_core::Token::generate().expose());
    let model = cc_model_double::spawn(cc_model_double::ModelDoubleConfig {
        api_key: Some(api_key.clone()),
        latency_ms: 0,
    })
    .await?;
    let git = cc_testkit::git_server::GitServer::start().await?;
    let repo = git.create_repo("on-kube", &[("README.md", "# Cloned into a Pod\n")])?;
    // The gateway's port must be known before the server starts (the
    // sessions' Pods are told its URL) and kept across its restart.
    let gateway_port = cc_testkit::ports::fixed_port();
    let prefix = format!("cck{}-", &cc_core::SessionId::generate().as_str()[..6]);
    let gateway_url = format!("http://{host_ip}:{gateway_port}");

    let home = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    // The restarted orchestrator keeps one warm Pod.
    let serve = |warm_pool: usize| {
        let mut c = cli(home.path());
        c.args([
            "serve",
            "--runtime",
            "kubernetes",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--gateway-listen", &format!("0.0.0.0:{gateway_port}")])
        .args(["--image", &image, "--admin-token", ADMIN])
        .args(["--resource-prefix", &prefix])
        .args(["--anthropic-base-url", &model.base_url()])
        .args(["--allow-repo-host", &git.addr().to_string()])
        .args(["--kubeconfig", &kubeconfig, "--kube-namespace", &namespace])
        .args(["--kube-node", &node, "--kube-gateway-url", &gateway_url])
        .args(["--kube-image-pull-policy", "Never"])
        .args(["--kube-seccomp", "localhost:claudecluster.json"])
        .args(["--warm-pool", &warm_pool.to_string()])
        // More than the node has, for the Pod the kubelet refuses.
        .args(["--max-memory", "4096g"])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
        spawn_serve(c)
    };
    let (mut server, base) = serve(0).await?;
    let client = cc_client::Client::with_token(base, Some(ADMIN.into()))?;

    let request = cc_testkit::harness::session_request(&repo, None, &api_key);
    // 512 MiB, for the memory hog below (the warm Pod has the default).
    let mut small = request.clone();
    if let Some(config) = small.config.as_mut() {
        config.memory = Some(cc_wire::api::Quantity::Text("512m".into()));
    }
    let created = client.create(&small).await?;
    let id = created.session_id.clone();
    let mut ws =
        cc_client::EventStream::connect(&format!("{}&since=0", created.endpoints.websocket))
            .await?;
    await_ready(&mut ws, READY_TIMEOUT).await?;

    // The session is a Pod of this deployment, running.
    let mut settings =
        cc_runtime_kubernetes::KubeSettings::new(namespace.clone(), gateway_url.clone());
    settings.prefix = prefix.clone();
    let kube =
        cc_runtime_kubernetes::KubernetesRuntime::connect(settings, Some(kubeconfig.as_ref()))
            .await?;
    let sid = cc_core::SessionId::parse(&id).context("a session ID")?;
    assert!(kube.list().await?.contains(&sid), "no Pod for {id}");
    assert!(kube.inspect(&sid).await?.is_some_and(|s| s.running));

    // A turn of the real Claude Code in the Pod, on the cloned checkout.
    let turn = run_turn(&mut ws, "bash: cat README.md; echo uid=$(id -u)").await?;
    let text = output_text(&turn);
    assert!(
        text.contains("# Cloned into a Pod") && text.contains("uid=1000"),
        "{}",
        summary(&turn)
    );
    let status = client.status(&id).await?;
    assert!(
        status.resources.is_some(),
        "resources from the node's summary: {status:?}"
    );

    // The orchestrator dies (SIGKILL); the next one adopts the running Pod
    // and the session goes on with its checkout.
    server.kill().await?;
    drop(ws);
    let (mut server, base) = serve(1).await?;
    let client = cc_client::Client::with_token(base, Some(ADMIN.into()))?;
    let status = client.status(&id).await?;
    assert_eq!(status.state, SessionState::Ready, "adopted: {status:?}");
    let mut ws = client.stream_from_now(&id).await?;
    let turn = run_turn(&mut ws, "bash: echo second-turn > note.txt; ls").await?;
    let text = output_text(&turn);
    assert!(
        text.contains("note.txt") && text.contains("README.md"),
        "{}",
        summary(&turn)
    );

    // A process killed for memory inside the Pod (the API shows no such
    // thing; sessiond reads the container's memory cgroup) is reported,
    // counted as reported, and the session lives on.
    let turn = run_turn(
        &mut ws,
        "bash: head -c 900m /dev/zero | tail > /dev/null; echo tail ended with $?",
    )
    .await?;
    if !turn.iter().any(is_oom_report) {
        read_until(&mut ws, TURN_TIMEOUT, is_oom_report).await?;
    }
    let status = client.status(&id).await?;
    let reports = oom_reports_logged(&client, &id).await?;
    assert!(status.oom_kills >= 1, "{status:?}");
    assert_eq!(status.oom_kills, reports, "counted as reported: {status:?}");
    assert_eq!(status.state, SessionState::Ready, "the session lives on");

    // Delete: the Pod, its Secret and NetworkPolicy go.
    client.delete(&id).await?;
    gone(&kube, &sid).await?;

    // The warm pool is a Pod of its own, running before any request; the
    // next create with the default limits is that Pod.
    let deadline = Instant::now() + READY_TIMEOUT;
    let warm = loop {
        let ids = kube.list().await?;
        if let [only] = ids.as_slice() {
            if kube.inspect(only).await?.is_some_and(|s| s.running) {
                break only.clone();
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no warm Pod: {ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let created = client.create(&request).await?;
    let id = created.session_id.clone();
    assert_eq!(id, warm.as_str(), "the session is the warm Pod");
    let mut ws = client.stream(&id, 0).await?;
    await_ready(&mut ws, READY_TIMEOUT).await?;

    // A Pod killed from outside ends its session in `error` with the
    // reason, and the core removes its objects.
    let pod = format!("{prefix}{id}");
    let killed = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker kill $(docker ps -q --filter label=io.kubernetes.pod.name={pod} --filter label=io.kubernetes.container.name=session)"
        ))
        .output()
        .await?;
    assert!(killed.status.success(), "{killed:?}");
    let ended = read_until(&mut ws, TURN_TIMEOUT, |m| is_state(m, SessionState::Error)).await?;
    let Some(ServerMessage::Status { reason, .. }) = ended.last() else {
        unreachable!()
    };
    let reason = reason.clone().unwrap_or_default();
    assert!(reason.contains("137"), "the exit in the reason: {reason}");
    gone(&kube, &warm).await?;

    // Create answers while the Pod is not running yet: this one asks for
    // more memory than the node has, so the kubelet refuses it after the
    // answer, and the session ends with the kubelet's reason.
    let mut big = request.clone();
    if let Some(config) = big.config.as_mut() {
        config.memory = Some(cc_wire::api::Quantity::Text("4000g".into()));
    }
    let created = client.create(&big).await?;
    assert_eq!(
        created.state,
        SessionState::Starting,
        "answered before the Pod ran: {created:?}"
    );
    assert!(
        !created.container_id.is_empty(),
        "the Pod's UID: {created:?}"
    );
    let id = created.session_id.clone();
    let sid = cc_core::SessionId::parse(&id).context("a session ID")?;
    let mut ws = client.stream(&id, 0).await?;
    let ended = read_until(&mut ws, READY_TIMEOUT, |m| is_state(m, SessionState::Error)).await?;
    let Some(ServerMessage::Status { reason, .. }) = ended.last() else {
        unreachable!()
    };
    let reason = reason.clone().unwrap_or_default();
    assert!(
        reason.contains("could not start") && reason.contains("memory"),
        "the kubelet's reason: {reason}"
    );
    gone(&kube, &sid).await?;
    server.kill().await?;
    // The warm Pod the pool refilled (a killed orchestrator drains
    // nothing): it would hold the node's CPU from the next test.
    for id in kube.list().await? {
        kube.remove(&id).await?;
    }
    Ok(())
}

/// Waits until nothing of the session is left in the cluster.
async fn gone(
    kube: &cc_runtime_kubernetes::KubernetesRuntime,
    id: &cc_core::SessionId,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while kube.list().await?.contains(id) {
        anyhow::ensure!(Instant::now() < deadline, "left behind: {id}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
