//! A TCP relay in front of a real server (PostgreSQL, say) that a test can
//! cut, as a network partition or a stopped server would be: while cut,
//! its open connections are closed and new ones are closed at once.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpRelay {
    port: u16,
    cut: watch::Sender<bool>,
}

impl TcpRelay {
    /// Relays `127.0.0.1:<port>` to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> std::io::Result<TcpRelay> {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut_rx = cut_rx.clone();
                if *cut_rx.borrow() {
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(TcpRelay { port, cut })
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts the relay (`true`) or lets connections through again.
    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// A TCP load balancer standing in for the one in front of several
/// orchestrator replicas: each connection goes to the next upstream in
/// turn, skipping those that refuse it (a killed replica) or do not answer
/// in time (a Pod's IP that went away), as a balancer's health checks
/// would.
pub struct Balancer {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Longest a connection to one upstream may take before the next is tried.
const UPSTREAM_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Balancer {
    /// Listens on `bind` (`ip:port`, port 0 for a free one) and spreads
    /// connections over `upstreams` (`host:port` each).
    pub async fn start(bind: &str, upstreams: Vec<String>) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstreams = upstreams.clone();
                let first = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    for i in 0..upstreams.len() {
                        let target = &upstreams[(first + i) % upstreams.len()];
                        // A dead upstream may not refuse (a Pod's IP
                        // that went away): the next one is tried.
                        let connect = TcpStream::connect(target);
                        if let Ok(Ok(mut server)) =
                            tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connect).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Balancer { addr, task })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address of this host that every session network reaches (the host
/// firewall then admits the gateway's port on it): Docker's default bridge
/// (`docker0`), else the address of the host's default route.
pub async fn host_address() -> anyhow::Result<String> {
    let ip = |args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new("ip")
            .args(args)
            .output()
            .await?;
        anyhow::Ok(String::from_utf8(out.stdout)?)
    };
    let docker0 = ip(&["-4", "-o", "addr", "show", "docker0"]).await?;
    let bridge = docker0
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next());
    if let Some(addr) = bridge {
        return Ok(addr.to_owned());
    }
    // `ip route get` only consults the routing table; nothing is sent.
    let route = ip(&["-4", "route", "get", "192.0.2.1"]).await?;
    route
        .split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no host address for the sessions to reach a balancer at"))
}
