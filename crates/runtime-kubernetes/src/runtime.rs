//! Session Pods through the Kubernetes API.

use crate::manifest::{self, CONTAINER, LABEL_SESSION};
use crate::observe;
use crate::settings::KubeSettings;
use cc_core::{
    ContainerStatus, Placement, ResourceUsage, Runtime, RuntimeError, RuntimeEvent,
    RuntimeEventKind, RuntimeEventStream, SessionId, SessionSpec, Started,
};
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource, ResourceExt};
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a deleted Pod may take to go before it is deleted by force.
const REMOVE_WAIT: Duration = Duration::from_secs(30);
/// Seconds a watch runs before the server ends it and it is resumed.
const WATCH_TIMEOUT_SECS: u32 = 290;

#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    settings: Arc<KubeSettings>,
}

impl KubernetesRuntime {
    /// Connects with `kubeconfig` (else the in-cluster service account,
    /// `$KUBECONFIG` or `~/.kube/config`) and checks that the API server
    /// answers, that session Pods may be listed in the namespace and that
    /// the namespace exists.
    pub async fn connect(
        settings: KubeSettings,
        kubeconfig: Option<&Path>,
    ) -> Result<Self, RuntimeError> {
        settings.validate()?;
        let config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    RuntimeError::Invalid(format!("reading the kubeconfig {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| {
                        RuntimeError::Invalid(format!("the kubeconfig {}: {e}", path.display()))
                    })?
            }
            None => Config::infer().await.map_err(|e| {
                RuntimeError::Invalid(format!(
                    "no Kubernetes configuration (in-cluster service account, $KUBECONFIG or ~/.kube/config): {e}"
                ))
            })?,
        };
        let client = Client::try_from(config)
            .map_err(|e| RuntimeError::Invalid(format!("the Kubernetes client: {e}")))?;
        let rt = Self {
            client,
            settings: Arc::new(settings),
        };
        rt.check().await?;
        Ok(rt)
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// The API client this runtime was connected with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn check(&self) -> Result<(), RuntimeError> {
        let ns = &self.settings.namespace;
        self.pods()
            .list(&ListParams::default().labels(&self.selector()).limit(1))
            .await
            .map_err(|e| classify(e, &format!("listing session Pods in namespace {ns}")))?;
        // Namespaces are cluster-wide: a Role in the sessions' namespace
        // cannot grant reading them, so a refusal proves nothing.
        match Api::<Namespace>::all(self.client.clone()).get_opt(ns).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(RuntimeError::Invalid(format!(
                "namespace {ns} does not exist: create it (kubectl create namespace {ns})"
            ))),
            Err(e) if api_code(&e) == Some(403) => Ok(()),
            Err(e) => Err(classify(e, &format!("reading namespace {ns}"))),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn selector(&self) -> String {
        manifest::deployment_selector(&self.settings)
    }

    fn name(&self, id: &SessionId) -> String {
        manifest::name(&self.settings, id)
    }

    async fn get_pod(&self, id: &SessionId) -> Result<Option<Pod>, RuntimeError> {
        self.pods()
            .get_opt(&self.name(id))
            .await
            .map_err(|e| classify(e, "reading the session Pod"))
    }

    fn placement(&self, pod: &Pod) -> Option<Placement> {
        Some(Placement {
            container_id: pod.uid()?,
            agent_url: observe::agent_url(pod)?,
            gateway_url: self.settings.gateway_url.clone(),
        })
    }

    /// Creates the session's Secret, NetworkPolicy and Pod (keeping those
    /// that exist: a retried create); returns the Pod's UID.
    async fn create_objects(&self, spec: &SessionSpec) -> Result<String, RuntimeError> {
        let pp = PostParams::default();
        keep_existing(
            self.secrets()
                .create(&pp, &manifest::secret(&self.settings, spec))
                .await,
            "creating the session's token Secret",
        )?;
        keep_existing(
            self.policies()
                .create(&pp, &manifest::network_policy(&self.settings, &spec.id))
                .await,
            "creating the session's NetworkPolicy",
        )?;
        let what = "creating the session Pod";
        let pod = match self
            .pods()
            .create(&pp, &manifest::pod(&self.settings, spec))
            .await
        {
            Ok(pod) => pod,
            Err(e) if api_code(&e) == Some(409) => self
                .get_pod(&spec.id)
                .await?
                .ok_or_else(|| RuntimeError::NotFound(format!("{what}: deleted meanwhile")))?,
            Err(e) => return Err(classify(e, what)),
        };
        pod.uid()
            .ok_or_else(|| RuntimeError::Internal(format!("{what}: the API server gave no UID")))
    }

    /// The sessions this deployment's objects of one kind belong to.
    async fn sessions_of<K>(&self, api: Api<K>, kind: &str) -> Result<Vec<SessionId>, RuntimeError>
    where
        K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        let objects = api
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| classify(e, &format!("listing session {kind}")))?;
        Ok(objects
            .items
            .iter()
            .filter_map(|o| o.labels().get(LABEL_SESSION))
            .filter_map(|s| SessionId::parse(s))
            .collect())
    }

    /// The kubelet's summary of the Pod's node (what metrics-server reads),
    /// through the API server's node proxy.
    async fn node_summary(&self, node: &str) -> Result<serde_json::Value, RuntimeError> {
        let req = http::Request::get(format!("/api/v1/nodes/{node}/proxy/stats/summary"))
            .body(Vec::new())
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        self.client
            .request::<serde_json::Value>(req)
            .await
            .map_err(|e| classify(e, "reading the node's resource summary"))
    }
}

impl Runtime for KubernetesRuntime {
    /// Creates the session's objects and answers at once: the Pod is
    /// [`Started::Pending`] until the kubelet runs it.
    async fn create(&self, spec: &SessionSpec) -> Result<Started, RuntimeError> {
        let uid = self.create_objects(spec).await?;
        Ok(Started::Pending {
            container_id: uid,
            gateway_url: self.settings.gateway_url.clone(),
        })
    }

    /// Watches the Pod until it runs, cannot run (an image that is not
    /// there, a container that failed) or misses the start deadline
    /// (still Pending: the scheduler's reason), from the version last
    /// read, so a change is seen as it happens rather than at the next poll.
    async fn wait_running(&self, id: &SessionId) -> Result<Placement, RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.settings.start_deadline;
        let gone = || RuntimeError::NotFound("the session Pod was deleted while it started".into());
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name(id)))
            .timeout(WATCH_TIMEOUT_SECS);
        loop {
            let mut pod = self.get_pod(id).await?.ok_or_else(gone)?;
            let watch = self
                .pods()
                .watch(&wp, &pod.resource_version().unwrap_or_default())
                .await
                .map_err(|e| classify(e, "watching the session Pod start"))?;
            let mut watch = std::pin::pin!(watch);
            loop {
                if let Some(placed) = self.placement(&pod) {
                    return Ok(placed);
                }
                if let Some(why) = observe::start_failure(&pod) {
                    return Err(RuntimeError::Invalid(why));
                }
                let late = || {
                    RuntimeError::Unavailable(format!(
                        "the session Pod did not run within {} s: {}",
                        self.settings.start_deadline.as_secs(),
                        observe::pending_reason(&pod)
                    ))
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(late());
                }
                let Ok(next) = tokio::time::timeout_at(deadline, watch.next()).await else {
                    return Err(late());
                };
                match next {
                    Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => pod = p,
                    Some(Ok(WatchEvent::Deleted(_))) => return Err(gone()),
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    // Ended, expired or broken: read the Pod and watch again.
                    None | Some(Ok(WatchEvent::Error(_))) | Some(Err(_)) => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn remove(&self, id: &SessionId) -> Result<(), RuntimeError> {
        let name = self.name(id);
        let gentle = DeleteParams::default();
        ignore_missing(
            self.pods().delete(&name, &gentle).await,
            "deleting the session Pod",
        )?;
        let deadline = Instant::now() + REMOVE_WAIT;
        while self.get_pod(id).await?.is_some() {
            if Instant::now() >= deadline {
                // A kubelet that does not confirm (a lost node): delete the
                // object anyway, as `kubectl delete --force` does.
                tracing::warn!(session = %id, "the session Pod did not stop in time: deleting it by force");
                ignore_missing(
                    self.pods()
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await,
                    "deleting the session Pod by force",
                )?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ignore_missing(
            self.policies().delete(&name, &gentle).await,
            "deleting the session's NetworkPolicy",
        )?;
        ignore_missing(
            self.secrets()
                .delete(&manifest::secret_name(&self.settings, id), &gentle)
                .await,
            "deleting the session's token Secret",
        )
    }

    async fn inspect(&self, id: &SessionId) -> Result<Option<ContainerStatus>, RuntimeError> {
        Ok(self.get_pod(id).await?.map(|p| observe::status(&p)))
    }

    async fn list(&self) -> Result<Vec<SessionId>, RuntimeError> {
        let mut ids = std::collections::BTreeSet::new();
        ids.extend(self.sessions_of(self.pods(), "Pods").await?);
        ids.extend(self.sessions_of(self.secrets(), "Secrets").await?);
        ids.extend(self.sessions_of(self.policies(), "NetworkPolicies").await?);
        Ok(ids.into_iter().collect())
    }

    async fn locate(&self, id: &SessionId) -> Result<Option<Placement>, RuntimeError> {
        Ok(self.get_pod(id).await?.and_then(|p| self.placement(&p)))
    }

    async fn events(&self) -> Result<RuntimeEventStream, RuntimeError> {
        // A list first: its version starts the watch, and the Pods that
        // already ended are not reported (the feed is "from now on").
        let list = self
            .pods()
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| classify(e, "listing session Pods"))?;
        let feed = Feed {
            pods: self.pods(),
            selector: self.selector(),
            version: list.metadata.resource_version.clone().unwrap_or_default(),
            reported: list
                .items
                .iter()
                .filter(|p| observe::finished(p))
                .filter_map(|p| p.uid())
                .collect(),
            watch: None,
            pending: VecDeque::new(),
            broken: false,
        };
        Ok(stream::unfold(feed, Feed::next).boxed())
    }

    /// The API shows only the container's own end (`OOMKilled`).
    fn reports_oom_kills(&self) -> bool {
        false
    }

    async fn stats(&self, id: &SessionId) -> Result<Option<ResourceUsage>, RuntimeError> {
        let Some(pod) = self.get_pod(id).await? else {
            return Ok(None);
        };
        if !observe::status(&pod).running {
            return Ok(None);
        }
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return Ok(None);
        };
        let summary = match self.node_summary(&node).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(session = %id, error = %e, "no resource summary for the session Pod");
                return Ok(None);
            }
        };
        Ok(usage(&summary, &pod))
    }
}

/// The seam's resource use of `pod` from its node's summary.
fn usage(summary: &serde_json::Value, pod: &Pod) -> Option<ResourceUsage> {
    let name = pod.meta().name.as_deref()?;
    let namespace = pod.meta().namespace.as_deref()?;
    let entry = summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name && p["podRef"]["namespace"] == namespace)?;
    let container = entry["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == CONTAINER)?;
    let limit = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)
        .and_then(|c| {
            c.resources
                .as_ref()?
                .limits
                .as_ref()?
                .get("memory")
                .cloned()
        })
        .and_then(|q| q.0.parse::<u64>().ok())
        .unwrap_or(0);
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    Some(ResourceUsage {
        cpu_percent: u(&container["cpu"]["usageNanoCores"]) as f64 / 1e7,
        memory_bytes: u(&container["memory"]["workingSetBytes"]),
        memory_limit_bytes: limit,
        net_rx_bytes: u(&entry["network"]["rxBytes"]),
        net_tx_bytes: u(&entry["network"]["txBytes"]),
        pids: u(&entry["process_stats"]["process_count"]),
        workspace_bytes: None,
    })
}

/// The event feed's state: a watch resumed from the last version seen,
/// each Pod's end reported once. A `410 Gone` (the version is too old) or
/// any other failure ends the feed with an error; the core subscribes
/// again, which lists afresh.
struct Feed {
    pods: Api<Pod>,
    selector: String,
    version: String,
    /// UIDs of the Pods whose end was reported (or predates the feed).
    reported: HashSet<String>,
    watch: Option<BoxStream<'static, kube::Result<WatchEvent<Pod>>>>,
    pending: VecDeque<RuntimeEvent>,
    broken: bool,
}

impl Feed {
    async fn next(mut self) -> Option<(Result<RuntimeEvent, RuntimeError>, Self)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.broken {
                return None;
            }
            let watch = match self.watch.as_mut() {
                Some(w) => w,
                None => {
                    let wp = WatchParams::default()
                        .labels(&self.selector)
                        .timeout(WATCH_TIMEOUT_SECS);
                    match self.pods.watch(&wp, &self.version).await {
                        Ok(w) => self.watch.insert(w.boxed()),
                        Err(e) => return self.fail(classify(e, "watching session Pods")),
                    }
                }
            };
            match watch.next().await {
                // The server ended the watch (its timeout): resume.
                None => self.watch = None,
                Some(Err(e)) => return self.fail(classify(e, "watching session Pods")),
                Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                    self.seen(&pod);
                    if observe::finished(&pod) {
                        self.report(&pod);
                    }
                }
                Some(Ok(WatchEvent::Deleted(pod))) => {
                    self.seen(&pod);
                    // A Pod deleted before it ended (by an admin, an
                    // eviction) ends its session too.
                    self.report(&pod);
                    if let Some(uid) = pod.uid() {
                        self.reported.remove(&uid);
                    }
                }
                Some(Ok(WatchEvent::Bookmark(b))) => self.version = b.metadata.resource_version,
                Some(Ok(WatchEvent::Error(status))) => {
                    let e = if status.code == 410 {
                        RuntimeError::Unavailable(
                            "the session Pod watch expired (410 Gone); listing again".into(),
                        )
                    } else {
                        RuntimeError::Unavailable(format!(
                            "watching session Pods: {} ({})",
                            status.message, status.code
                        ))
                    };
                    return self.fail(e);
                }
            }
        }
    }

    fn fail(mut self, e: RuntimeError) -> Option<(Result<RuntimeEvent, RuntimeError>, Self)> {
        self.broken = true;
        self.watch = None;
        Some((Err(e), self))
    }

    fn seen(&mut self, pod: &Pod) {
        if let Some(v) = pod.resource_version() {
            self.version = v;
        }
    }

    /// Queues the Pod's exit unless it was reported already.
    fn report(&mut self, pod: &Pod) {
        let (Some(uid), Some(session)) = (
            pod.uid(),
            pod.labels()
                .get(LABEL_SESSION)
                .and_then(|s| SessionId::parse(s)),
        ) else {
            return;
        };
        if !self.reported.insert(uid) {
            return;
        }
        let st = observe::status(pod);
        self.pending.push_back(RuntimeEvent {
            session,
            kind: RuntimeEventKind::Exited {
                code: st.exit_code,
                oom: st.oom_killed,
            },
        });
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn keep_existing<T>(r: kube::Result<T>, what: &str) -> Result<(), RuntimeError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(classify(e, what)),
    }
}

fn ignore_missing<T>(r: kube::Result<T>, what: &str) -> Result<(), RuntimeError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(classify(e, what)),
    }
}

/// Classifies an API error at the seam, with what was being done.
fn classify(e: kube::Error, what: &str) -> RuntimeError {
    match &e {
        kube::Error::Api(s) => {
            let msg = format!("{what}: {}", s.message);
            match s.code {
                404 => RuntimeError::NotFound(msg),
                409 => RuntimeError::Conflict(msg),
                401 => RuntimeError::Invalid(format!(
                    "{msg} (the API server refused the credentials)"
                )),
                403 => RuntimeError::Invalid(format!(
                    "{msg} (RBAC: the orchestrator's service account needs pods, pods/status, secrets and networkpolicies in this namespace; see deploy/kubernetes)"
                )),
                400 | 422 => RuntimeError::Invalid(msg),
                429 | 500..=599 => RuntimeError::Unavailable(msg),
                _ => RuntimeError::Internal(msg),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => RuntimeError::Unavailable(format!(
            "{what}: the Kubernetes API server is not answering: {e}"
        )),
        _ => RuntimeError::Internal(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_the_nodes_summary() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cc-1", "namespace": "ns"},
            "spec": {"containers": [{"name": "session",
                "resources": {"limits": {"memory": "268435456"}}}]}
        }))
        .unwrap();
        let summary = serde_json::json!({"pods": [
            {"podRef": {"name": "other", "namespace": "ns"}, "containers": []},
            {"podRef": {"name": "cc-1", "namespace": "ns"},
             "network": {"rxBytes": 10, "txBytes": 20},
             "process_stats": {"process_count": 3},
             "containers": [{"name": "session",
                "cpu": {"usageNanoCores": 250000000},
                "memory": {"workingSetBytes": 1048576}}]}
        ]});
        let u = usage(&summary, &pod).unwrap();
        assert_eq!(u.cpu_percent, 25.0);
        assert_eq!(u.memory_bytes, 1 << 20);
        assert_eq!(u.memory_limit_bytes, 256 << 20);
        assert_eq!((u.net_rx_bytes, u.net_tx_bytes, u.pids), (10, 20, 3));
        let gone = serde_json::json!({"pods": []});
        assert!(usage(&gone, &pod).is_none());
    }

    #[test]
    fn api_errors_are_classified_with_what_was_done() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "nope".into(),
                ..Default::default()
            }))
        };
        assert!(matches!(classify(api(404), "x"), RuntimeError::NotFound(_)));
        assert!(matches!(classify(api(409), "x"), RuntimeError::Conflict(_)));
        let RuntimeError::Invalid(m) = classify(api(403), "creating the session Pod") else {
            panic!("403 is a configuration problem");
        };
        assert!(
            m.starts_with("creating the session Pod: nope") && m.contains("RBAC"),
            "{m}"
        );
        assert!(matches!(
            classify(api(503), "x"),
            RuntimeError::Unavailable(_)
        ));
    }
}
