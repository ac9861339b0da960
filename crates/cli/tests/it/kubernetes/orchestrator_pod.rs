//! The orchestrator itself as Pods of the test cluster, from what `deploy/`
//! ships: its image built from `deploy/Dockerfile`, its RBAC from
//! `deploy/kubernetes/rbac.yaml`, and the Pods its Deployment's ReplicaSet
//! would make from `deploy/kubernetes/orchestrator.yaml`'s template (the
//! cluster runs no controllers). The values a real install sets in an
//! overlay are set here: the namespace, the images, the Secret, and this
//! cluster's own ways (the API server on the host, as no kube-proxy routes
//! the `kubernetes` Service; the gateway at a Pod's IP or a balancer on the
//! host, as none routes the gateway Service). With their in-cluster service
//! account they start session Pods, which clone through the gateway and
//! run turns of the real Claude Code.

use super::{gone, var, READY_TIMEOUT};
use crate::{await_ready, run_turn};
use anyhow::{ensure, Context};
use cc_testkit::harness::output_text;
use cc_testkit::tcp_relay::Balancer;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ADMIN: &str = "kube-orchestrator-admin-0123456789";
/// Longest the surviving replica may take to serve the dead one's session.
const FAILOVER_LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (scripts/kubernetes.sh)"]
async fn the_orchestrator_runs_as_a_pod_of_its_deployment() -> anyhow::Result<()> {
    let mut w = World::new().await?;
    let result = async {
        // One replica on SQLite: no database URL in the Secret.
        w.install(None).await?;
        let ip = w.start_pod("a", "http://$(POD_IP):8081").await?;
        let api = w.client(&ip)?;
        let created = api.create(&w.request()).await?;
        let id = created.session_id.clone();
        let sid = cc_core::SessionId::parse(&id).context("a session ID")?;
        let mut ws = api.stream(&id, 0).await?;
        await_ready(&mut ws, READY_TIMEOUT).await?;
        ensure!(
            cc_core::Runtime::list(&w.kube).await?.contains(&sid),
            "the session is a Pod the orchestrator Pod made"
        );
        let turn = run_turn(&mut ws, "bash: cat README.md; echo uid=$(id -u)").await?;
        let text = output_text(&turn);
        ensure!(
            text.contains("# Served by a Pod") && text.contains("uid=1000"),
            "{text}"
        );
        api.delete(&id).await?;
        gone(&w.kube, &sid).await
    }
    .await;
    let cleaned = w.finish().await;
    result.and(cleaned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (scripts/kubernetes.sh)"]
async fn two_orchestrator_pods_share_postgresql_and_one_takes_over_from_the_other(
) -> anyhow::Result<()> {
    let Some(schema) = crate::database::Schema::create().await else {
        return Ok(());
    };
    let mut w = World::new().await?;
    let result = replicas(&mut w, &schema.url).await;
    let cleaned = w.finish().await;
    result.and(cleaned)
}

async fn replicas(w: &mut World, database_url: &str) -> anyhow::Result<()> {
    // The test database listens on loopback: the Pods reach it through a
    // relay on the bridge address.
    let local = database_url
        .split_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .context("a postgres://user@host:port/db URL")?
        .to_owned();
    let db_relay = Balancer::start(&format!("{}:0", w.host_ip), vec![local.clone()]).await?;
    let pod_url = database_url.replacen(&local, &db_relay.addr().to_string(), 1);
    w.install(Some(&pod_url)).await?;

    // Sessions reach both replicas' gateways at one address, as they would
    // at the gateway Service: a balancer on the host, started once the Pods
    // have their IPs (its port is chosen now, for their configuration).
    let gateway_port = cc_testkit::ports::fixed_port();
    let gateway_url = format!("http://{}:{gateway_port}", w.host_ip);
    let ip_a = w.start_pod("a", &gateway_url).await?;
    let ip_b = w.start_pod("b", &gateway_url).await?;
    let _gateway = Balancer::start(
        &format!("{}:{gateway_port}", w.host_ip),
        vec![format!("{ip_a}:8081"), format!("{ip_b}:8081")],
    )
    .await?;
    let (api_a, api_b) = (w.client(&ip_a)?, w.client(&ip_b)?);

    // Created on A; a turn through B (forwarded to A, streamed from the
    // database).
    let created = api_a.create(&w.request()).await?;
    let id = created.session_id.clone();
    let sid = cc_core::SessionId::parse(&id).context("a session ID")?;
    let mut ws = api_a.stream(&id, 0).await?;
    await_ready(&mut ws, READY_TIMEOUT).await?;
    drop(ws);
    let mut ws = api_b.stream_from_now(&id).await?;
    let turn = run_turn(&mut ws, "bash: echo through-b > b.txt; ls").await?;
    let text = output_text(&turn);
    ensure!(text.contains("b.txt"), "a turn through B: {text}");
    drop(ws);

    // A's Pod goes (no grace): B takes the session over when A's lease
    // runs out, and serves it.
    w.delete_pod("a").await?;
    let killed = Instant::now();
    while api_b.diff(&id).await.is_err() {
        ensure!(
            killed.elapsed() < FAILOVER_LIMIT,
            "B did not serve session {id} within {FAILOVER_LIMIT:?} of A's end"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut ws = api_b.stream_from_now(&id).await?;
    let turn = run_turn(&mut ws, "bash: ls").await?;
    let text = output_text(&turn);
    ensure!(
        text.contains("b.txt") && text.contains("README.md"),
        "the checkout lives on under B: {text}"
    );
    drop(ws);
    api_b.delete(&id).await?;
    gone(&w.kube, &sid).await
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A manifest file's documents as JSON (Debian's python3-yaml reads it;
/// `scripts/kubernetes.sh` installs it).
fn manifests(file: &str) -> anyhow::Result<Vec<Value>> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(repo_root().join("deploy/kubernetes").join(file))
        .output()?;
    ensure!(
        out.status.success(),
        "reading {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `deploy/Dockerfile` on the worker image's Debian base (no registry),
/// with this build's binary; removed when dropped.
struct OrchestratorImage(String);

impl OrchestratorImage {
    async fn build(tag: String) -> anyhow::Result<Self> {
        let ctx = tempfile::tempdir()?;
        std::fs::create_dir(ctx.path().join("bin"))?;
        std::fs::copy(crate::BIN, ctx.path().join("bin/claudecluster"))?;
        std::fs::copy(
            repo_root().join("deploy/Dockerfile"),
            ctx.path().join("Dockerfile"),
        )?;
        let base = cc_runtime_docker::image::local_base_image_name();
        let out = tokio::process::Command::new("docker")
            .args(["build", "-q", "-t", &tag, "--build-arg"])
            .arg(format!("BASE_IMAGE={base}"))
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "docker build of deploy/Dockerfile: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self(tag))
    }
}

impl Drop for OrchestratorImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

/// Sets (or adds, last) the container's variable `name`.
fn set_env(env: &mut Vec<Value>, name: &str, value: &str) {
    env.retain(|e| e["name"] != name);
    env.push(json!({"name": name, "value": value}));
}

/// What a test's orchestrator Pods use, on this host and in the cluster;
/// [`World::finish`] removes what it made.
struct World {
    ns: String,
    node: String,
    worker: String,
    host_ip: String,
    api_server: String,
    run: String,
    prefix: String,
    image: OrchestratorImage,
    _model: cc_model_double::ModelDouble,
    model_relay: Balancer,
    _git_root: tempfile::TempDir,
    git: cc_testkit::git_server::GitServer,
    repo: String,
    api_key: String,
    /// The runtime under the test's prefix: the session Pods.
    kube: cc_runtime_kubernetes::KubernetesRuntime,
    /// Objects made, by kind and name, removed in reverse.
    made: Vec<(&'static str, String)>,
    /// Whether the Secret holds a database URL (else: SQLite).
    database: bool,
}

impl World {
    async fn new() -> anyhow::Result<Self> {
        let host_ip = var("CLAUDECLUSTER_TEST_KUBE_HOST_IP")?;
        let run = cc_core::SessionId::generate().as_str()[..6].to_owned();
        let prefix = format!("cco{run}-");
        let image =
            OrchestratorImage::build(format!("claudecluster-orchestrator:test-{run}")).await?;
        // What the Pods reach on this host: the model double (through a
        // relay on the bridge address) and a git server.
        let api_key = format!("sk-ant-pod-{}", cc_core::Token::generate().expose());
        let model = cc_model_double::spawn(cc_model_double::ModelDoubleConfig {
            api_key: Some(api_key.clone()),
            latency_ms: 0,
        })
        .await?;
        let model_relay =
            Balancer::start(&format!("{host_ip}:0"), vec![model.addr().to_string()]).await?;
        let git_root = tempfile::tempdir()?;
        let git = cc_testkit::git_server::GitServer::start_at(
            git_root.path().to_path_buf(),
            format!("{host_ip}:0").parse()?,
        )
        .await?;
        let repo = git.create_repo("pod-orch", &[("README.md", "# Served by a Pod\n")])?;
        let ns = var("CLAUDECLUSTER_TEST_KUBE_NAMESPACE")?;
        let mut settings = cc_runtime_kubernetes::KubeSettings::new(ns.clone(), "http://unused:1");
        settings.prefix = prefix.clone();
        let kubeconfig = var("CLAUDECLUSTER_TEST_KUBECONFIG")?;
        let kube =
            cc_runtime_kubernetes::KubernetesRuntime::connect(settings, Some(kubeconfig.as_ref()))
                .await?;
        Ok(Self {
            ns,
            node: var("CLAUDECLUSTER_TEST_KUBE_NODE")?,
            worker: var("CLAUDECLUSTER_TEST_IMAGE")?,
            host_ip,
            api_server: var("CLAUDECLUSTER_TEST_KUBE_API")?,
            run,
            prefix,
            image,
            _model: model,
            model_relay,
            _git_root: git_root,
            git,
            repo,
            api_key,
            kube,
            made: Vec::new(),
            database: false,
        })
    }

    fn client(&self, pod_ip: &str) -> anyhow::Result<cc_client::Client> {
        Ok(cc_client::Client::with_token(
            format!("http://{pod_ip}:8080"),
            Some(ADMIN.into()),
        )?)
    }

    fn request(&self) -> cc_wire::api::CreateSessionRequest {
        cc_testkit::harness::session_request(&self.repo, None, &self.api_key)
    }

    fn secret_name(&self) -> String {
        format!("claudecluster-{}", self.run)
    }

    /// RBAC as shipped, in the test namespace (the ServiceAccount and its
    /// token come from the script, as a controller-manager would make the
    /// token; cluster-wide names get the run's suffix), and the Secret the
    /// Deployment reads (without a database URL: SQLite).
    async fn install(&mut self, database_url: Option<&str>) -> anyhow::Result<()> {
        let client = self.kube.client().clone();
        let (ns, run) = (self.ns.clone(), self.run.clone());
        let pp = PostParams::default();
        for mut doc in manifests("rbac.yaml")? {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if kind == "ServiceAccount" {
                continue;
            }
            if let Some(subjects) = doc["subjects"].as_array_mut() {
                for s in subjects {
                    s["namespace"] = json!(ns);
                }
            }
            let name = format!(
                "{}-{run}",
                doc["metadata"]["name"].as_str().unwrap_or_default()
            );
            doc["metadata"]["name"] = json!(name);
            if let Some(role) = doc["roleRef"]["name"].as_str() {
                doc["roleRef"]["name"] = json!(format!("{role}-{run}"));
            }
            let kind = match kind.as_str() {
                "Role" => {
                    doc["metadata"]["namespace"] = json!(ns);
                    let api: Api<Role> = Api::namespaced(client.clone(), &ns);
                    api.create(&pp, &serde_json::from_value(doc)?).await?;
                    "Role"
                }
                "RoleBinding" => {
                    doc["metadata"]["namespace"] = json!(ns);
                    let api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
                    api.create(&pp, &serde_json::from_value(doc)?).await?;
                    "RoleBinding"
                }
                "ClusterRole" => {
                    let api: Api<ClusterRole> = Api::all(client.clone());
                    api.create(&pp, &serde_json::from_value(doc)?).await?;
                    "ClusterRole"
                }
                "ClusterRoleBinding" => {
                    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
                    api.create(&pp, &serde_json::from_value(doc)?).await?;
                    "ClusterRoleBinding"
                }
                other => anyhow::bail!("rbac.yaml has a {other} this test does not know"),
            };
            self.made.push((kind, name));
        }
        let mut data = json!({
            "admin-token": ADMIN,
            "secret-key": cc_core::Token::generate().expose(),
        });
        if let Some(url) = database_url {
            data["database-url"] = json!(url);
        }
        self.database = database_url.is_some();
        let secrets: Api<Secret> = Api::namespaced(client, &ns);
        secrets
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "metadata": {"name": self.secret_name()},
                    "stringData": data,
                }))?,
            )
            .await?;
        self.made.push(("Secret", self.secret_name()));
        Ok(())
    }

    fn pod_name(&self, suffix: &str) -> String {
        format!("claudecluster-{}-{suffix}", self.run)
    }

    /// The Pod the Deployment's ReplicaSet would make, with sessions
    /// reaching its gateway at `gateway_url`; its IP once it is Ready (its
    /// readiness probe, `/readyz`, answered).
    async fn start_pod(&mut self, suffix: &str, gateway_url: &str) -> anyhow::Result<String> {
        let deployment = manifests("orchestrator.yaml")?
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .context("a Deployment in orchestrator.yaml")?;
        let mut template = deployment["spec"]["template"].clone();
        let name = self.pod_name(suffix);
        template["metadata"]["name"] = json!(name);
        template["metadata"]["namespace"] = json!(self.ns);
        let spec = &mut template["spec"];
        spec["nodeName"] = json!(self.node);
        for v in spec["volumes"].as_array_mut().context("volumes")? {
            if v.get("secret").is_some() {
                v["secret"]["secretName"] = json!(self.secret_name());
            }
        }
        let c = &mut spec["containers"][0];
        c["image"] = json!(self.image.0);
        c["imagePullPolicy"] = json!("Never");
        let env = c["env"].as_array_mut().context("env")?;
        let reads_database = env.iter_mut().any(|e| {
            let found = e["name"] == "CLAUDECLUSTER_DATABASE_URL";
            if found {
                e["valueFrom"]["secretKeyRef"]["name"] = json!(self.secret_name());
            }
            found
        });
        ensure!(
            reads_database,
            "the Deployment reads its database URL from the Secret"
        );
        if !self.database {
            // One replica on SQLite: the variable goes, as the README says.
            env.retain(|e| e["name"] != "CLAUDECLUSTER_DATABASE_URL");
        }
        let (api_host, api_port) = self
            .api_server
            .rsplit_once(':')
            .context("CLAUDECLUSTER_TEST_KUBE_API is host:port")?;
        set_env(env, "CLAUDECLUSTER_KUBE_NAMESPACE", &self.ns);
        set_env(env, "CLAUDECLUSTER_IMAGE", &self.worker);
        // After POD_IP, which it may refer to.
        set_env(env, "CLAUDECLUSTER_KUBE_GATEWAY_URL", gateway_url);
        set_env(env, "KUBERNETES_SERVICE_HOST", api_host);
        set_env(env, "KUBERNETES_SERVICE_PORT", api_port);
        set_env(env, "CLAUDECLUSTER_KUBE_NODE", &self.node);
        set_env(env, "CLAUDECLUSTER_KUBE_IMAGE_PULL_POLICY", "Never");
        set_env(env, "CLAUDECLUSTER_RESOURCE_PREFIX", &self.prefix);
        set_env(
            env,
            "CLAUDECLUSTER_ANTHROPIC_BASE_URL",
            &format!("http://{}", self.model_relay.addr()),
        );
        set_env(
            env,
            "CLAUDECLUSTER_ALLOW_REPO_HOSTS",
            &self.git.addr().to_string(),
        );
        set_env(env, "RUST_LOG", "warn");
        let pods: Api<Pod> = Api::namespaced(self.kube.client().clone(), &self.ns);
        pods.create(&PostParams::default(), &serde_json::from_value(template)?)
            .await?;
        self.made.push(("Pod", name.clone()));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let status = pods.get(&name).await?.status.unwrap_or_default();
            let ready = status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return status.pod_ip.context("a Ready Pod has an IP");
            }
            ensure!(
                status.phase.as_deref() != Some("Failed") && Instant::now() < deadline,
                "the orchestrator Pod {name} is not Ready: {:?} {:?}",
                status.phase,
                status.container_statuses
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The replica's Pod goes at once (no grace period: a node lost).
    async fn delete_pod(&mut self, suffix: &str) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.kube.client().clone(), &self.ns);
        pods.delete(
            &self.pod_name(suffix),
            &DeleteParams::default().grace_period(0),
        )
        .await?;
        Ok(())
    }

    /// Removes what the test made, then any session Pod left behind.
    async fn finish(mut self) -> anyhow::Result<()> {
        let c = self.kube.client().clone();
        let ns = self.ns.clone();
        let dp = DeleteParams::default().grace_period(0);
        let mut result = Ok(());
        while let Some((kind, name)) = self.made.pop() {
            let deleted = match kind {
                "Pod" => Api::<Pod>::namespaced(c.clone(), &ns)
                    .delete(&name, &dp)
                    .await
                    .map(drop),
                "Secret" => Api::<Secret>::namespaced(c.clone(), &ns)
                    .delete(&name, &dp)
                    .await
                    .map(drop),
                "Role" => Api::<Role>::namespaced(c.clone(), &ns)
                    .delete(&name, &dp)
                    .await
                    .map(drop),
                "RoleBinding" => Api::<RoleBinding>::namespaced(c.clone(), &ns)
                    .delete(&name, &dp)
                    .await
                    .map(drop),
                "ClusterRole" => Api::<ClusterRole>::all(c.clone())
                    .delete(&name, &dp)
                    .await
                    .map(drop),
                "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(c.clone())
                    .delete(&name, &dp)
                    .await
                    .map(drop),
                _ => Ok(()),
            };
            match deleted {
                Ok(()) => {}
                // Gone already (a replica the test ended).
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => result = Err(anyhow::anyhow!("deleting {kind} {name}: {e}")),
            }
        }
        for id in cc_core::Runtime::list(&self.kube).await? {
            cc_core::Runtime::remove(&self.kube, &id).await?;
        }
        result
    }
}
