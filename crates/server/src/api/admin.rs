//! Administrator endpoints: API tokens (create, list, revoke).
//!
//! The token itself is returned once, by create; list and revoke work on
//! its public `id`. Every action is audited as `admin.*`.

use super::{ApiError, ApiJson, AppState};
use crate::auth::{audit, require_admin, Audit, ClientIp, ServerStore};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cc_core::identity::{check_user, ApiTokenRecord, NewToken, Role};
use cc_core::{now, rfc3339, Principal, Runtime};
use serde::{Deserialize, Serialize};

/// Longest token label.
const MAX_LABEL_LEN: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub user: String,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub label: Option<String>,
}

/// A token as listed (never the token itself).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl From<&ApiTokenRecord> for TokenInfo {
    fn from(r: &ApiTokenRecord) -> Self {
        Self {
            id: r.id.clone(),
            user: r.user.clone(),
            role: r.role,
            label: r.label.clone(),
            created_at: rfc3339(r.created_at),
            revoked_at: r.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    /// Shown once; only its hash is kept.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

pub(super) async fn create_token<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    require_admin(&p)?;
    check_user(&req.user).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_user", m))?;
    if req.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL_LEN) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_label",
            format!("label is longer than {MAX_LABEL_LEN} bytes"),
        ));
    }
    let new = NewToken::generate(&req.user, req.role.unwrap_or(Role::User), req.label, now());
    st.manager.store().insert_token(&new.record).await?;
    let a = Audit {
        actor: &p.user,
        ip,
        action: "admin.token.create",
        session_id: None,
        outcome: "ok",
        // No user name: it would outlive an erasure of that user.
        detail: Some(format!(
            "token {} ({})",
            new.record.id,
            new.record.role.as_str()
        )),
    };
    audit(&st, a).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: new.token,
            info: TokenInfo::from(&new.record),
        }),
    ))
}

pub(super) async fn list_tokens<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    require_admin(&p)?;
    let tokens = st.manager.store().list_tokens().await?;
    Ok(Json(tokens.iter().map(TokenInfo::from).collect()))
}

pub(super) async fn revoke_token<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    Extension(ip): Extension<ClientIp>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&p)?;
    let revoked = st.manager.store().revoke_token(&id, now()).await?;
    let id_shown: String = id.chars().take(64).collect();
    let a = Audit {
        actor: &p.user,
        ip,
        action: "admin.token.revoke",
        session_id: None,
        outcome: if revoked { "ok" } else { "token_not_found" },
        detail: Some(format!("token {id_shown}")),
    };
    audit(&st, a).await;
    if !revoked {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "token_not_found",
            format!("no live token {id_shown}"),
        ));
    }
    Ok(Json(serde_json::json!({ "id": id, "revoked": true })))
}
