//! Host firewall rules that close the host to session containers.
//!
//! An `--internal` Docker network has no route out, but it does not stop a
//! container from reaching the host itself: every host port bound to
//! 0.0.0.0 answers on the bridge's host address. So each session's bridge
//! (named by us, `ccb<12 hex of the session id>`) gets three INPUT rules, in
//! this order: accept replies on connections the host opened (the
//! orchestrator talking to sessiond), accept new connections to the gateway
//! port, drop everything else. Every rule carries the comment
//! `claudecluster:<resource prefix><session id>` so removal is exact and
//! idempotent, and a test run can remove every rule of its own prefix.

use cc_core::{RuntimeError, SessionId};
use tokio::process::Command;

/// Linux interface names are at most 15 bytes.
pub fn bridge_name(id: &SessionId) -> String {
    format!("ccb{}", &id.as_str()[..12])
}

/// The comment tag on every rule of a deployment with this prefix.
pub fn tag_prefix(resource_prefix: &str) -> String {
    format!("claudecluster:{resource_prefix}")
}

#[derive(Debug, Clone)]
pub struct Firewall {
    gateway_port: u16,
    resource_prefix: String,
}

impl Firewall {
    pub fn new(gateway_port: u16, resource_prefix: &str) -> Self {
        Self {
            gateway_port,
            resource_prefix: resource_prefix.to_owned(),
        }
    }

    /// Fails with a fix-it message when iptables cannot be used here.
    pub async fn check() -> Result<(), RuntimeError> {
        iptables(&["-S", "INPUT"]).await.map(drop).map_err(|e| {
            RuntimeError::Invalid(format!(
                "the host firewall for sessions needs iptables as root ({e}); run as root with iptables installed, \
                 or pass --host-firewall off (sessions can then reach every host port bound to 0.0.0.0)"
            ))
        })
    }

    fn rules(&self, id: &SessionId) -> Vec<Vec<String>> {
        let br = bridge_name(id);
        let tag = format!("{}{id}", tag_prefix(&self.resource_prefix));
        let port = self.gateway_port.to_string();
        let with = |extra: &[&str]| {
            let mut r: Vec<String> = vec!["-i".into(), br.clone()];
            r.extend(extra.iter().map(|s| s.to_string()));
            r.extend(["-m", "comment", "--comment", &tag].map(String::from));
            r
        };
        vec![
            with(&[
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]),
            with(&["-p", "tcp", "--dport", &port, "-j", "ACCEPT"]),
            with(&["-j", "DROP"]),
        ]
    }

    /// Installs the session's rules (replacing any earlier ones).
    pub async fn install(&self, id: &SessionId) -> Result<(), RuntimeError> {
        self.uninstall(id).await;
        // Inserted at the top in reverse, so they end up in order.
        for rule in self.rules(id).iter().rev() {
            let mut args = vec!["-I", "INPUT", "1"];
            args.extend(rule.iter().map(String::as_str));
            iptables(&args).await.map_err(|e| {
                RuntimeError::Internal(format!("installing the session's host firewall rules: {e}"))
            })?;
        }
        Ok(())
    }

    /// Removes the session's rules; missing rules are fine.
    pub async fn uninstall(&self, id: &SessionId) {
        for rule in self.rules(id) {
            let mut args = vec!["-D", "INPUT"];
            args.extend(rule.iter().map(String::as_str));
            // A rule may have been added twice by an interrupted install.
            while iptables(&args).await.is_ok() {}
        }
    }
}

async fn iptables(args: &[&str]) -> Result<String, String> {
    // -w: wait for the xtables lock instead of failing when Docker holds it.
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_linux_and_rules_are_ordered() {
        let id = SessionId::generate();
        let br = bridge_name(&id);
        assert!(br.len() <= 15, "{br}");
        let rules = Firewall::new(4242, "cc-").rules(&id);
        assert!(rules[0].contains(&"ESTABLISHED,RELATED".to_string()));
        assert!(rules[1].contains(&"4242".to_string()));
        assert_eq!(rules[2][rules[2].len() - 5..][0], "DROP");
        assert!(rules
            .iter()
            .all(|r| r.contains(&format!("claudecluster:cc-{id}"))));
    }
}
