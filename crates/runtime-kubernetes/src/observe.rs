//! What a session Pod's status says, in the seam's terms.

use crate::manifest::CONTAINER;
use cc_core::ContainerStatus;
use cc_wire::sessiond::DEFAULT_PORT;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

/// Waiting reasons that no amount of waiting fixes. Others the kubelet
/// retries, and some pass: `CreateContainerConfigError` is seen for a
/// moment while the kubelet's cache catches up with a Secret just created
/// ("failed to sync secret cache"); they fail the session only at the
/// start deadline, with their message.
const HOPELESS: &[&str] = &["ErrImageNeverPull", "InvalidImageName"];

fn session_container(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)
}

/// How the session container ended, when it did.
pub fn terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    session_container(pod)?.state.as_ref()?.terminated.as_ref()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The Pod ended without its container reporting an exit (an active
/// deadline, an eviction, a node lost).
fn ended_without_exit(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded") && terminated(pod).is_none()
}

/// The seam's view of a session Pod.
pub fn status(pod: &Pod) -> ContainerStatus {
    if let Some(t) = terminated(pod) {
        return ContainerStatus {
            running: false,
            starting: false,
            exit_code: Some(i64::from(t.exit_code)),
            oom_killed: t.reason.as_deref() == Some("OOMKilled"),
        };
    }
    let running = phase(pod) == "Running"
        && session_container(pod)
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some());
    ContainerStatus {
        running,
        starting: !running && phase(pod) == "Pending",
        exit_code: None,
        oom_killed: false,
    }
}

/// Whether the session has ended for good: an exit is reported once.
pub fn finished(pod: &Pod) -> bool {
    terminated(pod).is_some() || ended_without_exit(pod)
}

/// sessiond's URL, once the Pod runs and has an address.
pub fn agent_url(pod: &Pod) -> Option<String> {
    if !status(pod).running {
        return None;
    }
    let ip = pod
        .status
        .as_ref()?
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())?;
    Some(if ip.contains(':') {
        format!("http://[{ip}]:{DEFAULT_PORT}")
    } else {
        format!("http://{ip}:{DEFAULT_PORT}")
    })
}

/// Why a Pod that does not run will not, as the scheduler or the kubelet
/// put it; `None` while it may still start.
pub fn start_failure(pod: &Pod) -> Option<String> {
    if let Some(t) = terminated(pod) {
        return Some(format!(
            "the session container exited with code {} ({}) before it was ready",
            t.exit_code,
            t.reason.as_deref().unwrap_or("no reason given")
        ));
    }
    if ended_without_exit(pod) {
        return Some(format!("the session Pod ended: {}", pending_reason(pod)));
    }
    let waiting = session_container(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())?;
    let reason = waiting.reason.as_deref().unwrap_or_default();
    HOPELESS.contains(&reason).then(|| {
        format!(
            "the session container cannot start: {reason}: {}",
            waiting.message.as_deref().unwrap_or("no message")
        )
    })
}

/// What holds a Pod back, for the error when it misses its deadline: the
/// scheduler's condition, the container's waiting reason, or its phase.
pub fn pending_reason(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let container = session_container(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| {
            let reason = w.reason.as_deref()?;
            Some(match w.message.as_deref() {
                Some(m) => format!("{reason}: {m}"),
                None => reason.to_owned(),
            })
        });
    let condition = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.status == "False" && c.message.is_some())
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or(&c.type_),
                c.message.as_deref().unwrap_or_default()
            )
        });
    let pod_reason = status.and_then(|s| {
        Some(format!(
            "{}: {}",
            s.reason.as_deref()?,
            s.message.as_deref().unwrap_or_default()
        ))
    });
    container
        .or(pod_reason)
        .or(condition)
        .unwrap_or_else(|| format!("the Pod is {}", phase(pod)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_running_pod_is_located_at_its_address() {
        let p = pod(serde_json::json!({
            "phase": "Running", "podIP": "10.1.2.3",
            "containerStatuses": [{"name": "session", "ready": true, "restartCount": 0,
                "image": "i", "imageID": "", "state": {"running": {}}}]
        }));
        assert_eq!(
            status(&p),
            ContainerStatus {
                running: true,
                starting: false,
                exit_code: None,
                oom_killed: false
            }
        );
        assert_eq!(agent_url(&p).as_deref(), Some("http://10.1.2.3:7700"));
        assert!(!finished(&p));
        assert_eq!(start_failure(&p), None);
    }

    #[test]
    fn exits_and_oom_kills_come_from_the_container_state() {
        let p = pod(serde_json::json!({
            "phase": "Failed", "podIP": "10.1.2.3",
            "containerStatuses": [{"name": "session", "ready": false, "restartCount": 0,
                "image": "i", "imageID": "",
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]
        }));
        assert_eq!(
            status(&p),
            ContainerStatus {
                running: false,
                starting: false,
                exit_code: Some(137),
                oom_killed: true
            }
        );
        assert!(finished(&p));
        assert_eq!(agent_url(&p), None);
    }

    #[test]
    fn a_pod_that_cannot_start_says_why() {
        let missing = pod(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "session", "ready": false, "restartCount": 0,
                "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "ErrImageNeverPull",
                    "message": "Container image \"x\" is not present with pull policy of Never"}}}]
        }));
        let why = start_failure(&missing).unwrap();
        assert!(
            why.contains("ErrImageNeverPull") && why.contains("not present"),
            "{why}"
        );

        let unschedulable = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory."}]
        }));
        assert_eq!(
            start_failure(&unschedulable),
            None,
            "may still be scheduled"
        );
        assert!(pending_reason(&unschedulable).contains("Insufficient memory"));
        assert!(status(&unschedulable).starting);

        let deadline = pod(serde_json::json!({
            "phase": "Failed", "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline"
        }));
        assert!(finished(&deadline));
        assert!(!status(&deadline).starting);
        assert!(start_failure(&deadline)
            .unwrap()
            .contains("DeadlineExceeded"));
    }
}
