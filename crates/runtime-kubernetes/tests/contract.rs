//! The runtime against a scripted API server, for what the real 1.20 test
//! cluster cannot be made to show: a watch that expires (`410 Gone`), an
//! RBAC refusal, a Pod the scheduler cannot place. The server speaks the
//! API's real paths and JSON (Status objects, watch event lines); the
//! runtime reaches it through a kubeconfig, as it would a cluster.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cc_core::{Runtime, RuntimeError, Started};
use cc_runtime_kubernetes::{KubeSettings, KubernetesRuntime};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the scripted server answers.
#[derive(Default)]
struct Script {
    /// Creating a Secret is forbidden (a Role without `secrets`).
    forbid_secrets: bool,
    /// Pods, by name, as created (their status as the scheduler leaves it).
    pods: HashMap<String, Value>,
    /// Objects deleted, by path.
    deleted: Vec<String>,
}

type Shared = Arc<Mutex<Script>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

async fn namespace(Path(ns): Path<String>) -> Response {
    Json(json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}})).into_response()
}

async fn pods(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("watch").is_some_and(|w| w == "true") {
        // One watch event: the version asked for is too old.
        let line = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410,
        }});
        return ([("content-type", "application/json")], format!("{line}\n")).into_response();
    }
    let items: Vec<Value> = s.lock().unwrap().pods.values().cloned().collect();
    Json(json!({"kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "1"}, "items": items}))
    .into_response()
}

async fn create_pod(State(s): State<Shared>, Json(mut pod): Json<Value>) -> Response {
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    pod["metadata"]["uid"] = json!("uid-1");
    pod["metadata"]["resourceVersion"] = json!("2");
    pod["status"] = json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory."}],
    });
    s.lock().unwrap().pods.insert(name, pod.clone());
    (StatusCode::CREATED, Json(pod)).into_response()
}

async fn pod(State(s): State<Shared>, Path((_, name)): Path<(String, String)>) -> Response {
    match s.lock().unwrap().pods.get(&name) {
        Some(p) => Json(p.clone()).into_response(),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn delete_pod(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut s = s.lock().unwrap();
    s.deleted.push(format!("{ns}/pods/{name}"));
    match s.pods.remove(&name) {
        Some(p) => Json(p).into_response(),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn create_object(
    State(s): State<Shared>,
    Path((ns, kind)): Path<(String, String)>,
    Json(obj): Json<Value>,
) -> Response {
    if kind == "secrets" && s.lock().unwrap().forbid_secrets {
        return status(
            403,
            "Forbidden",
            &format!("secrets is forbidden: User \"system:serviceaccount:cc:cc\" cannot create resource \"secrets\" in API group \"\" in the namespace \"{ns}\""),
        );
    }
    (StatusCode::CREATED, Json(obj)).into_response()
}

async fn delete_object(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> Response {
    s.lock()
        .unwrap()
        .deleted
        .push(format!("{ns}/{kind}/{name}"));
    Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        .into_response()
}

async fn empty_list() -> Response {
    Json(json!({"metadata": {"resourceVersion": "1"}, "items": []})).into_response()
}

/// The scripted server on loopback and a runtime connected to it.
async fn scripted(script: Script) -> (KubernetesRuntime, Shared, tempfile::TempDir) {
    let shared = Arc::new(Mutex::new(script));
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}", get(namespace))
        .route("/api/v1/namespaces/{ns}/pods", get(pods).post(create_pod))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(pod).delete(delete_pod),
        )
        .route(
            "/api/v1/namespaces/{ns}/{kind}",
            get(empty_list).post(create_object),
        )
        .route(
            "/apis/networking.k8s.io/v1/namespaces/{ns}/{kind}",
            get(empty_list).post(create_object),
        )
        .route(
            "/api/v1/namespaces/{ns}/{kind}/{name}",
            axum::routing::delete(delete_object),
        )
        .route(
            "/apis/networking.k8s.io/v1/namespaces/{ns}/{kind}/{name}",
            axum::routing::delete(delete_object),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let mut settings = KubeSettings::new("sessions", "http://gateway.cc.svc:8081");
    settings.start_deadline = Duration::from_millis(300);
    let rt = KubernetesRuntime::connect(settings, Some(&kubeconfig))
        .await
        .expect("connect to the scripted server");
    (rt, shared, dir)
}

#[tokio::test]
async fn an_expired_watch_ends_the_feed_with_a_clear_error() {
    let (rt, _, _dir) = scripted(Script::default()).await;
    let mut feed = rt.events().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("an answer")
        .expect("an item");
    let Err(RuntimeError::Unavailable(msg)) = first else {
        panic!("410 Gone must end the feed as unavailable: {first:?}");
    };
    assert!(msg.contains("410 Gone"), "{msg}");
    // The feed ends there: the core subscribes again, which lists afresh.
    assert!(feed.next().await.is_none());
}

#[tokio::test]
async fn an_rbac_refusal_names_the_permission_and_creates_nothing() {
    let (rt, s, _dir) = scripted(Script {
        forbid_secrets: true,
        ..Default::default()
    })
    .await;
    let spec = cc_testkit::conformance::spec("claudecluster-worker:latest");
    let err = rt.create(&spec).await.expect_err("forbidden");
    let RuntimeError::Invalid(msg) = &err else {
        panic!("a 403 is the deployment's configuration: {err:?}");
    };
    assert!(msg.contains("creating the session's token Secret"), "{msg}");
    assert!(msg.contains("cannot create resource \"secrets\""), "{msg}");
    assert!(msg.contains("RBAC"), "{msg}");
    assert!(
        s.lock().unwrap().pods.is_empty(),
        "no Pod after the refusal"
    );
}

#[tokio::test]
async fn a_pod_the_scheduler_cannot_place_is_pending_then_fails_with_its_reason() {
    let (rt, s, _dir) = scripted(Script::default()).await;
    let spec = cc_testkit::conformance::spec("claudecluster-worker:latest");
    // Create answers at once: the Pod exists and waits.
    let started = rt.create(&spec).await.unwrap();
    assert!(
        matches!(&started, Started::Pending { container_id, gateway_url }
            if container_id == "uid-1" && gateway_url == "http://gateway.cc.svc:8081"),
        "{started:?}"
    );
    let st = rt.inspect(&spec.id).await.unwrap().unwrap();
    assert!(st.starting && !st.running, "{st:?}");
    let err = rt
        .wait_running(&spec.id)
        .await
        .expect_err("never scheduled");
    let RuntimeError::Unavailable(msg) = &err else {
        panic!("a Pod that is not placed in time: {err:?}");
    };
    assert!(msg.contains("Insufficient memory"), "{msg}");
    // What the core then does with a session that could not start.
    rt.remove(&spec.id).await.unwrap();
    let s = s.lock().unwrap();
    assert!(s.pods.is_empty(), "the Pod is deleted");
    let name = format!("cc-{}", spec.id);
    for gone in [
        format!("sessions/pods/{name}"),
        format!("sessions/networkpolicies/{name}"),
        format!("sessions/secrets/{name}-token"),
    ] {
        assert!(
            s.deleted.contains(&gone),
            "{gone} not deleted: {:?}",
            s.deleted
        );
    }
}
