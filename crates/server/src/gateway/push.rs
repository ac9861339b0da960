//! Pushes through the git relay, and the rules they must follow.
//!
//! A smart-HTTP push is one `POST git-receive-pack` whose body starts with
//! the ref updates as pkt-lines (`<old> <new> <ref>`, the first carrying the
//! client's capabilities), then the pack. The relay reads the whole body
//! (pushes from a session are small; [`MAX_PUSH_BYTES`] bounds them), checks
//! every update against [`cc_core::PushPolicy`], and only then forwards it
//! with the repository token. Besides the branch rules it refuses:
//! - deletions (`<new>` all zeros);
//! - updates that are not fast-forwards (a force push). Git's wire protocol
//!   does not say whether `<old>` is an ancestor of `<new>`, and the
//!   container's word for it is worth nothing, so the relay checks it in a
//!   bare mirror of the repository on the orchestrator: fetch the branches
//!   from the upstream, index the pushed pack into it, and ask
//!   `git merge-base --is-ancestor`. Creating a branch needs no check.
//!   The mirror's git follows no redirect, sends the repository token only
//!   to the session's upstream URL, and connects only to the addresses the
//!   upstream's host resolved to when it passed the public-address check.
//!
//! A refusal is answered the way a git server answers, with a
//! `report-status` that names the reason, so `git push` in the container
//! prints `! [remote rejected] main -> main (<reason>)` and Claude Code can
//! read why.

use cc_core::SessionId;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::process::Command as Process;
use tokio::sync::Semaphore;

/// Largest push body the relay takes.
pub const MAX_PUSH_BYTES: usize = 256 * 1024 * 1024;
/// Most push bytes held in memory at once, all sessions together; a push
/// that would go beyond is refused (503) rather than queued, so two large
/// pushes can never wait on each other.
pub const MAX_PUSH_BYTES_IN_FLIGHT: usize = 512 * 1024 * 1024;

/// The memory of push bodies in flight, counted in KiB.
pub struct PushBudget(Arc<Semaphore>);

impl PushBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.div_ceil(1024))))
    }

    /// An empty reservation that grows as a body arrives.
    pub fn reserve(&self) -> Reservation {
        Reservation {
            budget: self.0.clone(),
            kib: 0,
        }
    }
}

/// Part of the [`PushBudget`], given back when dropped.
pub struct Reservation {
    budget: Arc<Semaphore>,
    kib: usize,
}

impl Reservation {
    /// Grows the reservation to cover `bytes`; `false` when the budget has
    /// not that much left.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        let need = bytes.div_ceil(1024);
        if need <= self.kib {
            return true;
        }
        let Ok(more) = u32::try_from(need - self.kib) else {
            return false;
        };
        match self.budget.try_acquire_many(more) {
            Ok(permits) => {
                permits.forget();
                self.kib = need;
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.add_permits(self.kib);
    }
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl RefUpdate {
    pub fn is_create(&self) -> bool {
        is_zero(&self.old)
    }

    pub fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }

    /// `refs/heads/x 1a2b3c4..5d6e7f8`, for logs and the audit trail.
    pub fn describe(&self) -> String {
        use cc_wire::api::short_commit;
        format!(
            "{} {}..{}",
            self.refname,
            short_commit(&self.old),
            short_commit(&self.new)
        )
    }
}

/// The parsed front of a `git-receive-pack` request body.
#[derive(Debug, PartialEq, Eq)]
pub struct PushRequest<'a> {
    pub updates: Vec<RefUpdate>,
    pub capabilities: Vec<String>,
    /// The pack that follows the commands (empty when none was sent).
    pub pack: &'a [u8],
}

impl PushRequest<'_> {
    fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }
}

fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

fn is_oid(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads one pkt-line at `*pos`; `None` is a flush packet.
fn read_pkt<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, String> {
    let head = buf
        .get(*pos..*pos + 4)
        .ok_or("the request ends inside a pkt-line header")?;
    let len = std::str::from_utf8(head)
        .ok()
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .ok_or("malformed pkt-line length")?;
    if len == 0 {
        *pos += 4;
        return Ok(None);
    }
    if len < 4 {
        return Err("unexpected special pkt-line in a push".into());
    }
    let data = buf
        .get(*pos + 4..*pos + len)
        .ok_or("the request ends inside a pkt-line")?;
    *pos += len;
    Ok(Some(data))
}

/// Parses the commands (and push options) in front of the pack.
pub fn parse(body: &[u8]) -> Result<PushRequest<'_>, String> {
    let mut pos = 0;
    let mut updates = Vec::new();
    let mut capabilities = Vec::new();
    if body.is_empty() {
        return Ok(PushRequest {
            updates,
            capabilities,
            pack: body,
        });
    }
    while let Some(line) = read_pkt(body, &mut pos)? {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let (command, caps) = match line.iter().position(|&b| b == 0) {
            Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
            None => (line, None),
        };
        let command = std::str::from_utf8(command).map_err(|_| "a ref update is not UTF-8")?;
        if let Some(caps) = caps {
            capabilities = String::from_utf8_lossy(caps)
                .split(' ')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
        }
        // A shallow client names its shallow roots first.
        if command.starts_with("shallow ") {
            continue;
        }
        let mut parts = command.splitn(3, ' ');
        let (Some(old), Some(new), Some(refname)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed ref update {command:?}"));
        };
        if !is_oid(old) || !is_oid(new) || refname.is_empty() {
            return Err(format!("malformed ref update {command:?}"));
        }
        // git refuses such names itself; here they would be written into
        // log lines and audit records, where a CR/LF or an escape sequence
        // forges lines or rewrites a terminal. The error quotes the name
        // escaped.
        if refname.chars().any(char::is_control) {
            return Err(format!(
                "the ref name {refname:?} has control characters, which git does not allow"
            ));
        }
        updates.push(RefUpdate {
            old: old.to_owned(),
            new: new.to_owned(),
            refname: refname.to_owned(),
        });
    }
    let mut req = PushRequest {
        updates,
        capabilities,
        pack: &[],
    };
    if req.has("push-options") && pos < body.len() {
        while read_pkt(body, &mut pos)?.is_some() {}
    }
    req.pack = &body[pos..];
    Ok(req)
}

fn pkt(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// The body of a `git-receive-pack` result refusing every update of `req`
/// with `reason`, in the framing the client asked for.
pub fn refusal_report(req: &PushRequest<'_>, reason: &str) -> Vec<u8> {
    let reason = reason.replace(['\n', '\r'], " ");
    let mut status = pkt(b"unpack ok\n");
    for u in &req.updates {
        status.extend(pkt(format!("ng {} {reason}\n", u.refname).as_bytes()));
    }
    status.extend_from_slice(b"0000");
    let band_max = if req.has("side-band-64k") {
        65515
    } else if req.has("side-band") {
        995
    } else {
        return status;
    };
    let mut out = Vec::new();
    let note = format!("ClaudeCluster: push refused: {reason}\n");
    for (band, data) in [(2u8, note.as_bytes()), (1u8, status.as_slice())] {
        for chunk in data.chunks(band_max) {
            let mut framed = vec![band];
            framed.extend_from_slice(chunk);
            out.extend(pkt(&framed));
        }
    }
    out.extend_from_slice(b"0000");
    out
}

/// The branch `HEAD` points at in an upload-pack ref advertisement
/// (`info/refs?service=git-upload-pack`, protocol v0).
pub fn advertised_head(advert: &[u8]) -> Option<String> {
    let mut pos = 0;
    // `# service=git-upload-pack` and a flush come first over HTTP; the
    // first ref line carries the capabilities.
    loop {
        let line = match read_pkt(advert, &mut pos) {
            Ok(Some(line)) => line,
            Ok(None) => continue,
            Err(_) => return None,
        };
        let Some(nul) = line.iter().position(|&b| b == 0) else {
            continue;
        };
        let caps = String::from_utf8_lossy(&line[nul + 1..]).into_owned();
        return caps
            .split([' ', '\n'])
            .find_map(|c| c.strip_prefix("symref=HEAD:refs/heads/"))
            .map(str::to_owned);
    }
}

/// Bare mirrors of sessions' repositories, for the fast-forward check.
pub struct Mirrors {
    root: PathBuf,
    /// `host:port`s the admin allowed beyond public addresses
    /// (`--allow-repo-host`).
    allowed_hosts: Vec<String>,
}

impl Mirrors {
    /// Mirrors under `root`, fetching only from public addresses.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            allowed_hosts: Vec::new(),
        }
    }

    /// Lets the mirrors fetch from these `host:port`s whatever their
    /// addresses.
    pub fn allowing(mut self, allowed_hosts: Vec<String>) -> Self {
        self.allowed_hosts = allowed_hosts;
        self
    }

    fn path(&self, session: &SessionId) -> PathBuf {
        self.root.join(format!("{session}.git"))
    }

    /// Makes the session's mirror hold what [`Self::is_ancestor`] needs for
    /// this push: the `olds` (the upstream's current values) with their
    /// history, and the pushed pack.
    ///
    /// The upstream is fetched only when the mirror lacks an `old` or the
    /// pack's delta bases: after a session's first update its mirror
    /// usually holds both already, since each push's `new` is the next
    /// one's `old`. Objects are named by their hashes, so what the mirror
    /// holds cannot disagree with the upstream. The pushed pack stays only
    /// if the push is allowed ([`PushedPack::keep`]): dropped unkept, it
    /// is removed again, so refused pushes cannot fill the disk.
    pub async fn prepare(
        &self,
        session: &SessionId,
        upstream: &str,
        auth_header: Option<&str>,
        olds: &[&str],
        pack: &[u8],
    ) -> Result<(PathBuf, PushedPack), String> {
        let mirror = self.path(session);
        if !mirror.join("HEAD").exists() {
            tokio::fs::create_dir_all(&self.root)
                .await
                .map_err(|e| format!("creating {}: {e}", self.root.display()))?;
            let at = path_arg(&mirror)?;
            git(&self.root, &[], &["init", "--quiet", "--bare", &at], None).await?;
        }
        let mut fetched = false;
        if !has_commits(&mirror, olds).await {
            fetch(&mirror, upstream, auth_header, &self.allowed_hosts).await?;
            fetched = true;
        }
        let mut pushed = PushedPack::default();
        if !pack.is_empty() {
            let index = ["index-pack", "--stdin", "--fix-thin"];
            let before = pack_files(&mirror).await;
            if let Err(e) = git(&mirror, &[], &index, Some(pack)).await {
                if fetched {
                    return Err(e);
                }
                // A delta base the mirror lacks: fetch, then try again.
                fetch(&mirror, upstream, auth_header, &self.allowed_hosts).await?;
                let before = pack_files(&mirror).await;
                git(&mirror, &[], &index, Some(pack)).await?;
                pushed.files = new_files(&before, pack_files(&mirror).await);
            } else {
                pushed.files = new_files(&before, pack_files(&mirror).await);
            }
        }
        Ok((mirror, pushed))
    }

    /// Fetches the upstream into an existing mirror, for a check that
    /// found history missing.
    pub async fn refresh(
        &self,
        session: &SessionId,
        upstream: &str,
        auth_header: Option<&str>,
    ) -> Result<(), String> {
        fetch(
            &self.path(session),
            upstream,
            auth_header,
            &self.allowed_hosts,
        )
        .await
    }

    /// Whether `old` is an ancestor of `new` in a prepared mirror.
    pub async fn is_ancestor(mirror: &Path, old: &str, new: &str) -> Result<bool, String> {
        match git_status(mirror, &["merge-base", "--is-ancestor", old, new]).await? {
            0 => Ok(true),
            1 => Ok(false),
            code => Err(format!("git merge-base exited with {code}")),
        }
    }

    /// Removes the mirrors of sessions `keep` does not name.
    pub async fn prune(&self, keep: impl Fn(&str) -> bool) {
        let Ok(mut dir) = tokio::fs::read_dir(&self.root).await else {
            return;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".git") {
                if !keep(id) {
                    let _ = tokio::fs::remove_dir_all(entry.path()).await;
                }
            }
        }
    }
}

/// The files indexing a pushed pack added to a mirror (the pack, its index
/// and reverse index), removed when dropped unless [`Self::keep`] was
/// called. A pack the mirror already held adds none, so removing never
/// takes what an earlier push or fetch brought.
#[derive(Debug, Default)]
#[must_use = "dropping it removes the pushed pack"]
pub struct PushedPack {
    files: Vec<PathBuf>,
}

impl PushedPack {
    /// The push was allowed: its pack stays (the next push's `old`).
    pub fn keep(mut self) {
        self.files.clear();
    }
}

impl Drop for PushedPack {
    fn drop(&mut self) {
        // A few unlinks: cheap enough to do in place.
        for f in self.files.drain(..) {
            if let Err(e) = std::fs::remove_file(&f) {
                tracing::warn!(file = %f.display(), error = %e, "removing a refused push's pack");
            }
        }
    }
}

/// The files under a mirror's `objects/pack`.
async fn pack_files(mirror: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(mut dir) = tokio::fs::read_dir(mirror.join("objects/pack")).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            out.push(entry.path());
        }
    }
    out
}

fn new_files(before: &[PathBuf], after: Vec<PathBuf>) -> Vec<PathBuf> {
    after.into_iter().filter(|f| !before.contains(f)).collect()
}

/// The upstream's branches and tags (a thin pack may take its delta bases
/// from any advertised ref). The upstream's host is resolved and checked
/// here, and git is told to connect to exactly those addresses
/// (`http.curloptResolve`), so it cannot resolve the name to another.
async fn fetch(
    mirror: &Path,
    upstream: &str,
    auth_header: Option<&str>,
    allowed_hosts: &[String],
) -> Result<(), String> {
    let repo = cc_core::policy::parse_repo_url(upstream).map_err(|e| e.to_string())?;
    let addrs = cc_core::policy::resolve_repo_host(&repo, allowed_hosts)
        .await
        .map_err(|e| e.to_string())?;
    let literal = repo.host.parse::<std::net::IpAddr>().is_ok();
    let pinned = (!literal).then(|| {
        let list = addrs
            .iter()
            .map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            })
            .collect::<Vec<_>>()
            .join(",");
        format!("{}:{}:{list}", repo.host, repo.port)
    });
    let args = [
        "fetch",
        "--quiet",
        "--prune",
        "--",
        upstream,
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
    ];
    let mut config = Vec::new();
    if let Some(header) = auth_header {
        // For the upstream's URL only: git sends it to no other server.
        config.push((
            format!("http.{upstream}.extraHeader"),
            format!("Authorization: {header}"),
        ));
    }
    if let Some(pin) = pinned {
        config.push(("http.curloptResolve".to_owned(), pin));
    }
    git(mirror, &config, &args, None).await
}

/// Whether every one of `oids` is a commit the mirror holds.
async fn has_commits(mirror: &Path, oids: &[&str]) -> bool {
    for oid in oids {
        let spec = format!("{oid}^{{commit}}");
        if git_status(mirror, &["cat-file", "-e", &spec]).await != Ok(0) {
            return false;
        }
    }
    true
}

fn path_arg(p: &Path) -> Result<String, String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// git on the orchestrator, with `config` set through the environment
/// (so a token is in no argv and no file). It never follows a redirect:
/// the upstream is the one the session was created for, and a redirect
/// would lead it (and, since git moves its base URL to the redirect
/// target, the token) to a server nobody checked.
fn git_command(dir: &Path, config: &[(String, String)], args: &[&str]) -> Process {
    let mut cmd = Process::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let always = [("http.followRedirects".to_owned(), "false".to_owned())];
    let all = always.iter().chain(config);
    let mut n = 0;
    for (i, (key, value)) in all.enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
            .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        n = i + 1;
    }
    cmd.env("GIT_CONFIG_COUNT", n.to_string());
    cmd
}

async fn git(
    dir: &Path,
    config: &[(String, String)],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<(), String> {
    let mut cmd = git_command(dir, config, args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run git on the orchestrator: {e}"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .await
            .map_err(|e| format!("feeding git {}: {e}", args[0]))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for git {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

async fn git_status(dir: &Path, args: &[&str]) -> Result<i32, String> {
    let out = git_command(dir, &[], args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run git on the orchestrator: {e}"))?;
    out.status
        .code()
        .ok_or_else(|| format!("git {} was killed", args[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn body(lines: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            out.extend(pkt(l.as_bytes()));
        }
        out.extend_from_slice(b"0000");
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn commands_capabilities_and_pack_are_separated() {
        let first = format!("{A} {B} refs/heads/x\0report-status side-band-64k agent=git/2\n");
        let second = format!("{Z} {B} refs/heads/y\n");
        let b = body(&[&first, &second], b"PACKdata");
        let req = parse(&b).unwrap();
        assert_eq!(req.updates.len(), 2);
        assert_eq!(req.updates[0].refname, "refs/heads/x");
        assert!(req.updates[1].is_create());
        assert!(!req.updates[0].is_delete());
        assert!(req.has("report-status") && req.has("side-band-64k"));
        assert_eq!(req.pack, b"PACKdata");
    }

    #[test]
    fn push_options_and_shallow_lines_are_skipped() {
        let first = format!("shallow {A}");
        let cmd = format!("{A} {Z} refs/heads/x\0report-status push-options");
        let mut b = body(&[&first, &cmd], b"");
        b.extend(pkt(b"ci.skip"));
        b.extend_from_slice(b"0000PACK");
        let req = parse(&b).unwrap();
        assert_eq!(req.updates.len(), 1);
        assert!(req.updates[0].is_delete());
        assert_eq!(req.pack, b"PACK");
    }

    #[test]
    fn a_ref_name_with_control_characters_is_refused_escaped() {
        for name in [
            "refs/heads/a\r\nINFO forged",
            "refs/heads/\u{1b}]52;c;eA==\u{7}",
            "refs/heads/a\u{85}b",
        ] {
            let line = format!("{Z} {A} {name}\0report-status\n");
            let err = parse(&body(&[&line], b"")).unwrap_err();
            assert!(err.contains("control characters"), "{err}");
            assert!(!err.chars().any(char::is_control), "{err:?}");
        }
    }

    #[test]
    fn a_probe_and_garbage_are_told_apart() {
        assert!(parse(b"0000").unwrap().updates.is_empty());
        assert!(parse(b"").unwrap().updates.is_empty());
        assert!(parse(b"zzzz").is_err());
        assert!(parse(b"0010short").is_err());
        assert!(parse(&body(&["not a command"], b"")).is_err());
        assert!(parse(&body(&[&format!("{A} xyz refs/heads/x")], b"")).is_err());
    }

    #[test]
    fn the_refusal_names_every_ref_in_the_asked_framing() {
        let plain = format!("{A} {B} refs/heads/main\0report-status");
        let b = body(&[&plain], b"");
        let req = parse(&b).unwrap();
        let report = refusal_report(&req, "no\nway");
        let text = String::from_utf8_lossy(&report);
        assert!(text.starts_with("000eunpack ok\n"), "{text}");
        assert!(text.contains("ng refs/heads/main no way\n"), "{text}");
        assert!(text.ends_with("0000"));

        let banded = format!("{A} {B} refs/heads/main\0report-status side-band-64k");
        let b = body(&[&banded], b"");
        let report = refusal_report(&parse(&b).unwrap(), "no");
        // Band 2 (progress) first, then band 1 carrying the status.
        assert_eq!(report[4], 2);
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("ClaudeCluster: push refused: no"), "{text}");
        assert!(text.contains("\u{1}000eunpack ok"), "{text}");
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = PushBudget::new(10 * 1024);
        let mut a = budget.reserve();
        assert!(a.grow_to(6 * 1024));
        assert!(a.grow_to(6 * 1024 - 1), "shrinking keeps what is held");
        let mut b = budget.reserve();
        assert!(!b.grow_to(5 * 1024), "only 4 KiB are left");
        assert!(b.grow_to(4 * 1024));
        drop(a);
        assert!(b.grow_to(10 * 1024));
        drop(b);
        assert!(budget.reserve().grow_to(10 * 1024));
    }

    #[test]
    fn the_advertised_head_is_found() {
        let mut advert = pkt(b"# service=git-upload-pack\n");
        advert.extend_from_slice(b"0000");
        advert.extend(pkt(format!(
            "{A} HEAD\0multi_ack symref=HEAD:refs/heads/trunk agent=git/2\n"
        )
        .as_bytes()));
        advert.extend(pkt(format!("{A} refs/heads/trunk\n").as_bytes()));
        assert_eq!(advertised_head(&advert).as_deref(), Some("trunk"));
        assert_eq!(advertised_head(b"0000"), None);
    }
}
