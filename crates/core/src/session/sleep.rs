//! Sessions that sleep and wake.
//!
//! A sleeping session has no container and no actor: the runtime removed
//! its container and network but kept its workspace, where Claude Code's
//! configuration directory — its conversation — lives too; its record,
//! log, limits and sealed secrets stay in the store, and nobody holds its
//! lease. It goes to sleep from `ready`, idle (`IdleAction::Sleep`) or on
//! request ([`Manager::sleep`], in the actor).
//!
//! Waking ([`Manager::wake`], or any use of the session: a command, diff,
//! files, push) claims its lease, records `starting`, starts a container on
//! the same workspace and runs an actor as for a new session; sessiond
//! skips the clone and resumes Claude Code's conversation. The new
//! sessiond's journal starts again at 1, so the record's `agent_seq` goes
//! back to 0 in the same transaction. The log's `seq` goes on: a reader's
//! `since` keeps working across sleep and wake.
//!
//! One replica wakes a session at a time (its lease); within a replica,
//! the takeover guard keeps two requests from waking it twice.

use super::actor::Boot;
use super::adopt::{spawn_actor, Start};
use super::create::{append_status, retarget};
use super::{parse_id, Handle, Manager};
use crate::credentials::SessionCredentials;
use crate::error::CoreError;
use crate::ids::SessionId;
use crate::metrics::CoreMetrics;
use crate::seams::{Agent, AgentEndpoint, Runtime, SessionRecord, SessionSpec, Started, Store};
use crate::time::{now, now_ms};
use crate::webhook::EventKind;
use cc_wire::api::{ServerMessage, SessionState};
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for another request's wake of the same session.
const WAKE_WAIT: Duration = Duration::from_secs(60);
/// Pause between looks at another request's wake.
const WAKE_POLL: Duration = Duration::from_millis(20);

impl<R: Runtime, A: Agent, S: Store> super::Inner<R, A, S> {
    /// Whether sessions can sleep here: the runtime keeps workspaces and
    /// the secrets a wake needs are kept sealed.
    pub(crate) fn can_sleep(&self) -> bool {
        self.runtime.can_suspend() && self.config.seal_key.is_some()
    }

    /// Whether an idle session sleeps (rather than ends).
    pub(crate) fn sleeps_when_idle(&self) -> bool {
        self.config.idle_action == crate::config::IdleAction::Sleep && self.can_sleep()
    }
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Puts a `ready` session to sleep; a sleeping one stays asleep. `409`
    /// during a turn (`session_busy`), while it starts, once it ended, or
    /// where sessions cannot sleep.
    pub async fn sleep(&self, id: &str, reason: String) -> Result<SessionRecord, CoreError> {
        let rec = self.get(id).await?;
        let Some(handle) = self.inner.handle(&rec.id) else {
            return match rec.state {
                SessionState::Sleeping => Ok(rec),
                other => Err(not_active(&rec.id, other)),
            };
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        super::send(&handle, super::actor::ActorMsg::Sleep { reason, reply }).await?;
        rx.await.map_err(|_| super::ended())?
    }

    /// Wakes a sleeping session: it is `starting` when this returns, and
    /// `ready` once its container runs and Claude Code resumed its
    /// conversation. An awake session is returned as it is; an ended one
    /// is `409 session_not_active`.
    pub async fn wake(&self, id: &str) -> Result<SessionRecord, CoreError> {
        let id = parse_id(id)?;
        self.wake_id(&id).await?;
        self.get(id.as_str()).await
    }

    /// The session's handle, waking it first when it sleeps.
    pub(super) async fn awake_handle(&self, id: &str) -> Result<Handle, CoreError> {
        let rec = self.get(id).await?;
        if let Some(h) = self.inner.handle(&rec.id) {
            return Ok(h);
        }
        if rec.state == SessionState::Sleeping {
            self.wake_id(&rec.id).await?;
            if let Some(h) = self.inner.handle(&rec.id) {
                return Ok(h);
            }
        }
        let rec = self.get(id).await?;
        Err(not_active(&rec.id, rec.state))
    }

    /// [`Self::awake_handle`], then waits until the session is ready for
    /// its checkout to be read (a session woken just now is starting).
    pub(super) async fn ready_handle(&self, id: &str) -> Result<Handle, CoreError> {
        let h = self.awake_handle(id).await?;
        let mut record = h.record.clone();
        let deadline = self.inner.config.agent_ready_timeout + WAKE_WAIT;
        let ready = tokio::time::timeout(
            deadline,
            record.wait_for(|r| !matches!(r.state, SessionState::Starting | SessionState::Cloning)),
        )
        .await;
        match ready {
            Ok(_) => Ok(h),
            Err(_) => Err(CoreError::Unavailable(format!(
                "session {id} did not wake in time; try again"
            ))),
        }
    }

    /// Wakes the session unless it is awake already; waits for another
    /// request of this replica waking it.
    async fn wake_id(&self, id: &SessionId) -> Result<(), CoreError> {
        let deadline = Instant::now() + WAKE_WAIT;
        loop {
            if self.inner.handle(id).is_some() {
                return Ok(());
            }
            if self.inner.start_taking_over(id) {
                let r = self.wake_claimed(id).await;
                self.inner.done_taking_over(id);
                return r;
            }
            if Instant::now() >= deadline {
                return Err(CoreError::Unavailable(format!(
                    "session {id} is still waking; try again"
                )));
            }
            tokio::time::sleep(WAKE_POLL).await;
        }
    }

    async fn wake_claimed(&self, id: &SessionId) -> Result<(), CoreError> {
        let inner = &self.inner;
        let started = Instant::now();
        let Some(mut rec) = inner.store.get_session(id).await? else {
            return Err(CoreError::NotFound(id.to_string()));
        };
        if rec.state != SessionState::Sleeping {
            // Woken meanwhile (here or elsewhere), or ended.
            return match rec.state.is_awake() {
                true => Ok(()),
                false => Err(not_active(id, rec.state)),
            };
        }
        let key = inner.config.seal_key.as_ref().ok_or_else(|| {
            CoreError::conflict(
                "sleep_unavailable",
                "this server keeps no sealed secrets, so it cannot wake sessions",
            )
        })?;
        let me = inner.config.replica.id.clone();
        let Some(fence) = inner.store.claim(id, &me, crate::lease::LEASE_TTL).await? else {
            return Err(CoreError::Unavailable(format!(
                "session {id} is being woken by another orchestrator replica; try again"
            )));
        };
        let sealed = inner.store.sealed_secrets(id).await?.ok_or_else(|| {
            CoreError::Internal(format!("session {id} sleeps but its secrets are gone"))
        })?;
        let secrets = crate::secrets::open(key, id, &sealed)
            .map_err(|e| CoreError::Internal(format!("opening session {id}'s secrets: {e}")))?;
        let init = secrets.init.clone().ok_or_else(|| {
            CoreError::Internal(format!("session {id} sleeps but its setup was not kept"))
        })?;
        rec.lease = crate::lease::Lease {
            holder: Some(me.clone()),
            fence,
        };
        let slept_for = rec.reason.take();
        rec.state = SessionState::Starting;
        rec.reason = Some("waking".into());
        rec.updated_at = now();
        // Each awake stretch gets the session's whole lifetime again.
        rec.expires_at = now() + Duration::from_secs(rec.limits.timeout_secs);
        let msg = ServerMessage::Status {
            seq: rec.last_seq + 1,
            state: rec.state,
            timestamp: now_ms(),
            reason: rec.reason.clone(),
        };
        // A new sessiond's journal starts again: `agent_seq` back to 0
        // with the status, in one transaction.
        inner.store.record_change(&rec, &[msg], Some(0)).await?;
        rec.last_seq += 1;
        rec.agent_seq = 0;
        tracing::info!(session = %id, slept = ?slept_for, "waking session");
        inner.credentials.insert(SessionCredentials {
            session_id: rec.id.clone(),
            token: secrets.session_token.clone(),
            claude_api_key: secrets.claude_api_key.clone(),
            repo_token: secrets.repo_token.clone(),
            egress: rec.limits.egress,
            repo_url: rec.repo_url.clone(),
        });
        let spec = SessionSpec {
            id: id.clone(),
            image: inner.config.image.clone(),
            limits: rec.limits,
            agent_token: secrets.agent_token.clone(),
            pooled: false,
        };
        let mut init = init;
        let boot = match inner.runtime.create(&spec).await {
            Ok(started) => {
                let (gateway_url, boot) = match started {
                    Started::Running(p) => {
                        rec.container_id = Some(p.container_id);
                        let ep = AgentEndpoint {
                            base_url: p.agent_url,
                            token: secrets.agent_token.clone(),
                        };
                        (p.gateway_url, Boot::Placed(ep))
                    }
                    Started::Pending {
                        container_id,
                        gateway_url,
                    } => {
                        rec.container_id = Some(container_id);
                        (gateway_url, Boot::Pending(secrets.agent_token.clone()))
                    }
                };
                // Its new network may put the gateway at another address.
                retarget(&mut init, id, &gateway_url, &secrets.session_token);
                let kept = crate::secrets::SessionSecrets {
                    init: Some(init.clone()),
                    ..secrets
                };
                let sealed = crate::secrets::seal(key, id, &kept);
                match inner.store.put_sealed_secrets(id, &sealed).await {
                    Ok(()) => Ok(boot),
                    Err(e) => Err(format!("keeping its secrets failed: {e}")),
                }
            }
            Err(e) => Err(format!("starting its container failed: {e}")),
        };
        let boot = match boot {
            Ok(b) => b,
            Err(reason) => {
                // Back to sleep, its workspace untouched: a later wake may
                // work (the runtime recovered, the gateway came back).
                inner.credentials.remove(id);
                if let Err(e) = inner.runtime.suspend(id).await {
                    tracing::warn!(session = %id, error = %e, "removing a container that failed to wake");
                }
                rec.state = SessionState::Sleeping;
                rec.reason = Some(format!("waking failed: {reason}"));
                append_status(inner, &mut rec).await?;
                if let Err(e) = inner.store.release(id, &me).await {
                    tracing::warn!(session = %id, error = %e, "releasing the lease of a session that failed to wake");
                }
                return Err(CoreError::Unavailable(format!(
                    "session {id} could not be woken: {reason}"
                )));
            }
        };
        inner.store.update_session(&rec).await?;
        CoreMetrics::inc(&inner.metrics.woken_total);
        super::notices::on_api(
            inner.config.notices.as_ref(),
            &rec,
            EventKind::SessionWoken,
            serde_json::json!({}),
        );
        spawn_actor(inner, rec, boot, init, Start::Woken(started));
        Ok(())
    }

    /// Ends a sleeping session: its workspace and secrets go, and it is
    /// `terminated` with `reason`.
    pub(super) async fn end_sleeping(
        &self,
        id: &SessionId,
        reason: &str,
    ) -> Result<SessionRecord, CoreError> {
        let inner = &self.inner;
        if !inner.start_taking_over(id) {
            return Err(CoreError::conflict(
                "session_waking",
                format!("session {id} is waking; try again"),
            ));
        }
        let r = self.end_sleeping_claimed(id, reason).await;
        inner.done_taking_over(id);
        r
    }

    async fn end_sleeping_claimed(
        &self,
        id: &SessionId,
        reason: &str,
    ) -> Result<SessionRecord, CoreError> {
        let inner = &self.inner;
        let me = &inner.config.replica.id;
        let Some(fence) = inner.store.claim(id, me, crate::lease::LEASE_TTL).await? else {
            return Err(CoreError::Unavailable(format!(
                "session {id} is being woken by another orchestrator replica; try again"
            )));
        };
        let mut rec = inner
            .store
            .get_session(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
        if rec.state != SessionState::Sleeping {
            // Woken meanwhile: the caller deals with an awake session.
            return Ok(rec);
        }
        rec.lease.fence = fence;
        rec.lease.holder = Some(me.clone());
        inner.runtime.remove(id).await.map_err(|e| {
            CoreError::Unavailable(format!("removing the session's workspace: {e}"))
        })?;
        if let Err(e) = inner.store.delete_sealed_secrets(id).await {
            tracing::error!(session = %id, error = %e, "deleting sealed secrets");
        }
        rec.state = SessionState::Terminated;
        rec.reason = Some(reason.to_owned());
        append_status(inner, &mut rec).await?;
        tracing::info!(session = %id, reason, "ended a sleeping session");
        Ok(rec)
    }

    /// Ends the sessions that slept longer than the admin allows
    /// (`max_sleep`); returns how many.
    pub async fn end_long_sleepers(&self) -> Result<usize, CoreError> {
        let Some(max) = self.inner.config.max_sleep else {
            return Ok(0);
        };
        let mut ended = 0;
        for rec in self
            .inner
            .store
            .sessions_in_state(SessionState::Sleeping)
            .await?
        {
            let asleep_for = now().duration_since(rec.updated_at).unwrap_or_default();
            if asleep_for < max {
                continue;
            }
            let reason = format!("the session slept longer than {} s", max.as_secs());
            match self.end_sleeping(&rec.id, &reason).await {
                Ok(_) => ended += 1,
                Err(e) => {
                    tracing::warn!(session = %rec.id, error = %e, "ending a long-sleeping session")
                }
            }
        }
        Ok(ended)
    }

    /// How many sessions sleep (all replicas': they are in the store).
    pub async fn sleeping_count(&self) -> Result<usize, CoreError> {
        Ok(self
            .inner
            .store
            .sessions_in_state(SessionState::Sleeping)
            .await?
            .len())
    }
}

fn not_active(id: &SessionId, state: SessionState) -> CoreError {
    CoreError::conflict(
        "session_not_active",
        format!("session {id} is {}", state.as_str()),
    )
}
