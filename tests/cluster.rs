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

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use lineworks_control_plane::OneNodeCluster;
use lineworks_operator::api::LineWorksNotifier;
use lineworks_operator::api::contract::ALLOWED_NOTIFIERS_ANNOTATION;
use lineworks_operator::api::notifier::DeliveryResult;
use lineworks_operator::demo::cluster::{
    EMULATOR_IP, IMAGE, emulator_identity, emulator_objects, repo_script, restricted_container,
};
use serde_json::{Value, json};
use support::lineworks::{BOT, DOMAIN, ROOM};
use support::operator::good_credentials;
use support::{helm, wait_for};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/lineworks-operator");
const RELEASE: &str = "lwo";
const POD_WAIT: Duration = Duration::from_secs(180);
const MSG_WAIT: Duration = Duration::from_secs(20);

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

    /// kubectl's stdout and stderr, whatever its exit status (for diagnostics).
    fn kubectl_text(&self, args: &[&str]) -> String {
        self.cluster
            .plane()
            .kubectl()
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_else(|e| e.to_string())
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

    /// The caller token of `front-desk` in `ns`, from the Secret the controller generated.
    async fn caller_token(&self, ns: &str) -> String {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), ns);
        let caller = secrets
            .get("front-desk-relay-caller")
            .await
            .expect("caller Secret");
        support::oauth::secret_value(&caller, "token")
    }

    /// Messages the emulator accepted, read through its Service over HTTPS.
    async fn delivered(&self) -> Vec<Value> {
        let url = format!("https://{EMULATOR_IP}/admin/messages");
        let response = self.admin.get(&url).send().await.expect("emulator answers");
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("messages")
    }
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
        let archive = repo_script("image.sh").expect("image built");
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
        let identity = emulator_identity(&emulator_ns).expect("emulator certificate");
        let world = serde_json::to_string(&support::lineworks::world()).expect("world");
        lab.apply(&emulator_objects(&emulator_ns, &world, &identity));
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
                reqwest::Certificate::from_pem_bundle(identity.ca_pem.as_bytes())
                    .expect("CA parses"),
            )
            .build()
            .expect("admin client");
        lab.ca_pem = identity.ca_pem;
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

/// The leader's pod name, from the Lease.
async fn leader(lab: &Lab) -> String {
    let leases: Api<Lease> = Api::namespaced(lab.client.clone(), &lab.operator_ns);
    let name = format!("{RELEASE}-lineworks-operator-leader");
    wait_for("a leader", POD_WAIT, || async {
        let lease = leases.get(&name).await.map_err(|e| e.to_string())?;
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "no holder".to_string())
    })
    .await
}

async fn controller_pods(lab: &Lab) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), &lab.operator_ns);
    pods.list(&ListParams::default().labels("app.kubernetes.io/component=controller"))
        .await
        .expect("pods")
        .items
}

fn rollout(lab: &Lab, deployment: &str) {
    lab.kubectl(&[
        "rollout",
        "status",
        "-n",
        &lab.operator_ns,
        &format!("deployment/{deployment}"),
        "--timeout=180s",
    ]);
}

/// Asks for test notification `id` and waits until status says it was delivered.
async fn wait_test_notification(lab: &Lab, ns: &str, name: &str, id: &str) {
    let api: Api<LineWorksNotifier> = Api::namespaced(lab.client.clone(), ns);
    wait_for(&format!("test notification {id}"), POD_WAIT, || async {
        let notifier = api.get(name).await.map_err(|e| e.to_string())?;
        let last = notifier.status.and_then(|s| s.last_test_notification);
        match last {
            Some(t) if t.id == id && t.result == DeliveryResult::Delivered => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Scenario 2: one of two replicas leads; deleting its pod hands over to the other, and a change
/// made during the handover is reconciled.
async fn the_leader_hands_over(lab: &Lab, tenant: &str) -> Duration {
    let pods: Vec<String> = controller_pods(lab)
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let first = leader(lab).await;
    assert!(
        pods.contains(&first),
        "the leader {first} is one of {pods:?}"
    );
    let leases: Api<Lease> = Api::namespaced(lab.client.clone(), &lab.operator_ns);
    let lease_name = format!("{RELEASE}-lineworks-operator-leader");
    // When the leader's current term ends, by the API server's clock.
    let held = leases
        .get(&lease_name)
        .await
        .expect("lease")
        .spec
        .expect("spec");
    let term_end = held.renew_time.expect("renewed").0
        + std::time::Duration::from_secs(held.lease_duration_seconds.expect("duration") as u64);
    let started = Instant::now();
    lab.kubectl(&[
        "delete",
        "pod",
        "-n",
        &lab.operator_ns,
        &first,
        "--wait=false",
    ]);
    lab.kubectl(&[
        "patch",
        "lineworksnotifier",
        "front-desk",
        "-n",
        tenant,
        "--type=merge",
        "-p",
        r#"{"spec":{"testNotification":{"id":"failover"}}}"#,
    ]);
    let (second, acquired) = wait_for("a new leader", POD_WAIT, || async {
        let lease = leases.get(&lease_name).await.map_err(|e| e.to_string())?;
        let spec = lease.spec.unwrap_or_default();
        match (spec.holder_identity, spec.acquire_time) {
            (Some(h), Some(at)) if !h.is_empty() && h != first => Ok((h, at.0)),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let failover = started.elapsed();
    // The leader released the Lease on its way out and another replica (the standby, or the
    // Deployment's replacement if it raced ahead) took it before the old term ran out: nobody
    // waited for the term.
    assert!(
        acquired < term_end,
        "{second} acquired the lease at {acquired:?}, not before the released term's end {term_end:?}"
    );
    wait_test_notification(lab, tenant, "front-desk", "failover").await;
    assert_eq!(
        test_notifications(&lab.delivered().await),
        4,
        "the change made during the handover was sent once"
    );
    rollout(lab, &format!("{RELEASE}-lineworks-operator"));
    failover
}

/// The documented sidecar example (examples/relay-sidecar.yaml) with a busybox "reception app"
/// that posts one visitor to the relay on 127.0.0.1.
fn sidecar_example(busybox: &str, visitor: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/relay-sidecar.yaml"
    ))
    .expect("example");
    let mut items = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut object: Value = serde::Deserialize::deserialize(document).expect("example parses");
        if object["kind"] == "Deployment" {
            object["spec"]["template"]["spec"]["volumes"] =
                json!([{"name": "extra-ca", "configMap": {"name": "emulator-ca"}}]);
            let containers = object["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .expect("containers");
            for container in containers {
                container["imagePullPolicy"] = json!("Never");
                if container["name"] == "app" {
                    let url = container["env"][0]["value"]
                        .as_str()
                        .expect("url")
                        .to_string();
                    container["image"] = json!(busybox);
                    container["command"] =
                        json!(["sh", "-c", post_until_accepted(&url, visitor, None)]);
                } else {
                    assert_eq!(
                        container["image"],
                        format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION")),
                        "the example names this version's image"
                    );
                    // What the example says to add for a LINE WORKS behind another CA (here
                    // the emulator's), plus the emulator's host.
                    container["args"]
                        .as_array_mut()
                        .expect("args")
                        .push(json!(format!("--allow-host={EMULATOR_IP}")));
                    container["env"].as_array_mut().expect("env").push(json!(
                        {"name": "LINEWORKS_EXTRA_CA_FILE", "value": "/etc/extra-ca/ca.crt"}
                    ));
                    container["volumeMounts"] = json!([{"name": "extra-ca", "mountPath": "/etc/extra-ca", "readOnly": true}]);
                }
            }
        }
        items.push(object);
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// A shell loop posting one visitor until the relay accepts it (2xx), as a reception app would;
/// with `token_env`, the bearer token comes from that variable.
fn post_until_accepted(url: &str, visitor: &str, token_env: Option<&str>) -> String {
    let key = visitor.replace(' ', "-");
    let auth = token_env
        .map(|v| format!(r#"--header "Authorization: Bearer ${v}" "#))
        .unwrap_or_default();
    format!(
        r#"until wget -q -O - {auth}--header 'Content-Type: application/json' --post-data '{{"visitor":{{"name":"{visitor}"}},"idempotencyKey":"{key}"}}' {url}; do sleep 1; done; echo; echo ACCEPTED; exec sleep 100000"#
    )
}

/// Messages naming `visitor` (a DM and a room message per notification).
fn messages_for(delivered: &[Value], visitor: &str) -> usize {
    delivered
        .iter()
        .filter(|m| m["content"].to_string().contains(visitor))
        .count()
}

async fn wait_messages_for(lab: &Lab, visitor: &str, count: usize, ns: &str) {
    let deadline = Instant::now() + MSG_WAIT;
    loop {
        let n = messages_for(&lab.delivered().await, visitor);
        if n == count {
            return;
        }
        if Instant::now() > deadline {
            let pods = lab.kubectl(&["get", "pods", "-n", ns, "-o", "wide"]);
            let logs = lab.kubectl_text(&[
                "logs",
                "-n",
                ns,
                "--all-containers",
                "--tail=20",
                "-l",
                "app=reception",
            ]);
            let readiness = lab.kubectl_text(&[
                "exec",
                "-n",
                ns,
                "deploy/reception",
                "-c",
                "app",
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8090/v1/notifier",
            ]);
            panic!(
                "{n} of {count} messages for {visitor} within {POD_WAIT:?}\n{pods}\n{logs}\n{readiness}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Scenario 3: the relay as a sidecar of an application pod (the documented example), and as the
/// chart's Deployment behind its Service, called from another pod with the notifier's caller
/// token from its Secret.
async fn the_relay_delivers_as_sidecar_and_as_deployment(lab: &Lab, tenant: &str, busybox: &str) {
    let example = sidecar_example(busybox, "Sidecar Visitor");
    lab.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "emulator-ca", "namespace": tenant},
        "data": {"ca.crt": lab.ca_pem}}));
    let mut apply = lab.cluster.plane().kubectl();
    apply.args(["apply", "-n", tenant, "-f", "-"]);
    let mut child = apply
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(example.to_string().as_bytes())
        .expect("written");
    assert!(child.wait().expect("kubectl").success());
    wait_messages_for(lab, "Sidecar Visitor", 2, tenant).await;

    lab.helm(&[
        "upgrade",
        RELEASE,
        CHART,
        "--namespace",
        &lab.operator_ns,
        "--reuse-values",
        "--set",
        "relay.enabled=true",
        "--set",
        &format!("relay.namespaces={{{tenant}}}"),
        "--wait",
        "--timeout",
        "180s",
    ]);
    let url = relay_url(lab, tenant).await;
    lab.apply(&json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "reception-client", "namespace": tenant},
    "spec": {
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "client", "image": busybox, "imagePullPolicy": "Never",
            "command": ["sh", "-c", post_until_accepted(&url, "Deployment Visitor", Some("TOKEN"))],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef":
                {"name": "front-desk-relay-caller", "key": "token"}}}],
            "securityContext": restricted_container(),
        }]
    }}));
    wait_messages_for(lab, "Deployment Visitor", 2, tenant).await;
}

/// `http://<relay Service address>:<port>/v1/notifiers/<tenant>/front-desk/notifications`.
async fn relay_url(lab: &Lab, tenant: &str) -> String {
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(lab.client.clone(), &lab.operator_ns);
    let service = services
        .get(&format!("{RELEASE}-lineworks-operator-relay"))
        .await
        .expect("relay Service");
    let spec = service.spec.expect("spec");
    let ip = spec.cluster_ip.expect("cluster IP");
    let port = spec.ports.expect("ports")[0].port;
    format!("http://{ip}:{port}/v1/notifiers/{tenant}/front-desk/notifications")
}

/// Scenario 4 (while the operator runs): deleting a notifier revokes its tokens and removes its
/// Secrets; deleting a namespace holding a Ready notifier finishes.
async fn deletion_and_garbage_collection(lab: &Lab) {
    let ns = lab.namespace("gc", false).await;
    apply_notifier(lab, &ns, "temp", json!({}));
    wait_condition(lab, &ns, "temp", "Ready", "True").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(lab.client.clone(), &ns);
    assert!(
        secrets
            .get_opt("temp-lineworks-token")
            .await
            .expect("get")
            .is_some()
    );
    lab.kubectl(&[
        "delete",
        "lineworksnotifier",
        "temp",
        "-n",
        &ns,
        "--timeout=60s",
    ]);
    wait_for("the token and caller Secrets gone", POD_WAIT, || async {
        let token = secrets
            .get_opt("temp-lineworks-token")
            .await
            .map_err(|e| e.to_string())?;
        let caller = secrets
            .get_opt("temp-relay-caller")
            .await
            .map_err(|e| e.to_string())?;
        if token.is_none() && caller.is_none() {
            Ok(())
        } else {
            Err("still there".into())
        }
    })
    .await;
    let events = lab.kubectl(&["get", "events", "-n", &ns, "-o", "json"]);
    assert!(events.contains("TokensRevoked"), "{events}");

    let doomed = lab.namespace("doomed", false).await;
    apply_notifier(lab, &doomed, "front-desk", json!({}));
    wait_condition(lab, &doomed, "front-desk", "Ready", "True").await;
    let started = Instant::now();
    lab.kubectl(&["delete", "namespace", &doomed, "--timeout=120s"]);
    println!(
        "figure: a namespace with a Ready notifier deleted in {:?}",
        started.elapsed()
    );
}

/// Scenario 5: `helm upgrade` with a value that rolls the controller and relay pods (an egress
/// proxy, `proxy.https`) while a caller sends visitors through the relay's Service, retrying
/// (same idempotency key) when a connection is refused or the relay answers 503: every visitor
/// arrives exactly once, and afterwards the pods' LINE WORKS calls go through the proxy.
async fn an_upgrade_under_traffic_loses_and_repeats_nothing(
    lab: &Lab,
    tenant: &str,
) -> (usize, usize, usize) {
    let url = relay_url(lab, tenant).await;
    let token = lab.caller_token(tenant).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(send_visitors(url, token.clone(), stopped));
    // The upgrade sets an egress proxy (which rolls every pod): LINE WORKS calls then go through it.
    let proxy = ConnectProxy::start(lab.cluster.node_ip()).await;
    let proxy_addr = proxy.addr;
    let upgrade = {
        let kubeconfig = lab.cluster.plane().kubeconfig_path().to_path_buf();
        let ns = lab.operator_ns.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(helm())
                .args([
                    "upgrade",
                    RELEASE,
                    CHART,
                    "--namespace",
                    &ns,
                    "--reuse-values",
                ])
                .args(["--set", &format!("proxy.https=http://{proxy_addr}")])
                .args(["--wait", "--timeout", "180s"])
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .output()
                .expect("helm runs")
        })
    };
    let out = upgrade.await.expect("upgrade task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Traffic continues until every old pod has gone (helm returns once the new ones are Ready).
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), &lab.operator_ns);
    wait_for("the old pods gone", POD_WAIT, || async {
        let all = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let leaving = all
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .count();
        if leaving == 0 {
            Ok(())
        } else {
            Err(format!("{leaving} terminating"))
        }
    })
    .await;
    let _ = stop.send(true);
    let visitors = sender.await.expect("sender");
    let delivered = lab.delivered().await;
    let mut lost = 0;
    let mut repeated = 0;
    for visitor in &visitors {
        match messages_for(&delivered, visitor) {
            0 => lost += 1,
            2 => {}
            _ => repeated += 1,
        }
    }
    assert_eq!((lost, repeated), (0, 0), "of {} visitors", visitors.len());
    // After the rollout the relay's LINE WORKS calls go through the proxy.
    let answer = reqwest::Client::new()
        .post(relay_url(lab, tenant).await)
        .bearer_auth(&token)
        .json(&json!({"visitor": {"name": "Through The Proxy"}}))
        .send()
        .await
        .expect("relay answers");
    let status = answer.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        answer.text().await.unwrap_or_default()
    );
    let tunnels = proxy.tunnels();
    assert!(
        !tunnels.is_empty(),
        "the pods' LINE WORKS calls went through HTTPS_PROXY"
    );
    assert!(
        tunnels.iter().all(|t| t == &format!("{EMULATOR_IP}:443")),
        "{tunnels:?}"
    );
    assert!(
        visitors.len() >= 3,
        "traffic flowed during the upgrade: {}",
        visitors.len()
    );
    (visitors.len(), visitors.len() - lost, repeated)
}

/// A minimal HTTP CONNECT proxy on the node's address (pods reach it), recording each tunnel's
/// target.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    tunnels: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnectProxy {
    async fn start(ip: std::net::Ipv4Addr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("addr");
        let tunnels = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&tunnels);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let seen = std::sync::Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if client.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let Some(target) = head
                        .strip_prefix("CONNECT ")
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_string)
                    else {
                        let _ = client
                            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                            .await;
                        return;
                    };
                    seen.lock().expect("lock").push(target.clone());
                    let mut upstream = match tokio::net::TcpStream::connect(&target).await {
                        Ok(upstream) => upstream,
                        Err(e) => {
                            eprintln!("test proxy: cannot reach {target}: {e}");
                            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                            return;
                        }
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { addr, tunnels }
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().expect("lock").clone()
    }
}

/// One visitor per 1.2 s: 50 a minute, under the test domain's budget of 60 DMs (and 60 room
/// messages) a minute, so a 429 means the upgrade held notifications back, not the caller.
const VISITOR_INTERVAL: Duration = Duration::from_millis(1200);

/// Sends a visitor every [`VISITOR_INTERVAL`] until told to stop; each is retried with its
/// idempotency key until accepted (up to two minutes). Returns the visitors' names.
async fn send_visitors(
    url: String,
    token: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("client");
    let mut visitors = Vec::new();
    let mut tasks = Vec::new();
    for n in 0.. {
        if *stop.borrow() {
            break;
        }
        let visitor = format!("Upgrade Visitor {n:04}");
        visitors.push(visitor.clone());
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"visitor": {"name": visitor}, "idempotencyKey": visitor.replace(' ', "-")}))
                    .send()
                    .await;
                // The documented caller policy: 429/503 (not accepted) and 502 (delivered to no
                // target) are retried with the same idempotency key, as is a refused connection.
                let last = match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) if [429, 502, 503].contains(&r.status().as_u16()) => {
                        format!("{}: {}", r.status(), r.text().await.unwrap_or_default())
                    }
                    Ok(r) => panic!("{visitor}: {} {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) if e.is_connect() => e.to_string(),
                    Err(e) => panic!("{visitor}: {e}"),
                };
                eprintln!("{visitor}: retrying after {last}");
                assert!(Instant::now() < deadline, "{visitor} never accepted: {last}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        tokio::select! {
            _ = tokio::time::sleep(VISITOR_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
    for task in tasks {
        task.await.expect("visitor task");
    }
    visitors
}

/// Scenario 6: the controller's container killed, then containerd restarted: the pod restarts,
/// the node stays Ready, the notifier stays Ready, no test notification goes out again.
async fn restarts_change_nothing(lab: &Lab, tenant: &str) {
    let leader_pod = leader(lab).await;
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), &lab.operator_ns);
    let pod = pods.get(&leader_pod).await.expect("leader pod");
    let container = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.container_id)
        .expect("container id");
    let id = container.trim_start_matches("containerd://");
    let killed = Command::new("ctr")
        .arg("--address")
        .arg(lab.cluster.containerd_socket())
        .args(["-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", id])
        .output()
        .expect("ctr");
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    wait_for("the controller container restarted", POD_WAIT, || async {
        let pod = pods.get(&leader_pod).await.map_err(|e| e.to_string())?;
        let status = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        match status.first() {
            Some(c) if c.restart_count >= 1 && c.ready => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    lab.cluster
        .restart_containerd()
        .await
        .expect("containerd restarts");
    rollout(lab, &format!("{RELEASE}-lineworks-operator"));
    rollout(lab, &format!("{RELEASE}-lineworks-operator-relay"));
    // A fresh look after both restarts: the notifier is Ready and sends no test notification.
    lab.kubectl(&[
        "annotate",
        "lineworksnotifier",
        "front-desk",
        "-n",
        tenant,
        "--overwrite",
        &format!(
            "lineworks-operator.dev/reconcile-requested-at={}",
            std::process::id()
        ),
    ]);
    wait_condition(lab, tenant, "front-desk", "Ready", "True").await;
    let url = relay_url(lab, tenant).await;
    let token = lab.caller_token(tenant).await;
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&json!({"visitor": {"name": "After Restart"}}))
        .send()
        .await
        .expect("relay answers");
    assert!(answer.status().is_success(), "{}", answer.status());
    let delivered = lab.delivered().await;
    assert_eq!(messages_for(&delivered, "After Restart"), 2);
    assert_eq!(
        test_notifications(&delivered),
        4,
        "no test notification sent again"
    );
}

/// Scenario 4, last part: `helm uninstall` with notifiers present leaves the CRD, the notifiers
/// (with their finalizer) and their token Secrets, as docs/install.md says; the documented
/// command releases a notifier whose operator is gone.
async fn uninstall_leaves_what_the_docs_say(lab: &Lab, tenant: &str) {
    lab.helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        &lab.operator_ns,
        "--wait",
        "--timeout",
        "180s",
    ]);
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), &lab.operator_ns);
    wait_for("the operator's pods gone", POD_WAIT, || async {
        let n = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;
    lab.kubectl(&["get", "crd", "lineworksnotifiers.lineworks-operator.dev"]);
    let finalizers = lab.kubectl(&[
        "get",
        "lineworksnotifier",
        "front-desk",
        "-n",
        tenant,
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert!(
        finalizers.contains("lineworks-operator.dev/revoke-tokens"),
        "{finalizers}"
    );
    lab.kubectl(&["get", "secret", "front-desk-lineworks-token", "-n", tenant]);
    // The documented release of a notifier whose operator is gone.
    lab.kubectl(&[
        "patch",
        "lineworksnotifier",
        "front-desk",
        "-n",
        tenant,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    lab.kubectl(&[
        "delete",
        "lineworksnotifier",
        "front-desk",
        "-n",
        tenant,
        "--timeout=60s",
    ]);
    // Its Secrets are owned by the notifier: the garbage collector removes them.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(lab.client.clone(), tenant);
    wait_for("owned Secrets collected", POD_WAIT, || async {
        let left = secrets
            .get_opt("front-desk-lineworks-token")
            .await
            .map_err(|e| e.to_string())?;
        if left.is_none() {
            Ok(())
        } else {
            Err("still there".into())
        }
    })
    .await;
}

#[tokio::test]
async fn the_chart_runs_as_pods_on_a_real_node() {
    let lab = lab().await;
    let busybox = repo_script("busybox-image.sh").expect("busybox image built");
    lab.cluster
        .import(&busybox, "localhost/lineworks-operator/busybox")
        .expect("busybox imported");
    let busybox = "localhost/lineworks-operator/busybox:1.35.0";
    let tenant = installs_and_delivers(lab).await;
    let failover = the_leader_hands_over(lab, &tenant).await;
    println!("figure: leader failover (pod deleted -> new holder) {failover:?}");
    the_relay_delivers_as_sidecar_and_as_deployment(lab, &tenant, busybox).await;
    deletion_and_garbage_collection(lab).await;
    let (sent, delivered, repeated) =
        an_upgrade_under_traffic_loses_and_repeats_nothing(lab, &tenant).await;
    println!(
        "figure: upgrade under traffic: sent {sent}, delivered {delivered}, repeated {repeated}"
    );
    restarts_change_nothing(lab, &tenant).await;
    uninstall_leaves_what_the_docs_say(lab, &tenant).await;
}
