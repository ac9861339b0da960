//! What the runtime creates for a session, as plain objects: its Pod, the
//! Secret holding sessiond's token, and its NetworkPolicy. Built without a
//! cluster, so `claudecluster kube render` and the tests can show them.

use crate::settings::{KubeSettings, Seccomp};
use cc_core::{SessionId, SessionSpec};
use cc_wire::sessiond::{DEFAULT_PORT, WORKSPACE_DIR};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

/// Label on every object ClaudeCluster creates.
pub const LABEL_MANAGED: &str = "claudecluster.io/managed";
/// Label naming the session an object belongs to.
pub const LABEL_SESSION: &str = "claudecluster.io/session";
/// Label naming the deployment (the resource prefix), so `list` sees only
/// its own sessions when several share a namespace.
pub const LABEL_DEPLOYMENT: &str = "claudecluster.io/deployment";
/// The session container's name in its Pod.
pub const CONTAINER: &str = "session";
/// Key of sessiond's token in the session's Secret.
const TOKEN_KEY: &str = "SESSIOND_TOKEN";
/// The image's unprivileged user and group.
const SESSION_UID: i64 = 1000;
/// Seconds a deleted session Pod has to stop: sessiond holds nothing that
/// needs a clean shutdown.
const GRACE_SECONDS: i64 = 2;
/// Scratch space in memory, as the Docker runtime's tmpfs mounts.
const TMP_SIZE: &str = "1Gi";
const HOME_SIZE: &str = "512Mi";
const HOME_DIR: &str = "/home/claude";

/// Name of the session's Pod, Secret and NetworkPolicy.
pub fn name(settings: &KubeSettings, id: &SessionId) -> String {
    format!("{}{id}", settings.prefix)
}

/// The Secret's name (beside the Pod's).
pub fn secret_name(settings: &KubeSettings, id: &SessionId) -> String {
    format!("{}{id}-token", settings.prefix)
}

/// The labels of every object of the session.
pub fn labels(settings: &KubeSettings, id: &SessionId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_SESSION.to_owned(), id.to_string()),
        (LABEL_DEPLOYMENT.to_owned(), settings.prefix_label()),
    ])
}

/// The label selector of this deployment's objects.
pub fn deployment_selector(settings: &KubeSettings) -> String {
    format!(
        "{LABEL_MANAGED}=true,{LABEL_DEPLOYMENT}={}",
        settings.prefix_label()
    )
}

fn meta(settings: &KubeSettings, name: String, id: &SessionId) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels(settings, id)),
        ..Default::default()
    }
}

/// The Secret carrying sessiond's bearer token, so it is in no Pod spec.
pub fn secret(settings: &KubeSettings, spec: &SessionSpec) -> Secret {
    Secret {
        metadata: meta(settings, secret_name(settings, &spec.id), &spec.id),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(spec.agent_token.expose().as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn quantity(s: impl Into<String>) -> Quantity {
    Quantity(s.into())
}

fn memory_volume(name: &str, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(quantity(size)),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// The session's Pod under the restricted Pod Security Standard: non-root
/// uid/gid 1000, read-only root filesystem, no privilege escalation, every
/// capability dropped, a seccomp profile, no service-account token, no
/// service links, no host namespaces or paths; memory and CPU from the
/// session's limits (requests equal limits), its maximum lifetime as the
/// active deadline, a size-limited workspace.
pub fn pod(settings: &KubeSettings, spec: &SessionSpec) -> Pod {
    let limits = &spec.limits;
    let millicores = ((limits.cpu * 1000.0).round() as u64).max(1);
    let resources = BTreeMap::from([
        (
            "memory".to_owned(),
            quantity(limits.memory_bytes.to_string()),
        ),
        ("cpu".to_owned(), quantity(format!("{millicores}m"))),
    ]);
    let seccomp = match &settings.seccomp {
        Seccomp::RuntimeDefault => SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        },
        Seccomp::Localhost(path) => SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some(path.clone()),
        },
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        env: Some(vec![EnvVar {
            name: TOKEN_KEY.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(settings, &spec.id),
                    key: TOKEN_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("sessiond".into()),
            container_port: i32::from(DEFAULT_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(k8s_openapi::api::core::v1::Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(DEFAULT_PORT)),
                ..Default::default()
            }),
            period_seconds: Some(2),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(SESSION_UID),
            run_as_group: Some(SESSION_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("workspace", WORKSPACE_DIR),
            mount("tmp", "/tmp"),
            mount("home", HOME_DIR),
        ]),
        ..Default::default()
    };
    Pod {
        metadata: meta(settings, name(settings, &spec.id), &spec.id),
        spec: Some(PodSpec {
            containers: vec![container],
            node_name: settings.node_name.clone(),
            runtime_class_name: settings.runtime_class.clone(),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            // The Pod's pause process is PID 1 and reaps orphans, as tini
            // does under Docker.
            share_process_namespace: Some(true),
            termination_grace_period_seconds: Some(GRACE_SECONDS),
            // A backstop to the session's own lifetime; a warm Pod's
            // begins when it is claimed.
            active_deadline_seconds: (!spec.pooled).then(|| limits.timeout_secs.max(1) as i64),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(SESSION_UID),
                run_as_group: Some(SESSION_UID),
                fs_group: Some(SESSION_UID),
                seccomp_profile: Some(seccomp),
                ..Default::default()
            }),
            volumes: Some(vec![
                Volume {
                    name: "workspace".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: None,
                        size_limit: settings.workspace_size.clone().map(quantity),
                    }),
                    ..Default::default()
                },
                memory_volume("tmp", TMP_SIZE),
                memory_volume("home", HOME_SIZE),
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The session's NetworkPolicy: ingress only from the orchestrator's pods
/// to sessiond's port; egress only to the orchestrator's pods on the
/// gateway's port — no DNS, no other pod, no node, no metadata address.
/// Enforced only by a policy-enforcing CNI (Calico, Cilium, GKE Dataplane
/// V2); elsewhere the API server stores it and nothing applies it.
pub fn network_policy(settings: &KubeSettings, id: &SessionId) -> NetworkPolicy {
    let orchestrator = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(settings.orchestrator_labels.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let port = |p: u16| NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(p))),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(settings, name(settings, id), id),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL_SESSION.to_owned(), id.to_string())])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![orchestrator.clone()]),
                ports: Some(vec![port(DEFAULT_PORT)]),
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![orchestrator]),
                ports: Some(vec![port(settings.gateway_port())]),
            }]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_wire::api::SessionLimits;

    fn spec() -> SessionSpec {
        SessionSpec {
            id: SessionId::generate(),
            image: "claudecluster-worker:abc".into(),
            limits: SessionLimits {
                memory_bytes: 512 * 1024 * 1024,
                cpu: 1.5,
                timeout_secs: 3600,
                egress: Default::default(),
                idle_timeout_secs: None,
            },
            agent_token: cc_core::Token::generate(),
            pooled: false,
        }
    }

    #[test]
    fn the_pod_meets_the_restricted_profile_and_carries_no_secret() {
        let s = KubeSettings::example();
        let spec = spec();
        let pod = pod(&s, &spec);
        let json = serde_json::to_value(&pod).unwrap();
        let text = json.to_string();
        assert!(
            !text.contains(spec.agent_token.expose()),
            "token in the Pod"
        );
        let ps = &json["spec"];
        assert_eq!(ps["automountServiceAccountToken"], false);
        assert_eq!(ps["enableServiceLinks"], false);
        assert_eq!(ps["restartPolicy"], "Never");
        assert_eq!(ps["activeDeadlineSeconds"], 3600);
        assert_eq!(ps["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            ps["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let c = &ps["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
        assert_eq!(c["resources"]["limits"]["memory"], "536870912");
        assert_eq!(c["resources"]["limits"]["cpu"], "1500m");
        assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            secret_name(&s, &spec.id)
        );
        for v in ps["volumes"].as_array().unwrap() {
            assert!(v.get("hostPath").is_none(), "{v}");
        }
        assert_eq!(json["metadata"]["labels"][LABEL_SESSION], spec.id.as_str());

        // A warm Pod's lifetime begins at its claim: no deadline before.
        let warm = SessionSpec {
            pooled: true,
            ..spec
        };
        let json = serde_json::to_value(super::pod(&s, &warm)).unwrap();
        assert!(
            json["spec"].get("activeDeadlineSeconds").is_none(),
            "{json}"
        );
    }

    #[test]
    fn the_network_policy_admits_only_the_orchestrator() {
        let s = KubeSettings::example();
        let id = SessionId::generate();
        let np = serde_json::to_value(network_policy(&s, &id)).unwrap();
        let spec = &np["spec"];
        assert_eq!(
            spec["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert_eq!(
            spec["podSelector"]["matchLabels"][LABEL_SESSION],
            id.as_str()
        );
        let orch = serde_json::to_value(&s.orchestrator_labels).unwrap();
        assert_eq!(
            spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
            orch
        );
        assert_eq!(spec["ingress"][0]["ports"][0]["port"], 7700);
        assert_eq!(
            spec["egress"][0]["to"][0]["podSelector"]["matchLabels"],
            orch
        );
        assert_eq!(spec["egress"][0]["ports"][0]["port"], 8081);
        // One egress peer only: no DNS, no ipBlock.
        assert_eq!(spec["egress"].as_array().unwrap().len(), 1);
        assert_eq!(spec["egress"][0]["to"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_secret_holds_the_token_under_the_sessions_labels() {
        let s = KubeSettings::example();
        let spec = spec();
        let sec = secret(&s, &spec);
        let data = sec.data.unwrap();
        assert_eq!(data[TOKEN_KEY].0, spec.agent_token.expose().as_bytes());
        assert_eq!(
            sec.metadata.labels.unwrap()[LABEL_SESSION],
            spec.id.as_str()
        );
    }
}
