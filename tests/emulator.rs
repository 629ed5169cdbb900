//! The emulator rejects what LINE WORKS would reject. Driven with raw HTTP (not the client), so a
//! mistake the client and emulator shared could not pass here.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lineworks_emulator::Emulator;
use serde_json::{Value, json};
use support::lineworks::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn assertion(claims: Value) -> String {
    lineworks_client::install_crypto_provider();
    let key = EncodingKey::from_rsa_pem(fixture("service-account.key").as_bytes()).expect("key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("jwt")
}

fn good_claims() -> Value {
    json!({"iss": CLIENT_ID, "sub": SERVICE_ACCOUNT, "iat": now(), "exp": now() + 3600})
}

fn jwt_form(assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("assertion", assertion.to_string()),
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
        ),
        ("client_id", CLIENT_ID.into()),
        ("client_secret", CLIENT_SECRET.into()),
        ("scope", "bot bot.read".into()),
    ]
}

async fn post_token(emu: &Emulator, form: &[(&str, String)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/token", emu.auth_base_url()))
        .form(form)
        .send()
        .await
        .expect("answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_token_endpoint_rejects_malformed_requests_and_assertions() {
    let emu = emulator(world()).await;
    let (status, body) = post_token(&emu, &jwt_form(&assertion(good_claims()))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], "86400", "string form as configured");

    // JSON instead of a form.
    let r = reqwest::Client::new()
        .post(format!("{}/token", emu.auth_base_url()))
        .json(&json!({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_request"
    );

    // grant_type encoded twice (a bug in public samples).
    let mut form = jwt_form(&assertion(good_claims()));
    form[1].1 = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer".into();
    let (status, body) = post_token(&emu, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // A parameter given twice.
    let mut form = jwt_form(&assertion(good_claims()));
    form.push(("scope", "bot".into()));
    let (status, body) = post_token(&emu, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    let cases = [
        (
            "exp in milliseconds",
            json!({"iss": CLIENT_ID, "sub": SERVICE_ACCOUNT, "iat": now(), "exp": (now() + 3600) * 1000}),
        ),
        (
            "expired",
            json!({"iss": CLIENT_ID, "sub": SERVICE_ACCOUNT, "iat": now() - 7200, "exp": now() - 3600}),
        ),
        (
            "issued in the future",
            json!({"iss": CLIENT_ID, "sub": SERVICE_ACCOUNT, "iat": now() + 600, "exp": now() + 1200}),
        ),
        (
            "wrong issuer",
            json!({"iss": "someone-else", "sub": SERVICE_ACCOUNT, "iat": now(), "exp": now() + 3600}),
        ),
        (
            "unknown subject",
            json!({"iss": CLIENT_ID, "sub": "nobody@testtest", "iat": now(), "exp": now() + 3600}),
        ),
        (
            "no exp",
            json!({"iss": CLIENT_ID, "sub": SERVICE_ACCOUNT, "iat": now()}),
        ),
    ];
    for (what, claims) in cases {
        let (status, body) = post_token(&emu, &jwt_form(&assertion(claims))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{what}: {body}"
        );
    }

    // Standard base64 (with padding) instead of base64url.
    let good = assertion(good_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let restd = |p: &str| STANDARD.encode(URL_SAFE_NO_PAD.decode(p).expect("b64url"));
    let standard = format!(
        "{}.{}.{}",
        restd(parts[0]),
        restd(parts[1]),
        restd(parts[2])
    );
    assert_ne!(standard, good);
    let (status, body) = post_token(&emu, &jwt_form(&standard)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn codes_refresh_tokens_and_access_tokens_expire() {
    let mut w = world();
    w.authorization_code_lifetime_secs = 0;
    w.apps[0].refresh_token_lifetime_secs = 0;
    w.apps[0].access_token_lifetime_secs = 0;
    let emu = emulator(w).await;
    let (status, body) = post_token(&emu, &jwt_form(&assertion(good_claims()))).await;
    assert_eq!(status, 200);
    let access = body["access_token"].as_str().expect("access").to_string();
    let refresh = body["refresh_token"].as_str().expect("refresh").to_string();

    let r = reqwest::Client::new()
        .get(format!("{}/bots/{BOT}", emu.api_base_url()))
        .bearer_auth(&access)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.expect("json")["code"],
        "UNAUTHORIZED"
    );

    let (status, body) = post_token(
        &emu,
        &[
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh),
            ("client_id", CLIENT_ID.into()),
            ("client_secret", CLIENT_SECRET.into()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http");
    let consent = browser
        .post(format!("{}/authorize", emu.auth_base_url()))
        .form(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "bot"),
            ("response_type", "code"),
            ("state", "s"),
            ("login_id", "admin@testtest"),
        ])
        .send()
        .await
        .expect("consent");
    let location = consent.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let code = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .expect("code");
    let (status, body) = post_token(
        &emu,
        &[
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("client_id", CLIENT_ID.into()),
            ("client_secret", CLIENT_SECRET.into()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );
}

#[tokio::test]
async fn the_authorize_page_checks_the_app_registration() {
    let emu = emulator(world()).await;
    let http = reqwest::Client::new();
    for (query, expected) in [
        (
            format!("client_id=nobody&redirect_uri={REDIRECT}&scope=bot&response_type=code"),
            "no app",
        ),
        (
            format!(
                "client_id={CLIENT_ID}&redirect_uri=https://evil.example/cb&scope=bot&response_type=code"
            ),
            "not registered",
        ),
        (
            format!(
                "client_id={CLIENT_ID}&redirect_uri={REDIRECT}&scope=user.read&response_type=code"
            ),
            "scope user.read",
        ),
        (
            format!("client_id={CLIENT_ID}&redirect_uri={REDIRECT}&scope=bot&response_type=token"),
            "response_type",
        ),
    ] {
        let r = http
            .get(format!("{}/authorize?{query}", emu.auth_base_url()))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 400, "{query}");
        let page = r.text().await.expect("page");
        assert!(page.contains(expected), "{query}: {page}");
    }
}

#[tokio::test]
async fn message_endpoints_validate_bodies_auth_scope_and_targets() {
    let mut w = world();
    w.users[1].deleted = true; // jinji
    let emu = emulator(w).await;
    let (_, body) = post_token(&emu, &jwt_form(&assertion(good_claims()))).await;
    let token = body["access_token"].as_str().expect("token").to_string();
    let http = reqwest::Client::new();
    let send = |path: String, body: String, content_type: &'static str, auth: Option<String>| {
        let mut request = http
            .post(format!("{}{path}", emu.api_base_url()))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        async move {
            let r = request.send().await.expect("answer");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let dm = format!("/bots/{BOT}/users/hogehoge%40testtest/messages");
    let ok = json!({"content": {"type": "text", "text": "hi"}}).to_string();
    // (what, path, body, content type, bearer token, expected status, expected code)
    type Case = (
        &'static str,
        String,
        String,
        &'static str,
        Option<String>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("valid", dm.clone(), ok.clone(), "application/json", Some(token.clone()), 201, ""),
        ("no token", dm.clone(), ok.clone(), "application/json", None, 401, "UNAUTHORIZED"),
        ("unknown token", dm.clone(), ok.clone(), "application/json", Some("at-nope".into()), 403, "UNAUTHORIZED"),
        ("form body", dm.clone(), "content=hi".into(), "application/x-www-form-urlencoded", Some(token.clone()), 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("unknown field", dm.clone(), json!({"content": {"type": "text", "text": "hi", "mention": "all"}}).to_string(), "application/json", Some(token.clone()), 400, "INVALID_PARAMETER"),
        ("unknown top-level field", dm.clone(), json!({"content": {"type": "text", "text": "hi"}, "notify": true}).to_string(), "application/json", Some(token.clone()), 400, "INVALID_PARAMETER"),
        ("2,001 characters", dm.clone(), json!({"content": {"type": "text", "text": "x".repeat(2001)}}).to_string(), "application/json", Some(token.clone()), 400, "INVALID_PARAMETER"),
        ("empty text", dm.clone(), json!({"content": {"type": "text", "text": ""}}).to_string(), "application/json", Some(token.clone()), 400, "INVALID_PARAMETER"),
        ("bad language", dm.clone(), json!({"content": {"type": "text", "text": "x", "i18nTexts": [{"language": "fr_FR", "text": "x"}]}}).to_string(), "application/json", Some(token.clone()), 400, "INVALID_PARAMETER"),
        ("eleven buttons", dm.clone(), json!({"content": {"type": "button_template", "contentText": "x", "actions": vec![json!({"type": "message", "label": "a"}); 11]}}).to_string(), "application/json", Some(token.clone()), 400, "INVALID_PARAMETER"),
        ("login ID encoded twice", format!("/bots/{BOT}/users/hogehoge%2540testtest/messages"), ok.clone(), "application/json", Some(token.clone()), 404, "NOT_FOUND"),
        ("deleted user", format!("/bots/{BOT}/users/jinji%40testtest/messages"), ok.clone(), "application/json", Some(token.clone()), 404, "NOT_FOUND"),
        ("user of a domain the bot is not in", format!("/bots/{BOT}/users/far%40elsewhere/messages"), ok.clone(), "application/json", Some(token.clone()), 403, "FORBIDDEN"),
        ("unknown bot", "/bots/42/users/u-hoge/messages".into(), ok.clone(), "application/json", Some(token.clone()), 404, "NOT_FOUND"),
        ("room without the bot", format!("/bots/{BOT}/channels/{ROOM_WITHOUT_BOT}/messages"), ok.clone(), "application/json", Some(token.clone()), 403, "FORBIDDEN"),
        ("unknown room", format!("/bots/{BOT}/channels/nope/messages"), ok.clone(), "application/json", Some(token.clone()), 404, "NOT_FOUND"),
    ];
    for (what, path, body, content_type, auth, status, code) in cases {
        let (got, answer) = send(path, body, content_type, auth).await;
        assert_eq!(got, status, "{what}: {answer}");
        if !code.is_empty() {
            assert_eq!(answer["code"], code, "{what}: {answer}");
            assert!(
                answer["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{what}"
            );
        }
    }
    assert_eq!(
        emu.delivered().len(),
        1,
        "only the valid message was delivered"
    );

    // A token with bot.read only may read but not send.
    let mut form = jwt_form(&assertion(good_claims()));
    form[4].1 = "bot.read".into();
    let (_, body) = post_token(&emu, &form).await;
    let read_only = body["access_token"].as_str().expect("token").to_string();
    let (status, answer) = send(dm, ok, "application/json", Some(read_only)).await;
    assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")));
}
