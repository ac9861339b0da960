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
    /// still present for this prefix. Panics when the docker CLI cannot
    /// answer: an empty list must mean "nothing left", never "not asked".
    pub fn leftovers(&self, kind: &str) -> Vec<String> {
        self.try_leftovers(kind)
            .unwrap_or_else(|e| panic!("listing leftover {kind}s: {e}"))
    }

    /// [`Self::leftovers`], with the docker CLI's failure as an error.
    pub fn try_leftovers(&self, kind: &str) -> Result<Vec<String>, String> {
        let args: Vec<&str> = match kind {
            "container" => vec!["ps", "-a", "--format", "{{.Names}}"],
            "network" => vec!["network", "ls", "--format", "{{.Name}}"],
            "volume" => vec!["volume", "ls", "--format", "{{.Name}}"],
            other => return Err(format!("unknown resource kind {other:?}")),
        };
        let o = Command::new("docker")
            .args(&args)
            .args(["--filter", &self.filter()])
            .output()
            .map_err(|e| format!("running docker: {e}"))?;
        names(&args.join(" "), o)
    }

    /// Every leftover of this prefix, all kinds.
    pub fn all_leftovers(&self) -> Vec<String> {
        ["container", "network", "volume"]
            .iter()
            .flat_map(|k| self.leftovers(k))
            .collect()
    }

    /// Removes this prefix's resources. Runs on drop, so a docker CLI
    /// failure is reported, not raised (a panic while unwinding aborts).
    pub fn cleanup(&self) {
        let listed = |kind: &str| {
            self.try_leftovers(kind).unwrap_or_else(|e| {
                eprintln!("cleaning up prefix {}: {e}", self.prefix);
                Vec::new()
            })
        };
        let containers = listed("container");
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let networks = listed("network");
        if !networks.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&networks)
                .output();
        }
        let volumes = listed("volume");
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

/// The names a `docker … ls` printed, or why it failed.
fn names(what: &str, o: std::process::Output) -> Result<Vec<String>, String> {
    if !o.status.success() {
        return Err(format!(
            "docker {what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ExitStatus, Output};

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_failed_docker_listing_is_an_error_not_an_empty_list() {
        let e = names(
            "ps -a",
            output(1, "", "Cannot connect to the Docker daemon\n"),
        )
        .unwrap_err();
        assert!(e.contains("Cannot connect to the Docker daemon"), "{e}");
        assert_eq!(
            names("ps -a", output(0, "cct-1-a\n\ncct-1-b\n", "")),
            Ok(vec!["cct-1-a".to_owned(), "cct-1-b".to_owned()])
        );
        assert_eq!(names("ps -a", output(0, "", "")), Ok(Vec::new()));
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        let e = PrefixGuard::new().try_leftovers("image").unwrap_err();
        assert!(e.contains("unknown resource kind"), "{e}");
    }
}
