//! `claudecluster session attach`: an interactive prompt against a live
//! session. Each line typed is sent as a task and its work streamed; Ctrl-C
//! interrupts the running turn (the WebSocket `interrupt` message), Ctrl-D
//! detaches; a lost connection is re-established with `since=<last seq>`.
//!
//! When Claude Code asks whether it may run a tool (a `permissionRequest`),
//! the next line typed answers it: `y` allows, `n` denies (`n <why>` tells
//! the model why), `a` allows that tool for the rest of the session. A
//! question settled elsewhere (another client, the timeout) is dropped.
//!
//! The terminal stays in its ordinary line mode: the line discipline edits
//! and echoes the input, Ctrl-D at the start of a line is end of input, and
//! Ctrl-C reaches us as SIGINT.

use crate::follow::Follower;
use crate::ui::{exit, Exit, Mode, Renderer, Show, Style};
use cc_client::Client;
use cc_wire::api::{ClientMessage, ServerMessage, SessionState};
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use tokio::sync::mpsc;

pub async fn run(client: &Client, id: &str) -> Result<(), Exit> {
    let api = |e| Exit::from_client(e, client.base_url());
    let status = client.status(id).await.map_err(api)?;
    if !status.state.is_live() {
        return Err(Exit::new(
            exit::FAILURE,
            format!(
                "session {id} is {}; only a live session can be attached",
                status.state.as_str()
            ),
        ));
    }
    let mut follower = Follower::open(client, id, status.last_seq).await?;
    let mut renderer = Renderer::new(
        Mode::Human,
        Show {
            all_states: false,
            commands: false,
        },
    );
    let err = Style::stderr();
    eprintln!(
        "{}",
        err.dim(&format!(
            "· attached to session {id} ({}). Type a task and press Enter; Ctrl-C interrupts the running turn, Ctrl-D detaches.",
            status.state.as_str()
        ))
    );

    let mut lines = stdin_lines();
    let mut interrupts = ctrl_c_events();
    let mut busy = status.state == SessionState::Busy;
    // A sent task is waiting to start: its Ctrl-C must still interrupt.
    let mut pending = false;
    // Ctrl-C came before the sent task started: interrupt it once it does
    // (the server only interrupts a running turn).
    let mut interrupt_on_start = false;
    // Permission questions waiting for this terminal's answer, oldest first.
    let mut asked: VecDeque<(String, String)> = VecDeque::new();
    for q in &status.pending_permissions {
        renderer.print(&ServerMessage::PermissionRequest {
            seq: 0,
            request_id: q.request_id.clone(),
            tool: q.tool.clone(),
            input: q.input.clone(),
            timestamp: q.timestamp,
        });
        asked.push_back((q.request_id.clone(), q.tool.clone()));
    }
    if let Some((_, tool)) = asked.front() {
        ask(tool);
    } else if !busy {
        prompt();
    }
    loop {
        tokio::select! {
            msg = follower.next() => {
                let Some(msg) = msg? else {
                    renderer.finish_line();
                    let st = client.status(id).await.map_err(api)?;
                    eprintln!("{}", err.dim(&format!("· session {id} ended ({})", st.state.as_str())));
                    return if st.state == SessionState::Error {
                        Err(Exit::silent(exit::FAILURE))
                    } else {
                        Ok(())
                    };
                };
                renderer.print(&msg);
                match &msg {
                    ServerMessage::PermissionRequest { request_id, tool, .. }
                        if !asked.iter().any(|(r, _)| r == request_id) =>
                    {
                        asked.push_back((request_id.clone(), tool.clone()));
                        if asked.len() == 1 {
                            ask(tool);
                        }
                    }
                    ServerMessage::PermissionAnswer { request_id, .. } => {
                        let was_first = asked.front().is_some_and(|(r, _)| r == request_id);
                        asked.retain(|(r, _)| r != request_id);
                        if was_first {
                            if let Some((_, tool)) = asked.front() {
                                ask(tool);
                            }
                        }
                    }
                    _ => {}
                }
                if let ServerMessage::Status { state, .. } = &msg {
                    match state {
                        SessionState::Busy => {
                            busy = true;
                            pending = false;
                            if std::mem::take(&mut interrupt_on_start) {
                                interrupt(&mut follower, client, id).await?;
                            }
                        }
                        SessionState::Ready if busy => {
                            busy = false;
                            renderer.finish_line();
                            if asked.is_empty() {
                                prompt();
                            }
                        }
                        _ => {}
                    }
                }
            }
            line = lines.recv() => match line {
                Some(line) if !asked.is_empty() => {
                    let Some(answer) = parse_answer(&line) else {
                        if let Some((_, tool)) = asked.front() {
                            eprintln!("{}", err.dim("· answer y (allow), n [why] (deny) or a (always allow)"));
                            ask(tool);
                        }
                        continue;
                    };
                    let Some((request_id, _)) = asked.pop_front() else { continue };
                    let response = cc_wire::api::PermissionResponse {
                        request_id: Some(request_id.clone()),
                        ..answer
                    };
                    if !follower.send(&ClientMessage::PermissionResponse(response.clone())).await {
                        if let Err(e) = client.answer_permission(id, &request_id, &response).await {
                            let e = Exit::from_client(e, client.base_url());
                            eprintln!("{}", err.red(&format!("error: {}", e.message)));
                        }
                    }
                    if let Some((_, tool)) = asked.front() {
                        ask(tool);
                    }
                }
                Some(line) => {
                    let task = line.trim();
                    if task.is_empty() {
                        if !busy && !pending {
                            prompt();
                        }
                        continue;
                    }
                    match client.command(id, task).await {
                        Ok(_) => pending = true,
                        Err(e) => {
                            let e = Exit::from_client(e, client.base_url());
                            eprintln!("{}", err.red(&format!("error: {}", e.message)));
                            if !busy {
                                prompt();
                            }
                        }
                    }
                }
                None => {
                    renderer.finish_line();
                    println!();
                    eprintln!(
                        "{}",
                        err.dim(&format!(
                            "· detached; session {id} keeps running (`claudecluster session attach {id}` to come back)"
                        ))
                    );
                    return Ok(());
                }
            },
            Some(()) = interrupts.recv() => {
                if busy || pending {
                    renderer.finish_line();
                    eprintln!("{}", err.dim("· interrupting the turn…"));
                    if busy {
                        interrupt(&mut follower, client, id).await?;
                    } else {
                        interrupt_on_start = true;
                    }
                } else {
                    println!();
                    eprintln!("{}", err.dim("· no turn is running (Ctrl-D detaches)"));
                    prompt();
                }
            }
        }
    }
}

/// The WebSocket `interrupt` message, or the REST call when the socket is
/// down.
async fn interrupt(follower: &mut Follower, client: &Client, id: &str) -> Result<(), Exit> {
    if !follower.send(&ClientMessage::Interrupt).await {
        client
            .interrupt(id)
            .await
            .map_err(|e| Exit::from_client(e, client.base_url()))?;
    }
    Ok(())
}

/// Asks on the terminal about the question at the front.
fn ask(tool: &str) {
    let style = Style::stdout();
    print!(
        "{} ",
        style.bold(&format!(
            "allow {}? [y]es / [n]o [why] / [a]lways ›",
            crate::ui::inert(tool)
        ))
    );
    let _ = std::io::stdout().flush();
}

/// A typed answer to a permission question: `y`/`yes`, `a`/`always`,
/// `n`/`no` with an optional reason after it; `None` for anything else.
fn parse_answer(line: &str) -> Option<cc_wire::api::PermissionResponse> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let answer = |allow: bool, always: bool, message: Option<String>| {
        Some(cc_wire::api::PermissionResponse {
            request_id: None,
            allow,
            message,
            always: always.then_some(true),
        })
    };
    match word.to_ascii_lowercase().as_str() {
        "y" | "yes" => answer(true, false, None),
        "a" | "always" => answer(true, true, None),
        "n" | "no" => {
            let why = rest.trim();
            answer(false, false, (!why.is_empty()).then(|| why.to_owned()))
        }
        _ => None,
    }
}

fn prompt() {
    let style = Style::stdout();
    print!("{} ", style.bold("›"));
    let _ = std::io::stdout().flush();
}

/// Lines typed on stdin; the channel closes at end of input (Ctrl-D). A
/// plain thread, not a runtime task: a blocked read must not keep the
/// runtime from shutting down.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        let mut buf = String::new();
        loop {
            buf.clear();
            match lock.read_line(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.blocking_send(buf.clone()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Every Ctrl-C, as a message.
fn ctrl_c_events() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_answers_read_as_people_type_them() {
        let a = parse_answer("y\n").unwrap();
        assert!(a.allow && a.always.is_none() && a.message.is_none());
        let a = parse_answer(" Always ").unwrap();
        assert!(a.allow && a.always == Some(true));
        let a = parse_answer("n not on main\n").unwrap();
        assert!(!a.allow);
        assert_eq!(a.message.as_deref(), Some("not on main"));
        assert_eq!(parse_answer("no").unwrap().message, None);
        for other in ["", "maybe", "yess"] {
            assert!(parse_answer(other).is_none(), "{other}");
        }
    }
}
