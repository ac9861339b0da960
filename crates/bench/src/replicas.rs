//! Several replicas on PostgreSQL: two `claudecluster serve` processes on
//! one database (a schema of the run's own), their gateways behind a TCP
//! balancer, each trial:
//! - create → ready and command → first output on replica A, on
//!   PostgreSQL (the spawn and command phases measure the same on SQLite
//!   in the same run);
//! - failover: `kill -9` of A, then `GET …/diff` through B every
//!   [`POLL`] until it answers — the session served by the survivor, which
//!   needs its lease to run out and B to adopt the running container.
//!
//! A is started again (same replica ID) for the next trial. Every Docker
//! resource carries a prefix of the phase's own, removed at the end.

use crate::session::{anyhow_err, err, run_turn};
use crate::stats::Summary;
use cc_testkit::harness::{session_request, until_ready};
use cc_testkit::Harness;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How often the survivor is asked whether it serves the session.
const POLL: Duration = Duration::from_millis(25);
/// A failover that takes longer is an error (the platform promises 10 s).
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasResult {
    pub trials: usize,
    /// create → first `status ready`, on a replica on PostgreSQL.
    pub spawn_ms: Option<Summary>,
    /// WebSocket command → first `output`, on a replica on PostgreSQL.
    pub command_ms: Option<Summary>,
    /// `kill -9` of the owner → the survivor answers `GET …/diff`.
    pub failover_ms: Option<Summary>,
    pub errors: Vec<String>,
}

/// Where the replicas come from and what they talk to.
pub struct Setup<'a> {
    /// The `claudecluster` binary (`serve` is started from it).
    pub serve_bin: &'a Path,
    /// A PostgreSQL database the run may create a schema in.
    pub database_url: &'a str,
    pub image: &'a str,
}

pub async fn measure(
    h: &Harness,
    repo_url: &str,
    setup: &Setup<'_>,
    trials: usize,
) -> ReplicasResult {
    let mut out = ReplicasResult {
        trials,
        spawn_ms: None,
        command_ms: None,
        failover_ms: None,
        errors: Vec::new(),
    };
    match run(h, repo_url, setup, trials).await {
        Ok((spawn, command, failover)) => {
            out.spawn_ms = Summary::of(&spawn);
            out.command_ms = Summary::of(&command);
            out.failover_ms = Summary::of(&failover);
        }
        Err(e) => out.errors.push(e),
    }
    out
}

type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>);

async fn run(
    h: &Harness,
    repo_url: &str,
    setup: &Setup<'_>,
    trials: usize,
) -> Result<Samples, String> {
    let schema = Schema::create(setup.database_url).await?;
    let guard = cc_testkit::docker::PrefixGuard::new();
    let ports = [
        cc_testkit::ports::fixed_port(),
        cc_testkit::ports::fixed_port(),
    ];
    let host = cc_testkit::tcp_relay::host_address()
        .await
        .map_err(anyhow_err)?;
    let balancer = cc_testkit::tcp_relay::Balancer::start(
        &format!("{host}:0"),
        ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
    )
    .await
    .map_err(err)?;
    let dir = tempfile::tempdir().map_err(err)?;
    let key = dir.path().join("secret.key");
    std::fs::write(&key, cc_core::Token::generate().expose()).map_err(err)?;
    let replica = |i: usize| Replica {
        bin: setup.serve_bin.to_path_buf(),
        id: ["bench-a", "bench-b"][i],
        gateway_port: ports[i],
        gateway_url: format!("http://{}", balancer.addr()),
        image: setup.image.to_owned(),
        prefix: guard.prefix.clone(),
        model_url: h.model.base_url(),
        git_host: h.git.addr().to_string(),
        key: key.clone(),
        data: dir.path().join(["a", "b"][i]),
        database_url: schema.url.clone(),
    };
    let (a, b) = (replica(0), replica(1));
    let (_b_child, client_b) = b.start().await?;
    let request = session_request(repo_url, None, &h.api_key);
    let (mut spawn, mut command, mut failover) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials {
        let (mut a_child, client_a) = a.start().await?;
        let started = Instant::now();
        let id = client_a.create(&request).await.map_err(err)?.session_id;
        let mut ws = client_a.stream(&id, 0).await.map_err(err)?;
        until_ready(&mut ws, READY_TIMEOUT)
            .await
            .map_err(|e| format!("session {id} did not become ready: {e:#}"))?;
        spawn.push(started.elapsed());
        // A warm-up turn (Claude Code's first start), then the timed one.
        for warm in [true, false] {
            let turn = run_turn(&mut ws, "hello").await?;
            if turn.failed {
                return Err(format!("session {id}: a turn failed"));
            }
            if !warm {
                command.extend(turn.first_output);
            }
        }
        drop(ws);
        a_child.kill().await.map_err(err)?;
        let killed = Instant::now();
        loop {
            if client_b.diff(&id).await.is_ok() {
                failover.push(killed.elapsed());
                break;
            }
            if killed.elapsed() > FAILOVER_LIMIT {
                return Err(format!(
                    "session {id} was not taken over within {FAILOVER_LIMIT:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        client_b.delete(&id).await.map_err(err)?;
    }
    Ok((spawn, command, failover))
}

/// One replica's command line.
struct Replica {
    bin: PathBuf,
    id: &'static str,
    gateway_port: u16,
    gateway_url: String,
    image: String,
    prefix: String,
    model_url: String,
    git_host: String,
    key: PathBuf,
    data: PathBuf,
    database_url: String,
}

impl Replica {
    /// Starts `serve` and returns it with an admin client, once it listens.
    async fn start(&self) -> Result<(Child, cc_client::Client), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--replica-id", self.id])
            .args([
                "--gateway-listen",
                &format!("127.0.0.1:{}", self.gateway_port),
            ])
            .args(["--gateway-url", &self.gateway_url])
            .args(["--image", &self.image])
            .args(["--resource-prefix", &self.prefix])
            .args(["--anthropic-base-url", &self.model_url])
            .args(["--allow-repo-host", &self.git_host])
            // The failover poll asks every 25 ms: above the default limit.
            .args(["--rate-limit", "100000/10000"])
            .arg("--secret-key-file")
            .arg(&self.key)
            .arg("--data-dir")
            .arg(&self.data)
            .env("CLAUDECLUSTER_DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "error");
        crate::serve::start(cmd, &format!("replica {}", self.id)).await
    }
}

/// A schema of the run's own in the database, dropped at the end.
struct Schema {
    base: String,
    name: String,
    url: String,
}

impl Schema {
    async fn create(base: &str) -> Result<Self, String> {
        let name = format!("cc_bench_{}", &cc_core::Token::generate().expose()[..12]);
        exec(base, &format!("CREATE SCHEMA {name}")).await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{base}{sep}options=-c%20search_path%3D{name}"),
            base: base.to_owned(),
            name,
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (base, sql) = (
            self.base.clone(),
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
        // Outside async: a runtime of its own on another thread.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(exec(&base, &sql)))
        })
        .join();
    }
}

async fn exec(url: &str, sql: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to the database: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("{sql}: {e}"))
}
