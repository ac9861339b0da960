//! Tests of the worker image build: the pure parts always, the real Docker
//! build when asked — `scripts/test.sh` asks, after building the image the
//! suite runs, so the base image and caches are warm (`cargo test -p
//! cc-runtime-docker --test image -- --ignored`; it needs root, Docker,
//! debootstrap and network to Debian and PyPI, and leaves
//! `claudecluster-base:*` and one `claudecluster-worker:*`).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cc_runtime_docker::image::{
    build_worker_image, cache_dir_from, content_hash, local_base_image_name, locate_tool,
    sha256_file, ImageBuildOptions, ImageError, Progress, Tool, CLAUDE_AGENT_SDK_VERSION,
    DOCKERFILE, WORKER_IMAGE_REPO,
};

fn sessiond_hash(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test binary");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(sha256_file(&path)).expect("hash")
}

#[test]
fn content_hash_follows_the_sessiond_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = sessiond_hash(dir.path(), "a", b"sessiond v1");
    let a_again = sessiond_hash(dir.path(), "a2", b"sessiond v1");
    let b = sessiond_hash(dir.path(), "b", b"sessiond v2");
    assert_eq!(a.len(), 64);
    assert_eq!(a, a_again);

    let base = "sha256:0123";
    let h1 = content_hash(DOCKERFILE, base, CLAUDE_AGENT_SDK_VERSION, &a);
    let h1_again = content_hash(DOCKERFILE, base, CLAUDE_AGENT_SDK_VERSION, &a_again);
    let h2 = content_hash(DOCKERFILE, base, CLAUDE_AGENT_SDK_VERSION, &b);
    assert_eq!(h1, h1_again);
    assert_ne!(h1, h2);
    assert_eq!(h1.len(), 12);
    assert!(h1
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

#[test]
fn content_hash_follows_every_other_input() {
    let h = |dockerfile: &str, base: &str, sdk: &str| content_hash(dockerfile, base, sdk, "00");
    let reference = h(DOCKERFILE, "sha256:1", "0.2.189");
    assert_ne!(reference, h("FROM scratch\n", "sha256:1", "0.2.189"));
    assert_ne!(reference, h(DOCKERFILE, "sha256:2", "0.2.189"));
    assert_ne!(reference, h(DOCKERFILE, "sha256:1", "0.2.190"));
    // Field boundaries matter: moving text from one input to the next differs.
    assert_ne!(
        content_hash("ab", "c", "d", "e"),
        content_hash("a", "bc", "d", "e")
    );
}

#[test]
fn missing_sessiond_binary_is_reported_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("target/debug/claudecluster-sessiond");
    let mut opts = ImageBuildOptions::new(&missing);
    opts.cache_dir = dir.path().join("cache");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut events = Vec::new();
    let err = rt
        .block_on(build_worker_image(&opts, &mut |p| events.push(p)))
        .expect_err("must fail");
    assert!(matches!(err, ImageError::SessiondMissing(ref p) if *p == missing));
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(
        text.contains("cargo build -p claudecluster-sessiond"),
        "{text}"
    );
    assert!(!opts.cache_dir.exists(), "nothing may be created");
}

#[test]
fn missing_tools_say_how_to_install_them() {
    let empty = tempfile::tempdir().expect("tempdir");
    let path = OsString::from(empty.path());
    let msg = |tool| {
        locate_tool(tool, Some(&path))
            .expect_err("nothing on this PATH")
            .to_string()
    };
    assert_eq!(
        msg(Tool::Debootstrap),
        "debootstrap is not installed: run `apt-get install debootstrap` (or pass \
         --base-image debian:bookworm-slim where a registry is reachable)"
    );
    assert!(msg(Tool::Pip).starts_with("pip is not installed: run `apt-get install python3-pip`"));
    assert!(msg(Tool::Docker).starts_with("docker is not installed: "));
    assert!(msg(Tool::Python3).contains("apt-get install python3"));
}

#[test]
fn tools_are_found_only_when_executable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = OsString::from(dir.path());
    let tool = dir.path().join("debootstrap");
    std::fs::write(&tool, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(locate_tool(Tool::Debootstrap, Some(&path)).is_err());
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(
        locate_tool(Tool::Debootstrap, Some(&path)).expect("found"),
        tool
    );
    // pip is found under either name.
    let pip3 = dir.path().join("pip3");
    std::fs::write(&pip3, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&pip3, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(locate_tool(Tool::Pip, Some(&path)).expect("found"), pip3);
}

#[test]
fn cache_dir_precedence() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    const ALL: &[(&str, &str)] = &[
        ("CLAUDECLUSTER_CACHE_DIR", "/c"),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/h"),
    ];
    assert_eq!(cache_dir_from(env(ALL)), PathBuf::from("/c"));
    assert_eq!(
        cache_dir_from(env(&[
            ("CLAUDECLUSTER_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h")
        ])),
        PathBuf::from("/x/claudecluster")
    );
    assert_eq!(
        cache_dir_from(env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/h")])),
        PathBuf::from("/h/.cache/claudecluster")
    );
}

#[test]
fn base_image_name_is_stable_and_tagged_by_recipe() {
    let name = local_base_image_name();
    assert_eq!(name, local_base_image_name());
    let tag = name
        .strip_prefix("claudecluster-base:bookworm-")
        .expect("repo and suite");
    assert_eq!(tag.len(), 12);
    assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn dockerfile_has_the_worker_contract() {
    for needle in [
        "ARG BASE=debian:bookworm-slim",
        "FROM ${BASE}",
        "--uid 1000 --gid 1000 --home-dir /home/claude",
        "chown 1000:1000 /workspace",
        "COPY claude /usr/local/bin/claude",
        "COPY claudecluster-sessiond /usr/local/bin/claudecluster-sessiond",
        "ENV HOME=/home/claude",
        "USER 1000:1000",
        "WORKDIR /workspace",
        "EXPOSE 7700",
        "ENTRYPOINT [\"/usr/local/bin/claudecluster-sessiond\"]",
        "io.claudecluster.component=worker",
    ] {
        assert!(DOCKERFILE.contains(needle), "Dockerfile lacks {needle:?}");
    }
    // The big claude layer comes before the often-changing sessiond layer.
    let claude = DOCKERFILE.find("COPY claude ").expect("claude layer");
    let sessiond = DOCKERFILE
        .find("COPY claudecluster-sessiond")
        .expect("sessiond");
    assert!(claude < sessiond);
}

fn docker_output(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The real thing: builds (or reuses) the base and worker images, then
/// checks a second call builds nothing and the image works. Uses
/// `$CLAUDECLUSTER_TEST_CACHE_DIR` (else the default cache dir) and a copy of
/// `/bin/sleep` as the "sessiond".
#[test]
#[ignore = "needs root, Docker, debootstrap and network; slow on first run"]
fn builds_then_skips_a_working_image() {
    let cache = std::env::var_os("CLAUDECLUSTER_TEST_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(cc_runtime_docker::image::default_cache_dir);
    std::fs::create_dir_all(&cache).expect("cache dir");
    let sessiond = cache.join("test-sessiond");
    std::fs::copy("/bin/sleep", &sessiond).expect("copy /bin/sleep");
    let mut opts = ImageBuildOptions::new(&sessiond);
    opts.cache_dir = cache;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let mut show = |p: Progress| match p {
        Progress::Step { name, detail } => {
            eprintln!("[{:>7.1}s] {name}: {detail}", t0.elapsed().as_secs_f64())
        }
        Progress::Done { name, elapsed } => eprintln!(
            "[{:>7.1}s] {name}: done in {:.1}s",
            t0.elapsed().as_secs_f64(),
            elapsed.as_secs_f64()
        ),
        Progress::Output { .. } => {}
    };
    let first = rt
        .block_on(build_worker_image(&opts, &mut show))
        .unwrap_or_else(|e| panic!("build failed: {e}"));
    eprintln!("first call: {first:?} in {:?}", t0.elapsed());
    assert!(first.tag.starts_with(&format!("{WORKER_IMAGE_REPO}:")));
    assert!(first.size_bytes > 300_000_000);

    let t1 = Instant::now();
    let second = rt
        .block_on(build_worker_image(&opts, &mut |_| {}))
        .unwrap_or_else(|e| panic!("second call failed: {e}"));
    eprintln!("second call: {second:?} in {:?}", t1.elapsed());
    // Nothing was built again: the same image, recognised by its content.
    assert!(second.skipped);
    assert_eq!(second.tag, first.tag);
    assert_eq!(second.id, first.id);

    let version = docker_output(&[
        "run",
        "--rm",
        "--user",
        "1000",
        "--entrypoint",
        "/usr/local/bin/claude",
        &first.tag,
        "--version",
    ]);
    assert!(version.contains("Claude Code"), "{version}");
    let git = docker_output(&[
        "run",
        "--rm",
        "--entrypoint",
        "git",
        &first.tag,
        "--version",
    ]);
    assert!(git.starts_with("git version"), "{git}");
    let owner = docker_output(&[
        "run",
        "--rm",
        "--entrypoint",
        "stat",
        &first.tag,
        "-c",
        "%u:%g %U",
        "/workspace",
    ]);
    assert_eq!(owner, "1000:1000 claude");
    let latest = docker_output(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{WORKER_IMAGE_REPO}:latest"),
    ]);
    assert_eq!(latest, first.id);
}
