//! The egress proxy: HTTP `CONNECT` tunnels from a session to the hosts the
//! admin allowlisted (`--egress-allow`), for package registries and the
//! like. Sessions authenticate with `Proxy-Authorization: Basic
//! <session id>:<session token>` (their `HTTPS_PROXY` URL carries it).
//! What a session may open depends on its egress mode: `none` nothing,
//! `allowlist` the admin's hosts, `open` any host. Targets that resolve to
//! a non-public address (a special-purpose range or one of this host's own
//! addresses, [`cc_core::addresses`]) are refused unless the allowlist
//! names that exact `host:port`, whatever the mode. The name is resolved
//! once: the tunnel connects to exactly the addresses that were checked.

use super::{refuse, GatewayState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, Response, StatusCode};
use base64::Engine;
use cc_core::addresses::{resolve_checked, AddressRefusal};
use cc_core::policy::{egress_allowed, egress_names_exactly};
use cc_core::{Runtime, SessionId, Store};
use cc_wire::api::EgressMode;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Connecting to an allowed upstream; tunnels themselves are not bounded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `CONNECT` requests; anything else that reached no route is a 404.
pub(super) async fn connect_or_not_found<R: Runtime, S: Store>(
    State(st): State<GatewayState<R, S>>,
    req: Request,
) -> Response<Body> {
    if req.method() != Method::CONNECT {
        return refuse(StatusCode::NOT_FOUND, "not a gateway route");
    }
    let login = proxy_login(&req);
    let creds = match login {
        Some((session, token)) => st.manager.session_credentials(&session, &token).await,
        None => None,
    };
    let Some(creds) = creds else {
        let mut resp = refuse(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "proxy authentication required",
        );
        resp.headers_mut().insert(
            "proxy-authenticate",
            axum::http::HeaderValue::from_static("Basic realm=\"claudecluster\""),
        );
        return resp;
    };
    let Some((host, port)) = req
        .uri()
        .authority()
        .map(|a| (a.host().to_owned(), a.port_u16().unwrap_or(443)))
    else {
        return refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let session = creds.session_id.clone();
    let allow = &st.manager.config().egress_allow;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let permitted = match creds.egress {
        EgressMode::None => false,
        EgressMode::Allowlist => egress_allowed(&host, port, allow),
        EgressMode::Open => true,
    };
    if !permitted {
        tracing::info!(%session, %host, port, mode = creds.egress.as_str(), "egress denied");
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "egress to {host}:{port} is not allowed for this session (egress {})",
                creds.egress.as_str()
            ),
        );
    }
    // Resolved once and checked; the tunnel goes to exactly these addresses.
    let exact = egress_names_exactly(&host, port, allow);
    let addrs = match resolve_checked(&host, port, exact).await {
        Ok(addrs) => addrs,
        Err(AddressRefusal::Unresolvable { .. }) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("{host} cannot be resolved"),
            )
        }
        Err(refusal) => {
            tracing::info!(%session, %host, port, %refusal, "egress denied: non-public address");
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("{refusal}; only an exact host:port allowlist entry permits that"),
            );
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addrs[..])).await
    {
        Ok(Ok(s)) => s,
        _ => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("{host}:{port} is unreachable"),
            )
        }
    };
    tracing::info!(%session, %host, port, "egress tunnel opened");
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::warn!(%session, error = %e, "egress tunnel upgrade failed"),
        }
    });
    Response::new(Body::empty())
}

/// The session and token of a `Proxy-Authorization: Basic` header.
fn proxy_login(req: &Request) -> Option<(SessionId, String)> {
    let value = req.headers().get("proxy-authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, token) = decoded.split_once(':')?;
    Some((SessionId::parse(user)?, token.to_owned()))
}
