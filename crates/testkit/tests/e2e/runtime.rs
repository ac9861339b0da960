//! The Docker runtime passes the runtime seam's conformance suite, the same
//! one the in-memory fake passes (`tests/it/runtime.rs`).

use cc_testkit::docker::PrefixGuard;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_runtime_passes_the_runtime_conformance_suite() -> anyhow::Result<()> {
    let guard = PrefixGuard::new();
    let image = std::env::var("CLAUDECLUSTER_TEST_IMAGE")
        .unwrap_or_else(|_| cc_testkit::harness::DEFAULT_TEST_IMAGE.into());
    let rt = cc_runtime_docker::DockerRuntime::connect(guard.prefix.clone())
        .await?
        .with_gateway_port(8081);
    let driver = cc_testkit::conformance::DockerDriver::for_docker_runtime(&rt);
    cc_testkit::conformance::run(&rt, &driver, &image).await?;
    let left = guard.all_leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}
