//! Which repositories a session may clone.
//!
//! A repository URL must be `http` or `https`, carry no credentials, and
//! name a host that resolves only to public addresses ([`crate::addresses`]:
//! no special-purpose range, none of this host's own) — unless the admin
//! allowed that exact `host:port` (a git server on the orchestrator's own
//! host, an internal forge). This keeps sessions from being used to reach
//! loopback services, private networks or cloud metadata endpoints.

pub use crate::addresses::non_public;
use crate::addresses::{resolve_checked, AddressRefusal};
use crate::error::CoreError;
use std::net::SocketAddr;

/// Longest repository URL accepted.
pub const MAX_REPO_URL_LEN: usize = 2048;
/// Longest branch name accepted (git itself allows more; nobody needs it).
pub const MAX_BRANCH_LEN: usize = 255;

/// A repository URL that passed the syntactic checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// Normalised URL, no trailing slash.
    pub url: String,
    pub host: String,
    pub port: u16,
}

impl RepoUrl {
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub fn parse_repo_url(raw: &str) -> Result<RepoUrl, CoreError> {
    let bad = |m: &str| CoreError::invalid("invalid_repo_url", m.to_owned());
    if raw.trim().is_empty() {
        return Err(bad("repoUrl must not be empty"));
    }
    if raw.len() > MAX_REPO_URL_LEN {
        return Err(bad("repoUrl is longer than 2048 characters"));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| bad(&format!("repoUrl is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(&format!(
            "repoUrl scheme {:?} is not supported; use an http or https URL",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the URL: it holds a credential.
        return Err(bad(
            "repoUrl must not contain credentials; private repositories are reached through the server's git relay",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("repoUrl must not have a query or fragment"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(bad("repoUrl has no host")),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| bad("repoUrl has no port"))?;
    let normalised = url.as_str().trim_end_matches('/').to_owned();
    Ok(RepoUrl {
        url: normalised,
        host,
        port,
    })
}

pub fn check_branch(branch: &str) -> Result<(), CoreError> {
    let bad = |m: String| CoreError::invalid("invalid_branch", m);
    if branch.is_empty() || branch.len() > MAX_BRANCH_LEN {
        return Err(bad("branch must be 1 to 255 characters".into()));
    }
    if branch_name_problem(branch).is_some() {
        return Err(bad(format!("{branch:?} is not a valid branch name")));
    }
    Ok(())
}

/// What makes `name` a branch name git refuses, if anything: the rules of
/// `git check-ref-format --branch`, minus the exotic ones git would refuse
/// anyway. Shared by the branch a session starts from and the branches it
/// pushes to.
pub fn branch_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_BRANCH_LEN {
        return Some("it is too long");
    }
    if name.starts_with('-') {
        return Some("it starts with '-'");
    }
    if name
        .chars()
        .any(|c| c.is_control() || " ~^:?*[\\".contains(c))
    {
        return Some("it holds a space, control character or one of ~^:?*[\\");
    }
    if name.contains("..") || name.contains("@{") || name == "@" {
        return Some("it holds '..' or '@{'");
    }
    if name.ends_with('.') || name.ends_with(".lock") {
        return Some("it ends with '.' or '.lock'");
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part.starts_with('.'))
    {
        return Some("a path component is empty or starts with '.'");
    }
    None
}

/// Is this host allowed? Allowed explicitly, or every address it resolves
/// to is public (see [`crate::addresses`]).
pub async fn check_repo_host(repo: &RepoUrl, allowed: &[String]) -> Result<(), CoreError> {
    resolve_repo_host(repo, allowed).await.map(drop)
}

/// [`check_repo_host`], and the addresses that passed it: the ones to
/// connect to, so that the name is not resolved again in between.
pub async fn resolve_repo_host(
    repo: &RepoUrl,
    allowed: &[String],
) -> Result<Vec<SocketAddr>, CoreError> {
    let hp = repo.host_port();
    let exact = allowed.iter().any(|a| a.eq_ignore_ascii_case(&hp));
    resolve_checked(&repo.host, repo.port, exact)
        .await
        .map_err(|e| match e {
            AddressRefusal::Unresolvable { host, reason } => CoreError::invalid(
                "repo_host_unresolvable",
                format!("repository host {host} cannot be resolved: {reason}"),
            ),
            AddressRefusal::NotPublic { addr, why, .. } => CoreError::forbidden(
                "repo_host_not_allowed",
                format!(
                    "repository host {hp} is not allowed: it resolves to {why} address {addr}; \
                     an administrator can allow it with --allow-repo-host {hp}"
                ),
            ),
        })
}

/// Whether the egress allowlist lets a session open `host:port`.
/// Entries: `host` (port 443 or 80), `host:port`, or `*.domain` (any
/// subdomain, ports 443 and 80). Matching is case-insensitive.
pub fn egress_allowed(host: &str, port: u16, allow: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allow.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let (pattern, ports): (&str, Vec<u16>) = match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse() {
                Ok(p) => (h, vec![p]),
                Err(_) => return false,
            },
            _ => (entry.as_str(), vec![443, 80]),
        };
        let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match pattern.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == pattern,
        };
        host_ok && ports.contains(&port)
    })
}

/// Whether the allowlist names exactly this `host:port`, which is what
/// lets a session reach a loopback or private address.
pub fn egress_names_exactly(host: &str, port: u16, allow: &[String]) -> bool {
    let wanted = format!("{}:{port}", host.to_ascii_lowercase());
    allow.iter().any(|e| e.trim().eq_ignore_ascii_case(&wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let r = parse_repo_url("http://127.0.0.1:9418/sample.git/").unwrap();
        assert_eq!(r.url, "http://127.0.0.1:9418/sample.git");
        assert_eq!(r.host_port(), "127.0.0.1:9418");
        assert_eq!(parse_repo_url("https://github.com/a/b").unwrap().port, 443);
        for bad in [
            "",
            "file:///etc",
            "ssh://git@x/y",
            "not a url",
            "http://u:p@h/r",
            "http://h/r?x=1",
        ] {
            let err = parse_repo_url(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    CoreError::Invalid {
                        code: "invalid_repo_url",
                        ..
                    }
                ),
                "{bad}"
            );
            assert!(!err.to_string().contains("u:p"), "credential echoed");
        }
    }

    #[test]
    fn branches_are_checked() {
        assert!(check_branch("main").is_ok());
        assert!(check_branch("feature/x-1").is_ok());
        for bad in ["", "-x", "a..b", "a b", "x.lock", "a@{1}", "/a"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_classified() {
        for (a, public) in [
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.17.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("::1", false),
            ("fe80::1", false),
            ("fd00::1", false),
            ("::ffff:127.0.0.1", false),
            ("192.0.2.1", false),
            ("198.18.0.1", false),
            ("64:ff9b::7f00:1", false),
            ("2002:7f00:1::", false),
            ("140.82.112.3", true),
            ("2606:4700::1111", true),
        ] {
            assert_eq!(non_public(a.parse().unwrap()).is_none(), public, "{a}");
        }
    }

    #[test]
    fn egress_allowlist_matches_hosts_ports_and_subdomains() {
        let allow = vec![
            "pypi.org".to_string(),
            "*.crates.io".to_string(),
            "127.0.0.1:8443".to_string(),
        ];
        assert!(egress_allowed("pypi.org", 443, &allow));
        assert!(egress_allowed("PyPI.org.", 80, &allow));
        assert!(!egress_allowed("pypi.org", 22, &allow));
        assert!(!egress_allowed("evilpypi.org", 443, &allow));
        assert!(egress_allowed("static.crates.io", 443, &allow));
        assert!(!egress_allowed("crates.io.evil.com", 443, &allow));
        assert!(egress_allowed("127.0.0.1", 8443, &allow));
        assert!(!egress_allowed("127.0.0.1", 443, &allow));
        assert!(egress_names_exactly("127.0.0.1", 8443, &allow));
        assert!(!egress_names_exactly("pypi.org", 443, &allow));
        assert!(!egress_allowed("anything", 443, &[]));
    }

    #[tokio::test]
    async fn loopback_needs_an_allowance() {
        let r = parse_repo_url("http://127.0.0.1:9/x.git").unwrap();
        let err = check_repo_host(&r, &[]).await.unwrap_err().to_string();
        assert!(err.contains("--allow-repo-host 127.0.0.1:9"), "{err}");
        assert!(check_repo_host(&r, &["127.0.0.1:9".into()]).await.is_ok());
    }

    #[tokio::test]
    async fn a_repository_on_one_of_the_hosts_own_addresses_needs_an_allowance() {
        for addr in crate::addresses::HostAddresses::read().addresses() {
            let host = match addr {
                std::net::IpAddr::V4(a) => a.to_string(),
                std::net::IpAddr::V6(a) => format!("[{a}]"),
            };
            let r = parse_repo_url(&format!("http://{host}:8080/x.git")).unwrap();
            let err = check_repo_host(&r, &[]).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    CoreError::Forbidden {
                        code: "repo_host_not_allowed",
                        ..
                    }
                ),
                "{addr}: {err}"
            );
            let exact = r.host_port();
            assert!(check_repo_host(&r, &[exact]).await.is_ok(), "{addr}");
        }
    }
}
