//! Shared by the integration tests: the per-binary control plane, kubectl, and waiting.
#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod lineworks;
pub mod oauth;
pub mod operator;

use lineworks_control_plane::ControlPlane;

/// The control plane of this test binary, with the CRD installed.
pub async fn control_plane_with_crd() -> &'static ControlPlane {
    let plane = lineworks_control_plane::shared()
        .await
        .unwrap_or_else(|e| panic!("control plane did not start: {e}"));
    let client = plane.client().await.expect("admin client");
    lineworks_operator::crd::install(&client, Duration::from_secs(30))
        .await
        .expect("CRD installs and becomes Established");
    plane
}

/// Runs kubectl against the control plane; panics with its output when it cannot start.
pub fn kubectl(plane: &ControlPlane, args: &[&str]) -> Output {
    plane
        .kubectl()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run kubectl {args:?}: {e}"))
}

/// kubectl's stdout, asserting it succeeded.
pub fn kubectl_ok(plane: &ControlPlane, args: &[&str]) -> String {
    let out = kubectl(plane, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it returns Some, or panics after `timeout` describing what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pinned helm (LINEWORKS_HELM from `make test`, else built once by the script).
pub fn helm() -> PathBuf {
    built_tool("LINEWORKS_HELM", "helm-binary.sh")
}

/// A tool's path: `env_var` as `make test` sets it, else what `scripts/<script>` (which builds
/// it once) prints.
pub fn built_tool(env_var: &str, script: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return path.into();
    }
    let out = Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(script),
    )
    .stderr(Stdio::inherit())
    .output()
    .unwrap_or_else(|e| panic!("scripts/{script} runs: {e}"));
    assert!(out.status.success(), "scripts/{script} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `helm template` of the chart as release `lwo` in `namespace` for Kubernetes 1.36.3, with
/// `--set` for each of `sets`; asserts it renders.
pub fn helm_template(namespace: &str, sets: &[&str]) -> String {
    let mut args = vec![
        "template",
        "lwo",
        concat!(env!("CARGO_MANIFEST_DIR"), "/charts/lineworks-operator"),
        "--namespace",
        namespace,
        "--kube-version",
        "1.36.3",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = Command::new(helm())
        .args(&args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command of a pinned Go tool module (`scripts/go-tool.sh TOOL`, built once) with `args`,
/// `input` on its stdin; asserts it succeeds and returns its output, one JSON value per line.
pub fn go_tool_json_lines(
    tool: &str,
    args: &[&std::ffi::OsStr],
    input: &str,
) -> Vec<serde_json::Value> {
    use std::io::Write;
    let built = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/go-tool.sh"))
        .arg(tool)
        .output()
        .expect("scripts/go-tool.sh runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut child = Command::new(String::from_utf8_lossy(&built.stdout).trim())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} starts: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{tool} printed {l}: {e}")))
        .collect()
}
