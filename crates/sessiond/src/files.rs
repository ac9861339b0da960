//! One file or directory of the checkout, for clients that show the work
//! (`GET /v1/files?path=P`).
//!
//! The path is confined to the checkout: it is relative, has no `..`, and
//! its canonical form (every symlink resolved) must still lie inside the
//! canonical checkout, so a symlink pointing outside is refused rather than
//! followed. Nothing under `.git` is served, at any depth and however it is
//! reached: the repository's config holds the session's relay credential.
//!
//! The agent shares the container and can swap a checked path for a
//! symlink before it is opened, so the check is made again on what was
//! actually opened (`/proc/self/fd`), and a directory is listed through
//! that same descriptor.

use base64::Engine;
use cc_wire::api::{
    DirEntry, EntryKind, FileEncoding, SessionPath, MAX_DIR_ENTRIES, MAX_FILE_BYTES,
};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Longer paths than Linux's `PATH_MAX` cannot be opened anyway.
const MAX_PATH_BYTES: usize = 4096;

/// Why a path is not served; each maps to one HTTP status (see `api`).
#[derive(Debug, PartialEq)]
pub enum FilesError {
    /// 400: absolute, `..`, NUL, or neither a file nor a directory.
    Invalid(String),
    /// 403: `.git`, or outside the checkout.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 500.
    Internal(String),
}

/// The file or directory at `rel` in the checkout `repo`.
pub async fn read(repo: &Path, rel: &str) -> Result<SessionPath, FilesError> {
    let (repo, rel) = (repo.to_owned(), rel.to_owned());
    tokio::task::spawn_blocking(move || read_blocking(&repo, &rel))
        .await
        .map_err(|e| FilesError::Internal(format!("reading the checkout failed: {e}")))?
}

fn read_blocking(repo: &Path, rel: &str) -> Result<SessionPath, FilesError> {
    let parts = parse(rel)?;
    let shown = parts.join("/");
    let root = repo
        .canonicalize()
        .map_err(|e| FilesError::Internal(format!("the checkout is not readable: {e}")))?;
    let real = parts
        .iter()
        .fold(root.clone(), |p, part| p.join(part))
        .canonicalize()
        .map_err(|e| io_error(&shown, e))?;
    confined(&root, &real, &shown)?;
    let meta = std::fs::metadata(&real).map_err(|e| io_error(&shown, e))?;
    // A FIFO would block the open; anything but a file or a directory is
    // refused before opening it.
    if !meta.is_dir() && !meta.is_file() {
        return Err(FilesError::Invalid(format!(
            "{shown} is neither a file nor a directory"
        )));
    }
    let file = File::open(&real).map_err(|e| io_error(&shown, e))?;
    let opened = opened_path(&file, &real)?;
    confined(&root, &opened, &shown)?;
    let meta = file.metadata().map_err(|e| io_error(&shown, e))?;
    if meta.is_dir() {
        // Through the descriptor, so a swap after the check changes nothing.
        list(&through(&file, &opened), shown)
    } else if meta.is_file() {
        read_file(file, meta.len(), shown)
    } else {
        Err(FilesError::Invalid(format!(
            "{shown} is neither a file nor a directory"
        )))
    }
}

/// `rel`'s components: empty and `.` parts dropped; absolute paths, `..`,
/// NUL and `.git` refused.
fn parse(rel: &str) -> Result<Vec<&str>, FilesError> {
    if rel.contains('\0') {
        return Err(FilesError::Invalid("the path contains a NUL byte".into()));
    }
    if rel.len() > MAX_PATH_BYTES {
        return Err(FilesError::Invalid(format!(
            "the path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    if rel.starts_with('/') {
        return Err(FilesError::Invalid(format!(
            "{rel} is absolute; give a path relative to the checkout"
        )));
    }
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(FilesError::Invalid(format!(
            "{rel} contains `..`; give a path inside the checkout"
        )));
    }
    if parts.iter().any(|p| is_git(p)) {
        return Err(forbidden_git(rel));
    }
    Ok(parts)
}

/// `.git` in any case: harmless on Linux and safe where names fold.
fn is_git(name: &str) -> bool {
    name.eq_ignore_ascii_case(".git")
}

fn forbidden_git(shown: &str) -> FilesError {
    FilesError::Forbidden(format!(
        "{shown}: the repository's .git directory is not served"
    ))
}

/// Refuses a resolved path outside `root` or inside a `.git`.
fn confined(root: &Path, real: &Path, shown: &str) -> Result<(), FilesError> {
    let inside = real.strip_prefix(root).map_err(|_| {
        FilesError::Forbidden(format!(
            "{shown} leads outside the checkout (a symlink pointing out is not followed)"
        ))
    })?;
    let through_git = inside
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n.to_str().is_some_and(is_git)));
    if through_git {
        return Err(forbidden_git(shown));
    }
    Ok(())
}

/// Where the open descriptor really points (Linux: `/proc/self/fd/N`).
#[cfg(target_os = "linux")]
fn opened_path(file: &File, checked: &Path) -> Result<PathBuf, FilesError> {
    std::fs::read_link(through(file, checked)).map_err(|e| {
        FilesError::Internal(format!(
            "cannot tell what was opened (is /proc mounted?): {e}"
        ))
    })
}

/// Elsewhere the check before opening is all there is.
#[cfg(not(target_os = "linux"))]
fn opened_path(_file: &File, checked: &Path) -> Result<PathBuf, FilesError> {
    Ok(checked.to_owned())
}

/// A path naming the open `file` itself, whatever happens to `checked`
/// meanwhile (Linux: its `/proc/self/fd/N` link).
#[cfg(target_os = "linux")]
fn through(file: &File, _checked: &Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(not(target_os = "linux"))]
fn through(_file: &File, checked: &Path) -> PathBuf {
    checked.to_owned()
}

/// The directory at `at`, sorted by name, without `.git`.
fn list(at: &Path, shown: String) -> Result<SessionPath, FilesError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(at).map_err(|e| io_error(&shown, e))? {
        let entry = entry.map_err(|e| io_error(&shown, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_git(&name) {
            continue;
        }
        // Neither looks through a symlink.
        let (kind, size) = match entry.file_type() {
            Ok(t) if t.is_symlink() => (EntryKind::Symlink, 0),
            Ok(t) if t.is_dir() => (EntryKind::Dir, 0),
            Ok(t) if t.is_file() => (EntryKind::File, entry.metadata().map_or(0, |m| m.len())),
            // Removed while listing, or a FIFO, socket or device.
            _ => (EntryKind::Other, 0),
        };
        entries.push(DirEntry { name, kind, size });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = entries.len() > MAX_DIR_ENTRIES;
    entries.truncate(MAX_DIR_ENTRIES);
    Ok(SessionPath::Dir {
        path: shown,
        entries,
        truncated,
    })
}

/// The file's first [`MAX_FILE_BYTES`], as text when they are text.
fn read_file(file: File, size: u64, shown: String) -> Result<SessionPath, FilesError> {
    let mut bytes = Vec::new();
    // One byte more than is sent tells whether there was more.
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(&shown, e))?;
    let truncated = bytes.len() > MAX_FILE_BYTES;
    bytes.truncate(MAX_FILE_BYTES);
    let (encoding, content) = encode(bytes, truncated);
    Ok(SessionPath::File {
        path: shown,
        size,
        encoding,
        content,
        truncated,
    })
}

/// UTF-8 without NUL bytes is text; anything else goes as base64. A cut
/// through the last character of a text leaves the character out.
fn encode(bytes: Vec<u8>, truncated: bool) -> (FileEncoding, String) {
    if bytes.contains(&0) {
        return (FileEncoding::Base64, base64_of(&bytes));
    }
    match String::from_utf8(bytes) {
        Ok(text) => (FileEncoding::Utf8, text),
        Err(e) => {
            let err = e.utf8_error();
            let mut bytes = e.into_bytes();
            if truncated && err.error_len().is_none() {
                bytes.truncate(err.valid_up_to());
                if let Ok(text) = String::from_utf8(bytes.clone()) {
                    return (FileEncoding::Utf8, text);
                }
            }
            (FileEncoding::Base64, base64_of(&bytes))
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn io_error(shown: &str, e: io::Error) -> FilesError {
    let shown = if shown.is_empty() { "." } else { shown };
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => FilesError::NotFound(format!(
            "{shown}: no such file or directory in the checkout"
        )),
        io::ErrorKind::PermissionDenied => {
            FilesError::Forbidden(format!("{shown}: permission denied"))
        }
        _ => FilesError::Internal(format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A checkout with a `.git`, a file, a subdirectory and a secret
    /// outside it.
    fn checkout() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::write(repo.join(".git/config"), "[remote] url = secret\n").unwrap();
        std::fs::create_dir_all(repo.join("src")).unwrap();
        std::fs::write(repo.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(repo.join("README.md"), "# Sample\n").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), "outside\n").unwrap();
        (tmp, repo)
    }

    fn code(r: Result<SessionPath, FilesError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(FilesError::Invalid(_)) => "invalid",
            Err(FilesError::Forbidden(_)) => "forbidden",
            Err(FilesError::NotFound(_)) => "not_found",
            Err(FilesError::Internal(m)) => panic!("internal: {m}"),
        }
    }

    #[test]
    fn the_root_lists_sorted_entries_without_git() {
        let (_tmp, repo) = checkout();
        symlink("README.md", repo.join("link")).unwrap();
        for rel in ["", ".", "./", "./."] {
            let SessionPath::Dir {
                path,
                entries,
                truncated,
            } = read_blocking(&repo, rel).unwrap()
            else {
                panic!("not a directory");
            };
            assert_eq!(path, "");
            assert!(!truncated);
            let got: Vec<(&str, EntryKind, u64)> = entries
                .iter()
                .map(|e| (e.name.as_str(), e.kind, e.size))
                .collect();
            assert_eq!(
                got,
                [
                    ("README.md", EntryKind::File, 9),
                    ("link", EntryKind::Symlink, 0),
                    ("src", EntryKind::Dir, 0),
                ]
            );
        }
    }

    #[test]
    fn a_file_comes_as_text() {
        let (_tmp, repo) = checkout();
        let got = read_blocking(&repo, "src//./main.rs").unwrap();
        assert_eq!(
            got,
            SessionPath::File {
                path: "src/main.rs".into(),
                size: 13,
                encoding: FileEncoding::Utf8,
                content: "fn main() {}\n".into(),
                truncated: false,
            }
        );
        let SessionPath::Dir { path, entries, .. } = read_blocking(&repo, "src/").unwrap() else {
            panic!("not a directory");
        };
        assert_eq!((path.as_str(), entries.len()), ("src", 1));
    }

    #[test]
    fn absolute_paths_dot_dot_and_nul_are_invalid() {
        let (_tmp, repo) = checkout();
        for rel in [
            "/etc/passwd",
            "..",
            "../secret.txt",
            "src/../../secret.txt",
            "src/../README.md",
            "README.md\0",
        ] {
            assert_eq!(code(read_blocking(&repo, rel)), "invalid", "{rel:?}");
        }
        assert_eq!(
            code(read_blocking(&repo, &"a/".repeat(MAX_PATH_BYTES))),
            "invalid"
        );
    }

    #[test]
    fn git_is_forbidden_however_it_is_reached() {
        let (_tmp, repo) = checkout();
        symlink(".git/config", repo.join("cfg")).unwrap();
        symlink(".git", repo.join("gitdir")).unwrap();
        symlink(repo.join(".git"), repo.join("src/abs")).unwrap();
        for rel in [
            ".git",
            ".git/config",
            "./.git/config",
            ".GIT/config",
            ".git/missing",
            "src/.git",
            "cfg",
            "gitdir",
            "gitdir/config",
            "src/abs/config",
        ] {
            assert_eq!(code(read_blocking(&repo, rel)), "forbidden", "{rel:?}");
        }
    }

    #[test]
    fn symlinks_out_of_the_checkout_are_refused() {
        let (tmp, repo) = checkout();
        symlink(tmp.path().join("secret.txt"), repo.join("abs")).unwrap();
        symlink("../secret.txt", repo.join("rel")).unwrap();
        symlink("../..", repo.join("src/up")).unwrap();
        symlink("/", repo.join("root")).unwrap();
        for rel in [
            "abs",
            "rel",
            "src/up",
            "src/up/secret.txt",
            "root",
            "root/etc",
        ] {
            assert_eq!(code(read_blocking(&repo, rel)), "forbidden", "{rel:?}");
        }
        // A symlink inside the checkout is read through.
        symlink("README.md", repo.join("inside")).unwrap();
        symlink("src", repo.join("srclink")).unwrap();
        let SessionPath::File { content, path, .. } = read_blocking(&repo, "inside").unwrap()
        else {
            panic!("not a file");
        };
        assert_eq!((path.as_str(), content.as_str()), ("inside", "# Sample\n"));
        assert!(matches!(
            read_blocking(&repo, "srclink/main.rs"),
            Ok(SessionPath::File { .. })
        ));
        // The checkout itself reached through a symlink still works.
        let via = tmp.path().join("via");
        symlink(&repo, &via).unwrap();
        assert!(matches!(
            read_blocking(&via, "README.md"),
            Ok(SessionPath::File { .. })
        ));
    }

    #[test]
    fn missing_paths_are_not_found() {
        let (_tmp, repo) = checkout();
        symlink("nowhere", repo.join("dangling")).unwrap();
        for rel in ["missing.txt", "src/missing/x", "README.md/x", "dangling"] {
            assert_eq!(code(read_blocking(&repo, rel)), "not_found", "{rel:?}");
        }
    }

    #[test]
    fn binary_comes_as_base64() {
        let (_tmp, repo) = checkout();
        std::fs::write(repo.join("img.bin"), [0u8, 159, 146, 150, 255]).unwrap();
        std::fs::write(repo.join("latin1.txt"), [b'c', b'a', b'f', 0xe9]).unwrap();
        let SessionPath::File {
            encoding,
            content,
            size,
            ..
        } = read_blocking(&repo, "img.bin").unwrap()
        else {
            panic!("not a file");
        };
        assert_eq!(
            (encoding, content.as_str(), size),
            (FileEncoding::Base64, "AJ+Slv8=", 5)
        );
        let SessionPath::File {
            encoding, content, ..
        } = read_blocking(&repo, "latin1.txt").unwrap()
        else {
            panic!("not a file");
        };
        assert_eq!(
            (encoding, content.as_str()),
            (FileEncoding::Base64, "Y2Fm6Q==")
        );
    }

    #[test]
    fn big_files_are_cut_at_the_limit() {
        let (_tmp, repo) = checkout();
        let exact = "x".repeat(MAX_FILE_BYTES);
        std::fs::write(repo.join("exact.txt"), &exact).unwrap();
        let Ok(SessionPath::File {
            truncated, content, ..
        }) = read_blocking(&repo, "exact.txt")
        else {
            panic!("not a file");
        };
        assert!(!truncated);
        assert_eq!(content.len(), MAX_FILE_BYTES);

        // "é" is two bytes: the cut falls in the middle of one.
        let text = format!("a{}", "é".repeat(MAX_FILE_BYTES));
        std::fs::write(repo.join("big.txt"), &text).unwrap();
        let SessionPath::File {
            size,
            encoding,
            content,
            truncated,
            ..
        } = read_blocking(&repo, "big.txt").unwrap()
        else {
            panic!("not a file");
        };
        assert_eq!(size, text.len() as u64);
        assert!(truncated);
        assert_eq!(encoding, FileEncoding::Utf8);
        assert_eq!(content.len(), MAX_FILE_BYTES - 1);
        assert!(text.starts_with(&content));

        let binary = vec![0u8; MAX_FILE_BYTES + 10];
        std::fs::write(repo.join("big.bin"), &binary).unwrap();
        let SessionPath::File {
            encoding,
            content,
            truncated,
            ..
        } = read_blocking(&repo, "big.bin").unwrap()
        else {
            panic!("not a file");
        };
        assert!(truncated);
        assert_eq!(encoding, FileEncoding::Base64);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap();
        assert_eq!(decoded.len(), MAX_FILE_BYTES);
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let (_tmp, repo) = checkout();
        let status = std::process::Command::new("mkfifo")
            .arg(repo.join("pipe"))
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return; // no mkfifo here
        }
        assert_eq!(code(read_blocking(&repo, "pipe")), "invalid");
        let SessionPath::Dir { entries, .. } = read_blocking(&repo, "").unwrap() else {
            panic!("not a directory");
        };
        assert!(entries
            .iter()
            .any(|e| e.name == "pipe" && e.kind == EntryKind::Other));
    }

    #[test]
    fn long_listings_are_cut() {
        let (_tmp, repo) = checkout();
        let many = repo.join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..=MAX_DIR_ENTRIES {
            File::create(many.join(format!("{i:05}"))).unwrap();
        }
        let SessionPath::Dir {
            entries, truncated, ..
        } = read_blocking(&repo, "many").unwrap()
        else {
            panic!("not a directory");
        };
        assert!(truncated);
        assert_eq!(entries.len(), MAX_DIR_ENTRIES);
        assert_eq!(entries[0].name, "00000");
    }
}
