//! Where the Kubernetes binaries come from: a directory named by the environment, or the
//! repository's scripts, which build them once (cached under `~/.cache`).

use std::path::{Path, PathBuf};

use super::{ControlPlaneError, K8S_BIN_DIR_ENV};

/// Directory holding kube-apiserver and kubectl: `$LINEWORKS_K8S_BIN_DIR`, or built (once,
/// cached) by the repository's script, whose progress goes to this process's stderr.
pub async fn k8s_bin_dir() -> Result<PathBuf, ControlPlaneError> {
    if let Some(path) = std::env::var_os(K8S_BIN_DIR_ENV) {
        return Ok(PathBuf::from(path));
    }
    script_output("k8s-binaries.sh", &[]).await
}

/// Runs a script of the repository's scripts/ and returns the last line it printed (a path);
/// its progress goes to this process's stderr.
pub(crate) async fn script_output(name: &str, args: &[&str]) -> Result<PathBuf, ControlPlaneError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let build_err = |detail: String| ControlPlaneError::Build {
        script: script.display().to_string(),
        detail,
    };
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| build_err(e.to_string()))?;
    if !output.status.success() {
        return Err(build_err(format!("it exited with {}", output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| build_err("it printed no path".into()))
}
