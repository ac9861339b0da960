//! The live check of a Claude API key at create (`serve --check-api-key`).
//!
//! One `POST {upstream}/v1/messages/count_tokens` with the key: the call is
//! free and cheap, and the upstream authenticates it like a real turn. Only
//! an explicit refusal (401/403) refuses the key. Anything else — success,
//! a rate limit, a 5xx, a 404 from a proxy in front, a timeout, a network
//! error — accepts it with a warning: a flaky or unreachable upstream must
//! not block sessions from being created; a bad key then shows in the turn.
//!
//! The key goes only into the request's `x-api-key` header (marked
//! sensitive); it is never logged, nor echoed in an error.

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use std::sync::OnceLock;
use std::time::Duration;

/// The whole check (connect, send, answer) is bounded by this.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The API version the check speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The smallest request count_tokens accepts.
const CHECK_BODY: &str =
    r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"ping"}]}"#;

/// What the upstream made of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted, or the upstream could not say (see the module docs).
    Accepted,
    /// The upstream refused the key with this status (401 or 403).
    Refused(u16),
}

/// Only an authentication or permission refusal condemns the key.
pub fn classify(status: u16) -> Verdict {
    match status {
        401 | 403 => Verdict::Refused(status),
        _ => Verdict::Accepted,
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(CHECK_TIMEOUT)
            // A redirect could carry the key somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// Asks `upstream` (the Anthropic API base URL the gateway relays to)
/// whether it accepts `key`.
///
/// A key that is not even well-formed (empty, whitespace or control
/// characters) is not sent: the core's shape check refuses it with a
/// clearer message.
pub async fn check_api_key(upstream: &str, key: &str) -> Verdict {
    if key.trim().is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Verdict::Accepted;
    }
    let Ok(mut key_header) = HeaderValue::from_str(key) else {
        return Verdict::Accepted;
    };
    key_header.set_sensitive(true);
    let url = format!(
        "{}/v1/messages/count_tokens",
        upstream.trim_end_matches('/')
    );
    let sent = client()
        .post(&url)
        .header("x-api-key", key_header)
        .header("anthropic-version", ANTHROPIC_VERSION)
        .header(CONTENT_TYPE, "application/json")
        .body(CHECK_BODY)
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let verdict = classify(status);
            if verdict == Verdict::Accepted && !resp.status().is_success() {
                // Not a verdict on the key: let the session start.
                tracing::warn!(
                    %url,
                    status,
                    "API key check inconclusive; accepting the key"
                );
            }
            verdict
        }
        Err(e) => {
            // reqwest's error names the URL, never the headers.
            tracing::warn!(
                %url,
                error = %e,
                "API key check could not reach the upstream; accepting the key"
            );
            Verdict::Accepted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_auth_refusals_refuse() {
        assert_eq!(classify(401), Verdict::Refused(401));
        assert_eq!(classify(403), Verdict::Refused(403));
        for status in [200, 400, 404, 429, 500, 502, 529] {
            assert_eq!(classify(status), Verdict::Accepted, "{status}");
        }
    }

    #[tokio::test]
    async fn unreachable_upstream_accepts() {
        // A loopback port just freed: the connection is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let verdict = check_api_key(&format!("http://{addr}"), "sk-ant-anything").await;
        assert_eq!(verdict, Verdict::Accepted);
    }

    #[tokio::test]
    async fn malformed_key_is_left_to_the_shape_check() {
        // Not sent at all: the unroutable upstream (TEST-NET-1) would
        // otherwise hold the check until its timeout.
        for key in ["two words", "  ", "tab\there"] {
            let check = check_api_key("http://192.0.2.1", key);
            let verdict = tokio::time::timeout(Duration::from_secs(2), check)
                .await
                .expect("a malformed key must not be sent");
            assert_eq!(verdict, Verdict::Accepted);
        }
    }
}
