//! The session WebSocket, in the seed's `{type, data}` envelope.
//!
//! Without `since`, a connection starts now: one `status` message with the
//! session's current state (its `seq` the session's last), then live events
//! only — a client that knows only the seed's protocol must not read old
//! events as new. With `?since=N`, every event after `N` (`0`: the whole
//! log), then live ones, each exactly once. `command`, `interrupt`,
//! `permissionResponse` and `keepalive` in.
//!
//! A client message (or frame) is at most [`MAX_CLIENT_MESSAGE`], as a REST
//! body; a user holds at most `AccessConfig::max_streams_per_user`
//! WebSockets at once (`429 too_many_streams` before the upgrade).

use super::AppState;
use crate::auth::{ClientIp, ServerStore};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use cc_core::Principal;
use cc_core::{now_ms, Runtime};
use cc_wire::api::{ClientMessage, ServerMessage};
use serde::Deserialize;

/// Largest message (and frame) a client may send: a command is as large as
/// over REST (whose body limit is the same), far below tungstenite's
/// default of 64 MiB, which one client could make the server buffer per
/// connection.
pub const MAX_CLIENT_MESSAGE: usize = 1 << 20;

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    since: Option<u64>,
}

pub(super) async fn upgrade<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, super::ApiError> {
    let Query(q) = query?;
    // Fail before upgrading so an unknown (or another user's) session is a
    // plain 404.
    let rec = super::sessions::owned(&st, &p, &id).await?;
    // The record's state and cursor are written in one transaction, so the
    // state is the one the log stands at after `last_seq`.
    let (since, first) = match q.since {
        Some(since) => (since, None),
        None => (
            rec.last_seq,
            Some(ServerMessage::Status {
                seq: rec.last_seq,
                state: rec.state,
                timestamp: now_ms(),
                reason: rec.reason.clone(),
            }),
        ),
    };
    let Some(permit) = st.access.open_stream(&p.user) else {
        return Err(super::ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "this user already holds {} session streams open, the most allowed; close one first",
                st.access.config.max_streams_per_user
            ),
        ));
    };
    let sub = st.manager.subscribe(&id, since).await?;
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            run(socket, st, id, first, sub, (p, ip)).await;
            drop(permit);
        }))
}

async fn run<R: Runtime, S: ServerStore>(
    mut socket: WebSocket,
    st: AppState<R, S>,
    id: String,
    first: Option<ServerMessage>,
    mut sub: cc_core::Subscription<S>,
    who: (Principal, ClientIp),
) {
    if let Some(msg) = first {
        if send(&mut socket, &msg).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            event = sub.next() => match event {
                Ok(Some(msg)) => {
                    if send(&mut socket, &msg).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "reading events");
                    let _ = send(&mut socket, &error_msg("internal", "reading the session's events failed".into())).await;
                    break;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = handle(&st, &who, &id, text.as_str()).await {
                        if send(&mut socket, &reply).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {} // pings are answered by axum; binary is ignored
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// Handles one client message; the reply, if any, is not logged.
async fn handle<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    (p, ip): &(Principal, ClientIp),
    id: &str,
    text: &str,
) -> Option<ServerMessage> {
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return Some(error_msg(
                "invalid_message",
                format!("expected {{\"type\":\"command\",\"data\":{{\"command\":\"…\"}}}}, {{\"type\":\"permissionResponse\",\"data\":{{\"requestId\":\"…\",\"allow\":true}}}}, {{\"type\":\"interrupt\"}} or {{\"type\":\"keepalive\"}}: {e}"),
            ))
        }
    };
    let result = match msg {
        ClientMessage::Keepalive => {
            // A client that keeps the stream alive is using the session.
            st.manager.touch(id);
            return Some(ServerMessage::Keepalive {
                timestamp: now_ms(),
            });
        }
        ClientMessage::Command(c) => {
            if let Some(answer) = forward(st, p, *ip, id, "command", &c).await {
                return answer;
            }
            // Audited by its length only, as over REST.
            super::sessions::audit_command(st, p, *ip, id, c.command.len(), None).await;
            st.manager
                .command_with(
                    id,
                    c.command,
                    cc_wire::api::TurnOverrides {
                        model: c.model,
                        permission_mode: c.permission_mode,
                    },
                )
                .await
                .map(|_| ())
        }
        ClientMessage::Interrupt => {
            if let Some(answer) = forward(st, p, *ip, id, "interrupt", &serde_json::json!({})).await
            {
                return answer;
            }
            st.manager.interrupt(id).await.map(|_| ())
        }
        ClientMessage::PermissionResponse(r) => {
            let Some(request_id) = r.request_id.clone() else {
                return Some(error_msg(
                    "invalid_message",
                    "a permissionResponse needs data.requestId".into(),
                ));
            };
            if let Err(e) = cc_core::session::permissions::check_request_id(&request_id) {
                let e = super::ApiError::from(e);
                return Some(error_msg(e.code, e.message));
            }
            let verb = format!("permissions/{request_id}");
            if let Some(answer) = forward(st, p, *ip, id, &verb, &r).await {
                return answer;
            }
            super::sessions::answer_and_audit(st, p, *ip, id, &request_id, &r)
                .await
                .map(|_| ())
        }
    };
    result.err().map(|e| {
        let e = super::ApiError::from(e);
        error_msg(e.code, e.message)
    })
}

/// A command or interrupt for a session another replica runs, sent there
/// as the REST call it stands for (see `crate::cluster`); `None` when the
/// session runs here. The answer is what the socket replies: nothing when
/// the owner accepted it, else its `{code, message}` as an `error`.
async fn forward<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    p: &Principal,
    ip: ClientIp,
    id: &str,
    verb: &str,
    body: &impl serde::Serialize,
) -> Option<Option<ServerMessage>> {
    let peers = st.config.peers.as_ref()?;
    let who = crate::cluster::Forwarded {
        principal: p.clone(),
        ip: ip.0,
    };
    let json = axum::http::HeaderValue::from_static("application/json");
    let answer = peers
        .to_owner(
            &st.manager,
            id,
            &who,
            axum::http::Method::POST,
            &format!("/api/v1/sessions/{id}/{verb}"),
            Some(&json),
            serde_json::to_vec(body).unwrap_or_default().into(),
        )
        .await?;
    if answer.status().is_success() {
        return Some(None);
    }
    let bytes = axum::body::to_bytes(answer.into_body(), super::MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Some(Some(error_msg(
        err["code"].as_str().unwrap_or("internal"),
        err["message"]
            .as_str()
            .unwrap_or("the session's replica refused the request")
            .to_owned(),
    )))
}

fn error_msg(code: &str, message: String) -> ServerMessage {
    ServerMessage::Error {
        seq: 0,
        message,
        timestamp: now_ms(),
        code: Some(code.to_owned()),
    }
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(msg).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}
