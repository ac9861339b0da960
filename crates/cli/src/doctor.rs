//! `claudecluster doctor`: checks what a working ClaudeCluster needs and
//! says how to fix what is missing.

use crate::config::ConnArgs;
use crate::ui::{exit, Exit, Style};
use cc_runtime_docker::DockerRuntime;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  claudecluster doctor
  claudecluster doctor --url http://10.0.0.5:8080 --data-dir /var/lib/claudecluster

Exit codes: 0 every check passed, 1 at least one failed.")]
pub struct DoctorArgs {
    /// Worker image sessions run (as `serve --image`).
    #[arg(
        long,
        env = "CLAUDECLUSTER_IMAGE",
        default_value = "claudecluster-worker:latest"
    )]
    pub image: String,
    /// The server's data directory (as `serve --data-dir`).
    #[arg(
        long,
        env = "CLAUDECLUSTER_DATA_DIR",
        default_value = "./claudecluster-data"
    )]
    pub data_dir: PathBuf,
    /// The Anthropic API the server relays to (as `serve --anthropic-base-url`).
    #[arg(long, env = "CLAUDECLUSTER_ANTHROPIC_BASE_URL", default_value = cc_server::DEFAULT_ANTHROPIC_UPSTREAM)]
    pub anthropic_base_url: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

struct Report {
    style: Style,
    failures: usize,
}

impl Report {
    fn ok(&self, what: &str) {
        println!("{} {what}", self.style.green("✓"));
    }

    fn fail(&mut self, what: &str, fix: &str) {
        self.failures += 1;
        println!("{} {what}", self.style.red("✗"));
        println!("  {} {fix}", self.style.dim("fix:"));
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut r = Report {
        style: Style::stdout(),
        failures: 0,
    };

    // Docker and the worker image.
    match DockerRuntime::connect("claudecluster-doctor-").await {
        Ok(docker) => {
            r.ok("Docker is reachable");
            match docker.check_image(&args.image).await {
                Ok(()) => r.ok(&format!("worker image {} is present", args.image)),
                Err(e) => r.fail(
                    &format!("worker image {}: {e}", args.image),
                    "build it with `claudecluster image build` (or pass --image)",
                ),
            }
        }
        Err(e) => {
            r.fail(
                &format!("Docker: {e}"),
                "start the Docker daemon and make sure this user may use it (group `docker`, or DOCKER_HOST)",
            );
            r.fail(
                &format!("worker image {} was not checked", args.image),
                "fix Docker first",
            );
        }
    }

    // The API.
    match args.conn.client(None) {
        Ok((settings, client)) => match client.healthz().await {
            Ok(()) => r.ok(&format!("the API answers at {}", settings.url)),
            Err(e) => {
                let line = Exit::from_client(e, &settings.url).message;
                r.fail(
                    &line,
                    "start it with `claudecluster serve` (or point --url / CLAUDECLUSTER_URL at it)",
                );
            }
        },
        Err(e) => r.fail(&e.message, "fix the configuration"),
    }

    // The data directory.
    match check_writable(&args.data_dir) {
        Ok(()) => r.ok(&format!(
            "data directory {} is writable",
            args.data_dir.display()
        )),
        Err(e) => r.fail(
            &format!("data directory {}: {e}", args.data_dir.display()),
            "create it and give the server's user write access, or pass --data-dir",
        ),
    }

    // git: the git relay checks pushes with it.
    match tokio::process::Command::new("git")
        .arg("--version")
        .output()
        .await
    {
        Ok(out) if out.status.success() => r.ok(&format!(
            "{} (the git relay checks pushes with it)",
            String::from_utf8_lossy(&out.stdout).trim()
        )),
        Ok(out) => r.fail(
            &format!(
                "git --version failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "reinstall git",
        ),
        Err(e) => r.fail(
            &format!("git is not available: {e}"),
            "install git (e.g. `apt-get install git`): pushes from sessions are refused without it",
        ),
    }

    // The upstream: any HTTP answer proves it is reachable.
    let upstream = args.anthropic_base_url.trim_end_matches('/');
    match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(http) => match http.get(upstream).send().await {
            Ok(resp) => r.ok(&format!(
                "the Anthropic upstream {upstream} answers (HTTP {})",
                resp.status().as_u16()
            )),
            Err(e) => r.fail(
                &format!(
                    "the Anthropic upstream {upstream} is unreachable: {}",
                    root(&e)
                ),
                "check the network, proxy and DNS of this host, or --anthropic-base-url",
            ),
        },
        Err(e) => r.fail(&format!("HTTP client: {e}"), "report this as a bug"),
    }

    if r.failures > 0 {
        let n = r.failures;
        return Err(Exit::new(
            exit::FAILURE,
            format!("{n} check{} failed", if n == 1 { "" } else { "s" }),
        )
        .into());
    }
    Ok(())
}

/// Probes with a file; a directory that does not exist yet is fine when
/// its parent is writable (the server creates it).
fn check_writable(dir: &std::path::Path) -> std::io::Result<()> {
    let target = if dir.exists() {
        dir.to_path_buf()
    } else {
        match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            None => dir.to_path_buf(),
        }
    };
    let probe = target.join(format!(".claudecluster-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}

fn root(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
