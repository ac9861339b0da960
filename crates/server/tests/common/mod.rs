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
    spawn_router(app).await.0
}

/// [`serve_router`], with the serving task (abort it to stop serving).
pub async fn spawn_router(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    (format!("http://{addr}"), serving)
}

/// The admin token of [`Api`]'s server.
#[allow(dead_code)]
pub const ADMIN: &str = "test-admin-token-0123456789";
/// Only there so a failing test ends.
#[allow(dead_code)]
pub const STUCK: std::time::Duration = std::time::Duration::from_secs(30);

/// The API on a fake runtime and a SQLite store in a temporary directory
/// (or one the test keeps, to start another server on it), called as the
/// admin unless a test names another token. Dropping it stops serving.
#[allow(dead_code)] // Not every test file drives the whole API.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    /// The server's own store (a clone), to look behind the API.
    pub store: cc_store_sqlite::SqliteStore,
    _dir: Option<tempfile::TempDir>,
    _webhooks: Option<cc_server::webhook::Background>,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

#[allow(dead_code)]
impl Api {
    pub async fn start(runtime: FakeRuntime) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut api = Self::open(runtime, dir.path(), None).await;
        api._dir = Some(dir);
        api
    }

    /// A server on the database in `dir`; with `webhooks`, the webhook
    /// dispatcher runs under these rules, and secrets are sealed with a
    /// fixed key (the same for every server the test opens on `dir`).
    pub async fn open(
        runtime: FakeRuntime,
        dir: &std::path::Path,
        webhooks: Option<cc_server::webhook::WebhookConfig>,
    ) -> Self {
        let store = cc_store_sqlite::SqliteStore::open(dir).unwrap();
        let mut config = cc_core::ManagerConfig::new("fake-image", 1);
        config.allowed_repo_hosts = vec!["127.0.0.1:9".into()];
        // Nothing answers as sessiond: a placed session fails its boot
        // soon, with its own reason.
        config.agent_ready_timeout = std::time::Duration::from_millis(500);
        let notices = webhooks.as_ref().map(|_| {
            let (tx, rx) = cc_server::webhook::channel();
            config.notices = Some(tx);
            config.seal_key = Some(cc_core::secrets::SealKey::from_bytes([7; 32]));
            rx
        });
        let manager = cc_core::Manager::new(
            runtime,
            cc_server::HttpAgent::new().unwrap(),
            store.clone(),
            config,
        );
        let dispatcher = notices
            .zip(webhooks.clone())
            .map(|(rx, rules)| cc_server::webhook::start(manager.clone(), rx, rules));
        let server = cc_server::ServerConfig {
            public_url: None,
            anthropic_upstream: "http://127.0.0.1:9".into(),
            check_api_key: false,
            access: cc_server::AccessConfig {
                admin_token: Some(ADMIN.into()),
                ..Default::default()
            },
            git: Default::default(),
            peers: None,
            webhooks: webhooks.unwrap_or_default(),
        };
        let app = cc_server::api::router(manager, std::sync::Arc::new(server));
        let (base, serving) = spawn_router(app).await;
        Self {
            base,
            http: reqwest::Client::new(),
            store,
            _dir: None,
            _webhooks: dispatcher,
            serving,
        }
    }

    /// A new user's API token.
    pub async fn user(&self, name: &str) -> String {
        let t =
            cc_core::identity::NewToken::generate(name, cc_core::Role::User, None, cc_core::now());
        cc_core::IdentityStore::insert_token(&self.store, &t.record)
            .await
            .unwrap();
        t.token
    }

    /// A request to `path` as the admin.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_as(ADMIN, method, path)
    }

    /// A request to `path` with `token`.
    pub fn request_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    /// A call as the admin: its status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.call_as(ADMIN, method, path, body).await
    }

    /// A call with `token`: its status and JSON body.
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.request_as(token, method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A create request's body for the allowed repository.
    pub fn create_body() -> serde_json::Value {
        serde_json::json!({"repoUrl": "http://127.0.0.1:9/r.git", "claudeApiKey": "sk-ant-test"})
    }

    pub async fn create(&self) -> (cc_core::SessionId, serde_json::Value) {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/sessions/create",
                Some(Self::create_body()),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (
            cc_core::SessionId::parse(v["sessionId"].as_str().unwrap()).unwrap(),
            v,
        )
    }

    pub async fn status(&self, id: &cc_core::SessionId) -> serde_json::Value {
        let (s, v) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/sessions/{id}/status"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// The session's status once its state is `state`.
    pub async fn until(&self, id: &cc_core::SessionId, state: &str) -> serde_json::Value {
        tokio::time::timeout(STUCK, async {
            loop {
                let v = self.status(id).await;
                if v["state"] == state {
                    return v;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("session {id} never reached {state}"))
    }
}
