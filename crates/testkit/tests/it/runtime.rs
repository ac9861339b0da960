//! The in-memory runtime passes the runtime seam's conformance suite (the
//! Docker runtime runs the same suite in the end-to-end tests).

use cc_testkit::fake_runtime::FakeRuntime;

#[tokio::test]
async fn the_fake_runtime_passes_the_runtime_conformance_suite() -> anyhow::Result<()> {
    let rt = FakeRuntime::new("http://127.0.0.1:9", "http://127.0.0.1:8081");
    cc_testkit::conformance::run(&rt, &rt, "fake-image").await
}
