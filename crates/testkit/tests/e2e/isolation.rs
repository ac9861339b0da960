//! Isolation, proven from inside a real session: the real Claude Code runs
//! a probe script through its Bash tool (scripted by the model double).

use super::{ready_session, run_turn};
use cc_testkit::harness::HarnessOptions;
use cc_testkit::harness::{output_text, summary};
use cc_testkit::Harness;
use std::process::Command;

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

/// One line of `key=value` facts, measured inside the container.
fn probe_script(peer_ip: &str, host_port: u16, key: &str) -> String {
    // The key travels in two halves so the command text itself (kept in
    // Claude Code's transcript) never contains it whole.
    let (a, b) = key.split_at(key.len() / 2);
    format!(
        r#"bash: p() {{ timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && echo open || echo closed; }}; gwhp=${{ANTHROPIC_BASE_URL#http://}}; gwhp=${{gwhp%%/*}}; gw=${{gwhp%:*}}; gwport=${{gwhp#*:}}; K1='{a}'; K2='{b}'; K="$K1$K2"; uid=$(id -u); cap=$(awk '/CapEff/{{print $2}}' /proc/self/status); seccomp=$(awk '/^Seccomp:/{{print $2}}' /proc/self/status); nnp=$(awk '/^NoNewPrivs:/{{print $2}}' /proc/self/status); usr=$( (touch /usr/probe 2>/dev/null && echo rw) || echo ro); ws=$( (touch /workspace/repo/.probe && rm /workspace/repo/.probe && echo rw) || echo ro); secret=$( (grep -rqsF "$K" /proc/[0-9]*/environ /proc/[0-9]*/cmdline /home /workspace /tmp /etc && echo present) || echo absent); echo "PROBES uid=$uid capeff=$cap seccomp=$seccomp nnp=$nnp usr=$usr ws=$ws gateway=$(p $gw $gwport) hostsvc=$(p $gw {host_port}) peer=$(p {peer_ip} 7700) metadata=$(p 169.254.169.254 80) secret=$secret""#
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

    let turn = run_turn(&mut ws_a, &probe_script(&peer, host_port, &h.api_key)).await?;
    let text = output_text(&turn);
    let line = text
        .lines()
        .find(|l| l.contains("PROBES uid="))
        .unwrap_or_else(|| panic!("no probe line: {}", summary(&turn)));
    for fact in [
        "uid=1000",
        "capeff=0000000000000000",
        // 2: a seccomp filter is active (Docker's default profile).
        "seccomp=2",
        "nnp=1",
        "usr=ro",
        "ws=rw",
        "gateway=open",
        "hostsvc=closed",
        "peer=closed",
        "metadata=closed",
        "secret=absent",
    ] {
        assert!(line.contains(fact), "{fact} not in {line}");
    }
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

/// Calls from inside the session straight to its Anthropic relay, with the
/// session's own token (bash's `/dev/tcp`, the image has no curl): one
/// `RELAY` line with each answer's status.
fn relay_probe() -> String {
    let body =
        r#"{"model":"claude-opus-4-1","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    format!(
        r#"bash: gwhp=${{ANTHROPIC_BASE_URL#http://}}; base=/${{gwhp#*/}}; gwhp=${{gwhp%%/*}}; call() {{ exec 3<>/dev/tcp/${{gwhp%:*}}/${{gwhp#*:}} && printf '%s %s HTTP/1.1\r\nhost: gw\r\nx-api-key: %s\r\ncontent-type: application/json\r\ncontent-length: %s\r\nconnection: close\r\n\r\n%s' "$1" "$base/$2" "$ANTHROPIC_API_KEY" "${{#3}}" "$3" >&3 && head -1 <&3 | cut -d' ' -f2; exec 3<&-; }}; B='{body}'; echo "RELAY opus=$(call POST v1/messages "$B") files=$(call GET v1/files '') escape=$(call POST 'v1/..%2Fv1/messages' "$B")""#
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
    let (a, b) = token.split_at(token.len() / 2);
    let probe = format!(
        r#"bash: cat secret.txt; K1='{a}'; K2='{b}'; K="$K1$K2"; echo "TOKEN $( (grep -rqsF "$K" /proc/[0-9]*/environ /proc/[0-9]*/cmdline /home /workspace /tmp /etc && echo present) || echo absent)""#
    );
    let turn = run_turn(&mut ws, &probe).await?;
    let text = output_text(&turn);
    assert!(text.contains("only with a token"), "{text}");
    assert!(text.contains("TOKEN absent"), "{text}");
    h.shutdown().await;
    Ok(())
}

/// From inside the session: sessiond's pid (found by name), whether its
/// `/proc/<pid>/environ` and `maps` (the memory's layout, guarded as its
/// contents are) can be read, and whether the container's
/// init process (`docker --init`) still holds `SESSIOND_TOKEN` in its own.
const SESSIOND_PROBE: &str = r#"bash: sd=; for p in /proc/[0-9]*; do case "$(cat $p/comm 2>/dev/null)" in claudecluster*) sd=${p#/proc/};; esac; done; env=$( (cat /proc/$sd/environ >/dev/null 2>&1 && echo readable) || echo refused); maps=$( (head -c1 /proc/$sd/maps >/dev/null 2>&1 && echo readable) || echo refused); tok=$(tr '\0' '\n' </proc/1/environ 2>/dev/null | sed -n 's/^SESSIOND_TOKEN=//p'); init=$( [ -n "$tok" ] && echo token || echo clean); ask() { exec 3<>/dev/tcp/$1/7700 && printf 'GET /v1/health HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\nconnection: close\r\n\r\n' "$tok" >&3 && head -1 <&3 | cut -d' ' -f2; exec 3<&-; }; me=$(getent ahostsv4 "$(cat /etc/hostname)" | awk 'NR==1{print $1}'); echo "SESSIOND pid=$sd environ=$env maps=$maps init=$init lo=$(ask 127.0.0.1) own=$(ask $me) me=$me""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessionds_environment_and_memory_are_out_of_the_agents_reach() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws, _) = ready_session(&h, "dumpable").await?;
    let turn = run_turn(&mut ws, SESSIOND_PROBE).await?;
    let text = output_text(&turn);
    let line = text
        .lines()
        .find(|l| l.contains("SESSIOND pid="))
        .unwrap_or_else(|| panic!("no probe line: {}", summary(&turn)));
    assert!(!line.contains("pid= "), "sessiond not found: {line}");
    // The init process's copy of the token is beyond sessiond's reach; it
    // opens nothing from inside: sessiond refuses clients in the container.
    for fact in ["environ=refused", "maps=refused", "lo=403", "own=403"] {
        assert!(line.contains(fact), "{fact} not in {line}");
    }
    eprintln!("{line}");
    h.client.delete(&id).await?;
    h.shutdown().await;
    Ok(())
}
