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
