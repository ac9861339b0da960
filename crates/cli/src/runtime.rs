//! The runtime chosen by value: `serve --runtime docker|kubernetes` and each
//! runtime's own flags, grouped under its heading. [`AnyRuntime`] delegates
//! the runtime seam to the backend chosen (an enum over the closed set of
//! backends, as `store::AnyStore` is), so the core stays generic over one
//! type. The Kubernetes backend is the cargo feature `kubernetes` (on by
//! default).

use anyhow::Context;
use cc_core::{
    ContainerStatus, Placement, ResourceUsage, Runtime, RuntimeError, RuntimeEventStream,
    SessionId, SessionSpec, Started,
};
use cc_runtime_docker::DockerRuntime;
use clap::{Args, ValueEnum};

/// Where session containers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Containers on this host's Docker Engine.
    Docker,
    /// Pods in a Kubernetes namespace.
    Kubernetes,
}

/// The Docker runtime's flags.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Docker runtime (--runtime docker)")]
pub struct DockerArgs {
    /// OCI runtime for session containers, registered with Docker (e.g.
    /// `runsc` for gVisor); Docker's default when unset.
    #[arg(long, env = "CLAUDECLUSTER_CONTAINER_RUNTIME")]
    pub container_runtime: Option<String>,
    /// Give session networks subnets from this IPv4 pool, `CIDR[/LEN]`
    /// (e.g. `10.213.0.0/16`, or `10.213.0.0/16/28`), instead of Docker's
    /// default address pools, which hold only about 30 networks. Off by
    /// default: Docker does not check an explicit subnet against the
    /// host's routes, so no fixed range is safe on every host (a LAN or
    /// VPN route could be shadowed); pick one the host does not use.
    #[arg(long, env = "CLAUDECLUSTER_SESSION_SUBNET_POOL")]
    pub session_subnet_pool: Option<String>,
    /// Prefix length of each session's subnet in --session-subnet-pool
    /// (16..=29; a /28 has 14 hosts, a session needs one).
    #[arg(long, env = "CLAUDECLUSTER_SESSION_SUBNET_SIZE", default_value_t = 28)]
    pub session_subnet_size: u8,
    /// Close the host to sessions except the gateway port (iptables INPUT
    /// rules per session bridge; needs root). `false` leaves every host
    /// port bound to 0.0.0.0 reachable from sessions.
    #[arg(long, env = "CLAUDECLUSTER_HOST_FIREWALL", default_value_t = true, action = clap::ArgAction::Set)]
    pub host_firewall: bool,
}

/// The workspace size limit, whatever the runtime.
#[derive(Args, Debug, Clone)]
pub struct WorkspaceArgs {
    /// The most each session's workspace may hold (`10g`, `500m`; `0`: no
    /// limit). Kubernetes bounds the workspace `emptyDir` with it (the
    /// kubelet evicts a Pod over it); on Docker, whose volumes have no size
    /// limit of their own, the workspaces are measured every
    /// --workspace-check-interval seconds and a session over the limit ends
    /// in `error`.
    #[arg(
        long,
        alias = "kube-workspace-size",
        env = "CLAUDECLUSTER_WORKSPACE_SIZE",
        default_value = "10g"
    )]
    pub workspace_size: String,
}

impl WorkspaceArgs {
    /// The limit in bytes; `None` for no limit.
    pub fn limit(&self) -> anyhow::Result<Option<u64>> {
        if self.workspace_size.trim() == "0" {
            return Ok(None);
        }
        cc_core::config::parse_memory(&cc_wire::api::Quantity::Text(self.workspace_size.clone()))
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--workspace-size: {e}"))
    }
}

/// The Kubernetes runtime's flags.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Kubernetes runtime (--runtime kubernetes)")]
pub struct KubeArgs {
    /// Namespace of the session Pods (it must exist).
    #[arg(
        long,
        env = "CLAUDECLUSTER_KUBE_NAMESPACE",
        default_value = "claudecluster-sessions"
    )]
    pub kube_namespace: String,
    /// The gateway's URL as session Pods reach it, e.g. its Service
    /// `http://claudecluster-gateway.claudecluster.svc:8081`. Required
    /// with --runtime kubernetes.
    #[arg(long, env = "CLAUDECLUSTER_KUBE_GATEWAY_URL", value_name = "URL")]
    pub kube_gateway_url: Option<String>,
    /// A kubeconfig file; without it, the in-cluster service account,
    /// $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "CLAUDECLUSTER_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Put every session Pod on this node (clusters without a scheduler).
    #[arg(long, env = "CLAUDECLUSTER_KUBE_NODE")]
    pub kube_node: Option<String>,
    /// RuntimeClass of session Pods (e.g. `gvisor` on GKE Sandbox, Kata on
    /// AKS).
    #[arg(long, env = "CLAUDECLUSTER_KUBE_RUNTIME_CLASS")]
    pub kube_runtime_class: Option<String>,
    /// Seccomp profile of session Pods: `runtime-default`, or
    /// `localhost:<file>` installed in every kubelet's seccomp directory
    /// (deploy/seccomp/claudecluster.json).
    #[arg(
        long,
        env = "CLAUDECLUSTER_KUBE_SECCOMP",
        default_value = "runtime-default"
    )]
    pub kube_seccomp: String,
    /// Image pull policy of session Pods.
    #[arg(long, env = "CLAUDECLUSTER_KUBE_IMAGE_PULL_POLICY", default_value = "IfNotPresent", value_parser = ["IfNotPresent", "Always", "Never"])]
    pub kube_image_pull_policy: String,
    /// Seconds a session Pod may take to run before its session fails with
    /// the scheduler's or kubelet's reason.
    #[arg(long, env = "CLAUDECLUSTER_KUBE_START_TIMEOUT", default_value_t = 120)]
    pub kube_start_timeout: u64,
    /// A label of the orchestrator's Pods, `KEY=VALUE` (repeatable): the
    /// only peers the sessions' NetworkPolicies admit. Default
    /// `app.kubernetes.io/name=claudecluster`.
    #[arg(long = "kube-orchestrator-label", env = "CLAUDECLUSTER_KUBE_ORCHESTRATOR_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub kube_orchestrator_labels: Vec<(String, String)>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

#[cfg(feature = "kubernetes")]
impl KubeArgs {
    pub(crate) fn settings(
        &self,
        prefix: &str,
        workspace: &WorkspaceArgs,
    ) -> anyhow::Result<cc_runtime_kubernetes::KubeSettings> {
        let gateway = self.kube_gateway_url.clone().context(
            "--runtime kubernetes needs --kube-gateway-url: the gateway's URL as session Pods reach it (e.g. its Service)",
        )?;
        let mut s = cc_runtime_kubernetes::KubeSettings::new(self.kube_namespace.clone(), gateway);
        s.prefix = prefix.to_owned();
        s.node_name = self.kube_node.clone();
        s.runtime_class = self.kube_runtime_class.clone();
        s.seccomp = self
            .kube_seccomp
            .parse()
            .map_err(|e| anyhow::anyhow!("--kube-seccomp: {e}"))?;
        s.image_pull_policy = self.kube_image_pull_policy.clone();
        s.workspace_size = workspace.limit()?.map(|bytes| bytes.to_string());
        s.start_deadline = std::time::Duration::from_secs(self.kube_start_timeout.max(1));
        if !self.kube_orchestrator_labels.is_empty() {
            s.orchestrator_labels = self.kube_orchestrator_labels.iter().cloned().collect();
        }
        Ok(s)
    }
}

/// The runtime `serve` runs sessions on.
#[derive(Clone)]
pub enum AnyRuntime {
    Docker(DockerRuntime),
    #[cfg(feature = "kubernetes")]
    Kubernetes(cc_runtime_kubernetes::KubernetesRuntime),
}

/// Which runtime, with every flag that configures one.
pub struct RuntimeChoice<'a> {
    pub kind: RuntimeKind,
    /// Prefix of every resource the runtime creates.
    pub prefix: &'a str,
    pub docker: &'a DockerArgs,
    pub kube: &'a KubeArgs,
    pub workspace: &'a WorkspaceArgs,
}

impl AnyRuntime {
    /// Connects to the runtime chosen and checks it can run `image`;
    /// `gateway_port` is where this server's gateway listens, and
    /// `gateway_url`, when given, where sessions reach it instead (a load
    /// balancer in front of several replicas).
    pub async fn open(
        choice: RuntimeChoice<'_>,
        image: &str,
        gateway_port: u16,
        gateway_url: Option<&url::Url>,
    ) -> anyhow::Result<Self> {
        let RuntimeChoice {
            kind,
            prefix,
            docker,
            kube,
            workspace,
        } = choice;
        match kind {
            RuntimeKind::Docker => {
                let rt = DockerRuntime::connect(prefix)
                    .await
                    .context("connecting to Docker")?;
                rt.check_image(image).await?;
                let rt = match &docker.container_runtime {
                    Some(name) => rt.with_container_runtime(name).await?,
                    None => rt,
                };
                let rt = match &docker.session_subnet_pool {
                    Some(spec) => {
                        let pool =
                            cc_runtime_docker::SubnetPool::parse(spec, docker.session_subnet_size)
                                .context("--session-subnet-pool")?;
                        tracing::info!(pool = %pool, subnets = pool.len(), "session subnet pool");
                        rt.with_subnet_pool(pool.cidr(), pool.subnet_prefix())?
                    }
                    None => rt,
                };
                let (rt, gateway_port) = match gateway_url {
                    Some(url) => {
                        let port = url
                            .port_or_known_default()
                            .context("--gateway-url needs a port sessions reach the gateway on")?;
                        (rt.with_gateway_url(url.as_str()), port)
                    }
                    None => (rt, gateway_port),
                };
                let rt = if docker.host_firewall {
                    rt.with_host_firewall(gateway_port).await?
                } else {
                    tracing::warn!(
                        "--host-firewall off: sessions can reach every host port bound to 0.0.0.0"
                    );
                    rt.with_gateway_port(gateway_port)
                };
                Ok(Self::Docker(rt))
            }
            #[cfg(feature = "kubernetes")]
            RuntimeKind::Kubernetes => {
                let mut kube = kube.clone();
                if kube.kube_gateway_url.is_none() {
                    kube.kube_gateway_url =
                        gateway_url.map(|u| u.as_str().trim_end_matches('/').to_owned());
                }
                let settings = kube.settings(prefix, workspace)?;
                let rt = cc_runtime_kubernetes::KubernetesRuntime::connect(
                    settings,
                    kube.kubeconfig.as_deref(),
                )
                .await
                .context("connecting to Kubernetes")?;
                tracing::info!(
                    namespace = %kube.kube_namespace,
                    gateway = %rt.settings().gateway_url,
                    "Kubernetes runtime"
                );
                Ok(Self::Kubernetes(rt))
            }
            #[cfg(not(feature = "kubernetes"))]
            RuntimeKind::Kubernetes => {
                let _ = (kube, workspace);
                anyhow::bail!(
                    "this claudecluster was built without the Kubernetes runtime (cargo feature `kubernetes`)"
                )
            }
        }
    }

    /// Which backend, for the logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Docker(_) => "docker",
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(_) => "kubernetes",
        }
    }
}

/// `match` on the backend, calling the same method on either.
macro_rules! delegate {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            AnyRuntime::Docker($r) => $call.await,
            #[cfg(feature = "kubernetes")]
            AnyRuntime::Kubernetes($r) => $call.await,
        }
    };
}

impl Runtime for AnyRuntime {
    async fn create(&self, spec: &SessionSpec) -> Result<Started, RuntimeError> {
        delegate!(self, r => r.create(spec))
    }
    async fn wait_running(&self, id: &SessionId) -> Result<Placement, RuntimeError> {
        delegate!(self, r => r.wait_running(id))
    }
    async fn remove(&self, id: &SessionId) -> Result<(), RuntimeError> {
        delegate!(self, r => r.remove(id))
    }
    fn can_suspend(&self) -> bool {
        match self {
            AnyRuntime::Docker(r) => r.can_suspend(),
            #[cfg(feature = "kubernetes")]
            AnyRuntime::Kubernetes(r) => r.can_suspend(),
        }
    }
    async fn suspend(&self, id: &SessionId) -> Result<(), RuntimeError> {
        delegate!(self, r => r.suspend(id))
    }
    async fn copy_workspace(&self, from: &SessionId, to: &SessionSpec) -> Result<(), RuntimeError> {
        delegate!(self, r => r.copy_workspace(from, to))
    }
    async fn inspect(&self, id: &SessionId) -> Result<Option<ContainerStatus>, RuntimeError> {
        delegate!(self, r => r.inspect(id))
    }
    async fn list(&self) -> Result<Vec<SessionId>, RuntimeError> {
        delegate!(self, r => r.list())
    }
    async fn locate(&self, id: &SessionId) -> Result<Option<Placement>, RuntimeError> {
        delegate!(self, r => r.locate(id))
    }
    async fn events(&self) -> Result<RuntimeEventStream, RuntimeError> {
        delegate!(self, r => r.events())
    }
    async fn stats(&self, id: &SessionId) -> Result<Option<ResourceUsage>, RuntimeError> {
        delegate!(self, r => r.stats(id))
    }
    async fn workspace_sizes(
        &self,
    ) -> Result<Option<std::collections::HashMap<SessionId, u64>>, RuntimeError> {
        delegate!(self, r => r.workspace_sizes())
    }
    fn reports_oom_kills(&self) -> bool {
        match self {
            AnyRuntime::Docker(r) => r.reports_oom_kills(),
            #[cfg(feature = "kubernetes")]
            AnyRuntime::Kubernetes(r) => r.reports_oom_kills(),
        }
    }
}
