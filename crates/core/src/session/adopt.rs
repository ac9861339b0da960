//! Starting a session's actor, and taking over the sessions a previous
//! orchestrator left running (after a crash, `kill -9`, or a SIGTERM that
//! deliberately left them for us).
//!
//! Adoption needs what the previous orchestrator held in memory: the
//! session token, sessiond's token and the user's Claude key, kept sealed
//! in the store (see `crate::secrets`), and the container's address, which
//! the runtime re-derives. The actor then re-follows sessiond's journal
//! from the session's stored `agent_seq`, so no event is lost or repeated.

use super::actor::{Actor, ActorMsg, Boot, ACTOR_QUEUE};
use super::create::{append_status, init_request};
use super::reaper::Activity;
use super::{Handle, Inner, Manager};
use crate::credentials::SessionCredentials;
use crate::error::CoreError;
use crate::ids::SessionId;
use crate::metrics::CoreMetrics;
use crate::seams::{
    Agent, AgentEndpoint, ContainerStatus, Runtime, RuntimeEvent, RuntimeEventKind, SessionRecord,
    Store,
};
use cc_wire::api::{ServerMessage, SessionState};
use cc_wire::sessiond::InitRequest;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

/// Events buffered per session for slow WebSocket readers before they fall
/// back to reading the store.
const BROADCAST_CAPACITY: usize = 1024;

/// What [`Manager::recover`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovery {
    /// Live sessions taken over with their running containers.
    pub adopted: usize,
    /// Live sessions that could not be taken over (now `error`).
    pub failed: usize,
    /// Resources of unknown or ended sessions removed.
    pub orphans: usize,
}

/// How a session's actor comes to run, and since when (for the spawn and
/// wake latency metrics).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// A create request came in at this moment.
    Created(Instant),
    /// Taken over running (after a restart, from another replica).
    Adopted,
    /// A wake request came in at this moment.
    Woken(Instant),
}

impl Start {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created(_) => "created",
            Self::Adopted => "adopted",
            Self::Woken(_) => "woken",
        }
    }
}

/// Registers the session's handle and starts its actor.
pub(crate) fn spawn_actor<R: Runtime, A: Agent, S: Store>(
    inner: &Arc<Inner<R, A, S>>,
    record: SessionRecord,
    boot: Boot,
    init: InitRequest,
    start: Start,
) {
    let (tx, rx) = mpsc::channel(ACTOR_QUEUE);
    let (events, _) = broadcast::channel::<ServerMessage>(BROADCAST_CAPACITY);
    let (record_tx, record_rx) = watch::channel(record.clone());
    let activity = Arc::new(Activity::new());
    let permissions = Arc::new(super::permissions::Pending::default());
    inner.insert_handle(
        record.id.clone(),
        Handle {
            tx,
            events: events.clone(),
            record: record_rx,
            activity: activity.clone(),
            budget_usd: super::usage::session_budget(&init),
            permissions: permissions.clone(),
        },
    );
    // A trace of its own (root), for as long as this replica runs it.
    let span = tracing::info_span!(
        parent: None,
        "session",
        session.id = %record.id,
        start = start.as_str()
    );
    let actor = Actor::new(inner.clone(), record, record_tx, events, boot, init)
        .with_lifecycle(activity, start)
        .with_permissions(permissions);
    tokio::spawn(tracing::Instrument::instrument(actor.run(rx), span));
}

/// Refuses a placement whose gateway is not the one the session's setup
/// names: Claude Code inside would call the old address.
pub(crate) fn check_gateway(p: &crate::seams::Placement, init: &InitRequest) -> Result<(), String> {
    let gateway = format!("{}/", p.gateway_url.trim_end_matches('/'));
    if init.clone_url.starts_with(&gateway) {
        return Ok(());
    }
    Err("the orchestrator restarted on another gateway address; \
         give --gateway-listen a fixed port to keep sessions across restarts"
        .into())
}

/// Why a container that cannot be adopted is gone, from its inspection.
fn gone_reason(inspected: Result<Option<ContainerStatus>, crate::error::RuntimeError>) -> String {
    match inspected {
        Ok(Some(ContainerStatus {
            running: false,
            exit_code,
            oom_killed,
            ..
        })) => exit_reason(exit_code, oom_killed),
        _ => "the session container disappeared".into(),
    }
}

/// Why a stopped container stopped, in words for the session's reason.
pub(crate) fn exit_reason(code: Option<i64>, oom: bool) -> String {
    if oom {
        "the session container was killed: out of memory".into()
    } else {
        format!(
            "the session container exited (code {})",
            code.map_or_else(|| "unknown".into(), |c| c.to_string())
        )
    }
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Run once at startup, before serving: takes back the sessions this
    /// replica held in a previous life (same replica ID) and those whose
    /// owner stopped renewing its lease, adopting those whose containers
    /// still run (when a seal key is configured) and ending the others with
    /// the reason; then removes resources of sessions that are unknown or
    /// already ended. Sessions another live replica holds are left to it.
    pub async fn recover(&self) -> Result<Recovery, CoreError> {
        let mut out = Recovery::default();
        let held = self.renew_leases().await?;
        let unowned = self.inner.store.unowned().await?;
        let mine = held.into_iter().map(|(id, _)| id);
        for id in mine.chain(unowned) {
            self.take_over(&id, &mut out).await?;
        }
        out.orphans = self.sweep_orphans().await?;
        Ok(out)
    }

    /// Claims the session's lease (when it is free, expired or already
    /// this replica's) and adopts it; nothing when another replica holds it
    /// or this one runs it already.
    pub(crate) async fn take_over(
        &self,
        id: &SessionId,
        out: &mut Recovery,
    ) -> Result<(), CoreError> {
        let inner = &self.inner;
        if inner.handle(id).is_some() || !inner.start_taking_over(id) {
            return Ok(());
        }
        let result = self.take_over_claimed(id, out).await;
        inner.done_taking_over(id);
        result
    }

    async fn take_over_claimed(&self, id: &SessionId, out: &mut Recovery) -> Result<(), CoreError> {
        let inner = &self.inner;
        let me = &inner.config.replica.id;
        let Some(fence) = inner.store.claim(id, me, crate::lease::LEASE_TTL).await? else {
            return Ok(());
        };
        let Some(mut rec) = inner.store.get_session(id).await? else {
            return Ok(());
        };
        rec.lease = crate::lease::Lease {
            holder: Some(me.clone()),
            fence,
        };
        let rec = self.settle_state(rec).await?;
        if !rec.state.is_live() {
            // It had ended; only its record had not been told.
            return Ok(());
        }
        match self.adopt(rec.clone()).await {
            Ok(()) => {
                tracing::info!(session = %id, state = rec.state.as_str(), fence, "adopted session");
                CoreMetrics::inc(&inner.metrics.adopted_total);
                out.adopted += 1;
            }
            Err(reason) => {
                tracing::warn!(session = %id, %reason, "could not adopt session");
                self.end_unadopted(rec, reason).await?;
                out.failed += 1;
            }
        }
        Ok(())
    }

    /// Renews this replica's leases (announcing its address and its warm
    /// pool) and lets go of sessions another replica took over; returns
    /// the sessions it holds.
    pub async fn renew_leases(&self) -> Result<Vec<(SessionId, u64)>, CoreError> {
        let inner = &self.inner;
        let pool = inner.pool.owned_ids();
        let held = inner
            .store
            .heartbeat(&crate::lease::Heartbeat {
                replica: &inner.config.replica,
                held: &pool,
                ttl: crate::lease::LEASE_TTL,
            })
            .await?;
        let still: std::collections::HashSet<&SessionId> = held.iter().map(|(id, _)| id).collect();
        for id in inner.live_ids() {
            if still.contains(&id) {
                continue;
            }
            if let Some(h) = inner.handle(&id) {
                let reason = "another replica took the session over".to_owned();
                let _ = h.tx.send(ActorMsg::Release { reason }).await;
            }
        }
        Ok(held)
    }

    /// Lets go of every session this replica runs, leaving them running, so
    /// another replica takes them over at once instead of when the leases
    /// run out (a replica stopping without ending its sessions).
    pub async fn release_leases(&self) {
        let inner = &self.inner;
        for id in inner.live_ids() {
            if let Err(e) = inner.store.release(&id, &inner.config.replica.id).await {
                tracing::warn!(session = %id, error = %e, "releasing the session's lease");
            }
        }
    }

    /// Adopts the live sessions whose owner stopped renewing its lease.
    pub async fn take_over_unowned(&self) -> Result<Recovery, CoreError> {
        let mut out = Recovery::default();
        for id in self.inner.store.unowned().await? {
            self.take_over(&id, &mut out).await?;
        }
        Ok(out)
    }

    /// [`Self::remove_orphans`] by one replica at a time (a cluster-wide
    /// job lock): two sweeps racing would each see the other's fresh
    /// resources as unknown.
    pub async fn sweep_orphans(&self) -> Result<usize, CoreError> {
        let inner = &self.inner;
        let hold = inner.config.reconcile_interval.max(crate::lease::LEASE_TTL) * 2;
        if !inner
            .store
            .lock_job("orphan-sweep", &inner.config.replica.id, hold)
            .await?
        {
            return Ok(0);
        }
        self.remove_orphans().await
    }

    /// The record with the state its event log ends in.
    ///
    /// A state change was two store writes: the `status` event, which moves
    /// the log cursor (`last_seq`, `agent_seq`) in the same transaction,
    /// then the record (now one, `Store::record_change`). An orchestrator
    /// of that time that stopped between the two (`kill -9`, or a SIGTERM
    /// right after a turn's `ready` went out: the shutting-down runtime
    /// drops the still-queued record write) left the record one state behind its log, e.g. `busy` for an
    /// idle session. The actor resumes sessiond's journal after the entry
    /// that caused the change, so nothing else would correct it: the
    /// session would report `busy` while idle, and its next turn's `busy`
    /// would look like no change and get no `status busy` event.
    ///
    /// Nothing is logged between a status event and its record write, so a
    /// stale record always has that event last in its log; a log that ends
    /// in anything else, or in the record's own state, changes nothing.
    async fn settle_state(&self, mut rec: SessionRecord) -> Result<SessionRecord, CoreError> {
        let Some(since) = rec.last_seq.checked_sub(1) else {
            return Ok(rec);
        };
        let last = self.inner.store.events(&rec.id, since, 1).await?;
        let Some(ServerMessage::Status { state, reason, .. }) = last.into_iter().next() else {
            return Ok(rec);
        };
        if state == rec.state {
            return Ok(rec);
        }
        tracing::warn!(
            session = %rec.id,
            record = rec.state.as_str(),
            log = state.as_str(),
            "the previous orchestrator stopped before saving the session's state; going by its log"
        );
        rec.state = state;
        rec.reason = reason;
        rec.updated_at = crate::time::now();
        self.inner.store.update_session(&rec).await?;
        Ok(rec)
    }

    async fn adopt(&self, rec: SessionRecord) -> Result<(), String> {
        let inner = &self.inner;
        if rec.state == SessionState::Terminating {
            return Err("the orchestrator restarted while ending this session".into());
        }
        let key = inner
            .config
            .seal_key
            .as_ref()
            .ok_or("the orchestrator restarted and has no key to adopt this session")?;
        let sealed = inner
            .store
            .sealed_secrets(&rec.id)
            .await
            .map_err(|e| format!("reading its secrets failed: {e}"))?
            .ok_or("the orchestrator restarted and this session's secrets were not kept")?;
        let secrets = crate::secrets::open(key, &rec.id, &sealed)
            .map_err(|e| format!("the orchestrator restarted: {e}"))?;
        let (placement, pending_init) = match inner.runtime.locate(&rec.id).await {
            Ok(Some(p)) => (Some(p), None),
            Ok(None) => match (inner.runtime.inspect(&rec.id).await, secrets.init.clone()) {
                // Its container was still waiting for its place (a
                // Pending Pod): the actor waits for it, as the creator's
                // would have.
                (Ok(Some(ContainerStatus { starting: true, .. })), Some(init)) => {
                    (None, Some(init))
                }
                (inspected, _) => return Err(gone_reason(inspected)),
            },
            Err(e) => return Err(format!("the session container cannot be found: {e}")),
        };
        if let (Some(p), Some(init)) = (&placement, &secrets.init) {
            check_gateway(p, init)?;
        }
        inner.credentials.insert(SessionCredentials {
            session_id: rec.id.clone(),
            token: secrets.session_token.clone(),
            claude_api_key: secrets.claude_api_key,
            repo_token: secrets.repo_token,
            egress: rec.limits.egress,
            repo_url: rec.repo_url.clone(),
        });
        let (boot, init) = match (placement, pending_init) {
            (Some(p), _) => {
                // The exact first request when it was kept; otherwise
                // sessiond was never set up, and a default setup is the
                // best there is.
                let init = secrets.init.unwrap_or_else(|| {
                    init_request(
                        &inner.config,
                        &rec.id,
                        &p.gateway_url,
                        &secrets.session_token,
                        rec.branch.clone(),
                        rec.limits.egress,
                        Default::default(),
                    )
                });
                let endpoint = AgentEndpoint {
                    base_url: p.agent_url,
                    token: secrets.agent_token,
                };
                (Boot::Placed(endpoint), init)
            }
            (None, Some(init)) => (Boot::Pending(secrets.agent_token), init),
            (None, None) => return Err("the session container disappeared".into()),
        };
        spawn_actor(inner, rec, boot, init, Start::Adopted);
        Ok(())
    }

    /// A session that cannot go on: resources and secrets gone, `error`.
    async fn end_unadopted(&self, mut rec: SessionRecord, reason: String) -> Result<(), CoreError> {
        let inner = &self.inner;
        inner.runtime.remove(&rec.id).await?;
        if inner.config.seal_key.is_some() {
            inner.store.delete_sealed_secrets(&rec.id).await?;
        }
        inner.credentials.remove(&rec.id);
        rec.state = if rec.state == SessionState::Terminating {
            SessionState::Terminated
        } else {
            SessionState::Error
        };
        rec.reason = Some(reason);
        append_status(inner, &mut rec).await?;
        Ok(())
    }

    /// Removes resources of sessions that are unknown or ended (a crash
    /// between a create and its record, or during a removal). Sessions
    /// being created are live in the store and left alone, and so are the
    /// warm pools of every live replica.
    pub async fn remove_orphans(&self) -> Result<usize, CoreError> {
        let inner = &self.inner;
        let mut removed = 0;
        let held = inner.store.held_by_replicas().await?;
        for id in inner.runtime.list().await? {
            if inner.handle(&id).is_some() || inner.pool.owns(&id) || held.contains(&id) {
                continue;
            }
            let live_in_store = inner
                .store
                .get_session(&id)
                .await?
                .is_some_and(|r| r.state.is_live());
            if live_in_store {
                continue;
            }
            tracing::info!(session = %id, "removing orphaned session resources");
            inner.runtime.remove(&id).await?;
            if inner.config.seal_key.is_some() {
                if let Err(e) = inner.store.delete_sealed_secrets(&id).await {
                    tracing::warn!(session = %id, error = %e, "deleting sealed secrets");
                }
            }
            CoreMetrics::inc(&inner.metrics.orphans_removed_total);
            removed += 1;
        }
        Ok(removed)
    }

    /// Routes a runtime event to the session's actor.
    pub async fn on_runtime_event(&self, ev: RuntimeEvent) {
        if self.inner.pool.forget(&ev.session) {
            tracing::warn!(container = %ev.session, "a warm pool container stopped");
            if let Err(e) = self.inner.runtime.remove(&ev.session).await {
                tracing::warn!(error = %e, "removing a stopped warm pool container");
            }
            self.inner.pool.claimed.notify_one();
            return;
        }
        let Some(h) = self.inner.handle(&ev.session) else {
            return;
        };
        let reason = match ev.kind {
            RuntimeEventKind::Exited { code, oom } => exit_reason(code, oom),
            RuntimeEventKind::OomKill => {
                let _ = h.tx.send(ActorMsg::OomKill).await;
                return;
            }
        };
        tracing::warn!(session = %ev.session, %reason, "session container stopped");
        let _ = h.tx.send(ActorMsg::ContainerExited { reason }).await;
    }

    /// Checks every live session's container (events may have been missed
    /// while the runtime's feed was down); returns how many were stopped.
    pub async fn check_live_containers(&self) -> usize {
        let mut stopped = 0;
        for id in self.inner.live_ids() {
            let kind = match self.inner.runtime.inspect(&id).await {
                // Running, or still waiting for its place (the actor
                // waits for that).
                Ok(Some(st)) if st.running || st.starting => continue,
                Ok(Some(st)) => RuntimeEventKind::Exited {
                    code: st.exit_code,
                    oom: st.oom_killed,
                },
                Ok(None) => {
                    if let Some(h) = self.inner.handle(&id) {
                        let reason = "the session container disappeared".to_owned();
                        let _ = h.tx.send(ActorMsg::ContainerExited { reason }).await;
                        stopped += 1;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "inspecting container");
                    continue;
                }
            };
            self.on_runtime_event(RuntimeEvent { session: id, kind })
                .await;
            stopped += 1;
        }
        stopped
    }
}
