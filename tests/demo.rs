//! README's first command keeps working: the demo runs end to end (control plane, emulator,
//! controller, relay) and cleans up.

#[tokio::test]
async fn the_demo_runs_end_to_end() {
    lineworks_operator::demo::run(false)
        .await
        .expect("the demo succeeds");
}

/// `make demo ARGS=--wait`: runs until Ctrl-C, then stops everything and removes its files.
#[tokio::test]
async fn ctrl_c_stops_the_waiting_demo_and_leaves_nothing_behind() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args(["demo", "--wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let kubeconfig = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            if let Some(path) = line.trim().strip_prefix("export KUBECONFIG=") {
                return std::path::PathBuf::from(path);
            }
        }
        panic!("the demo never said it was running");
    })
    .await
    .expect("the demo is up within two minutes");
    assert!(kubeconfig.exists());
    let dir = kubeconfig.parent().expect("dir").to_path_buf();
    // Keep draining the progress lines so the demo never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().expect("pid") as i32;
    // SAFETY: sending SIGINT (what Ctrl-C sends) to the child we started.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
        .await
        .expect("the demo stops within a minute")
        .expect("exit status");
    assert!(status.success(), "{status}");
    assert!(!dir.exists(), "{} was left behind", dir.display());
    let left = std::process::Command::new("pgrep")
        .args(["-f", &dir.to_string_lossy()])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
