//! Audits container exits the runtime reports (a session that ended on its
//! own: finished, crashed, OOM-killed, removed), and what the session core
//! records on its own (permission questions, answers no person gave), so
//! events that no API call caused are in the audit log too.

use super::{audit_to, Access, Audit, ClientIp};
use crate::AppManager;
use crate::ServerStore;
use cc_core::{Runtime, RuntimeEventKind};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Pause before following the runtime's events again after the feed broke.
const RETRY: Duration = Duration::from_secs(5);
/// Actor of records the server writes on its own.
pub const SYSTEM_ACTOR: &str = cc_core::audit::SYSTEM_ACTOR;

/// Follows the runtime's container exits until `stop` resolves.
pub async fn follow<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    access: Arc<Access>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let mut feed = match manager.runtime().events().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "following container events for the audit log");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                n = feed.next() => n,
                _ = stop.wait_for(|s| *s) => return,
            };
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "container events for the audit log");
                    break;
                }
                None => break,
            };
            let (outcome, detail) = match ev.kind {
                RuntimeEventKind::Exited { code, oom } => (
                    if oom { "oom_killed" } else { "exited" },
                    code.map(|c| format!("exit code {c}")),
                ),
                RuntimeEventKind::OomKill => ("oom_kill", None),
            };
            let action = match ev.kind {
                RuntimeEventKind::Exited { .. } => "container.exit",
                RuntimeEventKind::OomKill => "container.oom_kill",
            };
            let owner = manager
                .get(ev.session.as_str())
                .await
                .map(|r| r.owner)
                .ok()
                .filter(|o| !o.is_empty());
            let a = Audit {
                actor: owner.as_deref().unwrap_or(SYSTEM_ACTOR),
                ip: ClientIp(None),
                action,
                session_id: Some(ev.session.as_str()),
                outcome,
                detail,
            };
            audit_to(manager.store(), &access, a).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Chains the records the session core writes on its own
/// (`Manager::audit_events`) until `stop` resolves.
pub async fn follow_core<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    access: Arc<Access>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut events = manager.audit_events();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(e) = event else { return };
        let a = Audit {
            actor: &e.actor,
            ip: ClientIp(None),
            action: &e.action,
            session_id: e.session_id.as_deref(),
            outcome: &e.outcome,
            detail: e.detail.clone(),
        };
        audit_to(manager.store(), &access, a).await;
    }
}
