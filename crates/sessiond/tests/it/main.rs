//! Integration tests: the built `claudecluster-sessiond` binary, a fake
//! Claude Code (`fake_claude.sh`) and a local bare repository cloned over
//! `file://`.

use cc_wire::sessiond::{
    AgentEvent, AgentState, ClaudeSettings, CommandAccepted, DecisionSource, ErrorBody, Health,
    InitRequest, JournalEntry, PermissionDecision, PROTOCOL_VERSION,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "it-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);
const FAKE_CLAUDE: &str = include_str!("fake_claude.sh");

/// A temp dir with a bare repository (`main` and `feature` branches) and the
/// fake Claude Code script.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README.md"), "hello\n").unwrap();
        git(&work, &["add", "README.md"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(&work, &["branch", "feature"]);
        git(
            root,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                root.join("repo.git").to_str().unwrap(),
            ],
        );
        let script = root.join("fake-claude");
        std::fs::write(&script, FAKE_CLAUDE).unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(&script)
            .status()
            .unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn clone_url(&self) -> String {
        format!("file://{}", self.path().join("repo.git").display())
    }

    fn repo_dir(&self) -> PathBuf {
        self.path().join("workspace").join("repo")
    }

    fn init_request(&self, branch: Option<&str>) -> InitRequest {
        InitRequest {
            clone_url: self.clone_url(),
            git_headers: vec![
                "X-Relay-Token: relay-1".into(),
                "X-Relay-Session: s-1".into(),
            ],
            branch: branch.map(str::to_owned),
            claude: ClaudeSettings {
                args: vec!["--model".into(), "fake-model".into()],
                env: BTreeMap::from([("FAKE_EXTRA".to_owned(), "extra-value".to_owned())]),
            },
            instructions: None,
            push_branch: Some("claudecluster/s-1".into()),
            fork: false,
            permission_timeout_secs: None,
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running daemon; killed when dropped.
struct Daemon {
    child: Option<Child>,
    base: String,
    client: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Daemon {
    async fn start(fx: &Fixture) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_claudecluster-sessiond"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", fx.path().join("home"))
            .env("SESSIOND_TOKEN", TOKEN)
            .env("SESSIOND_ALLOW_LOCAL", "1")
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
            .env("SESSIOND_CLAUDE_BIN", fx.path().join("fake-claude"))
            .env("SESSIOND_REPO_DIR", fx.repo_dir())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(resp) = daemon.get("/v1/health").send().await {
                assert_eq!(resp.status(), 200);
                return daemon;
            }
            assert!(Instant::now() < deadline, "sessiond did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    async fn health(&self) -> Health {
        self.get("/v1/health")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn init(&self, req: &InitRequest) -> reqwest::Response {
        self.post("/v1/init").json(req).send().await.unwrap()
    }

    async fn command(&self, text: &str) -> u64 {
        let resp = self
            .post("/v1/command")
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        resp.json::<CommandAccepted>().await.unwrap().seq
    }

    async fn events(&self, since: u64) -> Vec<JournalEntry> {
        let resp = self
            .get(&format!("/v1/events?since={since}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/x-ndjson"
        );
        let text = resp.text().await.unwrap();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Polls the journal until an entry matches; returns the journal.
    async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&JournalEntry) -> bool,
    ) -> Vec<JournalEntry> {
        let deadline = Instant::now() + WAIT;
        loop {
            let entries = self.events(0).await;
            if entries.iter().any(&pred) {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; journal: {entries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn follow(&self, since: u64) -> Follower {
        let resp = self
            .get(&format!("/v1/events?since={since}&follow=true"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        Follower {
            resp,
            buf: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sessiond did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `follow=true` events stream.
struct Follower {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Follower {
    /// The next entry (heartbeats skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<JournalEntry> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.len() > 1 {
                    return Some(serde_json::from_slice(&line[..line.len() - 1]).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("follow stream stalled")
                .unwrap()?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Entries until (and including) the first one matching `pred`.
    async fn until(&mut self, pred: impl Fn(&JournalEntry) -> bool) -> Vec<JournalEntry> {
        let mut out = Vec::new();
        loop {
            let entry = self.next().await.expect("stream ended early");
            let done = pred(&entry);
            out.push(entry);
            if done {
                return out;
            }
        }
    }
}

fn is_state(e: &JournalEntry, state: AgentState) -> bool {
    matches!(&e.event, AgentEvent::State { state: s, .. } if *s == state)
}

fn claude_type(e: &JournalEntry) -> Option<&str> {
    match &e.event {
        AgentEvent::Claude { data } => data.get("type").and_then(Value::as_str),
        _ => None,
    }
}

fn seqs(entries: &[JournalEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

async fn init_ready(d: &Daemon, fx: &Fixture) {
    let resp = d.init(&fx.init_request(Some("main"))).await;
    assert_eq!(resp.status(), 202);
    d.wait_for("ready", |e| is_state(e, AgentState::Ready))
        .await;
}

#[test]
fn refuses_to_start_without_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_claudecluster-sessiond"))
        .env_clear()
        .env("SESSIOND_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SESSIOND_TOKEN"));
}

#[tokio::test]
async fn unauthorized_without_token() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;
    for auth in [None, Some("Bearer nope"), Some(TOKEN)] {
        let mut req = d.client.get(format!("{}/v1/health", d.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, "unauthorized");
    }
    let resp = d
        .client
        .post(format!("{}/v1/init", d.base))
        .json(&fx.init_request(None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(d.health().await.state, AgentState::Idle);
}

#[tokio::test]
async fn session_flow() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;

    let h = d.health().await;
    assert_eq!(h.protocol_version, PROTOCOL_VERSION);
    assert_eq!(h.state, AgentState::Idle);
    assert_eq!(h.last_seq, 0);

    // Not ready before init.
    let resp = d
        .post("/v1/command")
        .json(&serde_json::json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let err: ErrorBody = resp.json().await.unwrap();
    assert_eq!(err.code, "not_ready");
    assert!(err.message.contains("idle"), "{}", err.message);

    // A follower from the very beginning sees everything exactly once.
    let mut from_start = d.follow(0).await;

    let req = fx.init_request(Some("main"));
    let resp = d.init(&req).await;
    assert_eq!(resp.status(), 202);
    let h: Health = resp.json().await.unwrap();
    assert_eq!(h.state, AgentState::Cloning);
    let journal = d
        .wait_for("ready", |e| is_state(e, AgentState::Ready))
        .await;
    assert!(is_state(&journal[0], AgentState::Cloning));
    assert_eq!(d.health().await.state, AgentState::Ready);

    // Idempotent init; a different body conflicts.
    let resp = d.init(&req).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Health>().await.unwrap().state,
        AgentState::Ready
    );
    let resp = d.init(&fx.init_request(Some("feature"))).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().code,
        "already_initialized"
    );

    // The checkout: the branch, relay headers and a commit identity.
    let repo = fx.repo_dir();
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]), "main");
    assert_eq!(
        git(
            &repo,
            &["config", "--local", "--get-all", "http.extraHeader"]
        ),
        "X-Relay-Token: relay-1\nX-Relay-Session: s-1"
    );
    // A plain `git push` goes to the session's branch.
    assert_eq!(
        git(&repo, &["config", "--local", "remote.origin.push"]),
        "HEAD:refs/heads/claudecluster/s-1"
    );
    assert_eq!(
        git(&repo, &["config", "--local", "user.name"]),
        "Claude Code"
    );
    assert_eq!(
        git(&repo, &["config", "--local", "user.email"]),
        "claude@claudecluster.invalid"
    );

    // Two live followers, attached at the current end of the journal.
    let since = d.health().await.last_seq;
    let mut f1 = d.follow(since).await;
    let mut f2 = d.follow(since).await;

    let seq = d.command("hello there").await;
    assert_eq!(seq, since + 1);
    let ready_after = |e: &JournalEntry| e.seq > seq && is_state(e, AgentState::Ready);
    let live1 = f1.until(ready_after).await;
    let live2 = f2.until(ready_after).await;
    let expected: Vec<u64> = (since + 1..=live1.last().unwrap().seq).collect();
    assert_eq!(seqs(&live1), expected);
    assert_eq!(live1, live2);

    // Order (stderr lines come from another pipe and may interleave):
    // command, busy, Claude's events ending with the result, ready.
    let ordered: Vec<&JournalEntry> = live1
        .iter()
        .filter(|e| !matches!(e.event, AgentEvent::Stderr { .. }))
        .collect();
    assert_eq!(
        ordered[0].event,
        AgentEvent::Command {
            text: "hello there".into()
        }
    );
    assert!(is_state(ordered[1], AgentState::Busy));
    let kinds: Vec<&str> = ordered[2..].iter().filter_map(|e| claude_type(e)).collect();
    assert_eq!(kinds, ["system", "assistant", "result"]);
    assert_eq!(ordered.len(), 6, "{ordered:#?}");
    assert!(live1.iter().any(|e| e.event
        == AgentEvent::Stderr {
            line: "this line is not json".into()
        }));
    assert_eq!(
        live1
            .iter()
            .filter(|e| is_state(e, AgentState::Busy))
            .count(),
        1
    );

    // What Claude Code was given: args (asked to put permission questions
    // on stdout: the fixture's mode is `default`), cwd, a clean env plus
    // claude.env.
    let init = live1
        .iter()
        .find_map(|e| match &e.event {
            AgentEvent::Claude { data } if data["subtype"] == "init" => Some(data.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        init["args"],
        "-p --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio --model fake-model"
    );
    assert_eq!(
        Path::new(init["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        repo.canonicalize().unwrap()
    );
    assert_eq!(init["token"], "");
    assert_eq!(init["extra"], "extra-value");
    assert_eq!(init["lang"], "C.UTF-8");
    assert_eq!(init["term"], "dumb");

    // Several queued turns: one busy, one ready at the end.
    let since = d.health().await.last_seq;
    let mut f3 = d.follow(since).await;
    // The first turn takes a second, so the second one queues behind it.
    let a = d.command("one SLOW").await;
    let b = d.command("two").await;
    assert!(b > a);
    let live3 = f3
        .until(|e| e.seq > b && is_state(e, AgentState::Ready))
        .await;
    let results = live3
        .iter()
        .filter(|e| claude_type(e) == Some("result"))
        .count();
    assert_eq!(results, 2, "{live3:#?}");
    assert_eq!(
        live3
            .iter()
            .filter(|e| is_state(e, AgentState::Ready))
            .count(),
        1,
        "{live3:#?}"
    );
    assert_eq!(
        seqs(&live3),
        (since + 1..=live3.last().unwrap().seq).collect::<Vec<_>>()
    );

    // The follower from the start saw the whole journal, once, in order.
    let last = d.health().await.last_seq;
    let all = from_start.until(|e| e.seq == last).await;
    assert_eq!(seqs(&all), (1..=last).collect::<Vec<_>>());
    assert_eq!(all, d.events(0).await[..last as usize]);
}

#[tokio::test]
async fn interrupt_exit_and_resume() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;
    init_ready(&d, &fx).await;

    // Nothing to interrupt while ready.
    let resp = d.post("/v1/interrupt").send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"interrupted": false})
    );

    let seq = d.command("WAIT_FOR_INTERRUPT").await;
    d.wait_for("the turn to start", |e| {
        e.seq > seq && claude_type(e) == Some("assistant")
    })
    .await;
    assert_eq!(d.health().await.state, AgentState::Busy);
    let resp = d.post("/v1/interrupt").send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"interrupted": true})
    );
    let journal = d
        .wait_for("ready after interrupt", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    let control = journal
        .iter()
        .find(|e| claude_type(e) == Some("control_response"))
        .expect("control_response journaled");
    match &control.event {
        AgentEvent::Claude { data } => {
            assert_eq!(data["response"]["request_id"], "int-1")
        }
        _ => unreachable!(),
    }
    let session_id = journal
        .iter()
        .find_map(|e| match &e.event {
            AgentEvent::Claude { data } if data["subtype"] == "init" => {
                data["session_id"].as_str().map(str::to_owned)
            }
            _ => None,
        })
        .unwrap();

    // The process still works after the interrupt.
    let seq = d.command("after interrupt").await;
    d.wait_for("second turn", |e| {
        e.seq > seq && is_state(e, AgentState::Ready)
    })
    .await;

    // It exits mid-turn: Exited, then ready again.
    let seq = d.command("EXIT_NOW").await;
    let journal = d
        .wait_for("ready after exit", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    let exited = journal
        .iter()
        .position(|e| e.seq > seq && e.event == AgentEvent::Exited { code: Some(3) })
        .expect("exit journaled");
    assert!(is_state(&journal[exited + 1], AgentState::Ready));

    // The next command starts a new process that resumes the conversation.
    let seq = d.command("are you back").await;
    let journal = d
        .wait_for("resumed turn", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    let init = journal
        .iter()
        .filter(|e| e.seq > seq)
        .find_map(|e| match &e.event {
            AgentEvent::Claude { data } if data["subtype"] == "init" => Some(data.clone()),
            _ => None,
        })
        .expect("new process init");
    let args = init["args"].as_str().unwrap();
    assert!(args.contains(&format!("--resume={session_id}")), "{args}");
    assert_eq!(init["session_id"], session_id.as_str());
}

#[tokio::test]
async fn bad_branch_is_an_error() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;
    let resp = d.init(&fx.init_request(Some("nope"))).await;
    assert_eq!(resp.status(), 202);
    let journal = d
        .wait_for("error", |e| is_state(e, AgentState::Error))
        .await;
    let message = journal
        .iter()
        .find_map(|e| match &e.event {
            AgentEvent::State {
                state: AgentState::Error,
                message,
            } => message.clone(),
            _ => None,
        })
        .expect("error message");
    assert!(message.contains("nope"), "{message}");
    assert!(
        journal
            .iter()
            .any(|e| matches!(&e.event, AgentEvent::Stderr { line } if line.contains("nope"))),
        "git's stderr is journaled: {journal:#?}"
    );
    let h = d.health().await;
    assert_eq!(h.state, AgentState::Error);
    assert_eq!(h.error.as_deref(), Some(message.as_str()));

    let resp = d
        .post("/v1/command")
        .json(&serde_json::json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let err: ErrorBody = resp.json().await.unwrap();
    assert_eq!(err.code, "not_ready");
    assert!(err.message.contains("error"), "{}", err.message);
}

#[tokio::test]
async fn sigterm_then_restart_reuses_checkout() {
    let fx = Fixture::new();
    let mut d = Daemon::start(&fx).await;
    init_ready(&d, &fx).await;
    let seq = d.command("hello").await;
    d.wait_for("turn", |e| e.seq > seq && is_state(e, AgentState::Ready))
        .await;

    let mut follower = d.follow(d.health().await.last_seq).await;
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The follower got Claude Code's exit, then the stream ended.
    let mut rest = Vec::new();
    while let Some(e) = follower.next().await {
        rest.push(e);
    }
    assert!(
        rest.iter()
            .any(|e| matches!(e.event, AgentEvent::Exited { .. })),
        "{rest:#?}"
    );

    // A restarted container finds the checkout and does not clone again
    // (the clone URL now points nowhere).
    let d = Daemon::start(&fx).await;
    let mut req = fx.init_request(Some("main"));
    req.clone_url = format!("file://{}", fx.path().join("gone.git").display());
    assert_eq!(d.init(&req).await.status(), 202);
    d.wait_for("ready", |e| is_state(e, AgentState::Ready))
        .await;
    let seq = d.command("still there?").await;
    d.wait_for("turn", |e| e.seq > seq && is_state(e, AgentState::Ready))
        .await;
}

#[tokio::test]
async fn files_serves_the_checkout_but_not_git() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;
    let resp = d.get("/v1/files").send().await.unwrap();
    assert_eq!(resp.status(), 409, "no checkout before init");
    init_ready(&d, &fx).await;

    let root: Value = d
        .get("/v1/files")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["type"], "dir", "{root}");
    assert_eq!(
        root["entries"],
        serde_json::json!([{"name": "README.md", "type": "file", "size": 6}]),
        "{root}"
    );
    let file: Value = d
        .get("/v1/files?path=README.md")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        file,
        serde_json::json!({"type": "file", "path": "README.md", "size": 6,
            "encoding": "utf8", "content": "hello\n", "truncated": false})
    );
    for (path, status, code) in [
        (".git/config", 403, "forbidden_path"),
        ("missing.txt", 404, "not_found"),
        ("../repo.git", 400, "invalid_path"),
        ("%2Fetc%2Fpasswd", 400, "invalid_path"),
    ] {
        let resp = d
            .get(&format!("/v1/files?path={path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, code, "{path}");
    }
}

/// The result text of the first `result` after `seq`.
fn result_after(journal: &[JournalEntry], seq: u64) -> String {
    journal
        .iter()
        .filter(|e| e.seq > seq)
        .find_map(|e| match &e.event {
            AgentEvent::Claude { data } if data["type"] == "result" => {
                data["result"].as_str().map(str::to_owned)
            }
            _ => None,
        })
        .expect("a result")
}

fn decision_of(journal: &[JournalEntry], request_id: &str) -> Option<PermissionDecision> {
    journal.iter().find_map(|e| match &e.event {
        AgentEvent::PermissionDecision(d) if d.request_id == request_id => Some(d.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn permission_questions_wait_for_the_first_answer() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;
    init_ready(&d, &fx).await;
    let answer = |id: &str, body: Value| {
        let req = d.post(&format!("/v1/permissions/{id}")).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };

    // Claude Code was told to ask (the fixture's mode is `default`).
    let seq = d.command("ASK_PERMISSION").await;
    let journal = d
        .wait_for("the question", |e| {
            matches!(e.event, AgentEvent::PermissionRequest { .. })
        })
        .await;
    let init = journal
        .iter()
        .find_map(|e| match &e.event {
            AgentEvent::Claude { data } if data["subtype"] == "init" => Some(data.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        init["args"]
            .as_str()
            .unwrap()
            .contains("--permission-prompt-tool stdio"),
        "{init}"
    );
    let asked = journal
        .iter()
        .find_map(|e| match &e.event {
            AgentEvent::PermissionRequest {
                request_id,
                tool,
                input,
            } => Some((request_id.clone(), tool.clone(), input.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(asked.1, "Bash");
    assert_eq!(asked.2, serde_json::json!({"command": "echo 1"}));
    // The raw control request is not journaled as Claude Code output.
    assert!(!journal
        .iter()
        .any(|e| claude_type(e) == Some("control_request")));
    let health = d.health().await;
    assert_eq!(health.state, AgentState::Busy);
    // The health lists it (an orchestrator following late learns of it).
    assert_eq!(health.open_permissions.len(), 1);
    assert_eq!(health.open_permissions[0].request_id, asked.0);
    assert_eq!(health.open_permissions[0].input, asked.2);

    // Unknown question: 404; bad body: 400.
    let (s, v) = answer("perm-999", serde_json::json!({"allow": true})).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("unknown_request")));
    let (s, _) = answer(&asked.0, serde_json::json!({"allow": "yes"})).await;
    assert_eq!(s, 400);

    // A denial reaches Claude Code with its message; a second answer is 409.
    let (s, v) = answer(
        &asked.0,
        serde_json::json!({"allow": false, "message": "not today", "answeredBy": "alice"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["allow"], false);
    assert_eq!(v["source"], "answer");
    let (s, v) = answer(&asked.0, serde_json::json!({"allow": true})).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("already_answered")));
    let journal = d
        .wait_for("the turn's end", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    assert_eq!(result_after(&journal, seq), "permission deny: not today");
    let denied = decision_of(&journal, &asked.0).unwrap();
    assert_eq!(denied.answered_by.as_deref(), Some("alice"));
    assert_eq!(denied.message.as_deref(), Some("not today"));

    // `always`: allowed now, and the next question about Bash is answered
    // without asking anyone.
    let seq = d.command("ASK_PERMISSION").await;
    let id = "perm-2".to_owned();
    d.wait_for("the second question", |e| {
        matches!(&e.event, AgentEvent::PermissionRequest { request_id, .. } if *request_id == id)
    })
    .await;
    let (s, v) = answer(&id, serde_json::json!({"allow": true, "always": true})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["always"], true);
    let journal = d
        .wait_for("the turn's end", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    assert_eq!(result_after(&journal, seq), "permission allow");
    let seq = d.command("ASK_PERMISSION").await;
    let journal = d
        .wait_for("the third turn's end", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    assert_eq!(result_after(&journal, seq), "permission allow");
    let auto = decision_of(&journal, "perm-3").expect("journaled");
    assert_eq!(auto.source, DecisionSource::Always);
    assert!(!journal.iter().any(|e| matches!(
        &e.event,
        AgentEvent::PermissionRequest { request_id, .. } if request_id == "perm-3"
    )));
}

#[tokio::test]
async fn an_unanswered_permission_question_is_denied_at_the_timeout() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;
    let mut init = fx.init_request(Some("main"));
    init.permission_timeout_secs = Some(1);
    assert_eq!(d.init(&init).await.status(), 202);
    d.wait_for("ready", |e| is_state(e, AgentState::Ready))
        .await;
    let seq = d.command("ASK_PERMISSION").await;
    let journal = d
        .wait_for("the turn's end", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    let d1 = decision_of(&journal, "perm-1").expect("timed out");
    assert_eq!(d1.source, DecisionSource::Timeout);
    assert!(!d1.allow);
    let why = d1.message.unwrap();
    assert!(why.contains("Nobody answered within 1 s"), "{why}");
    assert!(result_after(&journal, seq).starts_with("permission deny: Nobody answered"));
    // Too late now.
    let resp = d
        .post("/v1/permissions/perm-1")
        .json(&serde_json::json!({"allow": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
}

#[tokio::test]
async fn interrupting_a_turn_withdraws_its_permission_question() {
    let fx = Fixture::new();
    let d = Daemon::start(&fx).await;
    init_ready(&d, &fx).await;
    let seq = d.command("ASK_PERMISSION").await;
    d.wait_for("the question", |e| {
        matches!(e.event, AgentEvent::PermissionRequest { .. })
    })
    .await;
    let resp = d.post("/v1/interrupt").send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let journal = d
        .wait_for("the turn's end", |e| {
            e.seq > seq && is_state(e, AgentState::Ready)
        })
        .await;
    let withdrawn = decision_of(&journal, "perm-1").expect("settled");
    assert_eq!(withdrawn.source, DecisionSource::Cancelled);
    assert!(!withdrawn.allow);
    // Claude Code was told no before the interrupt reached it.
    assert_eq!(
        result_after(&journal, seq),
        "permission deny: The user interrupted the turn."
    );
    let resp = d
        .post("/v1/permissions/perm-1")
        .json(&serde_json::json!({"allow": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert!(d.health().await.open_permissions.is_empty());
}
