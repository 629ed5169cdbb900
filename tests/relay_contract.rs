//! The relay keeps the contract its committed OpenAPI document states, checked by schemathesis
//! (`--checks all`) against a running relay with a real control plane, controller and emulator:
//! generated and mutated requests, every answer checked for a documented status, content type
//! and schema, and invalid input refused.

mod support;

use std::time::Duration;

use lineworks_client::SecretString;
use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use lineworks_operator::relay::{self, RelayOptions};
use serde_json::json;
use support::lineworks::world;
use support::operator::Env;

const TOKEN: &str = "relay-token-for-schemathesis";

/// Path of schemathesis's `st`, installed (once) by the project's script.
fn schemathesis() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/schemathesis.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/schemathesis.sh runs");
    assert!(out.status.success(), "scripts/schemathesis.sh failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_relay_keeps_its_openapi_contract() {
    let st = schemathesis();
    let env = Env::new("relay-contract", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("front", json!({"rateLimitPerMinute": 240}))
        .await;
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let mut options = RelayOptions::new("127.0.0.1:0".parse().expect("addr"));
    options.allowed_hosts = lineworks_operator::endpoints::AllowedHosts::loopback();
    options.notifier = Some((env.ns.clone(), "front".into()));
    options.auth = relay::CallerAuth::RelayToken(SecretString::from(TOKEN));
    options.deadline = Duration::from_secs(3);
    options.request_timeout = Duration::from_secs(2);
    let relay = relay::start(env.client.clone(), options)
        .await
        .expect("relay starts");
    let base = format!("http://{}", relay.addr);
    support::wait_for(
        "the relay to see the notifier",
        support::operator::WAIT,
        || async {
            let r = reqwest::Client::new()
                .get(format!("{base}/v1/notifier"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            if body["ready"] == true {
                Ok(())
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/relay-openapi.json");
    let scratch = tempfile::tempdir().expect("scratch directory");
    let out = tokio::process::Command::new(&st)
        .args([
            "run",
            spec,
            "--url",
            &base,
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--checks",
            "all",
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--seed",
            "20261127",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // schemathesis keeps a cache in its working directory: not in the repository.
        .current_dir(scratch.path())
        .output()
        .await
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    relay.shutdown().await;
    controller.stop().await;
    assert!(
        out.status.success(),
        "schemathesis found contract violations:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
}
