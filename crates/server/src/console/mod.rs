//! The web console: one page and its script and style sheet, built into
//! the binary and served at `/` on the API's own origin, outside the API's
//! authentication (the page holds no data; every call it makes carries the
//! user's token, which the browser keeps in `sessionStorage`).
//!
//! Invariants:
//! - every answer carries [`CONTENT_SECURITY_POLICY`] (no `unsafe-inline`:
//!   the page has no inline script, style or event handler, and the script
//!   renders what the API returns as text, never as HTML), `nosniff`, no
//!   referrer and no framing;
//! - only the fixed paths below are served; anything else under `/api/`
//!   still gets the API's JSON `404`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's policy: its own script and style only, API calls and the
/// session WebSockets to its own origin (`ws:`/`wss:` because CSP Level 2
/// browsers do not let `'self'` cover WebSocket schemes), no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Routes of the console; merged beside the API's.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Small and built in: revalidating costs little, and a stale script
    // after an upgrade would talk to a changed API.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    /// The page loads its script and style from files, never inline.
    #[test]
    fn the_page_has_no_inline_script_style_or_handler() {
        let page = super::INDEX_HTML.to_ascii_lowercase();
        assert!(!page.contains("<style"));
        assert!(!page.contains("style="));
        let handler = page
            .split(|c: char| c.is_whitespace() || c == '<')
            .any(|w| w.starts_with("on") && w.contains('='));
        assert!(!handler, "no inline event handler");
        for script in page.split("<script").skip(1) {
            assert!(script.trim_start().starts_with("src="), "{script}");
        }
        assert!(!super::APP_JS.contains("innerHTML"));
        assert!(!super::APP_JS.contains("insertAdjacentHTML"));
        assert!(!super::APP_JS.contains("eval("));
    }
}
