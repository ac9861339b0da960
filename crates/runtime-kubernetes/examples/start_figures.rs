//! Start-up figures on a real cluster: the runtime's `create` (token
//! Secret, NetworkPolicy and the hardened Pod, until it runs) beside its
//! baseline, a bare Pod of the same image as `kubectl run` makes it, until
//! it runs. Prints the p50 and max of each; fails only on real errors.
//!
//! `scripts/test.sh` runs it on the test cluster:
//! `cargo run -p cc-runtime-kubernetes --example start_figures -- ROUNDS`
//! with the `CLAUDECLUSTER_TEST_KUBE*` variables `scripts/kubernetes.sh`
//! exports and `CLAUDECLUSTER_TEST_IMAGE`.

use cc_core::{Runtime, SessionId};
use cc_runtime_kubernetes::{KubeSettings, KubernetesRuntime};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use std::time::{Duration, Instant};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (scripts/kubernetes.sh)"))
}

fn p50_max(mut v: Vec<Duration>) -> (u128, u128) {
    v.sort();
    (v[v.len() / 2].as_millis(), v[v.len() - 1].as_millis())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(5), |a| a.parse())?;
    let image = var("CLAUDECLUSTER_TEST_IMAGE");
    let namespace = var("CLAUDECLUSTER_TEST_KUBE_NAMESPACE");
    let node = var("CLAUDECLUSTER_TEST_KUBE_NODE");
    let kubeconfig = var("CLAUDECLUSTER_TEST_KUBECONFIG");
    let mut settings = KubeSettings::new(
        namespace.clone(),
        format!("http://{}:8081", var("CLAUDECLUSTER_TEST_KUBE_HOST_IP")),
    );
    settings.prefix = format!("ccf{}-", &SessionId::generate().as_str()[..6]);
    settings.node_name = Some(node.clone());
    settings.image_pull_policy = "Never".into();
    let rt = KubernetesRuntime::connect(settings, Some(kubeconfig.as_ref())).await?;
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(Client::try_from(config)?, &namespace);

    let (mut session, mut bare) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // The baseline: what `kubectl run NAME --image IMAGE` creates.
        let name = format!("ccf-bare-{round}-{}", &SessionId::generate().as_str()[..6]);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"run": name}},
            "spec": {"nodeName": node, "containers": [{
                "name": name, "image": image, "imagePullPolicy": "Never",
                "env": [{"name": "SESSIOND_TOKEN", "value": "bench"}]}]}
        }))?;
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod).await?;
        loop {
            let p = pods.get(&name).await?;
            let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
            anyhow::ensure!(phase != "Failed", "the bare Pod failed");
            if phase == "Running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bare.push(t.elapsed());
        pods.delete(&name, &DeleteParams::default().grace_period(0))
            .await?;

        let spec = cc_testkit::conformance::spec(&image);
        let t = Instant::now();
        rt.create_running(&spec).await?;
        session.push(t.elapsed());
        rt.remove(&spec.id).await?;
    }
    let (sp50, smax) = p50_max(session);
    let (bp50, bmax) = p50_max(bare);
    println!("kubernetes start, {rounds} rounds (ms):");
    println!("  session create -> Pod running   p50 {sp50:>6}  max {smax:>6}");
    println!("  bare Pod (kubectl run) -> Running p50 {bp50:>6}  max {bmax:>6}   (baseline)");
    println!(
        "  ratio p50 {:.2}x (the session: Secret + NetworkPolicy + hardened Pod, watched; the bare Pod polled every 50 ms)",
        sp50 as f64 / bp50.max(1) as f64
    );
    Ok(())
}
