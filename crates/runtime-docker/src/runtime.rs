//! Session containers on Docker.
//!
//! Each session gets an `--internal` bridge network of its own (no route
//! out; the orchestrator reaches sessiond directly, and the session reaches
//! the orchestrator's gateway on the bridge's host address), a named
//! workspace volume, and a hardened container: non-root, read-only root
//! filesystem with tmpfs scratch, all capabilities dropped,
//! no-new-privileges, our own seccomp profile ([`SECCOMP_PROFILE`]),
//! memory/CPU/pids limits, tini as PID 1.

use crate::firewall::{bridge_name, Firewall};
use crate::subnet::{is_overlap, Ipv4Cidr, SubnetPool};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, Ipam, IpamConfig, Mount, MountTypeEnum, NetworkCreateRequest,
    Volume, VolumeCreateOptions,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, EventsOptions, InspectContainerOptions,
    InspectNetworkOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StartContainerOptions, StatsOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use cc_core::{
    ContainerStatus, Placement, ResourceUsage, Runtime, RuntimeError, RuntimeEventStream,
    SessionId, SessionSpec, Started, LABEL_MANAGED, LABEL_SESSION,
};
use cc_wire::sessiond::{DEFAULT_PORT, TOKEN_FROM_STDIN, WORKSPACE_DIR};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// The seccomp profile of every session container
/// (`deploy/seccomp/claudecluster.json`, made by `generate.py` beside it):
/// an allowlist that refuses ptrace and cross-process memory access,
/// keyrings, eBPF, perf, userfaultfd, io_uring, namespaces and mounts, and
/// calls that act on the machine; unknown calls fail with ENOSYS.
pub const SECCOMP_PROFILE: &str = include_str!("../../../deploy/seccomp/claudecluster.json");

/// Resource name prefix of a default deployment.
pub const DEFAULT_PREFIX: &str = "cc-";
/// Label carrying the deployment's prefix, so `list` sees only ours.
pub const LABEL_PREFIX: &str = "io.claudecluster.prefix";
/// Processes a session may run; bounds fork storms.
const PIDS_LIMIT: i64 = 1024;
/// How long a workspace measurement waits for another client's
/// measurement of the shared Engine to end (Docker before 23.0 runs one at
/// a time).
const MEASURE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// The image's unprivileged user.
const SESSION_USER: &str = "1000:1000";

#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    prefix: String,
    /// Host INPUT rules per session bridge; `None` leaves the host open.
    firewall: Option<Firewall>,
    /// OCI runtime for session containers (e.g. gVisor's `runsc`); Docker's
    /// default when `None`.
    container_runtime: Option<String>,
    /// Port of the gateway listener; see [`DockerRuntime::with_gateway_port`].
    gateway_port: u16,
    /// The gateway's URL as every session reaches it, when it is not this
    /// process's listener on the bridge (a load balancer in front of
    /// several replicas); see [`DockerRuntime::with_gateway_url`].
    gateway_url: Option<String>,
    /// Session subnets from our own pool; Docker's default address pools
    /// (about 30 networks) when `None`.
    subnet_pool: Option<SubnetPool>,
    /// Each session's previous CPU sample, so one-shot stats (fast) still
    /// give a CPU share: the one since the previous call.
    cpu_samples: crate::observe::CpuSamples,
}

impl DockerRuntime {
    /// Connects to the local Engine (`DOCKER_HOST` or the default socket)
    /// and agrees on an API version with it.
    pub async fn connect(prefix: impl Into<String>) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unavailable(format!("cannot connect to Docker: {e}")))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("Docker is not answering: {e}")))?;
        let prefix = prefix.into();
        let valid = !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid {
            return Err(RuntimeError::Invalid(format!(
                "resource prefix {prefix:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Self {
            docker,
            prefix,
            firewall: None,
            container_runtime: None,
            gateway_port: 0,
            gateway_url: None,
            subnet_pool: None,
            cpu_samples: Default::default(),
        })
    }

    /// Closes the host to sessions except for the gateway port (see
    /// [`crate::firewall`]); fails when iptables cannot be used.
    /// Runs session containers under another OCI runtime registered with
    /// Docker, such as gVisor's `runsc` (Debian's `runsc` package; gVisor
    /// needs `"runtimeArgs": ["--network=host"]` in its daemon.json entry
    /// here). Fails when Docker does not know the runtime.
    pub async fn with_container_runtime(mut self, name: &str) -> Result<Self, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| classify(e, "reading Docker's runtimes"))?;
        let known: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        if !known.iter().any(|k| k == name) {
            return Err(RuntimeError::Invalid(format!(
                "Docker has no runtime named {name:?} (it has: {}); for gVisor install Debian's runsc and \
                 register it under \"runtimes\" in /etc/docker/daemon.json, then restart Docker",
                known.join(", ")
            )));
        }
        self.container_runtime = Some(name.to_owned());
        Ok(self)
    }

    /// Gives each session network a `/prefix_len` subnet of `pool` (and its
    /// first host as gateway) instead of one from Docker's default address
    /// pools, which hold only about 30 networks. See [`crate::subnet`].
    pub fn with_subnet_pool(
        mut self,
        pool: Ipv4Cidr,
        prefix_len: u8,
    ) -> Result<Self, RuntimeError> {
        let pool =
            SubnetPool::new(pool, prefix_len).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        self.subnet_pool = Some(pool);
        Ok(self)
    }

    pub fn subnet_pool(&self) -> Option<&SubnetPool> {
        self.subnet_pool.as_ref()
    }

    /// The port of the gateway listener, which sessions reach on their
    /// network's gateway address (the host side of the session's bridge).
    pub fn with_gateway_port(mut self, gateway_port: u16) -> Self {
        self.gateway_port = gateway_port;
        self
    }

    /// Sessions reach the gateway at `url` instead of this process's
    /// listener on their bridge: an address of this host in front of
    /// several replicas' gateways (e.g. `http://172.17.0.1:8090`, a load
    /// balancer), so a session outlives the replica that started it. The
    /// host firewall must admit the URL's port (give it to
    /// [`Self::with_host_firewall`]).
    pub fn with_gateway_url(mut self, url: impl Into<String>) -> Self {
        self.gateway_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Lets sessions reach only the gateway's port on this host (and sets
    /// that port, as [`Self::with_gateway_port`]).
    pub async fn with_host_firewall(mut self, gateway_port: u16) -> Result<Self, RuntimeError> {
        Firewall::check().await?;
        self.firewall = Some(Firewall::new(gateway_port, &self.prefix));
        self.gateway_port = gateway_port;
        Ok(self)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, id: &SessionId) -> String {
        format!("{}{id}", self.prefix)
    }

    fn volume_name(&self, id: &SessionId) -> String {
        format!("{}{id}-workspace", self.prefix)
    }

    fn labels(&self, id: &SessionId) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SESSION.to_owned(), id.to_string()),
            (LABEL_PREFIX.to_owned(), self.prefix.clone()),
        ])
    }

    fn prefix_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_PREFIX}={}", self.prefix)],
        )])
    }

    /// Fails with a fix-it message when the worker image is missing.
    pub async fn check_image(&self, image: &str) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(RuntimeError::Invalid(format!(
                "the worker image {image} is not present on this Docker host: build it with `claudecluster image build`"
            ))),
            Err(e) => Err(classify(e, "inspecting the worker image")),
        }
    }

    /// Creates the session's network alone (`create` does it first);
    /// idempotent. With a subnet pool, in the first free subnet for `id`.
    pub async fn create_network(&self, id: &SessionId) -> Result<(), RuntimeError> {
        // Already there (a retried create): keep it. Creating again would
        // clash on the bridge name (and, from a pool, find its subnet taken).
        match self
            .docker
            .inspect_network(&self.name(id), None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(classify(e, "inspecting the session network")),
        }
        let Some(pool) = self.subnet_pool else {
            return self.create_network_in(id, None).await.map(|_| ());
        };
        pool.allocate(id.as_str(), |subnet| {
            self.create_network_in(id, Some(subnet))
        })
        .await
        .map(|_| ())
        .map_err(|e| e.unwrap_or_else(|| RuntimeError::Unavailable(pool.exhausted_message())))
    }

    /// Creates the session network, in `subnet` when given: `Ok(false)`
    /// when Docker says that subnet overlaps one in use.
    async fn create_network_in(
        &self,
        id: &SessionId,
        subnet: Option<Ipv4Cidr>,
    ) -> Result<bool, RuntimeError> {
        let ipam = subnet.map(|s| Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(s.to_string()),
                gateway: Some(s.first_host().to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let req = NetworkCreateRequest {
            name: self.name(id),
            driver: Some("bridge".into()),
            internal: Some(true),
            labels: Some(self.labels(id)),
            // Our own bridge name, so the host firewall rules can name it.
            options: Some(HashMap::from([(
                "com.docker.network.bridge.name".to_owned(),
                bridge_name(id),
            )])),
            ipam,
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) if subnet.is_some() && is_overlap(status_code, &message) => Ok(false),
            Err(e) if status(&e) == Some(409) => Ok(true),
            Err(e) => Err(classify(e, "creating the session network")),
        }
    }

    async fn create_container(&self, spec: &SessionSpec) -> Result<(), RuntimeError> {
        let id = &spec.id;
        let host_config = HostConfig {
            memory: Some(spec.limits.memory_bytes as i64),
            // Same as memory: no swap on top of the limit.
            memory_swap: Some(spec.limits.memory_bytes as i64),
            nano_cpus: Some((spec.limits.cpu * 1e9) as i64),
            pids_limit: Some(PIDS_LIMIT),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec![
                "no-new-privileges".into(),
                format!("seccomp={SECCOMP_PROFILE}"),
            ]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([
                ("/tmp".to_owned(), "rw,nosuid,nodev,size=1g".to_owned()),
                (
                    "/home/claude".to_owned(),
                    "rw,nosuid,nodev,size=512m,uid=1000,gid=1000,mode=0700".to_owned(),
                ),
            ])),
            mounts: Some(vec![Mount {
                target: Some(WORKSPACE_DIR.into()),
                source: Some(self.volume_name(id)),
                typ: Some(MountTypeEnum::VOLUME),
                read_only: Some(false),
                ..Default::default()
            }]),
            init: Some(true),
            runtime: self.container_runtime.clone(),
            network_mode: Some(self.name(id)),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(SESSION_USER.into()),
            // sessiond's token comes on its stdin (see `hand_token`), so
            // it is in no environment: not the init's, which every process
            // of the session could read, nor `docker inspect`'s.
            env: Some(vec![format!("{TOKEN_FROM_STDIN}=1")]),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            labels: Some(self.labels(id)),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(self.name(id)),
            ..Default::default()
        };
        match self.docker.create_container(Some(opts), body).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(RuntimeError::Invalid(format!(
                "the worker image {} is not present on this Docker host: build it with `claudecluster image build`",
                spec.image
            ))),
            Err(e) => Err(classify(e, "creating the session container")),
        }
    }

    /// Writes sessiond's token to the just started container's stdin, one
    /// line, and closes it (`stdin_once`): sessiond reads it before
    /// anything else runs in the session.
    async fn hand_token(&self, spec: &SessionSpec) -> Result<(), RuntimeError> {
        use tokio::io::AsyncWriteExt;
        let opts = AttachContainerOptions {
            stdin: true,
            stream: true,
            ..Default::default()
        };
        let what = "handing sessiond its token";
        let mut attached = self
            .docker
            .attach_container(&self.name(&spec.id), Some(opts))
            .await
            .map_err(|e| classify(e, what))?;
        let line = format!("{}\n", spec.agent_token.expose());
        let io = |e: std::io::Error| RuntimeError::Unavailable(format!("{what}: {e}"));
        attached
            .input
            .write_all(line.as_bytes())
            .await
            .map_err(io)?;
        attached.input.flush().await.map_err(io)?;
        attached.input.shutdown().await.map_err(io)
    }

    /// Removes the session's container (and forgets its CPU sample).
    async fn stop_container(&self, id: &SessionId) -> Result<(), RuntimeError> {
        self.cpu_samples.forget(id);
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        ignore_missing(
            self.docker
                .remove_container(&self.name(id), Some(opts))
                .await,
            "removing the session container",
        )
    }

    /// Removes the session's network and its host rules.
    async fn remove_network(&self, id: &SessionId) -> Result<(), RuntimeError> {
        ignore_missing(
            self.docker.remove_network(&self.name(id)).await,
            "removing the session network",
        )?;
        if let Some(fw) = &self.firewall {
            fw.uninstall(id).await;
        }
        Ok(())
    }

    async fn placement(&self, id: &SessionId) -> Result<Placement, RuntimeError> {
        let name = self.name(id);
        let c = self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| classify(e, "inspecting the session container"))?;
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut nets| nets.remove(&name))
            .and_then(|ep| ep.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| RuntimeError::Internal("session container has no address".into()))?;
        let net = self
            .docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
            .map_err(|e| classify(e, "inspecting the session network"))?;
        let gateway: IpAddr = net
            .ipam
            .and_then(|i| i.config)
            .into_iter()
            .flatten()
            .filter_map(|c| c.gateway)
            .find_map(|g| g.parse().ok())
            .ok_or_else(|| RuntimeError::Internal("session network has no gateway".into()))?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        if self.gateway_port == 0 {
            return Err(RuntimeError::Internal(
                "the Docker runtime was not told the gateway's port (with_gateway_port)".into(),
            ));
        }
        let gateway = match gateway {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        Ok(Placement {
            container_id: c.id.unwrap_or_default(),
            agent_url: format!("http://{host}:{DEFAULT_PORT}"),
            gateway_url: self
                .gateway_url
                .clone()
                .unwrap_or_else(|| format!("http://{gateway}:{}", self.gateway_port)),
        })
    }
}

impl Runtime for DockerRuntime {
    /// Docker starts the container in the call: always
    /// [`Started::Running`].
    async fn create(&self, spec: &SessionSpec) -> Result<Started, RuntimeError> {
        // Independent steps side by side: the network with the volume,
        // then the host rules with the container (created, not started:
        // nothing in it runs before its rules are in place).
        let vol = VolumeCreateOptions {
            name: Some(self.volume_name(&spec.id)),
            labels: Some(self.labels(&spec.id)),
            ..Default::default()
        };
        let volume = async {
            self.docker
                .create_volume(vol)
                .await
                .map_err(|e| classify(e, "creating the workspace volume"))
        };
        tokio::try_join!(self.create_network(&spec.id), volume)?;
        let rules = async {
            match &self.firewall {
                Some(fw) => fw.install(&spec.id).await,
                None => Ok(()),
            }
        };
        tokio::try_join!(rules, self.create_container(spec))?;
        match self
            .docker
            .start_container(&self.name(&spec.id), None::<StartContainerOptions>)
            .await
        {
            Ok(()) => self.hand_token(spec).await?,
            // Already running: its sessiond has its token.
            Err(e) if status(&e) == Some(304) => {}
            Err(e) => return Err(classify(e, "starting the session container")),
        }
        self.placement(&spec.id).await.map(Started::Running)
    }

    async fn wait_running(&self, id: &SessionId) -> Result<Placement, RuntimeError> {
        self.locate(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound("the session container does not run".into()))
    }

    async fn remove(&self, id: &SessionId) -> Result<(), RuntimeError> {
        self.stop_container(id).await?;
        self.remove_network(id).await?;
        ignore_missing(
            self.docker
                .remove_volume(
                    &self.volume_name(id),
                    Some(RemoveVolumeOptions { force: true }),
                )
                .await,
            "removing the workspace volume",
        )
    }

    /// Docker keeps the workspace in a volume of its own.
    fn can_suspend(&self) -> bool {
        true
    }

    /// Creates `to`'s volume and copies `from`'s into it with a throwaway
    /// container of `to`'s image: no network, no capabilities, the
    /// session's user, `from` mounted read-only. (`from` is read while its
    /// session may run: callers copy between turns.)
    async fn copy_workspace(&self, from: &SessionId, to: &SessionSpec) -> Result<(), RuntimeError> {
        let source = self.volume_name(from);
        self.docker
            .inspect_volume(&source)
            .await
            .map_err(|e| classify(e, "finding the workspace to copy"))?;
        let vol = VolumeCreateOptions {
            name: Some(self.volume_name(&to.id)),
            labels: Some(self.labels(&to.id)),
            ..Default::default()
        };
        self.docker
            .create_volume(vol)
            .await
            .map_err(|e| classify(e, "creating the workspace volume"))?;
        let mount = |source: String, target: &str, read_only: bool| Mount {
            target: Some(target.into()),
            source: Some(source),
            typ: Some(MountTypeEnum::VOLUME),
            read_only: Some(read_only),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(to.image.clone()),
            user: Some(SESSION_USER.into()),
            // Onto the image's own workspace directory: Docker gives a new
            // volume mounted there its owner (the session's user).
            // Instead of the image's init and sessiond.
            entrypoint: Some(vec![
                "cp".into(),
                "-a".into(),
                "/from/.".into(),
                format!("{WORKSPACE_DIR}/"),
            ]),
            labels: Some(self.labels(&to.id)),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(vec![
                    mount(source, "/from", true),
                    mount(self.volume_name(&to.id), WORKSPACE_DIR, false),
                ]),
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec![
                    "no-new-privileges".into(),
                    format!("seccomp={SECCOMP_PROFILE}"),
                ]),
                readonly_rootfs: Some(true),
                runtime: self.container_runtime.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("{}-copy", self.name(&to.id));
        let opts = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| classify(e, "creating the workspace copier"))?;
        let copied = async {
            self.docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .map_err(|e| classify(e, "starting the workspace copier"))?;
            let mut waits = self
                .docker
                .wait_container(&name, None::<WaitContainerOptions>);
            match waits.next().await {
                Some(Ok(w)) if w.status_code == 0 => Ok(()),
                Some(Ok(w)) => Err(RuntimeError::Internal(format!(
                    "copying the workspace failed (exit {})",
                    w.status_code
                ))),
                // A non-zero exit arrives as an error too.
                Some(Err(e)) => Err(classify(e, "copying the workspace")),
                None => Err(RuntimeError::Internal(
                    "the workspace copier vanished".into(),
                )),
            }
        }
        .await;
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        ignore_missing(
            self.docker.remove_container(&name, Some(opts)).await,
            "removing the workspace copier",
        )?;
        copied
    }

    /// Removes the container, its network (freeing its subnet) and its
    /// host rules; the workspace volume stays for the next `create`. Fails
    /// only when the container could not be removed: a network left over
    /// is taken again by the next `create` (or goes with `remove`).
    async fn suspend(&self, id: &SessionId) -> Result<(), RuntimeError> {
        self.stop_container(id).await?;
        if let Err(e) = self.remove_network(id).await {
            tracing::warn!(session = %id, error = %e, "the sleeping session's network stays until it wakes or ends");
        }
        Ok(())
    }

    async fn inspect(&self, id: &SessionId) -> Result<Option<ContainerStatus>, RuntimeError> {
        match self
            .docker
            .inspect_container(&self.name(id), None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => {
                let st = c.state.unwrap_or_default();
                // Docker starts a container in `create`: never `starting`.
                Ok(Some(ContainerStatus {
                    running: st.running.unwrap_or(false),
                    starting: false,
                    exit_code: st.exit_code,
                    oom_killed: st.oom_killed.unwrap_or(false),
                }))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e, "inspecting the session container")),
        }
    }

    async fn list(&self) -> Result<Vec<SessionId>, RuntimeError> {
        let mut ids = std::collections::BTreeSet::new();
        let session_of = |labels: Option<&HashMap<String, String>>| {
            labels
                .and_then(|l| l.get(LABEL_SESSION))
                .and_then(|s| SessionId::parse(s))
        };
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.prefix_filter()),
                ..Default::default()
            }))
            .await
            .map_err(|e| classify(e, "listing containers"))?;
        ids.extend(
            containers
                .iter()
                .filter_map(|c| session_of(c.labels.as_ref())),
        );
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(self.prefix_filter()),
            }))
            .await
            .map_err(|e| classify(e, "listing networks"))?;
        ids.extend(
            networks
                .iter()
                .filter_map(|n| session_of(n.labels.as_ref())),
        );
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(self.prefix_filter()),
            }))
            .await
            .map_err(|e| classify(e, "listing volumes"))?;
        ids.extend(
            volumes
                .volumes
                .unwrap_or_default()
                .iter()
                .filter_map(|v| session_of(Some(&v.labels))),
        );
        Ok(ids.into_iter().collect())
    }

    async fn locate(&self, id: &SessionId) -> Result<Option<Placement>, RuntimeError> {
        match self.inspect(id).await? {
            Some(st) if st.running => self.placement(id).await.map(Some),
            _ => Ok(None),
        }
    }

    async fn events(&self) -> Result<RuntimeEventStream, RuntimeError> {
        let mut filters = self.prefix_filter();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), vec!["die".into(), "oom".into()]);
        // The Engine's feed starts when the stream is first polled; `since`
        // makes it start now, as the seam promises, whenever that is.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let feed = self.docker.events(Some(EventsOptions {
            since: Some(format!("{}.{:09}", now.as_secs(), now.subsec_nanos())),
            filters: Some(filters),
            ..Default::default()
        }));
        let this = self.clone();
        // Sessions this feed saw an `oom` event for: the container's state
        // may not say OOMKilled yet when its `die` is handled.
        let oom_seen = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
        Ok(feed
            .filter_map(move |msg| {
                let this = this.clone();
                let oom_seen = oom_seen.clone();
                async move {
                    let (session, code) = match msg {
                        Ok(msg) => match crate::observe::observe(&msg)? {
                            (session, crate::observe::Observed::Died(code)) => (session, code),
                            (session, crate::observe::Observed::Oom) => {
                                oom_seen
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(session.clone());
                                return Some(Ok(crate::observe::oom_kill(session)));
                            }
                        },
                        Err(e) => return Some(Err(classify(e, "reading Docker events"))),
                    };
                    let seen = oom_seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&session);
                    // The die event does not say whether the kernel's OOM
                    // killer did it; the container's state does.
                    let oom = seen
                        || matches!(
                            this.inspect(&session).await,
                            Ok(Some(ContainerStatus {
                                oom_killed: true,
                                ..
                            }))
                        );
                    Some(Ok(crate::observe::exited(session, code, oom)))
                }
            })
            .boxed())
    }

    async fn workspace_sizes(&self) -> Result<Option<HashMap<SessionId, u64>>, RuntimeError> {
        // A volume on the Engine's disk has no size limit of its own (no
        // quota on this storage), so the core checks what it holds. The
        // Engine measures as root: a session's file modes cannot hide
        // anything. Engines before API 1.42 measure everything, not only
        // volumes (bollard cannot encode the `type` filter of later ones
        // either), and refuse a second measurement while one runs: the
        // shared engine's other users may be measuring, so wait.
        // A busy Engine's measurement takes seconds: wait for another's to
        // end as long as one of ours could take.
        let deadline = tokio::time::Instant::now() + MEASURE_WAIT;
        let mut pause = std::time::Duration::from_millis(100);
        let usage = loop {
            match self.docker.df(None).await {
                Ok(u) => break u,
                Err(e) if is_busy_measuring(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => return Err(classify(e, "measuring workspace volumes")),
            }
        };
        Ok(Some(workspace_sizes_of(
            usage.volumes.unwrap_or_default(),
            &self.prefix,
        )))
    }

    async fn stats(&self, id: &SessionId) -> Result<Option<ResourceUsage>, RuntimeError> {
        // One-shot: answers at once instead of waiting a second for a
        // second sample; the CPU share is taken against our last sample.
        let opts = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut feed = self.docker.stats(&self.name(id), Some(opts));
        match feed.next().await {
            Some(Ok(s)) if s.pids_stats.as_ref().and_then(|p| p.current).is_some() => {
                Ok(Some(crate::observe::usage(&s, id, &self.cpu_samples)))
            }
            Some(Ok(_)) | None => Ok(None),
            Some(Err(e)) if status(&e) == Some(404) => Ok(None),
            Some(Err(e)) => Err(classify(e, "reading container stats")),
        }
    }
}

/// Our sessions' workspace volumes among `volumes`, with what each holds
/// (the Engine says `-1` for a size it did not measure: left out).
fn workspace_sizes_of(volumes: Vec<Volume>, prefix: &str) -> HashMap<SessionId, u64> {
    volumes
        .into_iter()
        .filter(|v| v.labels.get(LABEL_PREFIX).map(String::as_str) == Some(prefix))
        .filter_map(|v| {
            let id = SessionId::parse(v.labels.get(LABEL_SESSION)?)?;
            let size = u64::try_from(v.usage_data?.size).ok()?;
            Some((id, size))
        })
        .collect()
}

/// The Engine's answer while another disk usage measurement runs (Docker
/// before 23.0 allows one at a time).
fn is_busy_measuring(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { message, .. }
        if message.contains("already running"))
}

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn ignore_missing(r: Result<(), BollardError>, what: &str) -> Result<(), RuntimeError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(404) => Ok(()),
        Err(e) => Err(classify(e, what)),
    }
}

/// Classifies an Engine error at the seam.
fn classify(e: BollardError, what: &str) -> RuntimeError {
    match &e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => RuntimeError::NotFound(format!("{what}: {message}")),
            409 => RuntimeError::Conflict(format!("{what}: {message}")),
            400 => RuntimeError::Invalid(format!("{what}: {message}")),
            _ => RuntimeError::Internal(format!("{what}: {message}")),
        },
        BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => RuntimeError::Unavailable(format!("{what}: {e}")),
        _ => RuntimeError::Internal(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::VolumeUsageData;

    fn volume(prefix: &str, session: &str, size: i64) -> Volume {
        Volume {
            name: format!("{prefix}{session}-workspace"),
            labels: HashMap::from([
                (LABEL_PREFIX.to_owned(), prefix.to_owned()),
                (LABEL_SESSION.to_owned(), session.to_owned()),
            ]),
            usage_data: Some(VolumeUsageData { size, ref_count: 1 }),
            ..Default::default()
        }
    }

    #[test]
    fn only_our_measured_workspaces_are_counted() {
        let ours = SessionId::generate();
        let unmeasured = SessionId::generate();
        let theirs = SessionId::generate();
        let sizes = workspace_sizes_of(
            vec![
                volume("cc-", ours.as_str(), 4096),
                volume("cc-", unmeasured.as_str(), -1),
                volume("other-", theirs.as_str(), 1 << 30),
                volume("cc-", "not-a-session-id", 1),
            ],
            "cc-",
        );
        assert_eq!(sizes, HashMap::from([(ours, 4096)]));
    }
}
