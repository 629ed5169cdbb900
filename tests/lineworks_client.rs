//! The LINE WORKS client against the emulator: every path the controller and relay rely on.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lineworks_client::{
    Action, Api, ClientCredentials, Content, ExposeSecret, I18nText, LineWorksClient,
    LineWorksError, SecretString, ServiceAccount, TokenKind, TokenSet,
};
use lineworks_emulator::Fault;
use serde_json::json;
use support::lineworks::*;

const DEADLINE: Duration = Duration::from_secs(5);

fn fault(api: &str, status: u16, body: serde_json::Value, times: u32) -> Fault {
    Fault {
        api: api.into(),
        status: Some(status),
        body: Some(body),
        times: Some(times),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_service_account_jwt_is_verified_and_its_token_works() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let tokens = client
        .issue_service_account_token(
            &credentials(),
            &service_account("service-account.key"),
            &scopes(),
        )
        .await
        .expect("the emulator verifies the RS256 assertion");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.scope, "bot bot.read");
    assert!(tokens.refresh_token.is_some());
    let bot = client
        .get_bot(&tokens.access_token, BOT)
        .await
        .expect("bot");
    assert_eq!(bot.bot_name, "RECEPTIONIST");
    assert_eq!(bot.allow_domains, vec![DOMAIN_ID]);
}

#[tokio::test]
async fn a_jwt_signed_with_another_key_or_a_wrong_secret_is_refused() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let err = client
        .issue_service_account_token(
            &credentials(),
            &service_account("other-service-account.key"),
            &scopes(),
        )
        .await
        .expect_err("signature does not verify");
    match &err {
        LineWorksError::TokenRejected { status: 400, body } => {
            assert_eq!(body.code, "invalid_grant")
        }
        other => panic!("unexpected {other:?}"),
    }

    let wrong = ClientCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: SecretString::from("not-the-secret"),
    };
    let err = client
        .issue_service_account_token(&wrong, &service_account("service-account.key"), &scopes())
        .await
        .expect_err("wrong secret");
    match &err {
        LineWorksError::TokenRejected { status: 401, body } => {
            assert_eq!(body.code, "invalid_client")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(emu.requests("token"), 2, "client errors are not retried");

    let unknown_account = ServiceAccount::new(
        "nobody@testtest",
        &SecretString::from(fixture("service-account.key")),
    )
    .expect("key parses");
    let err = client
        .issue_service_account_token(&credentials(), &unknown_account, &scopes())
        .await
        .expect_err("sub is not a service account of the app");
    assert!(err.to_string().contains("sub"), "{err}");

    let err = client
        .issue_service_account_token(
            &credentials(),
            &service_account("service-account.key"),
            &["bot".into(), "user.read".into()],
        )
        .await
        .expect_err("scope not registered");
    assert_eq!(err.body().map(|b| b.code.as_str()), Some("invalid_scope"));
}

#[tokio::test]
async fn bad_private_keys_are_refused_before_any_request_without_quoting_the_key() {
    for (pem, expected) in [
        ("just some text", "not PEM"),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nabc\n-----END ENCRYPTED PRIVATE KEY-----",
            "encrypted",
        ),
        (
            "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----",
            "not an RSA private key",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA-truncated\n-----END PRIVATE KEY-----",
            "could not be parsed",
        ),
    ] {
        let err =
            ServiceAccount::new(SERVICE_ACCOUNT, &SecretString::from(pem)).expect_err("rejected");
        let text = err.to_string();
        assert!(matches!(err, LineWorksError::PrivateKeyInvalid(_)));
        assert!(text.contains(expected), "{text}");
        assert!(
            !text.contains("AAAA-truncated") && !text.contains("abc"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn expires_in_is_understood_as_a_string_and_as_a_number() {
    for as_string in [true, false] {
        let mut w = world();
        w.apps[0].expires_in_as_string = as_string;
        w.apps[0].access_token_lifetime_secs = 3600;
        let emu = emulator(w).await;
        let tokens = issue(&client(&emu, DEADLINE, None)).await;
        assert_eq!(
            tokens.expires_in,
            Duration::from_secs(3600),
            "as_string={as_string}"
        );
    }
}

#[tokio::test]
async fn refresh_with_rotation_on_replaces_the_refresh_token_and_the_old_one_dies() {
    let mut w = world();
    w.apps[0].refresh_token_rotation = true;
    let emu = emulator(w).await;
    let client = client(&emu, DEADLINE, None);
    let first = issue(&client).await;
    let old = first.refresh_token.clone().expect("refresh token");
    let refreshed = client.refresh(&credentials(), &old).await.expect("refresh");
    assert!(refreshed.rotated);
    let new = refreshed
        .tokens
        .refresh_token
        .clone()
        .expect("new refresh token");
    assert_ne!(new.expose_secret(), old.expose_secret());
    client
        .get_bot(&refreshed.tokens.access_token, BOT)
        .await
        .expect("new access token works");

    let err = client
        .refresh(&credentials(), &old)
        .await
        .expect_err("old refresh token is spent");
    assert!(
        matches!(err, LineWorksError::TokenRejected { status: 400, .. }),
        "{err:?}"
    );
    client
        .refresh(&credentials(), &new)
        .await
        .expect("the new one works");
}

#[tokio::test]
async fn refresh_with_rotation_off_keeps_the_old_refresh_token() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let first = issue(&client).await;
    let old = first.refresh_token.clone().expect("refresh token");
    for _ in 0..2 {
        let refreshed = client.refresh(&credentials(), &old).await.expect("refresh");
        assert!(!refreshed.rotated);
        let kept = refreshed.tokens.refresh_token.expect("kept");
        assert_eq!(kept.expose_secret(), old.expose_secret());
        assert_ne!(
            refreshed.tokens.access_token.expose_secret(),
            first.access_token.expose_secret()
        );
    }
}

#[tokio::test]
async fn authorization_code_flow_through_the_consent_page_and_single_use_codes() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let url = client.authorize_url(CLIENT_ID, REDIRECT, &scopes(), "state-123");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Foauth%2Fcallback"),
        "{url}"
    );
    assert!(url.contains("scope=bot%20bot.read"), "{url}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http");
    let page = browser.get(&url).send().await.expect("consent page");
    assert_eq!(page.status(), 200);
    let consent = [
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "bot bot.read"),
        ("response_type", "code"),
        ("state", "state-123"),
    ];
    let not_admin = browser
        .post(format!("{}/authorize", emu.auth_base_url()))
        .form(&[consent.as_slice(), &[("login_id", "hogehoge@testtest")]].concat())
        .send()
        .await
        .expect("consent");
    assert_eq!(not_admin.status(), 302, "refused back to the redirect URI");
    let refused = not_admin.headers()["location"].to_str().expect("location");
    assert!(
        refused.contains("error=access_denied") && !refused.contains("code="),
        "only administrators may authorize: {refused}"
    );
    let answer = browser
        .post(format!("{}/authorize", emu.auth_base_url()))
        .form(&[consent.as_slice(), &[("login_id", "admin@testtest")]].concat())
        .send()
        .await
        .expect("consent");
    assert_eq!(answer.status(), 302);
    let location = answer.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        location.starts_with(REDIRECT) && location.contains("state=state-123"),
        "{location}"
    );
    let code = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .expect("code");
    let code = SecretString::from(code.to_string());

    let tokens = client
        .exchange_code(&credentials(), &code, REDIRECT)
        .await
        .expect("exchange");
    client
        .get_bot(&tokens.access_token, BOT)
        .await
        .expect("token works");
    let replay = client
        .exchange_code(&credentials(), &code, REDIRECT)
        .await
        .expect_err("single use");
    assert!(replay.to_string().contains("already used"), "{replay}");

    // An administrator's password change breaks the link until re-authorized.
    assert!(emu.user_password_changed("u-admin") >= 2);
    let refresh = tokens.refresh_token.expect("refresh token");
    assert!(client.refresh(&credentials(), &refresh).await.is_err());
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let tokens = issue(&client).await;
    let refresh = tokens.refresh_token.clone().expect("refresh");
    client
        .revoke(&credentials(), &refresh, TokenKind::Refresh)
        .await
        .expect("revoke refresh");
    client
        .revoke(&credentials(), &tokens.access_token, TokenKind::Access)
        .await
        .expect("revoke access");
    assert!(client.refresh(&credentials(), &refresh).await.is_err());
    let err = client
        .get_bot(&tokens.access_token, BOT)
        .await
        .expect_err("revoked");
    assert!(
        matches!(err, LineWorksError::Unauthorized { status: 403, .. }),
        "{err:?}"
    );
}

async fn token(emu: &lineworks_emulator::Emulator) -> SecretString {
    issue(&client(emu, DEADLINE, None)).await.access_token
}

/// Tokens for the test app's Service Account, through `client`.
async fn issue(client: &LineWorksClient) -> TokenSet {
    client
        .issue_service_account_token(
            &credentials(),
            &service_account("service-account.key"),
            &scopes(),
        )
        .await
        .expect("token")
}

#[tokio::test]
async fn a_login_id_with_at_reaches_the_right_user_and_rooms_get_messages() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let token = token(&emu).await;
    client
        .send_to_user(&token, BOT, "hogehoge@testtest", &Content::text("来客です"))
        .await
        .expect("DM by login ID");
    client
        .send_to_user(&token, BOT, "u-jinji", &Content::text("by user ID"))
        .await
        .expect("DM by user ID");
    let content = Content::Text {
        text: "来客です".into(),
        i18n_texts: vec![I18nText {
            language: "en_US".into(),
            text: "A visitor".into(),
        }],
    };
    client
        .send_to_channel(&token, BOT, ROOM, &content)
        .await
        .expect("room");
    client
        .send_to_channel(
            &token,
            BOT,
            ROOM,
            &Content::ButtonTemplate {
                content_text: "受付".into(),
                actions: vec![
                    Action::Uri {
                        label: "Open".into(),
                        uri: "https://example.com".into(),
                    },
                    Action::Message {
                        label: "OK".into(),
                        postback: Some("ok".into()),
                    },
                ],
            },
        )
        .await
        .expect("button template");
    client
        .send_to_channel(
            &token,
            BOT,
            ROOM,
            &Content::Link {
                content_text: "受付".into(),
                link_text: "open".into(),
                link: "https://example.com".into(),
            },
        )
        .await
        .expect("link");

    let delivered = emu.delivered();
    assert_eq!(delivered.len(), 5);
    assert_eq!(
        (delivered[0].target.as_str(), delivered[0].resolved.as_str()),
        ("hogehoge@testtest", "u-hoge")
    );
    assert_eq!(
        delivered[0].content,
        json!({"type": "text", "text": "来客です"})
    );
    assert_eq!(delivered[1].resolved, "u-jinji");
    assert_eq!(delivered[2].kind, "channel");
    assert_eq!(delivered[2].content["i18nTexts"][0]["language"], "en_US");
    assert_eq!(delivered[3].content["type"], "button_template");
    assert_eq!(delivered[4].content["linkText"], "open");
}

#[tokio::test]
async fn bot_checks_report_not_found_forbidden_and_follow_pages() {
    let mut w = world();
    w.page_size = 1;
    w.bots[0].domains = vec![DOMAIN_ID, OTHER_DOMAIN_ID, 10_000_003];
    let emu = emulator(w).await;
    let client = client(&emu, DEADLINE, None);
    let token = token(&emu).await;

    let domains = client.list_bot_domains(&token, BOT).await.expect("domains");
    let ids: Vec<i64> = domains.iter().map(|d| d.domain_id).collect();
    assert_eq!(
        ids,
        vec![DOMAIN_ID, OTHER_DOMAIN_ID, 10_000_003],
        "three pages followed"
    );
    assert!(
        client
            .list_bot_domains(&token, LONELY_BOT)
            .await
            .expect("empty")
            .is_empty()
    );

    let members = client
        .list_channel_members(&token, BOT, ROOM)
        .await
        .expect("members");
    assert_eq!(members, vec!["u-hoge", "u-jinji", "u-admin"]);
    let channel = client
        .get_channel(&token, BOT, ROOM)
        .await
        .expect("channel");
    assert_eq!(
        (channel.channel_id.as_str(), channel.domain_id),
        (ROOM, Some(DOMAIN_ID))
    );

    let err = client
        .get_bot(&token, 9_999_999)
        .await
        .expect_err("unknown bot");
    assert!(
        matches!(
            err,
            LineWorksError::NotFound {
                api: Api::GetBot,
                ..
            }
        ),
        "{err:?}"
    );
    let err = client
        .get_channel(&token, BOT, "no-such-room")
        .await
        .expect_err("unknown room");
    assert!(matches!(err, LineWorksError::NotFound { .. }), "{err:?}");
    let err = client
        .get_channel(&token, BOT, ROOM_WITHOUT_BOT)
        .await
        .expect_err("bot not in room");
    assert!(matches!(err, LineWorksError::Forbidden { .. }), "{err:?}");
    let err = client
        .send_to_user(&token, LONELY_BOT, "hogehoge@testtest", &Content::text("x"))
        .await
        .expect_err("bot not added to the domain");
    assert!(matches!(err, LineWorksError::Forbidden { .. }), "{err:?}");
    let err = client
        .send_to_user(&token, BOT, "nobody@testtest", &Content::text("x"))
        .await
        .expect_err("unknown user");
    assert!(
        matches!(
            err,
            LineWorksError::NotFound {
                api: Api::SendUserMessage,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn expired_tokens_show_as_unauthorized_whether_401_or_403_unauthorized() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let token = token(&emu).await;
    emu.expire_access_tokens();
    let err = client.get_bot(&token, BOT).await.expect_err("expired");
    assert!(
        matches!(err, LineWorksError::Unauthorized { status: 403, .. }),
        "{err:?}"
    );
    let token = self::token(&emu).await;
    emu.add_fault(fault(
        "get_bot",
        401,
        json!({"code": "UNAUTHORIZED", "description": "x"}),
        1,
    ));
    let err = client.get_bot(&token, BOT).await.expect_err("401");
    assert!(
        matches!(err, LineWorksError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(err.body().map(|b| b.description.as_str()), Some("x"));
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_the_headers_ask_for() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let token = token(&emu).await;
    let mut limited = fault(
        "send_user_message",
        429,
        json!({"code": "TOO_MANY_REQUESTS", "description": "API rate limit exceeded"}),
        1,
    );
    limited.headers = BTreeMap::from([
        ("rateLimit-limit".into(), "240".into()),
        ("rateLimit-remaining".into(), "0".into()),
        ("rateLimit-reset".into(), "2".into()),
    ]);
    emu.add_fault(limited);
    let started = Instant::now();
    client
        .send_to_user(
            &token,
            BOT,
            "hogehoge@testtest",
            &Content::text("after the wait"),
        )
        .await
        .expect("delivered on retry");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    assert_eq!(emu.requests("send_user_message"), 2);
    assert_eq!(emu.delivered().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn the_emulator_limits_per_minute_with_headers_and_the_client_paces_itself() {
    let mut w = world();
    w.rate_limit_per_minute = 5;
    let emu = emulator(w).await;
    let token = token(&emu).await;
    let http = reqwest::Client::new();
    let mut remaining = Vec::new();
    let mut last_status = 0;
    for _ in 0..6 {
        let r = http
            .get(format!("{}/bots/{BOT}", emu.api_base_url()))
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .expect("answer");
        last_status = r.status().as_u16();
        remaining.push(
            r.headers()["ratelimit-remaining"]
                .to_str()
                .expect("header")
                .to_string(),
        );
        assert_eq!(r.headers()["ratelimit-limit"], "5");
        assert!(r.headers().contains_key("ratelimit-reset"));
        if last_status == 429 {
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(
                body,
                json!({"code": "TOO_MANY_REQUESTS", "description": "API rate limit exceeded"})
            );
        }
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0", "0"]);
    assert_eq!(last_status, 429);

    // A client paced at 5/min for this domain spends its burst at once, then waits for refill
    // instead of hammering the service.
    let paced = client(&emu, Duration::from_millis(800), Some(5));
    let other_api = paced.list_bot_domains(&token, BOT).await;
    assert!(other_api.is_ok(), "limits are per API: {other_api:?}");
    let second = paced
        .list_bot_domains(&token, BOT)
        .await
        .expect_err("paced beyond the deadline");
    assert!(
        matches!(
            second,
            LineWorksError::DeadlineExceeded { .. }
                | LineWorksError::Timeout {
                    maybe_delivered: false,
                    ..
                }
        ),
        "{second:?}"
    );
    assert_eq!(
        emu.requests("list_bot_domains"),
        1,
        "the paced call never reached the service"
    );
}

/// An answer saying the domain's budget is spent (another app of the domain used it) holds this
/// budget's next call back until the window resets, instead of drawing a 429; the pause an
/// answer can ask for is at most a minute.
#[tokio::test]
async fn an_answer_saying_the_budget_is_spent_holds_the_next_call_until_the_reset() {
    let emu = emulator(world()).await;
    let token = token(&emu).await;
    emu.add_fault(Fault {
        api: "get_bot".into(),
        status: Some(200),
        after_processing: true,
        body: Some(json!({"botId": BOT, "botName": "RECEPTIONIST"})),
        headers: [
            ("rateLimit-remaining".to_string(), "0".to_string()),
            ("rateLimit-reset".to_string(), "2".to_string()),
        ]
        .into(),
        times: Some(1),
        ..Default::default()
    });
    let paced = client(&emu, Duration::from_secs(10), Some(240));
    paced.get_bot(&token, BOT).await.expect("first");
    let started = Instant::now();
    paced.get_bot(&token, BOT).await.expect("second");
    // The bucket alone would let the second call go at once (a burst of 2 at 240/min).
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(emu.rate_limited(), 0);
}

#[tokio::test]
async fn a_deadline_stops_retrying_and_reports_the_last_error() {
    let emu = emulator(world()).await;
    let token = token(&emu).await;
    emu.add_fault(Fault {
        api: "get_bot".into(),
        status: Some(503),
        ..Default::default()
    });
    let client = client(&emu, Duration::from_millis(1500), None);
    let started = Instant::now();
    let err = client
        .get_bot(&token, BOT)
        .await
        .expect_err("never succeeds");
    let took = started.elapsed();
    match &err {
        LineWorksError::DeadlineExceeded { attempts, last } => {
            assert!(*attempts >= 2, "retried before giving up: {attempts}");
            assert!(
                matches!(**last, LineWorksError::Server { status: 503, .. }),
                "{last:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(took < Duration::from_millis(2500), "took {took:?}");

    // A 429 asking for longer than the deadline allows is given up at once.
    emu.clear_faults();
    let mut limited = fault(
        "get_bot",
        429,
        json!({"code": "TOO_MANY_REQUESTS", "description": "API rate limit exceeded"}),
        1,
    );
    limited.headers = BTreeMap::from([("rateLimit-reset".into(), "30".into())]);
    emu.add_fault(limited);
    let started = Instant::now();
    let err = client
        .get_bot(&token, BOT)
        .await
        .expect_err("would wait 30 s");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(err.retry_after(), None, "wrapped: {err:?}");
    assert!(
        matches!(err, LineWorksError::DeadlineExceeded { attempts: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried_only_where_safe() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let token = token(&emu).await;

    emu.add_fault(fault(
        "get_bot",
        500,
        json!({"code": "INTERNAL_SERVER_ERROR", "description": "x"}),
        2,
    ));
    client
        .get_bot(&token, BOT)
        .await
        .expect("succeeds on the third attempt");
    assert_eq!(emu.requests("get_bot"), 3);

    emu.add_fault(Fault {
        api: "get_bot".into(),
        drop: true,
        times: Some(1),
        ..Default::default()
    });
    client
        .get_bot(&token, BOT)
        .await
        .expect("a read is retried after a dropped connection");

    // A message whose connection dropped after sending may have been delivered: not resent.
    emu.add_fault(Fault {
        api: "send_user_message".into(),
        drop: true,
        times: Some(1),
        ..Default::default()
    });
    let err = client
        .send_to_user(&token, BOT, "hogehoge@testtest", &Content::text("once"))
        .await
        .expect_err("ambiguous");
    assert!(
        matches!(
            err,
            LineWorksError::Transport {
                maybe_delivered: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(emu.requests("send_user_message"), 1, "not resent");

    // A slow answer times out per attempt.
    emu.add_fault(Fault {
        api: "send_channel_message".into(),
        delay_ms: 3000,
        times: Some(1),
        ..Default::default()
    });
    let err = client
        .send_to_channel(&token, BOT, ROOM, &Content::text("slow"))
        .await
        .expect_err("timeout");
    assert!(
        matches!(
            err,
            LineWorksError::Timeout {
                maybe_delivered: true,
                ..
            }
        ),
        "{err:?}"
    );

    // 503 on a send is retried: the service did not take it.
    emu.add_fault(fault(
        "send_channel_message",
        503,
        json!({"code": "SERVICE_UNAVAILABLE", "description": "x"}),
        1,
    ));
    client
        .send_to_channel(&token, BOT, ROOM, &Content::text("after 503"))
        .await
        .expect("retried");
    let texts: Vec<_> = emu
        .delivered()
        .iter()
        .map(|d| d.content["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("after 503")]);
}

/// A server may fail after doing the work. A refresh (rotation ON) or code exchange spends what it
/// carries, so it is sent at most once; a message send is retried (at least once: LINE WORKS has
/// no idempotency key), so the user may get it twice.
#[tokio::test]
async fn after_a_server_error_refresh_is_not_repeated_and_a_send_is() {
    let mut w = world();
    w.apps[0].refresh_token_rotation = true;
    let emu = emulator(w).await;
    let client = client(&emu, DEADLINE, None);
    let tokens = issue(&client).await;
    let refresh = tokens.refresh_token.clone().expect("refresh token");
    for status in [500, 502, 504] {
        let before = emu.requests("token");
        emu.add_fault(Fault {
            api: "token".into(),
            status: Some(status),
            after_processing: true,
            times: Some(1),
            ..Default::default()
        });
        let err = client
            .refresh(&credentials(), &refresh)
            .await
            .expect_err("the answer was a server error");
        assert!(
            matches!(err, LineWorksError::Server { .. }) && err.maybe_processed(),
            "{err:?}"
        );
        assert_eq!(
            emu.requests("token") - before,
            1,
            "HTTP {status}: sent once"
        );
    }
    assert!(
        !emu.refresh_token_works(refresh.expose_secret()),
        "the emulator did rotate it: a repeat would have been refused"
    );

    emu.add_fault(Fault {
        api: "send_user_message".into(),
        status: Some(500),
        after_processing: true,
        times: Some(1),
        ..Default::default()
    });
    client
        .send_to_user(
            &tokens.access_token,
            BOT,
            "hogehoge@testtest",
            &Content::text("twice"),
        )
        .await
        .expect("retried after the 500");
    assert_eq!(emu.requests("send_user_message"), 2);
    let copies = emu
        .delivered()
        .iter()
        .filter(|d| d.content["text"] == json!("twice"))
        .count();
    assert_eq!(copies, 2, "at least once: the user got it twice");
}

#[tokio::test]
async fn content_over_the_limits_is_refused_before_sending() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let token = token(&emu).await;
    let long = "あ".repeat(2001);
    let err = client
        .send_to_user(&token, BOT, "u-hoge", &Content::text(long))
        .await
        .expect_err("too long");
    assert!(err.to_string().contains("2001 characters"), "{err}");
    client
        .send_to_user(&token, BOT, "u-hoge", &Content::text("あ".repeat(2000)))
        .await
        .expect("2,000 multibyte characters are fine");
    assert_eq!(emu.requests("send_user_message"), 1);
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug_output() {
    let emu = emulator(world()).await;
    let client = client(&emu, DEADLINE, None);
    let creds = credentials();
    let key = fixture("service-account.key");
    let account = service_account("service-account.key");
    let tokens = client
        .issue_service_account_token(&creds, &account, &scopes())
        .await
        .expect("token");
    let refresh = tokens.refresh_token.clone().expect("refresh");
    let mut outputs = vec![
        format!("{creds:?}"),
        format!("{account:?}"),
        format!("{tokens:?}"),
        format!("{client:?}"),
    ];

    let wrong = ClientCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: SecretString::from("wrong-secret-xyz"),
    };
    for err in [
        client
            .issue_service_account_token(&wrong, &account, &scopes())
            .await
            .expect_err("wrong secret"),
        client
            .refresh(&wrong, &refresh)
            .await
            .expect_err("wrong secret"),
        client
            .exchange_code(&creds, &SecretString::from("code-abc"), REDIRECT)
            .await
            .expect_err("bad code"),
    ] {
        outputs.push(err.to_string());
        outputs.push(format!("{err:?}"));
    }
    emu.expire_access_tokens();
    let err = client
        .get_bot(&tokens.access_token, BOT)
        .await
        .expect_err("expired");
    outputs.push(format!("{err} {err:?}"));

    let key_body: String = key.lines().nth(1).expect("key line").to_string();
    for text in &outputs {
        for secret in [
            CLIENT_SECRET,
            "wrong-secret-xyz",
            "code-abc",
            key_body.as_str(),
            tokens.access_token.expose_secret(),
            refresh.expose_secret(),
        ] {
            assert!(!text.contains(secret), "a secret leaked into: {text}");
        }
    }
    assert!(outputs[0].contains("REDACTED"));
}

/// A call the pacing cannot start before the deadline is never sent, and says so: nothing is
/// blamed on LINE WORKS for a request it never saw.
#[tokio::test]
async fn a_call_the_budget_cannot_start_in_time_is_reported_not_sent() {
    let emu = emulator(world()).await;
    let client = client(&emu, Duration::from_millis(500), Some(60));
    let token = token(&emu).await;
    // 60 per minute: a burst of 1, then one per 60/58 s.
    let burst =
        lineworks_client::calls_within(std::num::NonZeroU32::new(60).expect("60"), Duration::ZERO);
    assert_eq!(burst, 1);
    for i in 0..burst {
        client
            .send_to_channel(&token, BOT, ROOM, &Content::text(format!("m{i}")))
            .await
            .expect("within the burst");
    }
    let err = client
        .send_to_channel(&token, BOT, ROOM, &Content::text("m6"))
        .await
        .expect_err("no room in the budget within 500 ms");
    assert!(err.never_sent() && !err.maybe_processed(), "{err:?}");
    assert!(err.to_string().contains("not sent"), "{err}");
    assert_eq!(
        emu.requests("send_channel_message"),
        u64::from(burst),
        "LINE WORKS never saw it"
    );
}

/// A server that lies must not crash the client or make it read without end: an absurd
/// `expires_in` and a body over 1 MiB are invalid answers, a huge `Retry-After` is clamped.
#[tokio::test]
async fn absurd_answers_are_refused_not_obeyed() {
    let emu = emulator(world()).await;
    let client = client(&emu, Duration::from_secs(2), None);
    emu.add_fault(fault(
        "token",
        200,
        json!({"access_token": "a", "token_type": "Bearer", "scope": "bot",
            "expires_in": 18_446_744_073_709_551_615u64}),
        1,
    ));
    let err = client
        .issue_service_account_token(
            &credentials(),
            &service_account("service-account.key"),
            &scopes(),
        )
        .await
        .expect_err("expires_in beyond 90 days");
    assert!(
        matches!(err, LineWorksError::InvalidResponse { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("expires_in"), "{err}");

    let token = token(&emu).await;
    emu.add_fault(fault(
        "get_bot",
        200,
        json!({"botName": "x".repeat(1_100_000)}),
        1,
    ));
    let err = client.get_bot(&token, BOT).await.expect_err("over 1 MiB");
    assert!(err.to_string().contains("longer than"), "{err}");

    let mut huge = fault("get_bot", 429, json!({"code": "TOO_MANY_REQUESTS"}), 1);
    huge.headers = BTreeMap::from([("Retry-After".into(), "1e300".into())]);
    emu.add_fault(huge);
    let err = client
        .get_bot(&token, BOT)
        .await
        .expect_err("the wait passes the deadline");
    assert!(
        err.retry_after()
            .is_none_or(|w| w <= lineworks_client::MAX_REQUESTED_WAIT),
        "{err:?}"
    );
}
