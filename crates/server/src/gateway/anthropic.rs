//! The Anthropic API relay: authenticates the session token, forwards the
//! request to the configured upstream with the user's real key, and
//! streams the answer back (SSE included).

use super::{is_hop_header, presented_token, refuse, relay_response, GatewayState};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Response, StatusCode};
use cc_core::{Runtime, SessionId, Store};
use futures_util::TryStreamExt;

pub(super) async fn relay<R: Runtime, S: Store>(
    State(st): State<GatewayState<R, S>>,
    Path((session, rest)): Path<(String, String)>,
    req: Request,
) -> Response<Body> {
    let Some(session) = SessionId::parse(&session) else {
        return refuse(StatusCode::UNAUTHORIZED, "unknown session");
    };
    let Some(creds) = presented_token(req.headers())
        .and_then(|t| st.manager.credentials().authenticate(&session, t))
    else {
        return refuse(StatusCode::UNAUTHORIZED, "invalid session token");
    };
    if !rest.starts_with("v1/") {
        return refuse(StatusCode::NOT_FOUND, "only the /v1 API is relayed");
    }
    let mut url = format!(
        "{}/{rest}",
        st.config.anthropic_upstream.trim_end_matches('/')
    );
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let method = req.method().clone();
    let mut upstream = st.client.request(method, &url);
    for (k, v) in req.headers() {
        if !is_hop_header(k) && k != "x-api-key" && k != "authorization" {
            upstream = upstream.header(k, v);
        }
    }
    upstream = upstream.header("x-api-key", &creds.claude_api_key);
    let body = reqwest::Body::wrap_stream(
        req.into_body()
            .into_data_stream()
            .map_err(std::io::Error::other),
    );
    match upstream.body(body).send().await {
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
