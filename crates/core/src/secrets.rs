//! Session secrets sealed at rest, so a restarted orchestrator can adopt
//! the sessions its predecessor left running.
//!
//! A live session has three secrets: the session token its container
//! presents to the gateway, the bearer token sessiond requires, and the
//! user's Claude API key. They are stored only sealed with
//! ChaCha20-Poly1305 under a server key kept in the data directory (a
//! 0600 file created on first start), with the session ID as associated
//! data so a sealed blob cannot be moved to another session. The store
//! deletes them when the session ends.
//!
//! Sealed layout: `version (1) || nonce (12) || ciphertext+tag`.

use crate::ids::{SessionId, Token};
use cc_wire::sessiond::InitRequest;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use std::path::Path;
use thiserror::Error;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "secrets.key";

#[derive(Debug, Error)]
pub enum SecretsError {
    #[error("sealed session secrets are malformed")]
    Malformed,
    /// Wrong key, wrong session, or tampered with.
    #[error("sealed session secrets do not open with this server's key")]
    Unopenable,
    #[error("server key file {path}: {message}")]
    KeyFile { path: String, message: String },
}

/// The server's sealing key. `Debug` never prints it.
#[derive(Clone)]
pub struct SealKey([u8; KEY_LEN]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl SealKey {
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k).expect("operating system random number generator failed");
        Self(k)
    }

    /// A key derived elsewhere (the replicas' shared secret).
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        Self(key)
    }

    /// Reads `<dir>/secrets.key`, creating it (mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, SecretsError> {
        let path = dir.join(KEY_FILE);
        let err = |message: String| SecretsError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let k: [u8; KEY_LEN] = bytes
                    .try_into()
                    .map_err(|_| err(format!("must hold exactly {KEY_LEN} bytes")))?;
                Ok(Self(k))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_private(&path, &key.0).map_err(|e| err(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// What a restarted orchestrator needs to adopt a session.
pub struct SessionSecrets {
    pub session_token: Token,
    pub agent_token: Token,
    pub claude_api_key: String,
    pub repo_token: Option<String>,
    /// The exact setup sent to sessiond (it carries the session token), so
    /// the adopter's idempotent re-init matches; absent when the
    /// orchestrator died before the container ran.
    pub init: Option<InitRequest>,
}

impl std::fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecrets(…)")
    }
}

#[derive(Serialize, Deserialize)]
struct Plain {
    session_token: String,
    agent_token: String,
    claude_api_key: String,
    #[serde(default)]
    repo_token: Option<String>,
    #[serde(default)]
    init: Option<InitRequest>,
}

pub fn seal(key: &SealKey, id: &SessionId, secrets: &SessionSecrets) -> Vec<u8> {
    let plain = serde_json::to_vec(&Plain {
        session_token: secrets.session_token.expose().to_owned(),
        agent_token: secrets.agent_token.expose().to_owned(),
        claude_api_key: secrets.claude_api_key.clone(),
        repo_token: secrets.repo_token.clone(),
        init: secrets.init.clone(),
    })
    .expect("plain strings serialise");
    seal_bytes(key, id.as_str().as_bytes(), &plain)
}

pub fn open(key: &SealKey, id: &SessionId, sealed: &[u8]) -> Result<SessionSecrets, SecretsError> {
    let plain = open_bytes(key, id.as_str().as_bytes(), sealed)?;
    let p: Plain = serde_json::from_slice(&plain).map_err(|_| SecretsError::Malformed)?;
    Ok(SessionSecrets {
        session_token: Token::from_string(p.session_token),
        agent_token: Token::from_string(p.agent_token),
        claude_api_key: p.claude_api_key,
        repo_token: p.repo_token,
        init: p.init,
    })
}

/// Seals `plain` bound to `context` (the associated data: what the secret
/// belongs to, so a sealed blob cannot be moved to something else).
pub fn seal_bytes(key: &SealKey, context: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("operating system random number generator failed");
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: context,
            },
        )
        .expect("sealing in memory cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`seal_bytes`] sealed for the same `context`.
pub fn open_bytes(key: &SealKey, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
    if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
        return Err(SecretsError::Malformed);
    }
    let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: context,
            },
        )
        .map_err(|_| SecretsError::Unopenable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> SessionSecrets {
        SessionSecrets {
            session_token: Token::generate(),
            agent_token: Token::generate(),
            claude_api_key: "sk-ant-secret-key".into(),
            repo_token: Some("ghp_secret".into()),
            init: None,
        }
    }

    #[test]
    fn round_trip_and_nothing_in_clear() {
        let key = SealKey::generate();
        let id = SessionId::generate();
        let s = secrets();
        let sealed = seal(&key, &id, &s);
        let hay = String::from_utf8_lossy(&sealed);
        assert!(!hay.contains("sk-ant-secret-key"));
        assert!(!hay.contains(s.agent_token.expose()));
        let back = open(&key, &id, &sealed).unwrap();
        assert_eq!(back.claude_api_key, "sk-ant-secret-key");
        assert_eq!(back.session_token, s.session_token);
        assert_eq!(back.agent_token, s.agent_token);
    }

    #[test]
    fn wrong_key_session_or_tampering_fails() {
        let key = SealKey::generate();
        let id = SessionId::generate();
        let sealed = seal(&key, &id, &secrets());
        assert!(matches!(
            open(&SealKey::generate(), &id, &sealed),
            Err(SecretsError::Unopenable)
        ));
        assert!(matches!(
            open(&key, &SessionId::generate(), &sealed),
            Err(SecretsError::Unopenable)
        ));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(open(&key, &id, &bad).is_err());
        assert!(matches!(
            open(&key, &id, &[9]),
            Err(SecretsError::Malformed)
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("cc-key-{}", SessionId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let k1 = SealKey::load_or_create(&dir).unwrap();
        let k2 = SealKey::load_or_create(&dir).unwrap();
        assert_eq!(k1.0, k2.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
