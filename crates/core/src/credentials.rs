//! Session-scoped credentials the gateway swaps for real secrets.
//!
//! A session container never holds the user's Claude API key: it holds a
//! random session token. The gateway looks the token up here and forwards
//! the request upstream with the real key. Entries live in memory only and
//! are dropped when the session ends.

use crate::ids::{secret_eq, SessionId, Token};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub struct SessionCredentials {
    pub session_id: SessionId,
    /// What the session presents to the gateway.
    pub token: Token,
    /// The user's real Claude API key.
    pub claude_api_key: String,
    /// Token the git relay presents to the repository's host.
    pub repo_token: Option<String>,
    /// What the egress proxy lets this session reach.
    pub egress: cc_wire::api::EgressMode,
    /// The repository the git relay forwards to.
    pub repo_url: String,
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("session_id", &self.session_id)
            .field("repo_url", &self.repo_url)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub struct CredentialRegistry {
    by_session: RwLock<HashMap<SessionId, Arc<SessionCredentials>>>,
}

impl CredentialRegistry {
    pub fn insert(&self, creds: SessionCredentials) {
        let mut map = self.by_session.write().unwrap_or_else(|p| p.into_inner());
        map.insert(creds.session_id.clone(), Arc::new(creds));
    }

    pub fn remove(&self, id: &SessionId) {
        let mut map = self.by_session.write().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }

    /// The credentials of a live session, for the orchestrator's own calls
    /// on its behalf (opening a pull request with its repository token).
    pub fn get(&self, session: &SessionId) -> Option<Arc<SessionCredentials>> {
        let map = self.by_session.read().unwrap_or_else(|p| p.into_inner());
        map.get(session).cloned()
    }

    /// The credentials of `session` if `token` is that session's token.
    pub fn authenticate(
        &self,
        session: &SessionId,
        token: &str,
    ) -> Option<Arc<SessionCredentials>> {
        let map = self.by_session.read().unwrap_or_else(|p| p.into_inner());
        map.get(session)
            .filter(|c| secret_eq(c.token.expose(), token))
            .cloned()
    }

    /// The credentials whose token this is (the Anthropic relay only sees
    /// the token). Linear in live sessions, constant-time per comparison.
    pub fn find_by_token(&self, token: &str) -> Option<Arc<SessionCredentials>> {
        let map = self.by_session.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .find(|c| secret_eq(c.token.expose(), token))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_only_their_session() {
        let reg = CredentialRegistry::default();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let ta = Token::generate();
        reg.insert(SessionCredentials {
            session_id: a.clone(),
            token: ta.clone(),
            claude_api_key: "sk-real".into(),
            repo_token: None,
            egress: Default::default(),
            repo_url: "http://h/r".into(),
        });
        assert!(reg.authenticate(&a, ta.expose()).is_some());
        assert!(reg.authenticate(&b, ta.expose()).is_none());
        assert!(reg.authenticate(&a, "wrong").is_none());
        assert_eq!(
            reg.find_by_token(ta.expose()).unwrap().claude_api_key,
            "sk-real"
        );
        reg.remove(&a);
        assert!(reg.find_by_token(ta.expose()).is_none());
    }
}
