//! Kubernetes (with `--kubeconfig`): `claudecluster serve --runtime
//! kubernetes` on a cluster, driven through the public API:
//! - cold: create → first `status ready` (the session's Secret,
//!   NetworkPolicy and hardened Pod, the Pod running, sessiond, the clone
//!   through the gateway), one session at a time;
//! - warm: the same with `--warm-pool 1`, each sample once the pool's Pod
//!   is ready again (the claim, sessiond's init, the clone);
//!
//! beside the baseline a user has without ClaudeCluster: a bare Pod of the
//! same image as `kubectl run` makes it, created → `Running`, in the same
//! run. Every object carries the phase's own prefix; what is left at the
//! end (a crash) is removed.

use crate::stats::Summary;
use serde::Serialize;
use std::path::PathBuf;

/// Where the phase's `serve` runs its sessions.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The `claudecluster` binary (`serve` is started from it).
    pub serve_bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    /// The node every Pod is put on (a cluster without a scheduler).
    pub node: Option<String>,
    /// This host's address as the cluster's Pods reach it: the gateway
    /// listens there.
    pub host_ip: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesResult {
    pub samples: usize,
    /// create → first `status ready`, a new Pod each time.
    pub cold_ms: Option<Summary>,
    /// create → first `status ready` from a warm pool of one.
    pub warm_ms: Option<Summary>,
    /// A bare Pod of the same image, created → `Running` (the baseline).
    pub bare_pod_ms: Option<Summary>,
    pub errors: Vec<String>,
}

#[cfg(feature = "kubernetes")]
pub use run::measure;

#[cfg(feature = "kubernetes")]
mod run {
    use super::{KubeOptions, KubernetesResult};
    use crate::session::{anyhow_err, delete, err, ready_session_with};
    use crate::stats::Summary;
    use cc_core::Runtime;
    use cc_runtime_kubernetes::{KubeSettings, KubernetesRuntime};
    use cc_testkit::Harness;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, PostParams};
    use std::time::{Duration, Instant};
    use tokio::process::Command;

    /// Longest a warm Pod may take to be ready again.
    const POOL_WAIT: Duration = Duration::from_secs(240);

    pub async fn measure(
        h: &Harness,
        repo_url: &str,
        image: &str,
        opts: &KubeOptions,
        samples: usize,
    ) -> KubernetesResult {
        let mut out = KubernetesResult {
            samples,
            cold_ms: None,
            warm_ms: None,
            bare_pod_ms: None,
            errors: Vec::new(),
        };
        let prefix = format!("ccb{}-", &cc_core::SessionId::generate().as_str()[..6]);
        let runtime = match connect(opts, &prefix).await {
            Ok(rt) => rt,
            Err(e) => {
                out.errors.push(e);
                return out;
            }
        };
        let serve = Serve {
            h,
            image,
            opts,
            prefix: &prefix,
            gateway_port: cc_testkit::ports::fixed_port(),
        };
        match serve.samples(repo_url, 0, samples).await {
            Ok(v) => out.cold_ms = Summary::of(&v),
            Err(e) => out.errors.push(format!("cold: {e}")),
        }
        match serve.samples(repo_url, 1, samples).await {
            Ok(v) => out.warm_ms = Summary::of(&v),
            Err(e) => out.errors.push(format!("warm: {e}")),
        }
        match bare_pods(&runtime, image, opts, &prefix, samples).await {
            Ok(v) => out.bare_pod_ms = Summary::of(&v),
            Err(e) => out.errors.push(format!("bare Pod baseline: {e}")),
        }
        // Whatever a failure left behind.
        match runtime.list().await {
            Ok(ids) => {
                for id in ids {
                    if let Err(e) = runtime.remove(&id).await {
                        out.errors.push(format!("removing session {id}: {e}"));
                    }
                }
            }
            Err(e) => out.errors.push(format!("listing what is left: {e}")),
        }
        out
    }

    async fn connect(opts: &KubeOptions, prefix: &str) -> Result<KubernetesRuntime, String> {
        let mut settings = KubeSettings::new(opts.namespace.clone(), "http://unused:1");
        settings.prefix = prefix.to_owned();
        settings.node_name = opts.node.clone();
        KubernetesRuntime::connect(settings, Some(&opts.kubeconfig))
            .await
            .map_err(err)
    }

    struct Serve<'a> {
        h: &'a Harness,
        image: &'a str,
        opts: &'a KubeOptions,
        prefix: &'a str,
        gateway_port: u16,
    }

    impl Serve<'_> {
        /// create → ready `n` times on a `serve` keeping `warm_pool` Pods.
        async fn samples(
            &self,
            repo_url: &str,
            warm_pool: usize,
            n: usize,
        ) -> Result<Vec<Duration>, String> {
            let data = tempfile::tempdir().map_err(err)?;
            let mut cmd = Command::new(&self.opts.serve_bin);
            let gateway = format!("{}:{}", self.opts.host_ip, self.gateway_port);
            cmd.args([
                "serve",
                "--runtime",
                "kubernetes",
                "--listen",
                "127.0.0.1:0",
            ])
            .args([
                "--gateway-listen",
                &format!("0.0.0.0:{}", self.gateway_port),
            ])
            .args(["--kube-gateway-url", &format!("http://{gateway}")])
            .arg("--kubeconfig")
            .arg(&self.opts.kubeconfig)
            .args(["--kube-namespace", &self.opts.namespace])
            .args(["--image", self.image, "--resource-prefix", self.prefix])
            .args(["--anthropic-base-url", &self.h.model.base_url()])
            .args(["--allow-repo-host", &self.h.git.addr().to_string()])
            .args(["--warm-pool", &warm_pool.to_string()])
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "error");
            if let Some(node) = &self.opts.node {
                cmd.args(["--kube-node", node]);
            }
            let (child, client) = crate::serve::start(cmd, "serve --runtime kubernetes").await?;
            let request = self.h.create_request(repo_url, None);
            let mut out = Vec::new();
            let mut result = Ok(());
            for _ in 0..n {
                if warm_pool > 0 {
                    if let Err(e) = pool_ready(&client).await {
                        result = Err(e);
                        break;
                    }
                }
                match ready_session_with(&client, &request).await {
                    Ok(s) => {
                        out.push(s.ready_after);
                        s.ws.close().await;
                        if let Err(e) = delete(&client, &s.id).await {
                            result = Err(e);
                            break;
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            // SIGTERM: the warm Pod goes with the orchestrator.
            let stopped = crate::serve::stop(child).await;
            result.and(stopped).map(|()| out)
        }
    }

    /// Waits until the orchestrator's warm pool has a ready Pod (its
    /// `/metrics`, which answers loopback clients).
    async fn pool_ready(client: &cc_client::Client) -> Result<(), String> {
        let http = reqwest::Client::new();
        let url = format!("{}/metrics", client.base_url());
        let deadline = Instant::now() + POOL_WAIT;
        loop {
            let text = http
                .get(&url)
                .send()
                .await
                .map_err(err)?
                .text()
                .await
                .map_err(err)?;
            let ready = text
                .lines()
                .find_map(|l| l.strip_prefix("claudecluster_warm_pool{state=\"ready\"} "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if ready >= 1.0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no warm Pod ready within {POOL_WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The baseline: `n` bare Pods of `image`, as `kubectl run NAME
    /// --image IMAGE` makes them, created → `Running` (polled every 20 ms).
    async fn bare_pods(
        rt: &KubernetesRuntime,
        image: &str,
        opts: &KubeOptions,
        prefix: &str,
        n: usize,
    ) -> Result<Vec<Duration>, String> {
        let pods: Api<Pod> = Api::namespaced(rt.client().clone(), &opts.namespace);
        let mut out = Vec::new();
        for i in 0..n {
            let name = format!("{prefix}bare-{i}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"run": name}},
                "spec": {"nodeName": opts.node, "containers": [{
                    "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                    "env": [{"name": "SESSIOND_TOKEN", "value": "bench"}]}]}
            }))
            .map_err(err)?;
            let started = Instant::now();
            pods.create(&PostParams::default(), &pod)
                .await
                .map_err(anyhow_err)?;
            let running = loop {
                let phase = pods
                    .get(&name)
                    .await
                    .map_err(anyhow_err)?
                    .status
                    .and_then(|s| s.phase)
                    .unwrap_or_default();
                if phase == "Running" {
                    break Ok(started.elapsed());
                }
                if phase == "Failed" || started.elapsed() > POOL_WAIT {
                    break Err(format!("the bare Pod {name} did not run ({phase})"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let deleted = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            out.push(running?);
            deleted.map_err(anyhow_err)?;
        }
        Ok(out)
    }
}
