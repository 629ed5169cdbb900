//! The admin kubeconfig of a local control plane, for `kubectl` and for clients.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use serde_json::json;

use super::ControlPlaneError;

/// Writes a kubeconfig (mode 0600: it holds the admin token) with one context, `local`.
pub fn write(
    path: &Path,
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<(), ControlPlaneError> {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin", "namespace": "default"}}],
        "current-context": "local",
    });
    let yaml = serde_yaml_ng::to_string(&config)
        .map_err(|e| ControlPlaneError::Kubeconfig(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(super::io_err(format!("writing {}", path.display())))?;
    std::io::Write::write_all(&mut file, yaml.as_bytes())
        .map_err(super::io_err(format!("writing {}", path.display())))
}
