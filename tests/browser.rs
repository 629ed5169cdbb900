//! The administrator's one browser step, in a real headless Chromium driven over WebDriver
//! (Debian's chromium and chromium-driver; `scripts/browser-deps.sh` installs them): open the URL
//! from status, pass the LINE WORKS consent page, land on the controller's callback, and see the
//! notifier become Authorized and Ready. A forged link gets a clear page in the same browser.

mod support;

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use support::oauth::{self, ADMIN_LOGIN, Authorizing};
use support::operator::WAIT;
use support::wait_for;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn chromedriver() -> Driver {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: run scripts/browser-deps.sh (Debian packages chromium and chromium-driver)"
        );
    }
    let port = oauth::free_addr().port();
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for("chromedriver", WAIT, || {
        let (http, status) = (http.clone(), format!("{url}/status"));
        async move {
            let r = http.get(&status).send().await.map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(r.status().to_string())
            }
        }
    })
    .await;
    Driver { _child: child, url }
}

#[tokio::test]
async fn an_administrator_authorizes_in_a_real_browser() {
    let a = Authorizing::new("browser", |_| {}, Duration::from_secs(600)).await;
    a.apply_user_account_notifier("front").await;
    let url = a
        .authorization_url("front", Reason::AuthorizationRequired)
        .await;

    let driver = chromedriver().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    browser.goto(&url).await.expect("consent page opens");
    let login = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("login_id"))
        .await
        .expect("login field");
    login.send_keys(ADMIN_LOGIN).await.expect("typed");
    browser
        .find(Locator::Id("allow"))
        .await
        .expect("Allow button")
        .click()
        .await
        .expect("clicked");
    let title = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("title"))
        .await
        .expect("the callback page");
    assert_eq!(title.text().await.expect("title"), "LINE WORKS authorized");
    let landed = browser.current_url().await.expect("URL");
    assert!(landed.as_str().starts_with(&a.redirect), "{landed}");
    a.env
        .wait_condition(
            "front",
            ConditionType::Authorized,
            ConditionStatus::True,
            Reason::TokenValid,
        )
        .await;
    a.env
        .wait_condition(
            "front",
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;

    // The same page, reloaded, is a replay: refused with a clear page.
    browser.refresh().await.expect("reload");
    let title = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("title"))
        .await
        .expect("the refusal page");
    assert_eq!(
        title.text().await.expect("title"),
        "Authorization link not accepted"
    );
    let body = browser.source().await.expect("page");
    assert!(body.contains("already used"), "{body}");

    browser.close().await.expect("session closed");
    a.stop().await;
}
