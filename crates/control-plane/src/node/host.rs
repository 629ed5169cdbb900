//! What the node changes on the machine, and how it is undone: the checks before starting, the
//! machine-wide lock, the janitor (scripts/node-janitor.sh) and the state it reads, and the bridge
//! and cgroups the node needs.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BRIDGE, CGROUP, CNI_NETWORK, NODE_IP, write_file};
use crate::{ControlPlaneError, io_err};

/// Machine-wide lock and janitor state: one node at a time.
pub(super) const RUN_DIR: &str = "/run/lineworks-operator";
/// The janitor, embedded so an edited checkout cannot change it under a running cluster.
const JANITOR: &str = include_str!("../../../../scripts/node-janitor.sh");
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
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);

/// The janitor process: cleans when its stdin closes.
pub(super) struct Janitor {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Janitor {
    /// Starts the janitor in its own session (a Ctrl-C to the test's process group does not reach
    /// it), holding the machine lock as fd 9 until it has cleaned.
    pub(super) fn start(state_file: &Path, lock: &File) -> Result<Self, ControlPlaneError> {
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
    pub(super) fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

pub(super) fn preflight() -> Result<(), ControlPlaneError> {
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
pub(super) async fn machine_lock() -> Result<File, ControlPlaneError> {
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
pub(super) fn write_state(state_file: &Path, dir: &Path) -> Result<(), ControlPlaneError> {
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

pub(super) fn append_state(state_file: &Path, line: &str) -> Result<(), ControlPlaneError> {
    let mut file = File::options()
        .append(true)
        .open(state_file)
        .map_err(io_err(format!("appending to {}", state_file.display())))?;
    file.write_all(line.as_bytes())
        .map_err(io_err(format!("appending to {}", state_file.display())))
}

pub(super) fn run_janitor_now(state_file: &Path) -> Result<(), ControlPlaneError> {
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
pub(super) fn prepare_network() -> Result<(), ControlPlaneError> {
    let node_cidr = format!("{NODE_IP}/24");
    let steps: [&[&str]; 4] = [
        &["ip", "link", "add", BRIDGE, "type", "bridge"],
        &["ip", "addr", "add", &node_cidr, "dev", BRIDGE],
        &["ip", "link", "set", BRIDGE, "up"],
        &["ip", "route", "add", crate::SERVICE_RANGE, "dev", BRIDGE],
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
