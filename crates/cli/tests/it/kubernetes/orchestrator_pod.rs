//! The orchestrator itself as a Pod of the test cluster, from what
//! `deploy/` ships: its image built from `deploy/Dockerfile`, its RBAC from
//! `deploy/kubernetes/rbac.yaml`, and the Pod its Deployment's ReplicaSet
//! would make from `deploy/kubernetes/orchestrator.yaml`'s template (the
//! cluster runs no controllers). One replica on SQLite; the values a real
//! install sets in an overlay are set here: the namespace, the images, the
//! Secret without a database URL, and this cluster's own ways (the API
//! server on the host, as no kube-proxy routes the `kubernetes` Service;
//! the gateway at the Pod's IP, as none routes the gateway Service). With
//! its in-cluster service account it starts a session Pod, which clones
//! through its gateway and runs a turn of the real Claude Code.

use super::{gone, var, READY_TIMEOUT};
use crate::{await_ready, run_turn};
use anyhow::{ensure, Context};
use cc_testkit::harness::output_text;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ADMIN: &str = "kube-orchestrator-admin-0123456789";

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

/// Sets (or adds) the container's variable `name`.
fn set_env(env: &mut Vec<Value>, name: &str, value: &str) {
    env.retain(|e| e["name"] != name);
    env.push(json!({"name": name, "value": value}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (scripts/kubernetes.sh)"]
async fn the_orchestrator_runs_as_a_pod_of_its_deployment() -> anyhow::Result<()> {
    let worker = var("CLAUDECLUSTER_TEST_IMAGE")?;
    let kubeconfig = var("CLAUDECLUSTER_TEST_KUBECONFIG")?;
    let ns = var("CLAUDECLUSTER_TEST_KUBE_NAMESPACE")?;
    let node = var("CLAUDECLUSTER_TEST_KUBE_NODE")?;
    let host_ip = var("CLAUDECLUSTER_TEST_KUBE_HOST_IP")?;
    let api_server = var("CLAUDECLUSTER_TEST_KUBE_API")?;
    let (api_host, api_port) = api_server
        .rsplit_once(':')
        .context("CLAUDECLUSTER_TEST_KUBE_API is host:port")?;
    let run = cc_core::SessionId::generate().as_str()[..6].to_owned();
    let prefix = format!("cco{run}-");

    let image = OrchestratorImage::build(format!("claudecluster-orchestrator:test-{run}")).await?;

    // What the Pod reaches on this host: the model double (through a relay
    // on the bridge address) and a git server.
    let api_key = format!("sk-ant-pod-{}", cc_core::Token::generate().expose());
    let model = cc_model_double::spawn(cc_model_double::ModelDoubleConfig {
        api_key: Some(api_key.clone()),
        latency_ms: 0,
    })
    .await?;
    let model_relay = cc_testkit::tcp_relay::Balancer::start(
        &format!("{host_ip}:0"),
        vec![model.addr().to_string()],
    )
    .await?;
    let git_root = tempfile::tempdir()?;
    let git = cc_testkit::git_server::GitServer::start_at(
        git_root.path().to_path_buf(),
        format!("{host_ip}:0").parse()?,
    )
    .await?;
    let repo = git.create_repo("pod-orch", &[("README.md", "# Served by a Pod\n")])?;

    let settings = cc_runtime_kubernetes::KubeSettings::new(ns.clone(), "http://unused:1");
    let kube = {
        let mut s = settings.clone();
        s.prefix = prefix.clone();
        cc_runtime_kubernetes::KubernetesRuntime::connect(s, Some(kubeconfig.as_ref())).await?
    };
    let mut cleanup = Cleanup {
        client: kube.client().clone(),
        ns: ns.clone(),
        done: Vec::new(),
    };
    let setup = Setup {
        ns,
        node,
        worker,
        api_host: api_host.to_owned(),
        api_port: api_port.to_owned(),
        run,
        prefix,
        image: image.0.clone(),
        model_url: format!("http://{}", model_relay.addr()),
        git_host: git.addr().to_string(),
    };
    let result = session_through_a_pod(&setup, &kube, &mut cleanup, &repo, &api_key).await;
    // Whatever happened, nothing of the run is left: the orchestrator's
    // objects, then any session Pod it left.
    let mut cleaned = cleanup.run().await;
    for id in cc_core::Runtime::list(&kube).await? {
        cleaned = cleaned.and(Ok(cc_core::Runtime::remove(&kube, &id).await?));
    }
    result.and(cleaned)
}

/// What the orchestrator Pod is given.
struct Setup {
    ns: String,
    node: String,
    worker: String,
    api_host: String,
    api_port: String,
    run: String,
    prefix: String,
    image: String,
    model_url: String,
    git_host: String,
}

async fn session_through_a_pod(
    s: &Setup,
    kube: &cc_runtime_kubernetes::KubernetesRuntime,
    cleanup: &mut Cleanup,
    repo: &str,
    api_key: &str,
) -> anyhow::Result<()> {
    let (ns, run) = (&s.ns, &s.run);
    let client = kube.client().clone();

    // RBAC as shipped, in the test namespace (the ServiceAccount and its
    // token come from the script, as a controller-manager would make the
    // token); cluster-wide names get the run's suffix.
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
        let pp = PostParams::default();
        match kind.as_str() {
            "Role" => {
                doc["metadata"]["namespace"] = json!(ns);
                let api: Api<Role> = Api::namespaced(client.clone(), ns);
                api.create(&pp, &serde_json::from_value(doc)?).await?;
            }
            "RoleBinding" => {
                doc["metadata"]["namespace"] = json!(ns);
                let api: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
                api.create(&pp, &serde_json::from_value(doc)?).await?;
            }
            "ClusterRole" => {
                let api: Api<ClusterRole> = Api::all(client.clone());
                api.create(&pp, &serde_json::from_value(doc)?).await?;
            }
            "ClusterRoleBinding" => {
                let api: Api<ClusterRoleBinding> = Api::all(client.clone());
                api.create(&pp, &serde_json::from_value(doc)?).await?;
            }
            other => anyhow::bail!("rbac.yaml has a {other} this test does not know"),
        }
        cleanup.done.push((kind, name));
    }

    // The Secret the Deployment reads, without a database URL: SQLite.
    let secret_name = format!("claudecluster-{run}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": secret_name},
                "stringData": {
                    "admin-token": ADMIN,
                    "secret-key": cc_core::Token::generate().expose(),
                },
            }))?,
        )
        .await?;
    cleanup.done.push(("Secret".into(), secret_name.clone()));

    // The Pod the Deployment's ReplicaSet would make.
    let deployment = manifests("orchestrator.yaml")?
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .context("a Deployment in orchestrator.yaml")?;
    let mut template = deployment["spec"]["template"].clone();
    let pod_name = format!("claudecluster-{run}");
    template["metadata"]["name"] = json!(pod_name);
    template["metadata"]["namespace"] = json!(ns);
    let spec = &mut template["spec"];
    spec["nodeName"] = json!(s.node);
    for v in spec["volumes"].as_array_mut().context("volumes")? {
        if v.get("secret").is_some() {
            v["secret"]["secretName"] = json!(secret_name);
        }
    }
    let c = &mut spec["containers"][0];
    c["image"] = json!(s.image);
    c["imagePullPolicy"] = json!("Never");
    let env = c["env"].as_array_mut().context("env")?;
    env.retain(|e| e["name"] != "CLAUDECLUSTER_DATABASE_URL");
    set_env(env, "CLAUDECLUSTER_KUBE_NAMESPACE", ns);
    set_env(env, "CLAUDECLUSTER_IMAGE", &s.worker);
    // After POD_IP, which it refers to.
    set_env(
        env,
        "CLAUDECLUSTER_KUBE_GATEWAY_URL",
        "http://$(POD_IP):8081",
    );
    set_env(env, "KUBERNETES_SERVICE_HOST", &s.api_host);
    set_env(env, "KUBERNETES_SERVICE_PORT", &s.api_port);
    set_env(env, "CLAUDECLUSTER_KUBE_NODE", &s.node);
    set_env(env, "CLAUDECLUSTER_KUBE_IMAGE_PULL_POLICY", "Never");
    set_env(env, "CLAUDECLUSTER_RESOURCE_PREFIX", &s.prefix);
    set_env(env, "CLAUDECLUSTER_ANTHROPIC_BASE_URL", &s.model_url);
    set_env(env, "CLAUDECLUSTER_ALLOW_REPO_HOSTS", &s.git_host);
    set_env(env, "RUST_LOG", "warn");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &serde_json::from_value(template)?)
        .await?;
    cleanup.done.push(("Pod".into(), pod_name.clone()));

    // Ready: its readiness probe (`/readyz`) answered.
    let deadline = Instant::now() + READY_TIMEOUT;
    let pod_ip = loop {
        let pod = pods.get(&pod_name).await?;
        let status = pod.status.unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            break status.pod_ip.context("a Ready Pod has an IP")?;
        }
        ensure!(
            status.phase.as_deref() != Some("Failed") && Instant::now() < deadline,
            "the orchestrator Pod is not Ready: {:?} {:?}",
            status.phase,
            status.container_statuses
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // A whole session through it.
    let api = cc_client::Client::with_token(format!("http://{pod_ip}:8080"), Some(ADMIN.into()))?;
    let request = cc_testkit::harness::session_request(repo, None, api_key);
    let created = api.create(&request).await?;
    let id = created.session_id.clone();
    let sid = cc_core::SessionId::parse(&id).context("a session ID")?;
    let mut ws = api.stream(&id, 0).await?;
    await_ready(&mut ws, READY_TIMEOUT).await?;
    ensure!(
        cc_core::Runtime::list(kube).await?.contains(&sid),
        "the session is a Pod the orchestrator Pod made"
    );
    let turn = run_turn(&mut ws, "bash: cat README.md; echo uid=$(id -u)").await?;
    let text = output_text(&turn);
    ensure!(
        text.contains("# Served by a Pod") && text.contains("uid=1000"),
        "{text}"
    );
    api.delete(&id).await?;
    gone(kube, &sid).await
}

/// The objects the test made, deleted at the end, whatever happened.
struct Cleanup {
    client: kube::Client,
    ns: String,
    done: Vec<(String, String)>,
}

impl Cleanup {
    async fn run(&mut self) -> anyhow::Result<()> {
        let dp = DeleteParams::default().grace_period(0);
        while let Some((kind, name)) = self.done.pop() {
            let c = self.client.clone();
            let ns = &self.ns;
            match kind.as_str() {
                "Pod" => drop(Api::<Pod>::namespaced(c, ns).delete(&name, &dp).await?),
                "Secret" => drop(Api::<Secret>::namespaced(c, ns).delete(&name, &dp).await?),
                "Role" => drop(Api::<Role>::namespaced(c, ns).delete(&name, &dp).await?),
                "RoleBinding" => drop(
                    Api::<RoleBinding>::namespaced(c, ns)
                        .delete(&name, &dp)
                        .await?,
                ),
                "ClusterRole" => drop(Api::<ClusterRole>::all(c).delete(&name, &dp).await?),
                "ClusterRoleBinding" => {
                    drop(Api::<ClusterRoleBinding>::all(c).delete(&name, &dp).await?)
                }
                _ => {}
            }
        }
        Ok(())
    }
}
