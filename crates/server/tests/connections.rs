//! How the API and the gateway hold connections, over real sockets: a
//! half-sent request and an idle keep-alive connection are closed by the
//! server, the connection over the per-IP cap is refused, and a WebSocket
//! outlives the header-read timeout (and counts against the cap).

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use cc_core::{Manager, ManagerConfig};
use cc_server::auth::connections::{self, Limits};
use cc_server::{AccessConfig, HttpAgent, ServerConfig};
use cc_store_sqlite::SqliteStore;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

const ADMIN: &str = "test-admin-token-0123456789";
/// Short, so the tests need not wait the real one out.
const SHORT: Duration = Duration::from_millis(300);
/// How long a test waits for the server before calling it stuck: far
/// beyond [`SHORT`], only there so a failing test ends.
const STUCK: Duration = Duration::from_secs(20);

/// A whole `cc_server::serve` (API and gateway) with these limits on both
/// listeners; the API's and the gateway's addresses.
async fn start(limits: Limits) -> (SocketAddr, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let manager = Manager::new(
        common::runtime(),
        HttpAgent::new().unwrap(),
        store,
        ManagerConfig::new("fake-image", 1),
    );
    let config = ServerConfig {
        public_url: None,
        anthropic_upstream: "http://127.0.0.1:9".into(),
        check_api_key: false,
        access: AccessConfig {
            admin_token: Some(ADMIN.into()),
            api_connections: limits,
            gateway_connections: limits,
            ..Default::default()
        },
        git: Default::default(),
        peers: None,
        webhooks: Default::default(),
    };
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (api.local_addr().unwrap(), gateway.local_addr().unwrap());
    tokio::spawn(cc_server::serve(
        api,
        gateway,
        manager,
        config,
        std::future::pending(),
    ));
    (addrs.0, addrs.1, dir)
}

/// Reads until the server closes the connection; what it sent.
async fn read_until_closed(sock: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(STUCK, sock.read_to_end(&mut got))
        .await
        .expect("the server kept the connection open")
        .ok();
    got
}

#[tokio::test]
async fn half_sent_requests_are_closed_by_the_server() {
    let (api, gateway, _dir) = start(Limits {
        header_read_timeout: SHORT,
        ..Limits::API
    })
    .await;
    for addr in [api, gateway] {
        // Nothing at all, and a header that never ends.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        read_until_closed(&mut silent).await;
        read_until_closed(&mut partial).await;
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_server() {
    let (api, _, _dir) = start(Limits {
        header_read_timeout: SHORT,
        ..Limits::API
    })
    .await;
    let mut sock = TcpStream::connect(api).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut sock).await).into_owned();
    // The request was answered, then the connection closed while idle.
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn the_connection_over_the_per_ip_cap_is_refused() {
    let cap = 4;
    let (api, gateway, _dir) = start(Limits {
        per_ip: cap,
        ..Limits::API
    })
    .await;
    for addr in [api, gateway] {
        let mut held = Vec::new();
        for _ in 0..cap {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Connections count from their accept, before they send anything
        // (the kernel hands them over in order).
        let mut over = TcpStream::connect(addr).await.unwrap();
        over.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let got = String::from_utf8_lossy(&read_until_closed(&mut over).await).into_owned();
        assert!(got.starts_with("HTTP/1.1 429"), "{addr}: {got}");
        assert!(got.contains(r#""code":"too_many_connections""#), "{got}");
        // One closed, one more is served.
        drop(held.pop());
        let mut again = None;
        for _ in 0..50 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let got = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
            if !got.starts_with("HTTP/1.1 429") {
                again = Some(got);
                break;
            }
            // The server has not yet seen the close of the dropped one.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = again.expect("a connection under the cap again was refused");
        assert!(!again.contains("too_many_connections"), "{again}");
    }
}

/// A router whose WebSocket sends one message after `delay`, then closes.
fn delayed_ws(delay: Duration) -> axum::Router {
    axum::Router::new().route(
        "/ws",
        get(move |ws: WebSocketUpgrade| async move {
            ws.on_upgrade(move |mut socket| async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send(Message::Text("still here".into())).await;
            })
        }),
    )
}

#[tokio::test]
async fn a_websocket_outlives_the_header_timeout_and_counts_against_the_cap() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let limits = Limits {
        header_read_timeout: SHORT,
        per_ip: 1,
        total: 10,
    };
    tokio::spawn(connections::serve(
        listener,
        delayed_ws(SHORT * 5),
        limits,
        stop,
    ));
    let mut ws = TcpStream::connect(addr).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    // While the WebSocket is open it holds this client's only connection.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let refused = String::from_utf8_lossy(&read_until_closed(&mut second).await).into_owned();
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    // The message sent well after the header timeout arrives.
    let got = String::from_utf8_lossy(&read_until_closed(&mut ws).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    assert!(got.contains("still here"), "{got}");
}
