//! The one-node cluster leaves this machine as it found it: no process, mount, network namespace,
//! interface, iptables rule, nftables table, cgroup or directory of its own, and the kernel
//! settings the kubelet changes restored, even when its process is killed with a pod running.
//! (Its own test binary: the snapshot must not see another test's cluster.)

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lineworks_control_plane::OneNodeCluster;

/// Set in the environment of the child test run below; names the file it reports into.
const REPORT_ENV: &str = "LWO_NODE_LIFECYCLE_REPORT";

/// What a cluster could leave behind, read off the machine.
fn snapshot() -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let lines = |program: &str, args: &[&str]| -> Vec<String> {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    for tool in ["iptables-save", "ip6tables-save"] {
        for line in lines(tool, &[]) {
            // Rules and chains; counters and timestamps change on their own.
            if line.starts_with("-A") || line.starts_with(':') || line.starts_with('*') {
                let line = line.split(" [").next().unwrap_or_default().to_string();
                seen.insert(format!("{tool}: {line}"));
            }
        }
    }
    for line in lines("nft", &["list", "tables"]) {
        seen.insert(format!("nft: {line}"));
    }
    for line in lines("ip", &["-o", "link", "show"]) {
        if let Some(name) = line.split(": ").nth(1) {
            seen.insert(format!("link: {}", name.split('@').next().unwrap_or(name)));
        }
    }
    for line in lines("ip", &["route", "show"]) {
        seen.insert(format!("route: {line}"));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        if let Some(point) = line.split_whitespace().nth(4) {
            seen.insert(format!("mount: {point}"));
        }
    }
    for dir in ["/run/netns", "/run/containerd", "/var/lib/cni", "/tmp"] {
        if let Ok(entries) = walk(Path::new(dir), 4) {
            seen.extend(entries.into_iter().map(|e| format!("file: {e}")));
        }
    }
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            if h.path().join("lineworks-node").exists() {
                seen.insert(format!("cgroup: {}", h.path().display()));
            }
        }
    }
    for key in [
        "vm/overcommit_memory",
        "vm/panic_on_oom",
        "kernel/panic",
        "kernel/panic_on_oops",
        "net/bridge/bridge-nf-call-iptables",
        "net/ipv4/conf/all/route_localnet",
    ] {
        let value = std::fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
        seen.insert(format!("sysctl: {key}={}", value.trim()));
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ours = [
            "kubelet",
            "containerd",
            "kube-proxy",
            "kube-scheduler",
            "kube-controller",
            "pause",
            "lineworks-operator emulator",
            "node-janitor",
        ];
        if ours.iter().any(|o| cmdline.contains(o)) && !cmdline.contains("node_lifecycle") {
            seen.insert(format!("process: {}", cmdline.trim()));
        }
    }
    seen
}

/// Paths under `dir`, `depth` levels deep, skipping this test's own temporary files and the
/// control planes of tests running beside it (`make test` runs test binaries in parallel lanes);
/// the child's own control-plane directory is checked by name instead.
fn walk(dir: &Path, depth: usize) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let name = path.display().to_string();
        if name.starts_with("/tmp/")
            && (!name.contains("lineworks") || name.starts_with("/tmp/lineworks-control-plane-"))
        {
            continue;
        }
        out.push(name);
        if depth > 1 && entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path, depth - 1).unwrap_or_default());
        }
    }
    Ok(out)
}

/// Waits until no cluster or janitor holds the machine's node lock.
fn wait_for_node_lock(timeout: Duration) {
    std::fs::create_dir_all("/run/lineworks-operator").expect("run dir");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lineworks-operator/node.lock")
        .expect("lock file");
    let deadline = Instant::now() + timeout;
    // SAFETY: flock on a descriptor we own.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            Instant::now() < deadline,
            "the janitor did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs only as a child of the test below: a cluster with a pod running, then waits to be killed.
#[tokio::test]
#[ignore = "run by the lifecycle test in a child process"]
async fn child_with_a_pod_running() {
    let Some(report) = std::env::var_os(REPORT_ENV) else {
        return;
    };
    let cluster = OneNodeCluster::start().await.expect("cluster starts");
    let pause = "localhost/lineworks-operator/pause:3.10.2";
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: sleeper, namespace: default}}\n\
         spec: {{containers: [{{name: c, image: {pause}, imagePullPolicy: Never}}]}}\n"
    );
    let mut apply = cluster.plane().kubectl();
    apply
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped());
    let mut child = apply.spawn().expect("kubectl");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), pod.as_bytes())
        .expect("pod");
    assert!(child.wait().expect("kubectl").success());
    let ready = cluster
        .plane()
        .kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "pod/sleeper",
            "--timeout=120s",
        ])
        .output()
        .expect("kubectl wait");
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    let dirs = format!(
        "{}\n{}",
        cluster.dir().display(),
        cluster.plane().dir().display()
    );
    std::fs::write(&report, dirs).expect("report");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_killed_cluster_process_leaves_the_machine_as_it_found_it() {
    wait_for_node_lock(Duration::from_secs(300));
    let before = snapshot();
    let dir = tempfile::tempdir().expect("dir");
    let report = dir.path().join("report");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--ignored",
            "--exact",
            "child_with_a_pod_running",
            "--nocapture",
        ])
        .env(REPORT_ENV, &report)
        .spawn()
        .expect("child test");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !report.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child test ended before its pod ran: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the child's pod did not run in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dirs = std::fs::read_to_string(&report).expect("report");
    let during = snapshot();
    assert!(
        during.iter().any(|l| l.starts_with("link: lwnode0")),
        "the cluster was up (bridge present)"
    );
    assert!(
        during.iter().any(|l| l.contains("KUBE-SERVICES")),
        "kube-proxy's rules present"
    );
    assert!(
        during
            .iter()
            .any(|l| l.starts_with("process: ") && l.contains("pause"))
    );

    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    wait_for_node_lock(Duration::from_secs(120));
    let after = snapshot();
    let left: Vec<_> = after.difference(&before).collect();
    let taken: Vec<_> = before.difference(&after).collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(taken.is_empty(), "changed: {taken:#?}");
    for dir in dirs.lines() {
        assert!(!Path::new(dir).exists(), "{dir} left behind");
    }
}
