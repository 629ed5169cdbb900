//! `lineworks-operator authorize <notifier>` (also `kubectl lineworks authorize`): the one browser
//! step of userAccount mode, from a terminal.
//!
//! - Default: prints the authorization URL the controller offers in status and waits until the
//!   notifier is Authorized (the controller's callback does the rest).
//! - `--listen ADDR`: for clusters whose callback no browser can reach (no Ingress). Like an OIDC
//!   login helper, it runs a one-shot callback on this machine, checks its own random `state`,
//!   exchanges the code and writes the tokens into the notifier's token Secret through the
//!   Kubernetes API with the caller's kubeconfig; the controller takes over from there. The
//!   redirect URL (default `http://ADDR/oauth/callback`) must be registered on the app.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, oneshot};

use super::{CliError, NotifierRef, print_conditions, wait_until};
use crate::api::conditions::{ConditionStatus, ConditionType};
use crate::api::{AuthMode, LineWorksNotifier};
use crate::controller::{credentials, tokens};
use crate::oauth_callback::{CallbackQuery, escape, page};
use lineworks_client::{LineWorksClient, RateLimits};

pub struct AuthorizeOptions {
    pub notifier: NotifierRef,
    /// Run a local callback on this address.
    pub listen: Option<SocketAddr>,
    /// Redirect URL registered on the app (default derived from `listen`).
    pub redirect_url: Option<String>,
    /// How long to wait for the administrator and the controller.
    pub timeout: Duration,
    /// Hosts the notifier's authBaseURL may name besides LINE WORKS's own.
    pub allowed_hosts: crate::endpoints::AllowedHosts,
}

pub async fn run(client: Client, options: AuthorizeOptions) -> Result<(), CliError> {
    let NotifierRef { namespace, name } = &options.notifier;
    let notifiers: Api<LineWorksNotifier> = Api::namespaced(client.clone(), namespace);
    let notifier = notifiers
        .get_opt(name)
        .await?
        .ok_or_else(|| CliError::NotFound(options.notifier.to_string()))?;
    if notifier.spec.auth.mode != AuthMode::UserAccount {
        return Err(CliError::Usage(format!(
            "{} uses spec.auth.mode serviceAccount: it needs no browser authorization",
            options.notifier
        )));
    }
    match options.listen {
        None => via_controller(&notifiers, &options).await?,
        Some(addr) => locally(client.clone(), &notifier, addr, &options).await?,
    }
    println!(
        "Waiting for the controller to report {} Authorized…",
        options.notifier
    );
    let done = wait_until(&notifiers, name, options.timeout, authorized).await?;
    print_conditions(&done);
    Ok(())
}

fn authorized(n: &LineWorksNotifier) -> bool {
    n.condition_is(ConditionType::Authorized, ConditionStatus::True)
}

/// Prints the controller's URL (waiting briefly for it) for a person to open.
async fn via_controller(
    notifiers: &Api<LineWorksNotifier>,
    options: &AuthorizeOptions,
) -> Result<(), CliError> {
    let name = &options.notifier.name;
    let current = notifiers.get(name).await?;
    if authorized(&current) {
        println!("{} is already authorized.", options.notifier);
        return Ok(());
    }
    let with_url = wait_until(notifiers, name, Duration::from_secs(30), |n| {
        n.status
            .as_ref()
            .is_some_and(|s| s.authorization_url.is_some())
            || authorized(n)
    })
    .await
    .map_err(|_| {
        CliError::Usage(format!(
            "{} shows no authorization URL: is the controller running? (kubectl describe lineworksnotifier -n {} {name})",
            options.notifier, options.notifier.namespace
        ))
    })?;
    if let Some(url) = with_url.status.and_then(|s| s.authorization_url) {
        println!(
            "Open this URL as a LINE WORKS super or sub administrator and allow the app:\n\n  {url}\n"
        );
    }
    Ok(())
}

struct Pending {
    state: String,
    done: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
    client: Client,
    notifier: LineWorksNotifier,
    redirect: String,
    lineworks: LineWorksClient,
}

/// Runs the one-shot local callback and stores the tokens itself.
async fn locally(
    client: Client,
    notifier: &LineWorksNotifier,
    addr: SocketAddr,
    options: &AuthorizeOptions,
) -> Result<(), CliError> {
    let redirect = options
        .redirect_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/oauth/callback"));
    let path = reqwest::Url::parse(&redirect)
        .map_err(|e| CliError::Usage(format!("--redirect-url {redirect}: {e}")))?
        .path()
        .to_string();
    options
        .allowed_hosts
        .check_spec(&notifier.spec)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.notifier.namespace);
    let credentials = match credentials::load(&secrets, notifier).await? {
        Ok(c) => c,
        Err(verdict) => return Err(CliError::Usage(verdict.message)),
    };
    lineworks_client::install_crypto_provider();
    let config =
        notifier
            .spec
            .client_config(Duration::from_secs(10), Duration::from_secs(20), false);
    let lineworks = LineWorksClient::new(config, Arc::new(RateLimits::default()))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let state = format!("{:032x}", rand::random::<u128>());
    let url = lineworks.authorize_url(
        &credentials.client.client_id,
        &redirect,
        &notifier.spec.auth.scopes,
        &state,
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {addr}: {e}")))?;
    let (tx, rx) = oneshot::channel();
    let pending = Arc::new(Pending {
        state,
        done: Mutex::new(Some(tx)),
        client,
        notifier: notifier.clone(),
        redirect: redirect.clone(),
        lineworks,
    });
    let app = axum::Router::new()
        .route(&path, axum::routing::get(callback))
        .with_state(Arc::clone(&pending));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "Open this URL as a LINE WORKS super or sub administrator and allow the app:\n\n  {url}\n\n\
         Waiting for LINE WORKS to redirect to {redirect} (registered on the app as a Redirect URL)…"
    );
    let outcome = tokio::time::timeout(options.timeout, rx).await;
    server.abort();
    match outcome {
        Ok(Ok(Ok(()))) => {
            println!("Tokens stored in Secret {}.", notifier.token_secret_name());
            Ok(())
        }
        Ok(Ok(Err(why))) => Err(CliError::Usage(why)),
        Ok(Err(_)) | Err(_) => Err(CliError::Timeout(format!(
            "no authorization arrived within {:?}",
            options.timeout
        ))),
    }
}

async fn callback(State(p): State<Arc<Pending>>, Query(q): Query<CallbackQuery>) -> Response {
    let result = store(&p, q).await;
    // A wrong or replayed state does not end the wait: the right redirect may still come.
    let finished = result.is_ok() || !result.as_ref().is_err_and(|e| e.starts_with("state"));
    if finished && let Some(tx) = p.done.lock().await.take() {
        let _ = tx.send(result.clone());
    }
    match &result {
        Ok(()) => page(
            StatusCode::OK,
            "LINE WORKS authorized",
            "<p>The tokens are stored; you can close this tab.</p>",
        ),
        Err(why) => page(
            StatusCode::BAD_REQUEST,
            "Authorization not completed",
            &format!("<p>{}</p>", escape(why)),
        ),
    }
}

async fn store(p: &Pending, q: CallbackQuery) -> Result<(), String> {
    if let Some(denial) = q.denial() {
        return Err(denial);
    }
    let state = q.state.clone().unwrap_or_default();
    if !bool::from(state.as_bytes().ct_eq(p.state.as_bytes())) {
        return Err("state does not match the one this command issued; nothing was stored".into());
    }
    if p.done.lock().await.is_none() {
        return Err("state already used; nothing was stored".into());
    }
    let code = q.code().ok_or("the code parameter is missing")?;
    let ns = p.notifier.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(p.client.clone(), &ns);
    let credentials = match credentials::load(&secrets, &p.notifier).await {
        Ok(Ok(c)) => c,
        Ok(Err(verdict)) => return Err(verdict.message),
        Err(e) => return Err(format!("reading the credentials Secret: {e}")),
    };
    let issued = p
        .lineworks
        .exchange_code(&credentials.client, &code, &p.redirect)
        .await
        .map_err(|e| format!("LINE WORKS did not exchange the code: {e}"))?;
    let version = match tokens::read(&secrets, &p.notifier)
        .await
        .map_err(|e| format!("reading the token Secret: {e}"))?
    {
        tokens::Found::Nothing => None,
        tokens::Found::Ours { secret, .. } => secret.resource_version(),
        tokens::Found::Foreign => {
            return Err(format!(
                "Secret {} exists but does not belong to this notifier",
                p.notifier.token_secret_name()
            ));
        }
    };
    tokens::write(
        &secrets,
        &p.notifier,
        (&issued, issued.issued_at),
        &credentials.fingerprint,
        version,
    )
    .await
    .map_err(|e| format!("writing the token Secret: {e}"))
}
