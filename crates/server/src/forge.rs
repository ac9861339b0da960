//! Pull requests through forge APIs: GitHub pull requests and GitLab merge
//! requests, opened after a session's branch has been pushed.
//!
//! Which forge serves a repository is decided by its URL's `host[:port]`
//! ([`forge_for`]): github.com and gitlab.com are known
//! ([`default_forges`]); self-hosted ones are configured as
//! `KIND,HOST,API_URL` ([`Forge`]'s `FromStr`, the `--forge` flag), and the
//! caller lists configured forges before the defaults so they win.
//!
//! Invariants:
//! - The token travels only in one request header, marked sensitive. It is
//!   never logged and never part of a [`ForgeError`]: a forge's own message
//!   is scrubbed of it before it is kept.
//! - A project path is checked before it goes into an API URL (GitHub:
//!   `owner/repo`; GitLab: `group[/sub...]/repo`, percent-encoded as one
//!   path segment), so a request can only reach the endpoint we mean.
//! - Failures are classified for the caller: the forge said no
//!   ([`ForgeError::Refused`], with its message), it could not be reached
//!   ([`ForgeError::Unreachable`]), it answered something we cannot read
//!   ([`ForgeError::BadResponse`]), or nothing was sent because the request
//!   itself was malformed ([`ForgeError::Invalid`]).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, LOCATION, USER_AGENT};
use reqwest::Url;
use serde_json::{json, Value};

/// Bounds one whole call (connect, send, answer). Opening a pull request
/// is a single small request; a forge that takes longer is treated as
/// unreachable rather than holding the push's caller indefinitely.
pub const FORGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection setup bound of [`client`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The GitHub REST API version we speak.
const GITHUB_API_VERSION: &str = "2022-11-28";

/// GitHub refuses requests without a User-Agent; we name ourselves.
const USER_AGENT_VALUE: &str = "claudecluster";

/// Longest forge message kept in an error (a proxy's error page can be
/// large; a person needs the first sentence).
const MAX_MESSAGE_CHARS: usize = 500;

/// The forge APIs we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForgeKind {
    GitHub,
    GitLab,
}

impl ForgeKind {
    /// `"github"` or `"gitlab"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
        }
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ForgeKind {
    type Err = String;

    /// `github` or `gitlab`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "github" => Ok(ForgeKind::GitHub),
            "gitlab" => Ok(ForgeKind::GitLab),
            other => Err(format!(
                "unknown forge kind {other:?}: expected \"github\" or \"gitlab\""
            )),
        }
    }
}

/// A forge: which API it speaks, the host its repositories are cloned
/// from, and where its API lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forge {
    pub kind: ForgeKind,
    /// `host[:port]` as in the repository URL (lowercase; an IPv6 address
    /// in brackets). Without a port it matches the URL scheme's default.
    pub host: String,
    /// API base URL without a trailing slash, e.g. `https://api.github.com`
    /// or `https://gitlab.com/api/v4`.
    pub api_url: String,
}

impl FromStr for Forge {
    type Err = String;

    /// `KIND,HOST,API_URL`, e.g.
    /// `github,github.example.com,https://github.example.com/api/v3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [kind, host, api_url] = parts.as_slice() else {
            return Err(format!(
                "a forge is KIND,HOST,API_URL (e.g. \
                 github,github.example.com,https://github.example.com/api/v3); \
                 got {} comma-separated part(s)",
                parts.len()
            ));
        };
        let kind: ForgeKind = kind.parse()?;
        if split_host_port(host).is_none() {
            return Err(format!(
                "forge host {host:?} is not HOST or HOST:PORT (an IPv6 address in brackets)"
            ));
        }
        Ok(Forge {
            kind,
            host: host.to_ascii_lowercase(),
            api_url: parse_api_url(api_url)?,
        })
    }
}

/// The API base URL, checked: http(s), no credentials, query or fragment;
/// returned without a trailing slash.
fn parse_api_url(raw: &str) -> Result<String, String> {
    let url = Url::parse(raw).map_err(|e| format!("forge API_URL is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "forge API_URL scheme {:?} is not supported; use http or https",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: it holds a credential.
        return Err("forge API_URL must not contain credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("forge API_URL must not have a query or fragment".into());
    }
    if url.host_str().is_none() {
        return Err("forge API_URL has no host".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The public forges, to be listed after any configured ones.
pub fn default_forges() -> Vec<Forge> {
    vec![
        Forge {
            kind: ForgeKind::GitHub,
            host: "github.com".into(),
            api_url: "https://api.github.com".into(),
        },
        Forge {
            kind: ForgeKind::GitLab,
            host: "gitlab.com".into(),
            api_url: "https://gitlab.com/api/v4".into(),
        },
    ]
}

/// The forge serving `repo_url` and the repository's project path there
/// (`owner/repo`; on GitLab `group/sub/repo`), without the leading `/`,
/// trailing `/` or `.git`.
///
/// The first forge whose host matches decides (list configured forges
/// first). `None` when no forge matches or the URL is not a plain
/// repository URL: not http(s), credentials, a query or fragment, or a path
/// that is not a project path of that forge (wrong depth, empty segments,
/// characters forges do not allow in names, GitLab's `/-/` pages).
pub fn forge_for<'a>(forges: &'a [Forge], repo_url: &str) -> Option<(&'a Forge, String)> {
    let url = Url::parse(repo_url.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let forge = forges.iter().find(|f| {
        let Some((f_host, f_port)) = split_host_port(&f.host) else {
            return false;
        };
        f_host.eq_ignore_ascii_case(host)
            && match f_port {
                Some(p) => p == port,
                None => url.port().is_none(),
            }
    })?;
    let path = url.path().strip_prefix('/')?.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    project_segments(forge.kind, path)?;
    Some((forge, path.to_owned()))
}

/// `host` and optional port of a `host[:port]` (IPv6 in brackets).
fn split_host_port(hp: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        inner.parse::<Ipv6Addr>().ok()?;
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (&hp[..inner.len() + 2], port)
    } else {
        let (host, port) = match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !host_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// The segments of a project path, if it is one on `kind`: GitHub
/// `owner/repo`, GitLab two or more; every segment made of the characters
/// both forges allow in names (`A-Z a-z 0-9 . _ -`), not `.`/`..`, and not
/// GitLab's `-` page separator.
fn project_segments(kind: ForgeKind, project: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = project.split('/').collect();
    let depth_ok = match kind {
        ForgeKind::GitHub => segments.len() == 2,
        ForgeKind::GitLab => segments.len() >= 2,
    };
    let names_ok = segments.iter().all(|s| {
        !s.is_empty()
            && !matches!(*s, "." | ".." | "-")
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    (depth_ok && names_ok).then_some(segments)
}

/// What to open.
#[derive(Debug, Clone)]
pub struct PullRequestSpec<'a> {
    pub title: &'a str,
    pub body: &'a str,
    /// The pushed branch (GitHub also takes `owner:branch` for a fork).
    pub head: &'a str,
    /// The branch to merge into.
    pub base: &'a str,
    /// Open as a draft (GitLab: the title gets the `Draft: ` prefix).
    pub draft: bool,
}

/// The pull (merge) request the forge opened.
#[derive(Debug, Clone)]
pub struct OpenedPullRequest {
    /// GitHub's `number`; GitLab's `iid` (the `!N` within the project).
    pub number: u64,
    /// Its web page (`html_url` / `web_url`).
    pub url: String,
}

/// Why no pull request was opened. Messages are for a person and never hold
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// The forge answered with an error status; `message` is its own
    /// explanation (e.g. "Bad credentials", "A pull request already exists
    /// for ...").
    #[error("the forge refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("the forge could not be reached: {0}")]
    Unreachable(String),
    /// An answer we cannot use (not JSON, or missing the number or URL).
    #[error("the forge gave an unexpected answer: {0}")]
    BadResponse(String),
    /// Nothing was sent: the project path or token cannot make a request.
    #[error("no request was sent to the forge: {0}")]
    Invalid(String),
}

impl ForgeError {
    /// A stable machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ForgeError::Refused { .. } => "forge_refused",
            ForgeError::Unreachable(_) => "forge_unreachable",
            ForgeError::BadResponse(_) => "forge_bad_response",
            ForgeError::Invalid(_) => "forge_invalid_request",
        }
    }
}

/// An HTTP client suited to [`open_pull_request`]: bounded connection
/// setup, and no redirects — a redirect could carry the token's header to a
/// host nobody configured (reqwest strips `Authorization` across hosts, not
/// GitLab's `PRIVATE-TOKEN`), and would turn the POST into a GET anyway.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT_VALUE)
        .build()
}

/// Opens a pull request (GitHub) or merge request (GitLab) on `project`
/// (as returned by [`forge_for`]) with `token`.
///
/// GitHub: `POST {api}/repos/{owner}/{repo}/pulls`; GitLab:
/// `POST {api}/projects/{url-encoded path}/merge_requests`. Any 2xx with
/// the number and web URL is success. Use a client that does not follow
/// redirects (see [`client`]); the whole call is bounded by
/// [`FORGE_TIMEOUT`].
pub async fn open_pull_request(
    client: &reqwest::Client,
    forge: &Forge,
    project: &str,
    token: &str,
    spec: &PullRequestSpec<'_>,
) -> Result<OpenedPullRequest, ForgeError> {
    let Some(segments) = project_segments(forge.kind, project) else {
        let expected = match forge.kind {
            ForgeKind::GitHub => "owner/repo",
            ForgeKind::GitLab => "group/repo or group/subgroup/.../repo",
        };
        return Err(ForgeError::Invalid(format!(
            "{project:?} is not a {} project path (expected {expected})",
            forge.kind
        )));
    };
    let secret = token_header(forge.kind, token)?;
    let api = forge.api_url.trim_end_matches('/');
    let request = match forge.kind {
        ForgeKind::GitHub => client
            .post(format!("{api}/repos/{}/{}/pulls", segments[0], segments[1]))
            .header(AUTHORIZATION, secret)
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", GITHUB_API_VERSION)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .json(&json!({
                "title": spec.title,
                "body": spec.body,
                "head": spec.head,
                "base": spec.base,
                "draft": spec.draft,
            })),
        ForgeKind::GitLab => client
            .post(format!(
                "{api}/projects/{}/merge_requests",
                encode_segment(project)
            ))
            .header("PRIVATE-TOKEN", secret)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .json(&json!({
                "source_branch": spec.head,
                "target_branch": spec.base,
                "title": gitlab_title(spec.title, spec.draft),
                "description": spec.body,
            })),
    };
    let resp = request
        .timeout(FORGE_TIMEOUT)
        .send()
        .await
        .map_err(|e| ForgeError::Unreachable(describe_send_error(forge, &e)))?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await;
    if !status.is_success() {
        let message = match (&body, location) {
            (_, Some(to)) if status.is_redirection() => format!(
                "redirected to {to}; check the forge's API URL ({})",
                forge.api_url
            ),
            (Ok(bytes), _) => refusal_message(bytes).unwrap_or_default(),
            (Err(_), _) => String::new(),
        };
        let message = if message.trim().is_empty() {
            status.canonical_reason().unwrap_or("no message").to_owned()
        } else {
            message
        };
        return Err(ForgeError::Refused {
            status: status.as_u16(),
            message: scrub(&message, token),
        });
    }
    let bytes = body.map_err(|e| {
        ForgeError::BadResponse(format!(
            "{} answered {} but its body could not be read: {}",
            forge.kind,
            status.as_u16(),
            error_chain(&e)
        ))
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
        ForgeError::BadResponse(format!(
            "{} answered {} with a body that is not JSON",
            forge.kind,
            status.as_u16()
        ))
    })?;
    let (number_key, url_key) = match forge.kind {
        ForgeKind::GitHub => ("number", "html_url"),
        ForgeKind::GitLab => ("iid", "web_url"),
    };
    let number = value.get(number_key).and_then(Value::as_u64);
    let url = value.get(url_key).and_then(Value::as_str);
    match (number, url) {
        (Some(number), Some(url)) => Ok(OpenedPullRequest {
            number,
            url: url.to_owned(),
        }),
        _ => Err(ForgeError::BadResponse(format!(
            "{} answered {} without `{number_key}` and `{url_key}`",
            forge.kind,
            status.as_u16()
        ))),
    }
}

/// The header value carrying `token`, marked sensitive.
fn token_header(kind: ForgeKind, token: &str) -> Result<HeaderValue, ForgeError> {
    let bad = || {
        // Not echoed: it is the secret.
        ForgeError::Invalid(
            "the forge token is empty or has characters a header cannot carry".into(),
        )
    };
    if token.trim().is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let raw = match kind {
        ForgeKind::GitHub => format!("Bearer {token}"),
        ForgeKind::GitLab => token.to_owned(),
    };
    let mut value = HeaderValue::from_str(&raw).map_err(|_| bad())?;
    value.set_sensitive(true);
    Ok(value)
}

/// GitLab marks drafts by title; an existing prefix is not doubled.
fn gitlab_title(title: &str, draft: bool) -> String {
    let prefixed = ["draft:", "[draft]", "(draft)"].iter().any(|p| {
        title
            .get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    });
    if draft && !prefixed {
        format!("Draft: {title}")
    } else {
        title.to_owned()
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a
/// GitLab project path (`group/sub/repo`) is one path segment
/// (`group%2Fsub%2Frepo`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The forge's explanation in an error body.
///
/// GitHub: `message` plus the first `errors[]` entry (its `message`, or
/// `field code`). GitLab: `message` as a string, an array of strings or an
/// object of field → messages; or `error` (parameter validation). A body
/// that is not JSON gives its first line, unless it looks like HTML.
fn refusal_message(bytes: &[u8]) -> Option<String> {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        let text = String::from_utf8_lossy(bytes);
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        return (!line.starts_with('<')).then(|| line.to_owned());
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(message) = value.get("message").and_then(flatten_message) {
        parts.push(message);
    }
    if let Some(first) = value
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        let detail = match first {
            Value::String(s) => Some(s.clone()),
            Value::Object(_) => first
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    let field = first.get("field").and_then(Value::as_str)?;
                    let code = first
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("invalid");
                    Some(format!("{field} {}", code.replace('_', " ")))
                }),
            _ => None,
        };
        parts.extend(detail.filter(|d| !d.trim().is_empty()));
    }
    if parts.is_empty() {
        for key in ["error", "error_description"] {
            if let Some(text) = value.get(key).and_then(flatten_message) {
                parts.push(text);
                break;
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// A message that is a string, a list of strings, or (GitLab model
/// errors) an object of field → string or list.
fn flatten_message(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(flatten_message)
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(fields) => fields
            .iter()
            .filter_map(|(field, v)| flatten_message(v).map(|m| format!("{field} {m}")))
            .collect::<Vec<_>>()
            .join("; "),
        _ => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

/// A forge message made safe to show: the token removed wherever it was
/// echoed, control characters flattened, length bounded.
fn scrub(message: &str, token: &str) -> String {
    let redacted = if token.is_empty() {
        message.to_owned()
    } else {
        message.replace(token, "[redacted]")
    };
    let flat: String = redacted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat.to_owned(),
    }
}

/// Why a request got no answer, naming the forge's API (never a header).
fn describe_send_error(forge: &Forge, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!(
            "{} API at {} did not answer within {}s",
            forge.kind,
            forge.api_url,
            FORGE_TIMEOUT.as_secs()
        );
    }
    format!(
        "{} API at {}: {}",
        forge.kind,
        forge.api_url,
        error_chain(e)
    )
}

/// An error's causes, outermost first, without reqwest's own "error
/// sending request for url (...)" wrapper when it has a cause.
fn error_chain(e: &reqwest::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge(kind: ForgeKind, host: &str) -> Forge {
        Forge {
            kind,
            host: host.into(),
            api_url: format!("https://{host}/api"),
        }
    }

    #[test]
    fn forge_parses_kind_host_and_api_url() {
        let f: Forge = "github,github.example.com,https://github.example.com/api/v3"
            .parse()
            .unwrap();
        assert_eq!(
            f,
            Forge {
                kind: ForgeKind::GitHub,
                host: "github.example.com".into(),
                api_url: "https://github.example.com/api/v3".into(),
            }
        );
        let f: Forge = " GitLab , Git.Example.COM:8443 , http://10.0.0.5:8080/api/v4/ "
            .parse()
            .unwrap();
        assert_eq!(f.kind, ForgeKind::GitLab);
        assert_eq!(f.host, "git.example.com:8443");
        assert_eq!(f.api_url, "http://10.0.0.5:8080/api/v4");
        let f: Forge = "github,[::1]:3000,http://[::1]:3000".parse().unwrap();
        assert_eq!(f.host, "[::1]:3000");
    }

    #[test]
    fn forge_refuses_malformed_specs_clearly() {
        let err = |s: &str| s.parse::<Forge>().unwrap_err();
        assert!(err("github,github.com").contains("KIND,HOST,API_URL"));
        assert!(err("github,a,b,c").contains("got 4"));
        assert!(err("gitea,h,https://h/api").contains("unknown forge kind \"gitea\""));
        for host in [
            "", "h/x", "user@h", "h:", "h:0", "h:99999", "h:+1", "::1", "[zz]",
        ] {
            assert!(
                err(&format!("github,{host},https://h/api")).contains("forge host"),
                "{host:?}"
            );
        }
        assert!(err("github,h,not a url").contains("not a valid URL"));
        assert!(err("github,h,ftp://h/api").contains("scheme \"ftp\""));
        let creds = err("github,h,https://me:s3cret@h/api");
        assert!(creds.contains("credentials") && !creds.contains("s3cret"));
        assert!(err("github,h,https://h/api?x=1").contains("query"));
    }

    #[test]
    fn kinds_display_as_their_names() {
        assert_eq!(ForgeKind::GitHub.to_string(), "github");
        assert_eq!(ForgeKind::GitLab.to_string(), "gitlab");
        assert_eq!("GitHub".parse::<ForgeKind>(), Ok(ForgeKind::GitHub));
    }

    #[test]
    fn forge_for_github_https_url() {
        let forges = default_forges();
        for url in [
            "https://github.com/octo/hello",
            "https://github.com/octo/hello.git",
            "https://github.com/octo/hello/",
            "https://github.com/octo/hello.git/",
            "https://GitHub.COM/octo/hello",
            "https://github.com:443/octo/hello",
        ] {
            let (f, project) = forge_for(&forges, url).unwrap_or_else(|| panic!("{url}"));
            assert_eq!(f.kind, ForgeKind::GitHub, "{url}");
            assert_eq!(f.api_url, "https://api.github.com");
            assert_eq!(project, "octo/hello", "{url}");
        }
        // Case of the path is kept: the forge decides what it means.
        let (_, project) = forge_for(&forges, "https://github.com/Octo/Hello.js").unwrap();
        assert_eq!(project, "Octo/Hello.js");
    }

    #[test]
    fn forge_for_gitlab_subgroups() {
        let forges = default_forges();
        let (f, project) =
            forge_for(&forges, "https://gitlab.com/group/sub/deeper/repo.git").unwrap();
        assert_eq!(f.kind, ForgeKind::GitLab);
        assert_eq!(f.api_url, "https://gitlab.com/api/v4");
        assert_eq!(project, "group/sub/deeper/repo");
        assert!(forge_for(&forges, "https://gitlab.com/group/repo/-/tree/main").is_none());
        // GitHub has no subgroups.
        assert!(forge_for(&forges, "https://github.com/octo/hello/tree/main").is_none());
    }

    #[test]
    fn forge_for_loopback_with_port() {
        let forges = vec![forge(ForgeKind::GitHub, "127.0.0.1:8081")];
        let (f, project) = forge_for(&forges, "http://127.0.0.1:8081/owner/repo.git").unwrap();
        assert_eq!(f.host, "127.0.0.1:8081");
        assert_eq!(project, "owner/repo");
        // Same host, other port; or no port (the scheme's default).
        assert!(forge_for(&forges, "http://127.0.0.1:8082/owner/repo.git").is_none());
        assert!(forge_for(&forges, "http://127.0.0.1/owner/repo.git").is_none());
        // A forge given without a port matches only the default port.
        let forges = vec![forge(ForgeKind::GitLab, "git.example.com")];
        assert!(forge_for(&forges, "https://git.example.com/g/r").is_some());
        assert!(forge_for(&forges, "https://git.example.com:8443/g/r").is_none());
        let forges = vec![forge(ForgeKind::GitLab, "[::1]:3000")];
        assert!(forge_for(&forges, "http://[::1]:3000/g/r").is_some());
    }

    #[test]
    fn forge_for_unknown_host_or_odd_url_is_none() {
        let forges = default_forges();
        for url in [
            "https://example.com/octo/hello",
            "https://github.com.evil.example/octo/hello",
            "https://notgithub.com/octo/hello",
            "https://user@github.com/octo/hello",
            "https://user:tok@github.com/octo/hello",
            "https://github.com/octo/hello?tab=x",
            "https://github.com/octo/hello#readme",
            "ssh://git@github.com/octo/hello.git",
            "git@github.com:octo/hello.git",
            "https://github.com/",
            "https://github.com/octo",
            "https://github.com/octo//hello",
            "https://github.com/octo/hel%20lo",
            "https://github.com/octo/.git",
            "not a url",
            "",
        ] {
            assert!(forge_for(&forges, url).is_none(), "{url}");
        }
    }

    #[test]
    fn configured_forges_come_first() {
        let mut forges = vec![Forge {
            kind: ForgeKind::GitHub,
            host: "github.com".into(),
            api_url: "https://proxy.example/api".into(),
        }];
        forges.extend(default_forges());
        let (f, _) = forge_for(&forges, "https://github.com/o/r").unwrap();
        assert_eq!(f.api_url, "https://proxy.example/api");
    }

    #[test]
    fn gitlab_project_is_one_encoded_segment() {
        assert_eq!(encode_segment("group/sub/repo"), "group%2Fsub%2Frepo");
        assert_eq!(encode_segment("a.b_c-d~e"), "a.b_c-d~e");
        assert_eq!(encode_segment("a b+é"), "a%20b%2B%C3%A9");
    }

    #[test]
    fn drafts_are_marked_in_gitlab_titles_once() {
        assert_eq!(gitlab_title("Fix it", true), "Draft: Fix it");
        assert_eq!(gitlab_title("Fix it", false), "Fix it");
        assert_eq!(gitlab_title("draft: Fix it", true), "draft: Fix it");
    }

    #[test]
    fn refusal_messages_are_read_from_either_forge() {
        let msg = |v: Value| refusal_message(v.to_string().as_bytes());
        assert_eq!(
            msg(json!({"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "code": "custom",
                 "message": "A pull request already exists for octo:feature."},
                {"message": "second"}
            ], "documentation_url": "https://docs.github.com/rest"})),
            Some("Validation Failed: A pull request already exists for octo:feature.".into())
        );
        assert_eq!(
            msg(json!({"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "field": "head", "code": "missing_field"}
            ]})),
            Some("Validation Failed: head missing field".into())
        );
        assert_eq!(
            msg(json!({"message": "401 Unauthorized"})),
            Some("401 Unauthorized".into())
        );
        assert_eq!(
            msg(
                json!({"message": ["Another open merge request already exists for this source branch: !1"]})
            ),
            Some("Another open merge request already exists for this source branch: !1".into())
        );
        assert_eq!(
            msg(json!({"message": {"source_branch": ["can't be blank"], "title": "is too long"}})),
            Some("source_branch can't be blank; title is too long".into())
        );
        assert_eq!(
            msg(json!({"error": "title is missing"})),
            Some("title is missing".into())
        );
        assert_eq!(msg(json!({"other": 1})), None);
        assert_eq!(
            refusal_message(b"\n upstream connect error \n more"),
            Some("upstream connect error".into())
        );
        assert_eq!(refusal_message(b"<html><body>502</body></html>"), None);
    }

    #[test]
    fn scrub_removes_the_token_and_bounds_length() {
        assert_eq!(
            scrub("token ghp_abc is bad\nreally", "ghp_abc"),
            "token [redacted] is bad really"
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        assert_eq!(scrub(&long, "t").chars().count(), MAX_MESSAGE_CHARS + 3);
    }

    #[test]
    fn codes_are_stable() {
        let refused = ForgeError::Refused {
            status: 401,
            message: "Bad credentials".into(),
        };
        assert_eq!(refused.code(), "forge_refused");
        assert_eq!(
            refused.to_string(),
            "the forge refused the request (HTTP 401): Bad credentials"
        );
        assert_eq!(
            ForgeError::Unreachable(String::new()).code(),
            "forge_unreachable"
        );
        assert_eq!(
            ForgeError::BadResponse(String::new()).code(),
            "forge_bad_response"
        );
        assert_eq!(
            ForgeError::Invalid(String::new()).code(),
            "forge_invalid_request"
        );
    }

    #[tokio::test]
    async fn malformed_requests_are_not_sent() {
        // TEST-NET-1: anything actually sent would hang until the timeout.
        let f = Forge {
            kind: ForgeKind::GitHub,
            host: "192.0.2.1".into(),
            api_url: "http://192.0.2.1".into(),
        };
        let spec = PullRequestSpec {
            title: "t",
            body: "",
            head: "h",
            base: "main",
            draft: false,
        };
        let c = client().unwrap();
        for (project, token) in [("a/b/c", "tok"), ("a", "tok"), ("a/b", ""), ("a/b", "x y")] {
            let call = open_pull_request(&c, &f, project, token, &spec);
            let res = tokio::time::timeout(Duration::from_secs(2), call)
                .await
                .expect("must fail before sending");
            assert!(
                matches!(res, Err(ForgeError::Invalid(_))),
                "{project} {token:?}"
            );
        }
    }
}
