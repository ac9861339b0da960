//! `claudecluster`: run the orchestrator, build the worker image.

mod admin;
mod attach;
mod bench;
mod best_of;
mod config;
mod doctor;
mod follow;
mod image;
#[cfg(feature = "kubernetes")]
mod kube;
mod options;
mod push;
mod run;
mod runtime;
mod serve;
mod session;
mod store;
mod ui;
mod webhook;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "claudecluster",
    version,
    about = "Isolated, ephemeral Claude Code sessions, one container each",
    after_help = "Examples:\n  claudecluster image build\n  claudecluster serve --listen 127.0.0.1:8080 --data-dir ./data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orchestrator: the REST + WebSocket API and the session gateway.
    Serve(Box<serve::ServeArgs>),
    /// Administer a data directory: API tokens, the audit log, erasing a user.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Manage the worker image sessions run in.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run one task in a fresh session: create, stream the work, summarise, delete.
    Run(Box<run::RunArgs>),
    /// Manage sessions: create, list, status, send, attach, logs, delete.
    Session(session::SessionArgs),
    /// Register, list and delete webhook endpoints; read their delivery logs.
    Webhook(webhook::WebhookArgs),
    /// Check Docker, the worker image, the API, the data dir and the upstream.
    Doctor(doctor::DoctorArgs),
    /// Kubernetes: review what the runtime creates for a session.
    #[cfg(feature = "kubernetes")]
    #[command(subcommand)]
    Kube(kube::KubeCommand),
    /// Benchmark spawn, command latency, concurrency, fan-out and the API beside their baselines.
    Bench(Box<bench::BenchArgs>),
    /// Print shell completions.
    #[command(
        after_help = "Examples:\n  claudecluster completions bash > ~/.local/share/bash-completion/completions/claudecluster\n  claudecluster completions zsh > \"${fpath[1]}/_claudecluster\"\n  claudecluster completions fish > ~/.config/fish/completions/claudecluster.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Admin(cmd) => admin::run(cmd).await,
            Command::Image(cmd) => image::run(cmd).await,
            Command::Run(args) => run::run(*args).await,
            Command::Session(args) => session::run(args).await,
            Command::Webhook(args) => webhook::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Bench(args) => bench::run(*args).await,
            #[cfg(feature = "kubernetes")]
            Command::Kube(cmd) => kube::run(cmd).await,
            Command::Completions { shell } => {
                let mut cmd = Cli::command();
                clap_complete::generate(shell, &mut cmd, "claudecluster", &mut std::io::stdout());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Client commands fail with one line and their own exit code.
            if let Some(exit) = e.downcast_ref::<ui::Exit>() {
                if !exit.message.is_empty() {
                    eprintln!("error: {}", exit.message);
                }
                return ExitCode::from(exit.code);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
