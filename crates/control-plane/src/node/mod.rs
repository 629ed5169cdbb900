//! A real one-node Kubernetes cluster on this machine: the control plane of this crate, listening
//! on a bridge pods can reach, plus containerd (Debian's, with runc), a kubelet, kube-proxy
//! (iptables), kube-scheduler and kube-controller-manager built from `tools/node`.
//!
//! It needs root and changes the machine: a bridge (`lwnode0`, 10.244.0.1/24, also the node's
//! address and the API server's), a route for the service range onto that bridge (so a service
//! address never leaves the machine), iptables rules (kube-proxy's, the kubelet's), cgroups under
//! `lineworks-node`, network namespaces, mounts, a few kernel settings the kubelet insists on.
//! One cluster runs at a time (a machine-wide lock), and a janitor (`scripts/node-janitor.sh`)
//! started before the first change removes all of it when the cluster's process ends, however it
//! ends: a normal stop, a panic, or SIGKILL. The bridge network does not enforce NetworkPolicy.

mod config;
mod host;

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use kube::Api;
use tempfile::TempDir;

use super::supervisor::{ProcessSpec, Supervisor};
use super::{ControlPlane, ControlPlaneError, Listen, io_err, log_tail, take, with_slot};
use config::{cni_config, containerd_config, kube_proxy_config, kubelet_config};
use host::{
    Janitor, RUN_DIR, append_state, machine_lock, preflight, prepare_network, run_janitor_now,
    write_state,
};

/// The node's name (the kubelet registers as `system:node:<NODE_NAME>`).
pub const NODE_NAME: &str = "lineworks-node";
/// The bridge pods attach to; its address is the node's and the API server's.
const BRIDGE: &str = "lwnode0";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const POD_RANGE: &str = "10.244.0.0/24";
/// The CNI network's name (containerd caches results under it).
const CNI_NETWORK: &str = "lineworks-node";
/// The cgroup (in every hierarchy) the kubelet puts pods under.
const CGROUP: &str = "lineworks-node";
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Environment variable naming a directory with prebuilt node binaries (else the script builds
/// them).
pub const NODE_BIN_DIR_ENV: &str = "LINEWORKS_NODE_BIN_DIR";

/// A control plane with one real node.
pub struct OneNodeCluster {
    // Field order is drop order: the node goes (and is cleaned) before its API server.
    node: NodeProcesses,
    plane: ControlPlane,
}

impl std::fmt::Debug for OneNodeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneNodeCluster")
            .field("plane", &self.plane)
            .field("node_dir", &self.node.dir_path)
            .finish_non_exhaustive()
    }
}

/// The node's processes, its directory, the janitor and the machine lock.
struct NodeProcesses {
    supervisor: Mutex<Option<Supervisor>>,
    janitor: Mutex<Option<Janitor>>,
    dir: Mutex<Option<TempDir>>,
    dir_path: PathBuf,
    socket: PathBuf,
    _lock: File,
}

impl OneNodeCluster {
    /// Builds what is missing (node binaries, the pause image), waits for the machine's node lock,
    /// and starts everything; returns once the node is Ready and pods can be admitted in
    /// `default` (its ServiceAccount and root CA ConfigMap exist).
    pub async fn start() -> Result<Self, ControlPlaneError> {
        preflight()?;
        let node_bin = node_bin_dir().await?;
        let pause = super::script_output("pause-image.sh", &[]).await?;
        let lock = machine_lock().await?;
        let state_file = Path::new(RUN_DIR).join("node.state");
        if state_file.exists() {
            // A previous cluster's janitor never ran (power cut, janitor killed): clean first.
            run_janitor_now(&state_file)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("lineworks-node-")
            .tempdir()
            .map_err(io_err("creating the node's directory"))?;
        let dir_path = dir.path().to_path_buf();
        write_state(&state_file, &dir_path)?;
        let janitor = Janitor::start(&state_file, &lock)?;
        let node = NodeProcesses {
            supervisor: Mutex::new(Some(
                Supervisor::new().map_err(io_err("starting the node's keeper thread"))?,
            )),
            janitor: Mutex::new(Some(janitor)),
            socket: dir_path.join("containerd.sock"),
            dir_path,
            dir: Mutex::new(Some(dir)),
            _lock: lock,
        };
        // From here on, a failure drops `node`, which stops what started and runs the janitor.
        prepare_network()?;
        let plane = ControlPlane::start_listening(&Listen {
            address: NODE_IP,
            node: Some(NODE_NAME.to_string()),
        })
        .await?;
        append_state(
            &state_file,
            &format!("PLANE_DIR={}\n", plane.dir().display()),
        )?;
        let cluster = Self { node, plane };
        cluster.start_containerd().await?;
        cluster.import(&pause, "localhost/lineworks-operator/pause")?;
        cluster.start_components(&node_bin)?;
        cluster.wait_until_ready().await?;
        Ok(cluster)
    }

    /// The control plane (admin kubeconfig, kubectl, clients).
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The node's address (also the API server's), on the bridge.
    pub fn node_ip(&self) -> Ipv4Addr {
        NODE_IP
    }

    /// containerd's socket, for `ctr --address`.
    pub fn containerd_socket(&self) -> &Path {
        &self.node.socket
    }

    /// The node's directory (containerd, kubelet and the components' logs).
    pub fn dir(&self) -> &Path {
        &self.node.dir_path
    }

    /// Every process of the node and of its control plane, with exit statuses.
    pub fn processes(&self) -> Vec<super::ProcessState> {
        let mut all = self.plane.processes();
        all.extend(
            self.node
                .with_supervisor(|s| s.states())
                .unwrap_or_default(),
        );
        all
    }

    /// Imports an OCI archive into containerd's `k8s.io` namespace as `<base>:<tag>` so pods find
    /// it without a registry.
    pub fn import(&self, archive: &Path, base: &str) -> Result<(), ControlPlaneError> {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.node.socket)
            .args(["-n", "k8s.io", "images", "import", "--base-name", base])
            .arg(archive)
            .output()
            .map_err(io_err("running ctr images import"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ControlPlaneError::NodeUnavailable(format!(
                "ctr could not import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Restarts containerd (SIGTERM, then started again with the same configuration), as an
    /// upgrade or a crash would; running containers keep running under their shims.
    pub async fn restart_containerd(&self) -> Result<(), ControlPlaneError> {
        self.node
            .with_supervisor(|s| s.restart("containerd"))
            .ok_or_else(|| ControlPlaneError::NotReady(Duration::ZERO, "already stopped".into()))?
            .map_err(io_err("restarting containerd"))?;
        self.wait_for_containerd().await
    }

    /// Stops the node (its components, then the janitor removes pods, rules and mounts), then the
    /// control plane. Idempotent.
    pub fn stop(&self) {
        self.node.stop();
        self.plane.stop();
    }

    async fn start_containerd(&self) -> Result<(), ControlPlaneError> {
        let dir = &self.node.dir_path;
        let cni_dir = dir.join("cni");
        std::fs::create_dir_all(&cni_dir).map_err(io_err("creating the CNI directory"))?;
        write_file(&cni_dir.join("10-lineworks.conflist"), &cni_config(dir))?;
        let config = write_file(&dir.join("containerd.toml"), &containerd_config(dir))?;
        self.node.spawn(ProcessSpec {
            name: "containerd",
            program: "containerd".into(),
            args: vec!["--config".into(), config.display().to_string()],
            log: dir.join("containerd.log"),
        })?;
        self.wait_for_containerd().await
    }

    async fn wait_for_containerd(&self) -> Result<(), ControlPlaneError> {
        let dir = &self.node.dir_path;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.node.check_running()?;
            let answered = Command::new("ctr")
                .arg("--address")
                .arg(&self.node.socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ControlPlaneError::NotReady(
                    Duration::from_secs(30),
                    format!("containerd: {}", log_tail(&dir.join("containerd.log"))),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn start_components(&self, bin: &Path) -> Result<(), ControlPlaneError> {
        let dir = &self.node.dir_path;
        let plane = self.plane.dir();
        let [kubelet_port, kubelet_healthz, proxy_healthz, proxy_metrics] = super::free_ports()?;
        let kubelet_config = write_file(
            &dir.join("kubelet.yaml"),
            &kubelet_config(dir, plane, kubelet_port, kubelet_healthz),
        )?;
        let spec = |name: &'static str, args: Vec<String>| ProcessSpec {
            name,
            program: bin.join(name),
            args,
            log: dir.join(format!("{name}.log")),
        };
        let kubeconfig = |name: &str| {
            format!(
                "--kubeconfig={}",
                plane.join(format!("{name}.kubeconfig")).display()
            )
        };
        self.node.spawn(spec(
            "kubelet",
            vec![
                format!("--config={}", kubelet_config.display()),
                kubeconfig("kubelet"),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("kubelet-pki").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                "--v=1".into(),
            ],
        ))?;
        let proxy_config = write_file(
            &dir.join("kube-proxy.yaml"),
            &kube_proxy_config(plane, proxy_healthz, proxy_metrics),
        )?;
        self.node.spawn(spec(
            "kube-proxy",
            vec![
                format!("--config={}", proxy_config.display()),
                "--v=1".into(),
            ],
        ))?;
        self.node.spawn(spec(
            "kube-scheduler",
            vec![
                kubeconfig("kube-scheduler"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--v=1".into(),
            ],
        ))?;
        self.node.spawn(spec(
            "kube-controller-manager",
            vec![
                kubeconfig("kube-controller-manager"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    plane.join("service-account.key").display()
                ),
                format!("--root-ca-file={}", plane.join("ca.crt").display()),
                format!("--service-cluster-ip-range={}", super::SERVICE_RANGE),
                "--v=1".into(),
            ],
        ))?;
        Ok(())
    }

    async fn wait_until_ready(&self) -> Result<(), ControlPlaneError> {
        let client = self.plane.client().await?;
        let nodes: Api<Node> = Api::all(client.clone());
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let root_ca: Api<ConfigMap> = Api::namespaced(client, "default");
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.node.check_running()?;
            self.plane.check_running()?;
            match nodes.get_opt(NODE_NAME).await {
                Ok(Some(node)) if is_ready(&node) => {
                    let account = accounts.get_opt("default").await.ok().flatten();
                    let ca = root_ca.get_opt("kube-root-ca.crt").await.ok().flatten();
                    if account.is_some() && ca.is_some() {
                        return Ok(());
                    }
                    last = "node Ready; waiting for the default ServiceAccount and root CA".into();
                }
                Ok(Some(_)) => last = format!("node {NODE_NAME} registered, not Ready"),
                Ok(None) => last = format!("node {NODE_NAME} not registered"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(ControlPlaneError::NotReady(
            NODE_READY_TIMEOUT,
            format!(
                "{last}; kubelet log:\n{}",
                log_tail(&self.node.dir_path.join("kubelet.log"))
            ),
        ))
    }
}

impl Drop for OneNodeCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl NodeProcesses {
    fn with_supervisor<T>(&self, f: impl FnOnce(&mut Supervisor) -> T) -> Option<T> {
        with_slot(&self.supervisor, f)
    }

    fn spawn(&self, spec: ProcessSpec) -> Result<u32, ControlPlaneError> {
        let action = format!("starting {}", spec.name);
        self.with_supervisor(|s| s.spawn(spec))
            .ok_or_else(|| ControlPlaneError::NotReady(Duration::ZERO, "already stopped".into()))?
            .map_err(io_err(action))
    }

    fn check_running(&self) -> Result<(), ControlPlaneError> {
        match self
            .with_supervisor(|s| s.exit_error(&self.dir_path))
            .flatten()
        {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    fn stop(&self) {
        drop(take(&self.supervisor));
        if let Some(janitor) = take(&self.janitor) {
            janitor.finish();
        }
        drop(take(&self.dir));
    }
}

impl Drop for NodeProcesses {
    // A start-up that fails before the cluster exists still waits for the janitor's clean-up.
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn write_file(path: &Path, body: &str) -> Result<PathBuf, ControlPlaneError> {
    std::fs::write(path, body).map_err(io_err(format!("writing {}", path.display())))?;
    Ok(path.to_path_buf())
}

/// `$LINEWORKS_NODE_BIN_DIR`, or the node set built (once, cached) by scripts/k8s-binaries.sh.
async fn node_bin_dir() -> Result<PathBuf, ControlPlaneError> {
    if let Some(path) = std::env::var_os(NODE_BIN_DIR_ENV) {
        return Ok(PathBuf::from(path));
    }
    super::script_output("k8s-binaries.sh", &["node"]).await
}

/// The one-node cluster shared by every test of one test binary, started on first use and
/// stopped (and cleaned by its janitor) when the process exits; start-up failures are remembered
/// so each test reports them at once.
pub async fn shared() -> Result<&'static OneNodeCluster, String> {
    static SHARED: tokio::sync::OnceCell<Result<OneNodeCluster, String>> =
        tokio::sync::OnceCell::const_new();
    extern "C" fn stop_shared() {
        if let Some(Ok(cluster)) = SHARED.get() {
            cluster.stop();
        }
    }
    super::start_shared(&SHARED, OneNodeCluster::start(), stop_shared).await
}
