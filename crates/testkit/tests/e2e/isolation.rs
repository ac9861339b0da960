//! Isolation, proven from inside a real session: the real Claude Code runs
//! a probe script through its Bash tool (scripted by the model double).

use super::{ready_session, run_turn};
use cc_testkit::harness::HarnessOptions;
use cc_testkit::harness::{output_text, summary};
use cc_testkit::Harness;
use std::process::Command;

/// Whether sessions run under gVisor (`CLAUDECLUSTER_TEST_CONTAINER_RUNTIME=runsc`).
fn gvisor() -> bool {
    cc_testkit::harness::container_runtime().as_deref() == Some("runsc")
}

fn container_ip(container: &str) -> String {
    let out = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Searches the whole container for `secret` (every process's environment
/// and command line, every file outside /proc, /sys and /dev) and fails
/// when it is found — or when a place could be read neither as root nor as
/// the session's user (the container has no capabilities, so root cannot
/// read the user's private files, nor the user root's processes), so an
/// error never passes for "absent". The secret travels on stdin: in an
/// argument it would sit in the searching shell's own command line.
pub(crate) fn assert_secret_absent(
    container: &str,
    what: &str,
    secret: &str,
) -> anyhow::Result<()> {
    use std::collections::BTreeSet;
    let mut found = BTreeSet::new();
    let mut unread: Option<BTreeSet<String>> = None;
    for user in ["0", "1000"] {
        let report = scan(container, user, secret)?;
        let mut here = BTreeSet::new();
        for line in report.lines() {
            if let Some(path) = line.strip_prefix("FOUND ") {
                found.insert(path.to_owned());
            } else if let Some(path) = line.strip_prefix("UNREAD ") {
                here.insert(path.to_owned());
            }
        }
        anyhow::ensure!(
            report.lines().last() == Some("SCANNED"),
            "the scan as {user} for {what} did not finish: {report}"
        );
        unread = Some(match unread {
            None => here,
            Some(before) => before.intersection(&here).cloned().collect(),
        });
    }
    // What no process inside may read (sessiond is non-dumpable, so its
    // `/proc/<pid>/environ` is closed even to the container's root) is read
    // from the host, which can.
    let mut unread = unread.unwrap_or_default();
    for path in unread.clone() {
        if let Some(hit) = read_on_host(container, &path, secret)? {
            unread.remove(&path);
            if hit {
                found.insert(format!("{path} (read from the host)"));
            }
        }
    }
    anyhow::ensure!(found.is_empty(), "{what} found in the container: {found:?}");
    anyhow::ensure!(
        unread.is_empty(),
        "not searched for {what} (unreadable as root and as the user): {unread:?}"
    );
    Ok(())
}

/// Reads `/proc/<pid>/<file>` of a process of `container` (its pid as the
/// container sees it) from the host: whether it holds `secret`, or `None`
/// when that process is not a host process of the container (gone, or not
/// a `/proc` path).
fn read_on_host(container: &str, path: &str, secret: &str) -> anyhow::Result<Option<bool>> {
    let Some((pid, file)) = path
        .strip_prefix("/proc/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Ok(None);
    };
    let out = Command::new("docker")
        .args(["top", container, "-eo", "pid"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker top: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for host_pid in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
    {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{host_pid}/status")) else {
            continue;
        };
        // `NSpid:` lists the pid in each namespace, the container's last.
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last());
        if inner == Some(pid) {
            let bytes = std::fs::read(format!("/proc/{host_pid}/{file}"))?;
            let hit = bytes
                .windows(secret.len().max(1))
                .any(|w| w == secret.as_bytes());
            return Ok(Some(hit));
        }
    }
    // No host process has that pid: gone since the scan (no place the
    // secret could be), or not a host process at all (gVisor) — unread.
    let gone = !Command::new("docker")
        .args(["exec", container, "test", "-e", &format!("/proc/{pid}")])
        .status()?
        .success();
    Ok(gone.then_some(false))
}

/// One scan as `user`: `FOUND <path>` and `UNREAD <path>` lines, then
/// `SCANNED`.
fn scan(container: &str, user: &str, secret: &str) -> anyhow::Result<String> {
    use std::io::Write;
    const SCAN: &str = r#"read -r K
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  grep -qF -- "$K" "$f" 2>/dev/null; rc=$?
  if [ $rc -eq 0 ]; then echo "FOUND $f"
  elif [ $rc -ne 1 ] && [ -e "$f" ]; then echo "UNREAD $f"
  fi
done
for d in /*; do
  case $d in /proc|/sys|/dev) continue ;; esac
  # A file removed while the scan ran was not a place the secret could be.
  grep -rlF -D skip -- "$K" "$d" 2>&1 | sed -n \
    -e '/: No such file or directory$/d' \
    -e 's/^grep: \(.*\): [^:]*$/UNREAD \1/p' \
    -e '/^UNREAD /!s/^\(..*\)$/FOUND \1/p'
done
echo SCANNED"#;
    let mut child = Command::new("docker")
        .args(["exec", "-i", "--user", user, container, "sh", "-c", SCAN])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(format!("{secret}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One line of `key=value` facts, measured inside the container.
fn probe_script(peer_ip: &str, host_port: u16) -> String {
    format!(
        r#"bash: p() {{ timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && echo open || echo closed; }}; gwhp=${{ANTHROPIC_BASE_URL#http://}}; gwhp=${{gwhp%%/*}}; gw=${{gwhp%:*}}; gwport=${{gwhp#*:}}; uid=$(id -u); cap=$(awk '/CapEff/{{print $2}}' /proc/self/status); seccomp=$(awk '/^Seccomp:/{{print $2}}' /proc/self/status); nnp=$(awk '/^NoNewPrivs:/{{print $2}}' /proc/self/status); usr=$( (touch /usr/probe 2>/dev/null && echo rw) || echo ro); ws=$( (touch /workspace/repo/.probe && rm /workspace/repo/.probe && echo rw) || echo ro); echo "PROBES kernel=$(uname -r) uid=$uid capeff=$cap seccomp=$seccomp nnp=$nnp usr=$usr ws=$ws gateway=$(p $gw $gwport) hostsvc=$(p $gw {host_port}) peer=$(p {peer_ip} 7700) metadata=$(p 169.254.169.254 80)""#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reaches_only_its_gateway_and_holds_no_secrets() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    // A "host service" on every interface: sessions must not reach it.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0")?;
    let host_port = host_service.local_addr()?.port();

    let (a, mut ws_a, _) = ready_session(&h, "a").await?;
    let (b, _ws_b, _) = ready_session(&h, "b").await?;
    let peer = container_ip(&h.client.status(&b).await?.container_id.unwrap_or_default());
    assert!(!peer.is_empty());

    let turn = run_turn(&mut ws_a, &probe_script(&peer, host_port)).await?;
    let text = output_text(&turn);
    let line = text
        .lines()
        .find(|l| l.contains("PROBES kernel="))
        .unwrap_or_else(|| panic!("no probe line: {}", summary(&turn)));
    // Under gVisor the session's kernel is gVisor's, which neither runs
    // the OCI seccomp filter inside the sandbox nor reports NoNewPrivs; its
    // own filter sits between the sandbox and the host.
    let kernel: &[&str] = if gvisor() {
        &["kernel=4.4.0 "]
    } else {
        // 2: a seccomp filter is active (ours, deploy/seccomp).
        &["seccomp=2", "nnp=1"]
    };
    for fact in kernel.iter().copied().chain([
        "uid=1000",
        "capeff=0000000000000000",
        "usr=ro",
        "ws=rw",
        "gateway=open",
        "hostsvc=closed",
        "peer=closed",
        "metadata=closed",
    ]) {
        assert!(line.contains(fact), "{fact} not in {line}");
    }
    // The Claude key never entered the container, after a turn used it.
    let container_a = h.client.status(&a).await?.container_id.unwrap_or_default();
    assert_secret_absent(&container_a, "the Claude API key", &h.api_key)?;
    // The scan finds what is there: a canary written to /tmp.
    let canary = format!("canary-{}", cc_testkit::docker::unique_prefix());
    let mut put = Command::new("docker")
        .args(["exec", "-i", &container_a, "sh", "-c", "cat > /tmp/.canary"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut put.stdin.take().expect("piped"), canary.as_bytes())?;
    assert!(put.wait()?.success(), "writing the canary");
    let found = assert_secret_absent(&container_a, "the canary", &canary)
        .expect_err("the scan must find the canary");
    assert!(found.to_string().contains("/tmp/.canary"), "{found}");
    drop(host_service);
    h.client.delete(&a).await?;
    h.client.delete(&b).await?;
    // The firewall rules went with the sessions.
    let rules = Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .output()?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    let prefix = &h.docker.prefix;
    assert!(
        !rules.contains(&format!("claudecluster:{prefix}{a}")),
        "{rules}"
    );
    assert!(
        !rules.contains(&format!("claudecluster:{prefix}{b}")),
        "{rules}"
    );
    h.shutdown().await;
    Ok(())
}

/// The model sessions may use in the relay test.
const ALLOWED_MODEL: &str = "claude-sonnet-4-5";

/// A bash function for the probes below: the status code of the HTTP
/// answer on fd 3 (or the read's error). gVisor's host-network sockets
/// answer a blocking `read` with `EAGAIN` while no data has arrived yet, so
/// that error is waited out rather than taken as the answer.
const READ_STATUS: &str = r#"status() { local l; for _ in $(seq 200); do l=$(head -1 <&3 2>&1) && { echo "$l" | cut -d' ' -f2; return; }; case $l in *unavailable*) sleep 0.05;; *) break;; esac; done; echo "$l"; }; "#;

/// Calls from inside the session straight to its Anthropic relay, with the
/// session's own token (bash's `/dev/tcp`, the image has no curl): one
/// `RELAY` line with each answer's status, or the call's error. Each
/// request goes out in one write (bash's `printf` writes line by line, and
/// a server may answer a refused request's head before its body arrives).
fn relay_probe() -> String {
    let body =
        r#"{"model":"claude-opus-4-1","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    format!(
        r#"bash: {READ_STATUS}gwhp=${{ANTHROPIC_BASE_URL#http://}}; base=/${{gwhp#*/}}; gwhp=${{gwhp%%/*}}; call() {{ printf -v r '%s %s HTTP/1.1\r\nhost: gw\r\nx-api-key: %s\r\ncontent-type: application/json\r\ncontent-length: %s\r\nconnection: close\r\n\r\n%s' "$1" "$base/$2" "$ANTHROPIC_API_KEY" "${{#3}}" "$3"; exec 3<>/dev/tcp/${{gwhp%:*}}/${{gwhp#*:}} && head -c ${{#r}} <<<"$r" >&3 && status; exec 3<&-; }}; B='{body}'; echo "RELAY opus=$(call POST v1/messages "$B" 2>&1) files=$(call GET v1/files '' 2>&1) escape=$(call POST 'v1/..%2Fv1/messages' "$B" 2>&1)""#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_calls_the_anthropic_api_only_for_allowed_models_and_endpoints(
) -> anyhow::Result<()> {
    let h = Harness::start_configured(HarnessOptions::default(), |c| {
        c.agent.allowed_models = vec![ALLOWED_MODEL.into()];
        c.agent.default_model = Some(ALLOWED_MODEL.into());
    })
    .await?;
    let (id, mut ws, _) = ready_session(&h, "relay").await?;
    let turn = run_turn(&mut ws, &relay_probe()).await?;
    let text = output_text(&turn);
    let line = text
        .lines()
        .find(|l| l.contains("RELAY opus="))
        .unwrap_or_else(|| panic!("no probe line: {}", summary(&turn)));
    for fact in ["opus=403", "files=404", "escape=400"] {
        assert!(line.contains(fact), "{fact} not in {line}");
    }
    // Claude Code's own calls went through; the probe's never arrived.
    let reqs = h.model.requests();
    assert!(!reqs.is_empty());
    let paths = ["/v1/messages", "/v1/messages/count_tokens"];
    for r in &reqs {
        assert_eq!(r.model, ALLOWED_MODEL, "{r:?}");
        assert!(paths.contains(&r.path.as_str()), "{r:?}");
    }
    h.client.delete(&id).await?;
    h.shutdown().await;
    Ok(())
}

/// A tiny HTTP server on the host that answers every request with `body`.
///
/// It reads the whole request head before answering and half-closes
/// afterwards: closing a socket with unread request bytes makes the kernel
/// send a reset, which can cut the answer short on its way through the
/// proxy's tunnel (the request may arrive in more than one segment).
fn http_server(body: &'static str) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.shutdown(std::net::Shutdown::Write);
            // Drain until the client closes, so nothing unread remains.
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    Ok(port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_goes_only_to_allowlisted_hosts_through_the_proxy() -> anyhow::Result<()> {
    let allowed = http_server("allowed-upstream")?;
    let denied = http_server("denied-upstream")?;
    let h = Harness::start_configured(
        cc_testkit::harness::HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        |c| c.egress_allow = vec![format!("127.0.0.1:{allowed}")],
    )
    .await?;
    let (_id, mut ws, _) = ready_session(&h, "egress").await?;
    // Speak HTTP CONNECT through $HTTPS_PROXY with bash alone (the image
    // has no curl): one tunnel per target, then a GET inside it.
    let probe = format!(
        r#"bash: t() {{ hp=${{HTTPS_PROXY#http://}}; cred=${{hp%@*}}; gwhp=${{hp#*@}}; exec 3<>/dev/tcp/${{gwhp%:*}}/${{gwhp#*:}}; printf 'CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nProxy-Authorization: Basic %s\r\n\r\n' $1 $1 $(printf %s "$cred" | base64 -w0) >&3; read -t 5 -r status <&3; case "$status" in *" 200"*) while read -t 5 -r l <&3 && [ "$l" != $'\r' ]; do :; done; printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >&3; timeout 5 cat <&3 | tail -c 40 | tr -d '\r\n'; echo;; *) echo "refused: $status";; esac; exec 3>&-; }}; echo "EGRESS allowed=[$(t {allowed})] denied=[$(t {denied})]""#
    );
    let turn = run_turn(&mut ws, &probe).await?;
    let text = output_text(&turn);
    let line = text
        .lines()
        .find(|l| l.contains("EGRESS allowed="))
        .unwrap_or_else(|| panic!("no probe line: {}", summary(&turn)));
    assert!(
        line.contains("allowed=[") && line.contains("allowed-upstream"),
        "{line}"
    );
    assert!(line.contains("denied=[refused: HTTP/1.1 403"), "{line}");
    // The gateway's metrics count both decisions.
    for decision in ["allow", "deny"] {
        let needle = format!("relay=\"egress\",decision=\"{decision}\"");
        assert!(super::metric(&h, &needle).await? >= 1, "{needle}");
    }

    // A session created with `egress: none` reaches not even the
    // allowlisted host: it gets no proxy, and the proxy refuses it anyway.
    let url = h.git.create_repo("no-egress", &[("a.txt", "a\n")])?;
    let mut req = h.create_request(&url, None);
    if let Some(c) = req.config.as_mut() {
        c.egress = Some(cc_wire::api::EgressMode::None);
    }
    let created = h.client.create(&req).await?;
    let mut ws = h.client.stream(&created.session_id, 0).await?;
    cc_testkit::harness::read_until(&mut ws, super::READY_TIMEOUT, |m| {
        cc_testkit::harness::is_state(m, cc_wire::api::SessionState::Ready)
    })
    .await?;
    let turn = run_turn(&mut ws, r#"bash: echo "PROXY=[${HTTPS_PROXY:-unset}]""#).await?;
    assert!(
        output_text(&turn).contains("PROXY=[unset]"),
        "{}",
        summary(&turn)
    );
    assert_eq!(
        h.client.status(&created.session_id).await?.limits.egress,
        cc_wire::api::EgressMode::None
    );

    // `open` is above this server's maximum (the default: allowlist).
    let mut req = h.create_request(&url, None);
    if let Some(c) = req.config.as_mut() {
        c.egress = Some(cc_wire::api::EgressMode::Open);
    }
    let err = h.client.create(&req).await.expect_err("refused");
    assert_eq!(err.code(), Some("egress_not_allowed"), "{err}");
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_clones_with_a_token_the_container_never_sees() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let url = h
        .git
        .create_repo("private", &[("secret.txt", "only with a token\n")])?;
    let token = "ghp_testtoken0123456789abcdef";
    h.git.require_basic_auth("x-access-token", token);

    // Without the token the clone is refused, and the session says so.
    let created = h.client.create(&h.create_request(&url, None)).await?;
    let mut ws = h.client.stream(&created.session_id, 0).await?;
    let seen = cc_testkit::harness::read_until(&mut ws, super::READY_TIMEOUT, |m| {
        cc_testkit::harness::is_state(m, cc_wire::api::SessionState::Error)
            || cc_testkit::harness::is_state(m, cc_wire::api::SessionState::Ready)
    })
    .await?;
    assert!(
        cc_testkit::harness::is_state(
            seen.last().expect("a status"),
            cc_wire::api::SessionState::Error
        ),
        "{}",
        summary(&seen)
    );

    // With it, the relay adds it upstream; the container never holds it.
    let mut req = h.create_request(&url, None);
    req.repo_token = Some(token.into());
    let created = h.client.create(&req).await?;
    let mut ws = h.client.stream(&created.session_id, 0).await?;
    cc_testkit::harness::read_until(&mut ws, super::READY_TIMEOUT, |m| {
        cc_testkit::harness::is_state(m, cc_wire::api::SessionState::Ready)
    })
    .await?;
    let turn = run_turn(&mut ws, "bash: cat secret.txt").await?;
    let text = output_text(&turn);
    assert!(text.contains("only with a token"), "{text}");
    let container = h
        .client
        .status(&created.session_id)
        .await?
        .container_id
        .unwrap_or_default();
    assert_secret_absent(&container, "the repo token", token)?;
    h.shutdown().await;
    Ok(())
}

/// Our seccomp profile, from inside a session: calls Docker's default
/// profile lets through (ptrace, io_uring) fail with EPERM, clone3 with
/// ENOSYS (so libc falls back to clone, whose namespace flags are refused),
/// user namespaces are refused — and git and Claude Code work, as every
/// other end-to-end test shows. Under gVisor the same calls reach gVisor's
/// kernel, not the host's: that is what is asserted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_calls_outside_the_profile_fail_inside_a_session() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws, _) = ready_session(&h, "seccomp").await?;
    // perl's syscall() makes the raw call; numbers are x86_64's.
    let probe = r#"bash: perl -e 'sub t { my ($n, $r) = @_; printf "SYSCALL %s=%d/%d\n", $n, $r, $!+0 } t(ptrace => syscall(101, 0, 0, 0, 0)); t(io_uring_setup => syscall(425, 1, 0)); t(process_vm_readv => syscall(310, 1, 0, 0, 0, 0, 0)); t(clone3 => syscall(435, 0, 0))'; unshare -U true 2>/dev/null; echo "SYSCALL unshare=$?"; git --version"#;
    let probe = format!("{probe}; echo \"SYSCALL kernel=$(uname -r)\"");
    let turn = run_turn(&mut ws, &probe).await?;
    let text = output_text(&turn);
    let facts: &[&str] = if gvisor() {
        &["kernel=4.4.0", "git version"]
    } else {
        &[
            "ptrace=-1/1",
            "io_uring_setup=-1/1",
            "process_vm_readv=-1/1",
            "clone3=-1/38",
            "unshare=1",
            "git version",
        ]
    };
    for fact in facts {
        assert!(text.contains(fact), "{fact} not in {}", summary(&turn));
    }
    h.client.delete(&id).await?;
    h.shutdown().await;
    Ok(())
}

/// From inside the session: sessiond's pid (found by name), whether its
/// `/proc/<pid>/environ` and `maps` (the memory's layout, guarded as its
/// contents are) can be read, and whether the container's
/// init process (`docker --init`) holds `SESSIOND_TOKEN` in its own;
/// each call's answer or error (requests in one write, as in the relay probe).
const SESSIOND_PROBE: &str = r#"sd=; for p in /proc/[0-9]*; do case "$(cat $p/comm 2>/dev/null)" in claudecluster*) sd=${p#/proc/};; esac; done; env=$( (cat /proc/$sd/environ >/dev/null 2>&1 && echo readable) || echo refused); maps=$( (head -c1 /proc/$sd/maps >/dev/null 2>&1 && echo readable) || echo refused); tok=$(tr '\0' '\n' </proc/1/environ 2>/dev/null | sed -n 's/^SESSIOND_TOKEN=//p'); init=$( [ -n "$tok" ] && echo token || echo clean); ask() { printf -v r 'GET /v1/health HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\nconnection: close\r\n\r\n' "$tok"; exec 3<>/dev/tcp/$1/7700 && head -c ${#r} <<<"$r" >&3 && status; exec 3<&-; }; me=$(getent ahostsv4 "$(cat /etc/hostname)" | awk 'NR==1{print $1}'); echo "SESSIOND pid=$sd environ=$env maps=$maps init=$init lo=$(ask 127.0.0.1 2>&1) own=$(ask $me 2>&1) me=$me""#;

fn sessiond_probe() -> String {
    format!("bash: {READ_STATUS}{SESSIOND_PROBE}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessionds_environment_and_memory_are_out_of_the_agents_reach() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws, _) = ready_session(&h, "dumpable").await?;
    let turn = run_turn(&mut ws, &sessiond_probe()).await?;
    let text = output_text(&turn);
    let line = text
        .lines()
        .find(|l| l.contains("SESSIOND pid="))
        .unwrap_or_else(|| panic!("no probe line: {}", summary(&turn)));
    assert!(!line.contains("pid= "), "sessiond not found: {line}");
    // The token is in no environment: sessiond read it from its stdin,
    // so the init process (readable by every process of the session) has
    // none. And sessiond refuses clients in the container anyway.
    // gVisor's /proc does not honour a non-dumpable process (its
    // `environ` and `maps` stay readable there): under it the rest holds,
    // and is asserted.
    let facts: &[&str] = if gvisor() {
        &["init=clean", "lo=403", "own=403"]
    } else {
        &[
            "init=clean",
            "environ=refused",
            "maps=refused",
            "lo=403",
            "own=403",
        ]
    };
    for fact in facts {
        assert!(line.contains(fact), "{fact} not in {line}");
    }
    eprintln!("{line}");
    h.client.delete(&id).await?;
    h.shutdown().await;
    Ok(())
}
