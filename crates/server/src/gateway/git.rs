//! The git relay: smart-HTTP clone and fetch of the session's own
//! repository. The container only knows the relay URL; the relay checks the
//! session token and forwards to the repository the session was created
//! for, adding the session's repository token (`repoToken`) when it has
//! one. Pushes are refused until the push policy exists.

use super::{authenticate, refuse, relay_response, streamed_body, GatewayState};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, Response, StatusCode};
use cc_core::{Runtime, Store};

/// Request headers git's smart protocol needs upstream.
const FORWARDED: &[&str] = &[
    "accept",
    "accept-encoding",
    "content-type",
    "content-encoding",
    "git-protocol",
    "user-agent",
];

pub(super) async fn relay<R: Runtime, S: Store>(
    State(st): State<GatewayState<R, S>>,
    Path((session, rest)): Path<(String, String)>,
    req: Request,
) -> Response<Body> {
    let (session, creds) = match authenticate(&st, &session, req.headers()) {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let query = req.uri().query().unwrap_or("");
    let allowed = match (req.method(), rest.as_str()) {
        (&Method::GET, "info/refs") => query == "service=git-upload-pack",
        (&Method::POST, "git-upload-pack") => true,
        _ => false,
    };
    if !allowed {
        return refuse(
            StatusCode::FORBIDDEN,
            "only clone and fetch of the session's repository are relayed",
        );
    }
    let mut url = format!("{}/{rest}", creds.repo_url);
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    let mut upstream = st.client.request(req.method().clone(), &url);
    for name in FORWARDED {
        if let Some(v) = req.headers().get(*name) {
            upstream = upstream.header(*name, v);
        }
    }
    if let Some(token) = &creds.repo_token {
        // GitHub and GitLab both take a token as the password of any user.
        upstream = upstream.basic_auth("x-access-token", Some(token));
    }
    let body = streamed_body(req);
    match upstream.body(body).send().await {
        Ok(resp) => relay_response(resp),
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "git upstream unreachable");
            refuse(
                StatusCode::BAD_GATEWAY,
                "the repository's git server is unreachable",
            )
        }
    }
}
