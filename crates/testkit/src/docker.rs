//! Docker resource isolation for tests: every run gets its own prefix, and
//! everything labelled with it is removed when the guard drops (unless
//! `CLAUDECLUSTER_KEEP_TEST_RESOURCES=1`, for debugging).

use cc_runtime_docker::LABEL_PREFIX;
use std::process::Command;

/// Set to keep a failed test's containers, networks and volumes.
pub const KEEP_ENV: &str = "CLAUDECLUSTER_KEEP_TEST_RESOURCES";

/// A random resource prefix such as `cct-1a2b3c4d-`.
pub fn unique_prefix() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("OS random number generator");
    format!(
        "cct-{}-",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Removes every resource carrying this prefix's label on drop.
pub struct PrefixGuard {
    pub prefix: String,
}

impl PrefixGuard {
    pub fn new() -> Self {
        Self {
            prefix: unique_prefix(),
        }
    }

    fn filter(&self) -> String {
        format!("label={LABEL_PREFIX}={}", self.prefix)
    }

    /// Names of resources of `kind` ("container", "network", "volume")
    /// still present for this prefix.
    pub fn leftovers(&self, kind: &str) -> Vec<String> {
        let args: Vec<&str> = match kind {
            "container" => vec!["ps", "-a", "--format", "{{.Names}}"],
            "network" => vec!["network", "ls", "--format", "{{.Name}}"],
            _ => vec!["volume", "ls", "--format", "{{.Name}}"],
        };
        let out = Command::new("docker")
            .args(&args)
            .args(["--filter", &self.filter()])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .filter(|l| !l.is_empty())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Every leftover of this prefix, all kinds.
    pub fn all_leftovers(&self) -> Vec<String> {
        ["container", "network", "volume"]
            .iter()
            .flat_map(|k| self.leftovers(k))
            .collect()
    }

    pub fn cleanup(&self) {
        let containers = self.leftovers("container");
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let networks = self.leftovers("network");
        if !networks.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&networks)
                .output();
        }
        let volumes = self.leftovers("volume");
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        remove_firewall_rules(&cc_runtime_docker::firewall::tag_prefix(&self.prefix));
    }
}

impl Default for PrefixGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1") {
            eprintln!("keeping Docker resources with prefix {}", self.prefix);
            return;
        }
        self.cleanup();
    }
}

/// Deletes the host INPUT rules whose comment starts with `tag` (sessions
/// a test dropped without deleting them through the API).
fn remove_firewall_rules(tag: &str) {
    let Ok(out) = Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .output()
    else {
        return;
    };
    for rule in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(spec) = rule.strip_prefix("-A INPUT ") else {
            continue;
        };
        // `-S` quotes comments; our tags hold no spaces, so words suffice.
        let words: Vec<&str> = spec
            .split_whitespace()
            .map(|w| w.trim_matches('"'))
            .collect();
        if !words.iter().any(|w| w.starts_with(tag)) {
            continue;
        }
        let _ = Command::new("iptables")
            .args(["-w", "-D", "INPUT"])
            .args(&words)
            .output();
    }
}
