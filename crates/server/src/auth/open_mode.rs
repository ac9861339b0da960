//! Who may use open mode: only this machine's own clients.
//!
//! In open mode (no token configured, a loopback listener) a request
//! without credentials acts as the administrator. Listening on loopback
//! does not make that safe by itself: a web page the user visits can make
//! the browser send requests to `127.0.0.1` — under its own name, once a
//! DNS-rebinding answer pointed that name at 127.0.0.1, or cross-origin
//! (the browser sends a simple POST before asking anyone). So open mode
//! serves only requests that
//! - are addressed to loopback: `Host` is `localhost`, an address in
//!   `127.0.0.0/8` or `[::1]`, with any port (a rebinding page's requests
//!   carry the attacker's name);
//! - come from no web page, or from one served by loopback: an `Origin`
//!   header, when present, is `http(s)://` and one of those hosts.
//!
//! WebSocket upgrades pass the same check (browsers always send `Origin`
//! with them). A request that presents a token is not in open mode and is
//! not checked here.

use axum::http::{header, HeaderMap, StatusCode, Uri};

use crate::api::ApiError;

/// Longest part of a refused `Host` or `Origin` quoted in the answer.
const MAX_QUOTED: usize = 100;

/// Refuses a request open mode must not serve (see the module docs):
/// `403 host_not_allowed` or `403 origin_not_allowed`.
pub fn check(headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    if !host.is_some_and(is_loopback_authority) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "without API tokens the server serves only requests addressed to localhost, \
                 127.0.0.1 or [::1], not Host {}; create an API token to reach it by another name",
                quoted(host.unwrap_or(""))
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !is_loopback_origin(origin) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!(
                    "without API tokens the server refuses requests from web pages of other \
                     origins ({}); only pages served from localhost, 127.0.0.1 or [::1] may call it",
                    quoted(origin)
                ),
            ));
        }
    }
    Ok(())
}

/// `localhost`, an address in `127.0.0.0/8` or `[::1]`, with an optional
/// port.
pub fn is_loopback_authority(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.find(']') {
            Some(end) => authority.split_at(end + 2),
            None => return false,
        },
        None => match authority.find(':') {
            Some(i) => authority.split_at(i),
            None => (authority, ""),
        },
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    let host = host.to_ascii_lowercase();
    let host_ok = match host.as_str() {
        "localhost" | "localhost." | "[::1]" => true,
        h => h
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback()),
    };
    port_ok && host_ok
}

/// `http://` or `https://` followed by a loopback authority, and nothing
/// else (an `Origin` has no path).
pub fn is_loopback_origin(origin: &str) -> bool {
    let lower = origin.to_ascii_lowercase();
    lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .is_some_and(is_loopback_authority)
}

/// A header value as the answer quotes it: escaped, and cut short.
fn quoted(value: &str) -> String {
    let cut: String = value.chars().take(MAX_QUOTED).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_with_any_port_are_accepted() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "127.0.0.1:",
            "127.0.0.1:80x",
            "127.0.0.1:8080:1",
            "[::1",
            "[::2]:80",
            "[::ffff:127.0.0.1]",
            "0.0.0.0:8080",
            "10.0.0.1",
            "::1",
            "localhost:8080/x",
        ] {
            assert!(!is_loopback_authority(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_loopback_web_origins_are_accepted() {
        for ok in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "null",
            "",
            "http://evil.example",
            "http://localhost.evil.example",
            "file://",
            "ws://localhost",
            "http://localhost/x",
            "http://127.0.0.1@evil.example",
        ] {
            assert!(!is_loopback_origin(bad), "{bad:?}");
        }
    }
}
