//! How the API and the gateway hold connections: a header-read timeout, an
//! idle keep-alive timeout, and caps on concurrent connections per client
//! IP and in all.
//!
//! [`serve`] is the accept loop both listeners run (in place of
//! `axum::serve`, which offers none of these):
//! - **Header-read timeout.** A client that has not sent a request's full
//!   header [`Limits::header_read_timeout`] after it started (or after the
//!   connection was accepted) is disconnected, so half-sent requests cannot
//!   pile up.
//! - **Idle keep-alive timeout.** hyper runs the same timer while a
//!   keep-alive connection waits for its next request, so an idle
//!   connection is closed after the same time. Neither applies to a request
//!   being answered: a long response stream, a WebSocket or a `CONNECT`
//!   tunnel runs as long as it is used.
//! - **Connection caps.** At most [`Limits::per_ip`] connections from one
//!   client IP (on the gateway a session's container has its own address on
//!   its session network, so this is the cap per session) and
//!   [`Limits::total`] in all. A connection counts until its socket is
//!   closed, upgraded WebSockets and tunnels included. The connection over
//!   a cap is answered `429 too_many_connections` (per IP) or
//!   `503 too_many_connections` (in all) with the usual `{code, message}`
//!   body and closed.
//!
//! Every request carries the peer address as axum's `ConnectInfo`.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tower_service::Service;

/// Time a client has to send a request's header, and the longest an idle
/// keep-alive connection is kept. Generous for any real client on a slow
/// link; short enough that held sockets turn over.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one client IP may hold on the API: a CLI, a browser and a
/// few followed streams each take some; hundreds is an attack.
pub const API_CONNECTIONS_PER_IP: usize = 256;
/// Connections to the API in all.
pub const API_CONNECTIONS_TOTAL: usize = 4096;
/// Connections one session may hold to the gateway: Claude Code's API
/// calls, git, and package managers through the egress proxy (npm opens
/// dozens at once).
pub const GATEWAY_CONNECTIONS_PER_SESSION: usize = 512;
/// Connections to the gateway in all; a proxied one costs two descriptors.
pub const GATEWAY_CONNECTIONS_TOTAL: usize = 4096;
/// Longest a refused connection is kept while its answer is written and
/// what the client had sent is drained (so the close does not reset it).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// One listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// Concurrent connections from one client IP.
    pub per_ip: usize,
    /// Concurrent connections in all.
    pub total: usize,
}

impl Limits {
    /// The API's defaults.
    pub const API: Limits = Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        per_ip: API_CONNECTIONS_PER_IP,
        total: API_CONNECTIONS_TOTAL,
    };
    /// The gateway's defaults.
    pub const GATEWAY: Limits = Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        per_ip: GATEWAY_CONNECTIONS_PER_SESSION,
        total: GATEWAY_CONNECTIONS_TOTAL,
    };
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    PerIp,
    Total,
}

impl Refusal {
    /// The whole HTTP answer.
    fn response(self, limits: &Limits) -> String {
        let (status, message) = match self {
            Refusal::PerIp => (
                "429 Too Many Requests",
                format!(
                    "this client already holds {} connections, the most allowed; close some and retry",
                    limits.per_ip
                ),
            ),
            Refusal::Total => (
                "503 Service Unavailable",
                format!(
                    "the server already holds {} connections, the most allowed; retry later",
                    limits.total
                ),
            ),
        };
        let body =
            serde_json::json!({"code": "too_many_connections", "message": message}).to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Open connections, per client IP and in all.
#[derive(Debug, Default)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// Counts a connection until dropped.
struct Permit {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

fn admit(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &Limits) -> Result<Permit, Refusal> {
    let ip = ip.to_canonical();
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    if c.total >= limits.total {
        return Err(Refusal::Total);
    }
    let n = c.per_ip.entry(ip).or_default();
    if *n >= limits.per_ip {
        return Err(Refusal::PerIp);
    }
    *n += 1;
    c.total += 1;
    Ok(Permit {
        counts: counts.clone(),
        ip,
    })
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A connection's stream with its permit: the permit goes with the stream
/// into an upgrade (WebSocket, tunnel), so it counts until the socket is
/// closed.
struct Counted<I> {
    io: I,
    _permit: Permit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Answers a refused connection, then drains what the client sent (briefly)
/// so that closing does not reset the connection before it reads the
/// answer.
async fn refuse<I: AsyncRead + AsyncWrite + Unpin>(mut io: I, answer: String) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        io.write_all(answer.as_bytes()).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves `router` on `listener` under `limits` until `stop` turns true;
/// then stops accepting, lets in-flight requests finish and returns.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let counts = Arc::new(Mutex::new(Counts::default()));
    // Every connection task holds a sender; all dropped means all finished.
    let (running, mut finished) = tokio::sync::mpsc::channel::<()>(1);
    let timer = TokioTimer::new();
    loop {
        let stopping = async {
            let _ = stop.wait_for(|s| *s).await;
        };
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = stopping => break,
        };
        let permit = match admit(&counts, peer.ip(), &limits) {
            Ok(p) => p,
            Err(refusal) => {
                tracing::warn!(
                    %peer,
                    reason = ?refusal,
                    "refusing a connection over the connection cap"
                );
                tokio::spawn(refuse(io, refusal.response(&limits)));
                continue;
            }
        };
        let io = TokioIo::new(Counted {
            io,
            _permit: permit,
        });
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(req)
        });
        let (running, mut stop, timer) = (running.clone(), stop.clone(), timer.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(timer)
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(running);
        });
    }
    drop(running);
    let _ = finished.recv().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        per_ip: 2,
        total: 3,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_ip_and_in_all_and_releases_on_drop() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let a1 = admit(&counts, ip("10.0.0.1"), &SMALL).unwrap();
        let _a2 = admit(&counts, ip("::ffff:10.0.0.1"), &SMALL).unwrap();
        // The IPv4-mapped form is the same client.
        assert_eq!(
            admit(&counts, ip("10.0.0.1"), &SMALL).err(),
            Some(Refusal::PerIp)
        );
        let _b = admit(&counts, ip("10.0.0.2"), &SMALL).unwrap();
        assert_eq!(
            admit(&counts, ip("10.0.0.3"), &SMALL).err(),
            Some(Refusal::Total)
        );
        drop(a1);
        let _a3 = admit(&counts, ip("10.0.0.1"), &SMALL).unwrap();
        drop(_b);
        assert!(!counts.lock().unwrap().per_ip.contains_key(&ip("10.0.0.2")));
    }

    #[test]
    fn the_refusal_is_a_json_answer() {
        let r = Refusal::PerIp.response(&SMALL);
        assert!(r.starts_with("HTTP/1.1 429 "), "{r}");
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_connections");
        assert!(Refusal::Total.response(&SMALL).starts_with("HTTP/1.1 503 "));
    }
}
