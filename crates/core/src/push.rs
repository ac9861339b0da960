//! Which branches a session may push to.
//!
//! A session's work leaves it as a branch of its own repository: the
//! session's branch (`claudecluster/<session-id>`) or, when the admin allows
//! it, a branch under one of the configured prefixes. Never the branch the
//! session started from, never a tag or any other ref. The same rules hold
//! for `POST /sessions/{id}/push` and for a `git push` Claude Code runs in
//! the container, since both go through the gateway's git relay; the relay
//! also refuses deletions and non-fast-forward ("force") updates.

use crate::ids::SessionId;
use crate::policy::branch_name_problem;

/// Prefix of every session's own branch.
pub const SESSION_BRANCH_PREFIX: &str = "claudecluster/";

/// The branch a session pushes to unless told otherwise.
pub fn session_branch(id: &SessionId) -> String {
    format!("{SESSION_BRANCH_PREFIX}{id}")
}

/// Why a push is refused, in words for the person who asked for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PushRefusal(pub String);

/// The admin's push rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPolicy {
    /// Branch prefixes (each ending in `/`) a session may push under,
    /// besides its own branch.
    pub prefixes: Vec<String>,
}

impl Default for PushPolicy {
    fn default() -> Self {
        Self {
            prefixes: vec![SESSION_BRANCH_PREFIX.to_owned()],
        }
    }
}

impl PushPolicy {
    /// Checks a prefix given by the admin.
    pub fn validate_prefix(prefix: &str) -> Result<(), String> {
        let name = prefix.strip_suffix('/').ok_or_else(|| {
            format!("push prefix {prefix:?} must end with '/' (for example \"claudecluster/\")")
        })?;
        match branch_name_problem(name) {
            None => Ok(()),
            Some(e) => Err(format!("push prefix {prefix:?}: {e}")),
        }
    }

    /// Whether `session` may push to `branch`; `base` is the branch the
    /// session started from, when known.
    pub fn check_branch(
        &self,
        session: &SessionId,
        base: Option<&str>,
        branch: &str,
    ) -> Result<(), PushRefusal> {
        if let Some(e) = branch_name_problem(branch) {
            return Err(PushRefusal(format!("invalid branch name: {e}")));
        }
        if base == Some(branch) {
            return Err(PushRefusal(format!(
                "{branch} is the branch the session started from; push to {} instead",
                session_branch(session)
            )));
        }
        let own = session_branch(session);
        if branch == own || self.prefixes.iter().any(|p| branch.starts_with(p.as_str())) {
            return Ok(());
        }
        let allowed = std::iter::once(own)
            .chain(self.prefixes.iter().map(|p| format!("{p}*")))
            .collect::<Vec<_>>()
            .join(", ");
        Err(PushRefusal(format!(
            "sessions may only push to {allowed}, not {branch}"
        )))
    }

    /// [`Self::check_branch`] for a full ref name as git sends it.
    pub fn check_ref(
        &self,
        session: &SessionId,
        base: Option<&str>,
        refname: &str,
    ) -> Result<(), PushRefusal> {
        let branch = refname.strip_prefix("refs/heads/").ok_or_else(|| {
            PushRefusal(format!(
                "only branches may be pushed, not {refname}; push to refs/heads/{}",
                session_branch(session)
            ))
        })?;
        self.check_branch(session, base, branch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::parse("0123456789abcdef01234567").expect("a valid id")
    }

    #[test]
    fn the_session_branch_and_prefixed_branches_are_allowed() {
        let p = PushPolicy {
            prefixes: vec!["claudecluster/".into(), "bots/".into()],
        };
        let own = session_branch(&id());
        assert!(p.check_branch(&id(), Some("main"), &own).is_ok());
        assert!(p.check_branch(&id(), None, "bots/fix-1").is_ok());
        assert!(p
            .check_ref(&id(), None, &format!("refs/heads/{own}"))
            .is_ok());
    }

    #[test]
    fn the_base_branch_and_other_branches_are_refused() {
        let p = PushPolicy {
            prefixes: Vec::new(),
        };
        let own = session_branch(&id());
        let e = p.check_branch(&id(), Some("main"), "main").unwrap_err();
        assert!(e.0.contains("started from"), "{e}");
        assert!(p.check_branch(&id(), Some("main"), "develop").is_err());
        assert!(p.check_branch(&id(), None, "claudecluster/other").is_err());
        // Even the session's own branch name is refused when it is the base.
        assert!(p.check_branch(&id(), Some(&own), &own).is_err());
    }

    #[test]
    fn tags_and_other_refs_are_refused() {
        let p = PushPolicy::default();
        let e = p
            .check_ref(&id(), None, "refs/tags/claudecluster/v1")
            .unwrap_err();
        assert!(e.0.contains("only branches"), "{e}");
        assert!(p.check_ref(&id(), None, "refs/notes/x").is_err());
    }

    #[test]
    fn malformed_names_are_refused() {
        let p = PushPolicy::default();
        for bad in [
            "",
            "claudecluster/a..b",
            "claudecluster/a b",
            "claudecluster/.hidden",
            "claudecluster//x",
            "claudecluster/x.lock",
            "claudecluster/x/",
            "-x",
            "claudecluster/a@{1}",
            "claudecluster/a\nb",
        ] {
            assert!(p.check_branch(&id(), None, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_must_end_with_a_slash_and_be_valid() {
        assert!(PushPolicy::validate_prefix("bots/").is_ok());
        assert!(PushPolicy::validate_prefix("bots").is_err());
        assert!(PushPolicy::validate_prefix("/").is_err());
        assert!(PushPolicy::validate_prefix("a..b/").is_err());
    }
}
