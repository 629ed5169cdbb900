//! A real Alertmanager (built from its Go module, scripts/alertmanager-binaries.sh) sends its
//! webhook to the relay, with the controller, a real control plane and the emulator: one
//! Japanese message per alert group, firing and resolved, none twice across Alertmanager's
//! retries and repeats. And the docs' example Alertmanager configuration passes
//! `amtool check-config`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lineworks_client::SecretString;
use lineworks_emulator::Fault;
use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use lineworks_operator::endpoints::AllowedHosts;
use lineworks_operator::relay::{self, RelayHandle, RelayOptions};
use serde_json::json;
use support::lineworks::{ROOM, world};
use support::operator::{Env, Running, WAIT};

const TOKEN: &str = "relay-token-for-alertmanager";

/// The directory with `alertmanager` and `amtool` (LINEWORKS_ALERTMANAGER_DIR from `make test`,
/// else built once by the script).
fn binaries() -> PathBuf {
    support::built_tool("LINEWORKS_ALERTMANAGER_DIR", "alertmanager-binaries.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// An Alertmanager process, killed when dropped.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    fn start(bin: &Path, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("alertmanager.yml");
        std::fs::write(&file, config).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log");
        let child = Command::new(bin.join("alertmanager"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.external-url=http://127.0.0.1:{port}"))
            // One instance: no gossip port.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("alertmanager starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// The sum of a counter of Alertmanager's metrics for the webhook integration.
    async fn webhook_counter(&self, http: &reqwest::Client, name: &str) -> f64 {
        let Ok(answer) = http.get(format!("{}/metrics", self.url)).send().await else {
            return 0.0;
        };
        answer
            .text()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("integration=\"webhook\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// `amtool` with `args`; asserts it succeeds.
fn amtool(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin.join("amtool"))
        .args(args)
        .output()
        .expect("amtool runs");
    assert!(
        out.status.success(),
        "amtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `amtool alert add` of HighLatency on web-1 and web-2, with `end` (a past end resolves them).
fn add_alerts(bin: &Path, am_url: &str, end: Option<&str>) {
    for instance in ["web-1", "web-2"] {
        let instance = format!("instance={instance}");
        let mut args = vec![
            "alert",
            "add",
            "alertname=HighLatency",
            "severity=critical",
            &instance,
            "--annotation=summary=p99 が 2 秒を超えています",
            am_url,
        ];
        args.extend(end);
        amtool(bin, &args);
    }
}

/// Texts of the room messages the emulator accepted that start with `prefix`.
fn room_messages(env: &Env, prefix: &str) -> Vec<String> {
    env.emu
        .delivered()
        .into_iter()
        .filter(|d| d.kind == "channel")
        .filter_map(|d| d.content["text"].as_str().map(str::to_string))
        .filter(|t| t.starts_with(prefix))
        .collect()
}

/// The controller and a sidecar relay for notifier "front" (Ready) with `spec`.
async fn start(prefix: &str, spec: serde_json::Value) -> (Env, Running, RelayHandle, String) {
    let env = Env::new(prefix, world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("front", spec).await;
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let mut options = RelayOptions::new("127.0.0.1:0".parse().expect("addr"));
    options.allowed_hosts = AllowedHosts::loopback();
    options.namespaces = vec![env.ns.clone()];
    options.notifier = Some((env.ns.clone(), "front".into()));
    options.auth = relay::CallerAuth::RelayToken(SecretString::from(TOKEN));
    options.deadline = Duration::from_secs(2);
    options.request_timeout = Duration::from_secs(1);
    let relay = relay::start(env.client.clone(), options)
        .await
        .expect("relay starts");
    let relay_url = format!("http://{}", relay.addr);
    let http = reqwest::Client::new();
    support::wait_for("the relay sees the Ready notifier", WAIT, || async {
        let body: serde_json::Value = http
            .get(format!("{relay_url}/v1/notifier"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["ready"] == true {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
    (env, controller, relay, relay_url)
}

#[tokio::test]
async fn alertmanager_groups_reach_the_room_once_each_in_japanese() {
    let bin = binaries();
    let (env, controller, relay, relay_url) =
        start("alertmanager", json!({"rateLimitPerMinute": 240})).await;
    let http = reqwest::Client::new();

    // LINE WORKS answers 503 to room messages until Alertmanager has been refused once: the
    // relay retries within its deadline, then answers 503, and Alertmanager retries.
    env.emu.add_fault(Fault {
        api: "send_channel_message".into(),
        status: Some(503),
        body: Some(json!({"code": "SERVICE_UNAVAILABLE", "description": "try again"})),
        ..Default::default()
    });
    // Repeats every 2 s: each would be a duplicate message but for the relay's de-duplication.
    let config = format!(
        r#"route:
  receiver: lineworks
  group_by: [alertname]
  group_wait: 2s
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: lineworks
    webhook_configs:
      - url: {relay_url}/v1/alertmanager
        send_resolved: true
        max_alerts: 20
        http_config:
          authorization:
            credentials: {TOKEN}
"#
    );
    let am = Alertmanager::start(&bin, &config);
    let am_url = format!("--alertmanager.url={}", am.url);
    support::wait_for("Alertmanager answers", WAIT, || async {
        match http.get(format!("{}/-/ready", am.url)).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(format!("{e}; log: {}", am.log())),
        }
    })
    .await;

    // Two alerts of one group, added within its group_wait.
    add_alerts(&bin, &am_url, None);
    support::wait_for("Alertmanager refused once", WAIT, || async {
        let failed = am
            .webhook_counter(&http, "alertmanager_notifications_failed_total")
            .await;
        if failed >= 1.0 {
            Ok(())
        } else {
            Err(format!("{failed} failed; log: {}", am.log()))
        }
    })
    .await;
    assert!(room_messages(&env, "").is_empty(), "nothing delivered yet");
    env.emu.clear_faults();
    let firing = support::wait_for("one firing message in the room", WAIT, || async {
        let firing = room_messages(&env, "【アラート発生】");
        if firing.is_empty() {
            Err(format!(
                "none yet; delivered: {:?}",
                env.emu.delivered().len()
            ))
        } else {
            Ok(firing)
        }
    })
    .await;
    let lines: Vec<&str> = firing[0].lines().collect();
    assert_eq!(
        lines[0], "【アラート発生】HighLatency（critical） 発生中 2 件",
        "{firing:?}"
    );
    for instance in ["web-1", "web-2"] {
        let line = format!("・[発生] HighLatency {instance}: p99 が 2 秒を超えています");
        assert!(lines.contains(&line.as_str()), "{firing:?}");
    }
    assert_eq!(lines.last().copied(), Some(am.url.as_str()), "{firing:?}");
    // Alertmanager goes on repeating the group (every 2 s): nothing more in the room.
    let sent_at_first = am
        .webhook_counter(&http, "alertmanager_notifications_total")
        .await;
    support::wait_for("two repeats of the group", WAIT, || async {
        let sent = am
            .webhook_counter(&http, "alertmanager_notifications_total")
            .await;
        if sent >= sent_at_first + 2.0 {
            Ok(())
        } else {
            Err(format!(
                "{sent} sent, {sent_at_first} at the first delivery"
            ))
        }
    })
    .await;
    assert_eq!(
        room_messages(&env, "【アラート").len(),
        1,
        "no duplicate across retries and repeats: {:?}",
        room_messages(&env, "")
    );

    // Resolve both: one resolved message, once.
    add_alerts(&bin, &am_url, Some("--end=2000-01-01T00:00:00Z"));
    let resolved = support::wait_for("one resolved message in the room", WAIT, || async {
        let resolved = room_messages(&env, "【アラート解消】");
        if resolved.is_empty() {
            Err(format!("none yet: {:?}", room_messages(&env, "")))
        } else {
            Ok(resolved)
        }
    })
    .await;
    assert!(
        resolved[0].starts_with("【アラート解消】HighLatency（critical） 解消 2 件\n・[解消]"),
        "{resolved:?}"
    );
    let all = room_messages(&env, "【アラート");
    assert_eq!(all.len(), 2, "one firing and one resolved: {all:?}");
    // Every message went to the room, none as a DM.
    assert!(
        env.emu
            .delivered()
            .iter()
            .all(|d| d.kind == "channel" && d.resolved == ROOM),
        "{:?}",
        env.emu.delivered()
    );
    drop(am);
    relay.shutdown().await;
    controller.stop().await;
}

/// An Alertmanager message of one critical alert, as Alertmanager sends it (`endsAt` varies).
fn critical(ends_at: &str) -> serde_json::Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"DiskFull\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "lineworks",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull", "severity": "critical"},
        "commonAnnotations": {}, "externalURL": "http://am.example",
        "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "db-1"},
                    "annotations": {"summary": "disk full"}, "startsAt": "2026-11-27T10:00:00Z",
                    "endsAt": ends_at, "generatorURL": "http://prom.example/graph",
                    "fingerprint": "f1"}],
        "someFieldAddedLater": {"x": 1}
    })
}

#[tokio::test]
async fn a_label_routes_a_group_and_a_partial_delivery_is_retried_for_the_failed_target_only() {
    let spec = json!({
        "rateLimitPerMinute": 240,
        "routes": [{"name": "oncall", "user": "jinji", "roomId": ROOM}],
        "alerts": {"routeByLabel": "severity", "routes": [{"value": "critical", "route": "oncall"}]}
    });
    let (env, controller, relay, relay_url) = start("alertmanager-route", spec).await;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value, token: &'static str| {
        let request = http
            .post(format!("{relay_url}/v1/alertmanager"))
            .bearer_auth(token)
            .json(&body);
        async move { request.send().await.expect("answer") }
    };
    // The room refuses once (a 4xx LINE WORKS does not change on retry): the DM is delivered,
    // and Alertmanager must retry, so the answer is 503 with Retry-After, not 207.
    env.emu.add_fault(Fault {
        api: "send_channel_message".into(),
        status: Some(403),
        body: Some(json!({"code": "FORBIDDEN", "description": "bot is not a member"})),
        times: Some(1),
        ..Default::default()
    });
    let first = post(critical("0001-01-01T00:00:00Z"), TOKEN).await;
    assert_eq!(first.status(), 503);
    assert_eq!(
        first
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["targets"][0]["status"], "delivered", "{body}");
    assert_eq!(body["targets"][1]["status"], "failed", "{body}");
    // Alertmanager's retry (its endsAt moved on): only the room is sent again.
    let retry = post(critical("2026-11-27T11:00:00Z"), TOKEN).await;
    assert_eq!(retry.status(), 200);
    let delivered = env.emu.delivered();
    let to = |kind: &str| delivered.iter().filter(|d| d.kind == kind).count();
    assert_eq!((to("user"), to("channel")), (1, 1), "{delivered:?}");
    assert_eq!(delivered[0].target, "jinji@testtest");
    assert!(
        delivered[0].content["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("【アラート発生】DiskFull（critical） 発生中 1 件\n・[発生] DiskFull db-1: disk full")),
        "{delivered:?}"
    );
    // A repeat of the delivered group: nothing sent, answered as delivered.
    let repeat = post(critical("2026-11-27T12:00:00Z"), TOKEN).await;
    assert_eq!(repeat.status(), 200);
    assert_eq!(env.emu.delivered().len(), 2);

    // Another severity has no route: the notifier's room alone.
    let mut warning = critical("0001-01-01T00:00:00Z");
    warning["commonLabels"]["severity"] = json!("warning");
    warning["groupKey"] = json!("{}:{alertname=\"Slow\"}");
    let answer = post(warning, TOKEN).await;
    assert_eq!(answer.status(), 200);
    let last = env.emu.delivered().pop().expect("a message");
    assert_eq!(
        (last.kind.as_str(), env.emu.delivered().len()),
        ("channel", 3)
    );

    // Refusals Alertmanager must not retry: a wrong token, another format version.
    assert_eq!(post(critical("x"), "wrong").await.status(), 401);
    let mut v3 = critical("x");
    v3["version"] = json!("3");
    assert_eq!(post(v3, TOKEN).await.status(), 400);
    assert_eq!(env.emu.delivered().len(), 3);
    relay.shutdown().await;
    controller.stop().await;
}

#[test]
fn the_docs_alertmanager_configuration_passes_amtool_check_config() {
    let bin = binaries();
    for page in ["docs/alertmanager.md", "docs/alertmanager.ja.md"] {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page))
            .expect("docs page");
        let start = text
            .find("```yaml\n# alertmanager.yml")
            .unwrap_or_else(|| panic!("{page} has an alertmanager.yml example"));
        let block = &text[start + "```yaml\n".len()..];
        let block = &block[..block.find("```").expect("closed block")];
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("alertmanager.yml");
        std::fs::write(&file, block).expect("write");
        let out = amtool(&bin, &["check-config", &file.display().to_string()]);
        assert!(out.contains("SUCCESS"), "{page}: {out}");
        assert!(out.contains("1 receivers"), "{page}: {out}");
    }
}
