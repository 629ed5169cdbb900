//! userAccount helpers: a controller serving its OAuth callback on a free port registered as the
//! app's redirect URL, and the administrator's consent done over HTTP (the browser test does it
//! in Chromium).

use lineworks_operator::api::conditions::{ConditionExt, ConditionStatus, ConditionType, Reason};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lineworks_emulator::World;
use serde_json::{Value, json};

use super::operator::{Env, Running, WAIT};
use super::wait_for;

pub const ADMIN_LOGIN: &str = "admin@testtest";

/// A loopback address nobody listens on right now.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// An environment whose controller serves the callback registered on the app.
pub struct Authorizing {
    pub env: Env,
    pub controller: Running,
    pub redirect: String,
}

impl Authorizing {
    pub async fn new(
        prefix: &str,
        change_world: impl FnOnce(&mut World),
        state_lifetime: Duration,
    ) -> Self {
        // Bound here and handed over, so no other socket can take the port meanwhile.
        let listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
        let addr = listener.local_addr().expect("addr");
        let redirect = format!("http://{addr}/oauth/callback");
        let mut world = super::lineworks::world();
        world.apps[0].redirect_uris.push(redirect.clone());
        change_world(&mut world);
        let env = Env::new(prefix, world).await;
        env.apply_secret(
            "app",
            json!({"clientId": super::lineworks::CLIENT_ID, "clientSecret": super::lineworks::CLIENT_SECRET}),
        )
        .await;
        let controller = env.start_controller_with(None, |o| {
            o.serve_listener = Some(Arc::clone(&listener));
            o.settings.state_lifetime = state_lifetime;
        });
        Self {
            env,
            controller,
            redirect,
        }
    }

    pub async fn apply_user_account_notifier(&self, name: &str) {
        self.env
            .apply_notifier(name, self.user_account_spec())
            .await;
    }

    pub fn user_account_spec(&self) -> Value {
        json!({"auth": {
            "mode": "userAccount",
            "credentialsSecretRef": {"name": "app"},
            "userAccount": {"redirectURL": self.redirect},
        }})
    }

    /// Waits until status offers an authorization URL with the condition `reason`; returns it.
    pub async fn authorization_url(&self, name: &str, reason: Reason) -> String {
        let api = self.env.notifiers();
        wait_for(&format!("{name} offers an authorization URL"), WAIT, || {
            let api = api.clone();
            async move {
                let n = api.get(name).await.map_err(|e| e.to_string())?;
                let status = n.status.ok_or("no status")?;
                let url = status
                    .authorization_url
                    .clone()
                    .ok_or("no authorizationURL")?;
                let c = status
                    .condition(ConditionType::Authorized)
                    .ok_or("no Authorized condition")?;
                if c.condition_reason() == Some(reason) {
                    Ok(url)
                } else {
                    Err(format!("{}: {}", c.reason, c.message))
                }
            }
        })
        .await
    }

    /// The whole first authorization: apply the notifier, consent as the administrator, visit
    /// the callback (asserting it succeeds) and wait until the notifier is Authorized. Returns
    /// the authorization URL that was used.
    pub async fn authorize(&self, name: &str) -> String {
        self.apply_user_account_notifier(name).await;
        let url = self
            .authorization_url(name, Reason::AuthorizationRequired)
            .await;
        let (status, page) = visit(&consent(&url).await).await;
        assert_eq!(status, 200, "{page}");
        self.env
            .wait_condition(
                name,
                ConditionType::Authorized,
                ConditionStatus::True,
                Reason::TokenValid,
            )
            .await;
        url
    }

    pub async fn stop(self) {
        self.controller.stop().await;
    }
}

/// A client that does not follow redirects, so each hop can be checked.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// What an administrator does in the browser: opens the URL, logs in, allows. Returns the
/// callback URL LINE WORKS redirects to (not yet visited).
pub async fn consent(url: &str) -> String {
    consent_as(url, ADMIN_LOGIN).await
}

/// Like [`consent`], signed in as `login` (who may not be an administrator).
pub async fn consent_as(url: &str, login: &str) -> String {
    let http = http();
    let page = http.get(url).send().await.expect("consent page");
    assert_eq!(page.status(), 200, "consent page for {url}");
    let parsed = reqwest::Url::parse(url).expect("URL");
    let mut form: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("login_id".into(), login.into()));
    let mut action = parsed.clone();
    action.set_query(None);
    let answer = http
        .post(action)
        .form(&form)
        .send()
        .await
        .expect("consent submitted");
    assert_eq!(answer.status(), 302, "consent answer");
    answer
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("redirect to the callback")
        .to_string()
}

/// Visits the callback; returns the status and the page.
pub async fn visit(callback: &str) -> (u16, String) {
    let answer = http().get(callback).send().await.expect("callback answers");
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

/// A Secret's value as text (empty when absent).
pub fn secret_value(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The `state` query parameter of a URL.
pub fn state_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .expect("URL")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state parameter")
}

/// `url` with its `state` replaced.
pub fn with_state(url: &str, state: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("URL");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                state.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}
