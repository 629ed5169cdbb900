//! userAccount authorization against a real control plane and the emulator: the signed state,
//! the controller's callback, refusals that store nothing, re-authorization, lost refresh
//! answers, and revocation at deletion.

mod support;

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use kube::ResourceExt;
use kube::api::DeleteParams;
use lineworks_emulator::Fault;
use serde_json::json;
use support::oauth::{self, Authorizing, secret_value};
use support::operator::WAIT;
use support::wait_for;

/// The token Secret's data keys and resourceVersion.
async fn token_secret(env: &support::operator::Env, name: &str) -> Option<(Vec<String>, String)> {
    env.secrets()
        .get_opt(&format!("{name}-lineworks-token"))
        .await
        .expect("read Secret")
        .map(|s| {
            (
                s.data.unwrap_or_default().into_keys().collect(),
                s.metadata.resource_version.unwrap_or_default(),
            )
        })
}

#[tokio::test]
async fn an_administrator_authorizes_once_and_the_link_cannot_be_replayed() {
    let a = Authorizing::new("oauth-ok", |_| {}, Duration::from_secs(600)).await;
    a.apply_user_account_notifier("front").await;
    let url = a
        .authorization_url("front", Reason::AuthorizationRequired)
        .await;
    let state = oauth::state_of(&url);
    assert_eq!(
        state.split('.').count(),
        3,
        "a signed token, not ns/name: {state}"
    );
    assert!(url.starts_with(&a.env.emu.auth_base_url()), "{url}");
    assert!(url.contains("scope=bot%20bot.read"), "{url}");

    // The URL stays the same across reconciles (no status churn).
    a.env
        .notifiers()
        .patch(
            "front",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"lineworks-operator.dev/reconcile-requested-at": "1"}}})),
        )
        .await
        .expect("annotated");
    let again = a
        .authorization_url("front", Reason::AuthorizationRequired)
        .await;
    assert_eq!(again, url);

    // A malformed callback (the code missing) is refused without spending the state.
    let (status, page) = oauth::visit(&format!("{}?state={state}", a.redirect)).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("code parameter is missing"), "{page}");
    // The state is a bearer secret for one authorization: in status only, never in Events.
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(a.env.client.clone(), &a.env.ns);
    for e in events
        .list(&Default::default())
        .await
        .expect("events")
        .items
    {
        let text = format!("{:?} {:?}", e.message, e.metadata.annotations);
        assert!(!text.contains(&state), "the state in an Event: {text}");
    }

    let callback = oauth::consent(&url).await;
    assert!(callback.starts_with(&a.redirect), "{callback}");
    let (status, page) = oauth::visit(&callback).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("is authorized"), "{page}");
    a.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    let (keys, version) = token_secret(&a.env, "front").await.expect("token Secret");
    assert!(keys.contains(&"refreshToken".to_string()), "{keys:?}");
    assert!(
        !keys.contains(&"authorizationState".to_string()),
        "{keys:?}"
    );
    let n = a.env.notifiers().get("front").await.expect("notifier");
    assert_eq!(n.status.and_then(|s| s.authorization_url), None);

    // Replaying the callback (browser back button, a leaked URL) stores nothing.
    let token_calls = a.env.emu.requests("token");
    let (status, page) = oauth::visit(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("already used"), "{page}");
    assert_eq!(
        a.env.emu.requests("token"),
        token_calls,
        "no code exchange on replay"
    );
    let (_, after) = token_secret(&a.env, "front").await.expect("token Secret");
    assert_eq!(after, version, "the Secret was not touched");
    assert_eq!(a.controller.metrics.oauth_callbacks("authorized"), 1);
    assert_eq!(a.controller.metrics.oauth_callbacks("used_state"), 1);
    a.stop().await;
}

#[tokio::test]
async fn forged_expired_and_orphaned_states_are_refused_and_store_nothing() {
    // Links live 6 s here, so one can be seen expiring.
    let a = Authorizing::new("oauth-bad", |_| {}, Duration::from_secs(6)).await;
    a.apply_user_account_notifier("front").await;
    let url = a
        .authorization_url("front", Reason::AuthorizationRequired)
        .await;
    let state = oauth::state_of(&url);
    let callback = oauth::consent(&url).await;

    // Forged: the payload edited to name another notifier, the old unsigned form, and a token
    // signed with another key.
    let parts: Vec<&str> = state.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(engine.decode(parts[1]).expect("payload")).expect("utf-8");
    let edited = engine.encode(payload.replace("\"front\"", "\"back\""));
    let forged_payload = format!("{}.{edited}.{}", parts[0], parts[2]);
    let other_key = lineworks_operator::controller::StateKey::ephemeral();
    let n = a.env.notifiers().get("front").await.expect("notifier");
    let other_signed = other_key.mint(&n, Duration::from_secs(60)).token;
    let unsigned = format!("{}/front", a.env.ns);
    for forged in [forged_payload, unsigned, other_signed] {
        let (status, page) = oauth::visit(&oauth::with_state(&callback, &forged)).await;
        assert_eq!(status, 400, "{page}");
        assert!(page.contains("not issued by this operator"), "{page}");
        assert!(page.contains("Nothing was stored"), "{page}");
    }
    assert_eq!(a.controller.metrics.oauth_callbacks("forged_state"), 3);

    // The administrator declined at LINE WORKS.
    let declined = format!(
        "{}?error=access_denied&error_description=the%20user%20declined&state={}",
        a.redirect,
        urlencode(&state)
    );
    let (status, page) = oauth::visit(&declined).await;
    assert_eq!(status, 400);
    assert!(page.contains("access_denied"), "{page}");

    // Expired: wait until the link's own expiry has passed, then use it.
    let exp = {
        let claims: serde_json::Value = serde_json::from_str(&payload).expect("claims");
        claims["exp"].as_u64().expect("exp")
    };
    wait_for("the link to expire", WAIT, || async move {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        if now > exp {
            Ok(())
        } else {
            Err(format!("{} s left", exp - now))
        }
    })
    .await;
    let (status, page) = oauth::visit(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("expired"), "{page}");

    // Meanwhile the controller offered a fresh link: it works for a notifier that exists, but not
    // once that notifier is deleted. The controller keeps offering a link while a quarter of its
    // life is left, so wait for one with time enough for the deletion below: otherwise it is
    // refused as expired before the missing notifier is noticed.
    let fresh = wait_for("a fresh link with 4 s to live", WAIT, || {
        let a = &a;
        let url = url.clone();
        async move {
            let n = a
                .env
                .notifiers()
                .get("front")
                .await
                .map_err(|e| e.to_string())?;
            let fresh = n.status.and_then(|s| s.authorization_url).ok_or("no URL")?;
            let parts: Vec<String> = oauth::state_of(&fresh)
                .split('.')
                .map(str::to_string)
                .collect();
            let claims: serde_json::Value = parts
                .get(1)
                .and_then(|p| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(p)
                        .ok()
                })
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("an unreadable state")?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let left = claims["exp"]
                .as_u64()
                .unwrap_or_default()
                .saturating_sub(now);
            if fresh != url && left >= 4 {
                Ok(fresh)
            } else {
                Err(format!("the old link, or {left} s left"))
            }
        }
    })
    .await;
    let fresh_callback = oauth::consent(&fresh).await;
    a.env
        .notifiers()
        .delete("front", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for("the notifier to be gone", WAIT, || async {
        match a.env.notifiers().get_opt("front").await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|n| n.map(|n| n.finalizers().to_vec()))
            )),
        }
    })
    .await;
    let (status, page) = oauth::visit(&fresh_callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("no longer exists"), "{page}");

    assert_eq!(a.env.emu.requests("token"), 0, "no code was ever exchanged");
    assert!(
        token_secret(&a.env, "front").await.is_none(),
        "no tokens stored"
    );
    a.stop().await;
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The refresh token's 90 days (what LineWorksRefreshTokenExpiring warns about) count from its own
/// issue: status shows the date from the moment an administrator authorizes, and a refresh that
/// answers no new refresh token (Refresh Token Rotation OFF, the vendor's advice) leaves it alone
/// however many access tokens it renews.
#[tokio::test]
async fn the_refresh_tokens_lapse_date_is_known_at_authorization_and_kept_across_refreshes() {
    let a = Authorizing::new(
        "oauth-lapse",
        |w| w.apps[0].access_token_lifetime_secs = 4,
        Duration::from_secs(600),
    )
    .await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let token_calls = a.env.emu.requests("token");
    a.authorize("front").await;
    let lapse = |n: &lineworks_operator::api::LineWorksNotifier| {
        n.status
            .as_ref()
            .and_then(|s| s.refresh_token_expires_at.as_ref())
            .map(|t| t.0.as_second())
    };
    let n = a.env.notifiers().get("front").await.expect("notifier");
    let first = lapse(&n).expect("status.refreshTokenExpiresAt once authorized");
    let ninety_days = 90 * 86_400;
    assert!(
        (before + ninety_days - 5..=before + ninety_days + 60).contains(&first),
        "{first} is 90 days after the authorization ({before})"
    );
    let stored = |secret: &k8s_openapi::api::core::v1::Secret| {
        (
            secret_value(secret, "refreshToken"),
            secret_value(secret, "refreshTokenIssuedAt"),
            secret_value(secret, "accessToken"),
        )
    };
    let secrets = a.env.secrets();
    let (refresh, issued, access) =
        stored(&secrets.get("front-lineworks-token").await.expect("Secret"));
    assert_eq!(issued.parse::<i64>().ok(), Some(first - ninety_days));

    // Access tokens live 4 s here: wait for two renewals by refresh.
    wait_for("two access-token renewals", WAIT, || {
        let (secrets, access) = (secrets.clone(), access.clone());
        let calls = a.env.emu.requests("token") - token_calls;
        async move {
            let now = stored(
                &secrets
                    .get("front-lineworks-token")
                    .await
                    .map_err(|e| e.to_string())?,
            );
            if now.2 != access && calls >= 3 {
                Ok(())
            } else {
                Err(format!("{calls} token calls"))
            }
        }
    })
    .await;
    let (refresh_after, issued_after, _) =
        stored(&secrets.get("front-lineworks-token").await.expect("Secret"));
    assert_eq!(
        refresh_after, refresh,
        "rotation OFF: the same refresh token"
    );
    assert_eq!(issued_after, issued, "and the same issue time");
    let n = a.env.notifiers().get("front").await.expect("notifier");
    assert_eq!(lapse(&n), Some(first), "status keeps the first date");
    a.stop().await;
}

#[tokio::test]
async fn a_lapsed_refresh_token_asks_for_reauthorization_and_authorizing_again_recovers() {
    let a = Authorizing::new(
        "oauth-reauth",
        |w| {
            w.apps[0].refresh_token_rotation = true;
            w.apps[0].access_token_lifetime_secs = 4;
        },
        Duration::from_secs(600),
    )
    .await;
    let url = a.authorize("front").await;
    a.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    let uid = a
        .env
        .notifiers()
        .get("front")
        .await
        .expect("notifier")
        .uid();

    // 90 days pass without a refresh (or the admin's password changes): the refresh is refused.
    a.env.emu.expire_refresh_tokens();
    a.env
        .wait_condition_saying(
            "front",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::ReauthorizationRequired,
            "90 days",
        )
        .await;
    let again = a
        .authorization_url("front", Reason::ReauthorizationRequired)
        .await;
    assert_ne!(again, url, "a new link");
    let (status, page) = oauth::visit(&oauth::consent(&again).await).await;
    assert_eq!(status, 200, "{page}");
    a.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    let n = a.env.notifiers().get("front").await.expect("notifier");
    assert_eq!(n.uid(), uid, "the same notifier, not recreated");
    let secret = a
        .env
        .secrets()
        .get("front-lineworks-token")
        .await
        .expect("token Secret");
    assert!(
        a.env
            .emu
            .refresh_token_works(&secret_value(&secret, "refreshToken"))
    );
    a.stop().await;
}

#[tokio::test]
async fn a_refresh_whose_answer_is_lost_is_reported_as_interrupted_not_as_ninety_days() {
    let a = Authorizing::new(
        "oauth-lost",
        |w| {
            w.apps[0].refresh_token_rotation = true;
            w.apps[0].access_token_lifetime_secs = 4;
        },
        Duration::from_secs(600),
    )
    .await;
    a.authorize("front").await;
    a.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    // LINE WORKS rotates the refresh token but the answer never arrives.
    a.env.emu.add_fault(Fault {
        api: "token".into(),
        drop_answer: true,
        times: Some(1),
        ..Default::default()
    });
    let c = a
        .env
        .wait_condition_saying(
            "front",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::ReauthorizationRequired,
            "never finished",
        )
        .await;
    assert!(
        c.message.contains("Refresh Token Rotation"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("status.authorizationURL"),
        "{}",
        c.message
    );
    a.stop().await;
}

/// A wrong client secret in userAccount mode shows up when the code is exchanged at the
/// callback: the condition says so (not "an administrator must authorize" forever), and so does
/// the page. A member who is not an administrator gets a reason of its own.
#[tokio::test]
async fn failed_authorizations_are_diagnosed_by_their_cause() {
    let a = Authorizing::new("oauth-causes", |_| {}, Duration::from_secs(600)).await;
    a.env
        .apply_secret(
            "app",
            json!({"clientId": support::lineworks::CLIENT_ID, "clientSecret": "rotated-by-someone"}),
        )
        .await;
    a.apply_user_account_notifier("front").await;
    let url = a
        .authorization_url("front", Reason::AuthorizationRequired)
        .await;
    let first = a.env.notifiers().get("front").await.expect("notifier");
    let message = first
        .condition(ConditionType::Authorized)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        !message.contains("https://") && message.contains("status.authorizationURL"),
        "one line; the link is in status: {message}"
    );
    let (status, page) = oauth::visit(&oauth::consent(&url).await).await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("Client Secret"), "{page}");
    a.env
        .wait_condition_saying(
            "front",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::InvalidClientCredentials,
            "when the code was exchanged",
        )
        .await;

    // Fixed credentials: the old failure no longer applies; a member who is not an administrator
    // signs in next.
    a.env
        .apply_secret(
            "app",
            json!({"clientId": support::lineworks::CLIENT_ID, "clientSecret": support::lineworks::CLIENT_SECRET}),
        )
        .await;
    let url = a
        .authorization_url("front", Reason::AuthorizationRequired)
        .await;
    let (status, page) = oauth::visit(&oauth::consent_as(&url, "jinji@testtest").await).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("administrator"), "{page}");
    a.env
        .wait_condition(
            "front",
            ConditionType::Authorized,
            ConditionStatus::False,
            Reason::AuthorizationDenied,
        )
        .await;

    // An administrator authorizes: Ready.
    let url = a
        .authorization_url("front", Reason::AuthorizationDenied)
        .await;
    let (status, page) = oauth::visit(&oauth::consent(&url).await).await;
    assert_eq!(status, 200, "{page}");
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

/// A 5xx from the token endpoint after it rotated the refresh token: the refresh is not sent
/// again with the spent token (that would turn "interrupted" into a plain refusal), and the claim
/// stays, so the diagnosis names the interrupted refresh.
#[tokio::test]
async fn a_refresh_answered_with_a_server_error_is_not_repeated() {
    for status in [500, 502, 504] {
        let a = Authorizing::new(
            &format!("oauth-5xx-{status}"),
            |w| {
                w.apps[0].refresh_token_rotation = true;
                w.apps[0].access_token_lifetime_secs = 4;
            },
            Duration::from_secs(600),
        )
        .await;
        a.authorize("front").await;
        a.env
            .wait_condition(
                "front",
                ConditionType::Ready,
                ConditionStatus::True,
                Reason::NotifierReady,
            )
            .await;
        let before = a.env.emu.requests("token");
        a.env.emu.add_fault(Fault {
            api: "token".into(),
            status: Some(status),
            after_processing: true,
            times: Some(1),
            ..Default::default()
        });
        let c = a
            .env
            .wait_condition_saying(
                "front",
                ConditionType::Authorized,
                ConditionStatus::False,
                Reason::ReauthorizationRequired,
                "never finished",
            )
            .await;
        assert!(
            c.message.contains("Refresh Token Rotation"),
            "{}",
            c.message
        );
        // The failed refresh, then one more with the (spent) token at the next reconcile: never
        // a retry inside one call.
        let sent = a.env.emu.requests("token") - before;
        assert_eq!(sent, 2, "token requests after the fault (HTTP {status})");
        a.stop().await;
    }
}

#[tokio::test]
async fn deleting_a_notifier_revokes_its_tokens_and_a_refusal_never_blocks_deletion() {
    let a = Authorizing::new("oauth-revoke", |_| {}, Duration::from_secs(600)).await;
    for name in ["front", "back"] {
        a.authorize(name).await;
        a.env
            .wait_condition(
                name,
                ConditionType::Ready,
                ConditionStatus::True,
                Reason::NotifierReady,
            )
            .await;
    }
    let n = a.env.notifiers().get("front").await.expect("notifier");
    assert!(
        n.finalizers()
            .iter()
            .any(|f| f == "lineworks-operator.dev/revoke-tokens"),
        "{:?}",
        n.finalizers()
    );
    let secret = a
        .env
        .secrets()
        .get("front-lineworks-token")
        .await
        .expect("Secret");
    let refresh = secret_value(&secret, "refreshToken");
    assert!(a.env.emu.refresh_token_works(&refresh));

    a.env
        .notifiers()
        .delete("front", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for("front to be gone", WAIT, || async {
        match a.env.notifiers().get_opt("front").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|n| n.is_some()))),
        }
    })
    .await;
    assert!(
        !a.env.emu.refresh_token_works(&refresh),
        "revoked at LINE WORKS"
    );
    assert!(
        token_secret(&a.env, "front").await.is_none(),
        "token Secret deleted"
    );

    // LINE WORKS refuses the revocation: the deletion still completes, with a Warning event.
    a.env.emu.add_fault(Fault {
        api: "revoke".into(),
        status: Some(400),
        body: Some(json!({"error": "invalid_request", "error_description": "refused"})),
        ..Default::default()
    });
    a.env
        .notifiers()
        .delete("back", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for("back to be gone", WAIT, || async {
        match a.env.notifiers().get_opt("back").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|n| n.is_some()))),
        }
    })
    .await;
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(a.env.client.clone(), &a.env.ns);
    for (name, reason) in [
        ("front", "TokensRevoked"),
        ("back", "TokenRevocationFailed"),
    ] {
        wait_for(&format!("{reason} on {name}"), WAIT, || {
            let events = events.clone();
            async move {
                let list = events
                    .list(
                        &kube::api::ListParams::default()
                            .fields(&format!("involvedObject.name={name}")),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let reasons: Vec<String> =
                    list.items.iter().filter_map(|e| e.reason.clone()).collect();
                if reasons.iter().any(|r| r == reason) {
                    Ok(())
                } else {
                    Err(format!("{reasons:?}"))
                }
            }
        })
        .await;
    }
    a.stop().await;
}
