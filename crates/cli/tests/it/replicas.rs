//! Two `claudecluster serve` replicas on one PostgreSQL (a schema of the
//! test server's own, see `database`), real Docker, the real Claude Code and
//! the model double. Sessions reach the gateway through a TCP balancer in
//! front of both replicas' gateways (a load balancer's stand-in), bound on
//! the host's Docker bridge address.
//!
//! - Any replica serves any session: created through A, streamed through B,
//!   a command sent on B's WebSocket runs in A's session.
//! - `kill -9` of the owner in the middle of a turn: the survivor takes the
//!   session over (its lease ran out), the turn completes, its model calls
//!   go through the survivor's gateway with the session's own token, and a
//!   client reconnecting with `since` gets every event exactly once.
//! - Webhooks queued by either replica are delivered once, by one of them.

use super::database::Schema;
use super::{await_ready, cli, run_turn, spawn_serve, TURN_TIMEOUT};
use anyhow::Context;
use cc_testkit::harness::{is_state, output_text, read_until, summary};
use cc_wire::api::{ServerMessage, SessionState};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ADMIN: &str = "replicas-admin-token-0123456789";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Every message's `seq`, in order.
fn seqs(msgs: &[ServerMessage]) -> Vec<u64> {
    msgs.iter()
        .map(ServerMessage::seq)
        .filter(|s| *s > 0)
        .collect()
}

/// Two replicas on one database schema, their gateways behind one
/// balancer, with the model double and a git server; every Docker resource
/// under one guard's prefix.
struct Pair {
    schema: Schema,
    image: String,
    api_key: String,
    model: cc_model_double::ModelDouble,
    git: cc_testkit::git_server::GitServer,
    gateway_ports: [u16; 2],
    _balancer: cc_testkit::tcp_relay::Balancer,
    gateway_url: String,
    guard: cc_testkit::docker::PrefixGuard,
    home: tempfile::TempDir,
    data: [tempfile::TempDir; 2],
}

impl Pair {
    async fn new() -> anyhow::Result<Option<Self>> {
        let Some(schema) = Schema::create().await else {
            return Ok(None);
        };
        let image = std::env::var("CLAUDECLUSTER_TEST_IMAGE")
            .context("CLAUDECLUSTER_TEST_IMAGE: the worker image to run")?;
        let api_key = format!("sk-ant-replicas-{}", cc_core::Token::generate().expose());
        let model = cc_model_double::spawn(cc_model_double::ModelDoubleConfig {
            api_key: Some(api_key.clone()),
            latency_ms: 0,
        })
        .await?;
        let git = cc_testkit::git_server::GitServer::start().await?;
        // Each replica's gateway on a loopback port of its own, both behind
        // one balancer the sessions reach.
        let gateway_ports = [
            cc_testkit::ports::fixed_port(),
            cc_testkit::ports::fixed_port(),
        ];
        let balancer = cc_testkit::tcp_relay::Balancer::start(
            &format!("{}:0", cc_testkit::tcp_relay::host_address().await?),
            gateway_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
        )
        .await?;
        let gateway_url = format!("http://{}", balancer.addr());
        let home = tempfile::tempdir()?;
        std::fs::write(
            home.path().join("secret.key"),
            cc_core::Token::generate().expose(),
        )?;
        Ok(Some(Self {
            schema,
            image,
            api_key,
            model,
            git,
            gateway_ports,
            _balancer: balancer,
            gateway_url,
            guard: cc_testkit::docker::PrefixGuard::new(),
            home,
            data: [tempfile::tempdir()?, tempfile::tempdir()?],
        }))
    }

    /// Starts replica `i` (0: `replica-a`, 1: `replica-b`) with `extra`
    /// flags; returns it with an admin client of its API.
    async fn serve(
        &self,
        i: usize,
        extra: &[&str],
    ) -> anyhow::Result<(tokio::process::Child, cc_client::Client)> {
        let mut c = cli(self.home.path());
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .args([
                "--gateway-listen",
                &format!("127.0.0.1:{}", self.gateway_ports[i]),
            ])
            .args(["--gateway-url", &self.gateway_url])
            .args(["--replica-id", ["replica-a", "replica-b"][i]])
            .args(["--image", &self.image, "--admin-token", ADMIN])
            .args(["--resource-prefix", &self.guard.prefix])
            .args(["--anthropic-base-url", &self.model.base_url()])
            .args(["--allow-repo-host", &self.git.addr().to_string()])
            .args(extra)
            .arg("--secret-key-file")
            .arg(self.home.path().join("secret.key"))
            .arg("--data-dir")
            .arg(self.data[i].path())
            .env("CLAUDECLUSTER_DATABASE_URL", &self.schema.url)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit());
        let (child, base) = spawn_serve(c).await?;
        Ok((
            child,
            cc_client::Client::with_token(base, Some(ADMIN.into()))?,
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_one_session_and_the_survivor_takes_it_over() -> anyhow::Result<()> {
    let Some(pair) = Pair::new().await? else {
        return Ok(());
    };
    let repo = pair
        .git
        .create_repo("replicated", &[("README.md", "# Two replicas\n")])?;
    let (mut a, client_a) = pair.serve(0, &[]).await?;
    let (mut b, client_b) = pair.serve(1, &[]).await?;
    let (api_key, guard) = (&pair.api_key, &pair.guard);

    // Created through A, followed through B from the beginning.
    let request = cc_testkit::harness::session_request(&repo, None, api_key);
    let id = client_a.create(&request).await?.session_id;
    let mut ws = client_b.stream(&id, 0).await?;
    await_ready(&mut ws, READY_TIMEOUT).await?;

    // A command on B's socket runs in A's session (B forwards it).
    let turn = run_turn(&mut ws, "bash: cat README.md").await?;
    assert!(
        output_text(&turn).contains("# Two replicas")
            && is_state(turn.last().unwrap(), SessionState::Ready),
        "{}",
        summary(&turn)
    );
    assert_eq!(client_b.status(&id).await?.state, SessionState::Ready);

    // A second turn through B's REST API, long enough to kill A in it.
    client_b
        .command(
            &id,
            "bash: sleep 8; echo survived > after.txt; cat after.txt",
        )
        .await?;
    read_until(&mut ws, TURN_TIMEOUT, |m| is_state(m, SessionState::Busy)).await?;
    a.kill().await?;
    let killed = Instant::now();
    // B takes the session over once A's lease runs out; the turn finishes.
    let rest = read_until(&mut ws, TURN_TIMEOUT, |m| {
        is_state(m, SessionState::Ready) || is_state(m, SessionState::Error)
    })
    .await?;
    assert!(
        is_state(rest.last().unwrap(), SessionState::Ready)
            && output_text(&rest).contains("survived"),
        "the turn did not complete after the owner died: {}",
        summary(&rest)
    );
    eprintln!(
        "turn completed {:?} after the owner was killed",
        killed.elapsed()
    );
    // B runs it now: a command through B is served by B itself.
    let turn = run_turn(&mut ws, "bash: ls").await?;
    assert!(
        output_text(&turn).contains("after.txt"),
        "{}",
        summary(&turn)
    );

    // A client reconnecting with `since` gets every event once, in order,
    // whichever replica it lands on: here through one API address in front
    // of both (A is gone, so B answers).
    let api = cc_testkit::tcp_relay::Balancer::start(
        "127.0.0.1:0",
        [client_a.base_url(), client_b.base_url()]
            .iter()
            .map(|u| {
                u.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect(),
    )
    .await?;
    let client_b =
        cc_client::Client::with_token(format!("http://{}", api.addr()), Some(ADMIN.into()))?;
    let logs = client_b.logs(&id, 0, 1000).await?;
    let all = seqs(&logs.events);
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "the log has gaps or repeats"
    );
    let mid = all[all.len() / 2];
    let mut again = client_b.stream(&id, mid).await?;
    let tail = read_until(&mut again, TURN_TIMEOUT, |m| {
        m.seq() == *all.last().unwrap()
    })
    .await?;
    assert_eq!(
        seqs(&tail),
        ((mid + 1)..=*all.last().unwrap()).collect::<Vec<_>>()
    );

    // Delete through B: everything of the session goes.
    client_b.delete(&id).await?;
    let status = client_b.status(&id).await?;
    assert_eq!(status.state, SessionState::Terminated, "{status:?}");
    assert_eq!(guard.all_leftovers(), Vec::<String>::new());
    b.kill().await?;
    Ok(())
}

/// Create/delete cycles this test runs, spread over both replicas.
const CYCLES: usize = 200;
/// Cycles in flight at once.
const WORKERS: usize = 4;

/// 200 create/delete cycles over both replicas — each session created on
/// one and deleted through the other — with replica A killed (`kill -9`)
/// half-way while cycles are in flight, and three of its sessions kept
/// running across the kill: B takes over what A left, every session ends,
/// nothing is left behind (containers, networks, volumes, host rules, live
/// rows), and no session was taken over more than once (its lease's
/// fencing number: 1 from its create, 2 after one takeover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_over_two_replicas_with_one_killed_leaves_nothing_behind() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(pair) = Pair::new().await? else {
        return Ok(());
    };
    let repo = pair
        .git
        .create_repo("churn", &[("README.md", "# Churn\n")])?;
    // Sweeps every 2 s: what a killed replica was creating is removed soon.
    // Room for the kept sessions, the cycles in flight and what the killed
    // replica leaves live (the per-user create lock is still taken).
    let fast = ["--reconcile-interval", "2", "--max-sessions-per-user", "50"];
    let (mut a, client_a) = pair.serve(0, &fast).await?;
    let (mut b, client_b) = pair.serve(1, &fast).await?;
    let request = cc_testkit::harness::session_request(&repo, None, &pair.api_key);

    // Three sessions of A's, ready, to live through its death.
    let mut kept = Vec::new();
    for _ in 0..3 {
        let id = client_a.create(&request).await?.session_id;
        let mut ws = client_a.stream(&id, 0).await?;
        await_ready(&mut ws, READY_TIMEOUT).await?;
        kept.push(id);
    }

    let clients = Arc::new([client_a, client_b.clone()]);
    let a_dead = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (clients, a_dead, done, next) =
            (clients.clone(), a_dead.clone(), done.clone(), next.clone());
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= CYCLES {
                    return errors;
                }
                // Created on one replica, deleted through the other; only B
                // once A is dead (a client retries on B, as it would behind
                // a balancer).
                let (on, off) = if a_dead.load(Ordering::SeqCst) {
                    (1, 1)
                } else {
                    (i % 2, (i + 1) % 2)
                };
                let created = match clients[on].create(&request).await {
                    Ok(c) => c.session_id,
                    Err(_) if on == 0 && a_dead.load(Ordering::SeqCst) => {
                        continue;
                    }
                    Err(e) => {
                        errors.push(format!("cycle {i}: create on {on}: {e}"));
                        continue;
                    }
                };
                let off = if a_dead.load(Ordering::SeqCst) {
                    1
                } else {
                    off
                };
                if let Err(e) = clients[off].delete(&created).await {
                    // A died with the request in flight: B ends it below.
                    if !a_dead.load(Ordering::SeqCst) {
                        errors.push(format!("cycle {i}: delete {created} on {off}: {e}"));
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while done.load(Ordering::SeqCst) < CYCLES / 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a_dead.store(true, Ordering::SeqCst);
    a.kill().await?;
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await?);
    }
    assert!(errors.is_empty(), "cycles failed: {errors:#?}");

    // B took A's kept sessions over: they run, and B serves them.
    for id in &kept {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = client_b.status(id).await?;
            if st.state == SessionState::Ready {
                break;
            }
            assert!(Instant::now() < deadline, "{id} was not taken over: {st:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut ws = client_b.stream_from_now(id).await?;
        let turn = run_turn(&mut ws, "bash: cat README.md").await?;
        assert!(output_text(&turn).contains("# Churn"), "{}", summary(&turn));
    }

    // Everything still live is B's now (taken over, or never deleted
    // because A died mid-cycle): delete it through B.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let live = client_b.list(false).await?;
        if live.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "sessions still live: {live:?}");
        for s in live {
            // A session A was creating may still be taken over; retried.
            let _ = client_b.delete(&s.session_id).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing left: what A was creating when it died is swept as an orphan.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = pair.guard.all_leftovers();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Each session was taken over at most once, only from A, and all ended.
    let rows = query(
        &pair.schema.url,
        "SELECT id, state, lease_holder, lease_fence FROM sessions",
    )
    .await;
    assert!(
        rows.len() >= CYCLES / 2,
        "only {} sessions stored",
        rows.len()
    );
    for r in &rows {
        let (id, state, holder, fence): (String, String, Option<String>, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(state == "terminated" || state == "error", "{id} is {state}");
        assert!(
            (1..=2).contains(&fence),
            "{id} has fence {fence}: taken over twice?"
        );
        if fence == 2 {
            assert_eq!(holder.as_deref(), Some("replica-b"), "{id}");
        }
    }
    for id in &kept {
        let r = rows.iter().find(|r| r.get::<_, String>(0) == *id).unwrap();
        assert_eq!(r.get::<_, i64>(3), 2, "{id} was taken over once");
    }
    b.kill().await?;
    Ok(())
}

/// Rows of `sql` on the test database.
async fn query(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.query(sql, &[]).await.expect(sql)
}

/// The per-user session limit holds across replicas: two creates at once,
/// one on each replica, with room for one session — exactly one passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_session_limit_holds_across_replicas() -> anyhow::Result<()> {
    let Some(pair) = Pair::new().await? else {
        return Ok(());
    };
    let repo = pair
        .git
        .create_repo("limit", &[("README.md", "# Limit\n")])?;
    let one = ["--max-sessions-per-user", "1"];
    let (mut a, client_a) = pair.serve(0, &one).await?;
    let (mut b, client_b) = pair.serve(1, &one).await?;
    let request = cc_testkit::harness::session_request(&repo, None, &pair.api_key);
    for round in 0..3 {
        let (on_a, on_b) = tokio::join!(client_a.create(&request), client_b.create(&request));
        let created: Vec<_> = [&on_a, &on_b]
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|c| c.session_id.clone())
            .collect();
        let refused = [&on_a, &on_b]
            .iter()
            .filter(|r| r.as_ref().err().and_then(|e| e.code()) == Some("too_many_sessions"))
            .count();
        assert_eq!(
            (created.len(), refused),
            (1, 1),
            "round {round}: {on_a:?} / {on_b:?}"
        );
        client_b.delete(&created[0]).await?;
    }
    assert_eq!(pair.guard.all_leftovers(), Vec::<String>::new());
    a.kill().await?;
    b.kill().await?;
    Ok(())
}

/// Both replicas deliver webhooks from one queue: every event of sessions
/// created and deleted through either of them reaches the endpoint once,
/// never twice (each delivery is claimed by one replica at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_delivered_once_by_two_replicas() -> anyhow::Result<()> {
    let Some(pair) = Pair::new().await? else {
        return Ok(());
    };
    let receiver = cc_testkit::webhook_receiver::WebhookReceiver::start(0).await?;
    let allow = ["--allow-webhook-host", &receiver.host_port()];
    let (mut a, client_a) = pair.serve(0, &allow).await?;
    let (mut b, client_b) = pair.serve(1, &allow).await?;
    let hook = client_a
        .create_webhook(&cc_wire::api::WebhookRequest {
            url: receiver.url(),
            events: vec!["session.created".into(), "session.terminated".into()],
            description: None,
            all_sessions: true,
        })
        .await?;
    let repo = pair
        .git
        .create_repo("hooked", &[("README.md", "# Hooked\n")])?;
    let request = cc_testkit::harness::session_request(&repo, None, &pair.api_key);
    const SESSIONS: usize = 4;
    for n in 0..SESSIONS {
        let (create_on, delete_on) = if n % 2 == 0 {
            (&client_a, &client_b)
        } else {
            (&client_b, &client_a)
        };
        let id = create_on.create(&request).await?.session_id;
        delete_on.delete(&id).await?;
    }
    receiver
        .wait_for(Duration::from_secs(60), |got| got.len() >= 2 * SESSIONS)
        .await?;
    // Both replicas keep polling: a duplicate would arrive within a poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "a delivery arrived twice: {got:#?}");
    assert_eq!(got.len(), 2 * SESSIONS);
    assert!(got.iter().all(|r| r.verifies(&hook.secret)));
    let log = client_b.webhook_deliveries(&hook.info.id, 100).await?;
    assert_eq!(log.len(), 2 * SESSIONS);
    assert!(
        log.iter()
            .all(|d| d.state == "delivered" && d.attempts == 1),
        "{log:#?}"
    );
    a.kill().await?;
    b.kill().await?;
    Ok(())
}
