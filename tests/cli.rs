//! The terminal helpers (`authorize`, `status`, `test-notify`, `recheck`) as a person runs them: the
//! binary, a kubeconfig, a real control plane, a controller and the emulator.

mod support;

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use std::process::Stdio;
use std::time::Duration;

use support::oauth::{self, Authorizing};
use support::operator::{Env, WAIT};
use support::wait_for;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn command(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lineworks-operator"));
    c.args(args)
        .env("KUBECONFIG", env.plane.kubeconfig_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs a command to the end: success, stdout, stderr.
async fn run(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = command(env, args).output().await.expect("the command runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads stdout until a line holds an http URL; returns it.
async fn url_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            if let Some(url) = line.trim().strip_prefix("http") {
                return format!("http{url}");
            }
        }
        panic!("the command printed no URL");
    })
    .await
    .expect("a URL within the wait")
}

async fn finish(mut child: Child, mut lines: Lines<BufReader<ChildStdout>>) -> (bool, String) {
    let mut out = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        out.push_str(&line);
        out.push('\n');
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the command ends")
        .expect("exit status");
    (status.success(), out)
}

#[tokio::test]
async fn authorize_with_a_local_callback_stores_tokens_without_reaching_the_cluster() {
    let local = oauth::free_addr();
    let local_redirect = format!("http://{local}/oauth/callback");
    let redirect = local_redirect.clone();
    let a = Authorizing::new(
        "cli-authorize-local",
        move |w| w.apps[0].redirect_uris.push(redirect),
        Duration::from_secs(600),
    )
    .await;
    a.apply_user_account_notifier("front").await;
    a.authorization_url("front", Reason::AuthorizationRequired)
        .await;

    let mut child = command(
        &a.env,
        &[
            "authorize",
            "front",
            "-n",
            &a.env.ns,
            "--allow-host=127.0.0.1",
            "--listen",
            &local.to_string(),
            "--timeout-secs",
            "60",
        ],
    )
    .spawn()
    .expect("authorize starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = url_line(&mut lines).await;
    assert!(url.contains("redirect_uri=http%3A%2F%2F127.0.0.1"), "{url}");

    let callback = oauth::consent(&url).await;
    assert!(callback.starts_with(&local_redirect), "{callback}");
    // A callback with another state is refused and the command keeps waiting for the real one.
    let (status, page) = oauth::visit(&oauth::with_state(&callback, "forged")).await;
    assert_eq!(status, 400, "{page}");
    let (status, page) = oauth::visit(&callback).await;
    assert_eq!(status, 200, "{page}");
    let (ok, out) = finish(child, lines).await;
    assert!(ok, "{out}");
    assert!(out.contains("Tokens stored"), "{out}");
    assert!(out.contains("✓ Authorized"), "{out}");
    a.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    a.stop().await;
}

#[tokio::test]
async fn authorize_prints_the_controllers_link_and_waits_for_it() {
    let a = Authorizing::new("cli-authorize", |_| {}, Duration::from_secs(600)).await;
    a.apply_user_account_notifier("front").await;
    let offered = a
        .authorization_url("front", Reason::AuthorizationRequired)
        .await;
    let mut child = command(
        &a.env,
        &[
            "authorize",
            &format!("{}/front", a.env.ns),
            "--timeout-secs",
            "60",
        ],
    )
    .spawn()
    .expect("authorize starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = url_line(&mut lines).await;
    assert_eq!(url, offered);
    let (status, _) = oauth::visit(&oauth::consent(&url).await).await;
    assert_eq!(status, 200);
    let (ok, out) = finish(child, lines).await;
    assert!(ok, "{out}");
    assert!(out.contains("✓ Authorized"), "{out}");
    a.stop().await;
}

/// The bot is removed from the domain in the admin screen while the notifier is Ready: a pass is
/// trusted until the next token renewal (about daily), so only `recheck` notices at once. Once the
/// bot is added back, the notifier recovers by itself (it is re-checked with backoff while not
/// Ready) and `recheck` says Ready. Each run waits until the controller acted on its own request.
#[tokio::test]
async fn recheck_runs_the_bot_checks_at_once() {
    let env = Env::new("cli-recheck", support::lineworks::world()).await;
    let _controller = env.start_controller(None);
    env.apply_ready_notifier("front", serde_json::json!({}))
        .await;
    let bot_reads = env.emu.requests("get_bot");
    let (ok, text, err) = run(&env, &["recheck", "front", "-n", &env.ns]).await;
    assert!(ok, "{text}{err}");
    assert!(text.contains("✓ Ready"), "{text}");
    assert!(
        env.emu.requests("get_bot") > bot_reads,
        "a recheck asks LINE WORKS again"
    );

    let mut removed = Vec::new();
    env.emu.update_world(|world| {
        for bot in &mut world.bots {
            removed.append(&mut bot.domains);
        }
    });
    assert!(!removed.is_empty(), "the bot was in a domain");
    let (ok, text, _) = run(&env, &["recheck", "front", "-n", &env.ns]).await;
    assert!(!ok, "the bot is not in the domain: {text}");
    assert!(text.contains("BotNotInDomain"), "{text}");

    env.emu.update_world(|world| {
        for bot in &mut world.bots {
            bot.domains.extend(removed.iter().cloned());
        }
    });
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let (ok, text, err) = run(&env, &["recheck", "front", "-n", &env.ns]).await;
    assert!(ok, "{text}{err}");
}

#[tokio::test]
async fn status_and_test_notify_answer_like_the_console() {
    let env = Env::new("cli-status", support::lineworks::world()).await;
    let controller = env.start_controller(None);
    env.apply_ready_notifier("front", serde_json::json!({}))
        .await;

    let (ok, text, _) = run(&env, &["status", "front", "-n", &env.ns]).await;
    assert!(ok, "{text}");
    assert!(text.contains("✓ Ready"), "{text}");

    let (ok, text, err) = run(&env, &["test-notify", &format!("{}/front", env.ns)]).await;
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("✓ user hogehoge@testtest: delivered"),
        "{text}"
    );
    assert!(text.contains("✓ room"), "{text}");
    wait_for("the test message at the emulator", WAIT, || async {
        let n = env.emu.delivered().len();
        if n == 2 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;

    // The same, as a kubectl plugin: `kubectl lineworks …` finds kubectl-lineworks on PATH.
    let plugins = tempfile::tempdir().expect("plugin dir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_lineworks-operator"),
        plugins.path().join("kubectl-lineworks"),
    )
    .expect("symlink");
    let path = format!(
        "{}:{}",
        plugins.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env.plane.kubectl_path())
        .args(["lineworks", "status", "front", "-n", &env.ns])
        .env("KUBECONFIG", env.plane.kubeconfig_path())
        .env("PATH", path)
        .output()
        .await
        .expect("kubectl lineworks runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("✓ Ready"), "{text}");

    // A broken notifier: status exits non-zero and prints the fix.
    env.patch_spec(
        "front",
        serde_json::json!({"roomId": support::lineworks::ROOM_WITHOUT_BOT}),
    )
    .await;
    env.wait_condition(
        "front",
        ConditionType::BotInService,
        ConditionStatus::False,
        Reason::BotNotInRoom,
    )
    .await;
    let (ok, text, _) = run(&env, &["status", "front", "-n", &env.ns]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("✗ BotInService"), "{text}");
    assert!(text.contains("BotNotInRoom"), "{text}");
    let (ok, _, err) = run(&env, &["status", "missing", "-n", &env.ns]).await;
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");

    // Fixed, but the controller is gone: a Ready condition about the old spec proves nothing.
    env.patch_spec(
        "front",
        serde_json::json!({"roomId": support::lineworks::ROOM}),
    )
    .await;
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    controller.stop().await;
    env.patch_spec(
        "front",
        serde_json::json!({"roomId": support::lineworks::ROOM_WITHOUT_BOT}),
    )
    .await;
    let (ok, _, err) = run(&env, &["status", "front", "-n", &env.ns]).await;
    assert!(!ok, "a stale Ready is not Ready");
    assert!(err.contains("has not reconciled generation"), "{err}");
}

/// `--extra-ca-file` with a missing file, or one without a certificate, stops the controller and
/// the relay at start-up with the file's path; nothing starts half-trusting.
#[test]
fn a_bad_extra_ca_bundle_stops_start_up_with_its_path() {
    let dir = tempfile::tempdir().expect("dir");
    let not_pem = dir.path().join("not-a-bundle.crt");
    std::fs::write(&not_pem, "this is not a certificate\n").expect("file");
    let missing = dir.path().join("missing.crt");
    for file in [&not_pem, &missing] {
        for args in [
            vec!["controller", "--metrics-addr", "127.0.0.1:0"],
            vec![
                "relay",
                "--listen",
                "127.0.0.1:0",
                "--notifier",
                "ns/n",
                "--no-auth",
            ],
        ] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
                .args(&args)
                .arg("--extra-ca-file")
                .arg(file)
                // Fails before any cluster is contacted.
                .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&*file.display().to_string()) && stderr.contains("CA bundle"),
                "{args:?}: {stderr}"
            );
        }
    }
}
