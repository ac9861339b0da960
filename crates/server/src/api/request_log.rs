//! One structured log line per API request, and a request ID on every
//! response (`x-request-id`, the client's own when it sent a sane one).
//! Everything logged while the request runs carries `request_id` and, for
//! `/api/v1/sessions/{id}/…`, `session` (the JSON log format prints the
//! span's fields with every event).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client-supplied request ID kept.
const MAX_ID_LEN: usize = 64;

pub async fn middleware(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_ID_LEN
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| cc_core::Token::generate().expose()[..16].to_owned());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let session = session_of(&path).unwrap_or_default().to_owned();
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        request_id = %id,
        %method,
        %path,
        session = %session
    );
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            "request"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// The `{id}` of `/api/v1/sessions/{id}` and below.
fn session_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/v1/sessions/")?;
    let id = rest.split('/').next()?;
    cc_core::SessionId::parse(id).map(|_| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_come_from_session_paths_only() {
        let id = cc_core::SessionId::generate();
        let p = format!("/api/v1/sessions/{id}/command");
        assert_eq!(session_of(&p), Some(id.as_str()));
        assert_eq!(session_of("/api/v1/sessions/create"), None);
        assert_eq!(session_of("/api/v1/sessions"), None);
        assert_eq!(session_of("/healthz"), None);
    }
}
