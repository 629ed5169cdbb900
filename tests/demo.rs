//! README's first command keeps working: the demo runs end to end (control plane, emulator,
//! controller, relay) and cleans up.

#[tokio::test]
async fn the_demo_runs_end_to_end() {
    lineworks_operator::demo::run(false)
        .await
        .expect("the demo succeeds");
}

/// A `demo --wait` child process, up and running.
struct WaitingDemo {
    child: tokio::process::Child,
    kubeconfig: std::path::PathBuf,
    relay_url: String,
}

async fn start_waiting_demo() -> WaitingDemo {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args(["demo", "--wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (kubeconfig, relay_url) =
        tokio::time::timeout(std::time::Duration::from_secs(120), async {
            let mut kubeconfig = None;
            while let Some(line) = lines.next_line().await.expect("stderr") {
                let line = line.trim();
                if let Some(path) = line.strip_prefix("export KUBECONFIG=") {
                    kubeconfig = Some(std::path::PathBuf::from(path));
                } else if line.starts_with("curl ")
                    && let (Some(k), Some(url)) = (kubeconfig.clone(), line.split(' ').next_back())
                {
                    return (k, url.to_string());
                }
            }
            panic!("the demo never said it was running");
        })
        .await
        .expect("the demo is up within two minutes");
    // Keep draining the progress lines so the demo never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    WaitingDemo {
        child,
        kubeconfig,
        relay_url,
    }
}

impl WaitingDemo {
    /// Ctrl-C, as a person stops it; asserts a clean exit.
    async fn interrupt(mut self) {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY: sending SIGINT (what Ctrl-C sends) to the child we started.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .expect("the demo stops within a minute")
            .expect("exit status");
        assert!(status.success(), "{status}");
    }
}

/// `make demo ARGS=--wait`: runs until Ctrl-C, then stops everything and removes its files.
#[tokio::test]
async fn ctrl_c_stops_the_waiting_demo_and_leaves_nothing_behind() {
    let demo = start_waiting_demo().await;
    assert!(demo.kubeconfig.exists());
    let dir = demo.kubeconfig.parent().expect("dir").to_path_buf();
    demo.interrupt().await;
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

/// docs/relay-guide.md's curl, Python and JavaScript examples, as written, against the demo's
/// relay: each gets its visitor delivered.
#[tokio::test]
async fn the_relay_guides_examples_deliver_through_the_demo_relay() {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/relay-guide.md"),
    )
    .expect("docs/relay-guide.md");
    let demo = start_waiting_demo().await;
    let dir = tempfile::tempdir().expect("dir");
    for (fence, file, program) in [
        ("sh", "notify.sh", "bash"),
        ("python", "notify.py", "python3"),
        ("javascript", "notify.mjs", "node"),
    ] {
        let code = guide
            .split(&format!("```{fence}\n"))
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("a {fence} example in the guide"));
        let path = dir.path().join(file);
        std::fs::write(&path, code).expect("write");
        let out = tokio::process::Command::new(program)
            .arg(&path)
            .env("RELAY_URL", &demo.relay_url)
            .env("RELAY_TOKEN", "")
            .output()
            .await
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{fence}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("200") && stdout.contains("delivered"),
            "{fence} example's visitor delivered: {stdout}"
        );
    }
    demo.interrupt().await;
}
