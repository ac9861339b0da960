//! `claudecluster session …`: manage sessions one step at a time.

use crate::config::ConnArgs;
use crate::follow::{run_turn_with, Follower};
use crate::options::{TurnArgs, OPTION_EXAMPLES};
use crate::run::{create_ready, NewSessionArgs};
use crate::ui::{exit, Exit, Mode, Renderer, Show, Style};
use cc_client::Client;
use cc_wire::api::SessionStatus;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
#[command(after_help = crate::ui::EXIT_CODES_HELP)]
pub struct SessionArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: SessionCommand,
}

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Create a session and wait until it is ready; prints its ID.
    #[command(after_help = format!("Examples:
  claudecluster session create --repo https://github.com/me/app
  id=$(claudecluster session create --repo https://github.com/me/app --branch dev)
  claudecluster session create --repo https://github.com/me/app --model claude-sonnet-4-5 \\
      --permission-mode plan --append-system-prompt \"answer briefly\" --mcp-config ./mcp.json

{OPTION_EXAMPLES}"))]
    Create(CreateArgs),
    /// List sessions (live ones unless --all).
    #[command(
        after_help = "Examples:\n  claudecluster session list\n  claudecluster session list --all --json"
    )]
    List(ListArgs),
    /// Show a session's state, limits and endpoints.
    #[command(after_help = "Example:\n  claudecluster session status 01JD3…")]
    Status(IdArgs),
    /// Send a task; waits for the turn and streams it unless --no-wait.
    #[command(after_help = "Examples:
  claudecluster session send 01JD3… \"run the tests and fix what fails\"
  claudecluster session send --no-wait 01JD3… \"write a changelog entry\"
  claudecluster session send --model claude-haiku-4-5 --permission-mode plan 01JD3… \"outline a fix\"")]
    Send(SendArgs),
    /// Interactive prompt against a live session.
    #[command(
        after_help = "Each line you type is sent as a task and its work is streamed.
Ctrl-C interrupts the running turn; Ctrl-D detaches (the session keeps
running). A lost connection is re-established without losing events.

Example:\n  claudecluster session attach 01JD3…"
    )]
    Attach(IdArgs),
    /// Print a session's log; --follow keeps streaming new events.
    #[command(after_help = "Examples:
  claudecluster session logs 01JD3…
  claudecluster session logs --follow --json 01JD3… | jq -r 'select(.type==\"output\").text'")]
    Logs(LogsArgs),
    /// Show a session's changes against the commit it started from
    /// (committed, uncommitted and new files).
    #[command(after_help = "Examples:
  claudecluster session diff 01JD3…              # summary, then the unified diff
  claudecluster session diff --patch 01JD3… | git am   # the session's commits
  claudecluster session diff --json 01JD3…")]
    Diff(DiffArgs),
    /// List a directory of the session's checkout, or print one of its
    /// files (`.git` is not served).
    #[command(after_help = "Examples:
  claudecluster session files 01JD3…                  # the checkout's root
  claudecluster session files 01JD3… src              # type, size and name per entry
  claudecluster session files 01JD3… src/main.rs > main.rs   # the file's bytes
  claudecluster session files --json 01JD3… src/main.rs")]
    Files(FilesArgs),
    /// Push a session's work (uncommitted changes are committed first) to
    /// its branch, `claudecluster/<session-id>`, and optionally open a pull
    /// request. Never forced, never to the branch it started from.
    #[command(after_help = "Examples:
  claudecluster session push 01JD3…                        # to claudecluster/01JD3…
  claudecluster session push 01JD3… --pr --draft           # and open a draft pull request
  claudecluster session push 01JD3… --to claudecluster/01JD3…/fix-login --commit-message \"Fix login\"
  claudecluster session push --json 01JD3…")]
    Push(SessionPushArgs),
    /// Fork a session: new sessions, each with a copy of its checkout
    /// (uncommitted work included) and of Claude Code's conversation, its
    /// own container and branch; the session itself is untouched. Prints
    /// the new IDs.
    #[command(after_help = "Examples:
  claudecluster session fork 01JD3…
  claudecluster session fork --count 3 --command \"try another approach\" 01JD3…")]
    Fork(ForkArgs),
    /// Put a session to sleep: its container goes, its checkout and
    /// Claude Code's conversation stay. Any later use wakes it.
    #[command(after_help = "Example:\n  claudecluster session sleep 01JD3…")]
    Sleep(IdArgs),
    /// Wake a sleeping session and wait until it is ready; its next turn
    /// sees every earlier one.
    #[command(after_help = "Example:\n  claudecluster session wake 01JD3…")]
    Wake(IdArgs),
    /// End a session and remove its container.
    #[command(after_help = "Example:\n  claudecluster session delete 01JD3…")]
    Delete(IdArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub session: NewSessionArgs,
    /// Return as soon as the session is created, without waiting for ready.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the session's status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ForkArgs {
    /// Session ID.
    pub id: String,
    /// How many forks (1 to 10).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// A task every fork runs at once.
    #[arg(long)]
    pub command: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Include ended sessions.
    #[arg(long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    /// Session ID.
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SessionPushArgs {
    /// Session ID.
    pub id: String,
    #[command(flatten)]
    pub push: crate::push::PushArgs,
    /// Open a pull (merge) request from the branch once it is pushed.
    #[arg(long)]
    pub pr: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Session ID.
    pub id: String,
    /// Print the session's commits as a patch series (`git format-patch`)
    /// instead of the summary and unified diff.
    #[arg(long)]
    pub patch: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    /// Session ID.
    pub id: String,
    /// Path relative to the checkout (default: its root).
    #[arg(default_value = "")]
    pub path: String,
    /// Print JSON (a file's content as the API sends it: UTF-8 or base64).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Session ID.
    pub id: String,
    /// The task.
    pub task: String,
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Only queue the task; do not wait for the turn.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the server messages as NDJSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Session ID.
    pub id: String,
    /// Keep streaming new events until the session ends (Ctrl-C stops).
    #[arg(long, short)]
    pub follow: bool,
    /// Start after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Print the server messages as NDJSON.
    #[arg(long)]
    pub json: bool,
}

fn api(client: &Client) -> impl Fn(cc_client::ClientError) -> Exit + '_ {
    move |e| Exit::from_client(e, client.base_url())
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

/// A directory `ls -l`-ish (type, size, name), a file's bytes as they are.
fn print_path(found: &cc_wire::api::SessionPath) -> anyhow::Result<()> {
    use base64::Engine;
    use cc_wire::api::{EntryKind, FileEncoding, SessionPath};
    use std::io::Write;
    match found {
        SessionPath::Dir {
            entries, truncated, ..
        } => {
            for entry in entries {
                let (kind, suffix) = match entry.kind {
                    EntryKind::Dir => ('d', "/"),
                    EntryKind::File => ('-', ""),
                    EntryKind::Symlink => ('l', "@"),
                    EntryKind::Other => ('?', ""),
                };
                let size = match entry.kind {
                    EntryKind::File => entry.size.to_string(),
                    _ => "-".into(),
                };
                println!(
                    "{kind} {size:>10}  {}{suffix}",
                    crate::ui::for_stdout(&entry.name)
                );
            }
            if *truncated {
                eprintln!(
                    "note: only the first {} entries are listed",
                    cc_wire::api::MAX_DIR_ENTRIES
                );
            }
        }
        SessionPath::File {
            encoding,
            content,
            truncated,
            size,
            ..
        } => {
            let bytes =
                match encoding {
                    FileEncoding::Utf8 => content.as_bytes().to_vec(),
                    FileEncoding::Base64 => base64::engine::general_purpose::STANDARD
                        .decode(content)
                        .map_err(|err| anyhow::anyhow!("the server sent bad base64: {err}"))?,
                };
            let Some(shown) = crate::ui::file_for_stdout(&bytes) else {
                anyhow::bail!(
                    "{} bytes of binary content: redirect the output to a file to save them",
                    bytes.len()
                );
            };
            let mut out = std::io::stdout().lock();
            out.write_all(&shown)?;
            out.flush()?;
            if *truncated {
                eprintln!(
                    "note: the first {} of {size} bytes; the rest is not served",
                    bytes.len()
                );
            }
        }
    }
    Ok(())
}

pub async fn run(args: SessionArgs) -> anyhow::Result<()> {
    let api_key_flag = match &args.command {
        SessionCommand::Create(c) => c.session.api_key.clone(),
        _ => None,
    };
    let (settings, client) = args.conn.client(api_key_flag.as_deref())?;
    let e = api(&client);
    match args.command {
        SessionCommand::Create(c) => {
            let req = c.session.request(settings.api_key)?;
            let id = if c.no_wait {
                crate::run::create(&client, &req, c.session.idempotency_key.as_deref())
                    .await
                    .map_err(&e)?
                    .session_id
            } else {
                // Events are not printed while waiting (a spinner is): only the ID is.
                let mut silent = Renderer::new(
                    Mode::Human,
                    Show {
                        all_states: false,
                        commands: false,
                    },
                );
                let key = c.session.idempotency_key.as_deref();
                create_ready(&client, &req, key, &mut silent).await?.0
            };
            if c.json {
                print_json(&client.status(&id).await.map_err(&e)?);
            } else {
                println!("{id}");
            }
        }
        SessionCommand::List(l) => {
            let sessions = client.list(l.all).await.map_err(&e)?;
            if l.json {
                print_json(&sessions);
            } else {
                print_table(&sessions);
            }
        }
        SessionCommand::Status(s) => {
            let st = client.status(&s.id).await.map_err(&e)?;
            if s.json {
                print_json(&st);
            } else {
                print_status(&st);
            }
        }
        SessionCommand::Send(s) => {
            let turn = s.turn.request(&s.task);
            if s.no_wait {
                let r = client.command_with(&s.id, &turn).await.map_err(&e)?;
                if s.json {
                    print_json(&r);
                } else {
                    eprintln!(
                        "{}",
                        Style::stderr().dim(&format!(
                            "· queued (session {}); follow it with `claudecluster session logs --follow {}`",
                            r.state.as_str(),
                            s.id
                        ))
                    );
                }
                return Ok(());
            }
            let st = client.status(&s.id).await.map_err(&e)?;
            if !st.state.is_live() {
                return Err(Exit::new(
                    exit::FAILURE,
                    format!("session {} is {}", s.id, st.state.as_str()),
                )
                .into());
            }
            let mut follower = Follower::open(&client, &s.id, st.last_seq).await?;
            let mode = if s.json { Mode::Json } else { Mode::Human };
            let mut renderer = Renderer::new(
                mode,
                Show {
                    all_states: false,
                    commands: false,
                },
            );
            let out = run_turn_with(&client, &s.id, &mut follower, &turn, &mut renderer).await?;
            if out.failed() || out.interrupted {
                return Err(Exit::silent(exit::FAILURE).into());
            }
        }
        SessionCommand::Attach(a) => crate::attach::run(&client, &a.id).await?,
        SessionCommand::Logs(l) => logs(&client, l).await?,
        SessionCommand::Push(p) => {
            if p.push.has_pr_flags() && !p.pr {
                return Err(
                    Exit::usage("--pr-title, --pr-body, --pr-base and --draft need --pr").into(),
                );
            }
            let r = crate::push::push(&client, &p.id, &p.push.request(p.pr)).await?;
            if p.json {
                print_json(&r);
            } else {
                for line in crate::push::report_lines(&r, Style::stdout()) {
                    println!("{line}");
                }
            }
        }
        SessionCommand::Diff(d) => {
            let diff = client.diff(&d.id).await.map_err(&e)?;
            if d.json {
                print_json(&diff);
            } else if d.patch {
                print!("{}", crate::ui::for_stdout(&diff.patches));
            } else {
                for f in &diff.files {
                    let path = crate::ui::for_stdout(&f.path);
                    if f.binary {
                        println!(" {path} (binary)");
                    } else {
                        println!(" {path} +{} -{}", f.insertions, f.deletions);
                    }
                }
                println!(
                    " {} file(s) changed, {} insertion(s), {} deletion(s)\n",
                    diff.files.len(),
                    diff.insertions,
                    diff.deletions
                );
                print!("{}", crate::ui::for_stdout(&diff.diff));
            }
            if diff.truncated {
                eprintln!(
                    "note: the diff was cut at {} bytes",
                    cc_wire::api::MAX_DIFF_BYTES
                );
            }
        }
        SessionCommand::Files(f) => {
            let found = client.files(&f.id, &f.path).await.map_err(&e)?;
            if f.json {
                print_json(&found);
            } else {
                print_path(&found)?;
            }
        }
        SessionCommand::Fork(f) => {
            let req = cc_wire::api::ForkRequest {
                count: Some(f.count),
                command: f.command,
            };
            let forked = client.fork(&f.id, &req).await.map_err(&e)?;
            if f.json {
                print_json(&forked);
            } else {
                for s in &forked.sessions {
                    println!("{}", s.session_id);
                }
            }
        }
        SessionCommand::Sleep(d) => {
            let st = client.sleep(&d.id).await.map_err(&e)?;
            if d.json {
                print_json(&st);
            } else {
                println!("{} {}", st.session_id, st.state.as_str());
            }
        }
        SessionCommand::Wake(d) => {
            let woken = client.wake(&d.id).await.map_err(&e)?;
            if woken.state != cc_wire::api::SessionState::Ready {
                wait_awake(&client, &woken).await?;
            }
            let st = client.status(&d.id).await.map_err(&e)?;
            if d.json {
                print_json(&st);
            } else {
                println!("{} {}", st.session_id, st.state.as_str());
            }
        }
        SessionCommand::Delete(d) => {
            let r = client.delete(&d.id).await.map_err(&e)?;
            if d.json {
                print_json(&r);
            } else {
                println!("{} {}", r.session_id, r.state.as_str());
            }
        }
    }
    Ok(())
}

/// Follows a session that is waking, from its `starting`, until `ready`.
async fn wait_awake(client: &Client, woken: &SessionStatus) -> Result<(), Exit> {
    let spinner = crate::ui::Spinner::start("waking the session…", true);
    let mut quiet = Renderer::new(
        Mode::Human,
        Show {
            all_states: false,
            commands: false,
        },
    );
    let ready = async {
        let mut follower = Follower::open(client, &woken.session_id, woken.last_seq).await?;
        crate::follow::wait_ready(&mut follower, &mut quiet, &spinner).await
    };
    let r = ready.await;
    spinner.stop().await;
    r
}

async fn logs(client: &Client, l: LogsArgs) -> Result<(), Exit> {
    let mode = if l.json { Mode::Json } else { Mode::Human };
    let mut renderer = Renderer::new(
        mode,
        Show {
            all_states: true,
            commands: true,
        },
    );
    let mut since = l.since;
    loop {
        let page = client
            .logs(&l.id, since, 500)
            .await
            .map_err(|e| Exit::from_client(e, client.base_url()))?;
        for ev in &page.events {
            renderer.print(ev);
        }
        if page.events.is_empty() || page.next_since <= since {
            break;
        }
        since = page.next_since;
    }
    if l.follow {
        let mut follower = Follower::open(client, &l.id, since).await?;
        loop {
            tokio::select! {
                m = follower.next() => match m? {
                    Some(m) => renderer.print(&m),
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
    }
    renderer.finish_line();
    Ok(())
}

fn print_table(sessions: &[SessionStatus]) {
    let style = Style::stdout();
    if sessions.is_empty() {
        eprintln!("{}", Style::stderr().dim("no sessions"));
        return;
    }
    println!(
        "{}",
        style.bold(&format!(
            "{:<28} {:<11} {:<20} {}",
            "ID", "STATE", "CREATED", "REPOSITORY"
        ))
    );
    for s in sessions {
        let state = format!("{:<11}", s.state.as_str());
        let state = match s.state {
            cc_wire::api::SessionState::Error => style.red(&state),
            cc_wire::api::SessionState::Ready | cc_wire::api::SessionState::Busy => {
                style.green(&state)
            }
            _ => style.dim(&state),
        };
        let created: String = s.created_at.chars().take(19).collect();
        let repo = match &s.branch {
            Some(b) => format!("{} ({b})", s.repo_url),
            None => s.repo_url.clone(),
        };
        println!("{:<28} {state} {:<20} {repo}", s.session_id, created);
    }
}

fn print_status(s: &SessionStatus) {
    let style = Style::stdout();
    let row = |k: &str, v: &str| println!("{} {v}", style.dim(&format!("{k:<10}")));
    row("session", &s.session_id);
    let state = match &s.reason {
        Some(r) => format!("{} ({})", s.state.as_str(), crate::ui::for_stdout(r)),
        None => s.state.as_str().to_owned(),
    };
    row("state", &state);
    row("repo", &s.repo_url);
    if let Some(b) = &s.branch {
        row("branch", b);
    }
    let idle = match s.limits.idle_timeout_secs {
        Some(0) => "never idles out".to_owned(),
        Some(secs) => format!("idle {secs} s"),
        None => "idle: the server's".to_owned(),
    };
    row(
        "limits",
        &format!(
            "{} MiB · {} CPU · {} s · {idle}",
            s.limits.memory_bytes / (1024 * 1024),
            s.limits.cpu,
            s.limits.timeout_secs
        ),
    );
    if let Some(c) = &s.container_id {
        row("container", c);
    }
    if let Some(r) = &s.resources {
        const MIB: u64 = 1024 * 1024;
        let mut used = format!(
            "{:.1} % CPU · {} / {} MiB memory · {} processes",
            r.cpu_percent,
            r.memory_bytes / MIB,
            r.memory_limit_bytes / MIB,
            r.pids
        );
        if let Some(w) = r.workspace_bytes {
            used += &format!(" · workspace {} MiB", w / MIB);
            if let Some(limit) = r.workspace_limit_bytes {
                used += &format!(" of {} MiB", limit / MIB);
            }
        }
        row("resources", &used);
    }
    row("created", &s.created_at);
    row("expires", &s.expires_at);
    row("events", &s.last_seq.to_string());
    row("websocket", &s.endpoints.websocket);
}
