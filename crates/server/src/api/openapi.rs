//! The OpenAPI 3.1 description of the public API, built here in code next
//! to the router and served at `GET /api/v1/openapi.json`.
//!
//! `docs/openapi.json` is this document checked in; the server's tests fail
//! when the two differ (regenerate with `UPDATE_OPENAPI=1 cargo test -p
//! cc-server --test access openapi`) or when a route in the router source
//! is not documented. Schemas list the fields every response carries and
//! allow additional ones, so additive extensions stay compatible.

use serde_json::{json, Map, Value};

/// Path of the document itself.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body(schema: Value, description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn error(description: &str) -> Value {
    body(r("ApiError"), description)
}

fn nullable(ty: &str) -> Value {
    json!({ "type": [ty, "null"] })
}

fn object(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

/// An operation: summary, parameters, optional JSON request body, and
/// responses (every one also gets the `{code, message}` default).
fn op(summary: &str, params: Value, request: Option<Value>, responses: Value) -> Value {
    let mut o = Map::new();
    o.insert("summary".into(), summary.into());
    if params.as_array().is_some_and(|p| !p.is_empty()) {
        o.insert("parameters".into(), params);
    }
    if let Some(schema) = request {
        o.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": { "schema": schema } } }),
        );
    }
    let mut resp = responses.as_object().cloned().unwrap_or_default();
    resp.insert("default".into(), error("an error: `{code, message}`"));
    o.insert("responses".into(), Value::Object(resp));
    Value::Object(o)
}

fn path_id(what: &str) -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": what, "schema": { "type": "string" } })
}

fn query(name: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema })
}

fn schemas() -> Value {
    let mut all = core_schemas();
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), permission_schemas()) {
        all.extend(more);
    }
    all
}

/// The permission prompts' schemas (apart: one `json!` of everything is
/// beyond the macro's recursion limit).
fn permission_schemas() -> Value {
    json!({
        "PendingPermission": object(&["requestId", "tool", "input", "timestamp"], json!({
            "requestId": { "type": "string" }, "tool": { "type": "string" },
            "input": { "type": "object", "description": "the tool's input, as Claude Code would run it" },
            "timestamp": { "type": "integer", "minimum": 0, "description": "when it was asked, milliseconds since the Unix epoch" }
        })),
        "PermissionResponse": {
            "type": "object", "required": ["allow"], "additionalProperties": false,
            "description": "the answer to a `permissionRequest` (also the WebSocket's `permissionResponse` data, where `requestId` is required)",
            "properties": {
                "requestId": { "type": "string", "description": "if present, the path's" },
                "allow": { "type": "boolean" },
                "message": { "type": "string", "maxLength": 10000, "description": "for a denial: what the model is told" },
                "always": { "type": "boolean", "description": "with `allow`: allow this tool for the rest of the session" }
            }
        },
        "PermissionAnswered": object(&["sessionId", "requestId", "tool", "allow", "always"], json!({
            "sessionId": { "type": "string" }, "requestId": { "type": "string" }, "tool": { "type": "string" },
            "allow": { "type": "boolean" }, "always": { "type": "boolean" }
        }))
    })
}

fn core_schemas() -> Value {
    // Apart from the rest: one `json!` of everything is beyond the macro's
    // recursion limit.
    let message_data = object(
        &["timestamp"],
        json!({
            "seq": { "type": "integer", "minimum": 0, "description": "increases by one per session; 0 for messages that are not logged" },
            "timestamp": { "type": "integer", "minimum": 0, "description": "milliseconds since the Unix epoch" },
            "text": { "type": "string" },
            "state": r("SessionState"),
            "reason": { "type": "string" },
            "message": { "type": "string" },
            "code": { "type": "string" },
            "event": { "type": "object" },
            "requestId": { "type": "string" },
            "tool": { "type": "string" },
            "input": { "type": "object" },
            "allow": { "type": "boolean" },
            "always": { "type": "boolean" },
            "source": { "type": "string", "enum": ["answer", "always", "timeout", "cancelled"] },
            "answeredBy": { "type": "string" }
        }),
    );
    let state = json!({ "type": "string", "enum": ["creating", "starting", "cloning", "ready", "busy", "sleeping", "terminating", "terminated", "error"] });
    let seed = json!({ "type": "string", "enum": ["starting", "ready", "error", "terminated"] });
    let quantity = json!({ "type": ["number", "string"] });
    let fork_request = json!({ "type": "object", "additionalProperties": false, "properties": {
        "count": { "type": "integer", "minimum": 1, "maximum": 10, "description": "how many forks (default 1)" },
        "command": { "type": "string", "description": "a task every fork runs at once" }
    } });
    let fork_response = object(
        &["parentId", "sessions"],
        json!({
            "parentId": { "type": "string" },
            "sessions": { "type": "array", "items": r("CreateSessionResponse") }
        }),
    );
    let mut all = json!({
        "ApiError": object(&["code", "message"], json!({
            "code": { "type": "string" }, "message": { "type": "string" }
        })),
        "SessionState": state,
        "SeedStatus": seed,
        "Endpoints": object(&["websocket", "http"], json!({
            "websocket": { "type": "string", "description": "carries a session token (`?token=`)" },
            "http": { "type": "string" }
        })),
        "SessionLimits": object(&["memoryBytes", "cpu", "timeoutSecs"], json!({
            "memoryBytes": { "type": "integer" }, "cpu": { "type": "number" }, "timeoutSecs": { "type": "integer" },
            "egress": { "type": "string", "enum": ["none", "allowlist", "open"] },
            "idleTimeoutSecs": { "type": "integer", "minimum": 0, "description": "seconds without use after which the session ends; `0`: never; absent for sessions created before it was chosen per session, which follow the server's `--idle-timeout`" }
        })),
        "CreateSessionRequest": {
            "type": "object",
            "required": ["repoUrl", "claudeApiKey"],
            "additionalProperties": false,
            "properties": {
                "repoUrl": { "type": "string" },
                "branch": { "type": "string" },
                "claudeApiKey": { "type": "string" },
                "repoToken": { "type": "string", "description": "Token for a private repository; the git relay presents it upstream, it never enters the container." },
                "config": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "memory": quantity, "cpu": quantity, "timeout": { "type": "integer", "minimum": 0 },
                        "idleTimeout": { "type": "integer", "minimum": 1, "description": "seconds without use after which the session ends; from 60 to the server's `--max-idle-timeout` (default 86400), else `400 invalid_config`; default the server's `--idle-timeout`" },
                        "egress": { "type": "string", "enum": ["none", "allowlist", "open"] }
                    }
                },
                "options": { "type": "object" }
            }
        },
        "CreateSessionResponse": object(&["sessionId", "containerId", "status", "endpoints", "state"], json!({
            "sessionId": { "type": "string" }, "containerId": { "type": "string" },
            "status": r("SeedStatus"), "endpoints": r("Endpoints"), "state": r("SessionState")
        })),
        "SessionStatus": object(&["sessionId", "containerId", "status", "state", "repoUrl", "limits", "createdAt", "updatedAt", "expiresAt", "lastSeq", "endpoints"], json!({
            "sessionId": { "type": "string" }, "containerId": nullable("string"),
            "status": r("SeedStatus"), "state": r("SessionState"), "reason": { "type": "string" },
            "repoUrl": { "type": "string" }, "branch": { "type": "string" }, "limits": r("SessionLimits"),
            "createdAt": { "type": "string" }, "updatedAt": { "type": "string" }, "expiresAt": { "type": "string" },
            "lastSeq": { "type": "integer", "minimum": 0 }, "endpoints": r("Endpoints"),
            "oomKills": { "type": "integer", "minimum": 0, "description": "processes killed for exceeding the session's memory limit" },
            "pendingPermissions": { "type": "array", "items": r("PendingPermission"), "description": "permission questions the running turn waits on: while not empty, the session waits for a person" }
        })),
        "CommandRequest": {
            "type": "object", "required": ["command"], "additionalProperties": false,
            "properties": { "command": { "type": "string" }, "model": { "type": "string" }, "permissionMode": { "type": "string" } }
        },
        "CommandResponse": object(&["sessionId", "accepted", "state"], json!({
            "sessionId": { "type": "string" }, "accepted": { "type": "boolean" }, "state": r("SessionState")
        })),
        "SessionDiff": object(&["baseCommit", "headCommit", "files", "insertions", "deletions", "diff", "patches", "truncated"], json!({
            "baseCommit": { "type": "string" }, "headCommit": { "type": "string" },
            "files": { "type": "array", "items": object(&["path", "insertions", "deletions", "binary"], json!({
                "path": { "type": "string" }, "insertions": { "type": "integer" },
                "deletions": { "type": "integer" }, "binary": { "type": "boolean" }
            })) },
            "insertions": { "type": "integer" }, "deletions": { "type": "integer" },
            "diff": { "type": "string" }, "patches": { "type": "string" }, "truncated": { "type": "boolean" }
        })),
        "PushRequest": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "branch": { "type": "string", "description": "default `claudecluster/<session-id>`; others must be under a prefix the admin allows" },
                "message": { "type": "string", "description": "message of the commit made of uncommitted work" },
                "pullRequest": {
                    "type": "object", "additionalProperties": false,
                    "description": "open a pull (merge) request once pushed; title and body default to the last result",
                    "properties": {
                        "title": { "type": "string" }, "body": { "type": "string" },
                        "base": { "type": "string" }, "draft": { "type": "boolean" }
                    }
                }
            }
        },
        "PushResponse": object(&["sessionId", "branch", "commit", "created", "committedChanges"], json!({
            "sessionId": { "type": "string" }, "branch": { "type": "string" }, "commit": { "type": "string" },
            "created": { "type": "boolean" }, "committedChanges": { "type": "boolean" },
            "pullRequest": object(&["number", "url", "base"], json!({
                "number": { "type": "integer" }, "url": { "type": "string" }, "base": { "type": "string" }
            }))
        })),
        "SessionPath": {
            "description": "A directory of the session's checkout (`type: dir`) or a file (`type: file`).",
            "oneOf": [
                object(&["type", "path", "entries", "truncated"], json!({
                    "type": { "const": "dir" },
                    "path": { "type": "string", "description": "normalised; `\"\"` is the checkout's root" },
                    "entries": { "type": "array", "items": object(&["name", "type", "size"], json!({
                        "name": { "type": "string" },
                        "type": { "type": "string", "enum": ["file", "dir", "symlink", "other"] },
                        "size": { "type": "integer", "minimum": 0, "description": "bytes for a file, else 0" }
                    })) },
                    "truncated": { "type": "boolean" }
                })),
                object(&["type", "path", "size", "encoding", "content", "truncated"], json!({
                    "type": { "const": "file" }, "path": { "type": "string" },
                    "size": { "type": "integer", "minimum": 0, "description": "the file's size on disk" },
                    "encoding": { "type": "string", "enum": ["utf8", "base64"] },
                    "content": { "type": "string", "description": "at most the first 1 MiB" },
                    "truncated": { "type": "boolean" }
                }))
            ]
        },
        "InterruptResponse": object(&["sessionId", "interrupted"], json!({
            "sessionId": { "type": "string" }, "interrupted": { "type": "boolean" }
        })),
        "DeleteResponse": object(&["sessionId", "status", "state"], json!({
            "sessionId": { "type": "string" }, "status": r("SeedStatus"), "state": r("SessionState")
        })),
        "ServerMessage": {
            "description": "A stream message in the seed's envelope `{type, data}`: `output {text, timestamp}`, `status {state}`, `error {message}` and the extensions `claude`, `command`, `turnResult`, `keepalive`, `permissionRequest {requestId, tool, input, timestamp}` (answer it with `permissionResponse` or `POST …/permissions/{requestId}`) and `permissionAnswer {requestId, tool, allow, always, source: answer|always|timeout|cancelled, message?, answeredBy?}`",
            "type": "object", "required": ["type", "data"],
            "properties": {
                "type": { "type": "string", "enum": ["output", "status", "error", "claude", "command", "turnResult", "keepalive", "permissionRequest", "permissionAnswer"] },
                "data": message_data
            }
        },
        "LogsResponse": object(&["sessionId", "events", "nextSince"], json!({
            "sessionId": { "type": "string" },
            "events": { "type": "array", "items": r("ServerMessage") },
            "nextSince": { "type": "integer", "minimum": 0 }
        })),
        "CreateTokenRequest": {
            "type": "object", "required": ["user"], "additionalProperties": false,
            "properties": {
                "user": { "type": "string" },
                "role": { "type": "string", "enum": ["admin", "user"] },
                "label": { "type": "string" }
            }
        },
        "TokenInfo": object(&["id", "user", "role", "label", "createdAt", "revokedAt"], json!({
            "id": { "type": "string" }, "user": { "type": "string" },
            "role": { "type": "string", "enum": ["admin", "user"] },
            "label": nullable("string"), "createdAt": { "type": "string" }, "revokedAt": nullable("string")
        })),
        "CreatedToken": {
            "allOf": [r("TokenInfo"), object(&["token"], json!({ "token": { "type": "string", "description": "shown once" } }))]
        },
        "RevokedToken": object(&["id", "revoked"], json!({ "id": { "type": "string" }, "revoked": { "type": "boolean" } })),
        "AuditRecord": object(&["seq", "time", "actor", "sourceIp", "action", "sessionId", "outcome", "detail", "personalDigest", "prevHash", "hash"], json!({
            "seq": { "type": "integer", "minimum": 1 }, "time": { "type": "string" },
            "actor": { "type": "string" }, "sourceIp": nullable("string"), "action": { "type": "string" },
            "sessionId": nullable("string"), "outcome": { "type": "string" }, "detail": nullable("string"),
            "nonce": { "type": "string" }, "personalDigest": { "type": "string" },
            "prevHash": { "type": "string" }, "hash": { "type": "string" }
        })),
        "AuditPage": object(&["records", "nextSince"], json!({
            "records": { "type": "array", "items": r("AuditRecord") },
            "nextSince": { "type": "integer", "minimum": 0 }
        })),
        "WebhookRequest": {
            "type": "object", "required": ["url"], "additionalProperties": false,
            "properties": {
                "url": { "type": "string", "description": "http(s); no redirect is followed; the address policy of repositories applies" },
                "events": { "type": "array", "items": r("WebhookEventName"), "description": "absent or empty: all" },
                "description": { "type": "string", "maxLength": 200 },
                "allSessions": { "type": "boolean", "description": "every user's sessions (administrators only)" }
            }
        },
        "WebhookEventName": { "type": "string", "enum": ["session.created", "session.ready", "turn.finished", "session.error", "session.terminated", "session.pushed", "pull_request.opened", "session.sleeping", "session.woken", "permission.requested"] },
        "WebhookInfo": object(&["id", "url", "events", "description", "owner", "allSessions", "createdAt"], json!({
            "id": { "type": "string" }, "url": { "type": "string" },
            "events": { "type": "array", "items": r("WebhookEventName") },
            "description": nullable("string"), "owner": { "type": "string" },
            "allSessions": { "type": "boolean" }, "createdAt": { "type": "string" }
        })),
        "CreatedWebhook": {
            "allOf": [r("WebhookInfo"), object(&["secret"], json!({ "secret": { "type": "string", "description": "`whsec_…`, the deliveries' HMAC-SHA256 key; shown once" } }))]
        },
        "DeletedWebhook": object(&["id", "deleted"], json!({ "id": { "type": "string" }, "deleted": { "type": "boolean" } })),
        "WebhookDelivery": object(&["id", "event", "sessionId", "state", "attempts", "lastStatus", "lastError", "createdAt", "nextAttemptAt", "finishedAt"], json!({
            "id": { "type": "string" }, "event": r("WebhookEventName"), "sessionId": { "type": "string" },
            "state": { "type": "string", "enum": ["pending", "delivered", "failed"] },
            "attempts": { "type": "integer", "minimum": 0 }, "lastStatus": nullable("integer"),
            "lastError": nullable("string"), "createdAt": { "type": "string" },
            "nextAttemptAt": nullable("string"), "finishedAt": nullable("string")
        }))
    });
    // Beside the literal: one macro this long reaches the recursion limit.
    all["ForkRequest"] = fork_request;
    all["ForkResponse"] = fork_response;
    all
}

/// The document.
pub fn document() -> Value {
    let sid = || path_id("the session's ID");
    let count = || json!({ "type": "integer", "minimum": 0 });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ClaudeCluster API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Isolated, ephemeral Claude Code sessions, one container each. Every error is `{code, message}`. Authenticate with `Authorization: Bearer <API token>`; a session's `endpoints` carry a session token (`?token=`) that opens that session only until it expires."
        },
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        },
        "paths": {
            "/api/v1/sessions": { "get": op("Sessions you may see, newest first (live ones unless `all`)",
                json!([query("all", json!({ "type": "boolean" }))]), None,
                json!({ "200": body(json!({ "type": "array", "items": r("SessionStatus") }), "the sessions") })) },
            "/api/v1/sessions/create": { "post": op("Create a session and start its container",
                json!([{ "name": "Idempotency-Key", "in": "header", "required": false,
                    "description": "retries with the same key and body within 24 hours answer with the first request's session (`Idempotent-Replayed: true`); another body under the key is `422 idempotency_key_reused`; concurrent requests with one key create one session",
                    "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$" } }]),
                Some(r("CreateSessionRequest")),
                json!({ "201": {
                    "description": "created (cloning continues in the background), or the session an earlier request with this Idempotency-Key created",
                    "headers": { "Idempotent-Replayed": { "description": "`true` when the session is an earlier request's", "schema": { "type": "string", "enum": ["true"] } } },
                    "content": { "application/json": { "schema": r("CreateSessionResponse") } }
                } })) },
            "/api/v1/sessions/{id}": {
                "get": op("A session's status", json!([sid()]), None, json!({ "200": body(r("SessionStatus"), "the session") })),
                "delete": op("End a session and remove its container", json!([sid()]), None, json!({ "200": body(r("DeleteResponse"), "ended") }))
            },
            "/api/v1/sessions/{id}/status": { "get": op("A session's status", json!([sid()]), None,
                json!({ "200": body(r("SessionStatus"), "the session") })) },
            "/api/v1/sessions/{id}/command": { "post": op("Hand one turn to Claude Code", json!([sid()]),
                Some(r("CommandRequest")), json!({ "202": body(r("CommandResponse"), "accepted") })) },
            "/api/v1/sessions/{id}/interrupt": { "post": op("Stop the running turn", json!([sid()]), None,
                json!({ "202": body(r("InterruptResponse"), "done") })) },
            "/api/v1/sessions/{id}/fork": { "post": op("Fork a ready or sleeping session: new sessions, each from a copy of its workspace (uncommitted work included) and Claude Code's conversation, with its own container, token and branch; the session itself is untouched",
                json!([sid()]), Some(r("ForkRequest")),
                json!({
                    "201": body(r("ForkResponse"), "the forks, starting"),
                    "400": error("`invalid_fork_count`: count is not 1 to 10"),
                    "409": error("`session_busy` during a turn, `session_not_ready`, `session_not_active`, `too_many_sessions`, `fork_unavailable` where sessions cannot be forked")
                })) },
            "/api/v1/sessions/{id}/sleep": { "post": op("Put a ready session to sleep: its container goes, its checkout and Claude Code's conversation stay; any later use wakes it",
                json!([sid()]), None,
                json!({
                    "200": body(r("SessionStatus"), "asleep (or already)"),
                    "409": error("`session_busy` during a turn, `session_not_ready` while it starts, `session_not_active` once ended, `sleep_unavailable` where sessions cannot sleep")
                })) },
            "/api/v1/sessions/{id}/wake": { "post": op("Wake a sleeping session (any use does): `starting` in the answer, `ready` once Claude Code resumed its conversation",
                json!([sid()]), None,
                json!({
                    "200": body(r("SessionStatus"), "waking (or awake already)"),
                    "409": error("`session_not_active`: the session ended"),
                    "503": error("the session could not be woken now (it stays asleep; the message says why)")
                })) },
            "/api/v1/sessions/{id}/diff": { "get": op("The session's changes against the commit it started from", json!([sid()]), None,
                json!({ "200": body(r("SessionDiff"), "the diff") })) },
            "/api/v1/sessions/{id}/push": { "post": op("Push the session's work to its branch (never forced, never the base branch), optionally opening a pull request",
                json!([sid()]), Some(r("PushRequest")),
                json!({
                    "200": body(r("PushResponse"), "pushed"),
                    "400": error("`no_repo_token`, `no_forge`, `no_base_branch`: the pull request cannot be opened"),
                    "403": error("`push_refused`: the branch is the session's base or outside the allowed prefixes"),
                    "409": error("`session_busy` during a turn, `push_rejected` when the branch moved on the server"),
                    "502": error("`forge_refused`, `forge_unreachable`: pushed, but the pull request was not opened")
                })) },
            "/api/v1/sessions/{id}/files": { "get": op("A file or directory of the session's checkout (`path` relative to it; `.git` is not served)",
                json!([sid(), query("path", json!({ "type": "string" }))]), None,
                json!({
                    "200": body(r("SessionPath"), "the directory's entries or the file's content"),
                    "400": error("`invalid_path`: absolute, `..`, NUL, or neither a file nor a directory"),
                    "403": error("`forbidden_path`: `.git`, or a symlink leading outside the checkout"),
                    "404": error("`path_not_found` or `session_not_found`")
                })) },
            "/api/v1/sessions/{id}/permissions/{requestId}": { "post": op("Answer a permission question the session waits on (a `permissionRequest` event); the first answer wins",
                json!([sid(), { "name": "requestId", "in": "path", "required": true, "description": "the question's `requestId`", "schema": { "type": "string" } }]),
                Some(r("PermissionResponse")),
                json!({
                    "200": body(r("PermissionAnswered"), "answered: Claude Code runs the tool, or the model is told it was denied"),
                    "400": error("`invalid_permission_response`: a `requestId` other than the path's, a message too long"),
                    "404": error("`permission_not_found`: the session asked no such question; `session_not_found`"),
                    "409": error("`permission_already_answered`: answered already (by someone else, an earlier `always`, or the timeout), the first answer stands; `session_not_active`")
                })) },
            "/api/v1/sessions/{id}/logs": { "get": op("Stored events after `since`", json!([sid(), query("since", count()), query("limit", count())]), None,
                json!({ "200": body(r("LogsResponse"), "a page of events") })) },
            "/api/v1/sessions/{id}/stream": { "get": op("The session's WebSocket (`ServerMessage` envelopes out; `{type: 'command', data: {command}}`, `{type: 'interrupt'}`, `{type: 'keepalive'}`, `{type: 'permissionResponse', data: {requestId, allow, message?, always?}}` in): without `since`, a `status` with the current state, then live events; with `since=N`, every event after `N`, then live ones",
                json!([sid(), query("since", count())]), None,
                json!({
                    "101": { "description": "switching to the WebSocket protocol" },
                    "400": { "description": "not a WebSocket upgrade request" },
                    "426": { "description": "the connection cannot be upgraded" }
                })) },
            "/api/v1/audit": { "get": op("The audit log, oldest first (administrators)",
                json!([query("actor", json!({ "type": "string" })), query("action", json!({ "type": "string" })),
                       query("sessionId", json!({ "type": "string" })), query("since", count()), query("limit", count())]), None,
                json!({ "200": body(r("AuditPage"), "a page of records") })) },
            "/api/v1/admin/tokens": {
                "get": op("API tokens, never the tokens themselves (administrators)", json!([]), None,
                    json!({ "200": body(json!({ "type": "array", "items": r("TokenInfo") }), "the tokens") })),
                "post": op("Create an API token; shown once (administrators)", json!([]), Some(r("CreateTokenRequest")),
                    json!({ "201": body(r("CreatedToken"), "created") }))
            },
            "/api/v1/admin/tokens/{id}": { "delete": op("Revoke an API token (administrators)", json!([path_id("the token's id")]), None,
                json!({ "200": body(r("RevokedToken"), "revoked") })) },
            "/api/v1/webhooks": {
                "get": op("Webhook endpoints you registered (administrators: all), never their secrets", json!([]), None,
                    json!({ "200": body(json!({ "type": "array", "items": r("WebhookInfo") }), "the endpoints") })),
                "post": op("Register a webhook endpoint; its signing secret is shown once", json!([]), Some(r("WebhookRequest")),
                    json!({ "201": body(r("CreatedWebhook"), "registered") }))
            },
            "/api/v1/webhooks/{id}": { "delete": op("Delete a webhook endpoint and its delivery log", json!([path_id("the endpoint's id")]), None,
                json!({ "200": body(r("DeletedWebhook"), "deleted") })) },
            "/api/v1/webhooks/{id}/deliveries": { "get": op("An endpoint's deliveries, newest first", json!([path_id("the endpoint's id"), query("limit", json!({ "type": "integer", "minimum": 1, "maximum": 1000 }))]), None,
                json!({ "200": body(json!({ "type": "array", "items": r("WebhookDelivery") }), "the delivery log") })) },
            "/api/v1/openapi.json": { "get": {
                "summary": "This document", "security": [],
                "responses": { "200": { "description": "the OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } } }
            } }
        }
    })
}
