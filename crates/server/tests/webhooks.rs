//! Webhook endpoints through the public API on the in-memory runtime: who
//! may register what where, who sees which endpoint, and a delivery that
//! outlives the orchestrator that queued it.

use cc_core::identity::{NewToken, Role};
use cc_core::secrets::SealKey;
use cc_core::{IdentityStore, Manager, ManagerConfig};
use cc_server::webhook::WebhookConfig;
use cc_server::{AccessConfig, HttpAgent, ServerConfig};
use cc_store_sqlite::SqliteStore;
use cc_testkit::webhook_receiver::WebhookReceiver;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

const ADMIN: &str = "webhook-test-admin-token-0123";
/// Only there so a failing test ends.
const STUCK: Duration = Duration::from_secs(30);

/// One orchestrator on `dir`'s database, with the webhook dispatcher.
struct Server {
    base: String,
    http: reqwest::Client,
    store: SqliteStore,
    _webhooks: cc_server::webhook::Background,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl Server {
    async fn start(dir: &Path, rules: WebhookConfig) -> Self {
        let store = SqliteStore::open(dir).unwrap();
        let mut config = ManagerConfig::new("fake-image", 1);
        config.allowed_repo_hosts = vec!["127.0.0.1:9".into()];
        config.agent_ready_timeout = Duration::from_millis(300);
        config.seal_key = Some(SealKey::from_bytes([7; 32]));
        let (tx, rx) = cc_server::webhook::channel();
        config.notices = Some(tx);
        let manager = Manager::new(
            common::runtime(),
            HttpAgent::new().unwrap(),
            store.clone(),
            config,
        );
        let webhooks = cc_server::webhook::start(manager.clone(), rx, rules.clone());
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
            webhooks: rules,
        };
        let app = cc_server::api::router(manager, Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        });
        Self {
            base,
            http: reqwest::Client::new(),
            store,
            _webhooks: webhooks,
            serving,
        }
    }

    /// A new user's API token.
    async fn user(&self, name: &str) -> String {
        let t = NewToken::generate(name, Role::User, None, cc_core::now());
        self.store.insert_token(&t.record).await.unwrap();
        t.token
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, token: &str, body: Value) -> (u16, Value) {
        self.call(token, Method::POST, "/api/v1/webhooks", Some(body))
            .await
    }

    async fn deliveries(&self, id: &str) -> Vec<Value> {
        let path = format!("/api/v1/webhooks/{id}/deliveries");
        let (s, v) = self.call(ADMIN, Method::GET, &path, None).await;
        assert_eq!(s, 200, "{v}");
        v.as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn who_may_register_what_where() {
    let dir = tempfile::tempdir().unwrap();
    let rules = WebhookConfig {
        user_hosts: vec!["hooks.example.com".into(), "127.0.0.1:4444".into()],
        allow_hosts: vec!["127.0.0.1:4444".into()],
    };
    let s = Server::start(dir.path(), rules).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    for (url, code) in [
        ("ftp://127.0.0.1:4444/x", "invalid_webhook_url"),
        ("not a url", "invalid_webhook_url"),
        ("http://u:p@127.0.0.1:4444/x", "invalid_webhook_url"),
        ("http://no-such-host.invalid/x", "webhook_host_unresolvable"),
    ] {
        let (st, v) = s.register(ADMIN, json!({ "url": url })).await;
        assert_eq!((st, v["code"].as_str()), (400, Some(code)), "{url}: {v}");
    }
    // Private addresses only where the admin allowed them exactly.
    let (st, v) = s
        .register(ADMIN, json!({ "url": "http://127.0.0.1:4445/x" }))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("webhook_host_not_allowed")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("--allow-webhook-host"),
        "{v}"
    );
    // Users only on the hosts the admin lets them use, for their own sessions.
    let (st, v) = s
        .register(&alice, json!({ "url": "http://10.9.9.9:4444/x" }))
        .await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = s
        .register(
            &alice,
            json!({ "url": "http://127.0.0.1:4444/x", "allSessions": true }),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = s
        .register(
            &alice,
            json!({ "url": "http://127.0.0.1:4444/x", "events": ["session.slept"] }),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("invalid_webhook_events")),
        "{v}"
    );

    let (st, mine) = s
        .register(
            &alice,
            json!({ "url": "http://127.0.0.1:4444/x", "events": ["turn.finished"] }),
        )
        .await;
    assert_eq!(st, 201, "{mine}");
    assert!(mine["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(mine["owner"], "alice");
    assert_eq!(mine["events"], json!(["turn.finished"]));
    let (st, all) = s
        .register(
            ADMIN,
            json!({ "url": "http://127.0.0.1:4444/all", "allSessions": true }),
        )
        .await;
    assert_eq!(st, 201, "{all}");

    // Each sees their own (never a secret); the admin sees all.
    let (_, listed) = s.call(&alice, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
    let (_, listed) = s.call(&bob, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(listed, json!([]));
    let (_, listed) = s.call(ADMIN, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // Another user's endpoint is a 404, like one that does not exist.
    let mine_path = format!("/api/v1/webhooks/{}", mine["id"].as_str().unwrap());
    let (st, v) = s.call(&bob, Method::DELETE, &mine_path, None).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("webhook_not_found")),
        "{v}"
    );
    let (st, _) = s
        .call(&bob, Method::GET, &format!("{mine_path}/deliveries"), None)
        .await;
    assert_eq!(st, 404);
    let (st, v) = s.call(&alice, Method::DELETE, &mine_path, None).await;
    assert_eq!((st, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    let (st, _) = s.call(&alice, Method::DELETE, &mine_path, None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn a_queued_delivery_outlives_its_orchestrator() {
    let receiver = WebhookReceiver::start(usize::MAX).await.unwrap();
    let rules = WebhookConfig {
        user_hosts: vec![],
        allow_hosts: vec![receiver.host_port()],
    };
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), rules.clone()).await;
    let (st, hook) = first
        .register(
            ADMIN,
            json!({ "url": receiver.url(), "events": ["session.created"] }),
        )
        .await;
    assert_eq!(st, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let (st, created) = first
        .call(
            ADMIN,
            Method::POST,
            "/api/v1/sessions/create",
            Some(common::Api::create_body()),
        )
        .await;
    assert_eq!(st, 201, "{created}");

    // The endpoint fails the first attempt, and the orchestrator records it.
    let failed = tokio::time::timeout(STUCK, async {
        loop {
            let log = first.deliveries(&hook_id).await;
            if log.first().is_some_and(|d| d["lastStatus"] == 500) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first attempt is recorded");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["state"], "pending");
    assert_eq!(failed[0]["lastError"], "HTTP 500 Internal Server Error");
    drop(first);

    // The next orchestrator on the same database delivers it.
    receiver.set_fail_first(0);
    let second = Server::start(dir.path(), rules).await;
    let log = tokio::time::timeout(STUCK, async {
        loop {
            let log = second.deliveries(&hook_id).await;
            if log.first().is_some_and(|d| d["state"] == "delivered") {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("delivered after the restart");
    assert_eq!(log[0]["attempts"], 2, "{log:?}");
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].id, got[1].id, "the same delivery, retried");
    assert!(got[1].verifies(hook["secret"].as_str().unwrap()));
    assert_eq!(got[1].json()["sessionId"], created["sessionId"]);
    assert_eq!(got[1].json()["type"], "session.created");
}
