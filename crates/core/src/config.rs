//! Deployment configuration the core needs, and turning a client's limit
//! request into the limits a session gets.

use crate::error::CoreError;
use cc_wire::api::{EgressMode, Quantity, SessionConfigRequest, SessionLimits};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// Admin defaults and maxima for session limits. The idle timeout is not
/// here: its default ([`ManagerConfig::idle_timeout`]) also governs
/// sessions stored before it was chosen per session, so it and its bounds
/// live in [`ManagerConfig`], which resolves it
/// ([`ManagerConfig::resolve_limits`]).
#[derive(Debug, Clone)]
pub struct LimitsPolicy {
    pub default: SessionLimits,
    pub max: SessionLimits,
    /// Below this Claude Code itself does not fit (peak RSS ~215 MiB).
    pub min_memory_bytes: u64,
    pub min_cpu: f64,
}

impl Default for LimitsPolicy {
    fn default() -> Self {
        Self {
            default: SessionLimits {
                memory_bytes: 2048 * MIB,
                cpu: 1.0,
                timeout_secs: 3600,
                egress: EgressMode::Allowlist,
                idle_timeout_secs: None,
            },
            max: SessionLimits {
                memory_bytes: 8192 * MIB,
                cpu: 4.0,
                timeout_secs: 24 * 3600,
                // `open` only when the admin says so.
                egress: EgressMode::Allowlist,
                idle_timeout_secs: None,
            },
            min_memory_bytes: 256 * MIB,
            min_cpu: 0.1,
        }
    }
}

impl LimitsPolicy {
    /// Applies defaults and checks bounds; errors name the field.
    pub fn resolve(&self, req: Option<&SessionConfigRequest>) -> Result<SessionLimits, CoreError> {
        let mut limits = self.default;
        let Some(req) = req else { return Ok(limits) };
        if let Some(e) = req.egress {
            if e > self.max.egress {
                return Err(CoreError::forbidden(
                    "egress_not_allowed",
                    format!(
                        "config.egress: {} is above this server's maximum ({})",
                        e.as_str(),
                        self.max.egress.as_str()
                    ),
                ));
            }
            limits.egress = e;
        }
        if let Some(q) = &req.memory {
            let bytes = parse_memory(q).map_err(|m| invalid("config.memory", m))?;
            if bytes < self.min_memory_bytes || bytes > self.max.memory_bytes {
                return Err(invalid(
                    "config.memory",
                    format!(
                        "must be between {} MiB and {} MiB",
                        self.min_memory_bytes / MIB,
                        self.max.memory_bytes / MIB
                    ),
                ));
            }
            limits.memory_bytes = bytes;
        }
        if let Some(q) = &req.cpu {
            let cpu = parse_cpu(q).map_err(|m| invalid("config.cpu", m))?;
            if !(self.min_cpu..=self.max.cpu).contains(&cpu) {
                return Err(invalid(
                    "config.cpu",
                    format!(
                        "must be between {} and {} cores",
                        self.min_cpu, self.max.cpu
                    ),
                ));
            }
            limits.cpu = cpu;
        }
        if let Some(t) = req.timeout {
            if t == 0 || t > self.max.timeout_secs {
                return Err(invalid(
                    "config.timeout",
                    format!("must be between 1 and {} seconds", self.max.timeout_secs),
                ));
            }
            limits.timeout_secs = t;
        }
        Ok(limits)
    }
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> CoreError {
    CoreError::invalid("invalid_config", format!("{field}: {msg}"))
}

/// `"512m"`, `"2g"`, `"1GiB"`, `"300Mi"`, `"1073741824b"`, or a bare number
/// of MiB (`512`, `"512"`).
pub fn parse_memory(q: &Quantity) -> Result<u64, String> {
    let (num, unit) = match q {
        Quantity::Number(n) => (*n, "m".to_owned()),
        Quantity::Text(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (n, u) = s.split_at(split);
            let n: f64 = n
                .parse()
                .map_err(|_| format!("{s:?} is not a size such as \"512m\" or \"2g\""))?;
            let u = u.trim().to_ascii_lowercase();
            (n, if u.is_empty() { "m".to_owned() } else { u })
        }
    };
    let factor = match unit.as_str() {
        "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1024,
        "m" | "mb" | "mi" | "mib" => MIB,
        "g" | "gb" | "gi" | "gib" => 1024 * MIB,
        other => return Err(format!("unknown unit {other:?}; use b, k, m or g")),
    };
    if !num.is_finite() || num <= 0.0 {
        return Err("must be a positive size".into());
    }
    Ok((num * factor as f64) as u64)
}

/// `1`, `0.5`, `"2"`, `"500m"` (millicores).
pub fn parse_cpu(q: &Quantity) -> Result<f64, String> {
    let v = match q {
        Quantity::Number(n) => *n,
        Quantity::Text(s) => {
            let s = s.trim();
            if let Some(milli) = s.strip_suffix('m') {
                milli
                    .parse::<f64>()
                    .map(|m| m / 1000.0)
                    .map_err(|_| format!("{s:?} is not a number of cores"))?
            } else {
                s.parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a number of cores"))?
            }
        }
    };
    if !v.is_finite() || v <= 0.0 {
        return Err("must be a positive number of cores".into());
    }
    Ok(v)
}

/// What an idle session does (`serve --idle-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Its container goes; its workspace, conversation and history stay,
    /// and the next use wakes it.
    Sleep,
    /// It ends, and everything of it goes.
    Terminate,
}

impl IdleAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sleep" => Some(Self::Sleep),
            "terminate" => Some(Self::Terminate),
            _ => None,
        }
    }
}

/// What the core needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Worker image sessions run.
    pub image: String,
    pub limits: LimitsPolicy,
    /// `host:port` pairs of repository hosts allowed even though they are
    /// loopback or private (a git server on the orchestrator's host).
    pub allowed_repo_hosts: Vec<String>,
    /// Port of the gateway listener on this host. The core does not build
    /// addresses from it: each runtime gives the gateway URL its sessions
    /// use ([`crate::Placement::gateway_url`]).
    pub gateway_port: u16,
    /// How long a new container gets to answer its first health check.
    pub agent_ready_timeout: Duration,
    /// Extra Claude Code arguments for every session.
    pub claude_args: Vec<String>,
    /// What sessions may tell Claude Code (models, budget, tools).
    pub agent: crate::options::AgentPolicy,
    /// What model calls cost: the gateway prices every answer it relays
    /// with it, and budgets are checked against that spend.
    pub prices: crate::pricing::PriceTable,
    /// A session nobody used for this long ends (`None`: never idle out),
    /// unless it asked for its own idle timeout. Sessions stored before the
    /// idle timeout was chosen per session follow this one, as it is now.
    pub idle_timeout: Option<Duration>,
    /// Shortest idle timeout a session may ask for (`config.idleTimeout`):
    /// below a minute a user's pause to read output would end the session.
    /// Tests lower it.
    pub min_idle_timeout: Duration,
    /// Longest idle timeout a session may ask for.
    pub max_idle_timeout: Duration,
    /// What a session does when its idle timeout comes. Sleeping needs a
    /// runtime that keeps workspaces ([`crate::Runtime::can_suspend`]) and
    /// a seal key (the session's secrets wait in the store); without them
    /// idle sessions end.
    pub idle_action: IdleAction,
    /// How long a session may sleep before it is ended (`None`: as long
    /// as it likes).
    pub max_sleep: Option<Duration>,
    /// Pause between reconciler passes (orphans, vanished containers).
    pub reconcile_interval: Duration,
    /// Most bytes a session's workspace may hold (`serve --workspace-size`;
    /// `None`: no limit). Runtimes that measure workspaces
    /// ([`crate::Runtime::workspace_sizes`]) are checked every
    /// `workspace_check_interval` and a session over the limit ends in
    /// `error`; the others enforce it themselves (a Kubernetes `emptyDir`
    /// `sizeLimit`).
    pub workspace_limit: Option<u64>,
    pub workspace_check_interval: Duration,
    /// Seals session secrets at rest so a restarted orchestrator can adopt
    /// running sessions; without it they are ended at restart.
    pub seal_key: Option<crate::secrets::SealKey>,
    /// Containers kept started for sessions with the default limits.
    pub warm_pool: usize,
    /// Hosts sessions may reach through the gateway's CONNECT proxy
    /// (`host`, `host:port`, `*.domain`); empty: no egress beyond the
    /// Anthropic and git relays. See [`crate::policy::egress_allowed`].
    pub egress_allow: Vec<String>,
    /// This orchestrator among the replicas sharing the store: the holder
    /// name of its session leases and the URL the others forward
    /// operations on its sessions to (see `crate::lease`). One process
    /// alone keeps the default, `local`, so a restart on the same data
    /// takes its sessions back at once.
    pub replica: crate::lease::Replica,
    /// Where sessions' webhook notices go (the server's dispatcher); none:
    /// nobody listens.
    pub notices: Option<crate::webhook::NoticeSender>,
    /// How long a permission question waits for a person before it is
    /// denied (`serve --permission-timeout`; zero: forever). sessiond
    /// keeps the clock, so a question times out even while no
    /// orchestrator follows the session.
    pub permission_timeout: Duration,
}

impl ManagerConfig {
    pub fn new(image: impl Into<String>, gateway_port: u16) -> Self {
        Self {
            image: image.into(),
            limits: LimitsPolicy::default(),
            allowed_repo_hosts: Vec::new(),
            gateway_port,
            // A container starts in ~0.3 s; 30 s covers a loaded host.
            agent_ready_timeout: Duration::from_secs(30),
            claude_args: vec![
                "--include-partial-messages".into(),
                // The container is the sandbox: tools run without prompts.
                "--permission-mode".into(),
                "bypassPermissions".into(),
            ],
            agent: crate::options::AgentPolicy::default(),
            prices: crate::pricing::PriceTable::default(),
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            min_idle_timeout: Duration::from_secs(60),
            max_idle_timeout: Duration::from_secs(24 * 3600),
            idle_action: IdleAction::Sleep,
            max_sleep: Some(Duration::from_secs(7 * 24 * 3600)),
            reconcile_interval: Duration::from_secs(60),
            workspace_limit: None,
            workspace_check_interval: Duration::from_secs(30),
            seal_key: None,
            warm_pool: 0,
            egress_allow: Vec::new(),
            replica: crate::lease::Replica {
                id: "local".into(),
                url: String::new(),
            },
            notices: None,
            permission_timeout: Duration::from_secs(
                cc_wire::sessiond::DEFAULT_PERMISSION_TIMEOUT_SECS,
            ),
        }
    }

    /// The limits a new session gets: [`LimitsPolicy::resolve`], and its
    /// idle timeout — `config.idleTimeout` within the admin's bounds, else
    /// the admin's default — as `Some(seconds)`, `0` meaning never.
    pub fn resolve_limits(
        &self,
        req: Option<&SessionConfigRequest>,
    ) -> Result<SessionLimits, CoreError> {
        let mut limits = self.limits.resolve(req)?;
        let secs = match req.and_then(|r| r.idle_timeout) {
            Some(t) => {
                // `0` is how "never" is stored; only the admin chooses it.
                let min = self.min_idle_timeout.as_secs().max(1);
                let max = self.max_idle_timeout.as_secs();
                if !(min..=max).contains(&t) {
                    return Err(invalid(
                        "config.idleTimeout",
                        format!("must be between {min} and {max} seconds"),
                    ));
                }
                t
            }
            // A sub-second default (tests) must not read as "never".
            None => self.idle_timeout.map_or(0, |d| d.as_secs().max(1)),
        };
        limits.idle_timeout_secs = Some(secs);
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Quantity {
        Quantity::Text(s.into())
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory(&text("512m")), Ok(512 * MIB));
        assert_eq!(parse_memory(&text("2g")), Ok(2048 * MIB));
        assert_eq!(parse_memory(&text("1GiB")), Ok(1024 * MIB));
        assert_eq!(parse_memory(&Quantity::Number(300.0)), Ok(300 * MIB));
        assert!(parse_memory(&text("lots")).is_err());
        assert!(parse_memory(&text("5t")).is_err());
        assert!(parse_memory(&text("-1g")).is_err());
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu(&Quantity::Number(0.5)), Ok(0.5));
        assert_eq!(parse_cpu(&text("2")), Ok(2.0));
        assert_eq!(parse_cpu(&text("250m")), Ok(0.25));
        assert!(parse_cpu(&text("0")).is_err());
    }

    #[test]
    fn policy_applies_defaults_and_bounds() {
        let p = LimitsPolicy::default();
        assert_eq!(p.resolve(None).unwrap(), p.default);
        let req = SessionConfigRequest {
            memory: Some(text("512m")),
            cpu: Some(Quantity::Number(0.5)),
            timeout: Some(60),
            egress: None,
            idle_timeout: None,
        };
        let l = p.resolve(Some(&req)).unwrap();
        assert_eq!(
            (l.memory_bytes, l.cpu, l.timeout_secs),
            (512 * MIB, 0.5, 60)
        );
        let too_big = SessionConfigRequest {
            memory: Some(text("64g")),
            ..Default::default()
        };
        let err = p.resolve(Some(&too_big)).unwrap_err().to_string();
        assert!(err.contains("config.memory"), "{err}");
        let zero = SessionConfigRequest {
            timeout: Some(0),
            ..Default::default()
        };
        assert!(p
            .resolve(Some(&zero))
            .unwrap_err()
            .to_string()
            .contains("config.timeout"));
    }

    fn idle(secs: Option<u64>) -> SessionConfigRequest {
        SessionConfigRequest {
            idle_timeout: secs,
            ..Default::default()
        }
    }

    #[test]
    fn idle_timeout_within_bounds_is_the_sessions_own() {
        let c = ManagerConfig::new("img", 1);
        for secs in [60, 120, 24 * 3600] {
            let l = c.resolve_limits(Some(&idle(Some(secs)))).unwrap();
            assert_eq!(l.idle_timeout_secs, Some(secs));
        }
        // The other limits resolve as before.
        let req = SessionConfigRequest {
            memory: Some(text("512m")),
            ..idle(Some(300))
        };
        let l = c.resolve_limits(Some(&req)).unwrap();
        assert_eq!(
            (l.memory_bytes, l.idle_timeout_secs),
            (512 * MIB, Some(300))
        );
    }

    #[test]
    fn idle_timeout_out_of_bounds_is_refused_like_other_limits() {
        let c = ManagerConfig::new("img", 1);
        for secs in [0, 59, 24 * 3600 + 1] {
            match c.resolve_limits(Some(&idle(Some(secs)))) {
                Err(CoreError::Invalid {
                    code: "invalid_config",
                    message,
                }) => assert_eq!(
                    message, "config.idleTimeout: must be between 60 and 86400 seconds",
                    "{secs}"
                ),
                other => panic!("{secs}: {other:?}"),
            }
        }
        let mut lowered = ManagerConfig::new("img", 1);
        lowered.min_idle_timeout = Duration::from_secs(1);
        lowered.max_idle_timeout = Duration::from_secs(600);
        let l = lowered.resolve_limits(Some(&idle(Some(1)))).unwrap();
        assert_eq!(l.idle_timeout_secs, Some(1));
        let err = lowered.resolve_limits(Some(&idle(Some(601)))).unwrap_err();
        assert!(err.to_string().contains("between 1 and 600"), "{err}");
    }

    #[test]
    fn absent_idle_timeout_is_the_admins_default_even_never() {
        let mut c = ManagerConfig::new("img", 1);
        c.idle_timeout = Some(Duration::from_secs(900));
        assert_eq!(c.resolve_limits(None).unwrap().idle_timeout_secs, Some(900));
        let l = c.resolve_limits(Some(&idle(None))).unwrap();
        assert_eq!(l.idle_timeout_secs, Some(900));
        // "Never" is stored as 0, which a client cannot ask for itself.
        c.idle_timeout = None;
        assert_eq!(c.resolve_limits(None).unwrap().idle_timeout_secs, Some(0));
        let l = c.resolve_limits(Some(&idle(Some(120)))).unwrap();
        assert_eq!(l.idle_timeout_secs, Some(120));
        // A sub-second default (tests) stays an idle timeout.
        c.idle_timeout = Some(Duration::from_millis(300));
        assert_eq!(c.resolve_limits(None).unwrap().idle_timeout_secs, Some(1));
    }
}
