//! Creating a session: validate, record, start the container, hand the
//! rest (waiting for sessiond, clone, Claude Code) to the session's actor.

use super::actor::{Actor, ACTOR_QUEUE};
use super::{Handle, Manager};
use crate::credentials::SessionCredentials;
use crate::error::CoreError;
use crate::ids::{SessionId, Token};
use crate::policy;
use crate::seams::{Agent, AgentEndpoint, Placement, Runtime, SessionRecord, SessionSpec, Store};
use crate::time::{now, rfc3339};
use cc_wire::api::{ServerMessage, SessionConfigRequest, SessionState};
use cc_wire::sessiond::{ClaudeSettings, InitRequest};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Longest Claude API key accepted (real ones are ~108 characters).
const MAX_API_KEY_LEN: usize = 512;
/// Events buffered per session for slow WebSocket readers before they fall
/// back to reading the store.
const BROADCAST_CAPACITY: usize = 1024;

/// A validated-on-use request to create a session.
pub struct CreateSession {
    pub repo_url: String,
    pub branch: Option<String>,
    pub claude_api_key: String,
    pub config: Option<SessionConfigRequest>,
}

impl std::fmt::Debug for CreateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSession")
            .field("repo_url", &self.repo_url)
            .field("branch", &self.branch)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Creates a session and starts its container. Returns once the
    /// container runs (state `starting`); cloning and Claude Code's start
    /// continue in the background and show up as `status` events.
    pub async fn create(&self, req: CreateSession) -> Result<SessionRecord, CoreError> {
        let inner = &self.inner;
        let repo = policy::parse_repo_url(&req.repo_url)?;
        if let Some(b) = &req.branch {
            policy::check_branch(b)?;
        }
        check_api_key(&req.claude_api_key)?;
        let limits = inner.config.limits.resolve(req.config.as_ref())?;
        policy::check_repo_host(&repo, &inner.config.allowed_repo_hosts).await?;

        let id = SessionId::generate();
        let created = now();
        let mut record = SessionRecord {
            id: id.clone(),
            container_id: None,
            state: SessionState::Creating,
            reason: None,
            repo_url: repo.url.clone(),
            branch: req.branch.clone(),
            limits,
            created_at: created,
            updated_at: created,
            expires_at: created + Duration::from_secs(limits.timeout_secs),
            last_seq: 0,
            agent_seq: 0,
        };
        inner.store.insert_session(&record).await?;
        append_status(inner.store(), &mut record).await?;

        let session_token = Token::generate();
        let agent_token = Token::generate();
        inner.credentials.insert(SessionCredentials {
            session_id: id.clone(),
            token: session_token.clone(),
            claude_api_key: req.claude_api_key,
            repo_url: repo.url.clone(),
        });
        let spec = SessionSpec {
            id: id.clone(),
            image: inner.config.image.clone(),
            limits,
            agent_token: agent_token.clone(),
        };
        let placement = match inner.runtime.create(&spec).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "container start failed");
                inner.credentials.remove(&id);
                if let Err(rm) = inner.runtime.remove(&id).await {
                    tracing::warn!(session = %id, error = %rm, "cleanup after failed start");
                }
                record.state = SessionState::Error;
                record.reason = Some(format!("container could not be started: {e}"));
                append_status(inner.store(), &mut record).await?;
                inner.store.update_session(&record).await?;
                return Err(e.into());
            }
        };

        record.container_id = Some(placement.container_id.clone());
        record.state = SessionState::Starting;
        append_status(inner.store(), &mut record).await?;
        inner.store.update_session(&record).await?;

        let init = init_request(
            &inner.config,
            &id,
            &placement,
            &session_token,
            record.branch.clone(),
        );
        let endpoint = AgentEndpoint {
            base_url: placement.agent_url.clone(),
            token: agent_token,
        };
        let (tx, rx) = mpsc::channel(ACTOR_QUEUE);
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (record_tx, record_rx) = watch::channel(record.clone());
        inner.insert_handle(
            id.clone(),
            Handle {
                tx,
                events: events.clone(),
                record: record_rx,
            },
        );
        let actor = Actor::new(
            self.inner.clone(),
            record.clone(),
            record_tx,
            events,
            endpoint,
            init,
        );
        tokio::spawn(actor.run(rx));
        tracing::info!(session = %id, container = %placement.container_id, "session started");
        Ok(record)
    }
}

fn check_api_key(key: &str) -> Result<(), CoreError> {
    if key.trim().is_empty() {
        return Err(CoreError::invalid(
            "invalid_api_key",
            "claudeApiKey must not be empty",
        ));
    }
    if key.len() > MAX_API_KEY_LEN || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CoreError::invalid(
            "invalid_api_key",
            "claudeApiKey is not a well-formed key",
        ));
    }
    Ok(())
}

/// Appends a `status` event for the record's current state and reason.
pub(crate) async fn append_status<S: Store>(
    store: &S,
    record: &mut SessionRecord,
) -> Result<(), CoreError> {
    let msg = ServerMessage::Status {
        seq: record.last_seq + 1,
        state: record.state,
        timestamp: rfc3339(now()),
        reason: record.reason.clone(),
    };
    store.append_events(&record.id, &[msg], None).await?;
    record.last_seq += 1;
    record.updated_at = now();
    Ok(())
}

fn init_request(
    config: &crate::config::ManagerConfig,
    id: &SessionId,
    placement: &Placement,
    token: &Token,
    branch: Option<String>,
) -> InitRequest {
    let gw = match placement.gateway_ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let base = format!("http://{gw}:{}", config.gateway_port);
    let mut env = BTreeMap::new();
    env.insert(
        "ANTHROPIC_BASE_URL".into(),
        format!("{base}/anthropic/{id}"),
    );
    // A session-scoped token: the gateway swaps it for the real key.
    env.insert("ANTHROPIC_API_KEY".into(), token.expose().to_owned());
    // Without these Claude Code first calls api.anthropic.com for settings
    // and stalls ~17 s when that fails.
    env.insert(
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
        "1".into(),
    );
    env.insert("DISABLE_AUTOUPDATER".into(), "1".into());
    InitRequest {
        clone_url: format!("{base}/git/{id}"),
        git_headers: vec![format!("Authorization: Bearer {}", token.expose())],
        branch,
        claude: ClaudeSettings {
            args: config.claude_args.clone(),
            env,
        },
    }
}
