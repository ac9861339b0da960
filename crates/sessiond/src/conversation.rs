//! Claude Code's conversation beyond one sessiond: its configuration
//! directory (where it keeps its transcripts) is on the workspace volume,
//! and the id of the session's conversation is kept there too, so a new
//! sessiond in a new container — a session woken from sleep — starts
//! Claude Code with `--resume` and the next turn sees every earlier one.
//!
//! The file is written by us but lives where the agent can write too: what
//! it holds is only ever used as one `--resume` argument of the session's
//! own Claude Code, after checking that it looks like an id.

use std::path::{Path, PathBuf};

/// The file holding the conversation's id, in the configuration directory.
const SESSION_ID_FILE: &str = "claudecluster-session-id";
/// Longest id accepted from the file (Claude Code's are 36-char UUIDs).
const MAX_ID_LEN: usize = 128;

/// Creates the configuration directory (private to the session's user);
/// `None`, with a warning, when it cannot be made (sessiond run outside a
/// container): Claude Code then uses its default under HOME.
pub fn prepare(dir: Option<&Path>) -> Option<PathBuf> {
    let dir = dir?;
    let made = std::fs::create_dir_all(dir).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    });
    match made {
        Ok(()) => Some(dir.to_owned()),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot prepare Claude Code's configuration directory; its conversation will not outlive this container");
            None
        }
    }
}

/// The id of the conversation an earlier sessiond kept, if any.
pub fn load(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(SESSION_ID_FILE)).ok()?;
    let id = text.trim();
    let plausible = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !plausible {
        tracing::warn!("ignoring an unreadable conversation id");
        return None;
    }
    Some(id.to_owned())
}

/// Keeps the conversation's id for the next sessiond.
pub fn save(dir: &Path, id: &str) {
    let path = dir.join(SESSION_ID_FILE);
    let tmp = dir.join(format!("{SESSION_ID_FILE}.tmp"));
    let written =
        std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot keep the conversation id; a woken session would start a new conversation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_survives_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let conf = prepare(Some(&dir.path().join("claude"))).unwrap();
        assert_eq!(load(&conf), None, "nothing kept yet");
        save(&conf, "0b7c9a52-2d4e-4c1e-9f5a-1e0a7d6c3b21");
        assert_eq!(
            load(&conf).as_deref(),
            Some("0b7c9a52-2d4e-4c1e-9f5a-1e0a7d6c3b21")
        );
        std::fs::write(
            conf.join(SESSION_ID_FILE),
            "--dangerously-skip-permissions x",
        )
        .unwrap();
        assert_eq!(load(&conf), None, "not an id");
    }

    #[test]
    fn an_unmakeable_directory_falls_back_to_the_default() {
        assert_eq!(prepare(Some(Path::new("/proc/no/such/dir"))), None);
        assert_eq!(prepare(None), None);
    }
}
