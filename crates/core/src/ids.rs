//! Typed identifiers and secrets.

use std::fmt;

/// A session's identifier: 24 lowercase hex characters (96 random bits).
/// Safe to embed in Docker resource names, URLs and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    const HEX_LEN: usize = 24;

    pub fn generate() -> Self {
        Self(random_hex(Self::HEX_LEN / 2))
    }

    /// Accepts only well-formed IDs, so a path segment from a request can
    /// never smuggle anything into a resource name or a query.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == Self::HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bearer secret (256 random bits). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        Self(random_hex(32))
    }

    pub fn from_string(s: String) -> Self {
        Self(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS RNG failing is not something a server can carry on from.
    getrandom::fill(&mut buf).expect("operating system random number generator failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison for secrets presented by clients.
pub fn secret_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(SessionId::parse("../etc"), None);
        assert_eq!(SessionId::parse(&id.as_str().to_uppercase()), None);
        assert_ne!(SessionId::generate(), SessionId::generate());
    }

    #[test]
    fn tokens_do_not_leak_through_debug() {
        let t = Token::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
        assert_eq!(t.expose().len(), 64);
    }

    #[test]
    fn secret_eq_compares() {
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abc", "abd"));
        assert!(!secret_eq("abc", "abcd"));
    }
}
