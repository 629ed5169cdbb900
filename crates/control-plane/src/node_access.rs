//! What the API server needs to serve a node: a token and kubeconfig per node component (the
//! kubelet as `system:node:<name>` in `system:nodes`, for the Node authorizer), the kubelet's
//! serving certificate, and the API server's client certificate for kubelets.

use std::net::Ipv4Addr;
use std::path::Path;

use super::{ControlPlaneError, io_err, kubeconfig, pki};

/// The node components besides the kubelet: kubeconfig file stem, user, group.
const COMPONENTS: [(&str, &str, Option<&str>); 3] = [
    ("kube-proxy", "system:kube-proxy", None),
    ("kube-scheduler", "system:kube-scheduler", None),
    (
        "kube-controller-manager",
        "system:kube-controller-manager",
        None,
    ),
];

/// Writes `<component>.kubeconfig`, `kubelet.crt`/`.key` and `kubelet-client.crt`/`.key` into
/// `root`, appends the components' lines to `tokens` (the API server's token file) and returns
/// the API server's flags for a node.
pub(crate) fn issue(
    root: &Path,
    pki: &pki::Pki,
    server_url: &str,
    address: Ipv4Addr,
    node: &str,
    tokens: &mut String,
) -> Result<Vec<String>, ControlPlaneError> {
    let write = |name: &str, body: &str| -> Result<String, ControlPlaneError> {
        let path = root.join(name);
        std::fs::write(&path, body).map_err(io_err(format!("writing {}", path.display())))?;
        Ok(path.display().to_string())
    };
    let kubelet_user = format!("system:node:{node}");
    let components = COMPONENTS.iter().copied().chain([(
        "kubelet",
        kubelet_user.as_str(),
        Some("system:nodes"),
    )]);
    for (stem, user, group) in components {
        let token = pki::component_token()?;
        let groups = group.map(|g| format!(",\"{g}\"")).unwrap_or_default();
        tokens.push_str(&format!("{token},{user},{user}{groups}\n"));
        kubeconfig::write(
            &root.join(format!("{stem}.kubeconfig")),
            server_url,
            &pki.ca_pem,
            &token,
        )?;
    }
    let serving = pki.issue(&kubelet_user, Some("system:nodes"), &[address.into()])?;
    write("kubelet.crt", &serving.cert_pem)?;
    write("kubelet.key", &serving.key_pem)?;
    let client = pki.issue("kube-apiserver-kubelet-client", Some("system:masters"), &[])?;
    let client_cert = write("kubelet-client.crt", &client.cert_pem)?;
    let client_key = write("kubelet-client.key", &client.key_pem)?;
    Ok(vec![
        "--authorization-mode=Node,RBAC".to_string(),
        "--enable-admission-plugins=NodeRestriction".into(),
        format!("--kubelet-client-certificate={client_cert}"),
        format!("--kubelet-client-key={client_key}"),
        format!(
            "--kubelet-certificate-authority={}",
            root.join("ca.crt").display()
        ),
        "--kubelet-preferred-address-types=InternalIP".into(),
    ])
}
