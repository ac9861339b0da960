//! The Anthropic API relay: authenticates the session token, forwards the
//! request to the configured upstream with the user's real key, and
//! streams the answer back (SSE included).

use super::{
    authenticate, is_hop_header, refuse, relay_response, with_streamed_body, GatewayState,
};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Response, StatusCode};
use cc_core::{Runtime, Store};

pub(super) async fn relay<R: Runtime, S: Store>(
    State(st): State<GatewayState<R, S>>,
    Path((session, rest)): Path<(String, String)>,
    req: Request,
) -> Response<Body> {
    let (session, creds) = match authenticate(&st, &session, req.headers()) {
        Ok(found) => found,
        Err(refusal) => return refusal,
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
    match with_streamed_body(upstream, req).send().await {
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
