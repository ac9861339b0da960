//! Anthropic-style error responses.
//!
//! This module owns the mapping from HTTP status to the API's error `type`
//! and the `{"type":"error","error":{...}}` body.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The Anthropic error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error response with Anthropic's JSON body (429 also gets `retry-after: 1`).
pub fn error_response(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Json(json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
    }));
    if status == 429 {
        (code, [(header::RETRY_AFTER, "1")], body).into_response()
    } else {
        (code, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_statuses() {
        assert_eq!(error_type(401), "authentication_error");
        assert_eq!(error_type(529), "overloaded_error");
        assert_eq!(error_type(503), "api_error");
        let resp = error_response(429, "x");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(error_response(529, "x").status().as_u16(), 529);
    }
}
