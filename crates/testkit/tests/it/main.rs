//! Integration tests for the smart-HTTP git server: the real git CLI talks
//! to [`GitServer`] over `http://127.0.0.1:PORT` (protocol v0 and v2, clone,
//! fetch and push), plus the `git-http-server` binary.
//!
//! The git client runs through blocking `std::process::Command` on purpose:
//! the server has its own thread and runtime, so this must not deadlock a
//! current-thread `#[tokio::test]`.

mod process;
mod runtime;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cc_testkit::git_server::GitServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A git client command with the caller's environment (config, proxies,
/// `GIT_DIR`) scrubbed.
fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .args([
            "-c",
            "user.name=Client",
            "-c",
            "user.email=client@example.invalid",
        ])
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

fn git_out(dir: &Path, args: &[&str]) -> Output {
    git_cmd(dir).args(args).output().expect("run git")
}

/// Run git and require success.
fn git(dir: &Path, args: &[&str]) -> Output {
    let out = git_out(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).expect("read file")
}

/// Deterministic, incompressible-ish text of roughly `len` bytes.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut s = String::with_capacity(len + 64);
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
        if s.len() % 1024 < 16 {
            s.push('\n');
        }
    }
    s
}

/// Send one raw HTTP/1.1 request and return the status code.
async fn raw_status(server: &GitServer, target: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp);
    let status = text.split_whitespace().nth(1).expect("status line");
    status.parse().expect("numeric status")
}

#[tokio::test]
async fn clone_v0_sees_file_and_counts_requests() {
    let server = GitServer::start().await.unwrap();
    let url = server
        .create_repo(
            "sample",
            &[("README.md", "hello\n"), ("src/lib.rs", "pub fn f() {}\n")],
        )
        .unwrap();
    assert_eq!(url, format!("http://{}/sample.git", server.addr()));
    assert_eq!(server.url("sample.git"), url);
    assert!(server.root().join("sample.git").is_dir());
    assert_eq!(server.request_count(), 0);

    let tmp = tempfile::tempdir().unwrap();
    git(
        tmp.path(),
        &["-c", "protocol.version=0", "clone", &url, "wc"],
    );
    let wc = tmp.path().join("wc");
    assert_eq!(read(wc.join("README.md")), "hello\n");
    assert_eq!(read(wc.join("src/lib.rs")), "pub fn f() {}\n");
    let head = git(&wc, &["rev-parse", "--abbrev-ref", "HEAD"]);
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), "main");
    let author = git(&wc, &["log", "-1", "--format=%an <%ae>"]);
    assert_eq!(
        String::from_utf8_lossy(&author.stdout).trim(),
        "ClaudeCluster Test <test@claudecluster.invalid>"
    );

    assert!(server.request_count_for("sample.git/info/refs") >= 1);
    assert!(server.request_count_for("/git-upload-pack") >= 1);
    assert!(server.request_count() >= 2);
    assert_eq!(server.branches("sample").unwrap(), vec!["main".to_string()]);
}

#[tokio::test]
async fn clone_branch_with_protocol_v2() {
    let server = GitServer::start().await.unwrap();
    let url = server
        .create_repo("proj", &[("a.txt", "main a\n"), ("b.txt", "main b\n")])
        .unwrap();
    server
        .create_branch(
            "proj",
            "feature",
            &[("a.txt", "feature a\n"), ("dir/c.txt", "c\n")],
        )
        .unwrap();
    assert!(server.create_branch("proj", "feature", &[]).is_err());
    assert_eq!(
        server.branches("proj").unwrap(),
        vec!["feature".to_string(), "main".to_string()]
    );
    assert_eq!(
        server.show("proj", "feature", "a.txt").unwrap(),
        "feature a\n"
    );
    assert_eq!(server.show("proj", "main", "a.txt").unwrap(), "main a\n");

    let tmp = tempfile::tempdir().unwrap();
    let out = git_cmd(tmp.path())
        .env("GIT_TRACE_PACKET", "1")
        .args([
            "-c",
            "protocol.version=2",
            "clone",
            "--branch",
            "feature",
            &url,
            "wc",
        ])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clone failed: {trace}");
    assert!(
        trace.contains("< version 2"),
        "server did not speak protocol v2: {trace}"
    );
    let wc = tmp.path().join("wc");
    assert_eq!(read(wc.join("a.txt")), "feature a\n");
    assert_eq!(read(wc.join("b.txt")), "main b\n");
    assert_eq!(read(wc.join("dir/c.txt")), "c\n");
}

#[tokio::test]
async fn push_new_branch_and_fast_forward_main() {
    let server = GitServer::start().await.unwrap();
    let url = server
        .create_repo("repo", &[("README.md", "v1\n")])
        .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    git(
        tmp.path(),
        &["-c", "protocol.version=2", "clone", &url, "wc"],
    );
    let wc = tmp.path().join("wc");

    // A new branch with a ~3 MiB file: larger than http.postBuffer, so the
    // push body is sent chunked, without Content-Length.
    git(&wc, &["checkout", "-b", "claude/topic"]);
    let big = noise(3 * 1024 * 1024);
    std::fs::write(wc.join("big.txt"), &big).unwrap();
    std::fs::write(wc.join("NOTES.md"), "pushed over http\n").unwrap();
    git(&wc, &["add", "."]);
    git(&wc, &["commit", "-m", "topic work"]);
    let out = git_cmd(&wc)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .args(["push", "origin", "claude/topic"])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "push failed: {trace}");
    assert!(
        trace.contains("Transfer-Encoding: chunked"),
        "expected a chunked push body"
    );

    assert_eq!(
        server.branches("repo").unwrap(),
        vec!["claude/topic".to_string(), "main".to_string()]
    );
    assert_eq!(
        server.show("repo", "claude/topic", "NOTES.md").unwrap(),
        "pushed over http\n"
    );
    assert_eq!(server.show("repo", "claude/topic", "big.txt").unwrap(), big);
    assert!(server.request_count_for("/git-receive-pack") >= 1);

    // Fast-forward main.
    git(&wc, &["checkout", "main"]);
    std::fs::write(wc.join("README.md"), "v2\n").unwrap();
    git(&wc, &["commit", "-am", "v2"]);
    git(&wc, &["push", "origin", "main"]);
    assert_eq!(server.show("repo", "main", "README.md").unwrap(), "v2\n");

    // A second clone fetches the pushed state (v0 this time), then an
    // incremental fetch after a server-side branch is added.
    git(
        tmp.path(),
        &["-c", "protocol.version=0", "clone", &url, "wc2"],
    );
    let wc2 = tmp.path().join("wc2");
    assert_eq!(read(wc2.join("README.md")), "v2\n");
    server
        .create_branch("repo", "later", &[("later.txt", "later\n")])
        .unwrap();
    git(&wc2, &["fetch", "origin"]);
    let shown = git(&wc2, &["show", "origin/later:later.txt"]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout), "later\n");
}

#[tokio::test]
async fn clone_many_branches_v0() {
    // Enough distinct wants that the upload-pack request exceeds 1 KiB and
    // git sends it gzip-compressed (Content-Encoding: gzip).
    let server = GitServer::start().await.unwrap();
    let url = server.create_repo("wide", &[("f", "0\n")]).unwrap();
    for i in 0..40 {
        let content = format!("{i}\n");
        server
            .create_branch("wide", &format!("b{i:02}"), &[("f", &content)])
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = git_cmd(tmp.path())
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .args([
            "-c",
            "protocol.version=0",
            "clone",
            "--mirror",
            &url,
            "m.git",
        ])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clone failed: {trace}");
    assert!(
        trace.contains("Content-Encoding: gzip"),
        "expected a gzip request body"
    );
    let refs = git(
        &tmp.path().join("m.git"),
        &["for-each-ref", "--format=%(refname)"],
    );
    assert_eq!(String::from_utf8_lossy(&refs.stdout).lines().count(), 41);
}

#[tokio::test]
async fn missing_repo_is_a_clean_clone_failure() {
    let server = GitServer::start().await.unwrap();
    server.create_repo("exists", &[("x", "x\n")]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for version in ["0", "2"] {
        let dest = format!("wc{version}");
        let out = git_out(
            tmp.path(),
            &[
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                &server.url("missing"),
                &dest,
            ],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not found"), "unexpected error: {err}");
        assert!(!tmp.path().join(&dest).exists());
    }
    assert!(server.request_count_for("missing.git/info/refs") >= 2);
    assert!(server.show("missing", "main", "x").is_err());
    assert!(server.branches("missing").is_err());
    assert!(server.create_repo("exists", &[]).is_err());
    assert!(server.create_repo("../escape", &[]).is_err());
}

#[tokio::test]
async fn path_traversal_is_refused() {
    let server = GitServer::start().await.unwrap();
    server.create_repo("sample", &[("x", "x\n")]).unwrap();

    let ok = raw_status(&server, "/sample.git/info/refs?service=git-upload-pack").await;
    assert_eq!(ok, 200);
    for target in [
        "/../sample.git/info/refs?service=git-upload-pack",
        "/sample.git/../../etc/passwd",
        "/%2e%2e/sample.git/info/refs?service=git-upload-pack",
        "/sample.git/%2E%2E/%2E%2E/etc/passwd",
        "/./sample.git/HEAD",
        "/sample.git/%00",
    ] {
        let status = raw_status(&server, target).await;
        assert!(
            status == 400 || status == 404,
            "{target} was not refused: {status}"
        );
    }
    // Not a git path at all: http-backend answers 404 itself.
    assert_eq!(raw_status(&server, "/nothing-here").await, 404);
}

#[tokio::test]
async fn drop_stops_serving_and_removes_root() {
    let server = GitServer::start().await.unwrap();
    server.create_repo("r", &[("x", "x\n")]).unwrap();
    let root = server.root().to_path_buf();
    let addr = server.addr();
    drop(server);
    assert!(!root.exists());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn start_at_keeps_the_given_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repos");
    let server = GitServer::start_at(root.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = server.create_repo("org/nested", &[("n", "n\n")]).unwrap();
    assert!(url.ends_with("/org/nested.git"));
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["clone", &url, "wc"]);
    assert_eq!(read(tmp.path().join("wc/n")), "n\n");
    drop(server);
    assert!(root.join("org/nested.git").is_dir());
}

#[test]
fn binary_serves_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_git-http-server"))
        .args(["--listen", "127.0.0.1:0", "--create", "demo", "--root"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().expect("a line").unwrap();
    let base = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let tmp = tempfile::tempdir().unwrap();
    git(
        tmp.path(),
        &[
            "-c",
            "protocol.version=2",
            "clone",
            &format!("{base}/demo.git"),
            "wc",
        ],
    );
    assert!(read(tmp.path().join("wc/README.md")).starts_with("# demo"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "server exited with {exit}");
    assert!(lines.next().is_none(), "more than one stdout line");
    assert!(dir.path().join("demo.git").is_dir());
}
