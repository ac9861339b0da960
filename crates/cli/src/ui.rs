//! Terminal output of the client commands: colours (only on a TTY, never
//! with `NO_COLOR`), the start-up spinner, the rendering of session events,
//! NDJSON for scripts, and the one-line errors with their exit codes.
//!
//! Whatever a session sends is shown through [`inert`]: its control
//! characters (escape sequences, carriage returns, bells) are printed as
//! visible symbols, so a session cannot drive the terminal (an OSC 52
//! clipboard write, a rewritten line, a changed title); the only escapes
//! that reach it are the colours added here. NDJSON is already inert
//! (JSON escapes control characters).

use cc_client::ClientError;
use cc_wire::api::{ServerMessage, SessionState};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Exit codes of the client commands (documented in `--help` and the README).
pub mod exit {
    /// The command failed: a server error, a failed turn, a session in error.
    pub const FAILURE: u8 = 1;
    /// Bad usage: a missing or invalid flag (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The session (or another resource) does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The server refused the token (HTTP 401, or 403 with code `forbidden`).
    pub const UNAUTHORIZED: u8 = 4;
    /// The server could not be reached.
    pub const UNREACHABLE: u8 = 5;
}

pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0  success\n  1  failure (server error, failed turn, session in error)\n  2  usage error\n  3  session not found\n  4  token refused (HTTP 401, or 403 `forbidden`)\n  5  server unreachable";

/// A failure that has its own exit code and one line for stderr. `main`
/// prints `message` (when not empty) and exits with `code`.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Exits with `code` without printing anything more (the reason was
    /// already shown, e.g. a failed turn).
    pub fn silent(code: u8) -> Self {
        Self::new(code, "")
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    /// One clear line for a client error against the server at `base`.
    pub fn from_client(e: ClientError, base: &str) -> Self {
        match e {
            ClientError::Transport(cause) => Self::new(
                exit::UNREACHABLE,
                format!(
                    "cannot reach the ClaudeCluster server at {base}: {} — is `claudecluster serve` running? (set --url or CLAUDECLUSTER_URL)",
                    tidy_cause(&cause)
                ),
            ),
            // Only a token the server does not accept (401) or one that
            // may not do this (403 `forbidden`) is the token's fault; every
            // other 403 refuses the request itself (a spent budget, a path
            // outside the checkout, a push the rules do not allow) and
            // says why in its message.
            ClientError::Api {
                status,
                message,
                code,
            } if status == 401 || (status == 403 && code == "forbidden") => Self::new(
                exit::UNAUTHORIZED,
                format!(
                    "the server at {base} refused the token: {message} — set --token or CLAUDECLUSTER_TOKEN"
                ),
            ),
            ClientError::Api {
                status: 404,
                message,
                ..
            } => Self::new(exit::NOT_FOUND, format!("{message} (on {base})")),
            ClientError::Api { message, code, .. } => {
                Self::new(exit::FAILURE, format!("{message} ({code})"))
            }
            ClientError::Protocol(m) => Self::new(
                exit::FAILURE,
                format!("unexpected answer from {base}: {m}"),
            ),
        }
    }
}

/// `Connection refused (os error 111)` → `connection refused`.
fn tidy_cause(cause: &str) -> String {
    let c = match cause.find(" (os error") {
        Some(i) => &cause[..i],
        None => cause,
    };
    let mut chars = c.chars();
    match chars.next() {
        Some(f) => f.to_lowercase().chain(chars).collect(),
        None => "no answer".into(),
    }
}

/// Whether colours are used on stdout / stderr.
#[derive(Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn stdout() -> Self {
        Self {
            color: std::io::stdout().is_terminal() && !no_color(),
        }
    }

    pub fn stderr() -> Self {
        Self {
            color: std::io::stderr().is_terminal() && !no_color(),
        }
    }

    fn paint(self, code: &str, s: &str) -> String {
        if self.color && !s.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    pub fn red(self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn green(self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn cyan(self, s: &str) -> String {
        self.paint("36", s)
    }
    pub fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// `text` with every control character but newline and tab replaced by a
/// visible stand-in: C0 controls by their Unicode control pictures (ESC as
/// `␛`, CR as `␍`), DEL as `␡`, others (C1) by `�`.
pub fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    let harmful = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(harmful) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| match c {
            c if !harmful(c) => c,
            '\u{7f}' => '\u{2421}',
            c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            _ => '\u{fffd}',
        })
        .collect::<String>()
        .into()
}

/// What the session sent, for stdout: [`inert`] on a terminal (a diff, a
/// file name or a file's text can carry escape sequences the session
/// wrote), exactly as sent when stdout is a file or a pipe (`session diff
/// --patch | git am` needs every byte).
pub fn for_stdout(text: &str) -> std::borrow::Cow<'_, str> {
    shown(text, std::io::IsTerminal::is_terminal(&std::io::stdout()))
}

fn shown(text: &str, terminal: bool) -> std::borrow::Cow<'_, str> {
    if terminal {
        inert(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A file's bytes for stdout: as they are into a file or a pipe; on a
/// terminal, UTF-8 text made [`inert`], and `None` for anything else
/// (binary bytes would drive the terminal).
pub fn file_for_stdout(bytes: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    file_shown(bytes, std::io::IsTerminal::is_terminal(&std::io::stdout()))
}

fn file_shown(bytes: &[u8], terminal: bool) -> Option<std::borrow::Cow<'_, [u8]>> {
    if !terminal {
        return Some(std::borrow::Cow::Borrowed(bytes));
    }
    let text = std::str::from_utf8(bytes).ok()?;
    Some(match inert(text) {
        std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(bytes),
        std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
    })
}

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// A spinner on stderr while a session starts; nothing when stderr is not
/// a terminal.
pub struct Spinner {
    label: watch::Sender<String>,
    task: Option<JoinHandle<()>>,
}

impl Spinner {
    pub fn start(label: &str, enabled: bool) -> Self {
        let (tx, mut rx) = watch::channel(label.to_owned());
        let task = (enabled && std::io::stderr().is_terminal()).then(|| {
            tokio::spawn(async move {
                const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
                let style = Style::stderr();
                let mut i = 0usize;
                loop {
                    let label = rx.borrow_and_update().clone();
                    eprint!("\r\x1b[2K{} {label}", style.cyan(FRAMES[i % FRAMES.len()]));
                    let _ = std::io::stderr().flush();
                    i += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        r = rx.changed() => if r.is_err() { break },
                    }
                }
            })
        });
        Self { label: tx, task }
    }

    pub fn set(&self, label: &str) {
        let _ = self.label.send(label.to_owned());
    }

    /// Stops and clears the spinner line.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

/// How events are printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// For a person.
    Human,
    /// One JSON server message per line.
    Json,
}

/// What a renderer shows beyond the turn itself.
#[derive(Clone, Copy)]
pub struct Show {
    /// Every state change (logs); otherwise only the notable ones.
    pub all_states: bool,
    /// The commands (logs, attach by others); `run`/`send` echo nothing.
    pub commands: bool,
}

/// Prints session events to stdout.
pub struct Renderer {
    pub mode: Mode,
    style: Style,
    show: Show,
    /// Whether the last text printed ended a line.
    at_line_start: bool,
    /// Prints nothing (several sessions followed at once).
    silent: bool,
}

impl Renderer {
    pub fn new(mode: Mode, show: Show) -> Self {
        Self {
            mode,
            style: Style::stdout(),
            show,
            at_line_start: true,
            silent: false,
        }
    }

    /// A renderer that prints nothing: the caller reports.
    pub fn silent() -> Self {
        Self {
            silent: true,
            ..Self::new(
                Mode::Human,
                Show {
                    all_states: false,
                    commands: false,
                },
            )
        }
    }

    pub fn print(&mut self, msg: &ServerMessage) {
        if self.silent {
            return;
        }
        let out = match self.mode {
            Mode::Json => match serde_json::to_string(msg) {
                Ok(line) => format!("{line}\n"),
                Err(_) => return,
            },
            Mode::Human => self.human(msg),
        };
        if out.is_empty() {
            return;
        }
        self.at_line_start = out.ends_with('\n');
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    /// Ends the current line if text left it open.
    pub fn finish_line(&mut self) {
        if !self.at_line_start && self.mode == Mode::Human {
            println!();
            self.at_line_start = true;
        }
    }

    fn newline_first(&self) -> &'static str {
        if self.at_line_start {
            ""
        } else {
            "\n"
        }
    }

    fn human(&self, msg: &ServerMessage) -> String {
        let s = self.style;
        match msg {
            ServerMessage::Output { text, event, .. } => {
                let text = &inert(text).into_owned();
                let kind = event
                    .as_ref()
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str);
                match kind {
                    Some("assistant") => colour_lines(text, |l| s.cyan(l)),
                    Some("user") => colour_lines(text, |l| {
                        if l.trim_start().starts_with("⎿ error:") {
                            s.red(l)
                        } else {
                            s.dim(l)
                        }
                    }),
                    Some("result") => {
                        let failed = event.as_ref().and_then(|e| e.get("is_error"))
                            == Some(&Value::Bool(true));
                        if failed {
                            colour_lines(text, |l| s.red(l))
                        } else {
                            colour_lines(text, |l| s.green(l))
                        }
                    }
                    Some("system") => colour_lines(text, |l| s.yellow(l)),
                    _ => text.clone(),
                }
            }
            ServerMessage::Command { text, .. } if self.show.commands => {
                format!(
                    "{}{} {}\n",
                    self.newline_first(),
                    s.bold("›"),
                    s.bold(&inert(text))
                )
            }
            ServerMessage::Command { .. } | ServerMessage::Claude { .. } => String::new(),
            // The turn's facts are already in its `✓ done`/`✗` output line.
            ServerMessage::Keepalive { .. } | ServerMessage::TurnResult { .. } => String::new(),
            ServerMessage::Status { state, reason, .. } => {
                let notable = !matches!(state, SessionState::Busy | SessionState::Ready);
                if !(self.show.all_states || notable) {
                    return String::new();
                }
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {}", inert(r)))
                    .unwrap_or_default();
                let line = format!("· session {}{why}", state.as_str());
                let line = if *state == SessionState::Error {
                    s.red(&line)
                } else {
                    s.dim(&line)
                };
                format!("{}{line}\n", self.newline_first())
            }
            ServerMessage::Error { message, code, .. } => {
                let code = code
                    .as_deref()
                    .map(|c| format!(" ({})", inert(c)))
                    .unwrap_or_default();
                format!(
                    "{}{}\n",
                    self.newline_first(),
                    s.red(&format!("✗ error: {}{code}", inert(message)))
                )
            }
            ServerMessage::PermissionRequest { tool, input, .. } => {
                let line = format!(
                    "? Claude Code asks to run {}: {}",
                    inert(tool),
                    inert(&permission_input(input))
                );
                format!("{}{}\n", self.newline_first(), s.yellow(&line))
            }
            ServerMessage::PermissionAnswer {
                tool,
                allow,
                always,
                source,
                message,
                answered_by,
                ..
            } => {
                let verdict = match (allow, always) {
                    (true, true) => "allowed for the rest of the session",
                    (true, false) => "allowed",
                    (false, _) => "denied",
                };
                let by = match (source.as_str(), answered_by) {
                    ("answer", Some(who)) => format!(" by {}", inert(who)),
                    ("answer", None) => String::new(),
                    (other, _) => format!(" ({})", inert(other)),
                };
                let why = message
                    .as_deref()
                    .filter(|_| !allow)
                    .map(|m| format!(": {}", inert(m)))
                    .unwrap_or_default();
                let line = format!("· {} {verdict}{by}{why}", inert(tool));
                let line = if *allow { s.dim(&line) } else { s.red(&line) };
                format!("{}{line}\n", self.newline_first())
            }
        }
    }
}

/// A tool's input as one line for a person: Bash's command as is,
/// anything else as compact JSON, cut at a readable length.
pub fn permission_input(input: &Value) -> String {
    const MAX_CHARS: usize = 2000;
    let text = match input.get("command").and_then(Value::as_str) {
        Some(command) => command.to_owned(),
        None => input.to_string(),
    };
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Colours each line of `text` on its own (so a colour never spans a
/// newline, which terminals and `less -R` handle badly).
fn colour_lines(text: &str, f: impl Fn(&str) -> String) -> String {
    text.split_inclusive('\n')
        .map(|l| match l.strip_suffix('\n') {
            Some(body) => format!("{}\n", f(body)),
            None => f(l),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_text_is_inert_on_a_terminal_and_exact_elsewhere() {
        let osc52 = "a\u{1b}]52;c;ZXZpbA==\u{7}b\n";
        assert_eq!(shown(osc52, false), osc52);
        assert_eq!(shown(osc52, true), "a\u{241b}]52;c;ZXZpbA==\u{2407}b\n");
        assert_eq!(
            file_shown(osc52.as_bytes(), true).as_deref(),
            Some("a\u{241b}]52;c;ZXZpbA==\u{2407}b\n".as_bytes())
        );
        assert_eq!(
            file_shown(osc52.as_bytes(), false).as_deref(),
            Some(osc52.as_bytes())
        );
        let binary = [0x1b, 0xff, 0x00];
        assert_eq!(file_shown(&binary, true), None);
        assert_eq!(file_shown(&binary, false).as_deref(), Some(&binary[..]));
    }

    #[test]
    fn connection_errors_read_naturally() {
        assert_eq!(
            tidy_cause("Connection refused (os error 111)"),
            "connection refused"
        );
        let e = Exit::from_client(
            ClientError::Transport("Connection refused (os error 111)".into()),
            "http://127.0.0.1:1",
        );
        assert_eq!(e.code, exit::UNREACHABLE);
        assert!(e.message.starts_with(
            "cannot reach the ClaudeCluster server at http://127.0.0.1:1: connection refused"
        ));
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn api_errors_map_to_their_codes() {
        let api = |status| ClientError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
        };
        assert_eq!(Exit::from_client(api(401), "u").code, exit::UNAUTHORIZED);
        assert_eq!(Exit::from_client(api(404), "u").code, exit::NOT_FOUND);
        assert_eq!(Exit::from_client(api(409), "u").code, exit::FAILURE);
        let refused = |code: &str| ClientError::Api {
            status: 403,
            code: code.into(),
            message: format!("{code} says why"),
        };
        assert_eq!(
            Exit::from_client(refused("forbidden"), "u").code,
            exit::UNAUTHORIZED
        );
        for code in ["budget_exhausted", "forbidden_path", "ip_not_allowed", "x"] {
            let e = Exit::from_client(refused(code), "u");
            assert_eq!(e.code, exit::FAILURE, "{code}");
            assert_eq!(e.message, format!("{code} says why ({code})"));
        }
    }

    fn output(kind: &str, text: &str) -> ServerMessage {
        ServerMessage::Output {
            seq: 1,
            text: text.to_owned(),
            event: Some(serde_json::json!({"type": kind})),
            timestamp: 0,
        }
    }

    #[test]
    fn a_sessions_escape_sequences_are_shown_not_obeyed() {
        let mut r = Renderer::new(
            Mode::Human,
            Show {
                all_states: true,
                commands: true,
            },
        );
        r.style = Style { color: true };
        // An OSC 52 clipboard write, a title change, a line rewrite.
        let evil = "hi \x1b]52;c;Y3VybCB4fHNo\x07 \x1b]0;owned\x1b\\ \rfake\u{9b}2J\u{7f}\tok\n";
        let shown = r.human(&output("assistant", evil));
        assert_eq!(
            shown,
            "\x1b[36mhi ␛]52;c;Y3VybCB4fHNo␇ ␛]0;owned␛\\ ␍fake\u{fffd}2J␡\tok\x1b[0m\n"
        );
        for msg in [
            output("other", evil),
            ServerMessage::Error {
                seq: 0,
                message: evil.into(),
                timestamp: 0,
                code: Some("\x1b[2J".into()),
            },
            ServerMessage::Status {
                seq: 0,
                state: SessionState::Error,
                timestamp: 0,
                reason: Some(evil.into()),
            },
        ] {
            let shown = r.human(&msg);
            // Only our own colour escapes remain.
            let stripped = shown
                .replace("\x1b[31m", "")
                .replace("\x1b[0m", "")
                .replace("\x1b[2m", "");
            assert!(
                !stripped
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t'),
                "{shown:?}"
            );
        }
    }

    #[test]
    fn lines_are_coloured_one_by_one() {
        let out = colour_lines("a\nb\n", |l| format!("<{l}>"));
        assert_eq!(out, "<a>\n<b>\n");
        assert_eq!(colour_lines("a", |l| format!("<{l}>")), "<a>");
    }
}
