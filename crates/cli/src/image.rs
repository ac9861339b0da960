//! `claudecluster image build`: the worker image, built locally.

use anyhow::Context;
use cc_runtime_docker::image::{build_worker_image, ImageBuildOptions, Progress};
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build the worker image (skipped in seconds when nothing changed).
    #[command(
        after_help = "Examples:\n  claudecluster image build\n  claudecluster image build --base-image debian:bookworm-slim"
    )]
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// Base image to build on, where a registry is reachable; by default a
    /// Debian base is made locally with debootstrap.
    #[arg(long)]
    base_image: Option<String>,
    /// The sessiond binary to put in the image (default: the one next to
    /// this executable).
    #[arg(long)]
    sessiond: Option<PathBuf>,
    /// Where downloads and the Claude Code binary are cached.
    #[arg(long, env = "CLAUDECLUSTER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Rebuild even when an image with the same content exists.
    #[arg(long)]
    force: bool,
    /// Show the output of the build's commands.
    #[arg(long, short)]
    verbose: bool,
}

pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    let ImageCommand::Build(args) = cmd;
    let sessiond = match args.sessiond {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("claudecluster-sessiond"),
    };
    let mut opts = ImageBuildOptions::new(sessiond);
    opts.base_image = args.base_image;
    opts.force = args.force;
    if let Some(dir) = args.cache_dir {
        opts.cache_dir = dir;
    }
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let verbose = args.verbose;
    let mut show = |p: Progress| {
        let mut err = std::io::stderr().lock();
        let _ = match p {
            Progress::Step { name, detail } => writeln!(err, "▸ {name}: {detail}"),
            Progress::Output { name, line } if verbose => writeln!(err, "  {name} │ {line}"),
            Progress::Output { .. } => Ok(()),
            Progress::Done { name, elapsed } => {
                if tty {
                    writeln!(
                        err,
                        "\x1b[32m✓\x1b[0m {name} ({:.1}s)",
                        elapsed.as_secs_f64()
                    )
                } else {
                    writeln!(err, "✓ {name} ({:.1}s)", elapsed.as_secs_f64())
                }
            }
        };
    };
    let built = build_worker_image(&opts, &mut show).await?;
    let verb = if built.skipped { "up to date" } else { "built" };
    eprintln!(
        "worker image {} {verb} ({:.0} MB) in {:.1}s",
        built.tag,
        built.size_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    // The tag on stdout, for scripts.
    println!("{}", built.tag);
    Ok(())
}
