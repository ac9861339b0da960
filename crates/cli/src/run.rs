//! `claudecluster run`: one task in a fresh session — create, wait until
//! ready, send the task, stream the work, summarise, delete (unless
//! `--keep`).

use crate::config::ConnArgs;
use crate::follow::{run_turn, summary_lines, wait_ready, Follower};
use crate::options::{OptionArgs, OPTION_EXAMPLES};
use crate::ui::{exit, Exit, Mode, Renderer, Show, Spinner, Style};
use cc_client::Client;
use cc_wire::api::{CreateSessionRequest, Quantity, SessionConfigRequest};
use clap::Args;

#[derive(Args, Debug)]
#[command(after_help = format!("Examples:
  claudecluster run --repo https://github.com/me/app \"add a --verbose flag\"
  claudecluster run --repo https://github.com/me/app --branch dev --keep \"fix the failing test\"
  claudecluster run --repo https://github.com/me/app --json \"list the TODOs\" | jq -c .type
  claudecluster run --repo https://github.com/me/app --repo-token \"$GH_TOKEN\" --pr \"fix issue #12\"
  claudecluster run --repo https://github.com/me/app --model claude-sonnet-4-5 \\
      --disallowed-tools Bash,WebFetch --max-budget-usd 0.50 --env LOG_LEVEL=debug \"review the diff\"

{OPTION_EXAMPLES}

Exit codes: 0 success, 1 the turn or the session failed, 2 usage,
3 not found, 4 token refused, 5 server unreachable."))]
pub struct RunArgs {
    #[command(flatten)]
    pub session: NewSessionArgs,
    /// Keep the session after the task (print its ID and how to attach).
    #[arg(long)]
    pub keep: bool,
    /// After a successful task, push the work to the session's branch
    /// (`claudecluster/<session-id>` unless --to names another).
    #[arg(long)]
    pub push: bool,
    /// Like --push, then open a pull request (needs --repo-token and a
    /// forge the server knows).
    #[arg(long)]
    pub pr: bool,
    #[command(flatten)]
    pub push_args: crate::push::PushArgs,
    /// Print the server messages as NDJSON (one JSON object per line).
    #[arg(long)]
    pub json: bool,
    /// Run the task in N sessions at once and compare them (2 to 10): one
    /// session is created and forked N−1 times once its checkout is ready.
    /// With --keep they all stay, to push the one you choose.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=10))]
    pub best_of: Option<u32>,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The task for Claude.
    pub task: String,
}

/// Resource limits (and the repository token) asked for at create.
#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Token for a private repository; the server's git relay presents it
    /// to the repository's host, it never enters the container.
    #[arg(
        long,
        env = "CLAUDECLUSTER_REPO_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub repo_token: Option<String>,
    /// Memory limit, e.g. 2g or 512m (default: the server's).
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit in cores, e.g. 1 or 0.5 (default: the server's).
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Lifetime of the session in seconds (default: the server's).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// End the session after this many seconds without use, from 60 up to
    /// the server's maximum (default: the server's idle timeout).
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// What the session may reach besides the Anthropic and git relays
    /// (default: the server's).
    #[arg(long, value_parser = ["none", "allowlist", "open"])]
    pub egress: Option<String>,
}

impl LimitArgs {
    pub fn request(&self) -> Option<SessionConfigRequest> {
        if self.memory.is_none()
            && self.cpu.is_none()
            && self.timeout.is_none()
            && self.idle_timeout.is_none()
            && self.egress.is_none()
        {
            return None;
        }
        Some(SessionConfigRequest {
            memory: self.memory.clone().map(Quantity::Text),
            cpu: self.cpu.map(Quantity::Number),
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            egress: self
                .egress
                .as_deref()
                .and_then(cc_wire::api::EgressMode::parse),
        })
    }
}

/// What a new session is made of: the flags `run` and `session create`
/// share.
#[derive(Args, Debug)]
pub struct NewSessionArgs {
    /// Git repository the session clones.
    #[arg(long)]
    pub repo: String,
    /// Branch to check out (default: the repository's default branch).
    #[arg(long)]
    pub branch: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub options: Box<OptionArgs>,
    /// Claude API key the session uses [env: ANTHROPIC_API_KEY].
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Makes the create safe to retry: run again with the same key and
    /// arguments within 24 hours, it reuses the session the first run
    /// created instead of starting another (e.g. a CI job's run ID).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

impl NewSessionArgs {
    /// Builds the create request; the API key (the flag's, or from the
    /// environment or config file) is required.
    pub fn request(&self, api_key: Option<String>) -> Result<CreateSessionRequest, Exit> {
        let key = api_key.ok_or_else(|| {
            Exit::usage(
                "a Claude API key is needed: pass --api-key, set ANTHROPIC_API_KEY, or add api_key to the config file",
            )
        })?;
        Ok(CreateSessionRequest {
            repo_url: self.repo.clone(),
            branch: self.branch.clone(),
            claude_api_key: key,
            repo_token: self.limits.repo_token.clone(),
            config: self.limits.request(),
            options: self.options.request()?,
        })
    }
}

/// Creates a session, under an idempotency key when given.
pub async fn create(
    client: &Client,
    req: &CreateSessionRequest,
    idempotency_key: Option<&str>,
) -> Result<cc_wire::api::CreateSessionResponse, cc_client::ClientError> {
    match idempotency_key {
        Some(key) => client.create_idempotent(req, key).await,
        None => client.create(req).await,
    }
}

/// Creates a session and waits until it is ready; deletes it when it
/// fails to start or the user presses Ctrl-C. Returns the ID and a
/// follower positioned after the `ready` event.
pub async fn create_ready(
    client: &Client,
    req: &CreateSessionRequest,
    idempotency_key: Option<&str>,
    renderer: &mut Renderer,
) -> Result<(String, Follower), Exit> {
    let spinner = Spinner::start("creating the session…", renderer.mode == Mode::Human);
    let created = match create(client, req, idempotency_key).await {
        Ok(c) => c,
        Err(e) => {
            spinner.stop().await;
            return Err(Exit::from_client(e, client.base_url()));
        }
    };
    let id = created.session_id;
    spinner.set(&format!("starting the session {id}…"));
    let ready = async {
        let mut follower = Follower::open(client, &id, 0).await?;
        wait_ready(&mut follower, renderer, &spinner).await?;
        Ok::<_, Exit>(follower)
    };
    let outcome = tokio::select! {
        r = ready => r,
        _ = tokio::signal::ctrl_c() => Err(Exit::new(130, "interrupted while the session started; deleting it")),
    };
    spinner.stop().await;
    match outcome {
        Ok(f) => Ok((id, f)),
        Err(e) => {
            let _ = client.delete(&id).await;
            Err(e)
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let push = args.push || args.pr;
    if !args.pr && args.push_args.has_pr_flags() {
        return Err(Exit::usage("--pr-title, --pr-body, --pr-base and --draft need --pr").into());
    }
    if !push && (args.push_args.to.is_some() || args.push_args.commit_message.is_some()) {
        return Err(Exit::usage("--to and --commit-message need --push or --pr").into());
    }
    if args.best_of.is_some() && push {
        return Err(Exit::usage(
            "--best-of cannot push: add --keep, then `claudecluster session push ID` the one you choose",
        )
        .into());
    }
    let (settings, client) = args.conn.client(args.session.api_key.as_deref())?;
    let req = args.session.request(settings.api_key)?;
    if let Some(n) = args.best_of {
        let key = args.session.idempotency_key.as_deref();
        crate::best_of::run(
            &client, &req, key, &args.task, n as usize, args.keep, args.json,
        )
        .await?;
        return Ok(());
    }
    let mode = if args.json { Mode::Json } else { Mode::Human };
    let mut renderer = Renderer::new(
        mode,
        Show {
            all_states: false,
            commands: false,
        },
    );
    let (id, mut follower) = create_ready(
        &client,
        &req,
        args.session.idempotency_key.as_deref(),
        &mut renderer,
    )
    .await?;
    let err = Style::stderr();
    if mode == Mode::Human {
        eprintln!("{}", err.dim(&format!("· session {id} ready")));
    }
    let outcome = run_turn(&client, &id, &mut follower, &args.task, &mut renderer).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if !args.keep {
                let _ = client.delete(&id).await;
            }
            return Err(e.into());
        }
    };
    if mode == Mode::Human {
        println!();
        for line in summary_lines(&outcome, Style::stdout()) {
            println!("{line}");
        }
    }
    if push && (outcome.failed() || outcome.interrupted) {
        eprintln!(
            "{}",
            err.dim("· the task did not succeed: nothing was pushed")
        );
    } else if push && outcome.session_ended.is_none() {
        match crate::push::push(&client, &id, &args.push_args.request(args.pr)).await {
            Ok(r) if mode == Mode::Json => println!("{}", serde_json::to_string(&r)?),
            Ok(r) => {
                for line in crate::push::report_lines(&r, Style::stdout()) {
                    println!("{line}");
                }
            }
            Err(e) => {
                // The work may be only in the session now: keep it.
                eprintln!("error: {e}");
                eprintln!(
                    "{}",
                    err.dim(&format!(
                        "· kept session {id} so its work is not lost: `claudecluster session push {id}` to try again"
                    ))
                );
                if !args.keep {
                    eprintln!(
                        "{}",
                        err.dim(&format!("· `claudecluster session delete {id}` ends it"))
                    );
                }
                return Err(Exit::silent(crate::ui::exit::FAILURE).into());
            }
        }
    }
    if args.keep {
        if outcome.session_ended.is_none() {
            eprintln!(
                "{}",
                err.dim(&format!(
                    "· kept session {id}: `claudecluster session attach {id}` to continue, `claudecluster session delete {id}` to end it"
                ))
            );
        }
        if mode == Mode::Json {
            // Scripts find the kept session's ID on stderr.
            eprintln!("{id}");
        }
    } else if outcome.session_ended.is_none() {
        client
            .delete(&id)
            .await
            .map_err(|e| Exit::from_client(e, client.base_url()))?;
        if mode == Mode::Human {
            eprintln!("{}", err.dim(&format!("· session {id} deleted")));
        }
    }
    if outcome.failed() || outcome.interrupted {
        return Err(Exit::silent(exit::FAILURE).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        session: NewSessionArgs,
    }

    fn parse(args: &[&str]) -> NewSessionArgs {
        let argv = ["claudecluster", "--repo", "https://example.test/r.git"];
        Flags::try_parse_from(argv.iter().chain(args))
            .unwrap()
            .session
    }

    #[test]
    fn idle_timeout_goes_into_the_config() {
        let req = parse(&["--idle-timeout", "120"])
            .request(Some("sk-ant-k".into()))
            .unwrap();
        let config = req.config.unwrap();
        assert_eq!((config.idle_timeout, config.timeout), (Some(120), None));
        // Without limit flags the server's defaults apply.
        assert_eq!(parse(&[]).limits.request(), None);
    }
}
