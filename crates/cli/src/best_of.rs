//! `run --best-of N`: one task, N attempts at once. One session is created
//! and, once its checkout is ready, forked N−1 times (a copy of the
//! checkout, not N clones); the task runs in all N side by side, a line per
//! session as each finishes, then a comparison: outcome, duration, cost,
//! the files the diff changes and its size, and the start of each result.
//! Without `--keep` every session is deleted at the end.

use crate::follow::{run_turn, wait_ready, Follower, TurnOutcome};
use crate::run::create_ready;
use crate::ui::{exit, Exit, Renderer, Spinner, Style};
use cc_client::Client;
use cc_wire::api::{CreateSessionRequest, ForkRequest, SessionDiff};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Instant;

/// Longest result excerpt in the comparison table.
const RESULT_CHARS: usize = 60;

/// One session's attempt at the task.
struct Attempt {
    id: String,
    outcome: Result<TurnOutcome, Exit>,
    secs: f64,
    diff: Option<SessionDiff>,
}

impl Attempt {
    fn succeeded(&self) -> bool {
        self.outcome
            .as_ref()
            .is_ok_and(|o| !o.failed() && !o.interrupted)
    }

    fn result(&self) -> Option<&Value> {
        self.outcome.as_ref().ok().and_then(|o| o.result.as_ref())
    }

    fn cost(&self) -> Option<f64> {
        self.result()?.get("total_cost_usd")?.as_f64()
    }

    fn text(&self) -> String {
        match &self.outcome {
            Ok(_) => self
                .result()
                .and_then(|r| r.get("result"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            Err(e) => e.to_string(),
        }
    }
}

pub async fn run(
    client: &Client,
    req: &CreateSessionRequest,
    idempotency_key: Option<&str>,
    task: &str,
    n: usize,
    keep: bool,
    json_out: bool,
) -> Result<(), Exit> {
    let api = |e| Exit::from_client(e, client.base_url());
    let err = Style::stderr();
    let started = Instant::now();
    let (first, follower) =
        create_ready(client, req, idempotency_key, &mut Renderer::silent()).await?;
    let fork = ForkRequest {
        count: Some((n - 1) as u32),
        command: None,
    };
    let forks = match client.fork(&first, &fork).await {
        Ok(f) => f.sessions.into_iter().map(|s| s.session_id),
        Err(e) => {
            let _ = client.delete(&first).await;
            return Err(api(e));
        }
    };
    let ids: Vec<String> = std::iter::once(first).chain(forks).collect();
    if !json_out {
        eprintln!(
            "{}",
            err.dim(&format!(
                "· {n} sessions in {:.1} s (one created, {} forked from it): {}",
                started.elapsed().as_secs_f64(),
                n - 1,
                ids.join(" ")
            ))
        );
    }
    let mut first_follower = Some(follower);
    let attempts = ids.iter().enumerate().map(|(i, id)| {
        let follower = if i == 0 { first_follower.take() } else { None };
        attempt(client, i + 1, id, task, follower, json_out)
    });
    let attempts = join_all(attempts).await;

    if json_out {
        let rows: Vec<Value> = attempts.iter().map(row_json).collect();
        println!("{}", json!({ "task": task, "sessions": rows }));
    } else {
        print_table(&attempts, Style::stdout());
    }
    if keep {
        eprintln!(
            "{}",
            err.dim("· kept them all: `claudecluster session diff ID` to look closer, `claudecluster session push ID` for the one you choose, `claudecluster session delete ID` for the rest")
        );
    } else {
        for a in &attempts {
            if let Err(e) = client.delete(&a.id).await {
                eprintln!("warning: session {} was not deleted: {}", a.id, api(e));
            }
        }
        if !json_out {
            eprintln!("{}", err.dim("· sessions deleted"));
        }
    }
    if attempts.iter().any(Attempt::succeeded) {
        Ok(())
    } else {
        Err(Exit::new(exit::FAILURE, "no session succeeded"))
    }
}

/// Waits for the session (a fork is still starting), runs the task in it,
/// reports its end on one line and reads its diff.
async fn attempt(
    client: &Client,
    k: usize,
    id: &str,
    task: &str,
    follower: Option<Follower>,
    quiet: bool,
) -> Attempt {
    let started = Instant::now();
    let outcome = async {
        let mut follower = match follower {
            Some(f) => f,
            None => {
                let mut f = Follower::open(client, id, 0).await?;
                let spinner = Spinner::start("", false);
                let ready = wait_ready(&mut f, &mut Renderer::silent(), &spinner).await;
                spinner.stop().await;
                ready?;
                f
            }
        };
        run_turn(client, id, &mut follower, task, &mut Renderer::silent()).await
    }
    .await;
    let secs = started.elapsed().as_secs_f64();
    let diff = client.diff(id).await.ok();
    let a = Attempt {
        id: id.to_owned(),
        outcome,
        secs,
        diff,
    };
    if !quiet {
        let style = Style::stderr();
        let mark = if a.succeeded() {
            style.green("✓ done")
        } else {
            style.red("✗ failed")
        };
        eprintln!("[{k}] {} {mark} in {secs:.1} s", a.id);
    }
    a
}

fn row_json(a: &Attempt) -> Value {
    json!({
        "sessionId": a.id,
        "succeeded": a.succeeded(),
        "seconds": a.secs,
        "costUsd": a.cost(),
        "files": a.diff.as_ref().map(|d| d.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>()),
        "insertions": a.diff.as_ref().map(|d| d.insertions),
        "deletions": a.diff.as_ref().map(|d| d.deletions),
        "result": a.text(),
    })
}

fn print_table(attempts: &[Attempt], style: Style) {
    println!("{}", style.bold("Best of"));
    println!(
        "  {:<2} {:<26} {:<9} {:>7} {:>9} {:>5} {:>9}  result",
        "#", "session", "outcome", "time", "cost", "files", "diff"
    );
    for (i, a) in attempts.iter().enumerate() {
        let outcome = if a.succeeded() { "succeeded" } else { "failed" };
        let cost = a.cost().map_or("?".into(), |c| format!("${c:.4}"));
        let (files, diff) = a.diff.as_ref().map_or(("?".into(), "?".into()), |d| {
            (
                d.files.len().to_string(),
                format!("+{} −{}", d.insertions, d.deletions),
            )
        });
        let raw = a.text();
        let text = crate::ui::inert(&raw);
        let first_line = text.lines().next().unwrap_or_default();
        let excerpt: String = first_line.chars().take(RESULT_CHARS).collect();
        println!(
            "  {:<2} {:<26} {:<9} {:>6.1}s {:>9} {:>5} {:>9}  {excerpt}",
            i + 1,
            a.id,
            outcome,
            a.secs,
            cost,
            files,
            diff
        );
    }
}
