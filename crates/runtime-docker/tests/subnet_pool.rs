//! Session networks from our own subnet pool, on the real Docker Engine:
//! more at once than Docker's default address pools hold (about 30), each
//! in a distinct subnet inside the pool. Needs Docker; touches only
//! networks labelled with this run's unique prefix.

use bollard::query_parameters::InspectNetworkOptions;
use bollard::Docker;
use cc_core::{Runtime, SessionId};
use cc_runtime_docker::{DockerRuntime, Ipv4Cidr, SubnetPool, LABEL_PREFIX};
use std::collections::HashSet;
use std::process::Command;

/// Sessions created at once: beyond Docker's ~30 default networks.
const SESSIONS: usize = 40;

/// A unique prefix; on drop removes the networks labelled with it (only
/// ours), so a failing run leaves nothing behind.
struct NetworkGuard {
    prefix: String,
}

impl NetworkGuard {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self {
            prefix: format!("cct-{:08x}-", nanos ^ std::process::id()),
        }
    }

    fn leftovers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["network", "ls", "--format", "{{.Name}}", "--filter"])
            .arg(format!("label={LABEL_PREFIX}={}", self.prefix))
            .output()
            .expect("running docker network ls");
        assert!(
            out.status.success(),
            "docker network ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&self.prefix))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let left = self.leftovers();
        if !left.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&left)
                .output();
        }
    }
}

/// A `10.x.0.0/16` that no network on the engine uses yet, `x` drawn at
/// random: the engine is shared with other runs of this suite, and a fixed
/// range would collide with theirs (their subnets taken, this pool "full").
fn unused_range() -> Ipv4Cidr {
    let out = Command::new("sh")
        .args([
            "-c",
            "docker network ls -q | xargs -r docker network inspect \
             --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}'",
        ])
        .output()
        .expect("listing the engine's subnets");
    assert!(
        out.status.success(),
        "listing the engine's subnets: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used: Vec<Ipv4Cidr> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    // 10.214–10.253: test-only, apart from the serve/bench examples (10.213/16).
    for i in 0..40 {
        let x = 214 + (seed as usize + i) % 40;
        let range: Ipv4Cidr = format!("10.{x}.0.0/16").parse().expect("a /16");
        if !used
            .iter()
            .any(|u| range.contains(u.addr()) || u.contains(range.addr()))
        {
            return range;
        }
    }
    panic!("every test range 10.214–10.253 is in use on this engine: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_session_networks_get_distinct_subnets_from_the_pool(
) -> Result<(), Box<dyn std::error::Error>> {
    let guard = NetworkGuard::new();
    let cidr = unused_range();
    let pool = SubnetPool::new(cidr, 28)?;
    let runtime = DockerRuntime::connect(guard.prefix.clone())
        .await?
        .with_subnet_pool(cidr, 28)?;
    let docker = Docker::connect_with_local_defaults()?;

    let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    let created =
        futures_util::future::join_all(ids.iter().map(|id| runtime.create_network(id))).await;
    let failed: Vec<String> = created
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert!(failed.is_empty(), "network creation failed: {failed:?}");
    // Idempotent: again is fine and keeps the subnet.
    runtime.create_network(&ids[0]).await?;

    let mut subnets = HashSet::new();
    for id in &ids {
        let name = format!("{}{id}", guard.prefix);
        let net = docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await?;
        let configs = net.ipam.and_then(|i| i.config).unwrap_or_default();
        assert_eq!(configs.len(), 1, "{name}: {configs:?}");
        let subnet: Ipv4Cidr = configs[0].subnet.as_deref().unwrap_or_default().parse()?;
        assert_eq!(subnet.prefix(), 28, "{name}");
        assert!(cidr.contains(subnet.addr()), "{subnet} outside {cidr}");
        assert_eq!(
            configs[0].gateway.as_deref(),
            Some(subnet.first_host().to_string().as_str())
        );
        assert!(subnets.insert(subnet), "{subnet} handed out twice");
    }
    assert_eq!(subnets.len(), SESSIONS);
    // The first session got its hashed subnet or one just after it.
    assert!(pool
        .candidates(ids[0].as_str())
        .any(|s| subnets.contains(&s)));

    let removed = futures_util::future::join_all(ids.iter().map(|id| runtime.remove(id))).await;
    for r in removed {
        r?;
    }
    assert_eq!(guard.leftovers(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn a_taken_subnet_moves_the_session_to_the_next_one() -> Result<(), Box<dyn std::error::Error>>
{
    let guard = NetworkGuard::new();
    // A pool of two /28s: the first session takes one, the second must get
    // the other whatever its hash, and a third finds the pool exhausted.
    let cidr: Ipv4Cidr = format!("{}/27", unused_range().addr())
        .replacen(".0.0/27", ".255.224/27", 1)
        .parse()?;
    let pool = SubnetPool::new(cidr, 28)?;
    let runtime = DockerRuntime::connect(guard.prefix.clone())
        .await?
        .with_subnet_pool(cidr, 28)?;
    let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
    runtime.create_network(&ids[0]).await?;
    runtime.create_network(&ids[1]).await?;
    assert_eq!(guard.leftovers().len(), 2);
    let err = runtime.create_network(&ids[2]).await.unwrap_err();
    assert!(
        err.to_string().contains("no free /28 subnet"),
        "unexpected error: {err}"
    );
    assert_eq!(pool.len(), 2);
    for id in &ids {
        runtime.remove(id).await?;
    }
    assert_eq!(guard.leftovers(), Vec::<String>::new());
    Ok(())
}
