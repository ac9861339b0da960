//! Where the client commands find the server, the token and the Claude API
//! key: flags, then the environment, then the config file
//! (`$XDG_CONFIG_HOME/claudecluster/config.toml`, else
//! `~/.config/claudecluster/config.toml`).
//!
//! The file holds three string keys, so it is read by a small parser of
//! `key = "value"` lines (comments and blank lines allowed) rather than a
//! TOML library: the subset is all the file needs, and an unknown key or a
//! malformed line is an error that names the line.

use crate::ui::Exit;
use cc_client::Client;
use clap::Args;
use std::path::{Path, PathBuf};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Connection flags shared by every client command.
#[derive(Args, Clone, Debug, Default)]
pub struct ConnArgs {
    /// URL of the ClaudeCluster server [env: CLAUDECLUSTER_URL; default: http://127.0.0.1:8080].
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// API token, sent as `Authorization: Bearer` [env: CLAUDECLUSTER_TOKEN].
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Config file (default: $XDG_CONFIG_HOME/claudecluster/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The settings in force after flags, environment and file are merged.
#[derive(Debug, Default, PartialEq)]
pub struct Settings {
    pub url: String,
    pub token: Option<String>,
    pub api_key: Option<String>,
}

/// The values of a config file.
#[derive(Debug, Default, PartialEq)]
pub struct FileConfig {
    pub url: Option<String>,
    pub token: Option<String>,
    pub api_key: Option<String>,
}

impl ConnArgs {
    /// Merges flags > environment > file. `api_key_flag` is the command's
    /// `--api-key`, when it has one.
    pub fn settings(&self, api_key_flag: Option<&str>) -> Result<Settings, Exit> {
        self.settings_with(api_key_flag, |k| std::env::var(k).ok())
    }

    /// [`Self::settings`] with the environment read through `lookup`, so a
    /// test decides what the environment holds instead of inheriting it.
    fn settings_with(
        &self,
        api_key_flag: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, Exit> {
        let env = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let file = match &self.config {
            Some(p) => read_file(p)?.ok_or_else(|| {
                Exit::usage(format!("config file {} does not exist", p.display()))
            })?,
            None => match default_path() {
                Some(p) => read_file(&p)?.unwrap_or_default(),
                None => FileConfig::default(),
            },
        };
        Ok(Settings {
            url: self
                .url
                .clone()
                .or_else(|| env("CLAUDECLUSTER_URL"))
                .or(file.url)
                .unwrap_or_else(|| DEFAULT_URL.into()),
            token: self
                .token
                .clone()
                .or_else(|| env("CLAUDECLUSTER_TOKEN"))
                .or(file.token),
            api_key: api_key_flag
                .map(str::to_owned)
                .or_else(|| env("ANTHROPIC_API_KEY"))
                .or(file.api_key),
        })
    }

    /// The merged settings and a client for them.
    pub fn client(&self, api_key_flag: Option<&str>) -> Result<(Settings, Client), Exit> {
        let s = self.settings(api_key_flag)?;
        if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
            return Err(Exit::usage(format!(
                "the server URL {:?} must start with http:// or https://",
                s.url
            )));
        }
        let client = Client::with_token(s.url.clone(), s.token.clone())
            .map_err(|e| Exit::usage(e.to_string()))?;
        Ok((s, client))
    }
}

pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("claudecluster").join("config.toml"))
}

/// `None` when the file does not exist.
fn read_file(path: &Path) -> Result<Option<FileConfig>, Exit> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|e| Exit::usage(format!("config file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Exit::usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))),
    }
}

/// Parses `key = "value"` lines; `#` starts a comment.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let mut cfg = FileConfig::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let lineno = n + 1;
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {lineno}: expected `key = \"value\"`"))?;
        let value = parse_value(value.trim())
            .ok_or_else(|| format!("line {lineno}: the value must be a quoted string"))?;
        let slot = match key.trim() {
            "url" => &mut cfg.url,
            "token" => &mut cfg.token,
            "api_key" => &mut cfg.api_key,
            other => {
                return Err(format!(
                    "line {lineno}: unknown key `{other}` (known: url, token, api_key)"
                ))
            }
        };
        *slot = Some(value);
    }
    Ok(cfg)
}

/// A `"double"` or `'single'` quoted string, optionally followed by a
/// comment; `\"` and `\\` escapes in double quotes.
fn parse_value(v: &str) -> Option<String> {
    let mut chars = v.chars();
    let quote = chars.next().filter(|c| *c == '"' || *c == '\'')?;
    let mut out = String::new();
    let mut escaped = false;
    for c in chars.by_ref() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' && quote == '"' {
            escaped = true;
        } else if c == quote {
            let rest = chars.as_str().trim();
            return (rest.is_empty() || rest.starts_with('#')).then_some(out);
        } else {
            out.push(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_keys_with_comments() {
        let cfg = parse(
            "# ClaudeCluster\nurl = \"http://h:1\"  # the server\n\ntoken='t0k'\napi_key = \"sk-\\\"x\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg,
            FileConfig {
                url: Some("http://h:1".into()),
                token: Some("t0k".into()),
                api_key: Some("sk-\"x".into()),
            }
        );
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        assert!(parse("url = http://h").unwrap_err().contains("line 1"));
        assert!(parse("\nport = \"1\"")
            .unwrap_err()
            .contains("unknown key `port`"));
        assert!(parse("url").is_err());
        assert!(parse("url = \"open").is_err());
        assert!(parse("url = \"a\" b").is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "url = \"http://file:1\"\ntoken = \"file\"\n").unwrap();
        let args = ConnArgs {
            url: Some("http://flag:2".into()),
            token: None,
            config: Some(path),
        };
        // Whatever the test's own environment holds, this one is empty…
        let s = args.settings_with(Some("key"), |_| None).unwrap();
        assert_eq!(s.url, "http://flag:2");
        assert_eq!(s.api_key.as_deref(), Some("key"));
        assert_eq!(s.token.as_deref(), Some("file"));
        // …and here the environment wins over the file, the flag over both.
        let env = |k: &str| match k {
            "CLAUDECLUSTER_TOKEN" => Some("env".to_owned()),
            "CLAUDECLUSTER_URL" => Some("http://env:3".to_owned()),
            _ => None,
        };
        let s = args.settings_with(None, env).unwrap();
        assert_eq!(s.url, "http://flag:2");
        assert_eq!(s.token.as_deref(), Some("env"));
        assert_eq!(s.api_key, None);
        let flagged = ConnArgs {
            token: Some("flag".into()),
            ..args
        };
        let s = flagged.settings_with(None, env).unwrap();
        assert_eq!(s.token.as_deref(), Some("flag"));
    }
}
