//! `lineworks-operator demo` (`make demo`): the whole product on a machine with nothing installed.
//! A real local control plane, the LINE WORKS emulator, the controller and a relay; the example
//! notifier is applied, becomes Ready, sends its test notification, and one visitor notification
//! goes through the relay. Then kubectl shows what a platform team would see, and the emulator
//! shows what LINE WORKS received.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};

use crate::api::LineWorksNotifier;
use crate::api::conditions::{ConditionExt, ConditionStatus, ConditionType};
use crate::endpoints::AllowedHosts;
use lineworks_control_plane::{ControlPlane, ControlPlaneError};

pub mod cluster;
use lineworks_emulator::{AppDef, BotDef, ChannelDef, DomainDef, Emulator, UserDef, World};

/// Namespace the demo's objects go to.
const NAMESPACE: &str = "demo";
const CLIENT_ID: &str = "demo-client-id";
const CLIENT_SECRET: &str = "demo-client-secret";
const SERVICE_ACCOUNT: &str = "demo.serviceaccount@testtest";

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error(transparent)]
    Crd(#[from] crate::crd::InstallError),
    #[error("kubectl {args} failed: {detail}")]
    Kubectl { args: String, detail: String },
    #[error("{0}")]
    Step(String),
}

fn step_err(what: &str) -> impl FnOnce(String) -> DemoError + '_ {
    move |e| DemoError::Step(format!("{what}: {e}"))
}

fn repo_file(path: &str) -> Result<String, DemoError> {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full)
        .map_err(|e| DemoError::Step(format!("reading {}: {e}", full.display())))
}

/// The tenant the example notifier expects: domain testtest, users hogehoge and jinji, bot
/// 2000001 added to the domain and invited to both rooms of the example.
fn world() -> Result<World, DemoError> {
    let user = |id: &str, login: &str, admin: bool| UserDef {
        user_id: id.into(),
        login_id: login.into(),
        deleted: false,
        admin,
    };
    let room = |id: &str, title: &str| ChannelDef {
        channel_id: id.into(),
        domain_id: 10_000_001,
        title: title.into(),
        members: vec!["u-hogehoge".into(), "u-jinji".into()],
        bots: vec![2_000_001],
    };
    Ok(World {
        domains: vec![DomainDef {
            domain_id: 10_000_001,
            name: "testtest".into(),
        }],
        users: vec![
            user("u-hogehoge", "hogehoge@testtest", false),
            user("u-jinji", "jinji@testtest", false),
            user("u-admin", "admin@testtest", true),
        ],
        apps: vec![AppDef {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            domain_id: 10_000_001,
            scopes: vec!["bot".into(), "bot.read".into()],
            redirect_uris: vec![],
            service_accounts: vec![SERVICE_ACCOUNT.into()],
            // The test fixtures' throwaway key pair stands in for a Developer Console download.
            public_key_pem: Some(repo_file("tests/fixtures/service-account.pub")?),
            refresh_token_rotation: false,
            refresh_token_reuse_secs: 0,
            access_token_lifetime_secs: 86_400,
            refresh_token_lifetime_secs: 90 * 86_400,
            expires_in_as_string: true,
        }],
        bots: vec![BotDef {
            bot_id: 2_000_001,
            bot_name: "RECEPTIONIST".into(),
            allow_domains: vec![10_000_001],
            domains: vec![10_000_001],
        }],
        channels: vec![
            room("12345a12-b12c-12d3-e123fghijkl", "受付"),
            room("98765b98-c98d-98e7-f987ghijklm", "配達"),
        ],
        ..World::default()
    })
}

/// The example manifests, pointed at the emulator (its API and OAuth base URLs) with the demo
/// app's credentials.
fn example_objects(api_base_url: &str, auth_base_url: &str) -> Result<(Value, Value), DemoError> {
    let text = repo_file("examples/notifier-service-account.yaml")?;
    let mut secret = None;
    let mut notifier = None;
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| DemoError::Step(format!("example YAML: {e}")))?;
        match value["kind"].as_str() {
            Some("Secret") => secret = Some(value),
            Some("LineWorksNotifier") => notifier = Some(value),
            _ => {}
        }
    }
    let (Some(mut secret), Some(mut notifier)) = (secret, notifier) else {
        return Err(DemoError::Step(
            "the example has no Secret or no LineWorksNotifier".into(),
        ));
    };
    secret["stringData"] = json!({
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "serviceAccountId": SERVICE_ACCOUNT,
        "privateKey": repo_file("tests/fixtures/service-account.key")?,
    });
    notifier["spec"]["apiBaseURL"] = json!(api_base_url);
    notifier["spec"]["authBaseURL"] = json!(auth_base_url);
    Ok((secret, notifier))
}

/// Runs the demo; with `wait`, keeps everything running until Ctrl-C.
pub async fn run(wait: bool) -> Result<(), DemoError> {
    let started = std::time::Instant::now();
    // Catch Ctrl-C from the very start: a Ctrl-C before the wait is remembered, so the demo
    // finishes its current step and stops through the same cleanup instead of dying mid-way.
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| DemoError::Step(format!("installing the Ctrl-C handler: {e}")))?;
    step(
        "starting etcd and kube-apiserver on loopback (the first run builds kube-apiserver: several minutes)",
    );
    let plane = ControlPlane::start().await?;
    step(&format!(
        "control plane ready at {} ({:.1} s)",
        plane.server_url(),
        started.elapsed().as_secs_f64()
    ));
    let client = plane.client().await?;
    crate::crd::install(&client, Duration::from_secs(30)).await?;
    step("CRD lineworksnotifiers.lineworks-operator.dev installed and Established");

    let emulator = Emulator::start(world()?, "127.0.0.1:0")
        .await
        .map_err(|e| DemoError::Step(format!("emulator: {e}")))?;
    step(&format!(
        "LINE WORKS emulator at {} (bot 2000001 RECEPTIONIST, domain testtest)",
        emulator.api_base_url()
    ));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| DemoError::Step(format!("namespace {NAMESPACE}: {e}")))?;
    let (stop_controller, mut controller_stopped) = tokio::sync::watch::channel(false);
    // The emulator listens on loopback: allowed here, as an installer would allow a proxy.
    let options = crate::controller::Options {
        namespace: Some(NAMESPACE.into()),
        settings: crate::controller::Settings {
            allowed_hosts: AllowedHosts::loopback(),
            ..Default::default()
        },
        ..Default::default()
    };
    let controller = tokio::spawn(crate::controller::run_with(
        client.clone(),
        options,
        async move {
            let _ = controller_stopped.changed().await;
        },
    ));
    step("controller running (namespace demo)");

    let (secret, notifier) = example_objects(&emulator.api_base_url(), &emulator.auth_base_url())?;
    let apply = PatchParams::apply("lineworks-operator-demo").force();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), NAMESPACE);
    secrets
        .patch("reception-lineworks-app", &apply, &Patch::Apply(&secret))
        .await
        .map_err(|e| DemoError::Step(format!("applying the Secret: {e}")))?;
    let dynamic: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &kube::core::ApiResource::erase::<LineWorksNotifier>(&()),
    );
    dynamic
        .patch("reception", &apply, &Patch::Apply(&notifier))
        .await
        .map_err(|e| DemoError::Step(format!("applying the notifier: {e}")))?;
    step("applied examples/notifier-service-account.yaml (apiBaseURL/authBaseURL → the emulator)");

    let notifiers: Api<LineWorksNotifier> = Api::namespaced(client.clone(), NAMESPACE);
    let condition = |type_: ConditionType| {
        move |n: Option<&LineWorksNotifier>| {
            n.and_then(|n| n.condition(type_))
                .is_some_and(|c| c.is(ConditionStatus::True))
        }
    };
    for type_ in [ConditionType::Ready, ConditionType::TestNotified] {
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(notifiers.clone(), "reception", condition(type_)),
        )
        .await
        .map_err(|_| DemoError::Step(format!("{type_} did not become True within 60 s")))?
        .map_err(|e| DemoError::Step(format!("watching the notifier: {e}")))?;
        step(&format!(
            "{type_}=True ({:.1} s since start)",
            started.elapsed().as_secs_f64()
        ));
    }

    let mut relay_options = crate::relay::RelayOptions::new(([127, 0, 0, 1], 0).into());
    relay_options.notifier = Some((NAMESPACE.into(), "reception".into()));
    // A sidecar on loopback: its pod is the boundary.
    relay_options.auth = crate::relay::CallerAuth::Open;
    relay_options.allowed_hosts = AllowedHosts::loopback();
    let relay = crate::relay::start(client.clone(), relay_options)
        .await
        .map_err(|e| DemoError::Step(format!("relay: {e}")))?;
    let relay_url = format!("http://{}/v1/notifications", relay.addr);
    let visitor = json!({
        "visitor": {"name": "佐藤 花子", "company": "株式会社サンプル", "count": 2, "purpose": "打ち合わせ"},
        "host": "jinji",
        "idempotencyKey": "demo-visit-1",
    });
    step(&format!("POST {relay_url}\n{}", pretty(&visitor)));
    lineworks_client::install_crypto_provider();
    let answer = post_until_ready(&relay_url, &visitor).await?;
    step(&format!("relay answered:\n{}", pretty(&answer)));

    step("kubectl get lineworksnotifiers -o wide");
    kubectl(&plane, &["get", "lwn", "-n", NAMESPACE, "-o", "wide"])?;
    step("kubectl describe lineworksnotifier reception");
    kubectl(&plane, &["describe", "lwn", "reception", "-n", NAMESPACE])?;
    step("what LINE WORKS (the emulator) received:");
    for message in emulator.delivered() {
        eprintln!(
            "  {} {:<32} {}",
            if message.kind == "user" {
                "DM  "
            } else {
                "room"
            },
            message.target,
            message.content["text"]
                .as_str()
                .unwrap_or_default()
                .replace('\n', " / ")
        );
    }
    step(
        "an invalid change is refused at admission with what to fix (defaultUser written as a login ID):",
    );
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
            "running. In another terminal:\n    export KUBECONFIG={}\n    kubectl get lwn -A\n    curl -H 'Content-Type: application/json' -d '{{\"visitor\":{{\"name\":\"test\"}}}}' {relay_url}\nCtrl-C stops everything and removes its files.",
            plane.kubeconfig_path().display()
        ));
        let _ = interrupt.recv().await;
    }
    step("stopping the relay, the controller, the emulator and the control plane");
    relay.shutdown().await;
    let _ = stop_controller.send(true);
    let _ = controller.await;
    drop(emulator);
    plane.stop();
    step(&format!(
        "done in {:.1} s; nothing left running",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Posts once the relay's watches have seen the notifier and its token.
async fn post_until_ready(url: &str, body: &Value) -> Result<Value, DemoError> {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())
            .map_err(step_err("posting to the relay"))?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status != 503 || std::time::Instant::now() > deadline {
            return Ok(answer);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn step(text: &str) {
    eprintln!("==> {text}");
}

/// Runs `kubectl ARGS` against `plane`, its output going to the terminal.
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
