//! The Helm chart: lint and render (for the Kubernetes versions supported), refuse bad values,
//! apply to a real control plane under the restricted Pod Security Standard with no warning, and
//! run the controller exactly as the chart's Deployment does, under the chart's ServiceAccount
//! token, so the RBAC is shown sufficient (cluster and namespaced) and least-privilege.

mod support;

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::operator::{Env, WAIT, good_credentials};
use support::{helm, helm_template as template, kubectl, kubectl_ok, wait_for};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/lineworks-operator");

fn run_helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm()).args(args).output().expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const EVERYTHING: &[&str] = &[
    "replicaCount=2",
    "ingress.enabled=true",
    "networkPolicy.enabled=true",
    "networkPolicy.apiServer.cidrs[0]=10.96.0.1/32",
    "networkPolicy.lineworks.except={10.96.0.0/12,10.244.0.0/16}",
    "relay.enabled=true",
    "relay.namespaces={team-a,team-b}",
    "relay.replicaCount=2",
];

#[test]
fn the_chart_lints_renders_and_refuses_bad_values() {
    let (ok, out, err) = run_helm(&["lint", CHART, "--strict"]);
    assert!(ok, "{out}{err}");
    for version in ["1.30.0", "1.36.3"] {
        for scope in ["cluster", "namespaced"] {
            let mut args = vec![
                "template",
                "lwo",
                CHART,
                "-n",
                "ops",
                "--kube-version",
                version,
                "--set",
            ];
            let scope_set = format!("rbac.scope={scope}");
            args.push(&scope_set);
            for s in EVERYTHING
                .iter()
                .chain(&["serviceMonitor.enabled=true", "prometheusRule.enabled=true"])
            {
                args.extend(["--set", s]);
            }
            let (ok, out, err) = run_helm(&args);
            assert!(ok, "{version} {scope}: {err}");
            for kind in [
                "Deployment",
                "Service",
                "ServiceAccount",
                "Ingress",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "ServiceMonitor",
                "PrometheusRule",
                "Role",
                "RoleBinding",
            ] {
                assert!(
                    out.contains(&format!("kind: {kind}\n")),
                    "{version} {scope}: no {kind}"
                );
            }
            // The relay has a NetworkPolicy, (with two replicas) a PDB and a ServiceMonitor of its
            // own; both ServiceMonitors keep the notifiers' `namespace` label.
            assert_eq!(out.matches("honorLabels: true").count(), 2, "{out}");
            for kind in ["NetworkPolicy", "PodDisruptionBudget", "ServiceMonitor"] {
                assert_eq!(
                    out.matches(&format!("\nkind: {kind}\n")).count(),
                    2,
                    "{version} {scope}: {kind} for controller and relay"
                );
            }
            if scope == "namespaced" {
                // Only the CRD reader is cluster-wide: no cluster-wide Secret access.
                assert_eq!(out.matches("\nkind: ClusterRole\n").count(), 1, "{out}");
            } else {
                // The relay reads Secrets only in the namespaces it serves.
                assert!(
                    !out.contains("name: lwo-lineworks-operator-relay\n  labels"),
                    "{out}"
                );
                for ns in ["team-a", "team-b"] {
                    assert!(
                        out.contains(&format!(
                            "name: lwo-lineworks-operator-relay\n  namespace: {ns}\n"
                        )),
                        "{scope}: a relay Role in {ns}"
                    );
                }
            }
            assert!(!out.contains("--token-file"), "no relay-wide token");
            assert!(
                out.contains("except:") && out.contains("- 10.244.0.0/16"),
                "443 egress leaves the cluster's ranges out"
            );
        }
    }
    // One replica: no PDB (it would block node drains), leader election still on by default.
    let single = template("ops", &[]);
    assert!(!single.contains("kind: PodDisruptionBudget"));
    assert!(single.contains("--leader-elect"));
    for (set, says) in [
        ("rbac.scope=everything", "/rbac/scope"),
        ("replicaCount=0", "/replicaCount"),
        (
            "networkPolicy.enabled=true",
            "/networkPolicy/apiServer/cidrs",
        ),
        ("oauth.callbackPath=callback", "/oauth/callbackPath"),
        ("relay.enabled=true", "relay.namespaces"),
        ("unknownKey=1", "unknownKey"),
        (
            "prometheusRule.notReadyFor=ten",
            "/prometheusRule/notReadyFor",
        ),
        (
            "prometheusRule.refreshTokenDays=90",
            "/prometheusRule/refreshTokenDays",
        ),
    ] {
        let (ok, _, err) = run_helm(&[
            "template",
            "lwo",
            CHART,
            "--kube-version",
            "1.36.3",
            "--set",
            set,
        ]);
        assert!(!ok, "{set} was accepted");
        assert!(err.contains(says), "{set}: {err}");
    }
}

/// Applies `manifest` server-side as the admin; returns stderr.
fn apply(env: &Env, manifest: &str) -> String {
    let mut child = env
        .plane
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=helm-test",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("manifest written");
    let out = child.wait_with_output().expect("kubectl ends");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "apply failed: {stderr}");
    stderr
}

fn restricted(env: &Env) {
    kubectl_ok(
        env.plane,
        &[
            "label",
            "namespace",
            &env.ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
            "pod-security.kubernetes.io/audit=restricted",
        ],
    );
}

#[tokio::test]
async fn the_chart_applies_under_the_restricted_pod_security_standard_without_warnings() {
    let env = Env::new("chart-psa", support::lineworks::world()).await;
    restricted(&env);
    // The check itself works: a pod template without the restricted settings is warned about.
    let careless = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "careless", "namespace": env.ns},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    });
    let warned = apply(&env, &careless.to_string());
    assert!(warned.contains("would violate PodSecurity"), "{warned}");

    let mut sets = EVERYTHING.to_vec();
    sets.push("rbac.scope=namespaced");
    let manifest = template(&env.ns, &sets);
    let (ok, crds, err) = run_helm(&["show", "crds", CHART]);
    assert!(ok, "{err}");
    let stderr = apply(&env, &format!("{crds}\n---\n{manifest}"));
    assert!(!stderr.contains("Warning"), "{stderr}");
    let listed = kubectl_ok(
        env.plane,
        &[
            "get",
            "deploy,svc,sa,role,rolebinding,pdb,netpol,ingress",
            "-n",
            &env.ns,
            "-o",
            "name",
        ],
    );
    for name in [
        "deployment.apps/lwo-lineworks-operator",
        "deployment.apps/lwo-lineworks-operator-relay",
        "service/lwo-lineworks-operator",
        "poddisruptionbudget.policy/lwo-lineworks-operator",
        "networkpolicy.networking.k8s.io/lwo-lineworks-operator",
        "ingress.networking.k8s.io/lwo-lineworks-operator",
    ] {
        assert!(listed.contains(name), "{name} missing: {listed}");
    }
}

/// The chart's controller args, with the HTTP port moved to a free one.
fn controller_args(manifest: &str, http: &str) -> Vec<String> {
    let deployment = serde_yaml_ng::Deserializer::from_str(manifest)
        .filter_map(|d| serde_yaml_ng::Value::deserialize(d).ok())
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "lwo-lineworks-operator")
        .expect("the controller Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr={http}")
            } else {
                a.to_string()
            }
        })
        .collect()
}

use serde::Deserialize;

/// A kubeconfig for the chart's ServiceAccount (a TokenRequest token), next to the admin one.
fn service_account_kubeconfig(env: &Env, namespace: &str, sa: &str, dir: &Path) -> PathBuf {
    let token = kubectl_ok(
        env.plane,
        &["create", "token", sa, "-n", namespace, "--duration=1h"],
    );
    let path = dir.join("sa.kubeconfig");
    std::fs::copy(env.plane.kubeconfig_path(), &path).expect("kubeconfig copied");
    let path_str = path.to_string_lossy().into_owned();
    kubectl_ok(
        env.plane,
        &[
            "--kubeconfig",
            &path_str,
            "config",
            "set-credentials",
            "chart-sa",
            &format!("--token={}", token.trim()),
        ],
    );
    kubectl_ok(
        env.plane,
        &[
            "--kubeconfig",
            &path_str,
            "config",
            "set-context",
            "--current",
            "--user=chart-sa",
        ],
    );
    path
}

async fn controller_under_the_charts_account(scope: &str) {
    let env = Env::new(&format!("chart-{scope}"), support::lineworks::world()).await;
    // Cluster scope: the notifier lives in another namespace than the release.
    let notifier_ns = if scope == "cluster" {
        env.plane
            .create_namespace(&env.client, "chart-tenant")
            .await
            .expect("namespace")
    } else {
        env.ns.clone()
    };
    // The emulator is on loopback: the installer allows it, as they would a proxy.
    let manifest = template(
        &env.ns,
        &[
            &format!("rbac.scope={scope}"),
            "allowedHosts={127.0.0.1}",
            "relay.enabled=true",
            &format!("relay.namespaces={{{notifier_ns}}}"),
        ],
    );
    apply(&env, &manifest);
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig =
        service_account_kubeconfig(&env, &env.ns, "lwo-lineworks-operator", dir.path());
    let sa = format!("system:serviceaccount:{}:lwo-lineworks-operator", env.ns);

    // Least privilege, checked by the API server's own authorizer.
    let can = |verb: &str, what: &str, ns: &str| {
        let out = kubectl(
            env.plane,
            &["auth", "can-i", verb, what, "-n", ns, "--as", &sa],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("get", "secrets", &notifier_ns));
    assert!(
        !can("get", "pods", &notifier_ns),
        "no access beyond what it uses"
    );
    assert!(!can("delete", "lineworksnotifiers", &notifier_ns));
    if scope == "namespaced" {
        assert!(
            !can("get", "secrets", "default"),
            "Secrets outside the watched namespace"
        );
        assert!(!can("list", "lineworksnotifiers", "default"));
    }

    let port = support::oauth::free_addr();
    let mut args = controller_args(&manifest, &port.to_string());
    // The production renewal floor (a minute) would hold the relay's refresh request below
    // past its wait.
    args.push("--renewal-floor-ms=1000".into());
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", &env.ns)
        .env("POD_NAME", "lwo-test-pod")
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("controller starts");

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app", "namespace": notifier_ns, "annotations": {"lineworks-operator.dev/allowed-notifiers": "front"}}, "stringData": good_credentials()});
    apply(&env, &secret.to_string());
    let notifier = json!({
        "apiVersion": "lineworks-operator.dev/v1alpha1", "kind": "LineWorksNotifier",
        "metadata": {"name": "front", "namespace": notifier_ns},
        "spec": {
            "botId": support::lineworks::BOT, "domain": support::lineworks::DOMAIN,
            "defaultUser": "hogehoge", "roomId": support::lineworks::ROOM,
            "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "app"}},
            "apiBaseURL": env.emu.api_base_url(), "authBaseURL": env.emu.auth_base_url(),
            "testNotification": {"id": "chart-1"},
        }
    });
    apply(&env, &notifier.to_string());
    let notifiers: kube::Api<lineworks_operator::api::LineWorksNotifier> =
        kube::Api::namespaced(env.client.clone(), &notifier_ns);
    wait_for(
        "Ready under the chart's ServiceAccount",
        Duration::from_secs(60),
        || {
            let notifiers = notifiers.clone();
            let log = log.path().to_path_buf();
            async move {
                let n = notifiers.get("front").await.map_err(|e| e.to_string())?;
                match n.condition_is(ConditionType::Ready, ConditionStatus::True) {
                    true => Ok(()),
                    false => Err(format!(
                        "{:?}\n{}",
                        n.status.map(|s| s.conditions),
                        std::fs::read_to_string(log).unwrap_or_default()
                    )),
                }
            }
        },
    )
    .await;
    // What the chart's Role covers in the release namespace: the Lease and the state key.
    kubectl_ok(
        env.plane,
        &[
            "get",
            "lease",
            "lwo-lineworks-operator-leader",
            "-n",
            &env.ns,
        ],
    );
    kubectl_ok(
        env.plane,
        &[
            "get",
            "secret",
            "lineworks-operator-oauth-state",
            "-n",
            &env.ns,
        ],
    );
    let events = kubectl_ok(
        env.plane,
        &["get", "events", "-n", &notifier_ns, "-o", "name"],
    );
    assert!(
        !events.trim().is_empty(),
        "the controller could publish events"
    );
    relay_under_the_charts_account(&env, &manifest, &notifier_ns, scope).await;
    let logs = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(!logs.contains("forbidden"), "{logs}");
    child.kill().await.expect("stopped");
    let _ = child.wait().await;
    let _ = WAIT;
}

/// The chart's relay Deployment, run as a process under its ServiceAccount: it can change no
/// notifier and read no Secret outside the namespaces it serves, yet delivers with the
/// notifier's caller token and gets a rejected token renewed (through an Event).
async fn relay_under_the_charts_account(env: &Env, manifest: &str, notifier_ns: &str, scope: &str) {
    let sa = format!(
        "system:serviceaccount:{}:lwo-lineworks-operator-relay",
        env.ns
    );
    let can = |verb: &str, what: &str, ns: Option<&str>| {
        let mut args = vec!["auth", "can-i", verb, what, "--as", &sa];
        match ns {
            Some(ns) => args.extend(["-n", ns]),
            None => args.push("--all-namespaces"),
        }
        let out = kubectl(env.plane, &args);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("list", "secrets", Some(notifier_ns)));
    assert!(can("create", "events", Some(notifier_ns)));
    assert!(!can("patch", "lineworksnotifiers", Some(notifier_ns)));
    assert!(!can("update", "lineworksnotifiers", Some(notifier_ns)));
    assert!(!can("create", "secrets", Some(notifier_ns)));
    assert!(!can("list", "secrets", None), "no cluster-wide Secret read");
    assert!(!can("get", "secrets", Some("default")));
    if scope == "cluster" {
        assert!(
            !can("get", "secrets", Some(&env.ns)),
            "nothing in a namespace it does not serve"
        );
    }

    let deployment = serde_yaml_ng::Deserializer::from_str(manifest)
        .filter_map(|d| serde_yaml_ng::Value::deserialize(d).ok())
        .find(|d| {
            d["kind"] == "Deployment" && d["metadata"]["name"] == "lwo-lineworks-operator-relay"
        })
        .expect("the relay Deployment");
    let listen = support::oauth::free_addr();
    let probe = support::oauth::free_addr();
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .map(|a| {
            if a.starts_with("--listen=") {
                format!("--listen={listen}")
            } else if a.starts_with("--probe-addr=") {
                format!("--probe-addr={probe}")
            } else {
                a.to_string()
            }
        })
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig =
        service_account_kubeconfig(env, &env.ns, "lwo-lineworks-operator-relay", dir.path());
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("relay starts");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), notifier_ns);
    let caller = wait_for("the caller token Secret", WAIT, || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("front-relay-caller")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_string())
        }
    })
    .await;
    let caller = support::oauth::secret_value(&caller, "token");
    let url = format!("http://{listen}/v1/notifiers/{notifier_ns}/front/notifications");
    let post = |n: u32| {
        let (url, caller) = (url.clone(), caller.clone());
        async move {
            let r = reqwest::Client::new()
                .post(&url)
                .bearer_auth(caller)
                .json(&json!({"visitor": {"name": format!("v{n}")}}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            if status == 200 {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        }
    };
    wait_for("the chart's relay to deliver", WAIT, || post(1)).await;
    // Every token dies early: the relay's refresh request (an Event) reaches the controller.
    env.emu.expire_access_tokens();
    let answer = post(2).await.unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        )
    });
    assert_eq!(answer["outcome"], "delivered", "{answer}");
    let events = kubectl_ok(
        env.plane,
        &[
            "get",
            "events",
            "-n",
            notifier_ns,
            "--field-selector=reason=AccessTokenRejected",
            "-o",
            "name",
        ],
    );
    assert!(
        !events.trim().is_empty(),
        "the relay asked through an Event"
    );
    let logs = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(!logs.contains("forbidden"), "{logs}");
    relay.kill().await.expect("stopped");
    let _ = relay.wait().await;
}

/// One after the other: a cluster-scoped controller would also pick up the namespaced test's
/// notifier.
#[tokio::test]
async fn the_controller_runs_under_the_charts_cluster_and_namespaced_rbac() {
    controller_under_the_charts_account("cluster").await;
    controller_under_the_charts_account("namespaced").await;
}

/// examples/relay-sidecar.yaml: its Role names exactly the notifier and its token Secret, and a
/// relay running under that ServiceAccount delivers.
#[tokio::test]
async fn the_documented_relay_sidecar_delivers_under_its_narrow_role() {
    let env = Env::new("sidecar", support::lineworks::world()).await;
    env.apply_good_secret().await;
    let controller = env.start_controller(None);
    env.apply_notifier("front-desk", json!({})).await;
    env.wait_condition(
        "front-desk",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/relay-sidecar.yaml"
    ))
    .expect("example");
    let rbac: Vec<String> = example
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: Deployment"))
        .map(|doc| doc.to_string())
        .collect();
    let mut child = env
        .plane
        .kubectl()
        .args(["apply", "-n", &env.ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rbac.join("\n---\n").as_bytes())
        .expect("written");
    assert!(child.wait().expect("kubectl ends").success());
    let sa = format!("system:serviceaccount:{}:reception", env.ns);
    let out = kubectl(
        env.plane,
        &[
            "auth", "can-i", "list", "secrets", "-n", &env.ns, "--as", &sa,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no",
        "only its token Secret"
    );

    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = service_account_kubeconfig(&env, &env.ns, "reception", dir.path());
    let addr = support::oauth::free_addr();
    let _relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args([
            "relay",
            "--allow-host=127.0.0.1",
            &format!("--listen={addr}"),
            &format!("--notifier={}/front-desk", env.ns),
            &format!("--namespace={}", env.ns),
            "--no-auth",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("relay starts");
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/notifications");
    let answer = wait_for("the sidecar relay to deliver", WAIT, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(&url)
                .json(&json!({"visitor": {"name": "佐藤"}, "host": "jinji", "idempotencyKey": "sidecar-1"}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            if status == 200 { Ok(body) } else { Err(format!("{status} {body}")) }
        }
    })
    .await;
    assert_eq!(answer["outcome"], "delivered", "{answer}");
    assert_eq!(env.emu.delivered().len(), 2, "DM and room");
    controller.stop().await;
}
