//! `git-http-server`: serve the bare repositories under a directory over
//! smart HTTP (`git http-backend` behind an HTTP front), for the demo and
//! manual testing.
//!
//! Prints exactly one line, `listening on http://ADDR`, on stdout once
//! bound; logs go to stderr (`RUST_LOG`, default `info`). Exits on SIGTERM
//! or Ctrl-C.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use cc_testkit::git_server::GitServer;
use clap::Parser;

/// Serve bare git repositories over smart HTTP.
#[derive(Debug, Parser)]
#[command(name = "git-http-server", version)]
struct Args {
    /// Directory holding the bare repositories (`<name>.git`); created if missing.
    #[arg(long)]
    root: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Create repository `<NAME>.git` (one commit on `main` with a README.md)
    /// unless it already exists. May be repeated.
    #[arg(long, value_name = "NAME")]
    create: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let server = GitServer::start_at(args.root, args.listen).await?;
    for name in &args.create {
        let path = server.repo_path(name)?;
        if path.exists() {
            tracing::info!(repo = %name, "repository already exists");
            continue;
        }
        let readme = format!("# {name}\n\nServed by git-http-server.\n");
        let url = server.create_repo(name, &[("README.md", &readme)])?;
        tracing::info!(repo = %name, %url, "created repository");
    }

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", server.addr()).context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    tracing::info!(root = %server.root().display(), addr = %server.addr(), "serving");

    wait_for_signal().await?;
    tracing::info!("shutting down");
    drop(server);
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
