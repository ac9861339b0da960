//! `GET /api/v1/audit`: the audit log for administrators, oldest first,
//! filtered by `actor`, `action` (exact, or a prefix ending in `.`),
//! `sessionId`, and paged with `since` (a seq) and `limit`.

use super::{ApiError, AppState};
use crate::auth::{require_admin, ServerStore};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use cc_core::audit::{AuditFilter, AuditRecord};
use cc_core::{Principal, Runtime};
use serde::{Deserialize, Serialize};

/// Default and largest page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    session_id: Option<String>,
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// `since` for the next page.
    pub next_since: u64,
}

pub(super) async fn list<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    Extension(p): Extension<Principal>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    require_admin(&p)?;
    let Query(q) = query?;
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        session_id: q.session_id,
        since: q.since,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
    };
    let records = st.manager.store().audit_records(&filter).await?;
    let next_since = records.last().map_or(q.since, |r| r.seq);
    Ok(Json(AuditPage {
        records,
        next_since,
    }))
}
