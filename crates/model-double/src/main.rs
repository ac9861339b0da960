//! `model-double` binary: serves the scriptable Messages API fake.
//!
//! Prints exactly one line `listening on http://ADDR` on stdout once bound,
//! logs to stderr, and exits on SIGTERM or Ctrl-C.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use cc_model_double::{serve, ModelDoubleConfig};
use clap::Parser;
use tokio::net::TcpListener;

/// A scriptable fake of the Anthropic Messages API.
#[derive(Debug, Parser)]
#[command(name = "model-double", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Only accept requests presenting this API key (x-api-key or bearer).
    #[arg(long, env = "MODEL_DOUBLE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Delay in milliseconds before the first byte of every response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, auth = args.api_key.is_some(), latency_ms = args.latency_ms, "model double started");

    let config = ModelDoubleConfig {
        api_key: args.api_key,
        latency_ms: args.latency_ms,
    };
    serve(listener, config, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("model double stopped");
    Ok(())
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
