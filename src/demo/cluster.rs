//! `make demo ARGS=--cluster`: the product as a platform team installs it. A one-node cluster on
//! this machine (root needed: containerd, a kubelet, a bridge), the operator image built without
//! docker and imported, the LINE WORKS emulator as a pod over HTTPS, the chart installed with
//! helm (controller and relay Deployment), the example notifier Ready, one visitor through the
//! relay's Service. With `--wait` it keeps running and prints what to type; Ctrl-C removes all of
//! it (the cluster's janitor also does when the process is killed).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::wait::await_condition;
use lineworks_control_plane::{OneNodeCluster, ServingIdentity};
use serde_json::{Value, json};

use super::{DemoError, NAMESPACE, example_objects, pretty, step, world};
use crate::api::LineWorksNotifier;
use crate::api::conditions::{ConditionExt, ConditionStatus, ConditionType};

/// The emulator Service's fixed address (in the static band of the service range), named by its
/// serving certificate: the cluster has no DNS.
pub const EMULATOR_IP: &str = "10.0.0.10";
/// The image the chart names by default; `scripts/image.sh` builds it.
pub const IMAGE: &str = "ghcr.io/lineworks-operator/lineworks-operator";
const EMULATOR_NAMESPACE: &str = "lineworks-emulator";
const OPERATOR_NAMESPACE: &str = "lineworks-operator";
const RELEASE: &str = "lineworks-operator";
const WAIT: Duration = Duration::from_secs(180);

/// Runs a script of the repository's `scripts/` that prints a path (an archive, a binary) as a
/// person would: with only the environment a shell has, not cargo's (which would make an inner
/// release build differ from a manual one, and rebuild it). Its progress goes to stderr.
pub fn repo_script(name: &str) -> Result<PathBuf, DemoError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let mut command = Command::new(&script);
    command.env_clear();
    const KEEP: [&str; 9] = [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "XDG_CACHE_HOME",
        "TMPDIR",
        "GOPATH",
        "GOMODCACHE",
        "GOPROXY",
    ];
    for (key, value) in std::env::vars_os() {
        if KEEP.iter().any(|k| key == *k) {
            command.env(key, value);
        }
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| DemoError::Step(format!("running {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(DemoError::Step(format!(
            "{} failed ({})",
            script.display(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| DemoError::Step(format!("{} printed no path", script.display())))
}

/// A CA and a serving certificate for the emulator's Service in `namespace`.
pub fn emulator_identity(namespace: &str) -> Result<ServingIdentity, DemoError> {
    let ip: IpAddr = EMULATOR_IP
        .parse()
        .map_err(|e| DemoError::Step(format!("emulator address: {e}")))?;
    lineworks_control_plane::serving_identity(
        &[ip],
        &[
            "lineworks-emulator".to_string(),
            format!("lineworks-emulator.{namespace}.svc"),
        ],
    )
    .map_err(|e| DemoError::Step(format!("emulator certificate: {e}")))
}

/// The emulator as a pod (this version's image, `emulator` subcommand, HTTPS on 8443, the
/// restricted standard) with its world and TLS Secret, behind a Service at [`EMULATOR_IP`]:443.
pub fn emulator_objects(namespace: &str, world_json: &str, identity: &ServingIdentity) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "emulator-tls", "namespace": namespace},
         "stringData": {"tls.crt": identity.cert_pem, "tls.key": identity.key_pem}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "emulator-world", "namespace": namespace},
         "data": {"world.json": world_json}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "lineworks-emulator", "namespace": namespace,
                      "labels": {"app": "lineworks-emulator"}},
         "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "emulator",
                "image": format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION")),
                "imagePullPolicy": "Never",
                "args": ["emulator", "--world", "/world/world.json",
                         "--listen", "0.0.0.0:8443",
                         "--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key"],
                "ports": [{"containerPort": 8443}],
                "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
                "securityContext": restricted_container(),
                "volumeMounts": [
                    {"name": "tls", "mountPath": "/tls", "readOnly": true},
                    {"name": "world", "mountPath": "/world", "readOnly": true}]
            }],
            "volumes": [
                {"name": "tls", "secret": {"secretName": "emulator-tls"}},
                {"name": "world", "configMap": {"name": "emulator-world"}}]
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "lineworks-emulator", "namespace": namespace},
         "spec": {"clusterIP": EMULATOR_IP, "selector": {"app": "lineworks-emulator"},
                  "ports": [{"port": 443, "targetPort": 8443}]}},
    ]})
}

/// The restricted Pod Security Standard's container settings.
pub fn restricted_container() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// `kubectl ARGS` on the cluster; its stdout, or an error with its stderr.
fn kubectl(
    cluster: &OneNodeCluster,
    args: &[&str],
    stdin: Option<&Value>,
) -> Result<String, DemoError> {
    let failed = |detail: String| DemoError::Kubectl {
        args: args.join(" "),
        detail,
    };
    let mut child = cluster
        .plane()
        .kubectl()
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(value), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(value.to_string().as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn namespace(cluster: &OneNodeCluster, name: &str, restricted: bool) -> Result<(), DemoError> {
    kubectl(cluster, &["create", "namespace", name], None)?;
    if restricted {
        kubectl(
            cluster,
            &[
                "label",
                "namespace",
                name,
                "pod-security.kubernetes.io/enforce=restricted",
            ],
            None,
        )?;
    }
    Ok(())
}

/// Runs the cluster demo; with `wait`, keeps it running until Ctrl-C.
pub async fn run(wait: bool) -> Result<(), DemoError> {
    let started = Instant::now();
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| DemoError::Step(format!("installing the Ctrl-C handler: {e}")))?;
    step(
        "starting a one-node cluster on this machine (the first run builds the node components: minutes)",
    );
    let cluster = OneNodeCluster::start().await?;
    step(&format!(
        "node {} Ready, API server at {} ({:.1} s)",
        lineworks_control_plane::NODE_NAME,
        cluster.plane().server_url(),
        started.elapsed().as_secs_f64()
    ));
    step(
        "building the operator image without docker (scripts/image.sh; the first run compiles a release build)",
    );
    let archive = repo_script("image.sh")?;
    cluster.import(&archive, IMAGE)?;
    let helm = repo_script("helm-binary.sh")?;

    namespace(&cluster, EMULATOR_NAMESPACE, true)?;
    let identity = emulator_identity(EMULATOR_NAMESPACE)?;
    let world = serde_json::to_string(&world()?)
        .map_err(|e| DemoError::Step(format!("emulator world: {e}")))?;
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&emulator_objects(EMULATOR_NAMESPACE, &world, &identity)),
    )?;
    kubectl(
        &cluster,
        &[
            "wait",
            "-n",
            EMULATOR_NAMESPACE,
            "--for=condition=Ready",
            "pod/lineworks-emulator",
            "--timeout=180s",
        ],
        None,
    )?;
    step(&format!(
        "LINE WORKS emulator running as a pod at https://{EMULATOR_IP} (its own CA)"
    ));

    namespace(&cluster, OPERATOR_NAMESPACE, true)?;
    namespace(&cluster, NAMESPACE, false)?;
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "emulator-ca", "namespace": OPERATOR_NAMESPACE},
            "data": {"ca.crt": identity.ca_pem}})),
    )?;
    let kubeconfig = cluster.plane().kubeconfig_path().display().to_string();
    let allowed = format!("allowedHosts={{{EMULATOR_IP}}}");
    let served = format!("relay.namespaces={{{NAMESPACE}}}");
    let chart = format!("{}/charts/lineworks-operator", env!("CARGO_MANIFEST_DIR"));
    let install_args = [
        "install",
        RELEASE,
        chart.as_str(),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "extraCABundle.configMap=emulator-ca",
        "--set",
        allowed.as_str(),
        "--set",
        "relay.enabled=true",
        "--set",
        served.as_str(),
        "--wait",
        "--timeout",
        "180s",
        "--kubeconfig",
        kubeconfig.as_str(),
    ];
    step(&format!(
        "helm {}",
        install_args[..install_args.len() - 2].join(" ")
    ));
    let installed = Command::new(&helm)
        .args(install_args)
        .status()
        .map_err(|e| DemoError::Step(format!("helm: {e}")))?;
    if !installed.success() {
        return Err(DemoError::Step(format!(
            "helm install failed ({installed})"
        )));
    }

    let (secret, notifier) = example_objects(
        &format!("https://{EMULATOR_IP}/v1.0"),
        &format!("https://{EMULATOR_IP}/oauth2/v2.0"),
    )?;
    kubectl(
        &cluster,
        &["apply", "-n", NAMESPACE, "-f", "-"],
        Some(&secret),
    )?;
    kubectl(
        &cluster,
        &["apply", "-n", NAMESPACE, "-f", "-"],
        Some(&notifier),
    )?;
    step(
        "applied examples/notifier-service-account.yaml (apiBaseURL/authBaseURL → the emulator's Service)",
    );
    let client = cluster.plane().client().await?;
    let notifiers: Api<LineWorksNotifier> = Api::namespaced(client.clone(), NAMESPACE);
    for type_ in [ConditionType::Ready, ConditionType::TestNotified] {
        let holds = move |n: Option<&LineWorksNotifier>| {
            n.and_then(|n| n.condition(type_))
                .is_some_and(|c| c.is(ConditionStatus::True))
        };
        tokio::time::timeout(WAIT, await_condition(notifiers.clone(), "reception", holds))
            .await
            .map_err(|_| DemoError::Step(format!("{type_} did not become True within {WAIT:?}")))?
            .map_err(|e| DemoError::Step(format!("watching the notifier: {e}")))?;
        step(&format!(
            "{type_}=True ({:.1} s since start)",
            started.elapsed().as_secs_f64()
        ));
    }

    let relay_ip = kubectl(
        &cluster,
        &[
            "get",
            "service",
            "-n",
            OPERATOR_NAMESPACE,
            &format!("{RELEASE}-relay"),
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    )?;
    let relay_url =
        format!("http://{relay_ip}:8090/v1/notifiers/{NAMESPACE}/reception/notifications");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, NAMESPACE);
    let token = secrets
        .get("reception-relay-caller")
        .await
        .ok()
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get("token")
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        })
        .ok_or_else(|| DemoError::Step("the notifier's caller token Secret is missing".into()))?;
    let visitor = json!({
        "visitor": {"name": "佐藤 花子", "company": "株式会社サンプル", "count": 2, "purpose": "打ち合わせ"},
        "host": "jinji",
    });
    step(&format!(
        "POST {relay_url} (the relay Deployment's Service, with the notifier's caller token)"
    ));
    lineworks_client::install_crypto_provider();
    let answer: Value = reqwest::Client::new()
        .post(&relay_url)
        .bearer_auth(&token)
        .json(&visitor)
        .send()
        .await
        .map_err(|e| DemoError::Step(format!("posting to the relay: {e}")))?
        .json()
        .await
        .unwrap_or(Value::Null);
    step(&format!("relay answered:\n{}", pretty(&answer)));

    step("kubectl get pods,lineworksnotifiers -A");
    eprintln!("{}", kubectl(&cluster, &["get", "pods,lwn", "-A"], None)?);
    step("what LINE WORKS (the emulator pod) received:");
    let admin = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(identity.ca_pem.as_bytes())
                .map_err(|e| DemoError::Step(format!("emulator CA: {e}")))?,
        )
        .build()
        .map_err(|e| DemoError::Step(format!("emulator client: {e}")))?;
    let messages: Vec<Value> = admin
        .get(format!("https://{EMULATOR_IP}/admin/messages"))
        .send()
        .await
        .map_err(|e| DemoError::Step(format!("reading the emulator: {e}")))?
        .json()
        .await
        .unwrap_or_default();
    for message in messages {
        eprintln!(
            "  {} {:<32} {}",
            if message["kind"] == "user" {
                "DM  "
            } else {
                "room"
            },
            message["target"].as_str().unwrap_or_default(),
            message["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .replace('\n', " / ")
        );
    }

    if wait {
        step(&format!(
            "running. In another terminal:\n    export KUBECONFIG={kubeconfig}\n    alias kubectl={}\n    kubectl get pods,lwn -A\n    TOKEN=$(kubectl -n {NAMESPACE} get secret reception-relay-caller -o jsonpath='{{.data.token}}' | base64 -d)\n    curl -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{{\"visitor\":{{\"name\":\"test\"}}}}' {relay_url}\nCtrl-C stops everything and removes it from this machine.",
            cluster.plane().kubectl_path().display()
        ));
        let _ = interrupt.recv().await;
    }
    step("stopping the cluster (its janitor removes pods, rules, mounts and files)");
    cluster.stop();
    step(&format!(
        "done in {:.1} s; nothing left running",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
