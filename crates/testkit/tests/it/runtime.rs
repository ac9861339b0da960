//! The in-memory runtime passes the runtime seam's conformance suite (the
//! Docker runtime runs the same suite in the end-to-end tests).

use cc_testkit::fake_runtime::FakeRuntime;

#[tokio::test]
async fn the_fake_runtime_passes_the_runtime_conformance_suite() -> anyhow::Result<()> {
    let rt = FakeRuntime::new("http://127.0.0.1:9", "http://127.0.0.1:8081");
    cc_testkit::conformance::run(&rt, &rt, "fake-image").await
}

#[tokio::test]
async fn the_fake_runtime_passes_it_with_containers_that_wait_for_their_place() -> anyhow::Result<()>
{
    let rt = FakeRuntime::new("http://127.0.0.1:9", "http://127.0.0.1:8081");
    rt.hold_starts(true);
    // Something places each pending container a moment later, as a
    // scheduler and kubelet would.
    let placer = {
        let rt = rt.clone();
        tokio::spawn(async move {
            loop {
                for id in cc_core::Runtime::list(&rt).await.unwrap() {
                    if rt.is_pending(&id) {
                        rt.place(&id);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let r = cc_testkit::conformance::run(&rt, &rt, "fake-image").await;
    placer.abort();
    r
}
