//! End to end on a real one-node cluster (crates/control-plane's `OneNodeCluster`): the image
//! built without docker and imported into the node's containerd, the chart installed with helm
//! into a namespace under the restricted Pod Security Standard, the LINE WORKS emulator running as
//! a pod behind a Service over HTTPS with its own CA (trusted through the chart's
//! `extraCABundle`, as a corporate proxy's CA would be), and every path exercised through pods.
//!
//! The scenarios share one release and run one after another in one test: each changes what the
//! next sees (a leader, a rollout), as on a real cluster.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use lineworks_control_plane::OneNodeCluster;
use lineworks_operator::api::LineWorksNotifier;
use lineworks_operator::api::contract::ALLOWED_NOTIFIERS_ANNOTATION;
use serde_json::{Value, json};
use support::lineworks::{BOT, DOMAIN, ROOM};
use support::operator::good_credentials;
use support::{helm, wait_for};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/lineworks-operator");
const IMAGE: &str = "ghcr.io/lineworks-operator/lineworks-operator";
/// The emulator Service's fixed address (in the static part of the service range), which its
/// serving certificate names.
const EMULATOR_IP: &str = "10.0.0.10";
const RELEASE: &str = "lwo";
const POD_WAIT: Duration = Duration::from_secs(180);

/// The cluster, what runs on it for every scenario, and the emulator's CA.
struct Lab {
    cluster: &'static OneNodeCluster,
    client: kube::Client,
    /// The emulator's CA (PEM), trusted by the operator's pods through `extraCABundle`.
    ca_pem: String,
    /// A client of the emulator's admin API, over HTTPS through its Service.
    admin: reqwest::Client,
    operator_ns: String,
}

impl Lab {
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self
            .cluster
            .plane()
            .kubectl()
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply` of a JSON object or List.
    fn apply(&self, object: &Value) {
        let mut child = self
            .cluster
            .plane()
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(object.to_string().as_bytes())
            .expect("manifest written");
        let out = child.wait_with_output().expect("kubectl ends");
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn helm(&self, args: &[&str]) -> String {
        let kubeconfig = self.cluster.plane().kubeconfig_path().display().to_string();
        let out = Command::new(helm())
            .args(args)
            .args(["--kubeconfig", &kubeconfig])
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn namespace(&self, prefix: &str, restricted: bool) -> String {
        let ns = self
            .cluster
            .plane()
            .create_namespace(&self.client, prefix)
            .await
            .expect("namespace");
        if restricted {
            self.kubectl(&[
                "label",
                "namespace",
                &ns,
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/warn=restricted",
            ]);
        }
        // Pods are admitted once the namespace's ServiceAccount exists.
        wait_for("the default ServiceAccount", POD_WAIT, || async {
            let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(self.client.clone(), &ns);
            match accounts.get_opt("default").await {
                Ok(Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        ns
    }

    /// Messages the emulator accepted, read through its Service over HTTPS.
    async fn delivered(&self) -> Vec<Value> {
        let url = format!("https://{EMULATOR_IP}/admin/messages");
        let response = self.admin.get(&url).send().await.expect("emulator answers");
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("messages")
    }
}

/// A CA and a serving certificate for the emulator's Service (its IP and DNS names).
fn emulator_pki(ns: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "emulator test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let mut serving = CertificateParams::new(vec![
        "lineworks-emulator".to_string(),
        format!("lineworks-emulator.{ns}.svc"),
    ])
    .expect("params");
    serving
        .subject_alt_names
        .push(SanType::IpAddress(EMULATOR_IP.parse().expect("ip")));
    let key = KeyPair::generate().expect("key");
    let cert = serving.signed_by(&key, &ca).expect("serving certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// The restricted Pod Security Standard's container settings.
fn restricted_container() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Starts the cluster (shared by this binary), imports the image, and runs the emulator as a pod.
async fn lab() -> &'static Lab {
    static LAB: tokio::sync::OnceCell<Lab> = tokio::sync::OnceCell::const_new();
    LAB.get_or_init(|| async {
        let started = Instant::now();
        let cluster = lineworks_control_plane::shared_cluster()
            .await
            .unwrap_or_else(|e| panic!("the one-node cluster did not start: {e}"));
        println!("figure: node Ready after {:?}", started.elapsed());
        let archive = support::image_archive("image.sh");
        cluster.import(&archive, IMAGE).expect("image imported");
        let client = cluster.plane().client().await.expect("client");
        let mut lab = Lab {
            cluster,
            client,
            ca_pem: String::new(),
            admin: reqwest::Client::new(),
            operator_ns: String::new(),
        };
        let emulator_ns = lab.namespace("emulator", true).await;
        let (ca_pem, cert_pem, key_pem) = emulator_pki(&emulator_ns);
        let world = serde_json::to_string(&support::lineworks::world()).expect("world");
        lab.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
             "metadata": {"name": "emulator-tls", "namespace": emulator_ns},
             "stringData": {"tls.crt": cert_pem, "tls.key": key_pem}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "emulator-world", "namespace": emulator_ns},
             "data": {"world.json": world}},
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "lineworks-emulator", "namespace": emulator_ns,
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
             "metadata": {"name": "lineworks-emulator", "namespace": emulator_ns},
             "spec": {"clusterIP": EMULATOR_IP, "selector": {"app": "lineworks-emulator"},
                      "ports": [{"port": 443, "targetPort": 8443}]}},
        ]}));
        lab.kubectl(&[
            "wait",
            "-n",
            &emulator_ns,
            "--for=condition=Ready",
            "pod/lineworks-emulator",
            "--timeout=180s",
        ]);
        lineworks_client::install_crypto_provider();
        lab.admin = reqwest::Client::builder()
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("CA parses"),
            )
            .build()
            .expect("admin client");
        lab.ca_pem = ca_pem;
        lab.operator_ns = lab.namespace("lwo-system", true).await;
        lab
    })
    .await
}

/// The chart installed with helm (two controller replicas), waited for until its pods are Ready.
fn helm_install(lab: &Lab) -> Duration {
    let started = Instant::now();
    lab.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "emulator-ca", "namespace": lab.operator_ns},
        "data": {"ca.crt": lab.ca_pem}}));
    lab.helm(&[
        "install",
        RELEASE,
        CHART,
        "--namespace",
        &lab.operator_ns,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "replicaCount=2",
        "--set",
        "extraCABundle.configMap=emulator-ca",
        "--set",
        &format!("allowedHosts={{{EMULATOR_IP}}}"),
        "--wait",
        "--timeout",
        "180s",
    ]);
    started.elapsed()
}

/// A tenant's credentials Secret and notifier aimed at the emulator's Service over HTTPS.
fn apply_notifier(lab: &Lab, ns: &str, name: &str, extra: Value) {
    let mut spec = json!({
        "botId": BOT,
        "domain": DOMAIN,
        "defaultUser": "hogehoge",
        "roomId": ROOM,
        "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "app"}},
        "apiBaseURL": format!("https://{EMULATOR_IP}/v1.0"),
        "authBaseURL": format!("https://{EMULATOR_IP}/oauth2/v2.0"),
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    lab.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "app", "namespace": ns,
                      "annotations": {ALLOWED_NOTIFIERS_ANNOTATION: "*"}},
         "stringData": good_credentials()},
        {"apiVersion": "lineworks-operator.dev/v1alpha1", "kind": "LineWorksNotifier",
         "metadata": {"name": name, "namespace": ns}, "spec": spec},
    ]}));
}

/// Waits until the notifier's condition `kind` has `status`; returns the time it took.
async fn wait_condition(lab: &Lab, ns: &str, name: &str, kind: &str, status: &str) -> Duration {
    let started = Instant::now();
    let api: Api<LineWorksNotifier> = Api::namespaced(lab.client.clone(), ns);
    wait_for(
        &format!("{ns}/{name} {kind}={status}"),
        POD_WAIT,
        || async {
            let notifier = api.get(name).await.map_err(|e| e.to_string())?;
            let conditions = notifier
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            match conditions.iter().find(|c| c.type_ == kind) {
                Some(c) if c.status == status => Ok(()),
                Some(c) => Err(format!("{} {}: {}", c.status, c.reason, c.message)),
                None => Err("no such condition yet".into()),
            }
        },
    )
    .await;
    started.elapsed()
}

/// Scenario 1: helm install under the restricted standard; pods Ready with probes passing; a
/// notifier reaches Ready over HTTPS with the extra CA and its test notification arrives once.
async fn installs_and_delivers(lab: &Lab) -> String {
    let install = helm_install(lab);
    println!("figure: helm install --wait (2 controller pods Ready) took {install:?}");
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), &lab.operator_ns);
    let listed = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=controller"))
        .await
        .expect("pods");
    assert_eq!(listed.items.len(), 2);
    for pod in &listed.items {
        let status = pod.status.as_ref().expect("status");
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "{:?} Ready", pod.metadata.name);
    }

    let tenant = lab.namespace("shop", false).await;
    let applied = Instant::now();
    apply_notifier(
        lab,
        &tenant,
        "front-desk",
        json!({"testNotification": {"id": "install"}}),
    );
    wait_condition(lab, &tenant, "front-desk", "Ready", "True").await;
    println!(
        "figure: notifier applied -> Ready through the pods took {:?}",
        applied.elapsed()
    );
    wait_condition(lab, &tenant, "front-desk", "TestNotified", "True").await;
    assert_eq!(
        test_notifications(&lab.delivered().await),
        2,
        "the test notification arrived once: a DM and a room message"
    );
    tenant
}

/// Test notifications the emulator accepted (each is a DM plus a room message).
fn test_notifications(delivered: &[Value]) -> usize {
    delivered
        .iter()
        .filter(|m| m["content"]["text"] == "LINE WORKS テスト通知")
        .count()
}

#[tokio::test]
async fn the_chart_runs_as_pods_on_a_real_node() {
    let lab = lab().await;
    let tenant = installs_and_delivers(lab).await;
    let _ = tenant;
}
