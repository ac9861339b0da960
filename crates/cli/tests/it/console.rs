//! The web console in a real browser (Debian's headless Chromium, driven
//! over the W3C WebDriver protocol by `chromedriver`) against the harness's
//! live server, a real Docker session, the model double and a git server.
//!
//! Needs `chromium` and `chromium-driver` (`scripts/lib.sh` installs them)
//! and the worker image. Screenshots of each page are kept under
//! `$CARGO_TARGET_TMPDIR/console/`.

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use cc_testkit::Harness;
use cc_wire::api::ServerMessage;
use serde_json::{json, Value};
use std::time::Duration;

/// chromedriver answers `/status` within this after it starts.
const DRIVER_START: Duration = Duration::from_secs(20);
/// A page reacts to a click or an API answer within this.
const UI: Duration = Duration::from_secs(20);
/// A session gets ready (image start, clone) within this.
const READY: Duration = Duration::from_secs(120);
/// A turn of the model double ends within this.
const TURN: Duration = Duration::from_secs(180);
/// How often a waiting test looks at the page again.
const POLL: Duration = Duration::from_millis(100);

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium behind its own chromedriver; both are killed on
/// drop (chromedriver leads a process group of its own, Chromium in it).
struct Browser {
    driver: std::process::Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
}

impl Browser {
    async fn start() -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .context("chromedriver (apt-get install chromium chromium-driver)")?;
        let mut browser = Self {
            driver,
            http: reqwest::Client::new(),
            session: String::new(),
        };
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + DRIVER_START;
        loop {
            let ready = async {
                let v: Value = browser
                    .http
                    .get(format!("{base}/status"))
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::Ok(v["value"]["ready"] == true)
            };
            if ready.await.unwrap_or(false) {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(POLL).await;
        }
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1200,900"],
        });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let created = browser
            .raw(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": options,
                }}})),
            )
            .await?;
        let id = created["sessionId"]
            .as_str()
            .context("no WebDriver session id")?;
        browser.session = format!("{base}/session/{id}");
        Ok(browser)
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await?;
        if !ok {
            bail!("WebDriver {url}: {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let body = (method == reqwest::Method::POST).then_some(body);
        self.raw(method, &format!("{}{path}", self.session), body)
            .await
    }

    async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd(reqwest::Method::POST, "/url", json!({"url": url}))
            .await?;
        Ok(())
    }

    async fn find(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await
            .with_context(|| format!("finding {css}"))?;
        let id = v[ELEMENT]
            .as_str()
            .with_context(|| format!("no element id in {v}"))?;
        Ok(id.to_owned())
    }

    async fn click(&self, css: &str) -> anyhow::Result<()> {
        // The console re-renders lists as they refresh: an element found a
        // moment ago may have been replaced by its new copy. Find it again.
        let mut tries = 0;
        loop {
            let id = self.find(css).await?;
            let clicked = self
                .cmd(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    json!({}),
                )
                .await;
            match clicked {
                Err(e) if tries < 5 && format!("{e:#}").contains("stale element reference") => {
                    tries += 1;
                }
                other => {
                    other.with_context(|| format!("clicking {css}"))?;
                    return Ok(());
                }
            }
        }
    }

    /// Types into a field (after clearing it).
    async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await
        .with_context(|| format!("typing into {css}"))?;
        Ok(())
    }

    /// Runs `body` (a function body; `arguments` are `args`) in the page.
    async fn js(&self, body: &str, args: Value) -> anyhow::Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": body, "args": args}),
        )
        .await
    }

    /// The text of the first element matching `css` ("" when none).
    async fn text(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
                json!([css]),
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the expression `expr` is truthy in the page.
    async fn until(&self, what: &str, timeout: Duration, expr: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let script = format!("return ({expr});");
        loop {
            let v = self.js(&script, json!([])).await?;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                let stream = self.text("#stream").await.unwrap_or_default();
                let notice = self.text("#notice").await.unwrap_or_default();
                bail!(
                    "timed out waiting for {what} ({expr}); notice: {notice:?}; stream: {stream}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Keeps a screenshot of the page as a test artifact.
    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let v = self
            .cmd(reqwest::Method::GET, "/screenshot", json!(null))
            .await?;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or(""))?;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }

    async fn quit(mut self) {
        let _ = self
            .raw(reqwest::Method::DELETE, &self.session.clone(), None)
            .await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Turn results shown on the session page.
const TURNS: &str = "document.querySelectorAll('#stream .msg.turn').length";
/// Elements the page must never have made of data.
const INJECTED: &str =
    "document.querySelectorAll('img, script:not([src]), iframe, object, embed').length";

/// Sends a command from the session page's box and waits for its turn.
async fn run_turn(b: &Browser, command: &str, turns_before: u64) -> anyhow::Result<()> {
    b.fill("#command-text", command).await?;
    b.click("#command-form button[type=submit]").await?;
    b.until(
        "the turn's result",
        TURN,
        &format!("{TURNS} > {turns_before}"),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_runs_a_session_and_reads_its_stream_safely() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let base = h.client.base_url().trim_end_matches('/').to_owned();
    let hostile_name = "<img src=x onerror=alert(1)>.txt";
    let repo = h.git.create_repo(
        "console",
        &[
            ("README.md", "# Console\n"),
            (hostile_name, "<script>window.pwned = 1</script>\n"),
        ],
    )?;

    // The page carries its policy (the server's own test covers the rest).
    let page = reqwest::get(format!("{base}/")).await?;
    let csp = page.headers()["content-security-policy"]
        .to_str()?
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    let b = Browser::start().await?;
    b.goto(&format!("{base}/")).await?;
    b.until(
        "the sign-in form",
        UI,
        "!document.getElementById('view-signin').hidden",
    )
    .await?;
    b.screenshot("signin").await?;

    // Sign in: the token goes to sessionStorage and nowhere else.
    b.fill("#signin-token", &h.user_token).await?;
    b.click("#signin-form button[type=submit]").await?;
    b.until(
        "the session list",
        UI,
        "!document.getElementById('view-sessions').hidden",
    )
    .await?;
    let token_leaks = "(() => { const t = arguments[0]; \
        return [location.href.includes(t), document.documentElement.outerHTML.includes(t), \
                [...document.querySelectorAll('input, textarea')].some(e => e.value.includes(t)), \
                sessionStorage.getItem('claudecluster.token') === t]; })()";
    let leaks = b
        .js(&format!("return {token_leaks};"), json!([h.user_token]))
        .await?;
    assert_eq!(
        leaks,
        json!([false, false, false, true]),
        "url, DOM, fields, storage"
    );
    assert!(
        b.until("the nav", UI, "document.getElementById('nav-admin').hidden")
            .await?
            == json!(true),
        "a user sees no admin page"
    );

    // Create a session through the form.
    b.fill("#create-repo", &repo).await?;
    b.fill("#create-key", &h.api_key).await?;
    b.fill("#create-memory", "1g").await?;
    b.fill("#create-idle", "600").await?;
    b.click("#create-form button[type=submit]").await?;
    let hash = b
        .until(
            "the session page",
            UI,
            "location.hash.startsWith('#/session/') && location.hash",
        )
        .await?;
    let id = hash
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("#/session/")
        .to_owned();
    let key_left = b
        .js(
            "return [...document.querySelectorAll('input')].some(e => e.value.includes(arguments[0]));",
            json!([h.api_key]),
        )
        .await?;
    assert_eq!(
        key_left,
        json!(false),
        "the Claude key is not left on the page"
    );
    b.until(
        "the session to get ready",
        READY,
        "document.getElementById('session-state').textContent === 'ready'",
    )
    .await?;

    // A command: the tool call folded with its result, the turn's cost.
    run_turn(
        &b,
        "bash: echo console-$((6*7)) > made.txt && cat made.txt",
        0,
    )
    .await?;
    let tool = b
        .until(
            "the folded tool call",
            UI,
            "[...document.querySelectorAll('#stream details.tool')].map(d => \
               d.querySelector('summary').textContent + ' => ' + d.querySelector('pre').textContent).join('\\n')",
        )
        .await?;
    let tool = tool.as_str().unwrap_or_default();
    assert!(
        tool.contains("▶ Bash: echo console-$((6*7)) > made.txt"),
        "{tool}"
    );
    assert!(tool.contains("⎿ console-42"), "{tool}");
    let turn = b.text("#stream .msg.turn").await?;
    assert!(turn.contains("✓ turn done · $"), "{turn}");
    assert!(turn.ends_with('s'), "the duration: {turn}");
    b.screenshot("session").await?;

    // Hostile output: a file name and tool output with markup and a
    // terminal escape render as literal text.
    run_turn(
        &b,
        "bash: ls -1 | grep img; printf '<script>window.pwned=2</script>\\033[31mred\\n'",
        1,
    )
    .await?;
    let stream = b.text("#stream").await?;
    assert!(stream.contains(hostile_name), "{stream}");
    assert!(
        stream.contains("<script>window.pwned=2</script>␛[31mred"),
        "{stream}"
    );
    assert!(!stream.contains('\x1b'), "escapes are shown, not kept");
    assert_eq!(
        b.js(&format!("return {INJECTED};"), json!([])).await?,
        json!(0)
    );
    assert_eq!(
        b.js("return window.pwned === undefined;", json!([]))
            .await?,
        json!(true)
    );

    // The diff and the files, hostile name included, as text.
    b.click("#show-diff").await?;
    b.until(
        "the diff",
        UI,
        "document.getElementById('diff-text').textContent.includes('+console-42')",
    )
    .await?;
    assert!(b.text("#diff-files").await?.contains("made.txt"));
    b.screenshot("diff").await?;
    b.click("#show-files").await?;
    b.until(
        "the file list",
        UI,
        &format!(
            "[...document.querySelectorAll('#files-list button')].some(e => e.textContent === {})",
            json!(hostile_name)
        ),
    )
    .await?;
    b.js(
        "[...document.querySelectorAll('#files-list button')].find(e => e.textContent === arguments[0]).click();",
        json!([hostile_name]),
    )
    .await?;
    b.until(
        "the file's content",
        UI,
        "document.getElementById('files-content').textContent.includes('<script>window.pwned = 1</script>')",
    )
    .await?;
    assert_eq!(
        b.js(&format!("return {INJECTED};"), json!([])).await?,
        json!(0)
    );
    assert_eq!(
        b.js("return window.pwned === undefined;", json!([]))
            .await?,
        json!(true)
    );

    // A reload shows the history once. The page is reached from the list,
    // after the test has noted every WebSocket the page opens.
    b.goto(&format!("{base}/#/")).await?;
    b.until(
        "the session list",
        UI,
        "!document.getElementById('view-sessions').hidden",
    )
    .await?;
    let row = b
        .until(
            "the session in the list",
            UI,
            &format!(
                "(() => {{ const r = document.querySelector('tr[data-session={}]'); \
                   return r && r.textContent; }})()",
                json!(id)
            ),
        )
        .await?;
    let row = row.as_str().unwrap_or_default();
    assert!(
        row.contains("ready") && row.contains("$") && row.contains("console"),
        "{row}"
    );
    b.js(
        "const W = window.WebSocket; window.sockets = []; \
         window.WebSocket = class extends W { constructor(...a) { super(...a); window.sockets.push(this); } }; \
         window.conn = []; \
         new MutationObserver(() => window.conn.push(document.getElementById('session-conn').textContent)) \
           .observe(document.getElementById('session-conn'), {childList: true, characterData: true, subtree: true});",
        json!([]),
    )
    .await?;
    b.click(&format!("tr[data-session=\"{id}\"] a")).await?;
    b.until("the history", UI, &format!("{TURNS} === 2"))
        .await?;
    b.until("the connection", UI, "window.conn.includes('connected')")
        .await?;

    // A dropped connection mid-turn resumes from the last event seen:
    // nothing lost, nothing repeated.
    b.fill("#command-text", "bash: sleep 2; echo after-drop")
        .await?;
    b.click("#command-form button[type=submit]").await?;
    b.until(
        "the command on the page",
        UI,
        "document.querySelectorAll('#stream .msg.command').length === 3",
    )
    .await?;
    b.js(
        "window.sockets[window.sockets.length - 1].close();",
        json!([]),
    )
    .await?;
    b.until("the turn after the drop", TURN, &format!("{TURNS} === 3"))
        .await?;
    let conn = b.js("return window.conn;", json!([])).await?;
    assert!(
        conn.as_array()
            .is_some_and(|c| c.contains(&json!("reconnecting…"))),
        "{conn}"
    );
    let sockets = b.js("return window.sockets.length;", json!([])).await?;
    assert!(sockets.as_u64() >= Some(2), "{sockets}");

    // The page shows exactly the log's events, each once.
    let log = h.client.logs(&id, 0, 10_000).await?;
    let count = |f: fn(&ServerMessage) -> bool| log.events.iter().filter(|m| f(m)).count() as u64;
    let shown = b
        .js(
            "const n = (c) => document.querySelectorAll('#stream .msg.' + c).length; \
             const seqs = [...document.querySelectorAll('#stream [data-seq]')].map(e => e.dataset.seq); \
             return {command: n('command'), status: n('status'), turn: n('turn'), \
                     unique: new Set(seqs).size === seqs.length, \
                     afterDrop: (document.getElementById('stream').textContent.match(/⎿ after-drop/g) || []).length};",
            json!([]),
        )
        .await?;
    assert_eq!(
        shown,
        json!({
            "command": count(|m| matches!(m, ServerMessage::Command { .. })),
            "status": count(|m| matches!(m, ServerMessage::Status { .. })),
            "turn": count(|m| matches!(m, ServerMessage::TurnResult { .. })),
            "unique": true,
            "afterDrop": 1,
        })
    );
    assert_eq!(
        b.js(&format!("return {INJECTED};"), json!([])).await?,
        json!(0)
    );

    // Interrupt stops the running turn; the session stays usable.
    // (The model double streams a `slow:` reply over 30 s.)
    b.fill(
        "#command-text",
        "slow: 30000 one two three four five six seven eight nine finale",
    )
    .await?;
    b.click("#command-form button[type=submit]").await?;
    let replies =
        "[...document.querySelectorAll('#stream .msg.text')].map(e => e.textContent).join('')";
    b.until(
        "the slow reply streaming",
        TURN,
        &format!("{replies}.includes('one two')"),
    )
    .await?;
    b.click("#interrupt").await?;
    b.until("the interrupted turn", TURN, &format!("{TURNS} === 4"))
        .await?;
    let last = b
        .js(
            "const t = document.querySelectorAll('#stream .msg.turn'); return t[t.length - 1].textContent;",
            json!([]),
        )
        .await?;
    assert!(
        last.as_str()
            .is_some_and(|t| t.starts_with("✗ interrupted")),
        "{last}"
    );
    b.until(
        "the session ready again",
        UI,
        "document.getElementById('session-state').textContent === 'ready'",
    )
    .await?;
    let replies = b.js(&format!("return {replies};"), json!([])).await?;
    assert!(
        !replies.as_str().unwrap_or_default().contains("finale"),
        "the whole reply arrived, so nothing was interrupted: {replies}"
    );

    // Push: the work (uncommitted, so committed first) reaches the
    // session's branch.
    b.click("#show-push").await?;
    b.fill("#push-message", "Pushed from the console").await?;
    b.click("#push-form button[type=submit]").await?;
    let pushed = b
        .until(
            "the push",
            TURN,
            "(() => { const t = document.getElementById('push-result').textContent; \
               return t.startsWith('Pushed ') && t; })()",
        )
        .await?;
    let pushed = pushed.as_str().unwrap_or_default();
    let branch = format!("claudecluster/{id}");
    assert!(pushed.contains(&branch), "{pushed}");
    assert!(
        pushed.contains("uncommitted work committed first"),
        "{pushed}"
    );
    assert_eq!(h.git.show("console", &branch, "made.txt")?, "console-42\n");

    // Sign out clears the token.
    b.click("#sign-out").await?;
    b.until(
        "the sign-in form",
        UI,
        "!document.getElementById('view-signin').hidden",
    )
    .await?;
    assert_eq!(
        b.js(
            "return sessionStorage.getItem('claudecluster.token');",
            json!([])
        )
        .await?,
        Value::Null
    );

    // An administrator sees the session's resources, the audit log and
    // the tokens.
    b.fill("#signin-token", &h.admin_token).await?;
    b.click("#signin-form button[type=submit]").await?;
    b.until(
        "the admin link",
        UI,
        "!document.getElementById('nav-admin').hidden",
    )
    .await?;
    b.click("#nav-admin").await?;
    let cells = b
        .until(
            "the session's resources",
            UI,
            &format!(
                "(() => {{ const r = document.querySelector('#admin-sessions tr[data-session={}]'); \
                   return r && r.cells[6].textContent !== '–' && [...r.cells].map(c => c.textContent); }})()",
                json!(id)
            ),
        )
        .await?;
    assert!(
        cells[3].as_str().is_some_and(|c| c.ends_with('%')),
        "{cells}"
    );
    assert!(
        cells[4].as_str().is_some_and(|c| c.contains("iB")),
        "{cells}"
    );
    b.until(
        "the audit log",
        UI,
        "document.getElementById('audit-table').textContent.includes('session.create')",
    )
    .await?;
    b.until(
        "the tokens",
        UI,
        "document.getElementById('tokens-table').textContent.includes('tester')",
    )
    .await?;
    b.fill("#audit-actor", "tester").await?;
    b.fill("#audit-action", "session.create").await?;
    b.click("#audit-form button[type=submit]").await?;
    b.until(
        "the filtered audit log",
        UI,
        "(() => { const rows = [...document.querySelectorAll('#audit-table tbody tr')]; \
           return rows.length > 0 && rows.every(r => r.cells[2].textContent === 'tester' \
             && r.cells[3].textContent === 'session.create'); })()",
    )
    .await?;
    b.screenshot("admin").await?;
    // A new token is shown once, then cleared from the page.
    b.fill("#token-user", "alice").await?;
    b.click("#token-form button[type=submit]").await?;
    let created = b
        .until(
            "the new token",
            UI,
            "document.getElementById('token-new').value",
        )
        .await?;
    assert!(
        created.as_str().is_some_and(|t| t.starts_with("cct_")),
        "{created}"
    );
    b.until(
        "alice's token in the list",
        UI,
        "document.getElementById('tokens-table').textContent.includes('alice')",
    )
    .await?;
    b.click("#token-dismiss").await?;
    let left = b
        .js(
            "return document.documentElement.outerHTML.includes(arguments[0]) \
               || document.getElementById('token-new').value !== '';",
            json!([created]),
        )
        .await?;
    assert_eq!(left, json!(false));

    // Readable on a phone: nothing wider than the screen but the tables'
    // own scrolling boxes.
    b.cmd(
        reqwest::Method::POST,
        "/window/rect",
        json!({"width": 390, "height": 844}),
    )
    .await?;
    b.goto(&format!("{base}/#/session/{id}")).await?;
    b.until("the history", UI, &format!("{TURNS} === 4"))
        .await?;
    let fits = b
        .js(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            json!([]),
        )
        .await?;
    b.screenshot("phone").await?;
    assert_eq!(fits, json!(true), "no sideways scrolling on a phone");

    // Delete asks twice, then the session ends.
    b.goto(&format!("{base}/#/")).await?;
    let delete = format!("button[data-key=\"del:{id}\"]");
    b.until(
        "the delete button",
        UI,
        &format!("document.querySelector({})", json!(delete)),
    )
    .await?;
    b.click(&delete).await?;
    assert_eq!(b.text(&delete).await?, "Confirm delete");
    b.click(&delete).await?;
    b.until(
        "the session terminated",
        TURN,
        &format!(
            "document.querySelector('tr[data-session={}] td.state').textContent === 'terminated'",
            json!(id)
        ),
    )
    .await?;

    b.quit().await;
    h.shutdown().await;
    Ok(())
}

/// A session that asks before tools run: the console shows each question
/// with the tool and its input as text, and its Allow and Deny buttons
/// decide — the tool runs, or the model is told why not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_answers_permission_prompts_in_the_console() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let base = h.client.base_url().trim_end_matches('/').to_owned();
    let repo = h
        .git
        .create_repo("console-ask", &[("README.md", "# Ask\n")])?;
    let b = Browser::start().await?;
    b.goto(&format!("{base}/")).await?;
    b.until(
        "the sign-in form",
        UI,
        "!document.getElementById('view-signin').hidden",
    )
    .await?;
    b.fill("#signin-token", &h.user_token).await?;
    b.click("#signin-form button[type=submit]").await?;
    b.until(
        "the session list",
        UI,
        "!document.getElementById('view-sessions').hidden",
    )
    .await?;
    b.fill("#create-repo", &repo).await?;
    b.fill("#create-key", &h.api_key).await?;
    b.js(
        "document.getElementById('create-permission').value = 'default';",
        json!([]),
    )
    .await?;
    b.click("#create-form button[type=submit]").await?;
    let hash = b
        .until(
            "the session page",
            UI,
            "location.hash.startsWith('#/session/') && location.hash",
        )
        .await?;
    let id = hash
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("#/session/")
        .to_owned();
    b.until(
        "the session to get ready",
        READY,
        "document.getElementById('session-state').textContent === 'ready'",
    )
    .await?;

    // Allow: the question shows the tool and its input (markup in it stays
    // text), then the tool runs.
    b.fill(
        "#command-text",
        "bash: echo '<img src=x onerror=window.pwned=3>' > asked.txt && echo allowed-$((6*7))",
    )
    .await?;
    b.click("#command-form button[type=submit]").await?;
    let asked = b
        .until(
            "the permission question",
            TURN,
            "(c => c && [c.querySelector('.ask').textContent, c.querySelector('pre.input').textContent])\
               (document.querySelector('#stream .permission'))",
        )
        .await?;
    assert_eq!(asked[0], "? Claude Code asks to run Bash", "{asked}");
    let input = asked[1].as_str().unwrap_or_default();
    assert!(
        input.contains("echo '<img src=x onerror=window.pwned=3>' > asked.txt"),
        "{input}"
    );
    b.until(
        "the state to say a person is awaited",
        UI,
        "document.getElementById('session-state').textContent.includes('waiting for you')",
    )
    .await?;
    let injected = b
        .js(
            &format!("return [{INJECTED}, window.pwned === undefined];"),
            json!([]),
        )
        .await?;
    assert_eq!(injected, json!([0, true]), "no markup became elements");
    b.screenshot("permission").await?;
    b.click("#stream .permission .answer-allow").await?;
    b.until("the turn's result", TURN, &format!("{TURNS} > 0"))
        .await?;
    let outcome = b
        .until(
            "the question settled",
            UI,
            "(c => c.classList.contains('allowed') && c.querySelector('.outcome').textContent)\
               (document.querySelector('#stream .permission'))",
        )
        .await?;
    assert_eq!(outcome, json!("Bash allowed by tester"));
    let stream = b.text("#stream").await?;
    assert!(stream.contains("allowed-42"), "{stream}");
    assert!(h.client.files(&id, "asked.txt").await.is_ok());

    // Deny with a reason: the tool does not run; the model is told why.
    b.fill("#command-text", "bash: touch console-denied")
        .await?;
    b.click("#command-form button[type=submit]").await?;
    b.until(
        "the second question",
        TURN,
        "document.querySelectorAll('#stream .permission').length === 2",
    )
    .await?;
    b.fill(
        "#stream .permission:last-of-type .deny-why",
        "not from the console",
    )
    .await?;
    b.click("#stream .permission:last-of-type .answer-deny")
        .await?;
    b.until("the turn's result", TURN, &format!("{TURNS} > 1"))
        .await?;
    let outcome = b
        .until(
            "the denial settled",
            UI,
            "(c => c.classList.contains('denied') && c.querySelector('.outcome').textContent)\
               ([...document.querySelectorAll('#stream .permission')][1])",
        )
        .await?;
    assert_eq!(
        outcome,
        json!("Bash denied by tester: not from the console")
    );
    let stream = b.text("#stream").await?;
    // The model double echoes the tool result it received.
    assert!(stream.contains("Ran `touch console-denied`."), "{stream}");
    assert!(
        stream.matches("not from the console").count() >= 2,
        "{stream}"
    );
    match h.client.files(&id, "console-denied").await {
        Err(e) => assert_eq!(e.code(), Some("path_not_found"), "{e}"),
        Ok(p) => panic!("the denied tool ran: {p:?}"),
    }
    // Both buttons of a settled question are off.
    let enabled = b
        .js(
            "return document.querySelectorAll('#stream .permission button:not([disabled])').length;",
            json!([]),
        )
        .await?;
    assert_eq!(enabled, json!(0));
    assert_eq!(b.text("#notice").await?, "");
    b.screenshot("permission-answered").await?;
    b.quit().await;
    h.shutdown().await;
    Ok(())
}

/// `serve` on loopback without any token (open mode): the console needs no
/// sign-in and acts as this machine's administrator.
/// Sleep, Wake and Fork on the session page: the state line follows the
/// session to sleep and back, and a fork opens on its own page, ready,
/// with the parent's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_puts_a_session_to_sleep_wakes_and_forks_it() -> anyhow::Result<()> {
    let h = Harness::start_configured(
        cc_testkit::harness::HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        // Sleep and fork need the sessions' sealed secrets, as under `serve`.
        |c| c.seal_key = Some(cc_core::secrets::SealKey::generate()),
    )
    .await?;
    let base = h.client.base_url().trim_end_matches('/').to_owned();
    let repo = h
        .git
        .create_repo("console-sleep", &[("README.md", "# Zz\n")])?;
    let b = Browser::start().await?;
    b.goto(&format!("{base}/")).await?;
    b.fill("#signin-token", &h.user_token).await?;
    b.click("#signin-form button[type=submit]").await?;
    b.until(
        "the session list",
        UI,
        "!document.getElementById('view-sessions').hidden",
    )
    .await?;
    b.fill("#create-repo", &repo).await?;
    b.fill("#create-key", &h.api_key).await?;
    b.click("#create-form button[type=submit]").await?;
    let hash = b
        .until(
            "the session page",
            UI,
            "location.hash.startsWith('#/session/') && location.hash",
        )
        .await?;
    let state_is =
        |s: &str| format!("document.getElementById('session-state').textContent === '{s}'");
    b.until("the session to get ready", READY, &state_is("ready"))
        .await?;
    run_turn(&b, "write: kept.txt\nthrough the night", 0).await?;

    b.click("#sleep").await?;
    b.until("the session to sleep", READY, &state_is("sleeping"))
        .await?;
    b.click("#wake").await?;
    b.until("the session to wake", READY, &state_is("ready"))
        .await?;

    b.click("#fork").await?;
    let fork_hash = b
        .until(
            "the fork's page",
            UI,
            &format!("location.hash !== {hash} && location.hash.startsWith('#/session/') && location.hash"),
        )
        .await?;
    b.until("the fork to get ready", READY, &state_is("ready"))
        .await?;
    let fork = fork_hash
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("#/session/")
        .to_owned();
    match h.client.files(&fork, "kept.txt").await? {
        cc_wire::api::SessionPath::File { content, .. } => {
            assert!(content.contains("through the night"), "{content}")
        }
        other => anyhow::bail!("the fork has no kept.txt: {other:?}"),
    }
    b.screenshot("session-fork").await?;
    b.quit().await;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_needs_no_sign_in() -> anyhow::Result<()> {
    let guard = cc_testkit::docker::PrefixGuard::new();
    let (home, data) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let image = std::env::var("CLAUDECLUSTER_TEST_IMAGE")
        .unwrap_or_else(|_| cc_testkit::harness::DEFAULT_TEST_IMAGE.into());
    let mut c = super::cli(home.path());
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ])
    .args(["--image", &image, "--resource-prefix", &guard.prefix])
    .arg("--data-dir")
    .arg(data.path())
    .env_remove("CLAUDECLUSTER_ADMIN_TOKEN")
    .env("RUST_LOG", "error")
    .stderr(std::process::Stdio::null());
    let (mut serve, base) = super::spawn_serve(c).await?;

    let b = Browser::start().await?;
    b.goto(&format!("{base}/")).await?;
    b.until(
        "the session list",
        UI,
        "!document.getElementById('view-sessions').hidden \
           && !document.getElementById('sessions-empty').hidden",
    )
    .await?;
    let shown = b
        .js(
            "return [document.getElementById('view-signin').hidden, \
                     document.getElementById('nav-admin').hidden, \
                     document.getElementById('sign-out').hidden];",
            json!([]),
        )
        .await?;
    assert_eq!(
        shown,
        json!([true, false, true]),
        "sign-in, admin link, sign-out"
    );
    b.click("#nav-admin").await?;
    b.until(
        "the admin page",
        UI,
        "!document.getElementById('view-admin').hidden",
    )
    .await?;
    // Its calls (sessions, audit log, tokens) all answered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.text("#notice").await?, "");
    b.quit().await;
    serve.kill().await?;
    Ok(())
}
