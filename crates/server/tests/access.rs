//! Access control over a real socket, with a fake runtime (no Docker): each
//! refusal the API makes, and the audit trail it leaves.

use cc_core::audit::{verify, AuditRecord};
use cc_core::identity::{NewToken, Role, SessionTokenKey};
use cc_core::{AuditStore, IdentityStore, Manager, ManagerConfig};
use cc_server::auth::ip::Cidr;
use cc_server::auth::rate_limit::RateLimit;
use cc_server::{AccessConfig, HttpAgent, ServerConfig};
use cc_store_sqlite::SqliteStore;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod common;

const ADMIN: &str = "test-admin-token-0123456789";
const KEY: [u8; 32] = [7; 32];

struct Api {
    base: String,
    store: SqliteStore,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(adjust: impl FnOnce(&mut AccessConfig)) -> Api {
    start_server(|server| adjust(&mut server.access)).await
}

async fn start_server(adjust: impl FnOnce(&mut ServerConfig)) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut config = ManagerConfig::new("fake-image", 1);
    config.allowed_repo_hosts = vec!["127.0.0.1:9".into()];
    let manager = Manager::new(
        common::runtime(),
        HttpAgent::new().unwrap(),
        store.clone(),
        config,
    );
    let access = AccessConfig {
        admin_token: Some(ADMIN.into()),
        audit_jsonl: Some(dir.path().join("audit.jsonl")),
        session_token_key: Some(KEY),
        ..Default::default()
    };
    let mut server = ServerConfig {
        public_url: None,
        anthropic_upstream: "http://127.0.0.1:9".into(),
        check_api_key: false,
        access,
        git: Default::default(),
        peers: None,
        webhooks: Default::default(),
    };
    adjust(&mut server);
    let app = cc_server::api::router(manager, Arc::new(server));
    Api {
        base: common::serve_router(app).await,
        store,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Api {
    async fn token(&self, user: &str, role: Role) -> (String, String) {
        let t = NewToken::generate(user, role, None, SystemTime::now());
        self.store.insert_token(&t.record).await.unwrap();
        (t.token, t.record.id)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (s, v, _) = self.call(reqwest::Method::GET, path, token, None).await;
        (s, v)
    }

    async fn create(&self, token: &str) -> (u16, Value) {
        let body = json!({"repoUrl": "http://127.0.0.1:9/r.git", "claudeApiKey": "sk-ant-test"});
        let (s, v, _) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/sessions/create",
                Some(token),
                Some(body),
            )
            .await;
        (s, v)
    }

    async fn audit(&self) -> Vec<AuditRecord> {
        let (s, v) = self.get("/api/v1/audit?limit=1000", Some(ADMIN)).await;
        assert_eq!(s, 200, "{v}");
        serde_json::from_value(v["records"].clone()).unwrap()
    }
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn missing_unknown_and_revoked_tokens_are_401_and_audited() {
    let api = start(|_| {}).await;
    let (s, v) = api.get("/api/v1/sessions", None).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    let (s, v) = api.get("/api/v1/sessions", Some("cct_not-a-token")).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");

    let (alice, alice_id) = api.token("alice", Role::User).await;
    let (s, v) = api.get("/api/v1/sessions", Some(&alice)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/tokens/{alice_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.get("/api/v1/sessions", Some(&alice)).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("revoked"), "{v}");

    let log = api.audit().await;
    let failures: Vec<_> = log
        .iter()
        .filter(|r| r.event.action == "auth.failure")
        .map(|r| r.event.detail.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        failures,
        [
            "no token",
            "unknown token",
            &format!("revoked token {alice_id}")
        ],
        "{log:#?}"
    );
    assert!(log.iter().any(|r| r.event.action == "admin.token.revoke"));
    assert_eq!(verify(&log), Ok(log.len() as u64));
    // Nothing secret reaches the log.
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(&alice) && !text.contains(ADMIN));
}

#[tokio::test]
async fn users_see_only_their_sessions_and_session_tokens_open_one_session() {
    let api = start(|_| {}).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let (bob, _) = api.token("bob", Role::User).await;

    let (s, created) = api.create(&alice).await;
    assert_eq!(s, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let status = format!("/api/v1/sessions/{id}/status");

    assert_eq!(api.get(&status, Some(&alice)).await.0, 200);
    assert_eq!(api.get(&status, Some(ADMIN)).await.0, 200);
    let (s, v) = api.get(&status, Some(&bob)).await;
    assert_eq!((s, code(&v)), (404, "session_not_found"), "{v}");
    for (method, path, body) in [
        (
            reqwest::Method::DELETE,
            format!("/api/v1/sessions/{id}"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/sessions/{id}/command"),
            Some(json!({"command": "hi"})),
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/sessions/{id}/logs"),
            None,
        ),
    ] {
        let (s, v, _) = api.call(method, &path, Some(&bob), body).await;
        assert_eq!((s, code(&v)), (404, "session_not_found"), "{path}: {v}");
    }
    let (_, bobs) = api.get("/api/v1/sessions?all=true", Some(&bob)).await;
    assert_eq!(bobs, json!([]));
    let (_, alices) = api.get("/api/v1/sessions?all=true", Some(&alice)).await;
    assert_eq!(alices.as_array().unwrap().len(), 1);

    // The endpoint URLs carry a session token that opens this session only.
    let http = created["endpoints"]["http"].as_str().unwrap();
    assert!(http.contains("?token=ccs_"), "{http}");
    assert!(created["endpoints"]["websocket"]
        .as_str()
        .unwrap()
        .contains("?token=ccs_"));
    let (s, v) = api.get(http, None).await;
    assert_eq!(s, 200, "{v}");
    let token = http.split("token=").nth(1).unwrap();
    let (s, v) = api
        .get(
            &format!("/api/v1/sessions/{id}/logs?since=0&token={token}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "the token is taken out of the query: {v}");
    let (_, other) = api.create(&alice).await;
    let other_id = other["sessionId"].as_str().unwrap();
    let (s, v) = api
        .get(&format!("/api/v1/sessions/{other_id}/status"), Some(token))
        .await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    // A session token cannot list or create.
    let (s, v) = api.create(token).await;
    assert_eq!(s, 401, "{v}");

    // Expired: signed with the server's key, but in the past.
    let expired =
        SessionTokenKey::from_bytes(KEY).issue(&id, SystemTime::now() - Duration::from_secs(1));
    let (s, v) = api.get(&status, Some(&expired)).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    // Forged: signed with another key.
    let forged = SessionTokenKey::from_bytes([8; 32])
        .issue(&id, SystemTime::now() + Duration::from_secs(60));
    assert_eq!(api.get(&status, Some(&forged)).await.0, 401);

    let log = api.audit().await;
    let actions: Vec<_> = log
        .iter()
        .filter(|r| r.event.session_id.as_deref() == Some(id.as_str()))
        .map(|r| (r.event.actor.as_str(), r.event.action.as_str()))
        .collect();
    assert!(
        actions.contains(&("alice", "session.create")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("alice", "container.start")),
        "{actions:?}"
    );
    assert_eq!(verify(&log), Ok(log.len() as u64));
}

/// `GET /metrics` from `peer`, in process (the router as the server runs
/// it, the peer address as the accept loop hands it over).
async fn metrics_from(
    peer: &str,
    token: Option<&str>,
    adjust: impl FnOnce(&mut AccessConfig),
) -> u16 {
    use tower_service::Service;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let manager = Manager::new(
        common::runtime(),
        HttpAgent::new().unwrap(),
        store,
        ManagerConfig::new("fake-image", 1),
    );
    let mut access = AccessConfig {
        admin_token: Some(ADMIN.into()),
        ..Default::default()
    };
    adjust(&mut access);
    let config = ServerConfig {
        public_url: None,
        anthropic_upstream: "http://127.0.0.1:9".into(),
        check_api_key: false,
        access,
        git: Default::default(),
        peers: None,
        webhooks: Default::default(),
    };
    let mut app = cc_server::api::router(manager, Arc::new(config));
    let mut req = axum::http::Request::get("/metrics");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    app.call(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn without_a_metrics_token_the_metrics_answer_only_loopback_clients() {
    assert_eq!(metrics_from("127.0.0.1:4000", None, |_| {}).await, 200);
    assert_eq!(metrics_from("[::1]:4000", None, |_| {}).await, 200);
    assert_eq!(metrics_from("10.1.2.3:4000", None, |_| {}).await, 403);
    // Not even with an admin token: the metrics are not behind the API's.
    assert_eq!(
        metrics_from("10.1.2.3:4000", Some(ADMIN), |_| {}).await,
        403
    );
    // With the metrics token set, any address that presents it.
    let scrape = |a: &mut AccessConfig| a.metrics_token = Some("scrape-secret".into());
    assert_eq!(
        metrics_from("10.1.2.3:4000", Some("scrape-secret"), scrape).await,
        200
    );
    assert_eq!(metrics_from("10.1.2.3:4000", None, scrape).await, 401);
}

#[tokio::test]
async fn metrics_take_the_metrics_token_when_one_is_set() {
    let open = start(|_| {}).await;
    let r = open
        .http
        .get(format!("{}/metrics", open.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let api = start(|a| a.metrics_token = Some("scrape-secret".into())).await;
    let url = format!("{}/metrics", api.base);
    let r = api.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unauthorized");
    // Not the admin token either: the scraper's token opens the metrics only.
    let r = api.http.get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = api
        .http
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("# TYPE"));
}

#[tokio::test]
async fn a_blocked_ip_is_403() {
    let api = start(|a| a.allow_ips = vec![Cidr::parse("10.0.0.0/8").unwrap()]).await;
    let (s, v) = api.get("/api/v1/sessions", Some(ADMIN)).await;
    assert_eq!((s, code(&v)), (403, "ip_not_allowed"), "{v}");

    let api = start(|a| a.allow_ips = vec![Cidr::parse("127.0.0.1/32").unwrap()]).await;
    assert_eq!(api.get("/api/v1/sessions", Some(ADMIN)).await.0, 200);
}

#[tokio::test]
async fn a_flood_from_a_blocked_ip_writes_one_audit_row() {
    let api = start(|a| a.allow_ips = vec![Cidr::parse("10.0.0.0/8").unwrap()]).await;
    for _ in 0..50 {
        let (s, v) = api.get("/api/v1/sessions", None).await;
        assert_eq!((s, code(&v)), (403, "ip_not_allowed"), "{v}");
    }
    let refused = api
        .store
        .audit_records(&cc_core::AuditFilter {
            action: Some("auth.failure".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refused.len(), 1, "{refused:#?}");
}

#[tokio::test]
async fn the_rate_limit_is_429_with_retry_after() {
    let api = start(|a| {
        a.rate_limit = Some(RateLimit {
            per_minute: 6,
            burst: 2,
        })
    })
    .await;
    for _ in 0..2 {
        assert_eq!(api.get("/api/v1/sessions", Some(ADMIN)).await.0, 200);
    }
    let (s, v, headers) = api
        .call(reqwest::Method::GET, "/api/v1/sessions", Some(ADMIN), None)
        .await;
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");
    assert_eq!(headers.get("retry-after").unwrap(), "10");
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let api = start(|_| {}).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let body = json!({"repoUrl": "x".repeat(2 * 1024 * 1024), "claudeApiKey": "k"});
    let (s, v, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/sessions/create",
            Some(&alice),
            Some(body),
        )
        .await;
    assert_eq!((s, code(&v)), (413, "payload_too_large"), "{v}");
}

#[tokio::test]
async fn too_many_sessions_is_409() {
    let api = start(|a| a.max_sessions_per_user = Some(1)).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let (bob, _) = api.token("bob", Role::User).await;
    assert_eq!(api.create(&alice).await.0, 201);
    let (s, v) = api.create(&alice).await;
    assert_eq!((s, code(&v)), (409, "too_many_sessions"), "{v}");
    // The limit is per user.
    assert_eq!(api.create(&bob).await.0, 201);
    let log = api.audit().await;
    assert!(log
        .iter()
        .any(|r| r.event.action == "limit.hit" && r.event.outcome == "too_many_sessions"));
}

async fn create_with_config(api: &Api, token: &str, config: Value) -> (u16, Value) {
    let body = json!({
        "repoUrl": "http://127.0.0.1:9/r.git",
        "claudeApiKey": "sk-ant-test",
        "config": config,
    });
    let (s, v, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/sessions/create",
            Some(token),
            Some(body),
        )
        .await;
    (s, v)
}

#[tokio::test]
async fn an_idle_timeout_out_of_bounds_is_400_and_creates_nothing() {
    let api = start(|_| {}).await;
    let (alice, _) = api.token("alice", Role::User).await;
    for secs in [0, 59, 86_401] {
        let (s, v) = create_with_config(&api, &alice, json!({"idleTimeout": secs})).await;
        assert_eq!((s, code(&v)), (400, "invalid_config"), "{secs}: {v}");
        assert_eq!(
            v["message"], "config.idleTimeout: must be between 60 and 86400 seconds",
            "{v}"
        );
    }
    let (s, all) = api.get("/api/v1/sessions?all=true", Some(ADMIN)).await;
    assert_eq!((s, all.as_array().map(Vec::len)), (200, Some(0)), "{all}");
}

#[tokio::test]
async fn status_and_list_show_the_sessions_idle_timeout() {
    let api = start(|_| {}).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let (s, own) = create_with_config(&api, &alice, json!({"idleTimeout": 120})).await;
    assert_eq!(s, 201, "{own}");
    let (s, default) = api.create(&alice).await;
    assert_eq!(s, 201, "{default}");
    for (created, secs) in [(&own, 120), (&default, 1800)] {
        let id = created["sessionId"].as_str().unwrap();
        let (s, st) = api
            .get(&format!("/api/v1/sessions/{id}/status"), Some(&alice))
            .await;
        assert_eq!(s, 200, "{st}");
        assert_eq!(st["limits"]["idleTimeoutSecs"], secs, "{st}");
    }
    let (s, list) = api.get("/api/v1/sessions", Some(&alice)).await;
    assert_eq!(s, 200, "{list}");
    let mut listed: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["limits"]["idleTimeoutSecs"].as_u64().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, [120, 1800], "{list}");
}

#[tokio::test]
async fn admin_endpoints_need_an_admin() {
    let api = start(|_| {}).await;
    let (alice, _) = api.token("alice", Role::User).await;
    assert_eq!(api.get("/api/v1/audit", Some(&alice)).await.0, 403);
    assert_eq!(api.get("/api/v1/admin/tokens", Some(&alice)).await.0, 403);

    let (s, v, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(ADMIN),
            Some(json!({"user": "carol", "label": "ci"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let carol = v["token"].as_str().unwrap();
    assert!(carol.starts_with("cct_"));
    assert_eq!(api.get("/api/v1/sessions", Some(carol)).await.0, 200);
    let (_, list) = api.get("/api/v1/admin/tokens", Some(ADMIN)).await;
    let text = list.to_string();
    assert!(text.contains("carol") && !text.contains(carol), "{text}");
    let (s, v, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(ADMIN),
            Some(json!({"user": "Bad Name"})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_user"), "{v}");
}

#[tokio::test]
async fn without_tokens_the_api_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let manager = Manager::new(
        common::runtime(),
        HttpAgent::new().unwrap(),
        store.clone(),
        ManagerConfig::new("fake-image", 1),
    );
    let config = || ServerConfig {
        public_url: None,
        anthropic_upstream: "http://127.0.0.1:9".into(),
        check_api_key: false,
        access: AccessConfig::default(),
        git: Default::default(),
        peers: None,
        webhooks: Default::default(),
    };
    let api = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = cc_server::serve(api, gw, manager.clone(), config(), async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without any API token"), "{err}");

    // With a token in the store the same listener is fine.
    let t = NewToken::generate("alice", Role::User, None, SystemTime::now());
    store.insert_token(&t.record).await.unwrap();
    let api = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cc_server::serve(api, gw, manager, config(), async {})
        .await
        .unwrap();
}

#[tokio::test]
async fn audit_jsonl_mirrors_the_table() {
    let api = start(|_| {}).await;
    api.get("/api/v1/sessions", None).await;
    api.get("/api/v1/sessions", Some(ADMIN)).await;
    let log = api.audit().await;
    let text = std::fs::read_to_string(api._dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<AuditRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, log);
}

/// A self-signed server certificate for 127.0.0.1 made with the openssl
/// CLI (`scripts/lib.sh` installs it): `(cert.pem, key.pem)`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let conf = dir.join("openssl.cnf");
    std::fs::write(
        &conf,
        "[req]\ndistinguished_name=dn\nx509_extensions=ext\nprompt=no\n[dn]\nCN=localhost\n\
         [ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-config"])
        .arg(&conf)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is needed for the TLS test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[tokio::test]
async fn tls_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut manager_config = ManagerConfig::new("fake-image", 1);
    manager_config.allowed_repo_hosts = vec!["127.0.0.1:9".into()];
    let manager = Manager::new(
        common::runtime(),
        HttpAgent::new().unwrap(),
        store,
        manager_config,
    );
    let config = ServerConfig {
        public_url: None,
        anthropic_upstream: "http://127.0.0.1:9".into(),
        check_api_key: false,
        access: AccessConfig {
            admin_token: Some(ADMIN.into()),
            // Only passes if the peer address reaches the middleware.
            allow_ips: vec![Cidr::parse("127.0.0.1").unwrap()],
            tls: Some(cc_server::tls::TlsFiles {
                cert: cert.clone(),
                key,
            }),
            ..Default::default()
        },
        git: Default::default(),
        peers: None,
        webhooks: Default::default(),
    };
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = api.local_addr().unwrap().port();
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cc_server::serve(api, gw, manager, config, async {
        let _ = stopped.await;
    }));

    let pem = std::fs::read(&cert).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let resp = https
        .get(format!("https://127.0.0.1:{port}/api/v1/sessions"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = https
        .get(format!("https://127.0.0.1:{port}/api/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // The endpoints handed out are the TLS ones.
    let created: Value = https
        .post(format!("https://127.0.0.1:{port}/api/v1/sessions/create"))
        .bearer_auth(ADMIN)
        .json(&json!({"repoUrl": "http://127.0.0.1:9/r.git", "claudeApiKey": "sk-ant-test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    assert_eq!(
        created["endpoints"]["http"]
            .as_str()
            .unwrap()
            .split('?')
            .next(),
        Some(format!("https://127.0.0.1:{port}/api/v1/sessions/{id}").as_str()),
        "{created}"
    );
    assert!(
        created["endpoints"]["websocket"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "wss://127.0.0.1:{port}/api/v1/sessions/{id}/stream?"
            )),
        "{created}"
    );
    // Plain HTTP on the TLS port gets no answer, and an untrusting client
    // refuses the certificate.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/api/v1/sessions"))
            .await
            .is_err()
    );
    assert!(
        reqwest::get(format!("https://127.0.0.1:{port}/api/v1/sessions"))
            .await
            .is_err()
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Connections that never finish their TLS handshake are capped per client
/// IP: beyond the cap the listener closes a connection at once (well within
/// the handshake timeout, set long here), while those within it stay open.
#[tokio::test]
async fn unfinished_tls_handshakes_are_capped_per_client() {
    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let acceptor = cc_server::tls::acceptor(&cc_server::tls::TlsFiles { cert, key }).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let limits = cc_server::tls::HandshakeLimits {
        per_ip: 2,
        total: 100,
        timeout: Duration::from_secs(600),
    };
    let listener = cc_server::tls::TlsListener::with_limits(tcp, acceptor, limits).unwrap();
    let addr = listener.local_addr().unwrap();
    // Two silent clients take the two places (the listener accepts in the
    // order the kernel queued the connections).
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // The third is closed by the listener: EOF, long before the 600 s
    // handshake timeout could close it.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(60), third.read(&mut buf))
        .await
        .expect("the connection over the cap is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // The two within the cap are still open (no EOF yet).
    for s in &mut held {
        let open = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(
            open.is_err(),
            "a connection within the cap was closed: {open:?}"
        );
    }
    drop(listener);
}

#[test]
fn tls_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(dir.path());
    let missing = dir.path().join("nope.pem");
    let err = cc_server::tls::acceptor(&cc_server::tls::TlsFiles {
        cert,
        key: missing.clone(),
    })
    .err()
    .expect("no key file");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

/// `docs/openapi.json` is the document the code builds (regenerate with
/// `UPDATE_OPENAPI=1`), every route in the router's source is documented,
/// and every documented operation is routed.
#[tokio::test]
async fn openapi_matches_the_code_and_the_router() {
    let doc = cc_server::api::openapi::document();
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    // Compared with the file as it was: `UPDATE_OPENAPI` rewrites a stale
    // file but still fails this run, so it never passes by comparing the
    // document with itself.
    let checked_in = std::fs::read_to_string(&file).unwrap_or_default();
    if checked_in != text && std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, &text).unwrap();
        panic!("docs/openapi.json was out of date and is rewritten: run the test again without UPDATE_OPENAPI");
    }
    assert!(
        checked_in == text,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p cc-server --test access openapi`, then again without it"
    );

    // Every `.route("/api/…"` in the router's source is a documented path.
    let source = include_str!("../src/api/mod.rs");
    let paths = doc["paths"].as_object().unwrap();
    let mut routed = Vec::new();
    for chunk in source.split(".route(").skip(1) {
        let lit = chunk.trim_start();
        if let Some(rest) = lit.strip_prefix('"') {
            let path = &rest[..rest.find('"').unwrap()];
            if path.starts_with("/api/") {
                assert!(
                    paths.contains_key(path),
                    "route {path} is not in the OpenAPI document"
                );
                routed.push(path.to_owned());
            }
        }
    }
    assert!(routed.len() >= 10, "{routed:?}");

    // Every documented operation reaches a handler (not the fallbacks).
    let api = start(|_| {}).await;
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "0123456789abcdef01234567");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (s, v, _) = api.call(m, &concrete, Some(ADMIN), None).await;
            assert!(
                !(s == 404 && code(&v) == "not_found") && s != 405,
                "{method} {path}: {s} {v}"
            );
        }
    }
    let (s, served) = api.get(cc_server::api::openapi::OPENAPI_PATH, None).await;
    assert_eq!((s, served), (200, doc));
}

/// With `--check-api-key`, the model double requiring `sk-ant-right` as the
/// upstream: creates carrying `key`, answered with (status, body).
async fn create_checked(check: bool, key: &str) -> (u16, Value, Api, cc_model_double::ModelDouble) {
    let double = cc_model_double::spawn(cc_model_double::ModelDoubleConfig {
        api_key: Some("sk-ant-right".into()),
        latency_ms: 0,
    })
    .await
    .unwrap();
    let upstream = double.base_url();
    let api = start_server(|server| {
        server.anthropic_upstream = upstream;
        server.check_api_key = check;
    })
    .await;
    let (alice, _) = api.token("alice", Role::User).await;
    let body = json!({"repoUrl": "http://127.0.0.1:9/r.git", "claudeApiKey": key});
    let (s, v, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/sessions/create",
            Some(&alice),
            Some(body),
        )
        .await;
    (s, v, api, double)
}

#[tokio::test]
async fn checked_key_refused_upstream_is_400_without_a_session() {
    let (s, v, api, _double) = create_checked(true, "sk-ant-wrong").await;
    assert_eq!((s, code(&v)), (400, "invalid_api_key"), "{v}");
    assert_eq!(
        v["message"], "the Anthropic API refused this claudeApiKey (401)",
        "{v}"
    );
    assert!(!v.to_string().contains("sk-ant-wrong"), "key echoed: {v}");
    // No session, hence no container.
    let (s, all) = api.get("/api/v1/sessions?all=true", Some(ADMIN)).await;
    assert_eq!((s, all.as_array().map(Vec::len)), (200, Some(0)), "{all}");

    let log = api.audit().await;
    let refused = log
        .iter()
        .find(|r| r.event.action == "session.create")
        .expect("the refused create is audited");
    assert_eq!(
        (refused.event.actor.as_str(), refused.event.outcome.as_str()),
        ("alice", "invalid_api_key")
    );
    assert!(!format!("{refused:?}").contains("sk-ant-wrong"));
    assert_eq!(verify(&log), Ok(log.len() as u64));
}

#[tokio::test]
async fn checked_key_accepted_upstream_creates() {
    let (s, v, _api, _double) = create_checked(true, "sk-ant-right").await;
    assert_eq!(s, 201, "{v}");
    assert!(v["sessionId"].as_str().is_some(), "{v}");
}

#[tokio::test]
async fn unchecked_wrong_key_is_accepted_at_create() {
    // The refusal only shows later, in the session's first turn.
    let (s, v, _api, _double) = create_checked(false, "sk-ant-wrong").await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn checked_key_with_unreachable_upstream_creates() {
    let api = start_server(|server| server.check_api_key = true).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let (s, v) = api.create(&alice).await;
    assert_eq!(s, 201, "a down upstream must not block creates: {v}");
}

/// A request without credentials to an open-mode server, with these
/// headers; the status and the error code.
async fn open_call(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = api
        .http
        .request(method, format!("{}{path}", api.base))
        .json(&json!({"user": "mallory", "role": "admin"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, code(&body).to_owned())
}

#[tokio::test]
async fn open_mode_serves_only_loopback_hosts_and_origins() {
    let api = start(|a| {
        a.admin_token = None;
        a.open_when_no_tokens = true;
    })
    .await;
    let get = reqwest::Method::GET;
    let port = api.base.rsplit(':').next().unwrap().to_owned();

    // The CLI's requests, and a page served from loopback.
    for headers in [
        vec![],
        vec![("host", format!("localhost:{port}"))],
        vec![("host", format!("127.1.2.3:{port}"))],
        vec![("host", format!("[::1]:{port}"))],
        vec![("origin", "http://localhost:3000".to_owned())],
        vec![("origin", format!("http://127.0.0.1:{port}"))],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, c) = open_call(&api, get.clone(), "/api/v1/sessions", &h).await;
        assert_eq!(s, 200, "{headers:?}: {c}");
    }

    // A DNS-rebinding page (its own name in Host) and a cross-origin page
    // (its origin in Origin) try to mint an admin token.
    let mint = "/api/v1/admin/tokens";
    let post = reqwest::Method::POST;
    let rebinding = format!("rebind.evil.example:{port}");
    for (headers, expected) in [
        (vec![("host", rebinding.as_str())], "host_not_allowed"),
        (
            vec![
                ("host", rebinding.as_str()),
                ("origin", "http://rebind.evil.example"),
            ],
            "host_not_allowed",
        ),
        (
            vec![("origin", "http://evil.example")],
            "origin_not_allowed",
        ),
        (vec![("origin", "null")], "origin_not_allowed"),
        (
            vec![("origin", "http://localhost.evil.example")],
            "origin_not_allowed",
        ),
    ] {
        let (s, c) = open_call(&api, post.clone(), mint, &headers).await;
        assert_eq!((s, c.as_str()), (403, expected), "{headers:?}");
    }
    assert_eq!(
        api.store.active_tokens().await.unwrap(),
        0,
        "a token was minted"
    );

    // WebSocket upgrades too.
    let upgrade = |origin: &'static str| {
        vec![
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("origin", origin),
        ]
    };
    let stream = "/api/v1/sessions/0123456789abcdef01234567/stream";
    let (s, c) = open_call(&api, get.clone(), stream, &upgrade("http://evil.example")).await;
    assert_eq!((s, c.as_str()), (403, "origin_not_allowed"));
    let (s, c) = open_call(&api, get.clone(), stream, &upgrade("http://localhost:3000")).await;
    assert_ne!(s, 403, "{c}");

    // Each refusal is audited, without a principal.
    let records = api
        .store
        .audit_records(&cc_core::AuditFilter {
            action: Some("auth.failure".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<&str> = records.iter().map(|r| r.event.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "host_not_allowed",
            "host_not_allowed",
            "origin_not_allowed",
            "origin_not_allowed",
            "origin_not_allowed",
            "origin_not_allowed"
        ]
    );
}

#[tokio::test]
async fn with_a_token_any_host_and_origin_may_call() {
    // Behind a reverse proxy, say: the token is what counts.
    let api = start(|a| a.open_when_no_tokens = true).await;
    let resp = api
        .http
        .get(format!("{}/api/v1/sessions", api.base))
        .bearer_auth(ADMIN)
        .header("host", "claudecluster.example.com")
        .header("origin", "https://claudecluster.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn serve_refuses_a_push_prefix_overlapping_the_sessions_branches() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let manager = Manager::new(
        common::runtime(),
        HttpAgent::new().unwrap(),
        store,
        ManagerConfig::new("fake-image", 1),
    );
    let mut config = ServerConfig {
        public_url: None,
        anthropic_upstream: "http://127.0.0.1:9".into(),
        check_api_key: false,
        access: AccessConfig::default(),
        git: Default::default(),
        peers: None,
        webhooks: Default::default(),
    };
    config.git.push.prefixes = vec!["bots/".into(), "claudecluster/".into()];
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = cc_server::serve(api, gw, manager, config, async {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(
        text.contains("\"claudecluster/\"") && text.contains("overlaps the sessions' own branches"),
        "{text}"
    );
}

/// Opens a session's WebSocket by hand over a raw socket; the socket and
/// the status line plus headers of the server's answer.
async fn raw_stream(api: &Api, id: &str, token: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/v1/sessions/{id}/stream HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (sock, String::from_utf8_lossy(&head).into_owned())
}

/// A masked client text frame (RFC 6455 §5.2), as browsers send.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Sends `frame` (ignoring a reset: the server may close mid-way), then
/// reads until the server closes; what it sent.
async fn send_and_read_until_closed(sock: &mut tokio::net::TcpStream, frame: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = sock.write_all(frame).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the WebSocket open"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_websocket_message_over_1_mib_closes_the_stream_unread() {
    let api = start(|_| {}).await;
    let (s, v) = api.create(ADMIN).await;
    assert_eq!(s, 201, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_owned();
    // Under the cap, junk is answered (and the stream stays open).
    let (mut sock, head) = raw_stream(&api, &id, ADMIN).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    sock.write_all(&text_frame(b"junk")).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let mut seen = String::new();
    while !seen.contains("invalid_message") {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Over it: the server closes without reading it as a message.
    let big = vec![b'x'; 2 << 20];
    let after = send_and_read_until_closed(&mut sock, &text_frame(&big)).await;
    assert!(!after.contains("invalid_message"), "{after}");
}

#[tokio::test]
async fn a_user_holds_at_most_the_configured_number_of_streams() {
    let api = start(|a| a.max_streams_per_user = 2).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let (bob, _) = api.token("bob", Role::User).await;
    let (s, v) = api.create(&alice).await;
    assert_eq!(s, 201, "{v}");
    let a_id = v["sessionId"].as_str().unwrap().to_owned();
    let (s, v) = api.create(&bob).await;
    assert_eq!(s, 201, "{v}");
    let b_id = v["sessionId"].as_str().unwrap().to_owned();

    let mut open = Vec::new();
    for _ in 0..2 {
        let (sock, head) = raw_stream(&api, &a_id, &alice).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        open.push(sock);
    }
    let (_, head) = raw_stream(&api, &a_id, &alice).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // Another user is not held back by alice's streams.
    let (_bob_sock, head) = raw_stream(&api, &b_id, &bob).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // One closed, alice may open another (once the server has seen it).
    drop(open.pop());
    let mut reopened = false;
    for _ in 0..100 {
        let (sock, head) = raw_stream(&api, &a_id, &alice).await;
        if head.starts_with("HTTP/1.1 101") {
            open.push(sock);
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "a closed stream was not given back");
}

#[tokio::test]
async fn a_stdio_mcp_server_the_admin_did_not_allow_is_refused_at_create() {
    let api = start(|_| {}).await;
    let body = json!({
        "repoUrl": "http://127.0.0.1:9/r.git",
        "claudeApiKey": "sk-ant-test",
        "options": {"mcpServers": {"x": {"command": "/bin/sh", "args": ["-c", "id"]}}},
    });
    let (s, v, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/sessions/create",
            Some(ADMIN),
            Some(body),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_option"), "{v}");
    let message = v["message"].as_str().unwrap_or("");
    assert!(
        message.contains("options.mcpServers.x") && message.contains("--allow-mcp-command"),
        "{message}"
    );
    let (_, list) = api.get("/api/v1/sessions", Some(ADMIN)).await;
    assert_eq!(list, json!([]), "no session was made");
}

#[tokio::test]
async fn a_refused_push_branch_is_audited_with_its_control_characters_escaped() {
    let api = start(|_| {}).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let (s, created) = api.create(&alice).await;
    assert_eq!(s, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap().to_owned();
    // A line break that would forge an audit line, and a terminal escape.
    let branch = "evil\n2026-01-01T00:00:00Z forged \u{1b}[2J";
    let (s, v, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/sessions/{id}/push"),
            Some(&alice),
            Some(json!({ "branch": branch })),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["code"], "push_refused", "{v}");
    let log = api.audit().await;
    let rec = log
        .iter()
        .find(|r| r.event.action == "session.push")
        .expect("the refused push is audited");
    assert_eq!(rec.event.outcome, "push_refused");
    let detail = rec.event.detail.as_deref().unwrap_or_default();
    assert!(!detail.chars().any(char::is_control), "{detail:?}");
    assert!(
        detail.contains(r"evil\n2026") && detail.contains(r"\u{1b}[2J"),
        "{detail}"
    );
    let jsonl = std::fs::read_to_string(api._dir.path().join("audit.jsonl")).unwrap();
    assert!(!jsonl.contains("forged \u{1b}"), "the copy is escaped too");
}

/// What a permission answer must be before any session hears of it: a
/// malformed request id reads as an unknown question (it cannot reshape a
/// forwarded path), a body naming another request is refused, another
/// user's session does not exist; every answer attempt on one's own
/// session is audited with who gave it. Over the WebSocket, an answer
/// without its request id is an `invalid_message`.
#[tokio::test]
async fn permission_answers_are_checked_and_audited() {
    let api = start(|_| {}).await;
    let (alice, _) = api.token("alice", Role::User).await;
    let (bob, _) = api.token("bob", Role::User).await;
    let (s, v) = api.create(&alice).await;
    assert_eq!(s, 201, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_owned();
    let answer = |rid: &str, token: &str, body: Value| {
        let path = format!("/api/v1/sessions/{id}/permissions/{rid}");
        let token = token.to_owned();
        let api = &api;
        async move {
            let (s, v, _) = api
                .call(reqwest::Method::POST, &path, Some(&token), Some(body))
                .await;
            (s, v)
        }
    };
    let (s, v) = answer("r-1", &bob, json!({"allow": true})).await;
    assert_eq!((s, code(&v)), (404, "session_not_found"), "{v}");
    let (s, v) = answer("a%20b", &alice, json!({"allow": true})).await;
    assert_eq!((s, code(&v)), (404, "permission_not_found"), "{v}");
    let (s, v) = answer("r-1", &alice, json!({"requestId": "r-2", "allow": true})).await;
    assert_eq!((s, code(&v)), (400, "invalid_permission_response"), "{v}");
    let (s, v) = answer("r-1", &alice, json!({"allow": "yes"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = answer("r-1", &alice, json!({"allow": false, "extra": 1})).await;
    assert_eq!(s, 400, "{v}");
    let long = "x".repeat(cc_core::session::permissions::MAX_DENIAL_CHARS + 1);
    let (s, v) = answer("r-1", &alice, json!({"allow": false, "message": long})).await;
    assert_eq!((s, code(&v)), (400, "invalid_permission_response"), "{v}");
    // The session is still starting (the fake runtime's sessiond does not
    // answer): a well-formed answer reaches the core and is refused there.
    let (s, v) = answer("r-1", &alice, json!({"allow": true, "always": true})).await;
    assert!(s >= 400, "{s} {v}");
    let log = api.audit().await;
    let answers: Vec<(&str, &str)> = log
        .iter()
        .filter(|r| r.event.action == "permission.answer")
        .map(|r| {
            (
                r.event.actor.as_str(),
                r.event.detail.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        answers.iter().all(|(actor, _)| *actor == "alice"),
        "{answers:?}"
    );
    assert!(
        answers.contains(&("alice", "request (malformed): allow")),
        "{answers:?}"
    );
    assert!(
        answers.contains(&("alice", "request r-1: allow always")),
        "{answers:?}"
    );

    let (mut sock, head) = raw_stream(&api, &id, &alice).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = text_frame(br#"{"type":"permissionResponse","data":{"allow":true}}"#);
    sock.write_all(&frame).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let mut seen = String::new();
    while !seen.contains("invalid_message") {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("needs data.requestId"), "{seen}");
}
