//! `lineworks-operator demo`: the project on a laptop with nothing installed. Starts a real local
//! control plane, installs the CRD, applies the example notifier and shows what kubectl shows.

use std::time::Duration;

use crate::control_plane::{ControlPlane, ControlPlaneError};

/// Namespace the demo's objects go to.
const NAMESPACE: &str = "demo";

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error(transparent)]
    Crd(#[from] crate::crd::InstallError),
    #[error("kubectl {args} failed: {detail}")]
    Kubectl { args: String, detail: String },
}

/// Runs the demo; with `wait`, keeps the control plane up until Ctrl-C.
pub async fn run(wait: bool) -> Result<(), DemoError> {
    step("starting etcd and kube-apiserver on loopback (the first run builds kube-apiserver)");
    let plane = ControlPlane::start().await?;
    step(&format!("control plane ready at {}", plane.server_url()));
    let client = plane.client().await?;
    crate::crd::install(&client, Duration::from_secs(30)).await?;
    step("CRD lineworksnotifiers.lineworks-operator.dev installed and Established");

    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    kubectl(&plane, &["create", "namespace", NAMESPACE])?;
    for file in [
        "notifier-service-account.yaml",
        "notifier-user-account.yaml",
    ] {
        let path = examples.join(file).display().to_string();
        kubectl(
            &plane,
            &["apply", "--server-side", "-n", NAMESPACE, "-f", &path],
        )?;
    }
    step("kubectl get lineworksnotifiers -o wide");
    kubectl(&plane, &["get", "lwn", "-n", NAMESPACE, "-o", "wide"])?;
    step("kubectl explain lineworksnotifier.spec.roomId");
    kubectl(&plane, &["explain", "lineworksnotifier.spec.roomId"])?;
    step("an invalid notifier is refused with what to fix (defaultUser written as a login ID):");
    let invalid = plane
        .kubectl()
        .args([
            "-n",
            NAMESPACE,
            "patch",
            "lwn",
            "reception",
            "--type=merge",
            "-p",
        ])
        .arg(r#"{"spec":{"defaultUser":"hogehoge@testtest"}}"#)
        .output()
        .map_err(|e| DemoError::Kubectl {
            args: "patch".into(),
            detail: e.to_string(),
        })?;
    eprintln!("{}", String::from_utf8_lossy(&invalid.stderr).trim());

    if wait {
        step(&format!(
            "running; try: kubectl --kubeconfig {} get lwn -A  (Ctrl-C stops and cleans up)",
            plane.kubeconfig_path().display()
        ));
        let _ = tokio::signal::ctrl_c().await;
    }
    step("stopping the control plane and removing its files");
    plane.stop();
    Ok(())
}

fn step(text: &str) {
    eprintln!("==> {text}");
}

fn kubectl(plane: &ControlPlane, args: &[&str]) -> Result<(), DemoError> {
    let status = plane
        .kubectl()
        .args(args)
        .status()
        .map_err(|e| DemoError::Kubectl {
            args: args.join(" "),
            detail: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(DemoError::Kubectl {
            args: args.join(" "),
            detail: status.to_string(),
        })
    }
}
