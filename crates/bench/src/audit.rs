//! Dependency vulnerability scan against an offline RustSec advisory
//! database (a checkout of `rustsec/advisory-db`): every registry package in
//! `Cargo.lock` is checked against the advisories filed for it.
//!
//! Only what the decision needs is read: the TOML front matter's
//! `[advisory] id, package, informational, withdrawn`, `[affected] os` and
//! `[versions] patched, unaffected` (Cargo's version requirement syntax). An
//! advisory applies when the locked version matches neither a `patched` nor
//! an `unaffected` requirement. Withdrawn advisories are skipped;
//! informational ones (unmaintained, unsound, notice) are reported apart
//! from vulnerabilities, as `cargo audit` does.

use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

/// One advisory that applies to a locked package.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub id: String,
    pub package: String,
    pub version: String,
    pub title: String,
    /// `unmaintained`, `unsound`, `notice`; `None` for a vulnerability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub informational: Option<String>,
    /// The `patched` requirements: where to upgrade to.
    pub patched: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub database: String,
    pub advisories_read: usize,
    pub packages_scanned: usize,
    pub vulnerabilities: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Scans `lockfile` against the database at `db`.
pub fn scan(lockfile: &Path, db: &Path) -> Result<AuditReport, AuditError> {
    let lock = read(lockfile)?;
    let packages = parse_lock(&lock);
    let crates_dir = db.join("crates");
    if !crates_dir.is_dir() {
        return Err(AuditError::Invalid(format!(
            "{} is not a RustSec advisory database (no crates/ folder)",
            db.display()
        )));
    }
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, version) in &packages {
        by_name.entry(name).or_default().push(version);
    }
    let mut report = AuditReport {
        database: db.display().to_string(),
        advisories_read: 0,
        packages_scanned: packages.len(),
        vulnerabilities: Vec::new(),
        warnings: Vec::new(),
    };
    for (name, versions) in by_name {
        let dir = crates_dir.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md" || x == "toml"))
            .collect();
        files.sort();
        for file in files {
            let text = read(&file)?;
            let adv = parse_advisory(&text)
                .map_err(|e| AuditError::Invalid(format!("{}: {e}", file.display())))?;
            report.advisories_read += 1;
            if adv.withdrawn || adv.package != name || !adv.applies_to_linux() {
                continue;
            }
            for v in &versions {
                let Some(version) = Version::parse(v) else {
                    continue;
                };
                if !adv.affects(&version) {
                    continue;
                }
                let finding = Finding {
                    id: adv.id.clone(),
                    package: name.to_owned(),
                    version: (*v).to_owned(),
                    title: adv.title.clone(),
                    informational: adv.informational.clone(),
                    patched: adv.patched.clone(),
                };
                if finding.informational.is_some() {
                    report.warnings.push(finding);
                } else {
                    report.vulnerabilities.push(finding);
                }
            }
        }
    }
    Ok(report)
}

fn read(path: &Path) -> Result<String, AuditError> {
    std::fs::read_to_string(path).map_err(|source| AuditError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `(name, version)` of every package from a registry in a `Cargo.lock`
/// (workspace members and path dependencies have no `source`).
pub fn parse_lock(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(Option<String>, Option<String>, bool)> = None;
    let mut flush = |cur: &mut Option<(Option<String>, Option<String>, bool)>| {
        if let Some((Some(n), Some(v), true)) = cur.take() {
            out.push((n, v));
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            flush(&mut cur);
            cur = Some((None, None, false));
        } else if line.starts_with('[') {
            flush(&mut cur);
        } else if let Some(c) = cur.as_mut() {
            if let Some((k, v)) = key_value(line) {
                match k {
                    "name" => c.0 = unquote(v),
                    "version" => c.1 = unquote(v),
                    "source" => c.2 = v.contains("registry+") || v.contains("sparse+"),
                    _ => {}
                }
            }
        }
    }
    flush(&mut cur);
    out
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Advisory {
    pub id: String,
    pub package: String,
    pub title: String,
    pub informational: Option<String>,
    pub withdrawn: bool,
    pub os: Vec<String>,
    pub patched: Vec<String>,
    pub unaffected: Vec<String>,
}

impl Advisory {
    fn applies_to_linux(&self) -> bool {
        self.os.is_empty() || self.os.iter().any(|o| o == "linux")
    }

    /// Whether `v` is neither patched nor unaffected.
    pub fn affects(&self, v: &Version) -> bool {
        !self
            .patched
            .iter()
            .chain(&self.unaffected)
            .any(|req| matches_req(req, v))
    }
}

/// Parses an advisory file: TOML front matter in a ```` ```toml ```` fence
/// (or a bare TOML file), then a Markdown `# title`.
pub fn parse_advisory(text: &str) -> Result<Advisory, String> {
    let (toml, rest) = match text.trim_start().strip_prefix("```toml") {
        Some(after) => after
            .split_once("\n```")
            .ok_or("unterminated front matter")?,
        None => (text, ""),
    };
    let mut adv = Advisory {
        title: rest
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        ..Default::default()
    };
    let mut section = String::new();
    let mut lines = toml.lines();
    while let Some(raw) = lines.next() {
        let line = strip_comment(raw).trim().to_owned();
        if line.starts_with('[') && !line.contains('=') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        let Some((key, value)) = key_value(&line) else {
            continue;
        };
        let mut value = value.to_owned();
        // Arrays may continue over several lines.
        if value.starts_with('[') {
            while !balanced(&value) {
                match lines.next() {
                    Some(more) => {
                        value.push(' ');
                        value.push_str(strip_comment(more).trim());
                    }
                    None => return Err(format!("unterminated array for {key}")),
                }
            }
        }
        match (section.as_str(), key) {
            ("advisory", "id") => adv.id = unquote(&value).unwrap_or_default(),
            ("advisory", "package") => adv.package = unquote(&value).unwrap_or_default(),
            ("advisory", "informational") => adv.informational = unquote(&value),
            ("advisory", "withdrawn") => adv.withdrawn = true,
            ("affected", "os") => adv.os = strings(&value),
            ("versions", "patched") => adv.patched = strings(&value),
            ("versions", "unaffected") => adv.unaffected = strings(&value),
            _ => {}
        }
    }
    if adv.id.is_empty() || adv.package.is_empty() {
        return Err("no [advisory] id and package".into());
    }
    Ok(adv)
}

fn strip_comment(line: &str) -> &str {
    // A `#` outside a string starts a comment.
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

fn balanced(value: &str) -> bool {
    let mut depth = 0i32;
    let mut in_str = false;
    for c in value.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' if !in_str => depth += 1,
            ']' if !in_str => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

fn key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once('=')?;
    Some((k.trim(), v.trim()))
}

fn unquote(v: &str) -> Option<String> {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(str::to_owned)
}

/// The double-quoted strings in a TOML array.
fn strings(v: &str) -> Vec<String> {
    v.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// A semantic version; build metadata is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: String,
}

impl Version {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().split('+').next()?;
        let (core, pre) = s.split_once('-').unwrap_or((s, ""));
        let mut it = core.split('.');
        let v = Self {
            major: it.next()?.parse().ok()?,
            minor: it.next()?.parse().ok()?,
            patch: it.next()?.parse().ok()?,
            pre: pre.to_owned(),
        };
        it.next().is_none().then_some(v)
    }
}

impl Ord for Version {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(o.major, o.minor, o.patch))
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A pre-release precedes its release.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => cmp_pre(&self.pre, &o.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let ord = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Whether `v` satisfies a Cargo version requirement such as
/// `>= 1.2.3, < 2` or `^0.9.5` (a bare version means `^`).
pub fn matches_req(req: &str, v: &Version) -> bool {
    req.split(',').all(|c| matches_comparator(c.trim(), v))
}

fn matches_comparator(c: &str, v: &Version) -> bool {
    let (op, rest) = [">=", "<=", ">", "<", "=", "^", "~"]
        .iter()
        .find_map(|op| c.strip_prefix(op).map(|r| (*op, r)))
        .unwrap_or(("^", c));
    let rest = rest.trim();
    if rest == "*" {
        return true;
    }
    let (core, pre) = rest.split_once('-').unwrap_or((rest, ""));
    let parts: Vec<Option<u64>> = core
        .split('.')
        .map(|p| if p == "*" { None } else { p.parse().ok() })
        .collect();
    let major = parts.first().copied().flatten();
    let minor = parts.get(1).copied().flatten();
    let patch = parts.get(2).copied().flatten();
    let Some(major) = major else {
        return true;
    };
    let low = Version {
        major,
        minor: minor.unwrap_or(0),
        patch: patch.unwrap_or(0),
        pre: pre.to_owned(),
    };
    // The first version past a partial one: `1.2` ends before 1.3.0.
    let after = |m: u64, n: Option<u64>, p: Option<u64>| match (n, p) {
        (None, _) => Version::parse(&format!("{}.0.0-0", m + 1)),
        (Some(n), None) => Version::parse(&format!("{m}.{}.0-0", n + 1)),
        (Some(n), Some(p)) => Version::parse(&format!("{m}.{n}.{}-0", p + 1)),
    };
    match op {
        ">=" => v >= &low,
        ">" => match after(major, minor, patch) {
            Some(next) if patch.is_none() => v >= &next,
            _ => v > &low,
        },
        "<" => v < &low,
        "<=" => match after(major, minor, patch) {
            Some(next) if patch.is_none() => v < &next,
            _ => v <= &low,
        },
        "=" => match (minor, patch) {
            (Some(_), Some(_)) => v == &low,
            _ => v >= &low && after(major, minor, patch).is_some_and(|n| v < &n),
        },
        "~" => {
            let upper = match minor {
                Some(n) => after(major, Some(n), None),
                None => after(major, None, None),
            };
            v >= &low && upper.is_some_and(|u| v < &u)
        }
        _ => {
            // Caret: the left-most non-zero component may not change.
            let upper = if major > 0 || minor.is_none() {
                after(major, None, None)
            } else if minor != Some(0) || patch.is_none() {
                after(major, minor, None)
            } else {
                after(major, minor, patch)
            };
            v >= &low && upper.is_some_and(|u| v < &u)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn requirements_follow_cargo_semantics() {
        assert!(matches_req(">= 0.9.1", &v("0.9.1")));
        assert!(!matches_req(">= 0.9.1", &v("0.9.0")));
        assert!(matches_req(">= 1.2.3, < 2", &v("1.9.0")));
        assert!(!matches_req(">= 1.2.3, < 2", &v("2.0.0")));
        assert!(matches_req("^0.9.5", &v("0.9.7")));
        assert!(!matches_req("^0.9.5", &v("0.10.0")));
        assert!(!matches_req("^0.9.5", &v("0.9.4")));
        assert!(matches_req("^1.2", &v("1.99.0")));
        assert!(!matches_req("^1.2", &v("2.0.0")));
        assert!(matches_req("^0.0.3", &v("0.0.3")));
        assert!(!matches_req("^0.0.3", &v("0.0.4")));
        assert!(matches_req("~1.2.3", &v("1.2.9")));
        assert!(!matches_req("~1.2.3", &v("1.3.0")));
        assert!(matches_req("= 1.0.0", &v("1.0.0")));
        assert!(!matches_req("= 1.0.0", &v("1.0.1")));
        assert!(matches_req("< 0.1", &v("0.0.9")));
        assert!(!matches_req("< 0.1", &v("0.1.0")));
        assert!(matches_req("<= 0.3", &v("0.3.7")));
        assert!(!matches_req("<= 0.3", &v("0.4.0")));
        assert!(matches_req("> 1.2", &v("1.3.0")));
        assert!(!matches_req("> 1.2", &v("1.2.9")));
        assert!(matches_req("1.5", &v("1.6.0")));
        // Pre-releases sort before their release.
        assert!(!matches_req(">= 1.0.0", &v("1.0.0-rc.1")));
        assert!(v("1.0.0-alpha.2") < v("1.0.0-alpha.10"));
    }

    const ADVISORY: &str = r#"```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "demo"
date = "2099-01-01" # a comment
aliases = ["CVE-2099-1"]

[affected]
functions = { "demo::f" = ["< 1.4.0"] }

[versions]
patched = [
    ">= 1.4.0", # fixed here
    "~1.2.7",
]
unaffected = ["< 1.0.0"]
```

# Demo is broken

Details.
"#;

    #[test]
    fn advisories_parse_and_decide() {
        let a = parse_advisory(ADVISORY).unwrap();
        assert_eq!(a.id, "RUSTSEC-2099-0001");
        assert_eq!(a.package, "demo");
        assert_eq!(a.title, "Demo is broken");
        assert_eq!(a.patched, vec![">= 1.4.0", "~1.2.7"]);
        assert_eq!(a.unaffected, vec!["< 1.0.0"]);
        assert!(!a.withdrawn && a.informational.is_none());
        assert!(a.affects(&v("1.3.0")));
        assert!(a.affects(&v("1.2.6")));
        assert!(!a.affects(&v("1.2.8")));
        assert!(!a.affects(&v("1.4.0")));
        assert!(!a.affects(&v("0.9.0")));
        assert!(parse_advisory("```toml\n[advisory]\n```\n").is_err());
    }

    #[test]
    fn scan_finds_affected_registry_packages_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(db.join("crates/demo")).unwrap();
        std::fs::create_dir_all(db.join("crates/old")).unwrap();
        std::fs::write(db.join("crates/demo/RUSTSEC-2099-0001.md"), ADVISORY).unwrap();
        std::fs::write(
            db.join("crates/old/RUSTSEC-2099-0002.md"),
            "```toml\n[advisory]\nid = \"RUSTSEC-2099-0002\"\npackage = \"old\"\ninformational = \"unmaintained\"\n\n[versions]\npatched = []\n```\n\n# old is unmaintained\n",
        )
        .unwrap();
        let lock = dir.path().join("Cargo.lock");
        std::fs::write(
            &lock,
            "version = 4\n\n[[package]]\nname = \"demo\"\nversion = \"1.3.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[package]]\nname = \"demo\"\nversion = \"1.4.1\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[package]]\nname = \"old\"\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[package]]\nname = \"cc-core\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let r = scan(&lock, &db).unwrap();
        assert_eq!(r.packages_scanned, 3);
        assert_eq!(r.vulnerabilities.len(), 1);
        assert_eq!(r.vulnerabilities[0].version, "1.3.0");
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.warnings[0].informational.as_deref(), Some("unmaintained"));
    }
}
