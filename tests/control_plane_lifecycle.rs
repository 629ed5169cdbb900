//! The harness leaves nothing behind: no etcd or kube-apiserver process and no temporary directory,
//! whether a test ends normally, panics, or its process is killed outright.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lineworks_control_plane::ControlPlane;

/// Set in the environment of the child test runs below; names the file they report into.
const REPORT_ENV: &str = "LWO_LIFECYCLE_REPORT";

/// Whether a pid is a live process (a zombie waiting for init to reap it counts as gone).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z') | Some('X')
        ),
    }
}

fn wait_until_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|p| running(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes still running after {timeout:?}: {:?}",
            pids.iter().filter(|p| running(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn stop_ends_every_process_and_removes_the_directory() {
    let plane = ControlPlane::start().await.expect("control plane starts");
    let client = plane.client().await.expect("client");
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(
        version.git_version, "v1.36.3",
        "built with the right version stamp"
    );

    let pids: Vec<u32> = plane.processes().iter().map(|p| p.pid).collect();
    let names: Vec<&str> = plane.processes().iter().map(|p| p.name).collect();
    assert_eq!(names, ["etcd", "kube-apiserver"]);
    assert!(pids.iter().all(|p| running(*p)));
    let dir = plane.dir().to_path_buf();
    assert!(dir.join("kubeconfig").exists());

    drop(plane);
    assert!(pids.iter().all(|p| !running(*p)), "stopped synchronously");
    assert!(!dir.exists(), "{} removed", dir.display());
}

/// Runs only as a child of the tests below: starts the shared control plane, reports its pids and
/// directory, then ends the way the parent asked.
#[tokio::test]
#[ignore = "run by the lifecycle tests in a child process"]
async fn child_with_shared_control_plane() {
    let Some(report) = std::env::var_os(REPORT_ENV) else {
        return;
    };
    let plane = lineworks_control_plane::shared()
        .await
        .expect("control plane starts");
    let pids: Vec<String> = plane
        .processes()
        .iter()
        .map(|p| p.pid.to_string())
        .collect();
    let line = format!("{} {}\n", plane.dir().display(), pids.join(" "));
    std::fs::write(&report, line).expect("report written");
    match std::env::var("LWO_LIFECYCLE_END").as_deref() {
        Ok("hang") => loop {
            std::thread::park();
        },
        _ => panic!("this child test panics on purpose"),
    }
}

/// Runs the child test with `end` and returns its reported directory and pids, once written.
fn run_child(end: &str) -> (std::process::Child, PathBuf, Vec<u32>, tempfile::TempDir) {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let report = scratch.path().join("report");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_with_shared_control_plane",
            "--ignored",
            "--nocapture",
        ])
        .env(REPORT_ENV, &report)
        .env("LWO_LIFECYCLE_END", end)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child test runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&report)
            && text.ends_with('\n')
        {
            break text;
        }
        assert!(Instant::now() < deadline, "child never reported");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut words = text.split_whitespace();
    let dir = PathBuf::from(words.next().expect("directory"));
    let pids: Vec<u32> = words.map(|w| w.parse().expect("pid")).collect();
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver: {text}");
    (child, dir, pids, scratch)
}

#[test]
fn a_panicking_test_leaves_no_process_and_no_directory() {
    let (mut child, dir, pids, _scratch) = run_child("panic");
    let status = child.wait().expect("child exits");
    assert!(!status.success(), "the child test failed as planned");
    wait_until_gone(&pids, Duration::from_secs(15));
    assert!(
        !Path::new(&dir).exists(),
        "{} removed at exit",
        dir.display()
    );
}

#[test]
fn a_killed_test_process_leaves_no_process_behind() {
    let (mut child, dir, pids, _scratch) = run_child("hang");
    child.kill().expect("SIGKILL the child test process");
    child.wait().expect("reaped");
    // Nothing in the killed process can run; the kernel's parent-death signal ends the children.
    wait_until_gone(&pids, Duration::from_secs(15));
    // A SIGKILLed process cannot remove its directory; the kernel-side guarantee is the processes.
    let _ = std::fs::remove_dir_all(dir);
}
