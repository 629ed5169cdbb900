//! Refresh Token Rotation ON, short-lived access tokens, and the controller binary SIGKILLed at
//! random moments, at least 200 times and over at least 200 refreshes: the stored refresh token must work after every kill, and no
//! ReauthorizationRequired may come from the operator itself.
//!
//! A kill can land after LINE WORKS rotated the token and before the new one reached the Secret
//! (a lost answer). No client can recover a token it never received; the operator narrows that
//! window to one HTTP answer plus one Secret write, marks it with a claim, and this emulator
//! keeps a rotated token usable for 30 s (a reuse window, as many OAuth services have; whether
//! LINE WORKS has one is unknown). The test counts how often a kill hit that window.

mod support;

use lineworks_operator::api::conditions::{ConditionExt, ConditionStatus, ConditionType, Reason};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::oauth::{Authorizing, secret_value};
use support::wait_for;

const CYCLES: usize = 200;

fn spawn_controller(env: &support::operator::Env, log: &std::fs::File) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args([
            "controller",
            "--allow-host=127.0.0.1",
            "--namespace",
            &env.ns,
            "--lease-namespace",
            &env.ns,
            "--metrics-addr",
            "127.0.0.1:0",
            "--request-timeout-ms",
            "1000",
            "--call-deadline-ms",
            "1000",
            // This test wants as many refreshes as it can get: no floor between them.
            "--renewal-floor-ms",
            "0",
        ])
        .env("KUBECONFIG", env.plane.kubeconfig_path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log.try_clone().expect("log file"))
        .spawn()
        .expect("controller starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sigkills_never_lose_the_refresh_token() {
    let a = Authorizing::new(
        "rotation-kill",
        |w| {
            w.apps[0].refresh_token_rotation = true;
            w.apps[0].refresh_token_reuse_secs = 30;
            w.apps[0].access_token_lifetime_secs = 1;
        },
        Duration::from_secs(600),
    )
    .await;
    a.authorize("front").await;
    // The Standard plan's 240 per minute: the token endpoint's pacing (a burst of 2, then one per
    // quarter second) never holds back a renewal due every 0.75 s.
    a.env
        .patch_spec("front", serde_json::json!({"rateLimitPerMinute": 240}))
        .await;
    let Authorizing {
        env, controller, ..
    } = a;
    controller.stop().await;

    let log = tempfile::NamedTempFile::new().expect("log file");
    let secrets = env.secrets();
    let notifiers = env.notifiers();
    let started = Instant::now();
    let refreshes_before = env.emu.refreshes();
    let mut lost_answers = 0;
    let mut cycle = 0;
    // At least 200 kills and 200 refreshes answered by LINE WORKS.
    while cycle < CYCLES || env.emu.refreshes() - refreshes_before < CYCLES as u64 {
        assert!(
            cycle < 3 * CYCLES,
            "too few refreshes: the controller is not refreshing"
        );
        cycle += 1;
        let mut child = spawn_controller(&env, log.as_file());
        // The random moment of death is what this test is about, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");

        let secret = secrets
            .get("front-lineworks-token")
            .await
            .expect("token Secret");
        let refresh = secret_value(&secret, "refreshToken");
        if env.emu.refresh_token_rotated(&refresh) {
            lost_answers += 1;
        }
        assert!(
            env.emu.refresh_token_works(&refresh),
            "cycle {cycle}: the stored refresh token no longer works"
        );
        let n = notifiers.get("front").await.expect("notifier");
        if let Some(c) = n.condition(ConditionType::Authorized) {
            assert_ne!(
                c.condition_reason(),
                Some(Reason::ReauthorizationRequired),
                "cycle {cycle}: {}",
                c.message
            );
        }
    }
    let refreshes = env.emu.refreshes() - refreshes_before;

    // A last controller, left running, ends Ready with a refresh token that is the newest.
    let mut child = spawn_controller(&env, log.as_file());
    let token_before = secret_value(
        &secrets.get("front-lineworks-token").await.expect("Secret"),
        "refreshToken",
    );
    wait_for(
        "a refresh after the last kill",
        support::operator::WAIT,
        || {
            let secrets = secrets.clone();
            let token_before = token_before.clone();
            async move {
                let s = secrets
                    .get("front-lineworks-token")
                    .await
                    .map_err(|e| e.to_string())?;
                let now = secret_value(&s, "refreshToken");
                if now != token_before {
                    Ok(())
                } else {
                    Err("not refreshed yet".into())
                }
            }
        },
    )
    .await;
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let secret = secrets.get("front-lineworks-token").await.expect("Secret");
    let refresh = secret_value(&secret, "refreshToken");
    assert!(env.emu.refresh_token_works(&refresh));
    eprintln!(
        "{cycle} SIGKILLs in {:.1} s: {refreshes} refreshes answered, {lost_answers} kills landed between LINE WORKS's answer and the Secret write",
        started.elapsed().as_secs_f64()
    );
}
