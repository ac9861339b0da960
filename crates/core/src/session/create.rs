//! Creating a session: validate, record, start the container, hand the
//! rest (waiting for sessiond, clone, Claude Code) to the session's actor.

use super::actor::Boot;
use super::adopt::{spawn_actor, Start};
use super::{Inner, Manager};
use crate::credentials::SessionCredentials;
use crate::error::CoreError;
use crate::ids::{SessionId, Token};
use crate::policy;
use crate::seams::{Agent, AgentEndpoint, Runtime, SessionRecord, SessionSpec, Started, Store};
use crate::secrets::SessionSecrets;
use crate::time::{now, now_ms};
use cc_wire::api::{EgressMode, ServerMessage, SessionConfigRequest, SessionState};
use cc_wire::sessiond::{ClaudeSettings, InitRequest};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::Instrument;

/// Longest Claude API key accepted (real ones are ~108 characters).
const MAX_API_KEY_LEN: usize = 512;

/// A validated-on-use request to create a session.
pub struct CreateSession {
    pub repo_url: String,
    pub branch: Option<String>,
    pub claude_api_key: String,
    /// Token the git relay presents to the repository's host.
    pub repo_token: Option<String>,
    pub config: Option<SessionConfigRequest>,
    /// What Claude Code is told (validated against the admin's policy).
    pub options: Option<cc_wire::api::SessionOptions>,
    /// The user creating it (see [`crate::identity`]).
    pub owner: String,
}

impl std::fmt::Debug for CreateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSession")
            .field("repo_url", &self.repo_url)
            .field("branch", &self.branch)
            .field("config", &self.config)
            .field(
                "options",
                &self.options.as_ref().map(|o| {
                    // Environment values may be secrets: names only.
                    let mut o = o.clone();
                    if let Some(env) = &mut o.env {
                        env.values_mut().for_each(|v| *v = "<redacted>".into());
                    }
                    o
                }),
            )
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Creates a session and starts its container. Returns once the
    /// runtime has accepted it (state `starting`): waiting for a container
    /// that waits for its place (a Pending Pod), cloning and Claude Code's
    /// start continue in the background and show up as `status` events.
    #[tracing::instrument(name = "session.create", skip_all, fields(session.id, warm))]
    pub async fn create(&self, req: CreateSession) -> Result<SessionRecord, CoreError> {
        let started_at = tokio::time::Instant::now();
        let inner = &self.inner;
        let repo = policy::parse_repo_url(&req.repo_url)?;
        if let Some(b) = &req.branch {
            policy::check_branch(b)?;
        }
        check_api_key(&req.claude_api_key)?;
        if let Some(t) = &req.repo_token {
            check_repo_token(t)?;
        }
        let limits = inner.config.resolve_limits(req.config.as_ref())?;
        let spent = match inner.config.agent.max_user_budget_usd {
            Some(_) => super::usage::spent_by(inner.store(), &req.owner).await?,
            None => 0.0,
        };
        let options = inner
            .config
            .agent
            .resolve_for_user(req.options.as_ref(), spent)?;
        policy::check_repo_host(&repo, &inner.config.allowed_repo_hosts).await?;

        // A warm container brings its ID (its resources are named by it)
        // and sessiond's token; everything of the user comes with init.
        let warm = inner.pool.claim(&limits);
        let id = warm
            .as_ref()
            .map_or_else(SessionId::generate, |w| w.id.clone());
        let span = tracing::Span::current();
        span.record("session.id", id.as_str());
        span.record("warm", warm.is_some());
        let mut record = new_record(
            &inner.config,
            id.clone(),
            repo.url.clone(),
            req.branch.clone(),
            limits,
            req.owner.clone(),
        );
        let inserted = inner.store.insert_session(&record).await;
        if warm.is_some() {
            // From here the store (or, on failure, nobody) owns it.
            inner.pool.settled(&id);
        }
        if let Err(e) = inserted {
            if let Some(w) = &warm {
                let _ = inner.runtime.remove(&w.id).await;
            }
            return Err(e.into());
        }
        append_status(inner, &mut record).await?;
        let launch = Launch {
            claude_api_key: req.claude_api_key,
            repo_token: req.repo_token,
            repo_url: repo.url,
            warm,
            setup: Setup::New(options),
        };
        self.launch(record, launch, started_at).await
    }

    /// Starts a recorded (`creating`) session: its secrets, its container
    /// (a warm one, or a new one on a fresh or copied workspace) and its
    /// actor. On failure the session ends in `error` with the reason.
    pub(super) async fn launch(
        &self,
        mut record: SessionRecord,
        launch: Launch,
        started_at: tokio::time::Instant,
    ) -> Result<SessionRecord, CoreError> {
        let inner = &self.inner;
        let id = record.id.clone();
        let Launch {
            claude_api_key,
            repo_token,
            repo_url,
            warm,
            setup,
        } = launch;
        let session_token = Token::generate();
        let agent_token = warm
            .as_ref()
            .map_or_else(Token::generate, |w| w.agent_token.clone());
        // Sealed before the container exists, so a crash from here on
        // leaves a session the next orchestrator can adopt.
        let mut secrets = SessionSecrets {
            session_token: session_token.clone(),
            agent_token: agent_token.clone(),
            claude_api_key: claude_api_key.clone(),
            repo_token: repo_token.clone(),
            init: None,
        };
        keep_secrets(inner, &id, &secrets).await?;
        inner.credentials.insert(SessionCredentials {
            session_id: id.clone(),
            token: session_token.clone(),
            claude_api_key,
            repo_token,
            repo_url,
            egress: record.limits.egress,
        });
        let spec = SessionSpec {
            id: id.clone(),
            image: inner.config.image.clone(),
            limits: record.limits,
            agent_token: agent_token.clone(),
            pooled: false,
        };
        let started = match (warm, &setup) {
            (Some(w), _) => Ok(Started::Running(w.placement)),
            (None, Setup::Fork { parent, .. }) => {
                let span =
                    tracing::info_span!("runtime.create", session.id = %id, fork_of = %parent);
                async {
                    inner.runtime.copy_workspace(parent, &spec).await?;
                    inner.runtime.create(&spec).await
                }
                .instrument(span)
                .await
            }
            (None, Setup::New(_)) => {
                let span = tracing::info_span!("runtime.create", session.id = %id);
                inner.runtime.create(&spec).instrument(span).await
            }
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "container start failed");
                inner.credentials.remove(&id);
                if inner.config.seal_key.is_some() {
                    if let Err(rm) = inner.store.delete_sealed_secrets(&id).await {
                        tracing::warn!(session = %id, error = %rm, "forgetting secrets after failed start");
                    }
                }
                if let Err(rm) = inner.runtime.remove(&id).await {
                    tracing::warn!(session = %id, error = %rm, "cleanup after failed start");
                }
                record.state = SessionState::Error;
                record.reason = Some(format!("container could not be started: {e}"));
                append_status(inner, &mut record).await?;
                return Err(e.into());
            }
        };
        // A container that waits for its place (a Pending Pod) leaves the
        // session `starting`: the actor waits for it, and the caller has
        // its answer now.
        let (container_id, gateway_url, agent_url) = match &started {
            Started::Running(p) => (&p.container_id, &p.gateway_url, Some(p.agent_url.clone())),
            Started::Pending {
                container_id,
                gateway_url,
            } => (container_id, gateway_url, None),
        };
        record.container_id = Some(container_id.clone());
        record.state = SessionState::Starting;
        append_status(inner, &mut record).await?;

        let init = match setup {
            Setup::New(options) => init_request(
                &inner.config,
                &id,
                gateway_url,
                &session_token,
                record.branch.clone(),
                record.limits.egress,
                options,
            ),
            Setup::Fork { init, .. } => fork_request(init, &id, gateway_url, &session_token),
        };
        // Again with the exact init, so an adopter's re-init matches it.
        secrets.init = Some(init.clone());
        keep_secrets(inner, &id, &secrets).await?;
        let boot = match agent_url {
            Some(base_url) => Boot::Placed(AgentEndpoint {
                base_url,
                token: agent_token,
            }),
            None => Boot::Pending(agent_token),
        };
        spawn_actor(
            &self.inner,
            record.clone(),
            boot,
            init,
            Start::Created(started_at),
        );
        tracing::info!(session = %id, container = ?record.container_id, "session started");
        Ok(record)
    }
}

/// A new session's record, `creating`, held by this replica from its
/// insert.
pub(super) fn new_record(
    config: &crate::config::ManagerConfig,
    id: SessionId,
    repo_url: String,
    branch: Option<String>,
    limits: cc_wire::api::SessionLimits,
    owner: String,
) -> SessionRecord {
    let created = now();
    SessionRecord {
        id,
        container_id: None,
        state: SessionState::Creating,
        reason: None,
        repo_url,
        branch,
        limits,
        owner,
        created_at: created,
        updated_at: created,
        expires_at: created + Duration::from_secs(limits.timeout_secs),
        last_seq: 0,
        agent_seq: 0,
        usage: Default::default(),
        lease: crate::lease::Lease {
            holder: Some(config.replica.id.clone()),
            fence: 1,
        },
    }
}

/// What [`Manager::launch`] starts a recorded session with.
pub(super) struct Launch {
    pub claude_api_key: String,
    pub repo_token: Option<String>,
    pub repo_url: String,
    /// A warm pool container to use instead of a new one.
    pub warm: Option<super::pool::Warm>,
    pub setup: Setup,
}

/// Where a new session's workspace and setup come from.
pub(super) enum Setup {
    /// A create: a fresh clone, the admin's and the request's options.
    New(crate::options::ResolvedOptions),
    /// A fork: a copy of `parent`'s workspace, and its setup.
    Fork {
        parent: SessionId,
        init: InitRequest,
    },
}

/// Stores the session's secrets sealed, when the deployment keeps them.
async fn keep_secrets<R, A, S: Store>(
    inner: &super::Inner<R, A, S>,
    id: &SessionId,
    secrets: &SessionSecrets,
) -> Result<(), CoreError> {
    if let Some(key) = &inner.config.seal_key {
        let sealed = crate::secrets::seal(key, id, secrets);
        inner.store.put_sealed_secrets(id, &sealed).await?;
    }
    Ok(())
}

/// Longest repository token accepted (forge tokens are ~40-100 characters).
const MAX_REPO_TOKEN_LEN: usize = 1024;

fn check_repo_token(token: &str) -> Result<(), CoreError> {
    if token.is_empty()
        || token.len() > MAX_REPO_TOKEN_LEN
        || token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CoreError::invalid(
            "invalid_repo_token",
            "repoToken must be 1 to 1024 characters without spaces or control characters",
        ));
    }
    Ok(())
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

/// Records the record's current state and reason: a `status` event and
/// the record itself, in one transaction (`Store::record_change`), then
/// tells the session's webhooks.
pub(crate) async fn append_status<R, A, S: Store>(
    inner: &Inner<R, A, S>,
    record: &mut SessionRecord,
) -> Result<(), CoreError> {
    let msg = ServerMessage::Status {
        seq: record.last_seq + 1,
        state: record.state,
        timestamp: now_ms(),
        reason: record.reason.clone(),
    };
    record.updated_at = now();
    inner.store.record_change(record, &[msg], None).await?;
    record.last_seq += 1;
    super::notices::on_status(inner.config.notices.as_ref(), record, None);
    Ok(())
}

pub(crate) fn init_request(
    config: &crate::config::ManagerConfig,
    id: &SessionId,
    gateway_url: &str,
    token: &Token,
    branch: Option<String>,
    egress: EgressMode,
    options: crate::options::ResolvedOptions,
) -> InitRequest {
    // The session's own variables first: ours below always win (the
    // policy already refuses names that collide).
    let mut env: BTreeMap<String, String> = options.env;
    // A session-scoped token: the gateway swaps it for the real key.
    env.insert("ANTHROPIC_API_KEY".into(), token.expose().to_owned());
    // Without these Claude Code first calls api.anthropic.com for settings
    // and stalls ~17 s when that fails.
    env.insert(
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
        "1".into(),
    );
    env.insert("DISABLE_AUTOUPDATER".into(), "1".into());
    let proxied = match egress {
        EgressMode::None => false,
        EgressMode::Allowlist => !config.egress_allow.is_empty(),
        EgressMode::Open => true,
    };
    let mut init = InitRequest {
        clone_url: String::new(),
        git_headers: vec![format!("Authorization: Bearer {}", token.expose())],
        branch,
        claude: ClaudeSettings {
            // Claude Code takes the last of a repeated option, so the
            // session's (e.g. `--permission-mode`) override the defaults.
            args: config
                .claude_args
                .iter()
                .cloned()
                .chain(options.args)
                .collect(),
            env,
        },
        instructions: options.instructions,
        push_branch: Some(crate::push::session_branch(id)),
        permission_timeout_secs: Some(config.permission_timeout.as_secs()),
        fork: false,
    };
    point_at_gateway(&mut init, id, gateway_url, token, proxied);
    init
}

/// Points a setup at the gateway at `gateway_url`: a session woken in a
/// new container may reach the gateway at another address (its new
/// network's), and everything else of its setup stays as it was.
pub(crate) fn retarget(init: &mut InitRequest, id: &SessionId, gateway_url: &str, token: &Token) {
    let proxied = init.claude.env.contains_key("HTTPS_PROXY");
    point_at_gateway(init, id, gateway_url, token, proxied);
}

/// A fork's setup: its parent's (Claude Code's arguments and environment,
/// the branch it started from), with the fork's own token, branch and
/// relay paths, and the conversation forked rather than resumed.
pub(crate) fn fork_request(
    parent: InitRequest,
    id: &SessionId,
    gateway_url: &str,
    token: &Token,
) -> InitRequest {
    let mut init = parent;
    init.git_headers = vec![format!("Authorization: Bearer {}", token.expose())];
    init.claude
        .env
        .insert("ANTHROPIC_API_KEY".into(), token.expose().to_owned());
    init.push_branch = Some(crate::push::session_branch(id));
    init.fork = true;
    retarget(&mut init, id, gateway_url, token);
    init
}

/// The parts of a setup that name the gateway: the clone URL, the
/// Anthropic relay and, when the session may use it, the CONNECT proxy.
fn point_at_gateway(
    init: &mut InitRequest,
    id: &SessionId,
    gateway_url: &str,
    token: &Token,
    proxied: bool,
) {
    let base = gateway_url.trim_end_matches('/').to_owned();
    // The gateway's `host:port` for the proxy URL, and its bare host
    // (IPv6 without brackets) for NO_PROXY.
    let parsed = url::Url::parse(&base).ok();
    let authority = parsed
        .as_ref()
        .map_or(base.clone(), |u| u.authority().to_owned());
    let bare_gw = match parsed.as_ref().and_then(|u| u.host()) {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(host) => host.to_string(),
        None => authority.clone(),
    };
    let env = &mut init.claude.env;
    env.insert(
        "ANTHROPIC_BASE_URL".into(),
        format!("{base}/anthropic/{id}"),
    );
    if proxied {
        // The gateway's CONNECT proxy, for the admin's allowlisted hosts;
        // the relays on the gateway itself are reached directly.
        let proxy = format!("http://{id}:{}@{authority}", token.expose());
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            env.insert(name.into(), proxy.clone());
        }
        env.insert("NO_PROXY".into(), bare_gw.clone());
        env.insert("no_proxy".into(), bare_gw);
    }
    init.clone_url = format!("{base}/git/{id}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forks_setup_is_its_parents_made_for_the_fork() {
        let mut config = crate::config::ManagerConfig::new("img", 1);
        config.egress_allow = vec!["pypi.org".into()];
        for egress in [EgressMode::None, EgressMode::Open] {
            let make = |id: &SessionId, token: &Token, gw: &str| {
                init_request(
                    &config,
                    id,
                    gw,
                    token,
                    Some("dev".into()),
                    egress,
                    Default::default(),
                )
            };
            let parent = make(
                &SessionId::generate(),
                &Token::generate(),
                "http://10.1.0.1:7",
            );
            let (id, token) = (SessionId::generate(), Token::generate());
            let fork = fork_request(parent, &id, "http://10.1.0.17:7", &token);
            let mut expected = make(&id, &token, "http://10.1.0.17:7");
            expected.fork = true;
            assert_eq!(fork, expected, "{egress:?}");
        }
    }

    #[test]
    fn a_retargeted_setup_is_the_setup_made_for_the_new_gateway() {
        let mut config = crate::config::ManagerConfig::new("img", 1);
        config.egress_allow = vec!["pypi.org".into()];
        let (id, token) = (SessionId::generate(), Token::generate());
        for egress in [EgressMode::None, EgressMode::Allowlist, EgressMode::Open] {
            let make =
                |gw: &str| init_request(&config, &id, gw, &token, None, egress, Default::default());
            let mut moved = make("http://172.30.0.1:7001");
            retarget(&mut moved, &id, "http://172.30.0.17:7001/", &token);
            assert_eq!(moved, make("http://172.30.0.17:7001"), "{egress:?}");
        }
    }

    fn init_for(gateway_url: &str, egress: EgressMode) -> InitRequest {
        let mut config = crate::config::ManagerConfig::new("img", 1);
        config.egress_allow = vec!["pypi.org".into()];
        init_request(
            &config,
            &SessionId::generate(),
            gateway_url,
            &Token::generate(),
            None,
            egress,
            Default::default(),
        )
    }

    #[test]
    fn sessions_reach_the_gateway_at_the_url_the_runtime_gives() {
        let init = init_for("http://172.20.0.1:8081", EgressMode::Allowlist);
        assert!(init.clone_url.starts_with("http://172.20.0.1:8081/git/"));
        let env = &init.claude.env;
        assert!(env["ANTHROPIC_BASE_URL"].starts_with("http://172.20.0.1:8081/anthropic/"));
        assert!(
            env["HTTPS_PROXY"].ends_with("@172.20.0.1:8081"),
            "{}",
            env["HTTPS_PROXY"]
        );
        assert_eq!(env["NO_PROXY"], "172.20.0.1");

        // A cluster Service name, an IPv6 address, a trailing slash.
        let init = init_for("http://gateway.cc.svc:8081/", EgressMode::Open);
        assert!(init
            .clone_url
            .starts_with("http://gateway.cc.svc:8081/git/"));
        assert_eq!(init.claude.env["NO_PROXY"], "gateway.cc.svc");
        let init = init_for("http://[fd00::1]:8081", EgressMode::Open);
        assert!(init.claude.env["HTTPS_PROXY"].ends_with("@[fd00::1]:8081"));
        assert_eq!(init.claude.env["NO_PROXY"], "fd00::1");
        // No egress: no proxy at all.
        let init = init_for("http://172.20.0.1:8081", EgressMode::None);
        assert!(!init.claude.env.contains_key("HTTPS_PROXY"));
    }
}
