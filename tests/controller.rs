//! The controller on a real control plane against the emulator: the happy path, every failure
//! reason produced the way a real mistake would be and fixed without a restart, the token
//! lifecycle, the test notification across restarts, leader election and `kubectl describe`.

mod support;

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use lineworks_client::{Content, SecretString};
use lineworks_emulator::Fault;
use serde_json::json;
use support::lineworks::{self, BOT, LONELY_BOT, ROOM, ROOM_WITHOUT_BOT, world};
use support::operator::{Env, WAIT, good_credentials};
use support::{kubectl_ok, wait_for};

async fn events_of(env: &Env, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_correct_notifier_becomes_ready_and_then_costs_line_works_nothing() {
    let env = Env::new("happy", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("reception", json!({})).await;
    let ready = env
        .wait_condition(
            "reception",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    assert!(
        ready.message.contains("hogehoge@testtest") && ready.message.contains(ROOM),
        "{}",
        ready.message
    );
    env.wait_condition(
        "reception",
        ConditionType::Authorized,
        ConditionStatus::True,
        Reason::TokenValid,
    )
    .await;
    env.wait_condition(
        "reception",
        ConditionType::BotInService,
        ConditionStatus::True,
        Reason::BotReachable,
    )
    .await;
    env.wait_condition(
        "reception",
        ConditionType::TestNotified,
        ConditionStatus::Unknown,
        Reason::NotRequested,
    )
    .await;

    let n = env.notifiers().get("reception").await.expect("notifier");
    let status = n.status.clone().expect("status");
    assert_eq!(status.bot_name.as_deref(), Some("RECEPTIONIST"));
    assert!(status.access_token_expires_at.is_some());
    assert_eq!(status.observed_generation, n.metadata.generation);
    let token_secret = env
        .secrets()
        .get("reception-lineworks-token")
        .await
        .expect("token Secret");
    let owner = &token_secret
        .metadata
        .owner_references
        .as_ref()
        .expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("LineWorksNotifier", Some(true))
    );
    let access = String::from_utf8(
        token_secret.data.as_ref().expect("data")["accessToken"]
            .0
            .clone(),
    )
    .expect("utf-8");
    let status_json = serde_json::to_string(&status).expect("json");
    assert!(!status_json.contains(&access), "no token in status");

    // Events are published just after the status write: wait for them.
    let events = wait_for("the NotifierReady event", WAIT, || async {
        let events = events_of(&env, "reception").await;
        if events.iter().any(|e| {
            e.reason.as_deref() == Some("NotifierReady") && e.type_.as_deref() == Some("Normal")
        }) {
            Ok(events)
        } else {
            Err(format!("{} events", events.len()))
        }
    })
    .await;
    assert!(
        events
            .iter()
            .all(|e| !e.message.as_deref().unwrap_or_default().contains(&access))
    );

    // Steady state: resyncs make no LINE WORKS call. Here a resync is a metadata change on the
    // credentials Secret, which wakes the controller without changing anything it checks (a new
    // reconcile-requested-at value would ask for a re-check, which does call LINE WORKS).
    let calls = env.emu.total_requests();
    for i in 0..5 {
        // One resync at a time, each waited for (the controller coalesces queued ones).
        let before = controller.metrics.reconciles_ok();
        env.secrets()
            .patch(
                "app",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"example.com/touched": i.to_string()}}}),
                ),
            )
            .await
            .expect("annotate");
        let m = controller.metrics.clone();
        wait_for("a resync reconcile", WAIT, || {
            let m = m.clone();
            async move {
                let now = m.reconciles_ok();
                if now > before {
                    Ok(())
                } else {
                    Err(format!("{now}"))
                }
            }
        })
        .await;
    }
    assert_eq!(
        env.emu.total_requests(),
        calls,
        "steady-state reconciles called LINE WORKS"
    );

    // A Ready notifier has nothing scheduled for hours; a change to its credentials Secret
    // reaches it through the watch alone.
    let mut wrong = good_credentials();
    wrong["clientSecret"] = json!("rotated-by-someone");
    env.apply_secret("app", wrong).await;
    env.wait_condition(
        "reception",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::InvalidClientCredentials,
    )
    .await;
    controller.stop().await;
}

/// Applies a notifier broken in one way, waits for the reason, checks the message names the fix,
/// repairs the cause and waits for Ready again.
#[tokio::test]
async fn credential_mistakes_are_diagnosed_and_fixing_them_recovers() {
    let env = Env::new("creds", world()).await;
    let controller = env.start_controller(None);

    // Missing Secret.
    env.apply_notifier("n", json!({})).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::CredentialsSecretMissing,
        )
        .await;
    assert!(
        c.message.contains("Secret app not found") && c.message.contains("Developer Console"),
        "{}",
        c.message
    );
    let ready = env
        .wait_condition(
            "n",
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::NotAuthorized,
        )
        .await;
    assert!(ready.message.contains("Secret app"), "{}", ready.message);

    // Missing key.
    let mut partial = good_credentials();
    partial
        .as_object_mut()
        .expect("object")
        .remove("privateKey");
    env.apply_secret("app", partial).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::CredentialsKeyMissing,
        )
        .await;
    assert!(c.message.contains("privateKey"), "{}", c.message);

    // Wrong client secret.
    let mut wrong = good_credentials();
    wrong["clientSecret"] = json!("not-the-secret");
    env.apply_secret("app", wrong).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::InvalidClientCredentials,
        )
        .await;
    assert!(
        c.message.contains("Client Secret") && c.message.contains("Developer Console > API 2.0"),
        "{}",
        c.message
    );
    assert!(
        !c.message.contains("not-the-secret"),
        "the secret is not echoed: {}",
        c.message
    );

    // A private key of another app, then one that is not a key at all.
    let mut other = good_credentials();
    other["privateKey"] = json!(lineworks::fixture("other-service-account.key"));
    env.apply_secret("app", other).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::PrivateKeyInvalid,
        )
        .await;
    assert!(c.message.contains("Service Account"), "{}", c.message);
    let mut garbage = good_credentials();
    garbage["privateKey"] = json!("hello");
    env.apply_secret("app", garbage).await;
    env.wait_condition_saying(
        "n",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::PrivateKeyInvalid,
        "not PEM",
    )
    .await;

    // Fixed: Ready without a restart.
    env.apply_good_secret().await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    controller.stop().await;
}

#[tokio::test]
async fn bot_and_room_mistakes_are_diagnosed_and_fixing_them_recovers() {
    let env = Env::new("bot", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;

    // Unknown bot: fixed by correcting spec.botId.
    env.apply_notifier("n", json!({"botId": 9_999_999})).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::BotInService,
            ConditionStatus::False,
            Reason::BotNotFound,
        )
        .await;
    assert!(
        c.message.contains("Developer Console > Bot"),
        "{}",
        c.message
    );
    env.patch_spec("n", json!({"botId": BOT})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;

    // Bot not added to the domain: fixed in the admin screen (the emulator), no Kubernetes change.
    env.patch_spec("n", json!({"botId": LONELY_BOT, "roomId": null}))
        .await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::BotInService,
            ConditionStatus::False,
            Reason::BotNotInDomain,
        )
        .await;
    assert!(
        c.message.contains("Bot追加") && c.message.contains("準備中"),
        "{}",
        c.message
    );
    env.emu
        .update_world(|w| w.bots[1].domains.push(lineworks::DOMAIN_ID));
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;

    // Bot not invited to the room: fixed by inviting it.
    env.patch_spec("n", json!({"botId": BOT, "roomId": ROOM_WITHOUT_BOT}))
        .await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::BotInService,
            ConditionStatus::False,
            Reason::BotNotInRoom,
        )
        .await;
    assert!(c.message.contains("招待"), "{}", c.message);
    env.emu.update_world(|w| w.channels[1].bots.push(BOT));
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;

    // Unknown room: fixed by correcting roomId.
    env.patch_spec("n", json!({"roomId": "0000-nope"})).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::BotInService,
            ConditionStatus::False,
            Reason::RoomNotFound,
        )
        .await;
    assert!(c.message.contains("チャンネルID"), "{}", c.message);
    assert!(
        c.message.contains("招待"),
        "a 404 may also mean the bot was never invited: {}",
        c.message
    );
    let ready = env
        .wait_condition(
            "n",
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::BotNotInService,
        )
        .await;
    assert!(ready.message.contains("チャンネルID"));

    // kubectl describe shows the reason and the fix.
    let describe = kubectl_ok(env.plane, &["describe", "lwn", "n", "-n", &env.ns]);
    assert!(
        describe.contains("RoomNotFound") && describe.contains("チャンネルID"),
        "{describe}"
    );
    assert!(
        describe.contains("Warning"),
        "events are listed: {describe}"
    );

    env.patch_spec("n", json!({"roomId": ROOM})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    controller.stop().await;
}

#[tokio::test]
async fn token_endpoint_outage_and_suspension() {
    let env = Env::new("outage", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.emu.add_fault(Fault {
        api: "token".into(),
        status: Some(503),
        ..Default::default()
    });
    env.apply_notifier("n", json!({})).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::TokenEndpointUnavailable,
        )
        .await;
    assert!(c.message.contains("retrying"), "{}", c.message);
    env.emu.clear_faults();
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;

    env.patch_spec("n", json!({"suspend": true})).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::Suspended,
        )
        .await;
    assert!(c.message.contains("suspend"), "{}", c.message);
    env.wait_condition(
        "n",
        ConditionType::BotInService,
        ConditionStatus::False,
        Reason::Suspended,
    )
    .await;
    let calls = env.emu.total_requests();
    env.emu.expire_access_tokens();
    env.patch_spec("n", json!({"defaultUser": "jinji"})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::Suspended,
    )
    .await;
    assert_eq!(
        env.emu.total_requests(),
        calls,
        "a suspended notifier makes no call"
    );
    env.patch_spec("n", json!({"suspend": false})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    controller.stop().await;
}

#[tokio::test]
async fn the_test_notification_is_sent_once_and_a_deleted_default_user_is_reported() {
    let env = Env::new("testnotify", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("n", json!({"testNotification": {"id": "1"}}))
        .await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::TestNotified,
            ConditionStatus::True,
            Reason::TestNotificationDelivered,
        )
        .await;
    assert!(
        c.message.contains("hogehoge@testtest") && c.message.contains(ROOM),
        "{}",
        c.message
    );
    let delivered = env.emu.delivered();
    assert_eq!(delivered.len(), 2, "DM and room");
    assert_eq!(delivered[0].content["text"], "LINE WORKS テスト通知");
    assert_eq!(delivered[0].target, "hogehoge@testtest");
    assert_eq!(delivered[1].kind, "channel");

    // Restart: the new controller reconciles but never sends id 1 again.
    controller.stop().await;
    let controller = env.start_controller(None);
    env.patch_spec("n", json!({"defaultUser": "hogehoge"}))
        .await; // no-op spec, forces a look
    env.notifiers()
        .patch(
            "n",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lineworks-operator.dev/reconcile-requested-at": "1"}}})),
        )
        .await
        .expect("poke");
    // Handled by the restarted controller (the old one was stopped before the poke), in one
    // reconcile or two: both changes may reach it before its first list.
    let m = controller.metrics.clone();
    let notifiers = env.notifiers();
    wait_for("the restarted controller to reconcile", WAIT, || {
        let (m, notifiers) = (m.clone(), notifiers.clone());
        async move {
            let handled = notifiers
                .get("n")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| s.last_handled_reconcile_at);
            if m.reconciles_ok() >= 1 && handled.as_deref() == Some("1") {
                Ok(())
            } else {
                Err(format!(
                    "{} reconciles, handled {handled:?}",
                    m.reconciles_ok()
                ))
            }
        }
    })
    .await;
    assert_eq!(
        env.emu.delivered().len(),
        2,
        "not sent again after a restart"
    );

    // The default user is deleted in LINE WORKS: the next test notification says so.
    env.emu.update_world(|w| w.users[0].deleted = true);
    env.patch_spec("n", json!({"testNotification": {"id": "2"}}))
        .await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::TestNotified,
            ConditionStatus::False,
            Reason::DefaultUserNotFound,
        )
        .await;
    assert!(
        c.message.contains("Members") && c.message.contains("hogehoge@testtest"),
        "{}",
        c.message
    );
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::TestNotificationFailed,
    )
    .await;
    let n = env.notifiers().get("n").await.expect("notifier");
    let last = n
        .status
        .and_then(|s| s.last_test_notification)
        .expect("recorded");
    assert_eq!(last.targets.len(), 2);
    assert!(
        !last.targets[0].delivered && last.targets[1].delivered,
        "{last:?}"
    );
    assert_eq!(last.targets[0].code.as_deref(), Some("NOT_FOUND"));

    // Restored and tested again.
    env.emu.update_world(|w| w.users[0].deleted = false);
    env.patch_spec("n", json!({"testNotification": {"id": "3"}}))
        .await;
    env.wait_condition(
        "n",
        ConditionType::TestNotified,
        ConditionStatus::True,
        Reason::TestNotificationDelivered,
    )
    .await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let test_messages = env
        .emu
        .delivered()
        .iter()
        .filter(|d| d.content["text"] == "LINE WORKS テスト通知")
        .count();
    assert_eq!(
        test_messages,
        2 + 1 + 2,
        "ids 1, 2 (room only) and 3, each once"
    );
    controller.stop().await;
}

/// The test notification goes through the same renderer as visitor notifications, and an id is
/// sent at most once even when the spec goes back to it (A → B → A, a GitOps revert).
#[tokio::test]
async fn a_test_notification_id_is_sent_at_most_once_and_rendered_like_any_message() {
    let env = Env::new("testonce", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    let templates = json!({"test": {"text": "テスト通知[[（{{company}}）]]です",
        "i18nTexts": [{"language": "en_US", "text": "Test[[ for {{name}}]]"}]}});
    env.apply_notifier(
        "n",
        json!({"templates": templates, "testNotification": {"id": "a"}}),
    )
    .await;
    env.wait_condition(
        "n",
        ConditionType::TestNotified,
        ConditionStatus::True,
        Reason::TestNotificationDelivered,
    )
    .await;
    let first = env.emu.delivered();
    assert_eq!(first.len(), 2, "DM and room");
    for message in &first {
        assert_eq!(
            message.content["text"], "テスト通知です",
            "rendered, not raw"
        );
        assert_eq!(message.content["i18nTexts"][0]["text"], "Test");
    }

    env.patch_spec("n", json!({"testNotification": {"id": "b"}}))
        .await;
    wait_for("test notification b", WAIT, || async {
        let n = env.emu.delivered().len();
        if n == 4 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    env.patch_spec("n", json!({"testNotification": {"id": "a"}}))
        .await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::TestNotified,
            ConditionStatus::Unknown,
            Reason::NotRequested,
        )
        .await;
    assert!(c.message.contains("sent before"), "{}", c.message);
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    assert_eq!(env.emu.delivered().len(), 4, "a was not sent again");
    let n = env.notifiers().get("n").await.expect("notifier");
    assert_eq!(
        n.status.expect("status").sent_test_notification_ids,
        ["a", "b"]
    );
    controller.stop().await;
}

/// Events about notifier `name`, oldest first, as (type, reason, note).
async fn events(env: &Env, name: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns);
    let mut list: Vec<_> = api
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    list.into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Diagnoses stay true as the cause changes: a scope change takes effect, Events carry the real
/// cause with matching text, NotRequested is no Warning, and a failed test names the user it
/// was sent to even after spec.defaultUser changed.
#[tokio::test]
async fn diagnoses_follow_the_cause_as_it_changes() {
    let env = Env::new("causes", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("n", json!({})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let warnings: Vec<_> = events(&env, "n")
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .collect();
    assert!(
        warnings.is_empty(),
        "a healthy start warns of nothing: {warnings:?}"
    );

    // A scope the app was not granted: asking for it needs a new token, which LINE WORKS refuses.
    env.patch_spec(
        "n",
        json!({"auth": {"mode": "serviceAccount",
        "credentialsSecretRef": {"name": "app"}, "scopes": ["bot", "bot.read", "user.read"]}}),
    )
    .await;
    env.wait_condition(
        "n",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::ScopeMissing,
    )
    .await;
    env.patch_spec(
        "n",
        json!({"auth": {"mode": "serviceAccount",
        "credentialsSecretRef": {"name": "app"}, "scopes": ["bot", "bot.read"]}}),
    )
    .await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;

    // The cause changes while Ready stays False: the newest Events say so.
    let mut wrong = good_credentials();
    wrong["clientSecret"] = json!("not-the-secret");
    env.apply_secret("app", wrong).await;
    env.wait_condition(
        "n",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::InvalidClientCredentials,
    )
    .await;
    let mut other = good_credentials();
    other["privateKey"] = json!(lineworks::fixture("other-service-account.key"));
    env.apply_secret("app", other).await;
    env.wait_condition(
        "n",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::PrivateKeyInvalid,
    )
    .await;
    let seen = wait_for("a Ready Event naming the private key", WAIT, || async {
        let all = events(&env, "n").await;
        let ready = all
            .iter()
            .rev()
            .find(|(_, _, note)| note.starts_with("Ready False"))
            .cloned();
        match ready {
            Some(e) if e.1 == "PrivateKeyInvalid" => Ok(all),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|(_, reason, note)| reason == "NotAuthorized" && note.starts_with("Ready")),
        "Ready's Events carry the real cause, never the summary reason: {seen:?}"
    );
    let latest_private_key = seen
        .iter()
        .rev()
        .find(|(_, reason, _)| reason == "PrivateKeyInvalid")
        .expect("event");
    assert!(
        latest_private_key.2.contains("Service Account"),
        "{latest_private_key:?}"
    );
    assert!(
        seen.iter()
            .filter(|(t, _, _)| t == "Warning")
            .all(|(_, reason, _)| reason != "NotRequested"),
        "{seen:?}"
    );

    // A failed test names the user it went to, not the corrected spec.defaultUser.
    env.apply_good_secret().await;
    env.emu.update_world(|w| w.users[0].deleted = true);
    env.patch_spec("n", json!({"testNotification": {"id": "1"}}))
        .await;
    env.wait_condition(
        "n",
        ConditionType::TestNotified,
        ConditionStatus::False,
        Reason::DefaultUserNotFound,
    )
    .await;
    env.patch_spec("n", json!({"defaultUser": "jinji"})).await;
    let c = env
        .wait_condition(
            "n",
            ConditionType::TestNotified,
            ConditionStatus::False,
            Reason::DefaultUserNotFound,
        )
        .await;
    assert!(
        c.message.contains("no user hogehoge@testtest") && !c.message.contains("no user jinji"),
        "{}",
        c.message
    );
    controller.stop().await;
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_expiry_without_a_failed_send() {
    let mut w = world();
    w.apps[0].access_token_lifetime_secs = 4;
    w.apps[0].refresh_token_rotation = true;
    let env = Env::new("tokens", w).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("n", json!({})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;

    let read_token = || async {
        let s = env
            .secrets()
            .get("n-lineworks-token")
            .await
            .expect("token Secret");
        let data = s.data.expect("data");
        let text = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf-8");
        (text("accessToken"), text("refreshToken"), text("expiresAt"))
    };
    let (first_access, first_refresh, first_expiry) = read_token().await;
    let client = lineworks::client(&env.emu, Duration::from_secs(3), None);
    let mut seen = vec![first_access.clone()];
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    // Send with whatever token the Secret holds, as the relay will, across several lifetimes.
    while started.elapsed() < Duration::from_secs(10) {
        let (access, _, _) = read_token().await;
        if !seen.contains(&access) {
            seen.push(access.clone());
        }
        if let Err(e) = client
            .send_to_user(
                &SecretString::from(access),
                BOT,
                "hogehoge@testtest",
                &Content::text("ping"),
            )
            .await
        {
            failures.push(e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(failures.is_empty(), "sends failed: {failures:?}");
    assert!(
        seen.len() >= 3,
        "renewed at least twice in 10 s of 4-s tokens: {}",
        seen.len()
    );
    let (_, refresh, expiry) = read_token().await;
    assert_ne!(
        refresh, first_refresh,
        "rotation ON: the stored refresh token follows"
    );
    assert!(expiry > first_expiry);
    assert_eq!(
        env.emu.live_refresh_tokens(),
        1,
        "exactly one live refresh token: none lost, none leaked"
    );

    let n = env.notifiers().get("n").await.expect("notifier");
    let status = serde_json::to_string(&n.status).expect("json");
    let events = format!("{:?}", events_of(&env, "n").await);
    for token in &seen {
        assert!(
            !status.contains(token.as_str()) && !events.contains(token.as_str()),
            "a token leaked"
        );
    }
    assert!(!status.contains(&refresh) && !events.contains(&refresh));
    controller.stop().await;
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_reconciles_and_the_other_takes_over() {
    let env = Env::new("leader", world()).await;
    env.apply_good_secret().await;
    let a = env.start_controller(Some("replica-a"));
    wait_for("replica a to lead", WAIT, || {
        let m = a.metrics.clone();
        async move {
            if m.is_leader() {
                Ok(())
            } else {
                Err("standby".into())
            }
        }
    })
    .await;
    let b = env.start_controller(Some("replica-b"));
    env.apply_notifier("n", json!({})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    // The counter moves just after the status write it counts.
    wait_for("the leader's reconcile to be counted", WAIT, || {
        let m = a.metrics.clone();
        async move {
            if m.reconciles_ok() > 0 {
                Ok(())
            } else {
                Err("0".into())
            }
        }
    })
    .await;
    assert!(!b.metrics.is_leader());
    assert_eq!(b.metrics.reconciles_ok(), 0, "the standby wrote nothing");

    a.stop().await;
    wait_for("replica b to take over", WAIT, || {
        let m = b.metrics.clone();
        async move {
            if m.is_leader() {
                Ok(())
            } else {
                Err("standby".into())
            }
        }
    })
    .await;
    env.patch_spec("n", json!({"roomId": ROOM_WITHOUT_BOT}))
        .await;
    env.wait_condition(
        "n",
        ConditionType::BotInService,
        ConditionStatus::False,
        Reason::BotNotInRoom,
    )
    .await;
    wait_for("the new leader's reconciles to be counted", WAIT, || {
        let m = b.metrics.clone();
        async move {
            if m.reconciles_ok() > 0 {
                Ok(())
            } else {
                Err("0".into())
            }
        }
    })
    .await;
    b.stop().await;
}

/// The real binary, as a Deployment runs it: health, readiness and metrics answer, SIGTERM stops
/// it cleanly, and nothing secret reaches its logs even at debug level.
#[tokio::test]
async fn the_controller_binary_serves_health_and_metrics_and_logs_no_secret() {
    let mut w = world();
    w.apps[0].access_token_lifetime_secs = 3;
    let env = Env::new("binary", w).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let logs = tempfile::NamedTempFile::new().expect("log file");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args([
            "controller",
            "--allow-host=127.0.0.1",
            "--renewal-floor-ms=1000",
            "--namespace",
            &env.ns,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", env.plane.kubeconfig_path())
        .env("RUST_LOG", "debug")
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(logs.reopen().expect("log file"))
        .spawn()
        .expect("controller starts");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("/readyz", WAIT, || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            match http.get(format!("{base}/readyz")).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );

    let mut wrong = good_credentials();
    wrong["clientSecret"] = json!("wrong-secret-value-123");
    env.apply_secret("app", wrong).await;
    env.apply_notifier("n", json!({"testNotification": {"id": "a"}}))
        .await;
    env.wait_condition(
        "n",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::InvalidClientCredentials,
    )
    .await;
    env.apply_good_secret().await;
    env.wait_condition(
        "n",
        ConditionType::TestNotified,
        ConditionStatus::True,
        Reason::TestNotificationDelivered,
    )
    .await;
    let first = env
        .secrets()
        .get("n-lineworks-token")
        .await
        .expect("token Secret");
    let token_of = |s: &k8s_openapi::api::core::v1::Secret, k: &str| {
        String::from_utf8(s.data.as_ref().expect("data")[k].0.clone()).expect("utf-8")
    };
    let first_access = token_of(&first, "accessToken");
    wait_for("a renewed token", WAIT, || {
        let (secrets, first_access) = (env.secrets(), first_access.clone());
        async move {
            let s = secrets
                .get("n-lineworks-token")
                .await
                .map_err(|e| e.to_string())?;
            let access =
                String::from_utf8(s.data.expect("data")["accessToken"].0.clone()).expect("utf-8");
            if access != first_access {
                Ok(())
            } else {
                Err("same token".into())
            }
        }
    })
    .await;
    let last = env
        .secrets()
        .get("n-lineworks-token")
        .await
        .expect("token Secret");

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "lineworks_operator_reconciles_total",
        "lineworks_operator_token_grants_total",
        "lineworks_operator_lineworks_calls_total{api=\"get_bot\",status=\"200\"}",
        "lineworks_operator_lineworks_call_duration_seconds_bucket",
        "lineworks_operator_condition_failures_total{condition=\"Authorized\",reason=\"InvalidClientCredentials\"}",
    ] {
        assert!(metrics.contains(name), "{name} in:\n{metrics}");
    }

    // SIGTERM: a clean, prompt exit.
    // SAFETY: plain syscall on the child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");

    let text = std::fs::read_to_string(logs.path()).expect("logs");
    assert!(text.lines().count() > 10, "debug logs were written");
    assert!(text.lines().all(|l| l.starts_with('{')), "JSON lines");
    let key_line = lineworks::fixture("service-account.key")
        .lines()
        .nth(1)
        .expect("key")
        .to_string();
    for secret in [
        token_of(&first, "accessToken"),
        token_of(&first, "refreshToken"),
        token_of(&last, "accessToken"),
        lineworks::CLIENT_SECRET.to_string(),
        "wrong-secret-value-123".to_string(),
        key_line,
    ] {
        assert!(!text.contains(&secret), "a secret is in the logs");
    }
}

#[tokio::test]
async fn a_token_endpoint_outage_during_renewal_keeps_the_current_token_in_use() {
    let mut w = world();
    w.apps[0].access_token_lifetime_secs = 8;
    let env = Env::new("renewal", w).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("n", json!({})).await;
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    env.emu.add_fault(Fault {
        api: "token".into(),
        status: Some(503),
        ..Default::default()
    });
    let c = env
        .wait_condition_saying(
            "n",
            ConditionType::Authorized,
            ConditionStatus::True,
            Reason::TokenValid,
            "renewal failed",
        )
        .await;
    assert!(
        c.message.contains("TokenEndpointUnavailable") || c.message.contains("not answering"),
        "{}",
        c.message
    );
    env.wait_condition(
        "n",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    env.emu.clear_faults();
    let c = env
        .wait_condition_saying(
            "n",
            ConditionType::Authorized,
            ConditionStatus::True,
            Reason::TokenValid,
            "renewed automatically",
        )
        .await;
    assert!(!c.message.contains("failed"));
    controller.stop().await;
}

/// A restarted controller (or a new leader) trusts the bot checks' pass recorded in status until
/// the token's next renewal: a restart of a steady fleet costs LINE WORKS no call. A re-check
/// asked for still runs them.
#[tokio::test]
async fn a_restarted_controller_trusts_the_checks_recorded_in_status() {
    let env = Env::new("restart", world()).await;
    let first = env.start_controller(None);
    env.apply_ready_notifier("desk", json!({})).await;
    let passed = env
        .notifiers()
        .get("desk")
        .await
        .expect("notifier")
        .status
        .and_then(|s| s.bot_checks_passed)
        .expect("status.botChecksPassed");
    assert_eq!(passed.digest.len(), 32, "{passed:?}");
    first.stop().await;

    let calls = env.emu.total_requests();
    let second = env.start_controller(None);
    let m = second.metrics.clone();
    wait_for("the new controller's first reconcile", WAIT, || {
        let ok = m.reconciles_ok();
        async move {
            if ok >= 1 {
                Ok(())
            } else {
                Err(format!("{ok}"))
            }
        }
    })
    .await;
    env.wait_condition(
        "desk",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    assert_eq!(
        env.emu.total_requests(),
        calls,
        "the restart called LINE WORKS"
    );

    // `lineworks-operator recheck` sets this annotation: the checks run again.
    env.notifiers()
        .patch(
            "desk",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lineworks-operator.dev/reconcile-requested-at": "after-restart"}}})),
        )
        .await
        .expect("annotate");
    let emu = &env.emu;
    wait_for("the re-check's calls", WAIT, || {
        let now = emu.total_requests();
        async move {
            if now > calls {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        }
    })
    .await;
    second.stop().await;
}

/// The per-notifier gauges an alert reads: Ready with the reason that decided it (one series per
/// notifier, replaced when the reason changes), the tokens' expiry times, and nothing left of a
/// deleted notifier.
#[tokio::test]
async fn per_notifier_gauges_follow_the_notifier() {
    let env = Env::new("gauges", world()).await;
    let controller = env.start_controller(None);
    env.apply_ready_notifier("front", json!({})).await;
    let ns = env.ns.clone();
    let series = |text: &str, prefix: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&format!("namespace=\"{ns}\"")))
            .map(str::to_string)
            .collect()
    };
    let text = controller.metrics.encode();
    let ready = series(&text, "lineworks_operator_notifier_ready{");
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert!(
        ready[0].contains("reason=\"NotifierReady\"") && ready[0].ends_with(" 1"),
        "{ready:?}"
    );
    let access = series(
        &text,
        "lineworks_operator_notifier_access_token_expiry_timestamp_seconds{",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expires: u64 = access
        .first()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("an access token expiry: {access:?}"));
    assert!(expires > now, "{expires} is in the future");
    // A serviceAccount notifier renews a lapsed refresh token with a JWT: nothing to alert on
    // (tests/alert_rules.rs sees a userAccount notifier's).
    assert_eq!(
        series(
            &text,
            "lineworks_operator_notifier_refresh_token_expiry_timestamp_seconds{"
        )
        .len(),
        0
    );

    let mut wrong = good_credentials();
    wrong["clientSecret"] = json!("not-the-secret");
    env.apply_secret("app", wrong).await;
    env.wait_condition(
        "front",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::InvalidClientCredentials,
    )
    .await;
    let text = controller.metrics.encode();
    let ready = series(&text, "lineworks_operator_notifier_ready{");
    assert_eq!(ready.len(), 1, "one series per notifier: {ready:?}");
    assert!(
        ready[0].contains("reason=\"InvalidClientCredentials\"") && ready[0].ends_with(" 0"),
        "{ready:?}"
    );

    env.notifiers()
        .delete("front", &Default::default())
        .await
        .expect("delete");
    let m = controller.metrics.clone();
    wait_for("the deleted notifier's series gone", WAIT, || {
        let text = m.encode();
        let left = series(&text, "lineworks_operator_notifier_");
        async move {
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        }
    })
    .await;
}
