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

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use kube::Api;
use tempfile::TempDir;

use super::supervisor::{ProcessSpec, Supervisor};
use super::{ControlPlane, ControlPlaneError, Listen, io_err, log_tail};

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
/// Machine-wide lock and janitor state: one node at a time.
const RUN_DIR: &str = "/run/lineworks-operator";
/// The janitor, embedded so an edited checkout cannot change it under a running cluster.
const JANITOR: &str = include_str!("../../../scripts/node-janitor.sh");
/// Kernel settings the kubelet or kube-proxy may change, restored by the janitor.
const SYSCTLS: [&str; 8] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/bridge/bridge-nf-call-iptables",
    "net/ipv4/conf/all/route_localnet",
];
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);
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
        let mut guard = match self.supervisor.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.as_mut().map(f)
    }

    fn spawn(&self, spec: ProcessSpec) -> Result<u32, ControlPlaneError> {
        let action = format!("starting {}", spec.name);
        self.with_supervisor(|s| s.spawn(spec))
            .ok_or_else(|| ControlPlaneError::NotReady(Duration::ZERO, "already stopped".into()))?
            .map_err(io_err(action))
    }

    fn check_running(&self) -> Result<(), ControlPlaneError> {
        match self.with_supervisor(|s| s.first_exited()).flatten() {
            None => Ok(()),
            Some(state) => Err(ControlPlaneError::Exited {
                name: state.name,
                status: state
                    .exit
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown status".into()),
                log_tail: log_tail(&self.dir_path.join(format!("{}.log", state.name))),
            }),
        }
    }

    fn stop(&self) {
        let supervisor = match self.supervisor.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(supervisor);
        let janitor = match self.janitor.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(janitor) = janitor {
            janitor.finish();
        }
        let dir = match self.dir.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(dir);
    }
}

/// The janitor process: cleans when its stdin closes.
struct Janitor {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Janitor {
    /// Starts the janitor in its own session (a Ctrl-C to the test's process group does not reach
    /// it), holding the machine lock as fd 9 until it has cleaned.
    fn start(state_file: &Path, lock: &File) -> Result<Self, ControlPlaneError> {
        let lock_fd = lock.as_raw_fd();
        let mut command = Command::new("bash");
        command
            .args(["-c", JANITOR, "node-janitor", "watch"])
            .arg(state_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: setsid, dup2 and fcntl are async-signal-safe and touch no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself keeps close-on-exec, hence the explicit fcntl.
                if libc::setsid() < 0
                    || libc::dup2(lock_fd, 9) < 0
                    || libc::fcntl(9, libc::F_SETFD, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(io_err("starting the node janitor"))?;
        Ok(Self {
            stdin: child.stdin.take(),
            child,
        })
    }

    /// Closes the janitor's stdin and waits until it has cleaned.
    fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn preflight() -> Result<(), ControlPlaneError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ControlPlaneError::NodeUnavailable(
            "a node needs root (bridges, iptables, cgroups, mounts)".into(),
        ));
    }
    for program in ["containerd", "runc", "ctr", "iptables", "ip"] {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(ControlPlaneError::NodeUnavailable(format!(
                "{program} is not installed (scripts/node-deps.sh installs it)"
            )));
        }
    }
    if !Path::new("/usr/lib/cni/bridge").is_file() {
        return Err(ControlPlaneError::NodeUnavailable(
            "the CNI plugins are not installed (scripts/node-deps.sh installs them)".into(),
        ));
    }
    Ok(())
}

/// Waits for the machine-wide node lock (another cluster, or its janitor, may hold it).
async fn machine_lock() -> Result<File, ControlPlaneError> {
    std::fs::create_dir_all(RUN_DIR).map_err(io_err(format!("creating {RUN_DIR}")))?;
    let path = Path::new(RUN_DIR).join("node.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if Instant::now() > deadline {
            return Err(ControlPlaneError::NodeUnavailable(format!(
                "another one-node cluster held {} for {LOCK_TIMEOUT:?}",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records what the janitor needs before anything changes.
fn write_state(state_file: &Path, dir: &Path) -> Result<(), ControlPlaneError> {
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let tables: Vec<String> = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let mut words = l.split_whitespace().skip(1);
                    Some(format!("{}:{}", words.next()?, words.next()?))
                })
                .collect()
        })
        .unwrap_or_default();
    // Directories containerd, the CNI plugins or runc create on first use.
    let made: Vec<&str> = ["/run/netns", "/run/containerd", "/var/lib/cni"]
        .into_iter()
        .filter(|d| !Path::new(d).exists())
        .collect();
    let mut state = format!(
        "DIR={}\nBRIDGE={BRIDGE}\nCGROUP={CGROUP}\nCNI_NETWORK={CNI_NETWORK}\nNETNS={}\n\
         NFT_TABLES={}\nMADE_DIRS={}\n",
        dir.display(),
        netns.join(" "),
        tables.join(" "),
        made.join(" ")
    );
    for key in SYSCTLS {
        if let Ok(value) = std::fs::read_to_string(Path::new("/proc/sys").join(key)) {
            state.push_str(&format!(
                "SYSCTL_{}={}\n",
                key.replace('/', "."),
                value.trim()
            ));
        }
    }
    write_file(state_file, &state).map(|_| ())
}

fn append_state(state_file: &Path, line: &str) -> Result<(), ControlPlaneError> {
    let mut file = File::options()
        .append(true)
        .open(state_file)
        .map_err(io_err(format!("appending to {}", state_file.display())))?;
    file.write_all(line.as_bytes())
        .map_err(io_err(format!("appending to {}", state_file.display())))
}

fn run_janitor_now(state_file: &Path) -> Result<(), ControlPlaneError> {
    let status = Command::new("bash")
        .args(["-c", JANITOR, "node-janitor", "clean"])
        .arg(state_file)
        .status()
        .map_err(io_err("running the node janitor"))?;
    if status.success() {
        Ok(())
    } else {
        Err(ControlPlaneError::NodeUnavailable(format!(
            "the janitor could not clean a previous node ({status}); see {}",
            state_file.display()
        )))
    }
}

/// The bridge with the node's address, the service range routed onto it, bridged traffic through
/// iptables (kube-proxy's rules must see pod-to-service packets), and the pods' cgroup.
fn prepare_network() -> Result<(), ControlPlaneError> {
    let node_cidr = format!("{NODE_IP}/24");
    let steps: [&[&str]; 4] = [
        &["ip", "link", "add", BRIDGE, "type", "bridge"],
        &["ip", "addr", "add", &node_cidr, "dev", BRIDGE],
        &["ip", "link", "set", BRIDGE, "up"],
        &["ip", "route", "add", super::SERVICE_RANGE, "dev", BRIDGE],
    ];
    for step in steps {
        let output = Command::new(step[0])
            .args(&step[1..])
            .output()
            .map_err(io_err(format!("running {}", step.join(" "))))?;
        if !output.status.success() {
            return Err(ControlPlaneError::NodeUnavailable(format!(
                "`{}` failed: {}",
                step.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
        .map_err(io_err("enabling bridge-nf-call-iptables"))?;
    // The kubelet wants its cgroup root to exist in every hierarchy.
    for entry in std::fs::read_dir("/sys/fs/cgroup").map_err(io_err("listing cgroups"))? {
        let hierarchy = entry.map_err(io_err("listing cgroups"))?.path();
        if !hierarchy.join("cgroup.procs").exists() {
            continue;
        }
        let cgroup = hierarchy.join(CGROUP);
        std::fs::create_dir_all(&cgroup)
            .map_err(io_err(format!("creating {}", cgroup.display())))?;
        // A v1 cpuset starts empty: give it its parent's CPUs and memory nodes.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                std::fs::write(cgroup.join(file), value.trim())
                    .map_err(io_err(format!("writing {}", cgroup.join(file).display())))?;
            }
        }
    }
    Ok(())
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

/// The bridge plugin on our bridge, addresses from host-local kept in the node's directory; no
/// masquerading (pods only talk to this machine).
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_RANGE, "gateway": NODE_IP.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni-ipam").display().to_string(),
                },
            },
            {"type": "loopback"},
        ],
    })
    .to_string()
}

/// containerd with the CRI plugin: everything under the node's directory, the local pause image,
/// runc with cgroupfs, and `restrict_oom_score_adj` (this VM withholds CAP_SYS_RESOURCE, so a
/// negative oom_score_adj would make runc fail).
fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/lineworks-operator/pause:3.10.2"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#
    )
}

/// The kubelet: cgroup v1 allowed (this VM's hierarchy), cgroupfs, pods under [`CGROUP`], logs in
/// the node's directory, webhook authentication and authorization, no image garbage collection or
/// disk-pressure eviction (a nearly full CI disk must not evict the test's pods).
fn kubelet_config(dir: &Path, plane: &Path, port: u16, healthz_port: u16) -> String {
    let d = dir.display();
    let p = plane.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP}
containerRuntimeEndpoint: unix://{d}/containerd.sock
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
tlsCertFile: {p}/kubelet.crt
tlsPrivateKeyFile: {p}/kubelet.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {p}/ca.crt
authorization:
  mode: Webhook
podLogsDir: {d}/pod-logs
failSwapOn: false
registerNode: true
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 100Mi
  imagefs.available: 100Mi
  nodefs.inodesFree: 1%
shutdownGracePeriod: 0s
fileCheckFrequency: 5s
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
"#
    )
}

/// kube-proxy in iptables mode; conntrack and localhost-nodeport settings left alone so it changes
/// no kernel setting.
fn kube_proxy_config(plane: &Path, healthz_port: u16, metrics_port: u16) -> String {
    let p = plane.display();
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {p}/kube-proxy.kubeconfig
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {POD_RANGE}
healthzBindAddress: 127.0.0.1:{healthz_port}
metricsBindAddress: 127.0.0.1:{metrics_port}
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#
    )
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
    let started = SHARED
        .get_or_init(|| async {
            let cluster = OneNodeCluster::start().await.map_err(|e| e.to_string())?;
            // SAFETY: registers a plain function without captured state.
            if unsafe { libc::atexit(stop_shared) } != 0 {
                return Err("could not register the cluster's exit hook".to_string());
            }
            Ok(cluster)
        })
        .await;
    started.as_ref().map_err(Clone::clone)
}
