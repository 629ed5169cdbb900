//! Attacks by a tenant who can only edit their own notifiers (and Secrets they are given), run
//! against the real control plane: each shows the attack fails or is bounded.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use lineworks_emulator::Fault;
use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use lineworks_operator::endpoints::AllowedHosts;
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
    env.apply_good_secret().await;
    env.apply_notifier("front", json!({})).await;
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;

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
