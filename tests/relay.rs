//! The relay with a real control plane, the controller and the emulator.

mod support;

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lineworks_client::SecretString;
use lineworks_emulator::Fault;
use lineworks_operator::endpoints::AllowedHosts;
use lineworks_operator::relay::{self, RelayHandle, RelayOptions};
use serde_json::{Value, json};
use support::lineworks::{ROOM, world};
use support::operator::{Env, Running};

const TOKEN: &str = "relay-token-for-tests";

struct Setup {
    env: Env,
    controller: Running,
    relay: RelayHandle,
    http: reqwest::Client,
    /// Sidecar mode (`/v1/…` serves "front"), else Deployment mode.
    sidecar: bool,
}

impl Setup {
    async fn new(prefix: &str, spec: Value, tune: impl FnOnce(&mut RelayOptions)) -> Self {
        Self::with_world(prefix, world(), spec, tune).await
    }

    async fn with_world(
        prefix: &str,
        world: lineworks_emulator::World,
        spec: Value,
        tune: impl FnOnce(&mut RelayOptions),
    ) -> Self {
        let env = Env::new(prefix, world).await;
        let controller = env.start_controller(None);
        env.apply_good_secret().await;
        // A Standard-plan budget, so the tests are not paced at the Free plan's 60 per minute.
        let mut spec = spec;
        if let Some(map) = spec.as_object_mut() {
            map.entry("rateLimitPerMinute").or_insert(json!(240));
        }
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
        options.deadline = Duration::from_secs(3);
        options.request_timeout = Duration::from_secs(2);
        tune(&mut options);
        let sidecar = options.notifier.is_some();
        if !sidecar {
            // Deployment mode: each caller presents its notifier's own token.
            options.auth = relay::CallerAuth::PerNotifier;
        }
        let relay = relay::start(env.client.clone(), options)
            .await
            .expect("relay starts");
        let setup = Self {
            env,
            controller,
            relay,
            http: reqwest::Client::new(),
            sidecar,
        };
        setup.wait_relay_ready("front").await;
        setup
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.relay.addr)
    }

    /// The bearer token for `path`: the relay's in sidecar mode, else the caller token of the
    /// notifier the path names (from the Secret the controller generates).
    async fn bearer(&self, path: &str) -> String {
        if self.sidecar {
            return TOKEN.into();
        }
        let name = path
            .strip_prefix("/v1/notifiers/")
            .and_then(|rest| rest.split('/').nth(1))
            .unwrap_or("front");
        support::operator::caller_token(&self.env, name).await
    }

    /// Waits until the relay's readiness answer for `name` satisfies `done`.
    async fn wait_readiness(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) {
        let path = if self.sidecar && name == "front" {
            "/v1/notifier".to_string()
        } else {
            format!("/v1/notifiers/{}/{name}", self.env.ns)
        };
        let bearer = self.bearer(&path).await;
        support::wait_for(what, support::operator::WAIT, || async {
            let r = self
                .http
                .get(self.url(&path))
                .bearer_auth(&bearer)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            if done(&body) {
                Ok(())
            } else {
                Err(body.to_string())
            }
        })
        .await;
    }

    async fn wait_relay_ready(&self, name: &str) {
        self.wait_readiness(name, "relay sees the Ready notifier", |b| {
            b["ready"] == true
        })
        .await;
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(self.bearer(path).await)
            .json(&body)
            .send()
            .await
            .expect("answer");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn notify(&self, body: Value) -> (u16, Value) {
        let path = format!("/v1/notifiers/{}/front/notifications", self.env.ns);
        self.post(&path, body).await
    }

    async fn stop(self) {
        self.relay.shutdown().await;
        self.controller.stop().await;
    }
}

fn visitor() -> Value {
    json!({"name": "佐藤", "company": "株式会社サンプル", "count": 2, "purpose": "打ち合わせ"})
}

#[tokio::test]
async fn a_visitor_reaches_the_host_by_dm_and_the_room() {
    let s = Setup::new("relay-both", json!({}), |_| {}).await;
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "host": "jinji", "hostName": "人事 太郎"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "delivered");
    assert_eq!(body["fallback"], false);
    let targets = body["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2);
    assert_eq!(
        (targets[0]["kind"].as_str(), targets[0]["id"].as_str()),
        (Some("user"), Some("jinji@testtest"))
    );
    assert_eq!(targets[1]["id"], ROOM);
    let delivered = s.env.emu.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].resolved, "u-jinji");
    assert_eq!(
        delivered[0].content["text"],
        "【来客】株式会社サンプル 佐藤様（2名）がお見えです。\n担当：人事 太郎\n用件：打ち合わせ"
    );

    // The sidecar path and the test button.
    let (status, body) = s
        .post("/v1/notifications", json!({"visitor": visitor()}))
        .await;
    assert_eq!(
        (status, body["fallback"].as_bool()),
        (200, Some(true)),
        "no host → default user"
    );
    let (status, _) = s.post("/v1/test-notification", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        s.env
            .emu
            .delivered()
            .last()
            .map(|d| d.content["text"].clone()),
        Some(json!("LINE WORKS テスト通知"))
    );
    s.stop().await;
}

#[tokio::test]
async fn dm_only_unknown_hosts_fall_back_and_routes_have_their_own_targets() {
    let spec = json!({"roomId": null, "routes": [
        {"name": "interview", "user": "jinji"},
        {"name": "delivery", "roomId": ROOM},
        {"name": "retired", "user": "gone"},
    ]});
    let s = Setup::new("relay-dm", spec, |_| {}).await;
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "host": "nobody"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fallback"], true);
    let targets = body["targets"].as_array().expect("targets");
    assert_eq!(
        targets.len(),
        2,
        "DM only: the skipped host and the default user, no room"
    );
    assert_eq!(
        (targets[0]["status"].as_str(), targets[0]["id"].as_str()),
        (Some("skipped"), Some("nobody@testtest"))
    );
    assert_eq!(
        (targets[1]["status"].as_str(), targets[1]["id"].as_str()),
        (Some("delivered"), Some("hogehoge@testtest"))
    );

    let (status, body) = s
        .notify(json!({"visitor": visitor(), "route": "delivery"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["targets"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["targets"][0]["kind"], "room");
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "route": "interview"}))
        .await;
    assert_eq!(
        (status, body["targets"][0]["id"].as_str()),
        (200, Some("jinji@testtest"))
    );
    // A custom button whose user LINE WORKS does not know falls back like a host (the manual:
    // unset or wrong user IDs in a custom button's settings reach the default user).
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "route": "retired"}))
        .await;
    assert_eq!(
        (status, body["fallback"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(
        (
            body["targets"][0]["status"].as_str(),
            body["targets"][0]["id"].as_str()
        ),
        (Some("skipped"), Some("gone@testtest"))
    );
    assert_eq!(
        (
            body["targets"][1]["status"].as_str(),
            body["targets"][1]["id"].as_str()
        ),
        (Some("delivered"), Some("hogehoge@testtest"))
    );
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "route": "parcel"}))
        .await;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("interview"),
        "{body}"
    );
    let kinds: Vec<String> = s
        .env
        .emu
        .delivered()
        .iter()
        .map(|d| d.kind.clone())
        .collect();
    assert_eq!(kinds, ["user", "channel", "user", "user"]);
    s.stop().await;
}

#[tokio::test]
async fn templates_render_japanese_and_hostile_input_stays_literal() {
    let spec = json!({"templates": {"visitor": {"text": "{{name}}様 ({{company}}) → {{host}}",
        "i18nTexts": [{"language": "en_US", "text": "{{name}} of {{company}}"}]}}});
    let s = Setup::new("relay-tpl", spec, |_| {}).await;
    let (status, _) = s
        .notify(json!({"visitor": {"name": "{{company}}\u{0007}\u{202e}鈴木", "company": "<b>ACME</b>"}, "host": "hogehoge"}))
        .await;
    assert_eq!(status, 200);
    let d = &s.env.emu.delivered()[0];
    assert_eq!(
        d.content["text"],
        "{{company}}鈴木様 (<b>ACME</b>) → hogehoge"
    );
    assert_eq!(
        d.content["i18nTexts"][0]["text"],
        "{{company}}鈴木 of <b>ACME</b>"
    );
    let (status, _) = s
        .notify(json!({"visitor": {"name": "x".repeat(501)}}))
        .await;
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test]
async fn idempotent_retries_send_once_and_a_reused_key_with_another_body_conflicts() {
    let s = Setup::new("relay-idem", json!({}), |_| {}).await;
    let body = json!({"visitor": visitor(), "host": "jinji", "idempotencyKey": "visit-42"});
    let (first_status, first) = s.notify(body.clone()).await;
    let (second_status, second) = s.notify(body).await;
    assert_eq!((first_status, second_status), (200, 200));
    assert_eq!(first, second);
    // The header form is equivalent.
    let r = s
        .http
        .post(s.url(&format!("/v1/notifiers/{}/front/notifications", s.env.ns)))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "visit-43")
        .json(&json!({"visitor": visitor()}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let (status, problem) = s
        .notify(json!({"visitor": {"name": "someone else"}, "idempotencyKey": "visit-42"}))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        s.env.emu.delivered().len(),
        2 + 2,
        "visit-42 once (DM + room), visit-43 once"
    );

    // Per target: the room refuses once; repeating the key sends the room message again and
    // never the DM that was delivered.
    s.env.emu.add_fault(Fault {
        api: "send_channel_message".into(),
        status: Some(403),
        body: Some(json!({"code": "FORBIDDEN", "description": "bot is not a member"})),
        times: Some(1),
        ..Default::default()
    });
    let body = json!({"visitor": {"name": "再送"}, "host": "jinji", "idempotencyKey": "visit-44"});
    let (status, first) = s.notify(body.clone()).await;
    assert_eq!(status, 207, "{first}");
    assert_eq!(first["targets"][1]["status"], "failed");
    let (status, again) = s.notify(body.clone()).await;
    assert_eq!(status, 200, "the failed room is retried: {again}");
    assert_eq!(again["targets"][0]["status"], "delivered");
    assert_eq!(again["targets"][1]["status"], "delivered");
    let (status, cached) = s.notify(body).await;
    assert_eq!((status, &cached), (200, &again), "nothing left to retry");
    let copies = |kind: &str| {
        s.env
            .emu
            .delivered()
            .iter()
            .filter(|d| {
                d.kind == kind
                    && d.content["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("再送"))
            })
            .count()
    };
    assert_eq!(
        (copies("user"), copies("channel")),
        (1, 1),
        "each target once"
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_problem_details() {
    let s = Setup::new("relay-bad", json!({}), |_| {}).await;
    let path = s.url(&format!("/v1/notifiers/{}/front/notifications", s.env.ns));
    let no_auth = s
        .http
        .post(&path)
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(no_auth.status(), 401);
    assert_eq!(
        no_auth.headers()["content-type"],
        "application/problem+json"
    );
    let wrong = s
        .http
        .post(&path)
        .bearer_auth("nope")
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 401);
    let big = s
        .http
        .post(&path)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"visitor\":{{\"note\":\"{}\"}}}}",
            "x".repeat(20_000)
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(big.status(), 413);
    assert_eq!(
        big.headers()["content-type"],
        "application/problem+json",
        "every error is problem+json, the body limit's too"
    );
    let wrong_method = s
        .http
        .get(&path)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    let nowhere = s
        .http
        .get(s.url("/v2/nothing"))
        .send()
        .await
        .expect("answer");
    assert_eq!(nowhere.status(), 404);
    assert_eq!(
        nowhere.headers()["content-type"],
        "application/problem+json"
    );
    // Media type and scheme are case-insensitive; an array, an empty text and a non-ASCII key
    // are refused (each would otherwise be accepted or silently lose the key).
    let refused = |content_type: &'static str,
                   auth: String,
                   body: &'static str,
                   key: Option<&'static [u8]>| {
        let mut request = s
            .http
            .post(&path)
            .header("authorization", auth)
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(key).expect("header"),
            );
        }
        async move {
            let r = request.send().await.expect("answer");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = refused("Application/JSON", format!("bearer {TOKEN}"), "[]", None).await;
    assert_eq!(
        (status, body["title"].as_str()),
        (400, Some("Malformed notification")),
        "{body}"
    );
    let (status, _) = refused("application/jsonx", format!("Bearer {TOKEN}"), "{}", None).await;
    assert_eq!(status, 415);
    let (status, body) = refused(
        "application/json",
        format!("Bearer {TOKEN}"),
        r#"{"text": "\u0007 "}"#,
        None,
    )
    .await;
    assert_eq!(
        (status, body["title"].as_str()),
        (400, Some("Empty text")),
        "{body}"
    );
    let (status, body) = refused(
        "application/json",
        format!("Bearer {TOKEN}"),
        r#"{"visitor": {"name": "x"}}"#,
        Some("来訪-1".as_bytes()),
    )
    .await;
    assert_eq!(
        (status, body["title"].as_str()),
        (400, Some("Bad idempotency key")),
        "{body}"
    );
    let malformed = s
        .http
        .post(&path)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(malformed.status(), 400);
    let problem: Value = malformed.json().await.expect("problem");
    assert_eq!(problem["status"], 400);
    assert!(problem["title"].is_string() && problem["detail"].is_string());
    let (status, _) = s.notify(json!({"visitor": visitor(), "vip": true})).await;
    assert_eq!(status, 400, "unknown fields are refused");
    let form = s
        .http
        .post(&path)
        .bearer_auth(TOKEN)
        .form(&[("a", "b")])
        .send()
        .await
        .expect("answer");
    assert_eq!(form.status(), 415);
    let (status, _) = s
        .post("/v1/notifiers/nowhere/nothing/notifications", json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = s.notify(json!({"host": "a", "route": "b"})).await;
    assert_eq!(status, 400);
    assert!(s.env.emu.delivered().is_empty(), "nothing was sent");

    // Not Ready → 503 with the reason.
    s.env.patch_spec("front", json!({"botId": 42})).await;
    s.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::BotNotInService,
        )
        .await;
    let detail = support::wait_for(
        "the relay to see the notifier not Ready",
        support::operator::WAIT,
        || async {
            let (status, body) = s.notify(json!({"visitor": visitor()})).await;
            if status == 503 {
                Ok(body)
            } else {
                Err(status.to_string())
            }
        },
    )
    .await;
    assert!(
        detail["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("BotNotFound")
            || detail["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("Bot"),
        "{detail}"
    );

    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    s.stop().await;
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_and_a_deadline_reports_failure() {
    let s = Setup::new("relay-retry", json!({}), |o| {
        o.deadline = Duration::from_millis(2500)
    })
    .await;
    s.env.emu.add_fault(Fault {
        api: "send_user_message".into(),
        status: Some(429),
        body: Some(json!({"code": "TOO_MANY_REQUESTS", "description": "API rate limit exceeded"})),
        headers: BTreeMap::from([("rateLimit-reset".into(), "1".into())]),
        times: Some(1),
        ..Default::default()
    });
    s.env.emu.add_fault(Fault {
        api: "send_channel_message".into(),
        status: Some(503),
        times: Some(1),
        ..Default::default()
    });
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "host": "jinji"}))
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("delivered")),
        "{body}"
    );
    assert_eq!(s.env.emu.delivered().len(), 2, "each target once");

    s.env.emu.add_fault(Fault {
        api: "send_user_message".into(),
        status: Some(503),
        ..Default::default()
    });
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "host": "jinji"}))
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (207, Some("partial")),
        "{body}"
    );
    assert_eq!(body["targets"][0]["status"], "failed");
    assert!(
        body["targets"][0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline"),
        "{body}"
    );
    assert_eq!(body["targets"][1]["status"], "delivered");
    let delivered = s.env.emu.delivered();
    assert_eq!(delivered.len(), 3, "the room once more, the DM never");
    assert_eq!(s.relay.metrics.accepted(), 2);
    assert_eq!(
        s.relay.metrics.finished("delivered") + s.relay.metrics.finished("partial"),
        2
    );

    // Both targets down: the notification reaches no one, which its notifier's counter shows,
    // while its last-delivery time still tells when one last got through.
    s.env.emu.add_fault(Fault {
        api: "send_channel_message".into(),
        status: Some(503),
        ..Default::default()
    });
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "host": "jinji"}))
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (502, Some("failed")),
        "{body}"
    );
    let text = s.relay.metrics.encode();
    let labels = format!("{{namespace=\"{}\",name=\"front\"}}", s.env.ns);
    let value = |metric: &str| -> f64 {
        let prefix = format!("lineworks_relay_{metric}{labels} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in:\n{text}"))
    };
    assert_eq!(value("notifier_failed_notifications_total"), 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let last = value("notifier_last_delivery_timestamp_seconds");
    assert!(
        now - last < 60.0 && last <= now + 1.0,
        "last delivery {last}, now {now}"
    );
    s.env.emu.clear_faults();
    s.stop().await;
}

#[tokio::test]
async fn a_token_rejected_mid_traffic_is_renewed_by_the_controller_with_no_failed_notification() {
    // 3-second tokens with rotation ON: the controller renews several times during the traffic,
    // and twice LINE WORKS also drops every token early.
    let mut w = world();
    w.apps[0].access_token_lifetime_secs = 3;
    w.apps[0].refresh_token_rotation = true;
    let s = Setup::with_world("relay-rotate", w, json!({}), |_| {}).await;
    let first = s
        .env
        .secrets()
        .get("front-lineworks-token")
        .await
        .expect("token Secret");
    let mut answers = Vec::new();
    let started = std::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(7) {
        if i == 5 || i == 15 {
            s.env.emu.expire_access_tokens();
        }
        answers.push(
            s.notify(json!({"visitor": {"name": format!("v{i}")}, "host": "jinji"}))
                .await,
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        s.env.emu.delivered().len(),
        2 * answers.len(),
        "every notification once to DM and room"
    );
    let last = s
        .env
        .secrets()
        .get("front-lineworks-token")
        .await
        .expect("token Secret");
    assert_ne!(
        first.data, last.data,
        "the controller rotated the tokens meanwhile"
    );
    s.stop().await;
}

#[tokio::test]
async fn shutdown_under_load_loses_nothing() {
    let s = Setup::new("relay-drain", json!({}), |_| {}).await;
    s.env.emu.add_fault(Fault {
        api: "*".into(),
        delay_ms: 100,
        ..Default::default()
    });
    let path = s.url(&format!("/v1/notifiers/{}/front/notifications", s.env.ns));
    let mut calls = Vec::new();
    for i in 0..60 {
        let (http, path) = (s.http.clone(), path.clone());
        calls.push(tokio::spawn(async move {
            http.post(&path)
                .bearer_auth(TOKEN)
                .json(&json!({"visitor": {"name": format!("v{i}")}, "host": "jinji"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // Shut down once deliveries are under way.
    let metrics = s.relay.metrics.clone();
    support::wait_for("notifications accepted", support::operator::WAIT, || {
        let m = metrics.clone();
        async move {
            if m.accepted() >= 10 {
                Ok(())
            } else {
                Err(m.accepted().to_string())
            }
        }
    })
    .await;
    let Setup {
        env,
        controller,
        relay,
        ..
    } = s;
    relay.shutdown().await;
    let mut answered = 0;
    for call in calls {
        if let Ok(Ok(status)) = call.await {
            assert!(
                // 429: refused at admission (the budget could not serve it in time), not lost.
                [200, 207, 502, 429].contains(&status) || status == 503,
                "status {status}"
            );
            answered += 1;
        }
    }
    let accepted = metrics.accepted();
    let finished =
        metrics.finished("delivered") + metrics.finished("partial") + metrics.finished("failed");
    assert!(accepted >= 10);
    assert_eq!(accepted, finished, "accepted = delivered + reported failed");
    assert_eq!(
        env.emu.delivered().len() as u64,
        metrics.finished("delivered") * 2 + metrics.finished("partial")
    );
    assert!(
        answered as u64 >= accepted,
        "every accepted caller got its answer"
    );
    controller.stop().await;
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relay::openapi::OPENAPI_PATH);
    let committed = std::fs::read_to_string(&path).expect("committed document");
    assert!(
        committed == relay::openapi::document_text(),
        "{} is out of date: run `make openapi` and commit it",
        relay::openapi::OPENAPI_PATH
    );
}

#[tokio::test]
async fn a_full_queue_answers_429_and_health_readiness_and_metrics_answer() {
    let s = Setup::new("relay-queue", json!({}), |o| o.queue_capacity = 2).await;
    s.env.emu.add_fault(Fault {
        api: "send_user_message".into(),
        delay_ms: 1500,
        ..Default::default()
    });
    let path = s.url(&format!("/v1/notifiers/{}/front/notifications", s.env.ns));
    let mut calls = Vec::new();
    for i in 0..6 {
        let (http, path) = (s.http.clone(), path.clone());
        calls.push(tokio::spawn(async move {
            let r = http
                .post(&path)
                .bearer_auth(TOKEN)
                .json(&json!({"visitor": {"name": format!("q{i}")}, "host": "jinji"}))
                .send()
                .await
                .expect("answer");
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        }));
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.expect("task"));
    }
    let full: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!full.is_empty(), "{statuses:?}");
    assert!(
        full.iter().all(|(_, retry_after)| *retry_after),
        "429 says when to retry"
    );
    assert_eq!(
        statuses.iter().filter(|(s, _)| *s == 200).count() as u64,
        s.relay.metrics.accepted()
    );

    for (path, expected) in [("/healthz", "ok"), ("/readyz", "ok")] {
        let r = s.http.get(s.url(path)).send().await.expect("answer");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.expect("text"), expected);
    }
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for series in [
        "lineworks_relay_notifications_accepted_total",
        "lineworks_relay_notifications_finished_total{outcome=\"delivered\"}",
        "lineworks_relay_requests_rejected_total{status=\"429\"}",
        "lineworks_relay_in_flight",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_public_address_without_a_token_or_a_relay_wide_token_in_deployment_mode_is_refused() {
    let plane = support::control_plane_with_crd().await;
    let client = plane.client().await.expect("client");
    let mut options = RelayOptions::new("0.0.0.0:0".parse().expect("addr"));
    options.auth = relay::CallerAuth::Open;
    let err = relay::start(client.clone(), options)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
    // One token for every notifier of every namespace: only a sidecar (one notifier) may.
    let mut options = RelayOptions::new("127.0.0.1:0".parse().expect("addr"));
    options.auth = relay::CallerAuth::RelayToken(SecretString::from(TOKEN));
    let err = relay::start(client, options).await.err().expect("refused");
    assert!(err.to_string().contains("relay-caller"), "{err}");
}

#[tokio::test]
async fn a_sidecar_told_to_watch_another_namespace_is_refused() {
    let plane = support::control_plane_with_crd().await;
    let client = plane.client().await.expect("client");
    let mut options = RelayOptions::new("127.0.0.1:0".parse().expect("addr"));
    options.notifier = Some(("team-a".into(), "front".into()));
    options.auth = relay::CallerAuth::Open;
    options.namespaces = vec!["team-b".into()];
    let err = relay::start(client, options).await.err().expect("refused");
    assert!(
        err.to_string().contains("team-b") && err.to_string().contains("team-a"),
        "{err}"
    );
}

/// One notifier waiting for a token holds no send slot: with a single slot, another notifier's
/// visitor is delivered at once.
#[tokio::test]
async fn a_notifier_waiting_for_its_token_does_not_hold_up_another() {
    let token_wait = Duration::from_secs(8);
    let s = Setup::new("relay-slots", json!({}), |o| {
        o.notifier = None;
        o.concurrency = 1;
        o.token_wait = token_wait;
    })
    .await;
    s.env
        .apply_notifier("back", json!({"rateLimitPerMinute": 240}))
        .await;
    s.env
        .wait_condition(
            "back",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    s.wait_relay_ready("back").await;
    // The relay loses sight of front's token Secret (it watches managed Secrets by label).
    s.env
        .secrets()
        .patch(
            "front-lineworks-token",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}),
            ),
        )
        .await
        .expect("label removed");
    let front = format!("/v1/notifiers/{}/front", s.env.ns);
    s.wait_readiness("front", "the relay to miss front's token", |b| {
        b["reason"] == "TokenNotSeen"
    })
    .await;
    let accepted = s.relay.metrics.accepted();
    let waiting = {
        let http = s.http.clone();
        let url = s.url(&format!("{front}/notifications"));
        let bearer = s.bearer(&front).await;
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(bearer)
                .json(&json!({"visitor": visitor()}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let metrics = Arc::clone(&s.relay.metrics);
    support::wait_for(
        "front's notification to be admitted",
        support::operator::WAIT,
        || {
            let metrics = Arc::clone(&metrics);
            async move {
                if metrics.accepted() > accepted {
                    Ok(())
                } else {
                    Err(metrics.accepted().to_string())
                }
            }
        },
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = s
        .post(
            &format!("/v1/notifiers/{}/back/notifications", s.env.ns),
            json!({"visitor": visitor()}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        took < token_wait / 2,
        "back waited {took:?} behind front's token wait of {token_wait:?}"
    );
    let front_status = waiting.await.expect("task").expect("answer");
    assert_eq!(front_status, 502, "front had no token to send with");
    s.stop().await;
}

/// The token dies while notifications are out: a DM already delivered stays delivered, and the
/// room messages LINE WORKS refused for the dead token are sent again with the renewed one.
#[tokio::test]
async fn a_token_that_dies_mid_notification_is_renewed_for_exactly_the_refused_targets() {
    let s = Setup::new("relay-midway", json!({}), |_| {}).await;
    let callers = 6;
    // Room messages are held 1 s before LINE WORKS looks at them; the token dies meanwhile.
    s.env.emu.add_fault(Fault {
        api: "send_channel_message".into(),
        delay_ms: 1000,
        times: Some(callers),
        ..Default::default()
    });
    let mut calls = Vec::new();
    for i in 0..callers {
        let http = s.http.clone();
        let url = s.url(&format!("/v1/notifiers/{}/front/notifications", s.env.ns));
        calls.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({"visitor": {"name": format!("v{i}")}, "host": "jinji"}))
                .send()
                .await
                .expect("answer");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }));
    }
    support::wait_for("every DM delivered", support::operator::WAIT, || async {
        let dms = s
            .env
            .emu
            .delivered()
            .iter()
            .filter(|d| d.kind == "user")
            .count();
        if dms == callers as usize {
            Ok(())
        } else {
            Err(dms.to_string())
        }
    })
    .await;
    // Revoked in LINE WORKS (an administrator revoked the app's tokens) mid-notification.
    s.env.emu.revoke_all_tokens();
    for call in calls {
        let (status, body) = call.await.expect("caller");
        assert_eq!(status, 200, "{body}");
    }
    let delivered = s.env.emu.delivered();
    for i in 0..callers {
        let name = format!("v{i}");
        for kind in ["user", "channel"] {
            let copies = delivered
                .iter()
                .filter(|d| {
                    d.kind == kind
                        && d.content["text"]
                            .as_str()
                            .is_some_and(|t| t.contains(&name))
                })
                .count();
            assert_eq!(copies, 1, "{name} by {kind}: exactly once");
        }
    }
    s.stop().await;
}

/// A DM whose answer was lost may have been delivered: reported as unknown, never as failed
/// (a caller retrying a "failed" target would make the host read it twice).
#[tokio::test]
async fn a_lost_answer_is_reported_as_maybe_delivered() {
    let s = Setup::new("relay-lost", json!({}), |_| {}).await;
    s.env.emu.add_fault(Fault {
        api: "send_user_message".into(),
        drop_answer: true,
        times: Some(1),
        ..Default::default()
    });
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "host": "jinji"}))
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (207, Some("partial")),
        "{body}"
    );
    let user = &body["targets"][0];
    assert_eq!(
        (user["status"].as_str(), user["code"].as_str()),
        (Some("unknown"), Some("MAYBE_DELIVERED")),
        "{body}"
    );
    assert!(
        user["description"]
            .as_str()
            .unwrap_or_default()
            .contains("twice"),
        "it says what a retry would do: {body}"
    );
    assert_eq!(body["targets"][1]["status"], "delivered");
    assert_eq!(
        s.env
            .emu
            .delivered()
            .iter()
            .filter(|d| d.kind == "user")
            .count(),
        1,
        "the DM did arrive"
    );
    s.stop().await;
}

/// One broken target does not stop the others: with the bot removed from the room, or after a
/// failed test notification, the host still gets the DM; the room is reported with its fix, and
/// status says DMs still go out.
#[tokio::test]
async fn a_broken_room_or_a_failed_test_stops_no_visitor() {
    let s = Setup::new("relay-degraded", json!({}), |_| {}).await;
    s.env
        .emu
        .update_world(|w| w.channels[0].bots.retain(|b| *b != support::lineworks::BOT));
    // The controller looks again (a spec change stands in for the daily re-check).
    s.env
        .patch_spec("front", json!({"testNotification": {"id": "room-gone"}}))
        .await;
    s.env
        .wait_condition(
            "front",
            ConditionType::BotInService,
            ConditionStatus::False,
            Reason::BotNotInRoom,
        )
        .await;
    let n = s.env.notifiers().get("front").await.expect("notifier");
    assert_eq!(
        n.status.as_ref().and_then(|s| s.delivering),
        Some(lineworks_operator::api::deliverable::Delivering::DirectMessagesOnly)
    );
    let table = support::kubectl(s.env.plane, &["get", "lwn", "front", "-n", &s.env.ns]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("DirectMessagesOnly"), "{table}");
    let body = support::wait_for(
        "the relay to send the DM despite the room",
        support::operator::WAIT,
        || async {
            let (status, body) = s
                .notify(json!({"visitor": visitor(), "host": "jinji"}))
                .await;
            if status == 207 {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    assert_eq!(body["targets"][0]["status"], "delivered", "{body}");
    let room = &body["targets"][1];
    assert_eq!(
        (room["status"].as_str(), room["code"].as_str()),
        (Some("failed"), Some("BotNotInRoom")),
        "{body}"
    );
    assert!(
        room["description"]
            .as_str()
            .unwrap_or_default()
            .contains("招待"),
        "the fix: {body}"
    );
    assert!(
        s.env
            .emu
            .delivered()
            .iter()
            .any(|d| d.kind == "user" && d.resolved == "u-jinji"),
        "the host got the DM"
    );

    // Room back (the waiting test notification goes out), then the default user deleted: the
    // next test notification fails, and visitors still arrive.
    s.env
        .emu
        .update_world(|w| w.channels[0].bots.push(support::lineworks::BOT));
    s.env
        .wait_condition(
            "front",
            ConditionType::TestNotified,
            ConditionStatus::True,
            Reason::TestNotificationDelivered,
        )
        .await;
    s.env.emu.update_world(|w| w.users[0].deleted = true);
    s.env
        .patch_spec("front", json!({"testNotification": {"id": "user-gone"}}))
        .await;
    s.env
        .wait_condition(
            "front",
            ConditionType::TestNotified,
            ConditionStatus::False,
            Reason::DefaultUserNotFound,
        )
        .await;
    s.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::TestNotificationFailed,
        )
        .await;
    let (status, body) = s
        .notify(json!({"visitor": visitor(), "host": "jinji"}))
        .await;
    assert_eq!(
        status, 200,
        "a failed test notification blocks nothing: {body}"
    );
    s.stop().await;
}

/// More notifications than the domain's budget can send before the deadline get an honest 429
/// with Retry-After; the admitted ones are all delivered (none times out queued behind the
/// budget), LINE WORKS never answers 429, and a refused key can be retried.
#[tokio::test]
async fn admission_follows_the_rate_budget_and_a_refused_key_can_be_retried() {
    let s = Setup::new("relay-budget", json!({"rateLimitPerMinute": 60}), |o| {
        o.deadline = Duration::from_secs(3);
    })
    .await;
    let path = s.url(&format!("/v1/notifiers/{}/front/notifications", s.env.ns));
    let mut calls = Vec::new();
    for i in 0..20 {
        let (http, path) = (s.http.clone(), path.clone());
        calls.push(tokio::spawn(async move {
            let r = http
                .post(&path)
                .bearer_auth(TOKEN)
                .json(
                    &json!({"visitor": {"name": format!("b{i}")}, "host": "jinji",
                    "idempotencyKey": format!("budget-{i}")}),
                )
                .send()
                .await
                .expect("answer");
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (
                i,
                r.status().as_u16(),
                retry_after,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("caller"));
    }
    let refused: Vec<_> = answers.iter().filter(|a| a.1 == 429).collect();
    let delivered = answers.iter().filter(|a| a.1 == 200).count();
    assert!(
        !refused.is_empty(),
        "20 at once exceed 60/min within 3 s: {answers:?}"
    );
    assert_eq!(
        refused.len() + delivered,
        20,
        "nothing partial or failed: {answers:?}"
    );
    for (_, _, retry_after, body) in &refused {
        assert!(retry_after.is_some_and(|s| s >= 1), "{body}");
        assert_eq!(body["title"], "Rate budget full", "{body}");
    }
    assert_eq!(
        s.env.emu.rate_limited(),
        0,
        "LINE WORKS never had to refuse"
    );

    // The refused ones, retried with their keys once the budget has room: delivered once.
    let (i, ..) = refused[0];
    let body = json!({"visitor": {"name": format!("b{i}")}, "host": "jinji",
        "idempotencyKey": format!("budget-{i}")});
    let (status, answer) =
        support::wait_for("room in the budget", support::operator::WAIT, || async {
            let (status, answer) = s.notify(body.clone()).await;
            if status == 429 {
                Err(answer.to_string())
            } else {
                Ok((status, answer))
            }
        })
        .await;
    assert_eq!(status, 200, "{answer}");
    let copies = s
        .env
        .emu
        .delivered()
        .iter()
        .filter(|d| {
            d.kind == "user"
                && d.content["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("b{i}様")))
        })
        .count();
    assert_eq!(copies, 1);
    s.stop().await;
}

/// Tenant safety item 2 at the relay: a notifier whose apiBaseURL the relay's installer did not
/// allow gets nothing sent, whatever its status says (here the controller allows all loopback,
/// the relay only another port).
#[tokio::test]
async fn the_relay_sends_nothing_to_a_host_it_does_not_allow() {
    let s = Setup::new("relay-hosts", json!({}), |o| {
        o.allowed_hosts = AllowedHosts::new(["127.0.0.1:1".to_string()]).expect("entry");
    })
    .await;
    let (status, body) = s.notify(json!({"visitor": visitor()})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["title"], "Endpoint not allowed", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("--allow-host"),
        "{body}"
    );
    assert!(s.env.emu.delivered().is_empty(), "nothing was sent");
    s.stop().await;
}

/// Tenant safety item 12: by default a caller can neither write the message text nor DM a user
/// outside the notifier's domain; the notifier's owners can allow both in spec.relayPolicy.
#[tokio::test]
async fn callers_write_no_text_and_reach_no_other_domain_unless_the_notifier_allows_it() {
    let s = Setup::new("relay-policy", json!({}), |_| {}).await;
    let path = format!("/v1/notifiers/{}/front/notifications", s.env.ns);
    for (body, title) in [
        (
            json!({"visitor": visitor(), "text": "振込先が変わりました"}),
            "Text not allowed",
        ),
        (
            json!({"visitor": visitor(), "host": "ceo@other-company"}),
            "Host outside the notifier's domain",
        ),
        (
            json!({"visitor": visitor(), "host": "0e5cd0a4-7b2c-4c1a-9f7e-3f0d2c1b9a88"}),
            "Host outside the notifier's domain",
        ),
    ] {
        let (status, answer) = s.post(&path, body).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["title"], title, "{answer}");
    }
    assert!(s.env.emu.delivered().is_empty(), "nothing was sent");

    // Allowed by the notifier's owners: the caller's text goes out as written.
    s.env
        .patch_spec("front", json!({"relayPolicy": {"allowText": true}}))
        .await;
    s.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    support::wait_for(
        "the relay applies the new policy",
        support::operator::WAIT,
        || {
            let s = &s;
            let path = path.clone();
            async move {
                match s
                    .post(
                        &path,
                        json!({"visitor": visitor(), "text": "受付に荷物が届きました"}),
                    )
                    .await
                {
                    (200, _) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert!(
        s.env
            .emu
            .delivered()
            .iter()
            .any(|d| d.content["text"] == "受付に荷物が届きました")
    );
    s.stop().await;
}
