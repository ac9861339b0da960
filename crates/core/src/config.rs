//! Deployment configuration the core needs, and turning a client's limit
//! request into the limits a session gets.

use crate::error::CoreError;
use cc_wire::api::{EgressMode, Quantity, SessionConfigRequest, SessionLimits};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// Admin defaults and maxima for session limits.
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
            },
            max: SessionLimits {
                memory_bytes: 8192 * MIB,
                cpu: 4.0,
                timeout_secs: 24 * 3600,
                // `open` only when the admin says so.
                egress: EgressMode::Allowlist,
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

/// What the core needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Worker image sessions run.
    pub image: String,
    pub limits: LimitsPolicy,
    /// `host:port` pairs of repository hosts allowed even though they are
    /// loopback or private (a git server on the orchestrator's host).
    pub allowed_repo_hosts: Vec<String>,
    /// Port of the gateway listener sessions reach on their network's
    /// gateway address (the host side of the session's bridge).
    pub gateway_port: u16,
    /// How long a new container gets to answer its first health check.
    pub agent_ready_timeout: Duration,
    /// Extra Claude Code arguments for every session.
    pub claude_args: Vec<String>,
    /// What sessions may tell Claude Code (models, budget, tools).
    pub agent: crate::options::AgentPolicy,
    /// A session nobody used for this long ends (`None`: never idle out).
    pub idle_timeout: Option<Duration>,
    /// Pause between reconciler passes (orphans, vanished containers).
    pub reconcile_interval: Duration,
    /// Seals session secrets at rest so a restarted orchestrator can adopt
    /// running sessions; without it they are ended at restart.
    pub seal_key: Option<crate::secrets::SealKey>,
    /// Containers kept started for sessions with the default limits.
    pub warm_pool: usize,
    /// Hosts sessions may reach through the gateway's CONNECT proxy
    /// (`host`, `host:port`, `*.domain`); empty: no egress beyond the
    /// Anthropic and git relays. See [`crate::policy::egress_allowed`].
    pub egress_allow: Vec<String>,
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
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            reconcile_interval: Duration::from_secs(60),
            seal_key: None,
            warm_pool: 0,
            egress_allow: Vec::new(),
        }
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
}
