//! The Kubernetes runtime on a real cluster: the single-node one
//! `scripts/kubernetes.sh` builds and starts (kube-apiserver and kubelet
//! 1.20 from Debian's source package, on this machine's Docker Engine).
//! `#[ignore]`d in a plain `cargo test`; `scripts/test.sh` starts the
//! cluster and runs them with `--ignored`.

use cc_core::{Runtime, RuntimeError, SessionId};
use cc_runtime_kubernetes::manifest::CONTAINER;
use cc_runtime_kubernetes::{KubeSettings, KubernetesRuntime, Seccomp};
use cc_testkit::conformance::{self, DockerDriver};
use std::path::PathBuf;
use std::time::Duration;

struct Cluster {
    kubeconfig: PathBuf,
    settings: KubeSettings,
    image: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test cluster with scripts/kubernetes.sh (scripts/test.sh does)")
    })
}

/// The cluster from the environment, with a prefix of this test's own so
/// that tests sharing the cluster never see each other's Pods.
fn cluster() -> Cluster {
    let host = var("CLAUDECLUSTER_TEST_KUBE_HOST_IP");
    let mut settings = KubeSettings::new(
        var("CLAUDECLUSTER_TEST_KUBE_NAMESPACE"),
        format!("http://{host}:8081"),
    );
    settings.prefix = format!("cct{}-", &SessionId::generate().as_str()[..6]);
    settings.node_name = Some(var("CLAUDECLUSTER_TEST_KUBE_NODE"));
    // Images are built on this machine, never pulled.
    settings.image_pull_policy = "Never".into();
    settings.seccomp = Seccomp::Localhost("claudecluster.json".into());
    Cluster {
        kubeconfig: var("CLAUDECLUSTER_TEST_KUBECONFIG").into(),
        settings,
        image: var("CLAUDECLUSTER_TEST_IMAGE"),
    }
}

impl Cluster {
    async fn runtime(&self) -> KubernetesRuntime {
        KubernetesRuntime::connect(self.settings.clone(), Some(&self.kubeconfig))
            .await
            .expect("connecting to the test cluster")
    }

    fn driver(&self) -> DockerDriver {
        DockerDriver::for_kubelet(&self.settings.namespace, CONTAINER, &self.settings.prefix)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (scripts/kubernetes.sh)"]
async fn the_kubernetes_runtime_passes_the_runtime_conformance_suite() -> anyhow::Result<()> {
    let c = cluster();
    let rt = c.runtime().await;
    conformance::run(&rt, &c.driver(), &c.image).await?;
    let left = rt.list().await?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (scripts/kubernetes.sh)"]
async fn a_pod_that_cannot_start_fails_with_the_reason_and_leaves_nothing() -> anyhow::Result<()> {
    let mut c = cluster();
    c.settings.start_deadline = Duration::from_secs(60);
    let rt = c.runtime().await;
    let spec = conformance::spec("claudecluster-worker:not-built-here");
    let err = rt.create_running(&spec).await.expect_err("no such image");
    let RuntimeError::Invalid(msg) = &err else {
        panic!("a missing image is the request's fault: {err:?}");
    };
    assert!(msg.contains("ErrImageNeverPull"), "{msg}");
    assert!(msg.contains("not-built-here"), "{msg}");
    // What the core then does with a session that could not start.
    rt.remove(&spec.id).await?;
    assert!(rt.list().await?.is_empty(), "left behind");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (scripts/kubernetes.sh)"]
async fn a_missing_namespace_is_refused_at_start_with_a_fix() {
    let mut c = cluster();
    c.settings.namespace = "no-such-namespace".into();
    let err = KubernetesRuntime::connect(c.settings.clone(), Some(&c.kubeconfig))
        .await
        .err()
        .expect("the namespace does not exist");
    let msg = err.to_string();
    assert!(
        msg.contains("namespace no-such-namespace does not exist")
            && msg.contains("kubectl create namespace"),
        "{msg}"
    );
}
