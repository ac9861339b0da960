//! How a deployment runs its session Pods.

use cc_core::RuntimeError;
use std::collections::BTreeMap;
use std::time::Duration;

/// The seccomp profile of session Pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    /// The container runtime's default profile.
    RuntimeDefault,
    /// A profile installed on every node, relative to the kubelet's
    /// seccomp directory (e.g. the project's `claudecluster.json`).
    Localhost(String),
}

impl std::str::FromStr for Seccomp {
    type Err = String;
    /// `runtime-default`, or `localhost:<path>`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "runtime-default" => Ok(Seccomp::RuntimeDefault),
            Some(("localhost", p)) if !p.is_empty() && !p.starts_with('/') && !p.contains("..") => {
                Ok(Seccomp::Localhost(p.to_owned()))
            }
            _ => Err(format!(
                "seccomp profile {s:?}: expected runtime-default or localhost:<file relative to the kubelet's seccomp directory>"
            )),
        }
    }
}

/// Everything the Kubernetes runtime needs to know beyond the session.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Namespace of the session Pods (it must exist).
    pub namespace: String,
    /// Prefix of every object name, and the deployment's label value.
    pub prefix: String,
    /// The gateway's URL as sessions reach it (`http://host:port`, e.g. the
    /// gateway Service's cluster DNS name).
    pub gateway_url: String,
    /// Places every Pod on this node (a cluster without a scheduler).
    pub node_name: Option<String>,
    /// RuntimeClass of session Pods (gVisor on GKE Sandbox, Kata on AKS).
    pub runtime_class: Option<String>,
    pub seccomp: Seccomp,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// The workspace emptyDir's size limit (a Kubernetes quantity); `None`:
    /// unbounded.
    pub workspace_size: Option<String>,
    /// Labels of the orchestrator's Pods: the only peers session Pods may
    /// talk to.
    pub orchestrator_labels: BTreeMap<String, String>,
    /// How long a Pod may take to run before its session fails with the
    /// scheduler's or kubelet's reason.
    pub start_deadline: Duration,
}

/// Default labels of the orchestrator's Pods (as `deploy/kubernetes`).
pub const ORCHESTRATOR_LABEL: (&str, &str) = ("app.kubernetes.io/name", "claudecluster");
/// Default start deadline.
pub const START_DEADLINE: Duration = Duration::from_secs(120);

impl KubeSettings {
    /// Settings with the defaults for everything but where Pods go and how
    /// they reach the gateway.
    pub fn new(namespace: impl Into<String>, gateway_url: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            prefix: "cc-".into(),
            gateway_url: gateway_url.into(),
            node_name: None,
            runtime_class: None,
            seccomp: Seccomp::RuntimeDefault,
            image_pull_policy: "IfNotPresent".into(),
            workspace_size: Some("10Gi".into()),
            orchestrator_labels: BTreeMap::from([(
                ORCHESTRATOR_LABEL.0.to_owned(),
                ORCHESTRATOR_LABEL.1.to_owned(),
            )]),
            start_deadline: START_DEADLINE,
        }
    }

    /// Settings of the example `claudecluster kube render` shows.
    pub fn example() -> Self {
        Self::new(
            "claudecluster-sessions",
            "http://claudecluster-gateway.claudecluster.svc:8081",
        )
    }

    /// The deployment label's value: the prefix without a trailing `-`
    /// (label values must end alphanumeric).
    pub fn prefix_label(&self) -> String {
        self.prefix.trim_end_matches(['-', '.']).to_owned()
    }

    /// The gateway URL's port (its scheme's default when it names none).
    pub fn gateway_port(&self) -> u16 {
        url::Url::parse(&self.gateway_url)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(80)
    }

    /// Refuses settings the API server would refuse later, or worse,
    /// accept and misapply.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !dns_label(&self.namespace) {
            return Err(RuntimeError::Invalid(format!(
                "namespace {:?} is not a valid Kubernetes name (lowercase letters, digits and '-')",
                self.namespace
            )));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 20
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && self.prefix.as_bytes()[0].is_ascii_lowercase()
            && !self.prefix_label().is_empty();
        if !prefix_ok {
            return Err(RuntimeError::Invalid(format!(
                "resource prefix {:?} must start with a lowercase letter and hold at most 20 lowercase letters, digits and '-' on Kubernetes",
                self.prefix
            )));
        }
        let gateway = url::Url::parse(&self.gateway_url).ok();
        let gateway_ok = gateway.is_some_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/"
        }) && !self.gateway_url.ends_with('/');
        if !gateway_ok {
            return Err(RuntimeError::Invalid(format!(
                "gateway URL {:?} must be http(s)://host[:port] without a trailing slash",
                self.gateway_url
            )));
        }
        if !["IfNotPresent", "Always", "Never"].contains(&self.image_pull_policy.as_str()) {
            return Err(RuntimeError::Invalid(format!(
                "image pull policy {:?}: expected IfNotPresent, Always or Never",
                self.image_pull_policy
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_any_call() {
        let ok = KubeSettings::example();
        ok.validate().unwrap();
        assert_eq!(ok.gateway_port(), 8081);
        assert_eq!(ok.prefix_label(), "cc");
        for bad in [
            KubeSettings {
                namespace: "Sessions".into(),
                ..ok.clone()
            },
            KubeSettings {
                prefix: "CC-".into(),
                ..ok.clone()
            },
            KubeSettings {
                prefix: "-".into(),
                ..ok.clone()
            },
            KubeSettings {
                gateway_url: "gateway:8081".into(),
                ..ok.clone()
            },
            KubeSettings {
                image_pull_policy: "Sometimes".into(),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let plain = KubeSettings {
            gateway_url: "http://10.0.0.1".into(),
            ..ok
        };
        assert_eq!(plain.gateway_port(), 80);
    }

    #[test]
    fn seccomp_profiles_parse() {
        assert_eq!("runtime-default".parse(), Ok(Seccomp::RuntimeDefault));
        assert_eq!(
            "localhost:claudecluster.json".parse(),
            Ok(Seccomp::Localhost("claudecluster.json".into()))
        );
        assert!("localhost:/etc/x.json".parse::<Seccomp>().is_err());
        assert!("localhost:../x".parse::<Seccomp>().is_err());
        assert!("unconfined".parse::<Seccomp>().is_err());
    }
}
