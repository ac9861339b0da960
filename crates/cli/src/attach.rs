//! `claudecluster session attach`: an interactive prompt against a live
//! session. Each line typed is sent as a task and its work streamed; Ctrl-C
//! interrupts the running turn (the WebSocket `interrupt` message), Ctrl-D
//! detaches; a lost connection is re-established with `since=<last seq>`.
//!
//! The terminal stays in its ordinary line mode: the line discipline edits
//! and echoes the input, Ctrl-D at the start of a line is end of input, and
//! Ctrl-C reaches us as SIGINT.

use crate::follow::Follower;
use crate::ui::{exit, Exit, Mode, Renderer, Show, Style};
use cc_client::Client;
use cc_wire::api::{ClientMessage, ServerMessage, SessionState};
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
    if !busy {
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
                            prompt();
                        }
                        _ => {}
                    }
                }
            }
            line = lines.recv() => match line {
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
