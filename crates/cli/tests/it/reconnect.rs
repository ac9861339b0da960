//! `session send` in trouble: a lost connection mid-turn (the CLI
//! reconnects with `since=<last seq>` and the turn's text arrives whole,
//! nothing missed or repeated), and Ctrl-C, which interrupts the turn.

use super::{cli, describe, ready_session, stderr, stdout};
use cc_testkit::Harness;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy whose open connections can be cut at once, as a network
/// failure would; new connections are accepted afterwards.
struct Proxy {
    url: String,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", l.local_addr()?);
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                list.lock().unwrap().push(task);
            }
        });
        Ok(Self { url, conns, accept })
    }

    /// Drops every open connection.
    fn cut(&self) -> usize {
        let tasks: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        let n = tasks.iter().filter(|t| !t.is_finished()).count();
        for t in tasks {
            t.abort();
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_survives_a_lost_connection_and_ctrl_c_interrupts_it() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let id = ready_session(&h, "reconnect").await?;
    let upstream: SocketAddr = h.client.base_url().trim_start_matches("http://").parse()?;
    let proxy = Proxy::start(upstream).await?;
    let home = tempfile::tempdir()?;
    let words: Vec<String> = (1..=16).map(|i| format!("w{i:02}")).collect();
    let task = format!("slow: 8000 {}", words.join(" "));
    let mut child = cli(home.path())
        .args(["session", "send", &id, &task, "--url", &proxy.url])
        .env("CLAUDECLUSTER_TOKEN", &h.user_token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().expect("piped");

    // Read until the turn is under way, then cut the network.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(120), async {
        while !String::from_utf8_lossy(&seen).contains("w03") {
            let n = out.read(&mut buf).await?;
            anyhow::ensure!(
                n > 0,
                "stdout closed early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await??;
    let cut = proxy.cut();
    assert!(cut >= 1, "the stream's connection was open");

    out.read_to_end(&mut seen).await?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .await?;
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait()).await??;
    let o = std::process::Output {
        status,
        stdout: seen,
        stderr: err.into_bytes(),
    };
    assert!(o.status.success(), "{}", describe(&o));
    let text = stdout(&o);
    for w in &words {
        assert_eq!(
            text.matches(w.as_str()).count(),
            1,
            "{w} once: {}",
            describe(&o)
        );
    }
    let positions: Vec<usize> = words.iter().filter_map(|w| text.find(w.as_str())).collect();
    assert!(
        positions.windows(2).all(|p| p[0] < p[1]),
        "in order: {text}"
    );
    assert!(text.contains("✓ done"), "{}", describe(&o));
    assert!(stderr(&o).contains("reconnected"), "{}", describe(&o));

    // Ctrl-C (SIGINT) during `send` interrupts the turn: the command ends
    // soon with a failure, the session stays usable.
    let mut child = cli(home.path())
        .args([
            "session",
            "send",
            &id,
            "slow: 20000 i01 i02 i03 i04 i05 i06 i07 i08 i09 i10",
        ])
        .args(["--url", h.client.base_url()])
        .env("CLAUDECLUSTER_TOKEN", &h.user_token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().expect("piped");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while !String::from_utf8_lossy(&seen).contains("i02") {
            let n = out.read(&mut buf).await?;
            anyhow::ensure!(
                n > 0,
                "stdout closed early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await??;
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()?;
    assert!(killed.success());
    out.read_to_end(&mut seen).await?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .await?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    let o = std::process::Output {
        status,
        stdout: seen,
        stderr: err.into_bytes(),
    };
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("interrupting the turn"),
        "{}",
        describe(&o)
    );
    assert!(stdout(&o).contains('✗'), "{}", describe(&o));
    assert!(!stdout(&o).contains("i10"), "cut short: {}", describe(&o));
    assert!(h.client.status(&id).await?.state.is_live());
    drop(proxy);
    h.shutdown().await;
    Ok(())
}
