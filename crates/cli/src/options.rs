//! What Claude Code is told, as flags: the session options of `run` and
//! `session create` ([`OptionArgs`]) and the per-turn overrides of
//! `session send` ([`TurnArgs`]).
//!
//! `--env` values are secrets as far as the CLI is concerned: they are sent
//! to the server and never printed, neither in errors nor in `Debug`.

use crate::ui::Exit;
use cc_core::options::PERMISSION_MODES;
use cc_wire::api::{CommandRequest, SessionOptions};
use clap::builder::PossibleValuesParser;
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Claude Code's settings for the session, asked for at create (the
/// server applies the admin's defaults and refuses what its policy forbids).
#[derive(Args, Clone, Default)]
pub struct OptionArgs {
    /// Model for the session's turns, e.g. claude-sonnet-4-5 (default: the server's).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Model tried when the main one is overloaded.
    #[arg(long, value_name = "MODEL")]
    pub fallback_model: Option<String>,
    /// Claude Code's permission mode (default: bypassPermissions; the
    /// container is the sandbox).
    #[arg(long, value_name = "MODE", value_parser = PossibleValuesParser::new(PERMISSION_MODES.iter().copied()))]
    pub permission_mode: Option<String>,
    /// Tools allowed without asking, comma-separated, e.g. "Read,Bash(git *)".
    #[arg(long, value_name = "TOOLS", value_delimiter = ',')]
    pub allowed_tools: Vec<String>,
    /// Tools removed from the model's tool list, comma-separated, e.g. Bash,WebFetch.
    #[arg(long, value_name = "TOOLS", value_delimiter = ',')]
    pub disallowed_tools: Vec<String>,
    /// Model calls per turn before the turn stops.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<u32>,
    /// Spend limit of the session in USD, e.g. 0.50.
    #[arg(long, value_name = "USD")]
    pub max_budget_usd: Option<f64>,
    /// Text appended to Claude Code's system prompt.
    #[arg(long, value_name = "TEXT")]
    pub append_system_prompt: Option<String>,
    /// File whose text is appended to the checkout's CLAUDE.md (created when absent).
    #[arg(long, value_name = "PATH")]
    pub instructions_file: Option<PathBuf>,
    /// Extra environment for Claude Code and its tools, KEY=VALUE;
    /// repeatable. Values are never printed.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// JSON file of MCP servers: {"name": {"command": …}} or Claude Code's
    /// {"mcpServers": {…}}.
    #[arg(long, value_name = "FILE")]
    pub mcp_config: Option<PathBuf>,
}

/// Help appended to `run` and `session create`.
pub const OPTION_EXAMPLES: &str = "Session options (all optional):
  --model claude-sonnet-4-5 --fallback-model claude-haiku-4-5
  --permission-mode plan --allowed-tools Read,Grep --disallowed-tools Bash,WebFetch
  --max-turns 20 --max-budget-usd 0.50 --append-system-prompt \"answer briefly\"
  --instructions-file ./CLAUDE.extra.md --env LOG_LEVEL=debug --mcp-config ./mcp.json";

// By hand: the derived `Debug` would show the `--env` values.
impl std::fmt::Debug for OptionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&str> = self
            .env
            .iter()
            .map(|kv| kv.split_once('=').map_or("<invalid>", |(k, _)| k))
            .collect();
        f.debug_struct("OptionArgs")
            .field("model", &self.model)
            .field("fallback_model", &self.fallback_model)
            .field("permission_mode", &self.permission_mode)
            .field("allowed_tools", &self.allowed_tools)
            .field("disallowed_tools", &self.disallowed_tools)
            .field("max_turns", &self.max_turns)
            .field("max_budget_usd", &self.max_budget_usd)
            .field("append_system_prompt", &self.append_system_prompt)
            .field("instructions_file", &self.instructions_file)
            .field("env (names)", &env_names)
            .field("mcp_config", &self.mcp_config)
            .finish()
    }
}

impl OptionArgs {
    /// The session options these flags ask for (`None` when no flag was
    /// given); reads `--instructions-file` and `--mcp-config`.
    pub fn request(&self) -> Result<Option<SessionOptions>, Exit> {
        let opts = SessionOptions {
            model: self.model.clone(),
            fallback_model: self.fallback_model.clone(),
            permission_mode: self.permission_mode.clone(),
            allowed_tools: list(&self.allowed_tools),
            disallowed_tools: list(&self.disallowed_tools),
            max_turns: self.max_turns,
            max_budget_usd: self.max_budget_usd,
            append_system_prompt: self.append_system_prompt.clone(),
            mcp_servers: self.mcp_config.as_deref().map(mcp_servers).transpose()?,
            env: env(&self.env)?,
            instructions: self
                .instructions_file
                .as_deref()
                .map(|p| read("--instructions-file", p))
                .transpose()?,
        };
        Ok((opts != SessionOptions::default()).then_some(opts))
    }
}

/// Per-turn overrides of `session send`.
#[derive(Args, Debug, Clone, Default)]
pub struct TurnArgs {
    /// Model for this turn only, e.g. claude-haiku-4-5.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Permission mode for this turn only.
    #[arg(long, value_name = "MODE", value_parser = PossibleValuesParser::new(PERMISSION_MODES.iter().copied()))]
    pub permission_mode: Option<String>,
}

impl TurnArgs {
    /// The command request for `task` with these overrides.
    pub fn request(&self, task: &str) -> CommandRequest {
        CommandRequest {
            command: task.to_owned(),
            model: self.model.clone(),
            permission_mode: self.permission_mode.clone(),
        }
    }
}

/// Tool lists without empty entries (`--allowed-tools a,,b`); `None` when empty.
fn list(items: &[String]) -> Option<Vec<String>> {
    let v: Vec<String> = items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!v.is_empty()).then_some(v)
}

fn read(flag: &str, path: &Path) -> Result<String, Exit> {
    std::fs::read_to_string(path)
        .map_err(|e| Exit::usage(format!("{flag}: cannot read {}: {e}", path.display())))
}

/// `--env KEY=VALUE…`; errors name the argument's position or key, never its value.
fn env(args: &[String]) -> Result<Option<BTreeMap<String, String>>, Exit> {
    let mut out = BTreeMap::new();
    for (i, kv) in args.iter().enumerate() {
        let Some((key, value)) = kv.split_once('=') else {
            return Err(Exit::usage(format!(
                "--env takes KEY=VALUE; the {} --env has no '='",
                ordinal(i + 1)
            )));
        };
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Exit::usage(format!(
                "--env: the {} variable's name is not a valid name (letters, digits and _, not starting with a digit)",
                ordinal(i + 1)
            )));
        }
        if out.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(Exit::usage(format!("--env: {key} is given twice")));
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `--mcp-config FILE`: a JSON object of servers by name, or Claude Code's
/// own format with the servers under `mcpServers`.
fn mcp_servers(path: &Path) -> Result<BTreeMap<String, serde_json::Value>, Exit> {
    let text = read("--mcp-config", path)?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Exit::usage(format!(
            "--mcp-config: {} is not valid JSON: {e}",
            path.display()
        ))
    })?;
    let servers = match value {
        serde_json::Value::Object(mut o) => match o.remove("mcpServers") {
            Some(serde_json::Value::Object(inner)) => inner,
            Some(_) => {
                return Err(Exit::usage(format!(
                    "--mcp-config: in {}, mcpServers must be an object of servers by name",
                    path.display()
                )))
            }
            None => o,
        },
        _ => {
            return Err(Exit::usage(format!(
                "--mcp-config: {} must hold a JSON object of servers by name",
                path.display()
            )))
        }
    };
    Ok(servers.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_no_options() {
        assert_eq!(OptionArgs::default().request().unwrap(), None);
    }

    #[test]
    fn flags_map_to_session_options() {
        let dir = tempfile::tempdir().unwrap();
        let instr = dir.path().join("extra.md");
        std::fs::write(&instr, "Prefer tabs.\n").unwrap();
        let mcp = dir.path().join("mcp.json");
        std::fs::write(
            &mcp,
            r#"{"mcpServers": {"probe": {"command": "/bin/true"}}}"#,
        )
        .unwrap();
        let args = OptionArgs {
            model: Some("m".into()),
            allowed_tools: vec!["Read".into(), " ".into(), "Grep".into()],
            max_budget_usd: Some(0.5),
            instructions_file: Some(instr),
            env: vec!["A=1".into(), "B=x=y".into()],
            mcp_config: Some(mcp),
            ..Default::default()
        };
        let o = args.request().unwrap().unwrap();
        assert_eq!(o.model.as_deref(), Some("m"));
        assert_eq!(o.allowed_tools.unwrap(), ["Read", "Grep"]);
        assert_eq!(o.disallowed_tools, None);
        assert_eq!(o.max_budget_usd, Some(0.5));
        assert_eq!(o.instructions.as_deref(), Some("Prefer tabs.\n"));
        let env = o.env.unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        assert_eq!(
            o.mcp_servers.unwrap()["probe"],
            serde_json::json!({"command": "/bin/true"})
        );
    }

    #[test]
    fn a_bare_object_of_servers_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mcp = dir.path().join("mcp.json");
        std::fs::write(&mcp, r#"{"web": {"type": "http", "url": "https://x"}}"#).unwrap();
        let servers = mcp_servers(&mcp).unwrap();
        assert_eq!(servers.keys().collect::<Vec<_>>(), ["web"]);
        std::fs::write(&mcp, "[1]").unwrap();
        assert!(mcp_servers(&mcp).is_err());
    }

    #[test]
    fn env_errors_and_debug_never_show_values() {
        for bad in ["sk-secret-value", "=sk-secret-value", "1X=sk-secret-value"] {
            let e = env(&[bad.to_owned()]).unwrap_err();
            assert!(!e.to_string().contains("sk-secret"), "{e}");
        }
        let e = env(&["K=sk-secret-1".into(), "K=sk-secret-2".into()]).unwrap_err();
        assert!(!e.to_string().contains("sk-secret"), "{e}");
        assert!(e.to_string().contains('K'), "{e}");
        let args = OptionArgs {
            env: vec!["TOKEN=sk-secret-value".into()],
            ..Default::default()
        };
        let dbg = format!("{args:?}");
        assert!(dbg.contains("TOKEN") && !dbg.contains("sk-secret"), "{dbg}");
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(2), "2nd");
        assert_eq!(ordinal(11), "11th");
        assert_eq!(ordinal(23), "23rd");
    }
}
