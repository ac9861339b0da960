//! `claudecluster-sessiond`: the daemon inside every session container.
//!
//! It clones the session's repository, runs one long-lived Claude Code
//! process in it, journals everything that happens and serves the
//! orchestrator the contract in [`cc_wire::sessiond`].
//!
//! This module reads the configuration from the environment, starts the
//! HTTP server and handles SIGTERM/SIGINT (stop Claude Code gracefully,
//! end the event streams, exit 0).
//!
//! Before anything else the daemon makes itself non-dumpable
//! (`PR_SET_DUMPABLE` 0): Claude Code and every tool run as the same uid,
//! and a dumpable process of that uid could be ptraced, or have its
//! `/proc/<pid>/environ` (where [`TOKEN_VAR`] was, whatever `remove_var`
//! does to the copy in memory) and `/proc/<pid>/mem` read. Containers hold
//! no capabilities, so the daemon cannot switch to a uid of its own; the
//! flag is what keeps it out of the agent's reach. Its children get the
//! flag back at `execve`, so Claude Code and tools behave as usual.

mod agent;
mod api;
mod conversation;
mod diff;
mod files;
mod git;
mod journal;
mod oom;
mod push;
mod setup;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Environment variable holding the bearer token every request must carry.
const TOKEN_VAR: &str = "SESSIOND_TOKEN";
/// How long to wait for open HTTP connections to finish after shutdown.
const SERVER_DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// PATH handed to children when the daemon itself has none.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// HOME handed to children when the daemon itself has none.
const FALLBACK_HOME: &str = "/home/claude";

/// The daemon's configuration, read once at startup.
#[derive(Debug, Clone)]
pub struct Config {
    pub token: String,
    pub listen: SocketAddr,
    /// Claude Code executable (a bare name is looked up on PATH).
    pub claude_bin: String,
    /// Where the repository is (or gets) checked out.
    pub repo_dir: PathBuf,
    /// Claude Code's configuration directory, where it keeps its
    /// transcripts (see [`conversation`]); `None`: Claude Code's default.
    pub claude_config_dir: Option<PathBuf>,
    /// PATH and HOME handed on to children.
    pub path: String,
    pub home: String,
    /// `SESSIOND_ALLOW_LOCAL=1`: answer clients on this machine (sessiond
    /// run outside a container, in tests); in a session, clients inside the
    /// container are refused.
    pub allow_local: bool,
}

impl Config {
    /// Reads the configuration through `get` (the process environment in
    /// production, a map in tests).
    fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        stdin: impl FnOnce() -> std::io::Result<String>,
    ) -> Result<Self, String> {
        let token = if get(cc_wire::sessiond::TOKEN_FROM_STDIN).as_deref() == Some("1") {
            let line = stdin().map_err(|e| format!("reading the token from stdin: {e}"))?;
            Some(line.trim_end_matches(['\r', '\n']).to_owned())
        } else {
            get(TOKEN_VAR)
        };
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            format!(
                "no token: set {TOKEN_VAR}, or {}=1 and write it to stdin; refusing to start without it",
                cc_wire::sessiond::TOKEN_FROM_STDIN
            )
        })?;
        let listen = match get("SESSIOND_LISTEN").filter(|v| !v.is_empty()) {
            Some(v) => v
                .parse()
                .map_err(|e| format!("SESSIOND_LISTEN={v:?} is not an address:port: {e}"))?,
            None => SocketAddr::from(([0, 0, 0, 0], cc_wire::sessiond::DEFAULT_PORT)),
        };
        let claude_bin = get("SESSIOND_CLAUDE_BIN")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "claude".to_owned());
        let repo_dir: PathBuf = get("SESSIOND_REPO_DIR")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| cc_wire::sessiond::REPO_DIR.to_owned())
            .into();
        // Beside the checkout (in a session: `CLAUDE_CONFIG_DIR`, on the
        // workspace volume); set and empty: Claude Code's own default.
        let claude_config_dir = match get("SESSIOND_CLAUDE_CONFIG_DIR") {
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v.into()),
            None => Path::new(&repo_dir).parent().map(|p| p.join("claude")),
        };
        Ok(Self {
            token,
            listen,
            claude_bin,
            repo_dir,
            claude_config_dir,
            path: get("PATH")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| FALLBACK_PATH.to_owned()),
            home: get("HOME")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| FALLBACK_HOME.to_owned()),
            allow_local: get("SESSIOND_ALLOW_LOCAL").as_deref() == Some("1"),
        })
    }

    /// The complete environment of a child process: a clean base plus
    /// `extra` (which may override the base). Nothing else of the daemon's
    /// environment — in particular not its token — is inherited.
    pub fn child_env(&self, extra: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = [
            ("PATH", self.path.as_str()),
            ("HOME", self.home.as_str()),
            ("LANG", "C.UTF-8"),
            ("TERM", "dumb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.into_iter().collect()
    }
}

fn main() -> ExitCode {
    // First of all, while the token is in memory and before any thread or
    // child exists.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("claudecluster-sessiond: cannot make itself non-dumpable: {e}");
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let read_line = || {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    };
    let config = match Config::from_lookup(|k| std::env::var(k).ok(), read_line) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("claudecluster-sessiond: {e}");
            return ExitCode::from(2);
        }
    };
    // Children get an explicit clean environment anyway; dropping the token
    // here as well (still single-threaded) keeps it out of anything that
    // might read the daemon's own environment later.
    std::env::remove_var(TOKEN_VAR);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("claudecluster-sessiond: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        protocol = cc_wire::sessiond::PROTOCOL_VERSION,
        "listening on {local}"
    );

    let config = Arc::new(config);
    let journal = Arc::new(journal::Journal::new());
    oom::spawn_watch(Arc::clone(&journal));
    let session = agent::Session::new(Arc::clone(&config), Arc::clone(&journal));
    let app = api::router(
        api::AppState::new(&config.token, Arc::clone(&session), Arc::clone(&journal))
            .allowing_local(config.allow_local),
    )
    .into_make_service_with_connect_info::<api::Peer>();

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = api::NoDelayListener(listener);
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });

    tokio::select! {
        signal = shutdown_signal() => tracing::info!("received {signal}, shutting down"),
        result = &mut server => {
            // The server only ends on its own when something broke.
            tracing::error!("HTTP server stopped unexpectedly: {result:?}");
            session.shutdown().await;
            return ExitCode::FAILURE;
        }
    }

    session.shutdown().await;
    // Ends the following event streams so the server can drain.
    journal.close();
    let _ = stop_tx.send(());
    if tokio::time::timeout(SERVER_DRAIN_TIMEOUT, server)
        .await
        .is_err()
    {
        tracing::warn!("open connections did not close in time; exiting anyway");
    }
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM (what `docker stop` sends) or SIGINT.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install the SIGTERM handler: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(
            |k| map.get(k).cloned(),
            || panic!("stdin is read only when asked to"),
        )
    }

    #[test]
    fn token_is_required() {
        let err = config(&[]).unwrap_err();
        assert!(err.contains("SESSIOND_TOKEN"), "{err}");
        assert!(config(&[("SESSIOND_TOKEN", "")]).is_err());
    }

    #[test]
    fn the_token_comes_from_stdin_when_asked_to() {
        let lookup = |k: &str| (k == cc_wire::sessiond::TOKEN_FROM_STDIN).then(|| "1".to_owned());
        let c = Config::from_lookup(lookup, || Ok("from-stdin\n".into())).unwrap();
        assert_eq!(c.token, "from-stdin");
        let err = Config::from_lookup(lookup, || Ok(String::new())).unwrap_err();
        assert!(err.contains("no token"), "{err}");
        let err =
            Config::from_lookup(lookup, || Err(std::io::ErrorKind::BrokenPipe.into())).unwrap_err();
        assert!(err.contains("stdin"), "{err}");
    }

    #[test]
    fn defaults_and_overrides() {
        let c = config(&[("SESSIOND_TOKEN", "t")]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:7700".parse().unwrap());
        assert_eq!(c.claude_bin, "claude");
        assert_eq!(c.repo_dir, PathBuf::from(cc_wire::sessiond::REPO_DIR));
        // On the workspace volume, beside the checkout.
        assert_eq!(
            c.claude_config_dir,
            Some(PathBuf::from("/workspace/claude"))
        );
        let c = config(&[
            ("SESSIOND_TOKEN", "t"),
            ("SESSIOND_LISTEN", "127.0.0.1:1234"),
            ("SESSIOND_CLAUDE_BIN", "/x/claude"),
            ("SESSIOND_REPO_DIR", "/tmp/r"),
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1234".parse().unwrap());
        assert_eq!(c.claude_bin, "/x/claude");
        assert_eq!(c.repo_dir, PathBuf::from("/tmp/r"));
        assert_eq!(c.claude_config_dir, Some(PathBuf::from("/tmp/claude")));
        let own = config(&[("SESSIOND_TOKEN", "t"), ("SESSIOND_CLAUDE_CONFIG_DIR", "")]).unwrap();
        assert_eq!(
            own.claude_config_dir, None,
            "set and empty: Claude Code's default"
        );
        assert!(config(&[("SESSIOND_TOKEN", "t"), ("SESSIOND_LISTEN", "nope")]).is_err());
    }

    #[test]
    fn child_env_is_clean_plus_extra() {
        let c = config(&[
            ("SESSIOND_TOKEN", "secret"),
            ("PATH", "/bin"),
            ("HOME", "/h"),
        ])
        .unwrap();
        let extra = BTreeMap::from([
            ("ANTHROPIC_BASE_URL".to_owned(), "http://gw".to_owned()),
            ("TERM".to_owned(), "xterm".to_owned()),
        ]);
        let env: HashMap<_, _> = c.child_env(&extra).into_iter().collect();
        assert_eq!(env.len(), 5);
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["HOME"], "/h");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert_eq!(env["TERM"], "xterm");
        assert_eq!(env["ANTHROPIC_BASE_URL"], "http://gw");
        assert!(!env.values().any(|v| v == "secret"));
    }
}
