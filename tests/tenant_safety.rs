//! Attacks by a tenant who can only edit their own notifiers (and Secrets they are given), run
//! against the real control plane: each shows the attack fails or is bounded.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use lineworks_emulator::Fault;
use lineworks_operator::api::conditions::{ConditionExt, ConditionStatus, ConditionType, Reason};
use lineworks_operator::api::contract::{self, token_secret};
use lineworks_operator::controller::Written;
use lineworks_operator::endpoints::AllowedHosts;
use lineworks_operator::relay::RelayOptions;
use serde_json::json;
use support::lineworks::world;
use support::operator::{Env, good_credentials};

/// Everything a person (or another tenant with `get` on notifiers and events) can read about a
/// notifier: its status and its events, as one text.
async fn visible_text(env: &Env, name: &str) -> String {
    let notifier = env.notifiers().get(name).await.expect("notifier");
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let events = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events");
    let mut text = serde_json::to_string(&notifier.status).expect("status");
    for e in events.items {
        text.push_str(&e.message.unwrap_or_default());
    }
    text
}

/// Item 1: a notifier pointing its credentials reference at an unrelated Secret (a database
/// password under a custom key name) learns nothing from it and sends nothing anywhere; a Secret
/// opted in for another notifier is refused too; opting in for this notifier makes it work.
#[tokio::test]
async fn a_notifier_cannot_read_a_secret_that_has_not_opted_in() {
    let env = Env::new("tenant-secrets", world()).await;
    let controller = env.start_controller(None);
    const PASSWORD: &str = "db-password-Zq8v1";
    env.apply_secret_allowing(
        "db-creds",
        json!({"password": PASSWORD, "user": "app"}),
        None,
    )
    .await;
    env.apply_notifier(
        "thief",
        json!({"auth": {"mode": "userAccount",
            "credentialsSecretRef": {"name": "db-creds", "clientIdKey": "password", "clientSecretKey": "user"},
            "userAccount": {"redirectURL": "https://example.com/oauth/callback"}}}),
    )
    .await;
    let c = env
        .wait_condition(
            "thief",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::CredentialsSecretNotAllowed,
        )
        .await;
    assert!(
        c.message
            .contains("lineworks-operator.dev/allowed-notifiers=thief"),
        "says how to opt in: {}",
        c.message
    );
    // Opted in, but for someone else.
    env.apply_secret_allowing(
        "db-creds",
        json!({"password": PASSWORD, "user": "app"}),
        Some("billing, payroll"),
    )
    .await;
    env.wait_condition(
        "thief",
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::NotAuthorized,
    )
    .await;
    let seen = visible_text(&env, "thief").await;
    assert!(!seen.contains(PASSWORD), "the value leaked: {seen}");
    assert!(
        !seen.contains("authorizationURL") || !seen.contains("client_id"),
        "no authorization URL for a Secret that has not opted in: {seen}"
    );
    assert_eq!(
        env.emu.total_requests(),
        0,
        "nothing was sent to LINE WORKS"
    );

    // The app's own Secret, opted in for exactly this notifier: it works.
    env.apply_secret_allowing("app", good_credentials(), Some("front"))
        .await;
    env.apply_notifier("front", json!({})).await;
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    controller.stop().await;
}

/// A listener on loopback that counts the connections it gets and never answers sensibly: the
/// attacker's server.
struct Catcher {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Catcher {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/oauth2/v2.0", self.addr.port())
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Catcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Item 2: a tenant re-points a working notifier's authBaseURL at their own server. The URL
/// passes the CRD's textual check, but the host is not on the installer's allow-list (only the
/// emulator's exact address is), so the condition says who can allow it and neither the next
/// renewal nor the revocation at deletion sends anything there.
#[tokio::test]
async fn endpoints_outside_the_allow_list_receive_nothing() {
    let env = Env::new("tenant-hosts", world()).await;
    let catcher = Catcher::start().await;
    let emulator = env.emu.addr();
    let controller = env.start_controller_with(None, |o| {
        o.settings.allowed_hosts =
            AllowedHosts::new([format!("127.0.0.1:{}", emulator.port())]).expect("entry");
    });
    env.apply_ready_notifier("front", json!({})).await;

    env.patch_spec("front", json!({"authBaseURL": catcher.url()}))
        .await;
    let c = env
        .wait_condition(
            "front",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::EndpointNotAllowed,
        )
        .await;
    assert!(
        c.message
            .contains(&format!("--allow-host 127.0.0.1:{}", catcher.addr.port()))
            && c.message.contains("allowedHosts"),
        "says which flag and value allow it: {}",
        c.message
    );
    // Deleting it revokes nothing at the attacker's host, and the deletion is not blocked.
    env.notifiers()
        .delete("front", &Default::default())
        .await
        .expect("delete");
    support::wait_for("the notifier is gone", support::operator::WAIT, || {
        let api = env.notifiers();
        async move {
            match api.get_opt("front").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(catcher.connections(), 0, "nothing reached the attacker");
    controller.stop().await;
}

/// Item 2: LINE WORKS (or a proxy) answering the token request with a redirect to another host
/// does not make the client secret follow it.
#[tokio::test]
async fn redirects_are_not_followed() {
    let env = Env::new("tenant-redirect", world()).await;
    let catcher = Catcher::start().await;
    env.emu.add_fault(Fault {
        api: "token".into(),
        status: Some(307),
        headers: [("location".to_string(), format!("{}/token", catcher.url()))].into(),
        ..Default::default()
    });
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("front", json!({})).await;
    let c = env
        .wait_condition_saying(
            "front",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::TokenEndpointUnavailable,
            "not followed",
        )
        .await;
    assert!(!c.message.contains(&catcher.url()), "{}", c.message);
    assert_eq!(catcher.connections(), 0, "the redirect was not followed");
    controller.stop().await;
}

/// A Ready notifier "front" and a sidecar relay for it (loopback, no caller token).
async fn ready_notifier_with_relay(
    env: &Env,
) -> (
    support::operator::Running,
    lineworks_operator::relay::RelayHandle,
) {
    let controller = env.start_controller(None);
    env.apply_ready_notifier("front", json!({"rateLimitPerMinute": 240}))
        .await;
    let mut options = RelayOptions::new("127.0.0.1:0".parse().expect("addr"));
    options.allowed_hosts = AllowedHosts::loopback();
    options.notifier = Some((env.ns.clone(), "front".into()));
    options.auth = lineworks_operator::relay::CallerAuth::Open;
    options.token_wait = Duration::from_millis(500);
    options.deadline = Duration::from_secs(3);
    let relay = lineworks_operator::relay::start(env.client.clone(), options)
        .await
        .expect("relay starts");
    let url = format!("http://{}/v1/notifier", relay.addr);
    support::wait_for(
        "the relay sees the Ready notifier",
        support::operator::WAIT,
        || {
            let url = url.clone();
            async move {
                let body: serde_json::Value = reqwest::get(&url)
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
            }
        },
    )
    .await;
    (controller, relay)
}

async fn notify(relay: &lineworks_operator::relay::RelayHandle) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/notifications", relay.addr))
        .json(&json!({"visitor": {"name": "佐藤", "company": "サンプル"}}))
        .send()
        .await
        .expect("answer");
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Item 5: someone who may write Secrets replaces the notifier's token Secret with one that has
/// the right name and label but was not written by the controller for this notifier. The relay
/// does not send with the token in it.
#[tokio::test]
async fn the_relay_uses_only_a_token_secret_owned_by_its_notifier() {
    let env = Env::new("tenant-forged-token", world()).await;
    let (controller, relay) = ready_notifier_with_relay(&env).await;
    controller.stop().await;
    let name = token_secret::default_name("front");
    // Replaced in one write (not deleted and re-created), so the relay's cache goes straight from
    // the controller's Secret to the forged one and the wait below cannot end on the gap between.
    let mut forged = env.secrets().get(&name).await.expect("token Secret");
    forged.metadata.owner_references = None;
    forged.data = None;
    forged.string_data = Some(
        [(
            token_secret::ACCESS_TOKEN.to_string(),
            "forged-token".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    env.secrets()
        .replace(&name, &Default::default(), &forged)
        .await
        .expect("forged Secret");
    // The relay's Secret cache learns of the swap through its watch; until then it still holds
    // the controller's token and delivers. Wait for the first answer that is not a delivery.
    support::wait_for(
        "the relay's cache sees the swapped Secret",
        support::operator::WAIT,
        || {
            let relay = &relay;
            async move {
                match notify(relay).await {
                    (200, body) => Err(body.to_string()),
                    _ => Ok(()),
                }
            }
        },
    )
    .await;
    let before = env.emu.requests("send_user_message");
    let (status, body) = notify(&relay).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["targets"][0]["code"], "NO_TOKEN", "{body}");
    assert_eq!(
        env.emu.requests("send_user_message"),
        before,
        "nothing was sent with the forged token"
    );
    relay.shutdown().await;
}

/// Item 5: an edit the controller has not checked yet (here: no controller running) is not
/// trusted on the strength of conditions written for the previous spec.
#[tokio::test]
async fn the_relay_waits_for_the_controller_to_check_an_edit() {
    let env = Env::new("tenant-stale", world()).await;
    let (controller, relay) = ready_notifier_with_relay(&env).await;
    controller.stop().await;
    env.patch_spec("front", json!({"defaultUser": "someone-else"}))
        .await;
    support::wait_for(
        "the relay refuses the unchecked edit",
        support::operator::WAIT,
        || {
            let relay = &relay;
            async move {
                match notify(relay).await {
                    (503, body) if body["title"] == "Notifier not yet checked" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert!(
        env.emu
            .delivered()
            .iter()
            .all(|d| d.target != "someone-else"),
        "no DM on the strength of stale conditions"
    );
    relay.shutdown().await;
}

/// Item 5: while new tokens are being obtained, someone swaps the token Secret for one of their
/// own under the same name. The controller's write conflicts, and on re-reading it finds a Secret
/// it does not own: it writes nothing into it (its owner could read the tokens).
#[tokio::test]
async fn tokens_are_not_written_into_a_secret_swapped_in_meanwhile() {
    let env = Env::new("tenant-swap", world()).await;
    let controller = env.start_controller(None);
    env.apply_ready_notifier("front", json!({})).await;
    let name = token_secret::default_name("front");
    let stored = env.secrets().get(&name).await.expect("token Secret");
    let token = support::oauth::secret_value(&stored, token_secret::ACCESS_TOKEN);
    // The next token request is slow, so the swap happens while it is in flight.
    env.emu.add_fault(Fault {
        api: "token".into(),
        // Within the tests' 2 s request timeout.
        delay_ms: 1_000,
        times: Some(1),
        ..Default::default()
    });
    env.report_token_rejected("front", &token).await;
    support::wait_for(
        "the token request is in flight",
        support::operator::WAIT,
        || {
            let pending = env.emu.pending_faults();
            async move {
                if pending == 0 {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            }
        },
    )
    .await;
    env.secrets()
        .delete(&name, &Default::default())
        .await
        .expect("delete");
    let swapped = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {contract::MANAGED_BY_LABEL: contract::MANAGED_BY}},
        "stringData": {"mine": "attacker"}});
    env.secrets()
        .create(
            &Default::default(),
            &serde_json::from_value(swapped).expect("secret"),
        )
        .await
        .expect("swapped Secret");
    // The refresh finishes (the emulator issues new tokens) and the controller gives up on them.
    // Done when the controller reports the foreign Secret, or (the failure) has written into it.
    support::wait_for(
        "the reconcile after the token call",
        support::operator::WAIT,
        || {
            let env = &env;
            let name = name.clone();
            async move {
                let n = env
                    .notifiers()
                    .get("front")
                    .await
                    .map_err(|e| e.to_string())?;
                let s = env.secrets().get(&name).await.map_err(|e| e.to_string())?;
                let written = s
                    .data
                    .is_some_and(|d| d.contains_key(token_secret::ACCESS_TOKEN));
                let reported = n
                    .condition(ConditionType::Authorized)
                    .is_some_and(|c| c.is(ConditionStatus::False));
                if written || reported {
                    Ok(())
                } else {
                    Err("still Authorized".to_string())
                }
            }
        },
    )
    .await;
    let after = env.secrets().get(&name).await.expect("Secret");
    let keys: Vec<String> = after.data.unwrap_or_default().into_keys().collect();
    assert_eq!(
        keys,
        vec!["mine".to_string()],
        "no token was written into it"
    );
    controller.stop().await;
}

/// Item 8: a token endpoint handing out tokens that live one second, then an API answering 401
/// to everything while a relay keeps reporting the token rejected. Both cost a bounded number of
/// token requests and writes per window: one renewal per floor, not one per reconcile.
#[tokio::test]
async fn short_lived_and_always_rejected_tokens_cost_bounded_calls_and_writes() {
    const FLOOR: Duration = Duration::from_secs(3);
    const WINDOW: Duration = Duration::from_secs(12);
    let mut w = world();
    w.apps[0].access_token_lifetime_secs = 1;
    let env = Env::new("tenant-loops", w).await;
    let controller = env.start_controller_with(None, |o| o.settings.renewal_floor = FLOOR);
    env.apply_ready_notifier("front", json!({})).await;
    // At most one renewal per floor, plus one for a window boundary; a renewal of a Service
    // Account token is up to two token requests (the refresh token, then a fresh JWT grant).
    let attempts = WINDOW.as_secs() / FLOOR.as_secs() + 1;
    let bound = 2 * attempts;
    let measure = |what: &'static str| {
        let env = &env;
        let metrics = Arc::clone(&controller.metrics);
        async move {
            let tokens = env.emu.requests("token");
            let status = metrics.writes(Written::Status);
            let secret = metrics.writes(Written::TokenSecret);
            // The observation window of the measurement, not a synchronisation.
            tokio::time::sleep(WINDOW).await;
            let tokens = env.emu.requests("token") - tokens;
            let status = metrics.writes(Written::Status) - status;
            let secret = metrics.writes(Written::TokenSecret) - secret;
            eprintln!(
                "{what}: {tokens} token requests, {status} status and {secret} token Secret writes in {WINDOW:?}"
            );
            (tokens, status, secret)
        }
    };
    let (tokens, status, secret) = measure("1-second tokens").await;
    assert!(tokens >= 2, "tokens are still renewed: {tokens}");
    assert!(tokens <= bound, "{tokens} token requests > {bound}");
    assert!(
        secret <= bound && status <= 2 * bound,
        "{secret} / {status} writes"
    );

    // Everything answers 401 and a relay reports each token rejected as soon as it sees it.
    env.emu.add_fault(Fault {
        api: "*".into(),
        status: Some(401),
        body: Some(json!({"code": "UNAUTHORIZED", "description": "Authentication failed"})),
        ..Default::default()
    });
    let reporting = tokio::spawn({
        let (client, ns) = (env.client.clone(), env.ns.clone());
        let secrets = env.secrets();
        async move {
            let mut interval = tokio::time::interval(Duration::from_millis(200));
            loop {
                interval.tick().await;
                let Ok(s) = secrets.get(&token_secret::default_name("front")).await else {
                    continue;
                };
                let token = support::oauth::secret_value(&s, token_secret::ACCESS_TOKEN);
                support::operator::report_token_rejected(&client, &ns, "front", &token).await;
            }
        }
    });
    let (tokens, status, secret) = measure("401 forever").await;
    reporting.abort();
    assert!(tokens <= bound, "{tokens} token requests > {bound}");
    assert!(
        secret <= bound && status <= 2 * bound,
        "{secret} / {status} writes"
    );
    let calls = env.emu.total_requests();
    env.emu.clear_faults();
    controller.stop().await;
    eprintln!("total LINE WORKS requests: {calls}");
}

/// A tenant rewrites the re-check annotation of their notifier as fast as the API server
/// takes it: each new value wakes the controller, but the bot checks it asks for run at most once
/// per renewal floor, so LINE WORKS sees a bounded number of calls; the last value is still
/// acted on once the floor allows.
#[tokio::test]
async fn a_recheck_annotation_in_a_loop_costs_bounded_calls() {
    const FLOOR: Duration = Duration::from_secs(2);
    let env = Env::new("tenant-recheck", world()).await;
    let _controller = env.start_controller_with(None, |o| o.settings.renewal_floor = FLOOR);
    env.apply_ready_notifier("front", json!({})).await;
    let before = env.emu.requests("get_bot");
    let started = std::time::Instant::now();
    let mut last = String::new();
    for i in 0..100 {
        last = format!("loop-{i}");
        env.notifiers()
            .patch(
                "front",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                    contract::RECONCILE_REQUESTED_ANNOTATION: last
                }}})),
            )
            .await
            .expect("annotate");
    }
    let handled = support::wait_for("the last re-check handled", Duration::from_secs(30), || {
        let (api, last) = (env.notifiers(), last.clone());
        async move {
            let n = api.get("front").await.map_err(|e| e.to_string())?;
            let handled = n.status.and_then(|s| s.last_handled_reconcile_at);
            if handled.as_deref() == Some(last.as_str()) {
                Ok(())
            } else {
                Err(format!("{handled:?}"))
            }
        }
    });
    handled.await;
    let rounds = env.emu.requests("get_bot") - before;
    // One round per floor over the whole run, plus one for the first and one for a boundary.
    let bound = started.elapsed().as_secs() / FLOOR.as_secs() + 2;
    eprintln!(
        "100 annotation values in {:?}: {rounds} rounds of bot checks (bound {bound})",
        started.elapsed()
    );
    assert!(rounds >= 1, "the re-check ran");
    assert!(rounds <= bound, "{rounds} rounds of bot checks > {bound}");
}

/// Smaller items: a crafted callback URL cannot inject markup or invisible text into the page,
/// and the page forbids sniffing, scripts, frames and forms.
#[tokio::test]
async fn a_crafted_callback_url_shows_only_inert_text() {
    let a =
        support::oauth::Authorizing::new("tenant-callback", |_| {}, Duration::from_secs(600)).await;
    let url = format!(
        "{}?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E&error_description=pay%E2%80%AEevil%E2%80%8B&state=x",
        a.redirect
    );
    let health = a.redirect.replace("/oauth/callback", "/healthz");
    support::wait_for("the controller serves", support::operator::WAIT, || {
        let health = health.clone();
        async move {
            reqwest::get(&health)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let r = reqwest::get(&url).await.expect("answer");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(
        header("content-security-policy").contains("default-src 'none'"),
        "{}",
        header("content-security-policy")
    );
    let page = r.text().await.expect("page");
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        !page.contains('\u{202e}') && !page.contains('\u{200b}'),
        "{page}"
    );
    a.stop().await;
}

/// A Deployment-mode relay (per-notifier caller tokens) serving `namespaces`.
async fn shared_relay(
    client: &kube::Client,
    namespaces: Vec<String>,
    tune: impl FnOnce(&mut RelayOptions),
) -> lineworks_operator::relay::RelayHandle {
    let mut options = RelayOptions::new("127.0.0.1:0".parse().expect("addr"));
    options.allowed_hosts = AllowedHosts::loopback();
    options.namespaces = namespaces;
    options.auth = lineworks_operator::relay::CallerAuth::PerNotifier;
    tune(&mut options);
    lineworks_operator::relay::start(client.clone(), options)
        .await
        .expect("relay starts")
}

/// POSTs a visitor notification to `ns/name` through a Deployment-mode relay with `bearer`.
async fn notify_as(
    relay: &lineworks_operator::relay::RelayHandle,
    ns: &str,
    name: &str,
    bearer: &str,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/notifiers/{ns}/{name}/notifications",
            relay.addr
        ))
        .bearer_auth(bearer)
        .json(&json!({"visitor": {"name": "佐藤"}}))
        .send()
        .await
        .expect("answer");
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Waits until the relay has seen the notifier's caller token and token (a readiness answer).
async fn wait_relay_serves(
    relay: &lineworks_operator::relay::RelayHandle,
    ns: &str,
    name: &str,
    bearer: &str,
) {
    let url = format!("http://{}/v1/notifiers/{ns}/{name}", relay.addr);
    support::wait_for(
        "the relay serves the notifier",
        support::operator::WAIT,
        || {
            let (url, bearer) = (url.clone(), bearer.to_string());
            async move {
                let r = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
                if body["ready"] == true {
                    Ok(())
                } else {
                    Err(body.to_string())
                }
            }
        },
    )
    .await;
}

/// Item 4: one relay serves two tenants. A caller holding tenant A's token cannot send through
/// tenant B's notifier, cannot tell B's notifiers from missing ones, and a Secret squatting on a
/// notifier's caller-Secret name (not written by the controller) opens nothing.
#[tokio::test]
async fn a_callers_token_opens_its_own_notifier_and_no_other() {
    let a = Env::new("tenant-caller-a", world()).await;
    let b = Env::new("tenant-caller-b", world()).await;
    let controller_a = a.start_controller(None);
    let controller_b = b.start_controller(None);
    a.apply_ready_notifier("front", json!({"rateLimitPerMinute": 240}))
        .await;
    b.apply_ready_notifier("front", json!({"rateLimitPerMinute": 240}))
        .await;
    let relay = shared_relay(&a.client, vec![a.ns.clone(), b.ns.clone()], |_| {}).await;
    let token_a = support::operator::caller_token(&a, "front").await;
    let token_b = support::operator::caller_token(&b, "front").await;
    assert_ne!(token_a, token_b);
    assert_eq!(token_a.len(), 64, "32 random bytes");
    wait_relay_serves(&relay, &a.ns, "front", &token_a).await;
    wait_relay_serves(&relay, &b.ns, "front", &token_b).await;
    let status = a.notifiers().get("front").await.expect("front").status;
    assert_eq!(
        status.and_then(|s| s.caller_token_secret_name).as_deref(),
        Some("front-relay-caller")
    );

    // A's token on B's notifier, no token, and A's token on a notifier that does not exist:
    // all the same 401, and nothing reaches B's LINE WORKS.
    for (ns, name, bearer) in [
        (&b.ns, "front", token_a.as_str()),
        (&b.ns, "front", ""),
        (&b.ns, "missing", token_a.as_str()),
        (&a.ns, "front", &token_a[..63]),
    ] {
        let (status, body) = notify_as(&relay, ns, name, bearer).await;
        assert_eq!(status, 401, "{ns}/{name}: {body}");
    }
    assert!(b.emu.delivered().is_empty(), "nothing sent through B");
    let (status, body) = notify_as(&relay, &a.ns, "front", &token_a).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = notify_as(&relay, &b.ns, "front", &token_b).await;
    assert_eq!(status, 200, "{body}");

    // Someone who may create Secrets in A squats on the caller-Secret name of a notifier about
    // to be created, with a token they know: the relay does not accept it, and the notifier says
    // why.
    const SQUAT: &str = "squatter-token-known-to-the-attacker";
    let squat = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": contract::caller_secret::name("lobby"),
            "labels": {contract::MANAGED_BY_LABEL: contract::MANAGED_BY}},
        "stringData": {contract::caller_secret::TOKEN: SQUAT}});
    a.secrets()
        .create(
            &Default::default(),
            &serde_json::from_value(squat).expect("secret"),
        )
        .await
        .expect("squatting Secret");
    a.apply_ready_notifier("lobby", json!({"rateLimitPerMinute": 240}))
        .await;
    let (status, body) = notify_as(&relay, &a.ns, "lobby", SQUAT).await;
    assert_eq!(status, 401, "{body}");
    let lobby = a.notifiers().get("lobby").await.expect("lobby");
    assert_eq!(
        lobby.status.and_then(|s| s.caller_token_secret_name),
        None,
        "status names no caller Secret it does not own"
    );
    assert!(
        visible_text(&a, "lobby")
            .await
            .contains("does not belong to this notifier"),
        "an Event says what to do"
    );
    relay.shutdown().await;
    controller_a.stop().await;
    controller_b.stop().await;
}

/// A second app of the same LINE WORKS domain, with its own Service Account.
fn world_with_second_app() -> lineworks_emulator::World {
    let mut w = world();
    let mut second = w.apps[0].clone();
    second.client_id = "client-2".into();
    second.client_secret = "client-2-secret".into();
    second.service_accounts = vec!["sa-2.serviceaccount@testtest".into()];
    w.apps.push(second);
    w
}

/// Item 11: a notifier of another app names our domain with a tiny budget and floods the shared
/// relay. Our notifier's visitors still go out at once: its budget is keyed by its own app, and
/// the flood's notifications waiting for their budget hold none of the relay's send slots
/// (there is one here).
#[tokio::test]
async fn a_flood_on_one_notifier_does_not_delay_another() {
    let env = Env::new("tenant-fair", world_with_second_app()).await;
    let controller = env.start_controller(None);
    env.apply_ready_notifier("front", json!({"rateLimitPerMinute": 240}))
        .await;
    let mut flood_credentials = good_credentials();
    flood_credentials["clientId"] = json!("client-2");
    flood_credentials["clientSecret"] = json!("client-2-secret");
    flood_credentials["serviceAccountId"] = json!("sa-2.serviceaccount@testtest");
    env.apply_secret("app-2", flood_credentials).await;
    // 6 per minute: a burst of 1, then one per 15 s.
    env.apply_notifier(
        "flood",
        json!({"rateLimitPerMinute": 6,
            "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "app-2"}}}),
    )
    .await;
    env.wait_condition(
        "flood",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let relay = shared_relay(&env.client, vec![env.ns.clone()], |o| {
        o.concurrency = 1;
        o.deadline = Duration::from_secs(20);
    })
    .await;
    let front = support::operator::caller_token(&env, "front").await;
    let flood = support::operator::caller_token(&env, "flood").await;
    wait_relay_serves(&relay, &env.ns, "front", &front).await;
    wait_relay_serves(&relay, &env.ns, "flood", &flood).await;

    let flooding: Vec<_> = (0..10)
        .map(|_| {
            let (url, flood) = (
                format!(
                    "http://{}/v1/notifiers/{}/flood/notifications",
                    relay.addr, env.ns
                ),
                flood.clone(),
            );
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(flood)
                    .json(&json!({"visitor": {"name": "flood"}}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // The flood's budget admits what it can send within the deadline; the rest is 429.
    let metrics = Arc::clone(&relay.metrics);
    support::wait_for(
        "the flood to fill its queue",
        support::operator::WAIT,
        || {
            let metrics = Arc::clone(&metrics);
            async move {
                if metrics.accepted() >= 2 {
                    Ok(())
                } else {
                    Err(metrics.accepted().to_string())
                }
            }
        },
    )
    .await;
    const BOUND: Duration = Duration::from_secs(2);
    for i in 0..5 {
        let started = std::time::Instant::now();
        let (status, body) = notify_as(&relay, &env.ns, "front", &front).await;
        let took = started.elapsed();
        assert_eq!(status, 200, "visitor {i}: {body}");
        assert!(took < BOUND, "visitor {i} waited {took:?} behind the flood");
    }
    let mut refused = 0;
    for f in flooding {
        if f.await.expect("task").expect("answer") == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0, "the flood was bounded by its own budget");
    relay.shutdown().await;
    controller.stop().await;
}
