//! TLS for the API with rustls (ring provider) from PEM certificate and
//! key files.
//!
//! [`TlsListener`] accepts TCP connections and runs each TLS handshake in
//! its own task (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow or silent
//! client never holds up the others; finished handshakes are handed to the
//! HTTP server in order of completion. Handshakes in progress are capped
//! per client IP and in all ([`HandshakeLimits`]): a connection over a cap
//! is closed at once, so connections that never finish a handshake cannot
//! pile up before the server's own connection caps (which count finished
//! ones) apply.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;
/// Handshakes one client IP may have in progress: a browser opens a few at
/// once, a client behind a NAT a few dozen.
pub const HANDSHAKES_PER_IP: usize = 32;
/// Handshakes in progress in all: each holds a socket for up to
/// [`HANDSHAKE_TIMEOUT`].
pub const HANDSHAKES_TOTAL: usize = 512;

/// How many handshakes may be in progress, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    pub per_ip: usize,
    pub total: usize,
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            per_ip: HANDSHAKES_PER_IP,
            total: HANDSHAKES_TOTAL,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Handshakes in progress, per client IP and in all.
#[derive(Default)]
struct InProgress {
    per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One handshake's place, given back when dropped.
struct Place {
    ip: std::net::IpAddr,
    counts: Arc<InProgress>,
}

impl InProgress {
    /// A place for a handshake from `ip`, or `None` over a cap.
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr, limits: &HandshakeLimits) -> Option<Place> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().sum();
        let mine = map.entry(ip).or_default();
        if *mine >= limits.per_ip || total >= limits.total {
            return None;
        }
        *mine += 1;
        Some(Place {
            ip,
            counts: self.clone(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut map = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Where the certificate chain and private key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Builds the acceptor; errors name the file and what is wrong with it.
pub fn acceptor(files: &TlsFiles) -> std::io::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &Path, what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("TLS: {}: {what}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(&files.cert, format!("cannot read certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad(&files.key, format!("cannot read the private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&files.key, format!("certificate and key do not fit: {e}")))?;
    // The API speaks HTTP/1.1 (axum is built without HTTP/2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listener whose connections are TLS streams.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        Self::with_limits(tcp, acceptor, HandshakeLimits::default())
    }

    /// [`Self::new`] with other handshake caps and timeout.
    pub fn with_limits(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        limits: HandshakeLimits,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let in_progress = Arc::new(InProgress::default());
        tokio::spawn(async move {
            while !tx.is_closed() {
                let (sock, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(error = %e, "accepting a TLS connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small writes (stream messages) go out at once.
                if let Err(e) = sock.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "setting TCP_NODELAY");
                }
                let Some(place) = in_progress.enter(peer.ip().to_canonical(), &limits) else {
                    tracing::debug!(%peer, "too many TLS handshakes in progress: closed");
                    drop(sock);
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(limits.timeout, acceptor.accept(sock)).await;
                    drop(place);
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when we are dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
