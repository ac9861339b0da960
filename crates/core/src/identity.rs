//! Who is calling: users, their API tokens, and the seam that stores them.
//!
//! Invariants:
//! - An API token is `cct_` followed by 64 lowercase hex characters (256
//!   random bits). Only its SHA-256 (hex) is ever stored; the token itself
//!   is shown once, when it is created.
//! - A token carries one user and one role; revoking it is permanent.
//! - User names are short, lowercase and safe in logs and URLs, so they can
//!   be used as session owners and audit actors directly.
//! - Session access tokens (`ccs_…`) are stateless: the session, an expiry
//!   and an HMAC-SHA256 under a server secret; they open one session only.

use crate::error::StoreError;
use crate::ids::secret_eq;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of every API token.
pub const TOKEN_PREFIX: &str = "cct_";
/// Prefix of every session access token.
pub const SESSION_TOKEN_PREFIX: &str = "ccs_";
/// Longest user name.
pub const MAX_USER_LEN: usize = 64;
/// The bootstrap administrator's user name (the token from configuration).
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// The actor of requests that carried no valid credentials.
pub const ANONYMOUS: &str = "anonymous";

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every session, token management, the audit log.
    Admin,
    /// Their own sessions only.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "user" => Some(Self::User),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// Set for a session access token: the one session it opens.
    pub session: Option<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.session.is_none()
    }

    /// Whether this caller may see a session owned by `owner` with `id`.
    pub fn may_access(&self, id: &str, owner: &str) -> bool {
        match &self.session {
            Some(scope) => scope == id,
            None => self.role == Role::Admin || self.user == owner,
        }
    }
}

/// Checks a user name: 1–64 of `a-z 0-9 . _ -`, starting alphanumeric.
pub fn check_user(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if ok && name != ANONYMOUS {
        Ok(())
    } else {
        Err(format!(
            "user names are 1-{MAX_USER_LEN} characters of a-z, 0-9, '.', '_' or '-', \
             starting with a letter or digit (and not {ANONYMOUS:?})"
        ))
    }
}

/// A stored API token: everything but the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiTokenRecord {
    /// Public handle used to list and revoke (12 hex characters).
    pub id: String,
    pub user: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub label: Option<String>,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

/// A freshly minted token and its record; the token is shown once.
pub struct NewToken {
    pub token: String,
    pub record: ApiTokenRecord,
}

impl NewToken {
    pub fn generate(user: &str, role: Role, label: Option<String>, now: SystemTime) -> Self {
        let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
        let record = ApiTokenRecord {
            id: random_hex(6),
            user: user.to_owned(),
            role,
            hash: hash_token(&token),
            label,
            created_at: now,
            revoked_at: None,
        };
        Self { token, record }
    }
}

/// Hex SHA-256 of a presented token, the form tokens are looked up by.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Whether `s` looks like an API token (so a wrong kind of secret gets a
/// clear error rather than a database lookup).
pub fn is_api_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Where users' tokens persist.
pub trait IdentityStore: Send + Sync + 'static {
    fn insert_token(
        &self,
        rec: &ApiTokenRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The token with this hash, revoked or not.
    fn token_by_hash(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<ApiTokenRecord>, StoreError>> + Send;
    /// Every token, oldest first.
    fn list_tokens(&self) -> impl Future<Output = Result<Vec<ApiTokenRecord>, StoreError>> + Send;
    /// Marks a token revoked; `false` when there is no such live token.
    fn revoke_token(
        &self,
        id: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Number of tokens not revoked.
    fn active_tokens(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Deletes every token of `user` (erasure): the rows go, so the name
    /// does not stay behind and the tokens stop working. Returns how many.
    fn delete_user_tokens(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// What [`erase_user`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraseReport {
    pub sessions: u64,
    pub tokens: u64,
}

/// Erases `user` from a store: their ended sessions with their logs, then
/// their tokens, idempotency keys and webhooks. Refused with [`StoreError::Conflict`] while the user has a
/// live session (nothing is deleted then). The audit log is redacted
/// separately ([`crate::audit::AuditStore::redact_audit_actor`]).
pub async fn erase_user<
    S: crate::Store + IdentityStore + crate::IdempotencyStore + crate::webhook::WebhookStore,
>(
    store: &S,
    user: &str,
) -> Result<EraseReport, StoreError> {
    let sessions = store.erase_owner_sessions(user).await?;
    let tokens = store.delete_user_tokens(user).await?;
    store.delete_user_idempotency_keys(user).await?;
    store.delete_user_endpoints(user).await?;
    Ok(EraseReport { sessions, tokens })
}

// --- session access tokens -------------------------------------------------

/// Signs and checks session access tokens.
#[derive(Clone)]
pub struct SessionTokenKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTokenKey(…)")
    }
}

/// Why a session access token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTokenError {
    Malformed,
    Expired,
    /// Valid, but for another session.
    WrongSession,
}

impl SessionTokenKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("operating system random number generator failed");
        Self { key }
    }

    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// `ccs_<session>.<expiry unix s>.<hex hmac>`.
    pub fn issue(&self, session: &str, expires: SystemTime) -> String {
        let exp = expires
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let payload = format!("{session}.{exp}");
        format!(
            "{SESSION_TOKEN_PREFIX}{payload}.{}",
            hex(&hmac_sha256(&self.key, payload.as_bytes()))
        )
    }

    /// Checks a token for `session` at `now`.
    pub fn check(
        &self,
        token: &str,
        session: &str,
        now: SystemTime,
    ) -> Result<(), SessionTokenError> {
        let (tok_session, exp) = self.verify(token)?;
        if tok_session != session {
            return Err(SessionTokenError::WrongSession);
        }
        if now >= exp {
            return Err(SessionTokenError::Expired);
        }
        Ok(())
    }

    /// The session and expiry of an authentic token (expired or not).
    pub fn verify(&self, token: &str) -> Result<(String, SystemTime), SessionTokenError> {
        let rest = token
            .strip_prefix(SESSION_TOKEN_PREFIX)
            .ok_or(SessionTokenError::Malformed)?;
        let (payload, mac) = rest.rsplit_once('.').ok_or(SessionTokenError::Malformed)?;
        let expected = hex(&hmac_sha256(&self.key, payload.as_bytes()));
        if !secret_eq(&expected, mac) {
            return Err(SessionTokenError::Malformed);
        }
        let (session, exp) = payload
            .split_once('.')
            .ok_or(SessionTokenError::Malformed)?;
        let exp: u64 = exp.parse().map_err(|_| SessionTokenError::Malformed)?;
        Ok((session.to_owned(), UNIX_EPOCH + Duration::from_secs(exp)))
    }
}

/// HMAC-SHA256 (RFC 2104): session access tokens, the requests replicas
/// forward to each other in the server, webhook signatures. A key longer
/// than SHA-256's 64-byte block is hashed first, as the RFC says.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let hashed: [u8; 32];
    let key = if key.len() > BLOCK {
        hashed = Sha256::digest(key).into();
        &hashed[..]
    } else {
        key
    };
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("operating system random number generator failed");
    hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape_and_only_hashes_are_kept() {
        let t = NewToken::generate("alice", Role::User, None, SystemTime::now());
        assert!(is_api_token(&t.token), "{}", t.token);
        assert_eq!(t.record.hash, hash_token(&t.token));
        assert_ne!(t.record.hash, t.token);
        assert_eq!(t.record.id.len(), 12);
        assert!(!is_api_token("cct_xyz"));
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("ci-bot_2.x").is_ok());
        for bad in ["", "Alice", "-x", "a b", "anonymous", &"a".repeat(65)] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scope_rules() {
        let alice = Principal {
            user: "alice".into(),
            role: Role::User,
            session: None,
        };
        assert!(alice.may_access("s1", "alice"));
        assert!(!alice.may_access("s1", "bob"));
        let admin = Principal {
            user: "root".into(),
            role: Role::Admin,
            session: None,
        };
        assert!(admin.may_access("s1", "bob") && admin.is_admin());
        let scoped = Principal {
            user: "bob".into(),
            role: Role::User,
            session: Some("s1".into()),
        };
        assert!(scoped.may_access("s1", "bob"));
        assert!(!scoped.may_access("s2", "bob"));
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // Case 2: a short key, padded as HMAC does.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let case2 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(
            hex(&hmac_sha256(&key, b"what do ya want for nothing?")),
            case2
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            case2
        );
        // Case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn session_tokens_expire_and_stay_in_their_session() {
        let key = SessionTokenKey::generate();
        let now = SystemTime::now();
        let t = key.issue("abc", now + Duration::from_secs(60));
        assert_eq!(key.check(&t, "abc", now), Ok(()));
        assert_eq!(
            key.check(&t, "abd", now),
            Err(SessionTokenError::WrongSession)
        );
        assert_eq!(
            key.check(&t, "abc", now + Duration::from_secs(61)),
            Err(SessionTokenError::Expired)
        );
        let forged = t.replace(".", ".9");
        assert_eq!(
            key.check(&forged, "abc", now),
            Err(SessionTokenError::Malformed)
        );
        let other = SessionTokenKey::generate();
        assert_eq!(
            other.check(&t, "abc", now),
            Err(SessionTokenError::Malformed)
        );
    }
}
