//! The worker image build, without any registry.
//!
//! Owns everything that turns a compiled `claudecluster-sessiond` and the
//! pinned Claude Code release into `claudecluster-worker:<content hash>`:
//!
//! 1. the Claude Code binary: `pip download` of the `claude-agent-sdk` wheel
//!    into the cache, then `claude_agent_sdk/_bundled/claude` unpacked from it
//!    and checked with `claude --version`;
//! 2. the base image: `debian:bookworm-slim`-like, either given by name or
//!    built once with `debootstrap`, trimmed and `docker import`ed as
//!    `claudecluster-base:bookworm-<recipe hash>`;
//! 3. the build context (the embedded `image/Dockerfile`, `claude`,
//!    `claudecluster-sessiond`) and a legacy-builder `docker build`
//!    (`DOCKER_BUILDKIT=0`: Debian's docker.io ships without buildx);
//! 4. the content tag: sha256 over the Dockerfile, the base image ID, the SDK
//!    version and the sessiond binary's sha256. An existing tag is reused
//!    without touching the Claude Code binary, so the no-op path is fast.
//!
//! All work is done by the `docker`, `debootstrap`, `tar`, `pip` and
//! `python3` (or `unzip`) command-line tools, run with [`tokio::process`].

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// The pinned `claude-agent-sdk` wheel version (bundles Claude Code 2.1.332).
pub const CLAUDE_AGENT_SDK_VERSION: &str = "0.2.189";
/// Repository part of the worker image tag.
pub const WORKER_IMAGE_REPO: &str = "claudecluster-worker";
/// Repository part of the locally built base image tag.
pub const BASE_IMAGE_REPO: &str = "claudecluster-base";
/// The worker Dockerfile (`image/Dockerfile`), embedded so the CLI works from
/// any directory.
pub const DOCKERFILE: &str = include_str!("../../../image/Dockerfile");
/// Label carried by the worker image (`worker`) and the base image (`base`).
pub const LABEL_COMPONENT: &str = "io.claudecluster.component";
/// Label carrying the worker image's content hash.
pub const LABEL_CONTENT_HASH: &str = "io.claudecluster.content-hash";
/// Label carrying the Claude Code version inside the worker image.
pub const LABEL_CLAUDE_CODE_VERSION: &str = "io.claudecluster.claude-code-version";
/// Label carrying the `claude-agent-sdk` version the worker image was built from.
pub const LABEL_CLAUDE_AGENT_SDK_VERSION: &str = "io.claudecluster.claude-agent-sdk-version";
/// Port the sessiond listens on inside the container (`EXPOSE`d).
pub const SESSIOND_PORT: u16 = 7700;

/// Debian release of the base image.
pub const DEBIAN_SUITE: &str = "bookworm";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const DEBOOTSTRAP_VARIANT: &str = "minbase";
const DEBOOTSTRAP_INCLUDE: &str = "git,ca-certificates";
/// Metadata given to `docker import`, which otherwise leaves it empty.
const IMPORT_CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "CMD [\"bash\"]",
    "LABEL io.claudecluster.component=base",
];

/// Path of the Claude Code binary inside the wheel.
const WHEEL_MEMBER: &str = "claude_agent_sdk/_bundled/claude";
/// How many lines of a failing command's output an error shows.
const TAIL_LINES: usize = 20;

/// Step names carried by [`Progress`].
pub mod step {
    /// Tools present, Docker reachable, sessiond binary hashed.
    pub const PREREQUISITES: &str = "prerequisites";
    /// Base image found, pulled or built with debootstrap.
    pub const BASE_IMAGE: &str = "base image";
    /// Content hash computed; existing image looked up.
    pub const CONTENT_HASH: &str = "content hash";
    /// Claude Code wheel downloaded and binary unpacked.
    pub const CLAUDE_CODE: &str = "claude code";
    /// `docker build` of the worker image.
    pub const WORKER_IMAGE: &str = "worker image";
}

/// What to build and where to keep the downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuildOptions {
    /// Repository part of the tag; normally [`WORKER_IMAGE_REPO`].
    pub tag_repo: String,
    /// Base image reference (e.g. `debian:bookworm-slim`, pulled if absent);
    /// `None` builds or reuses the local debootstrap base.
    pub base_image: Option<String>,
    /// The compiled `claudecluster-sessiond` (a Linux glibc binary).
    pub sessiond_binary: PathBuf,
    /// Wheels, the unpacked Claude Code binary and the temporary rootfs.
    pub cache_dir: PathBuf,
    /// The `claude-agent-sdk` version, normally [`CLAUDE_AGENT_SDK_VERSION`].
    pub claude_sdk_version: String,
    /// Build even if the content tag exists, without Docker's layer cache.
    /// The base image and the cached Claude Code binary are still reused.
    pub force: bool,
}

impl ImageBuildOptions {
    /// Defaults for everything but the sessiond binary: the
    /// [`WORKER_IMAGE_REPO`], the local debootstrap base, the
    /// [`default_cache_dir`], the pinned SDK version, no force.
    pub fn new(sessiond_binary: impl Into<PathBuf>) -> Self {
        Self {
            tag_repo: WORKER_IMAGE_REPO.to_owned(),
            base_image: None,
            sessiond_binary: sessiond_binary.into(),
            cache_dir: default_cache_dir(),
            claude_sdk_version: CLAUDE_AGENT_SDK_VERSION.to_owned(),
            force: false,
        }
    }
}

/// The worker image that is now present locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// `<tag_repo>:<12 hex content hash>`; `<tag_repo>:latest` points at it too.
    pub tag: String,
    /// Docker image ID (`sha256:…`).
    pub id: String,
    /// True when the tag already existed and nothing was built.
    pub skipped: bool,
    /// Image size as reported by `docker image inspect`.
    pub size_bytes: u64,
}

/// Progress of [`build_worker_image`], for a CLI display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A step (one of the [`step`] names) starts or changes what it is doing.
    Step { name: &'static str, detail: String },
    /// One line of a long-running child command's output within a step.
    Output { name: &'static str, line: String },
    /// A step finished.
    Done {
        name: &'static str,
        elapsed: Duration,
    },
}

/// Why the worker image could not be built; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "sessiond binary not found at {} — run `cargo build -p claudecluster-sessiond`",
        .0.display()
    )]
    SessiondMissing(PathBuf),
    #[error("{tool} is not installed: {hint}")]
    ToolMissing {
        tool: &'static str,
        hint: &'static str,
    },
    #[error(
        "docker is not reachable: is the Docker daemon running, and may this user use \
         its socket (root, or the `docker` group)?\n{stderr_tail}"
    )]
    DockerUnreachable { stderr_tail: String },
    #[error(
        "building the base image with debootstrap needs root, but this runs as uid {uid}: \
         run it as root (or pass --base-image debian:bookworm-slim where a registry is reachable)"
    )]
    NotRoot { uid: u32 },
    #[error(
        "another image build (pid {pid}) is using {}; wait for it to finish",
        path.display()
    )]
    BuildInProgress { pid: u32, path: PathBuf },
    #[error(
        "{} still has filesystems mounted under it ({}); unmount them, then delete it",
        path.display(),
        mounts.join(", ")
    )]
    RootfsMounted { path: PathBuf, mounts: Vec<String> },
    #[error(
        "cannot pull the base image {image}; where no registry is reachable, leave \
         --base-image unset to build the local debootstrap base instead:\n{tail}"
    )]
    PullFailed { image: String, tail: String },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); its last output:\n{tail}")]
    CommandFailed {
        command: String,
        status: String,
        tail: String,
    },
    #[error("`{command}` printed something unexpected: {output:?}")]
    UnexpectedOutput { command: String, output: String },
    #[error(
        "no claude-agent-sdk {version} wheel for {arch} in {} after `pip download`",
        dir.display()
    )]
    WheelMissing {
        version: String,
        arch: &'static str,
        dir: PathBuf,
    },
    #[error(
        "{} is not a working Claude Code binary (`--version` printed {output:?}); \
         delete it and run the build again",
        path.display()
    )]
    BadClaudeBinary { path: PathBuf, output: String },
    #[error("the claude-agent-sdk wheel has no build for the {0} CPU architecture")]
    UnsupportedArch(&'static str),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// A command-line tool the build shells out to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Docker,
    Debootstrap,
    Tar,
    Pip,
    Python3,
    Unzip,
}

impl Tool {
    /// Executable names tried in order.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Tool::Docker => &["docker"],
            Tool::Debootstrap => &["debootstrap"],
            Tool::Tar => &["tar"],
            Tool::Pip => &["pip3", "pip"],
            Tool::Python3 => &["python3"],
            Tool::Unzip => &["unzip"],
        }
    }

    /// What to do when the tool is missing.
    pub fn install_hint(self) -> &'static str {
        match self {
            Tool::Docker => "run `apt-get install docker.io` and start the Docker daemon",
            Tool::Debootstrap => {
                "run `apt-get install debootstrap` (or pass --base-image \
                 debian:bookworm-slim where a registry is reachable)"
            }
            Tool::Tar => "run `apt-get install tar`",
            Tool::Pip => {
                "run `apt-get install python3-pip` (it downloads the claude-agent-sdk \
                 wheel that carries Claude Code)"
            }
            Tool::Python3 => {
                "run `apt-get install python3` (or `apt-get install unzip`); it unpacks \
                 Claude Code from the claude-agent-sdk wheel"
            }
            Tool::Unzip => "run `apt-get install unzip`",
        }
    }

    fn display_name(self) -> &'static str {
        match self {
            Tool::Pip => "pip",
            other => other.names()[0],
        }
    }
}

/// Finds `tool` in `search_path` (a `PATH`-style list; `None` means the
/// process's `PATH`).
pub fn locate_tool(tool: Tool, search_path: Option<&OsStr>) -> Result<PathBuf, ImageError> {
    let env_path;
    let search_path = match search_path {
        Some(p) => p,
        None => {
            env_path = std::env::var_os("PATH").unwrap_or_default();
            &env_path
        }
    };
    for name in tool.names() {
        for dir in std::env::split_paths(search_path) {
            let candidate = dir.join(name);
            let executable = std::fs::metadata(&candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if executable {
                return Ok(candidate);
            }
        }
    }
    Err(ImageError::ToolMissing {
        tool: tool.display_name(),
        hint: tool.install_hint(),
    })
}

/// `$CLAUDECLUSTER_CACHE_DIR`, else `$XDG_CACHE_HOME/claudecluster`, else
/// `$HOME/.cache/claudecluster` (else a folder under the temp dir).
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`default_cache_dir`] with the environment given as a lookup function.
pub fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("CLAUDECLUSTER_CACHE_DIR") {
        return dir;
    }
    if let Some(dir) = set("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return dir.join("claudecluster");
    }
    if let Some(home) = set("HOME") {
        return home.join(".cache").join("claudecluster");
    }
    std::env::temp_dir().join("claudecluster-cache")
}

/// The content hash: sha256 over the Dockerfile text, the base image ID, the
/// SDK version and the sessiond binary's sha256 (hex), first 12 hex digits.
pub fn content_hash(
    dockerfile: &str,
    base_image_id: &str,
    sdk_version: &str,
    sessiond_sha256: &str,
) -> String {
    let mut h = Sha256::new();
    for (field, value) in [
        ("dockerfile", dockerfile),
        ("base-image-id", base_image_id),
        ("claude-agent-sdk", sdk_version),
        ("sessiond-sha256", sessiond_sha256),
    ] {
        // Length-prefixed so that no two different inputs hash alike.
        h.update(format!("{field}:{}\n", value.len()).as_bytes());
        h.update(value.as_bytes());
        h.update(b"\n");
    }
    short_hex(&h.finalize())
}

/// Hex sha256 of a file's contents.
pub async fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let owned = path.to_owned();
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut file = std::fs::File::open(&owned)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex(&h.finalize()))
    })
    .await;
    match hashed {
        Ok(result) => result.map_err(ImageError::io("read", path)),
        Err(join) => Err(ImageError::Io {
            action: "hash",
            path: path.to_owned(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// Name of the local debootstrap base image:
/// `claudecluster-base:bookworm-<hash of the recipe>`.
pub fn local_base_image_name() -> String {
    let recipe = format!(
        "debootstrap {:?}\ntrim {TRIM:?}\nimport {IMPORT_CHANGES:?}\n",
        debootstrap_args(Path::new("ROOTFS"))
    );
    let digest = Sha256::digest(recipe.as_bytes());
    format!("{BASE_IMAGE_REPO}:{DEBIAN_SUITE}-{}", short_hex(&digest))
}

/// Builds `<tag_repo>:<content hash>` unless it exists (and `!force`), and
/// points `<tag_repo>:latest` at it.
pub async fn build_worker_image(
    opts: &ImageBuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuiltImage, ImageError> {
    // 1. Prerequisites, cheapest first.
    let started = Instant::now();
    progress(Progress::Step {
        name: step::PREREQUISITES,
        detail: format!("hashing {}", opts.sessiond_binary.display()),
    });
    let sessiond_is_file = tokio::fs::metadata(&opts.sessiond_binary)
        .await
        .map(|m| m.is_file())
        .unwrap_or(false);
    if !sessiond_is_file {
        return Err(ImageError::SessiondMissing(opts.sessiond_binary.clone()));
    }
    let sessiond_sha256 = sha256_file(&opts.sessiond_binary).await?;
    let docker = Docker::connect().await?;
    tokio::fs::create_dir_all(&opts.cache_dir)
        .await
        .map_err(ImageError::io("create", &opts.cache_dir))?;
    let cache_dir = tokio::fs::canonicalize(&opts.cache_dir)
        .await
        .map_err(ImageError::io("resolve", &opts.cache_dir))?;
    progress(Progress::Done {
        name: step::PREREQUISITES,
        elapsed: started.elapsed(),
    });

    // 2. Base image.
    let started = Instant::now();
    let (base_ref, base_id) = match &opts.base_image {
        Some(base) => (base.clone(), docker.ensure_pulled(base, progress).await?),
        None => {
            let name = local_base_image_name();
            let id = match docker.inspect(&name).await? {
                Some(found) => {
                    progress(Progress::Step {
                        name: step::BASE_IMAGE,
                        detail: format!("reusing {name}"),
                    });
                    found.id
                }
                None => build_local_base(&docker, &name, &cache_dir, progress).await?,
            };
            (name, id)
        }
    };
    progress(Progress::Done {
        name: step::BASE_IMAGE,
        elapsed: started.elapsed(),
    });

    // 3. Content tag; an existing image makes this a no-op.
    let started = Instant::now();
    let hash = content_hash(
        DOCKERFILE,
        &base_id,
        &opts.claude_sdk_version,
        &sessiond_sha256,
    );
    let tag = format!("{}:{hash}", opts.tag_repo);
    let latest = format!("{}:latest", opts.tag_repo);
    progress(Progress::Step {
        name: step::CONTENT_HASH,
        detail: tag.clone(),
    });
    let existing = docker.inspect(&tag).await?;
    progress(Progress::Done {
        name: step::CONTENT_HASH,
        elapsed: started.elapsed(),
    });
    if let (Some(found), false) = (&existing, opts.force) {
        docker.tag(&tag, &latest).await?;
        return Ok(BuiltImage {
            tag,
            id: found.id.clone(),
            skipped: true,
            size_bytes: found.size,
        });
    }

    // 4. Claude Code binary.
    let started = Instant::now();
    let (claude, claude_version) =
        ensure_claude_binary(&cache_dir, &opts.claude_sdk_version, progress).await?;
    progress(Progress::Done {
        name: step::CLAUDE_CODE,
        elapsed: started.elapsed(),
    });

    // 5. Build context and docker build.
    let started = Instant::now();
    progress(Progress::Step {
        name: step::WORKER_IMAGE,
        detail: format!("preparing the build context for {tag}"),
    });
    let context = tempfile::Builder::new()
        .prefix("build-context-")
        .tempdir_in(&cache_dir)
        .map_err(ImageError::io("create a build context in", &cache_dir))?;
    prepare_context(context.path(), &claude, &opts.sessiond_binary).await?;
    progress(Progress::Step {
        name: step::WORKER_IMAGE,
        detail: format!("docker build {tag} (FROM {base_ref})"),
    });
    let mut args: Vec<OsString> = vec!["build".into()];
    for (name, value) in [
        ("BASE", base_ref.as_str()),
        ("CLAUDE_CODE_VERSION", claude_version.as_str()),
        ("CLAUDE_AGENT_SDK_VERSION", opts.claude_sdk_version.as_str()),
    ] {
        args.push("--build-arg".into());
        args.push(format!("{name}={value}").into());
    }
    args.push("--label".into());
    args.push(format!("{LABEL_CONTENT_HASH}={hash}").into());
    if opts.force {
        args.push("--no-cache".into());
    }
    args.extend(["--force-rm".into(), "-t".into(), tag.clone().into()]);
    args.extend(["-t".into(), latest.into()]);
    args.push(context.path().as_os_str().to_owned());
    let mut cmd = new_command(&docker.path);
    cmd.args(&args).env("DOCKER_BUILDKIT", "0");
    run_streamed(cmd, &docker.path, &args, step::WORKER_IMAGE, progress).await?;
    let _ = context.close();
    let built = docker
        .inspect(&tag)
        .await?
        .ok_or_else(|| ImageError::UnexpectedOutput {
            command: format!("docker image inspect {tag}"),
            output: "no such image right after `docker build` tagged it".into(),
        })?;
    if let Some(replaced) = existing.filter(|old| old.id != built.id) {
        // A forced rebuild untags the previous image; drop it unless it is
        // still tagged elsewhere or used by a container (then this fails).
        docker.remove_quietly(&replaced.id).await;
    }
    progress(Progress::Done {
        name: step::WORKER_IMAGE,
        elapsed: started.elapsed(),
    });
    Ok(BuiltImage {
        tag,
        id: built.id,
        skipped: false,
        size_bytes: built.size,
    })
}

// ---------------------------------------------------------------------------
// Docker

struct Docker {
    path: PathBuf,
}

struct ImageInfo {
    id: String,
    size: u64,
}

impl Docker {
    async fn connect() -> Result<Self, ImageError> {
        let path = locate_tool(Tool::Docker, None)?;
        let args = ["version", "--format", "{{.Server.Version}}"];
        let out = run_captured(&path, &args).await?;
        if !out.status.success() {
            return Err(ImageError::DockerUnreachable {
                stderr_tail: tail_of(&out.stderr),
            });
        }
        Ok(Self { path })
    }

    /// `None` when there is no such image locally.
    async fn inspect(&self, image: &str) -> Result<Option<ImageInfo>, ImageError> {
        let args = ["image", "inspect", "--format", "{{.Id}} {{.Size}}", image];
        let out = run_captured(&self.path, &args).await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No such image") || stderr.contains("no such image") {
                return Ok(None);
            }
            return Err(failed(&self.path, &args, &out));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut fields = stdout.split_whitespace();
        match (fields.next(), fields.next().map(str::parse::<u64>)) {
            (Some(id), Some(Ok(size))) if id.starts_with("sha256:") => Ok(Some(ImageInfo {
                id: id.to_owned(),
                size,
            })),
            _ => Err(ImageError::UnexpectedOutput {
                command: display_command(&self.path, &args),
                output: stdout.trim().to_owned(),
            }),
        }
    }

    async fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let args = ["tag", source, target];
        let out = run_captured(&self.path, &args).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed(&self.path, &args, &out))
        }
    }

    /// `docker image rm` without force; failures are ignored.
    async fn remove_quietly(&self, image: &str) {
        let _ = run_captured(&self.path, &["image", "rm", image]).await;
    }

    /// The ID of `image`, pulling it first if it is not present.
    async fn ensure_pulled(
        &self,
        image: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<String, ImageError> {
        if let Some(found) = self.inspect(image).await? {
            progress(Progress::Step {
                name: step::BASE_IMAGE,
                detail: format!("using {image}"),
            });
            return Ok(found.id);
        }
        progress(Progress::Step {
            name: step::BASE_IMAGE,
            detail: format!("docker pull {image}"),
        });
        let args = ["pull", image];
        let mut cmd = new_command(&self.path);
        cmd.args(args);
        match run_streamed(cmd, &self.path, &args, step::BASE_IMAGE, progress).await {
            Err(ImageError::CommandFailed { tail, .. }) => {
                return Err(ImageError::PullFailed {
                    image: image.to_owned(),
                    tail,
                })
            }
            other => other?,
        }
        match self.inspect(image).await? {
            Some(found) => Ok(found.id),
            None => Err(ImageError::UnexpectedOutput {
                command: format!("docker image inspect {image}"),
                output: "no such image right after `docker pull`".into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Base image: debootstrap, trim, import

fn debootstrap_args(rootfs: &Path) -> Vec<OsString> {
    vec![
        format!("--variant={DEBOOTSTRAP_VARIANT}").into(),
        format!("--include={DEBOOTSTRAP_INCLUDE}").into(),
        DEBIAN_SUITE.into(),
        rootfs.as_os_str().to_owned(),
        DEBIAN_MIRROR.into(),
    ]
}

/// What is removed from the debootstrapped tree before import (paths are
/// relative to the rootfs). Part of the base image's recipe hash.
#[derive(Debug)]
enum Trim {
    /// Remove every entry of `dir` except those named in `keep`.
    Empty {
        dir: &'static str,
        keep: &'static [&'static str],
    },
    /// In each real subdirectory of `dir`, remove every entry except `keep`.
    EmptySubdirs {
        dir: &'static str,
        keep: &'static [&'static str],
    },
    /// Remove the files in `dir` whose names end with `suffix`.
    Suffix {
        dir: &'static str,
        suffix: &'static str,
    },
    /// Replace the file (never following a symlink) with `contents`.
    Replace {
        path: &'static str,
        contents: &'static str,
    },
    /// Remove the file if present.
    Remove { path: &'static str },
}

const TRIM: &[Trim] = &[
    Trim::Empty {
        dir: "var/lib/apt/lists",
        keep: &["partial"],
    },
    Trim::Suffix {
        dir: "var/cache/apt",
        suffix: ".bin",
    },
    Trim::Suffix {
        dir: "var/cache/apt/archives",
        suffix: ".deb",
    },
    Trim::EmptySubdirs {
        dir: "usr/share/doc",
        keep: &["copyright"],
    },
    Trim::Empty {
        dir: "usr/share/man",
        keep: &[],
    },
    Trim::Empty {
        dir: "usr/share/info",
        keep: &[],
    },
    Trim::Empty {
        dir: "usr/share/locale",
        keep: &["locale.alias"],
    },
    Trim::Remove {
        path: "var/log/bootstrap.log",
    },
    // debootstrap copies these from the host; Docker provides its own.
    Trim::Replace {
        path: "etc/resolv.conf",
        contents: "",
    },
    Trim::Replace {
        path: "etc/hostname",
        contents: "localhost\n",
    },
];

async fn build_local_base(
    docker: &Docker,
    name: &str,
    cache_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, ImageError> {
    let debootstrap = locate_tool(Tool::Debootstrap, None)?;
    let tar = locate_tool(Tool::Tar, None)?;
    if let Some(uid) = current_uid() {
        if uid != 0 {
            return Err(ImageError::NotRoot { uid });
        }
    }
    let rootfs = cache_dir.join("rootfs-tmp");
    let pidfile = cache_dir.join("rootfs-tmp.pid");
    if let Some(pid) = live_owner(&pidfile).await {
        return Err(ImageError::BuildInProgress { pid, path: rootfs });
    }
    remove_rootfs(&rootfs).await?;
    tokio::fs::write(&pidfile, std::process::id().to_string())
        .await
        .map_err(ImageError::io("write", &pidfile))?;
    let result = debootstrap_and_import(docker, &debootstrap, &tar, name, &rootfs, progress).await;
    let cleanup = remove_rootfs(&rootfs).await;
    let _ = tokio::fs::remove_file(&pidfile).await;
    let id = result?;
    cleanup?;
    Ok(id)
}

async fn debootstrap_and_import(
    docker: &Docker,
    debootstrap: &Path,
    tar: &Path,
    name: &str,
    rootfs: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, ImageError> {
    let started = Instant::now();
    progress(Progress::Step {
        name: step::BASE_IMAGE,
        detail: format!(
            "debootstrap {DEBIAN_SUITE} ({DEBOOTSTRAP_VARIANT} + {DEBOOTSTRAP_INCLUDE}) \
             into {} (about a minute)",
            rootfs.display()
        ),
    });
    let args = debootstrap_args(rootfs);
    let mut cmd = new_command(debootstrap);
    cmd.args(&args);
    match run_streamed(cmd, debootstrap, &args, step::BASE_IMAGE, progress).await {
        // Its own log explains more, and goes away with the rootfs.
        Err(ImageError::CommandFailed {
            command,
            status,
            mut tail,
        }) => {
            let log = rootfs.join("debootstrap/debootstrap.log");
            if let Ok(text) = tokio::fs::read(&log).await {
                tail.push_str("\n--- end of debootstrap.log ---\n");
                tail.push_str(&tail_of(&text));
            }
            return Err(ImageError::CommandFailed {
                command,
                status,
                tail,
            });
        }
        other => other?,
    }
    tracing::info!(elapsed = ?started.elapsed(), "debootstrap finished");

    progress(Progress::Step {
        name: step::BASE_IMAGE,
        detail: "trimming docs, man pages, locales and apt caches".into(),
    });
    let root = rootfs.to_owned();
    match tokio::task::spawn_blocking(move || trim_rootfs(&root)).await {
        Ok(result) => result?,
        Err(join) => {
            return Err(ImageError::Io {
                action: "trim",
                path: rootfs.to_owned(),
                source: std::io::Error::other(join.to_string()),
            })
        }
    }

    let started = Instant::now();
    progress(Progress::Step {
        name: step::BASE_IMAGE,
        detail: format!("docker import {name}"),
    });
    import_rootfs(docker, tar, rootfs, name, progress).await?;
    tracing::info!(elapsed = ?started.elapsed(), "docker import finished");
    match docker.inspect(name).await? {
        Some(found) => Ok(found.id),
        None => Err(ImageError::UnexpectedOutput {
            command: format!("docker image inspect {name}"),
            output: "no such image right after `docker import`".into(),
        }),
    }
}

/// `tar -C rootfs -c . | docker import - name`.
async fn import_rootfs(
    docker: &Docker,
    tar: &Path,
    rootfs: &Path,
    name: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    let tar_args: Vec<OsString> = vec![
        "--numeric-owner".into(),
        "--xattrs".into(),
        "--exclude=./dev/*".into(),
        "--exclude=./proc/*".into(),
        "--exclude=./sys/*".into(),
        "-C".into(),
        rootfs.as_os_str().to_owned(),
        "-c".into(),
        ".".into(),
    ];
    let mut tar_child = Command::new(tar)
        .args(&tar_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ImageError::Spawn {
            command: display_command(tar, &tar_args),
            source,
        })?;
    let (Some(tar_stdout), Some(tar_stderr)) = (tar_child.stdout.take(), tar_child.stderr.take())
    else {
        return Err(ImageError::UnexpectedOutput {
            command: display_command(tar, &tar_args),
            output: "no pipes to the child".into(),
        });
    };
    let tar_stdout: Stdio = tar_stdout.try_into().map_err(|source| ImageError::Spawn {
        command: display_command(tar, &tar_args),
        source,
    })?;
    let tar_errors = tokio::spawn(read_all(tar_stderr));

    let mut import_args: Vec<OsString> = vec!["import".into()];
    for change in IMPORT_CHANGES {
        import_args.push("--change".into());
        import_args.push((*change).into());
    }
    import_args.extend([
        "--message".into(),
        format!("debootstrap {DEBIAN_SUITE} by claudecluster").into(),
        "-".into(),
        name.into(),
    ]);
    let mut import = new_command(&docker.path);
    import.args(&import_args).stdin(tar_stdout);
    let imported = run_streamed(
        import,
        &docker.path,
        &import_args,
        step::BASE_IMAGE,
        progress,
    )
    .await;

    let tar_status = tar_child.wait().await.map_err(|source| ImageError::Spawn {
        command: display_command(tar, &tar_args),
        source,
    })?;
    let tar_stderr = tar_errors.await.unwrap_or_default();
    // When the import fails first, tar only reports the broken pipe.
    imported?;
    if !tar_status.success() {
        return Err(ImageError::CommandFailed {
            command: display_command(tar, &tar_args),
            status: tar_status.to_string(),
            tail: tail_of(&tar_stderr),
        });
    }
    Ok(())
}

fn trim_rootfs(rootfs: &Path) -> Result<(), ImageError> {
    for rule in TRIM {
        match rule {
            Trim::Empty { dir, keep } => empty_dir(&rootfs.join(dir), keep)?,
            Trim::EmptySubdirs { dir, keep } => {
                for sub in list_dir(&rootfs.join(dir))? {
                    let is_real_dir = std::fs::symlink_metadata(&sub)
                        .map(|m| m.is_dir())
                        .unwrap_or(false);
                    if is_real_dir {
                        empty_dir(&sub, keep)?;
                    }
                }
            }
            Trim::Suffix { dir, suffix } => {
                for entry in list_dir(&rootfs.join(dir))? {
                    let matches = entry
                        .file_name()
                        .and_then(OsStr::to_str)
                        .is_some_and(|n| n.ends_with(suffix));
                    if matches {
                        remove_entry(&entry)?;
                    }
                }
            }
            Trim::Replace { path, contents } => {
                let path = rootfs.join(path);
                if std::fs::symlink_metadata(&path).is_ok() {
                    remove_entry(&path)?;
                }
                std::fs::write(&path, contents).map_err(ImageError::io("write", &path))?;
            }
            Trim::Remove { path } => {
                let path = rootfs.join(path);
                if std::fs::symlink_metadata(&path).is_ok() {
                    remove_entry(&path)?;
                }
            }
        }
    }
    Ok(())
}

/// Entries of `dir`; none if it does not exist.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io("list", dir)(e)),
    };
    entries
        .map(|e| e.map(|e| e.path()).map_err(ImageError::io("list", dir)))
        .collect()
}

fn empty_dir(dir: &Path, keep: &[&str]) -> Result<(), ImageError> {
    for entry in list_dir(dir)? {
        let kept = entry
            .file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| keep.contains(&n));
        if !kept {
            remove_entry(&entry)?;
        }
    }
    Ok(())
}

/// Removes a file, symlink or directory tree without following symlinks.
fn remove_entry(path: &Path) -> Result<(), ImageError> {
    let meta = std::fs::symlink_metadata(path).map_err(ImageError::io("inspect", path))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(ImageError::io("remove", path))
    } else {
        std::fs::remove_file(path).map_err(ImageError::io("remove", path))
    }
}

/// Deletes a leftover rootfs, first making sure nothing (such as the `/proc`
/// debootstrap mounts) is still mounted inside it.
async fn remove_rootfs(rootfs: &Path) -> Result<(), ImageError> {
    if tokio::fs::symlink_metadata(rootfs).await.is_err() {
        return Ok(());
    }
    let mut mounts = mounts_under(rootfs).await;
    if !mounts.is_empty() {
        // Deepest first.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in &mounts {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(mount)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        let left = mounts_under(rootfs).await;
        if !left.is_empty() {
            return Err(ImageError::RootfsMounted {
                path: rootfs.to_owned(),
                mounts: left,
            });
        }
    }
    tokio::fs::remove_dir_all(rootfs)
        .await
        .map_err(ImageError::io("remove", rootfs))
}

/// Mount points at or below `dir`, from `/proc/self/mounts`.
async fn mounts_under(dir: &Path) -> Vec<String> {
    let Ok(table) = tokio::fs::read_to_string("/proc/self/mounts").await else {
        return Vec::new();
    };
    let dir = dir.to_string_lossy();
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(unescape_mount_path)
        .filter(|m| *m == dir || m.starts_with(&prefix))
        .collect()
}

/// `/proc/self/mounts` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                u8::try_from(value).ok()
            });
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pid in `pidfile` if that process is alive and not this one.
async fn live_owner(pidfile: &Path) -> Option<u32> {
    let text = tokio::fs::read_to_string(pidfile).await.ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let alive =
        pid != std::process::id() && tokio::fs::metadata(format!("/proc/{pid}")).await.is_ok();
    alive.then_some(pid)
}

/// The effective uid, from `/proc/self/status` (`None` if unreadable).
fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

// ---------------------------------------------------------------------------
// Claude Code binary

fn wheel_arch() -> Result<&'static str, ImageError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("x86_64"),
        "aarch64" => Ok("aarch64"),
        other => Err(ImageError::UnsupportedArch(other)),
    }
}

/// `<cache>/claude-<version>/claude`, downloading and unpacking the wheel if
/// needed; returns it with the Claude Code version it reports.
async fn ensure_claude_binary(
    cache_dir: &Path,
    sdk_version: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(PathBuf, String), ImageError> {
    let dir = cache_dir.join(format!("claude-{sdk_version}"));
    let binary = dir.join("claude");
    if tokio::fs::metadata(&binary).await.is_ok() {
        if let Ok(version) = claude_version(&binary).await {
            progress(Progress::Step {
                name: step::CLAUDE_CODE,
                detail: format!("using cached Claude Code {version}"),
            });
            return Ok((binary, version));
        }
    }

    let arch = wheel_arch()?;
    let wheels = cache_dir.join("wheels");
    let wheel = match find_wheel(&wheels, sdk_version, arch).await? {
        Some(wheel) => wheel,
        None => {
            let pip = locate_tool(Tool::Pip, None)?;
            tokio::fs::create_dir_all(&wheels)
                .await
                .map_err(ImageError::io("create", &wheels))?;
            progress(Progress::Step {
                name: step::CLAUDE_CODE,
                detail: format!("pip download claude-agent-sdk=={sdk_version} (~180 MB)"),
            });
            let args: Vec<OsString> = vec![
                "download".into(),
                "--no-deps".into(),
                "--only-binary=:all:".into(),
                "--platform".into(),
                format!("manylinux_2_17_{arch}").into(),
                "--disable-pip-version-check".into(),
                "--no-input".into(),
                "--progress-bar".into(),
                "off".into(),
                "-d".into(),
                wheels.as_os_str().to_owned(),
                format!("claude-agent-sdk=={sdk_version}").into(),
            ];
            let mut cmd = new_command(&pip);
            cmd.args(&args);
            run_streamed(cmd, &pip, &args, step::CLAUDE_CODE, progress).await?;
            find_wheel(&wheels, sdk_version, arch)
                .await?
                .ok_or_else(|| ImageError::WheelMissing {
                    version: sdk_version.to_owned(),
                    arch,
                    dir: wheels.clone(),
                })?
        }
    };

    progress(Progress::Step {
        name: step::CLAUDE_CODE,
        detail: format!("unpacking Claude Code from {}", wheel.display()),
    });
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ImageError::io("create", &dir))?;
    let partial = dir.join(format!(".claude.partial-{}", std::process::id()));
    let unpacked = unpack_claude(&wheel, &partial, progress).await;
    let checked = match unpacked {
        Ok(()) => claude_version(&partial).await,
        Err(e) => Err(e),
    };
    let version = match checked {
        Ok(version) => version,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            // A damaged wheel would fail the same way forever: download anew.
            let _ = tokio::fs::remove_file(&wheel).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&partial, &binary)
        .await
        .map_err(ImageError::io("move into place", &binary))?;
    Ok((binary, version))
}

async fn find_wheel(
    dir: &Path,
    sdk_version: &str,
    arch: &str,
) -> Result<Option<PathBuf>, ImageError> {
    let prefix = format!("claude_agent_sdk-{sdk_version}-");
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("list", dir)(e)),
    };
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(ImageError::io("list", dir))?
    {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.ends_with(".whl") && name.contains(arch) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

const PY_UNPACK: &str = "import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)";

/// Writes the wheel's bundled `claude` to `dest` (mode 0755), with python3's
/// zipfile, or `unzip -p` where there is no python3.
async fn unpack_claude(
    wheel: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    match locate_tool(Tool::Python3, None) {
        Ok(python) => {
            let args: Vec<OsString> = vec![
                "-c".into(),
                PY_UNPACK.into(),
                wheel.as_os_str().to_owned(),
                WHEEL_MEMBER.into(),
                dest.as_os_str().to_owned(),
            ];
            let mut cmd = new_command(&python);
            cmd.args(&args);
            run_streamed(cmd, &python, &args, step::CLAUDE_CODE, progress).await?;
        }
        Err(no_python) => {
            let Ok(unzip) = locate_tool(Tool::Unzip, None) else {
                return Err(no_python);
            };
            let file = std::fs::File::create(dest).map_err(ImageError::io("create", dest))?;
            let args: Vec<OsString> = vec![
                "-p".into(),
                wheel.as_os_str().to_owned(),
                WHEEL_MEMBER.into(),
            ];
            let mut cmd = new_command(&unzip);
            cmd.args(&args);
            run_with_stdout(
                cmd,
                Stdio::from(file),
                &unzip,
                &args,
                step::CLAUDE_CODE,
                progress,
            )
            .await?;
        }
    }
    tokio::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
        .await
        .map_err(ImageError::io("chmod", dest))
}

/// Runs `claude --version`; Ok with the version (e.g. `2.1.332`) if it
/// answers like Claude Code.
async fn claude_version(binary: &Path) -> Result<String, ImageError> {
    let bad = |output: String| ImageError::BadClaudeBinary {
        path: binary.to_owned(),
        output,
    };
    let run = run_captured(binary, &["--version"]);
    let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(out) => out?,
        Err(_) => return Err(bad("nothing within 60 s".into())),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !stdout.contains("Claude Code") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(bad(format!("{stdout}{stderr}").trim().to_owned()));
    }
    match stdout.split_whitespace().next() {
        Some(version) => Ok(version.to_owned()),
        None => Err(bad(stdout)),
    }
}

// ---------------------------------------------------------------------------
// Build context

/// Lays out `Dockerfile`, `claude` (hard-linked if possible) and
/// `claudecluster-sessiond` (copied, 0755) in `dir`.
async fn prepare_context(dir: &Path, claude: &Path, sessiond: &Path) -> Result<(), ImageError> {
    let dockerfile = dir.join("Dockerfile");
    tokio::fs::write(&dockerfile, DOCKERFILE)
        .await
        .map_err(ImageError::io("write", &dockerfile))?;
    let claude_dest = dir.join("claude");
    if tokio::fs::hard_link(claude, &claude_dest).await.is_err() {
        tokio::fs::copy(claude, &claude_dest)
            .await
            .map_err(ImageError::io("copy", claude))?;
        tokio::fs::set_permissions(&claude_dest, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(ImageError::io("chmod", &claude_dest))?;
    }
    let sessiond_dest = dir.join("claudecluster-sessiond");
    tokio::fs::copy(sessiond, &sessiond_dest)
        .await
        .map_err(ImageError::io("copy", sessiond))?;
    tokio::fs::set_permissions(&sessiond_dest, std::fs::Permissions::from_mode(0o755))
        .await
        .map_err(ImageError::io("chmod", &sessiond_dest))
}

// ---------------------------------------------------------------------------
// Child processes

fn display_command<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> String {
    let mut text = program.to_string_lossy().into_owned();
    for arg in args {
        let arg = arg.as_ref().to_string_lossy();
        text.push(' ');
        if arg.contains(char::is_whitespace) || arg.is_empty() {
            text.push_str(&format!("{arg:?}"));
        } else {
            text.push_str(&arg);
        }
    }
    text
}

fn failed<S: AsRef<OsStr>>(program: &Path, args: &[S], out: &std::process::Output) -> ImageError {
    let mut text = out.stderr.clone();
    if text.iter().all(u8::is_ascii_whitespace) {
        text = out.stdout.clone();
    }
    ImageError::CommandFailed {
        command: display_command(program, args),
        status: out.status.to_string(),
        tail: tail_of(&text),
    }
}

/// The last [`TAIL_LINES`] non-empty lines of some output.
fn tail_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// A command with no standard input (so nothing waits on a terminal).
fn new_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs a short command to completion, capturing its output.
async fn run_captured<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
) -> Result<std::process::Output, ImageError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ImageError::Spawn {
            command: display_command(program, args),
            source,
        })
}

/// Runs a long command, passing each output line on as [`Progress::Output`];
/// on failure the error carries the last lines.
async fn run_streamed<S: AsRef<OsStr>>(
    cmd: Command,
    program: &Path,
    args: &[S],
    name: &'static str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    run_with_stdout(cmd, Stdio::piped(), program, args, name, progress).await
}

async fn run_with_stdout<S: AsRef<OsStr>>(
    mut cmd: Command,
    stdout: Stdio,
    program: &Path,
    args: &[S],
    name: &'static str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    let command = display_command(program, args);
    tracing::debug!(%command, "running");
    let mut child = cmd
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ImageError::Spawn {
            command: command.clone(),
            source,
        })?;
    let mut tail = Tail::default();
    let mut out = child.stdout.take().map(line_reader);
    let mut err = child.stderr.take().map(line_reader);
    while out.is_some() || err.is_some() {
        let (from_stdout, line) = tokio::select! {
            line = next_line(&mut out), if out.is_some() => (true, line),
            line = next_line(&mut err), if err.is_some() => (false, line),
        };
        match line {
            Some(line) => {
                tail.push(&line);
                progress(Progress::Output { name, line });
            }
            None if from_stdout => out = None,
            None => err = None,
        }
    }
    let status = child.wait().await.map_err(|source| ImageError::Spawn {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::CommandFailed {
            command,
            status: status.to_string(),
            tail: tail.to_string(),
        })
    }
}

type LineReader = tokio::io::Split<BufReader<Box<dyn AsyncRead + Unpin + Send>>>;

fn line_reader(pipe: impl AsyncRead + Unpin + Send + 'static) -> LineReader {
    let boxed: Box<dyn AsyncRead + Unpin + Send> = Box::new(pipe);
    BufReader::new(boxed).split(b'\n')
}

/// The next non-empty line (the part after the last `\r`, for progress bars);
/// `None` at end of output or on a read error.
async fn next_line(reader: &mut Option<LineReader>) -> Option<String> {
    let reader = reader.as_mut()?;
    loop {
        let bytes = reader.next_segment().await.ok()??;
        let text = String::from_utf8_lossy(&bytes);
        let line = text.trim_end().rsplit('\r').next().unwrap_or("").trim_end();
        if !line.is_empty() {
            return Some(line.to_owned());
        }
    }
}

async fn read_all(mut pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut buf).await;
    buf
}

#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line.to_owned());
    }
}

impl fmt::Display for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Hex

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short_hex(bytes: &[u8]) -> String {
    let mut text = hex(bytes);
    text.truncate(12);
    text
}
