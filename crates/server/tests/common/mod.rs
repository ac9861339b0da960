//! What the server's Docker-free test files share.

pub use cc_testkit::fake_runtime::FakeRuntime;

/// Starts containers nowhere: a created session stays `starting` while its
/// actor waits for a sessiond that never answers (nothing listens on the
/// discard port).
pub fn runtime() -> FakeRuntime {
    FakeRuntime::new("http://127.0.0.1:9", "http://127.0.0.1:9")
}

/// Serves `app` (the API router) on a free loopback port, with the client
/// addresses its access rules read; returns its base URL.
#[allow(dead_code)] // Not every test file serves the router on its own.
pub async fn serve_router(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}
