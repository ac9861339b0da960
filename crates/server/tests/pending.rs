//! A session whose container waits for its place (a Pod Pending on a busy
//! cluster), through the public API with the in-memory runtime holding
//! every start: create answers at once with the session `starting`, and
//! what the runtime then says (it runs, it cannot, nobody waits any longer)
//! reaches the session.

use cc_core::{Manager, ManagerConfig, SessionId};
use cc_server::{AccessConfig, HttpAgent, ServerConfig};
use cc_store_sqlite::SqliteStore;
use cc_testkit::fake_runtime::FakeRuntime;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod common;

const ADMIN: &str = "test-admin-token-0123456789";
/// Only there so a failing test ends.
const STUCK: Duration = Duration::from_secs(30);

struct Api {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start(runtime: FakeRuntime) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut config = ManagerConfig::new("fake-image", 1);
        config.allowed_repo_hosts = vec!["127.0.0.1:9".into()];
        // Nothing answers as sessiond: a placed session fails its boot
        // soon, with its own reason.
        config.agent_ready_timeout = Duration::from_millis(500);
        let manager = Manager::new(runtime, HttpAgent::new().unwrap(), store, config);
        let server = ServerConfig {
            public_url: None,
            anthropic_upstream: "http://127.0.0.1:9".into(),
            check_api_key: false,
            access: AccessConfig {
                admin_token: Some(ADMIN.into()),
                ..Default::default()
            },
            git: Default::default(),
            peers: None,
        };
        let app = cc_server::api::router(manager, Arc::new(server));
        Self {
            base: common::serve_router(app).await,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self) -> (SessionId, Value) {
        let body = json!({"repoUrl": "http://127.0.0.1:9/r.git", "claudeApiKey": "sk-ant-test"});
        let (s, v) = self
            .call(reqwest::Method::POST, "/api/v1/sessions/create", Some(body))
            .await;
        assert_eq!(s, 201, "{v}");
        (
            SessionId::parse(v["sessionId"].as_str().unwrap()).unwrap(),
            v,
        )
    }

    async fn status(&self, id: &SessionId) -> Value {
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
    async fn until(&self, id: &SessionId, state: &str) -> Value {
        tokio::time::timeout(STUCK, async {
            loop {
                let v = self.status(id).await;
                if v["state"] == state {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("session {id} never reached {state}"))
    }
}

#[tokio::test]
async fn create_answers_while_the_container_waits_and_the_runtimes_verdict_reaches_the_session() {
    let rt = common::runtime();
    rt.hold_starts(true);
    let api = Api::start(rt.clone()).await;

    // The answer comes while the container still waits for its place.
    let (id, created) = api.create().await;
    assert!(rt.is_pending(&id), "answered before the container ran");
    assert_eq!(created["status"], "starting", "{created}");
    assert_eq!(created["containerId"], format!("fake-{id}"), "{created}");
    let st = api.status(&id).await;
    assert_eq!(st["state"], "starting", "{st}");

    // The scheduler gives up: the session ends with its reason and
    // nothing of it is left.
    rt.refuse_start(&id, "0/3 nodes are available: 3 Insufficient memory.");
    let st = api.until(&id, "error").await;
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not start") && reason.contains("Insufficient memory"),
        "{reason}"
    );
    assert!(!cc_core::Runtime::list(&rt).await.unwrap().contains(&id));

    // Deleted while it waits: ended, removed, and never placed after.
    let (id, _) = api.create().await;
    assert!(rt.is_pending(&id));
    let (s, v) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(api.status(&id).await["state"], "terminated");
    assert!(!cc_core::Runtime::list(&rt).await.unwrap().contains(&id));

    // Placed: the session goes on to its agent (which nothing answers
    // here, so it fails for that reason, not for its container).
    let (id, _) = api.create().await;
    rt.place(&id);
    let st = api.until(&id, "error").await;
    let reason = st["reason"].as_str().unwrap();
    assert!(reason.contains("session agent did not start"), "{reason}");
}
