//! `session attach` in a real terminal: tmux runs it, the test types with
//! `send-keys` and reads the screen with `capture-pane`.

use super::BIN;
use cc_testkit::Harness;
use std::time::Duration;
use tokio::process::Command;

/// One tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
    target: String,
}

impl Tmux {
    async fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn keys(&self, keys: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["send-keys", "-t", &self.target];
        args.extend_from_slice(keys);
        self.tmux(&args).await.map(drop)
    }

    /// Types a line literally and presses Enter.
    async fn line(&self, text: &str) -> anyhow::Result<()> {
        self.keys(&["-l", text]).await?;
        self.keys(&["Enter"]).await
    }

    async fn screen(&self) -> anyhow::Result<String> {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &self.target])
            .await
    }

    /// Waits until the screen shows `count` occurrences of `needle`.
    async fn wait_for(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let screen = self.screen().await?;
            if screen.matches(needle).count() >= count {
                return Ok(screen);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {count}× {needle:?}; screen:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_is_an_interactive_prompt_with_interrupt_and_detach() -> anyhow::Result<()> {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        anyhow::bail!("this test needs tmux (scripts/lib.sh installs it)");
    }
    let h = Harness::start().await?;
    let id = super::ready_session(&h, "attach").await?;

    let home = tempfile::tempdir()?;
    let name = format!("cc-attach-{}", std::process::id());
    let tmux = Tmux {
        socket: name.clone(),
        target: name.clone(),
    };
    // The pane's command reports the exit status, then lingers so the
    // screen can still be read.
    let shell = format!(
        "env -u NO_COLOR XDG_CONFIG_HOME='{}' CLAUDECLUSTER_TOKEN='{}' '{BIN}' session attach {id} --url '{}'; echo EXIT=$?; sleep 60",
        home.path().display(),
        h.user_token,
        h.client.base_url()
    );
    tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "200",
        "-y",
        "50",
        &shell,
    ])
    .await?;
    tmux.wait_for("attached to session", 1, Duration::from_secs(20))
        .await?;
    tmux.wait_for("› ", 1, Duration::from_secs(20)).await?;

    // A line is a turn; its work streams to the screen.
    tmux.line("bash: echo attach-$((6*7))").await?;
    tmux.wait_for("attach-42", 1, Duration::from_secs(120))
        .await?;
    tmux.wait_for("✓ done", 1, Duration::from_secs(120)).await?;

    // Ctrl-C interrupts a long turn quickly; the session stays usable.
    tmux.line("slow: 20000 one two three four five six seven eight nine ten eleven twelve")
        .await?;
    // Twice: the typed line, then the turn's streamed text.
    tmux.wait_for("one two", 2, Duration::from_secs(60)).await?;
    let pressed = tokio::time::Instant::now();
    tmux.keys(&["C-c"]).await?;
    let screen = tmux
        .wait_for("interrupting the turn", 1, Duration::from_secs(10))
        .await?;
    // The turn ends cut short: its last word never arrives (the bound is
    // generous; the proof is the missing word, not the time).
    let screen = tmux
        .wait_for("› ", 3, Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n(after Ctrl-C; earlier screen:\n{screen})"))?;
    assert!(
        screen.matches("twelve").count() == 1, // only the typed line
        "the turn was cut short ({:?} after Ctrl-C):\n{screen}",
        pressed.elapsed()
    );
    let logs = h.client.logs(&id, 0, 1000).await?;
    assert!(
        logs.events.iter().any(|m| matches!(m, cc_wire::api::ServerMessage::Output { event: Some(e), .. }
            if e["type"] == "result" && e["is_error"] == true)
            || matches!(m, cc_wire::api::ServerMessage::Output { text, .. } if text.contains('✗'))),
        "the interrupted turn ends with an error result:\n{}",
        cc_testkit::harness::summary(&logs.events)
    );

    tmux.line("bash: echo after-$((7*7))").await?;
    tmux.wait_for("after-49", 1, Duration::from_secs(120))
        .await?;
    tmux.wait_for("✓ done", 2, Duration::from_secs(120)).await?;

    // Ctrl-D detaches with success; the session keeps running.
    tmux.keys(&["C-d"]).await?;
    let screen = tmux.wait_for("EXIT=", 1, Duration::from_secs(20)).await?;
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("detached"), "{screen}");
    assert!(h.client.status(&id).await?.state.is_live());

    // On a terminal output is coloured, unless NO_COLOR is set.
    for (window, no_color) in [("colour", ""), ("plain", "NO_COLOR=1")] {
        let cmd = format!(
            "env -u NO_COLOR {no_color} CLAUDECLUSTER_TOKEN='{}' '{BIN}' session status {id} --url '{}'; echo EXIT=$?; sleep 60",
            h.user_token,
            h.client.base_url()
        );
        tmux.tmux(&["new-window", "-d", "-t", &name, "-n", window, &cmd])
            .await?;
        let target = format!("{name}:{window}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let screen = loop {
            let s = tmux
                .tmux(&["capture-pane", "-p", "-e", "-t", &target])
                .await?;
            if s.contains("EXIT=") || tokio::time::Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            screen.contains("EXIT=0") && screen.contains(&id),
            "{screen}"
        );
        assert_eq!(
            screen.contains("\x1b["),
            no_color.is_empty(),
            "{window}: {screen:?}"
        );
    }
    drop(tmux);
    h.shutdown().await;
    Ok(())
}

/// A session whose Claude Code asks before running a tool: `attach` puts
/// the question on the terminal, and the typed answer decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_asks_on_the_terminal_before_a_tool_runs() -> anyhow::Result<()> {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        anyhow::bail!("this test needs tmux (scripts/lib.sh installs it)");
    }
    let h = Harness::start().await?;
    let options = cc_wire::api::SessionOptions {
        permission_mode: Some("default".into()),
        ..Default::default()
    };
    let id = super::ready_session_with(&h, "attach-ask", Some(options)).await?;
    let home = tempfile::tempdir()?;
    let name = format!("cc-attach-ask-{}", std::process::id());
    let tmux = Tmux {
        socket: name.clone(),
        target: name.clone(),
    };
    let shell = format!(
        "env NO_COLOR=1 XDG_CONFIG_HOME='{}' CLAUDECLUSTER_TOKEN='{}' '{BIN}' session attach {id} --url '{}'; echo EXIT=$?; sleep 60",
        home.path().display(),
        h.user_token,
        h.client.base_url()
    );
    tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "200",
        "-y",
        "50",
        &shell,
    ])
    .await?;
    tmux.wait_for("› ", 1, Duration::from_secs(20)).await?;

    // Denied with a reason: the tool never runs, the model is told why.
    tmux.line("bash: touch attach-denied").await?;
    tmux.wait_for(
        "allow Bash? [y]es / [n]o [why] / [a]lways",
        1,
        Duration::from_secs(120),
    )
    .await?;
    let screen = tmux.screen().await?;
    assert!(
        screen.contains("? Claude Code asks to run Bash: touch attach-denied"),
        "{screen}"
    );
    tmux.line("maybe").await?;
    tmux.wait_for("answer y (allow)", 1, Duration::from_secs(10))
        .await?;
    tmux.line("n not from the terminal").await?;
    tmux.wait_for(
        "Bash denied by tester: not from the terminal",
        1,
        Duration::from_secs(60),
    )
    .await?;
    tmux.wait_for("✓ done", 1, Duration::from_secs(120)).await?;
    let missing = h.client.files(&id, "attach-denied").await;
    assert_eq!(
        missing
            .err()
            .and_then(|e| e.code().map(str::to_owned))
            .as_deref(),
        Some("path_not_found")
    );

    // Allowed: it runs.
    tmux.line("bash: touch attach-allowed && echo made-$((6*7))")
        .await?;
    tmux.wait_for(
        "asks to run Bash: touch attach-allowed",
        1,
        Duration::from_secs(120),
    )
    .await?;
    tmux.line("y").await?;
    tmux.wait_for("made-42", 1, Duration::from_secs(120))
        .await?;
    tmux.wait_for("✓ done", 2, Duration::from_secs(120)).await?;
    assert!(h.client.files(&id, "attach-allowed").await.is_ok());

    tmux.keys(&["C-d"]).await?;
    let screen = tmux.wait_for("EXIT=", 1, Duration::from_secs(20)).await?;
    assert!(screen.contains("EXIT=0"), "{screen}");
    drop(tmux);
    h.shutdown().await;
    Ok(())
}
