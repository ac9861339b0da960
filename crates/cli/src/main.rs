//! `claudecluster`: run the orchestrator, build the worker image.

mod image;
mod serve;

use clap::{Parser, Subcommand};
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
    /// Manage the worker image sessions run in.
    #[command(subcommand)]
    Image(image::ImageCommand),
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
            Command::Image(cmd) => image::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
