//! GitOps tools read a notifier's health right: kstatus (Flux's `wait: true`, Kustomize), Argo
//! CD's Lua health check and Flux's CEL `healthCheckExprs`, each evaluated by the real library
//! (tools/health: sigs.k8s.io/cli-utils, gopher-lua with gopher-json, cel-go) on live objects in
//! every state, with the Lua script and the CEL expressions exactly as docs/gitops.md shows them.

mod support;

use lineworks_emulator::Fault;
use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use serde_json::{Value, json};
use support::operator::{Env, good_credentials};

/// The Argo CD script and the three Flux expressions from docs/gitops.md, written to files.
fn health_inputs(dir: &std::path::Path) -> Vec<String> {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gitops.md"),
    )
    .expect("docs/gitops.md");
    let blocks: Vec<Value> = page
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .flat_map(|b| {
            b.split("\n---\n")
                .filter_map(|d| serde_yaml_ng::from_str::<Value>(d).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let lua = blocks
        .iter()
        .find_map(|b| {
            b["data"]["resource.customizations.health.lineworks-operator.dev_LineWorksNotifier"]
                .as_str()
        })
        .expect("the Argo CD health check in docs/gitops.md");
    let exprs = blocks
        .iter()
        .find_map(|b| b["spec"]["healthCheckExprs"].as_array())
        .and_then(|e| e.iter().find(|x| x["kind"] == "LineWorksNotifier"))
        .expect("Flux healthCheckExprs for LineWorksNotifier in docs/gitops.md");
    let mut args = Vec::new();
    for (flag, file, text) in [
        ("-lua", "health.lua", lua),
        (
            "-cel-current",
            "current.cel",
            exprs["current"].as_str().expect("current"),
        ),
        (
            "-cel-in-progress",
            "in-progress.cel",
            exprs["inProgress"].as_str().expect("inProgress"),
        ),
        (
            "-cel-failed",
            "failed.cel",
            exprs["failed"].as_str().expect("failed"),
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write");
        args.push(flag.to_string());
        args.push(path.display().to_string());
    }
    args
}

/// What each tool says of each object: (kstatus, argo, flux) and the messages.
fn evaluate(args: &[String], objects: &[Value]) -> Vec<Value> {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let input: String = objects.iter().map(|o| format!("{o}\n")).collect();
    support::go_tool_json_lines("health", &args, &input)
}

async fn object(env: &Env, name: &str) -> Value {
    serde_json::to_value(env.notifiers().get(name).await.expect("notifier")).expect("json")
}

#[tokio::test]
async fn kstatus_argo_and_flux_read_every_state_right() {
    let env = Env::new("gitops-health", support::lineworks::world()).await;
    env.apply_secret("app", good_credentials()).await;
    let mut wrong = good_credentials();
    wrong["clientSecret"] = json!("not-the-secret");
    env.apply_secret("wrong", wrong).await;
    // Before any controller has looked: the API server's status default makes it not Current.
    env.apply_notifier("fresh", json!({})).await;
    let fresh = object(&env, "fresh").await;

    let controller = env.start_controller(None);
    env.wait_condition(
        "fresh",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let ready = object(&env, "fresh").await;

    env.apply_notifier(
        "broken",
        json!({"auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "wrong"}}}),
    )
    .await;
    env.wait_condition(
        "broken",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::InvalidClientCredentials,
    )
    .await;
    let broken = object(&env, "broken").await;

    env.apply_notifier("paused", json!({"suspend": true})).await;
    env.wait_condition(
        "paused",
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::Suspended,
    )
    .await;
    let paused = object(&env, "paused").await;

    // LINE WORKS's token endpoint down for a notifier that has no token yet: retried, not stuck.
    env.emu.add_fault(Fault {
        api: "token".into(),
        status: Some(503),
        ..Default::default()
    });
    env.apply_notifier("waiting", json!({})).await;
    env.wait_condition(
        "waiting",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::TokenEndpointUnavailable,
    )
    .await;
    let waiting = object(&env, "waiting").await;
    env.emu.clear_faults();

    // A spec change the controller has not seen yet (it is stopped).
    controller.stop().await;
    env.patch_spec("fresh", json!({"rateLimitPerMinute": 240}))
        .await;
    let unseen = object(&env, "fresh").await;

    let dir = tempfile::tempdir().expect("dir");
    let args = health_inputs(dir.path());
    let states = [
        ("fresh", &fresh, "InProgress", "Progressing", "InProgress"),
        ("ready", &ready, "Current", "Healthy", "Current"),
        ("broken", &broken, "Failed", "Degraded", "Failed"),
        ("suspended", &paused, "Failed", "Suspended", "Failed"),
        (
            "LINE WORKS down",
            &waiting,
            "InProgress",
            "Progressing",
            "InProgress",
        ),
        (
            "unseen spec",
            &unseen,
            "InProgress",
            "Progressing",
            "InProgress",
        ),
    ];
    let objects: Vec<Value> = states.iter().map(|s| s.1.clone()).collect();
    let verdicts = evaluate(&args, &objects);
    for ((what, _, kstatus, argo, flux), v) in states.iter().zip(&verdicts) {
        eprintln!("{what}: {v}");
        assert_eq!(v["kstatus"], *kstatus, "kstatus, {what}: {v}");
        assert_eq!(v["argo"], *argo, "Argo CD, {what}: {v}");
        assert_eq!(v["flux"], *flux, "Flux CEL, {what}: {v}");
    }
    // A person learns the cause from each tool's message.
    assert!(
        verdicts[2]["kstatusMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("InvalidClientCredentials"),
        "{}",
        verdicts[2]
    );
    assert!(
        verdicts[2]["argoMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("InvalidClientCredentials"),
        "{}",
        verdicts[2]
    );
}
