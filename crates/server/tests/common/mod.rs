//! What the server's Docker-free test files share.

pub use cc_testkit::fake_runtime::FakeRuntime;

/// Starts containers nowhere: a created session stays `starting` while its
/// actor waits for a sessiond that never answers (nothing listens on the
/// discard port).
pub fn runtime() -> FakeRuntime {
    FakeRuntime::new("http://127.0.0.1:9", "http://127.0.0.1:9")
}
