//! Which branches a session may push to.
//!
//! A session's work leaves it as a branch of its own repository: the
//! session's branch (`claudecluster/<session-id>`, or a branch under it,
//! `claudecluster/<session-id>/...`) or, when the admin allows it, a branch
//! under one of the configured prefixes. Never another session's branch,
//! never the branch the session started from, never a tag or any other ref.
//! The sessions' namespace (`claudecluster/`) belongs to the sessions: an
//! admin prefix may not overlap it, or every session could write to every
//! other session's branch. The same rules hold
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushPolicy {
    /// Branch prefixes (each ending in `/`, none overlapping
    /// [`SESSION_BRANCH_PREFIX`]) every session may push under, besides its
    /// own branch. None by default.
    pub prefixes: Vec<String>,
}

impl PushPolicy {
    /// Checks a prefix given by the admin: a valid branch name followed by
    /// `/`, outside the sessions' own namespace.
    pub fn validate_prefix(prefix: &str) -> Result<(), String> {
        let name = prefix.strip_suffix('/').ok_or_else(|| {
            format!("push prefix {prefix:?} must end with '/' (for example \"bots/\")")
        })?;
        if let Some(e) = branch_name_problem(name) {
            return Err(format!("push prefix {prefix:?}: {e}"));
        }
        // Case-insensitively: on a forge whose refs live on a
        // case-insensitive file system the two would still collide.
        let lower = prefix.to_ascii_lowercase();
        if lower.starts_with(SESSION_BRANCH_PREFIX) || SESSION_BRANCH_PREFIX.starts_with(&lower) {
            return Err(format!(
                "push prefix {prefix:?} overlaps the sessions' own branches ({SESSION_BRANCH_PREFIX}<session id>), \
                 where each session may push only to its own; choose a prefix outside {SESSION_BRANCH_PREFIX}"
            ));
        }
        Ok(())
    }

    /// Checks every prefix (see [`Self::validate_prefix`]).
    pub fn validate(&self) -> Result<(), String> {
        self.prefixes
            .iter()
            .try_for_each(|p| Self::validate_prefix(p))
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
        let under_own = branch
            .strip_prefix(own.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        // A prefix overlapping the sessions' namespace is refused at
        // startup; checked again here so a policy built in code cannot open
        // other sessions' branches either.
        let in_sessions_namespace = branch
            .to_ascii_lowercase()
            .starts_with(SESSION_BRANCH_PREFIX);
        let under_prefix =
            !in_sessions_namespace && self.prefixes.iter().any(|p| branch.starts_with(p.as_str()));
        if branch == own || under_own || under_prefix {
            return Ok(());
        }
        if in_sessions_namespace {
            return Err(PushRefusal(format!(
                "{branch} belongs to another session; this session may push only to {own} and branches under {own}/"
            )));
        }
        let allowed = [own.clone(), format!("{own}/*")]
            .into_iter()
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

    fn other() -> SessionId {
        SessionId::parse("fedcba9876543210fedcba98").expect("a valid id")
    }

    #[test]
    fn the_session_branch_its_sub_branches_and_prefixed_branches_are_allowed() {
        let p = PushPolicy {
            prefixes: vec!["bots/".into()],
        };
        let own = session_branch(&id());
        assert!(p.check_branch(&id(), Some("main"), &own).is_ok());
        assert!(p.check_branch(&id(), None, &format!("{own}/fix-1")).is_ok());
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
    fn another_sessions_branch_is_refused_whatever_the_prefixes() {
        let theirs = session_branch(&other());
        let own = session_branch(&id());
        // Even a policy built in code with the sessions' prefix.
        for prefixes in [
            vec![],
            vec!["bots/".to_owned()],
            vec!["claudecluster/".to_owned()],
        ] {
            let p = PushPolicy { prefixes };
            for branch in [
                theirs.clone(),
                format!("{theirs}/x"),
                format!("{own}x"),
                "claudecluster/main".to_owned(),
                "ClaudeCluster/x".to_owned(),
            ] {
                let e = p.check_branch(&id(), None, &branch).unwrap_err();
                assert!(e.0.contains("another session"), "{branch}: {e}");
                assert!(e.0.contains(&own), "{branch}: {e}");
            }
        }
        assert!(PushPolicy::default()
            .check_ref(&id(), None, &format!("refs/heads/{theirs}"))
            .is_err());
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

    #[test]
    fn prefixes_overlapping_the_sessions_namespace_are_refused() {
        for bad in [
            "claudecluster/",
            "claudecluster/team/",
            "ClaudeCluster/",
            "claudecluster/0123456789abcdef01234567/",
        ] {
            let e = PushPolicy::validate_prefix(bad).unwrap_err();
            assert!(e.contains("overlaps"), "{bad}: {e}");
        }
        assert!(PushPolicy::validate_prefix("claudecluster-bots/").is_ok());
        let p = PushPolicy {
            prefixes: vec!["bots/".into(), "claudecluster/".into()],
        };
        assert!(p.validate().is_err());
        assert!(PushPolicy::default().validate().is_ok());
    }
}
