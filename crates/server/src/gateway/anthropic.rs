//! The Anthropic API relay: authenticates the session token, forwards what
//! Claude Code calls to the configured upstream with the user's real key,
//! and streams the answer back (SSE included).
//!
//! Invariants:
//! - Only [`RELAYED`] is forwarded: Claude Code's model calls and token
//!   counts (all it calls with non-essential traffic off, and all the model
//!   double serves). The path is matched as the client sent it, after
//!   refusing percent-encoded separators and dots and dot segments, so no
//!   spelling of a path reaches another upstream endpoint.
//! - Before the upstream sees a request, its body's `model` passes the
//!   admin's model policy (`--allowed-models`) and neither the session nor
//!   its owner has spent their budget (the checks a turn passes).
//! - Bodies are read whole to find the model (within [`MAX_BODY_BYTES`],
//!   and [`MAX_BODIES_IN_FLIGHT`] for all sessions together) and leave with
//!   their length.
//! - Every refusal is in the Anthropic API's error shape, which Claude Code
//!   shows, and counts as a deny in the gateway's metrics.
//! - Every successful `/v1/messages` answer is metered as it passes
//!   ([`super::meter`]): its usage, priced with the admin's price table, is
//!   the session's spend. The upstream is asked for an uncompressed answer
//!   (`accept-encoding` is not forwarded) so the gateway can read it.

use super::meter::{metered, Meter};
use super::push::Reservation;
use super::{
    authenticate, is_hop_header, read_whole, refuse, relay_response, response_head, BodyError,
    GatewayState,
};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, Response, StatusCode};
use cc_core::{CoreError, Runtime, Store};

/// What the relay forwards: method and path below the session's base URL.
pub(super) const RELAYED: &[(Method, &str)] = &[
    (Method::POST, "v1/messages"),
    (Method::POST, "v1/messages/count_tokens"),
];

/// Largest request body relayed: the Messages API's own limit (32 MB).
pub(super) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Memory for request bodies being read, all sessions together; a request
/// that would go beyond is answered 529, overloaded (Claude Code retries).
pub(super) const MAX_BODIES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// What the relay reads of a body: the model it names.
#[derive(serde::Deserialize)]
struct ModelOnly {
    model: Option<String>,
}

pub(super) async fn relay<R: Runtime, S: Store>(
    State(st): State<GatewayState<R, S>>,
    Path((session, _)): Path<(String, String)>,
    req: Request,
) -> Response<Body> {
    let (session, creds) = match authenticate(&st, &session, req.headers()).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    // The path as sent: the extracted one is already percent-decoded.
    let rest = raw_rest(req.uri().path());
    if let Err(reason) = check_path(rest) {
        return deny(StatusCode::BAD_REQUEST, reason);
    }
    if !RELAYED.iter().any(|(m, p)| m == req.method() && *p == rest) {
        let relayed: Vec<String> = RELAYED.iter().map(|(m, p)| format!("{m} /{p}")).collect();
        return deny(
            StatusCode::NOT_FOUND,
            &format!(
                "the gateway relays only {}; not {} /{}",
                relayed.join(" and "),
                req.method(),
                rest.chars().take(200).collect::<String>()
            ),
        );
    }
    match st.manager.check_budget(&session).await {
        Ok(()) => {}
        Err(CoreError::Forbidden { message, .. }) => {
            tracing::info!(session = %session, "model call refused: budget spent");
            return deny(StatusCode::FORBIDDEN, &message);
        }
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "checking the session's budget");
            return deny(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway could not check the session's budget",
            );
        }
    }
    let mut url = format!(
        "{}/{rest}",
        st.config.anthropic_upstream.trim_end_matches('/')
    );
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let mut upstream = st.client.request(req.method().clone(), &url);
    for (k, v) in req.headers() {
        if !is_hop_header(k) && k != "x-api-key" && k != "authorization" && k != "accept-encoding" {
            upstream = upstream.header(k, v);
        }
    }
    // Model calls cost; token counts do not.
    let metering = rest == "v1/messages";
    let mut held = st.body_budget.reserve();
    let body = match read_body(req, &mut held).await {
        Ok(body) => body,
        Err((status, reason)) => return deny(status, &reason),
    };
    let model = match serde_json::from_slice::<ModelOnly>(&body) {
        Ok(ModelOnly { model: Some(m) }) => m,
        Ok(ModelOnly { model: None }) => {
            return deny(StatusCode::BAD_REQUEST, "model: the request names no model")
        }
        Err(_) => {
            return deny(
                StatusCode::BAD_REQUEST,
                "the request body is not a JSON object with a model",
            )
        }
    };
    let policy = &st.manager.config().agent;
    if !policy.allows_model(&model) {
        tracing::info!(session = %session, "model call refused: model not allowed");
        return deny(
            StatusCode::FORBIDDEN,
            &format!(
                "model {:?} is not allowed by the administrator; allowed: {}",
                model.chars().take(200).collect::<String>(),
                policy.allowed_models.join(", ")
            ),
        );
    }
    upstream = upstream.header("x-api-key", &creds.claude_api_key);
    // A body in memory leaves with its length.
    let answer = upstream.body(body).send().await;
    drop(held);
    match answer {
        Ok(resp) if metering && resp.status().is_success() => {
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let meter = Meter::new(&content_type, &model, st.manager.config().prices.clone());
            let head = response_head(&resp);
            let body = metered(
                resp.bytes_stream(),
                meter,
                st.manager.clone(),
                st.config.peers.clone(),
                session,
            );
            head.body(Body::from_stream(body))
                .unwrap_or_else(|_| refuse(StatusCode::BAD_GATEWAY, "bad upstream response"))
        }
        Ok(resp) => relay_response(resp),
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "anthropic upstream unreachable");
            refuse(
                StatusCode::BAD_GATEWAY,
                "the Anthropic API is unreachable from the gateway",
            )
        }
    }
}

/// The path below `/anthropic/{session}/`, as sent.
fn raw_rest(path: &str) -> &str {
    path.strip_prefix("/anthropic/")
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest)
}

/// Refuses paths that could be read as another one: percent-encoded
/// separators or dots (`%2F`, `%5C`, `%2E`), backslashes, and `.` or `..`
/// segments.
fn check_path(rest: &str) -> Result<(), &'static str> {
    let lower = rest.to_ascii_lowercase();
    if ["%2f", "%5c", "%2e"].iter().any(|e| lower.contains(e)) {
        return Err("percent-encoded separators and dots (%2F, %5C, %2E) are not accepted");
    }
    if rest.contains('\\') || rest.split('/').any(|s| s == "." || s == "..") {
        return Err("dot segments and backslashes are not accepted in the path");
    }
    Ok(())
}

/// The whole request body, within [`MAX_BODY_BYTES`] and the gateway's
/// memory for bodies in flight; else the status and reason to refuse it.
async fn read_body(
    req: Request,
    held: &mut Reservation,
) -> Result<bytes::Bytes, (StatusCode, String)> {
    read_whole(req, held, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::Compressed => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed request bodies are not relayed".to_owned(),
            ),
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a request is limited to {} MiB", MAX_BODY_BYTES >> 20),
            ),
            BodyError::Busy => (
                overloaded(),
                "the gateway is taking in other large requests; try again in a moment".to_owned(),
            ),
            BodyError::Broken(e) => (
                StatusCode::BAD_REQUEST,
                format!("the request broke off: {e}"),
            ),
        })
}

/// The Anthropic API's "overloaded" status (529), which Claude Code
/// retries.
fn overloaded() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// A refusal, counted as a deny whatever its status.
fn deny(status: StatusCode, message: &str) -> Response<Body> {
    let mut resp = refuse(status, message);
    resp.extensions_mut().insert(crate::metrics::Refused);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_mean_another_are_refused() {
        for ok in ["v1/messages", "v1/messages/count_tokens", "v1/files"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "v1/..%2Ffoo",
            "v1/messages%2f..%2fx",
            "v1/%2E%2E/files",
            "v1/messages%5C",
            "v1/../files",
            "v1/./messages",
            "v1\\messages",
            "..",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert_eq!(raw_rest("/anthropic/s/v1/messages"), "v1/messages");
        assert_eq!(raw_rest("/anthropic/s/v1/%2e%2e/x"), "v1/%2e%2e/x");
        assert_eq!(raw_rest("/anthropic/s"), "");
    }
}
