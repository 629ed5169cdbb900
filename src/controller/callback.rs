//! The OAuth callback (userAccount mode): LINE WORKS sends the administrator's browser here with
//! `code` and `state` after consent. The `state` must be signed by this operator, unexpired, for
//! a notifier that still exists (same UID), and still pending in its token Secret; it is removed
//! there (compare-and-swap) before the code is exchanged, so it works once. The tokens go into
//! the token Secret, whose change re-reconciles the notifier. The browser gets a short page.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use subtle::ConstantTimeEq;

use super::context::Context;
use super::metrics::ResultLabel;
use super::oauth_state::StateRejected;
use super::tokens::{self, Found};
use crate::api::{AuthMode, LineWorksNotifier};
use crate::oauth_callback::{CallbackQuery, escape, page};

/// Why a callback did not store tokens; the page and the metric say which.
enum Refusal {
    State(StateRejected),
    Denied(String),
    BadRequest(String),
    Failed(String),
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Refusal::State(StateRejected::NotIssuedHere) => "forged_state",
            Refusal::State(StateRejected::Expired) => "expired_state",
            Refusal::State(StateRejected::AlreadyUsed) => "used_state",
            Refusal::State(StateRejected::NotifierGone(_)) => "notifier_gone",
            Refusal::Denied(_) => "denied",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Failed(_) => "failed",
        }
    }
}

pub async fn callback(State(ctx): State<Arc<Context>>, Query(q): Query<CallbackQuery>) -> Response {
    let result = complete(&ctx, q).await;
    let label = match &result {
        Ok(_) => "authorized",
        Err(r) => r.label(),
    };
    ctx.metrics
        .oauth_callbacks
        .get_or_create(&ResultLabel {
            result: label.into(),
        })
        .inc();
    let retry = "Open the authorization link shown by <code>kubectl describe lineworksnotifier</code> again (it changes after each use).";
    match result {
        Ok(key) => {
            tracing::info!(notifier = key, "authorized through the OAuth callback");
            page(
                StatusCode::OK,
                "LINE WORKS authorized",
                &format!(
                    "<p>Notifier <b>{}</b> is authorized. The operator stored the tokens and keeps them renewed; you can close this tab.</p><p>Check: <code>kubectl get lineworksnotifier -n {}</code></p>",
                    escape(&key),
                    escape(key.split('/').next().unwrap_or_default())
                ),
            )
        }
        Err(Refusal::State(why)) => {
            tracing::warn!(reason = %why, "OAuth callback refused");
            page(
                StatusCode::BAD_REQUEST,
                "Authorization link not accepted",
                &format!(
                    "<p>{}. Nothing was stored.</p><p>{retry}</p>",
                    escape(&why.to_string())
                ),
            )
        }
        Err(Refusal::Denied(why)) => page(
            StatusCode::BAD_REQUEST,
            "LINE WORKS did not authorize the app",
            &format!("<p>{}. Nothing was stored.</p><p>{retry}</p>", escape(&why)),
        ),
        Err(Refusal::BadRequest(why)) => page(
            StatusCode::BAD_REQUEST,
            "Not an authorization answer",
            &format!("<p>{}. Nothing was stored.</p>", escape(&why)),
        ),
        Err(Refusal::Failed(why)) => {
            tracing::warn!(error = %why, "OAuth callback failed");
            page(
                StatusCode::BAD_GATEWAY,
                "Authorization not completed",
                &format!("<p>{}. Nothing was stored.</p><p>{retry}</p>", escape(&why)),
            )
        }
    }
}

async fn complete(ctx: &Context, q: CallbackQuery) -> Result<String, Refusal> {
    let denial = q.denial();
    // A refusal from LINE WORKS still names its notifier (by the state), so the notifier's
    // condition can say why; without a valid state it is only shown to the browser.
    let refused_here = |other: Refusal| match &denial {
        Some(d) => Refusal::Denied(d.clone()),
        None => other,
    };
    let state = q.state.clone().ok_or_else(|| {
        refused_here(Refusal::BadRequest("the state parameter is missing".into()))
    })?;
    let claims = ctx
        .state_key
        .verify(&state)
        .map_err(|e| refused_here(Refusal::State(e)))?;
    let key = format!("{}/{}", claims.ns, claims.name);
    let gone = || Refusal::State(StateRejected::NotifierGone(key.clone()));
    let notifiers: Api<LineWorksNotifier> = Api::namespaced(ctx.client.clone(), &claims.ns);
    let notifier = notifiers
        .get_opt(&claims.name)
        .await
        .map_err(|e| Refusal::Failed(format!("reading notifier {key}: {e}")))?
        .filter(|n| n.uid().as_deref() == Some(claims.uid.as_str()))
        .ok_or_else(gone)?;
    if notifier.metadata.deletion_timestamp.is_some() {
        return Err(gone());
    }
    if notifier.spec.auth.mode != AuthMode::UserAccount {
        return Err(Refusal::BadRequest(format!(
            "notifier {key} uses spec.auth.mode serviceAccount, which needs no browser"
        )));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &claims.ns);
    let used = || Refusal::State(StateRejected::AlreadyUsed);
    let secret = match tokens::read(&secrets, &notifier)
        .await
        .map_err(|e| Refusal::Failed(format!("reading the token Secret: {e}")))?
    {
        Found::Ours {
            pending_state: Some(pending),
            secret,
            ..
        } if bool::from(pending.as_bytes().ct_eq(state.as_bytes())) => secret,
        _ => return Err(used()),
    };
    // A callback that cannot complete (no code, no readable credentials) leaves the state
    // unspent, so the administrator's link still works once the cause is fixed.
    let code = match (&denial, q.code()) {
        (Some(_), _) => None,
        (None, Some(code)) => Some(code),
        (None, None) => {
            return Err(Refusal::BadRequest("the code parameter is missing".into()));
        }
    };
    let credentials = match super::credentials::load(&secrets, &notifier).await {
        Ok(Ok(c)) => Some(c),
        // A denial is recorded whatever the credentials say.
        _ if denial.is_some() => None,
        Ok(Err(verdict)) => return Err(Refusal::Failed(verdict.message)),
        Err(e) => {
            return Err(Refusal::Failed(format!(
                "reading the credentials Secret: {e}"
            )));
        }
    };
    // Spend the state before anything is sent to LINE WORKS: a replay, or a second tab, finds
    // it gone.
    let spent = tokens::consume_pending_state(&secrets, &secret)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => used(),
            e => Refusal::Failed(format!("updating the token Secret: {e}")),
        })?;
    let fingerprint = credentials
        .as_ref()
        .map(|c| c.fingerprint.clone())
        .unwrap_or_default();
    let record = |code: String| {
        let (secrets, notifier, fingerprint) = (&secrets, &notifier, &fingerprint);
        async move {
            if let Err(e) =
                tokens::record_authorization_failure(secrets, notifier, &code, fingerprint).await
            {
                tracing::warn!(error = %e, "could not record the failed authorization");
            }
        }
    };
    let (Some(code), Some(credentials)) = (code, credentials) else {
        let error = q.error.clone().unwrap_or_default();
        record(error).await;
        return Err(match denial {
            Some(denial) => Refusal::Denied(denial),
            None => Refusal::Failed("no code".into()),
        });
    };
    let redirect = notifier.spec.redirect_url();
    let lineworks = ctx
        .lineworks(&notifier)
        .map_err(|verdict| Refusal::Failed(verdict.message))?;
    let issued = lineworks
        .exchange_code(&credentials.client, &code, redirect)
        .await;
    let issued = match ctx
        .metrics
        .count_grant(super::metrics::Grant::AuthorizationCode, issued)
    {
        Ok(tokens) => tokens,
        Err(e) => {
            let hint = if e.code() == "invalid_client" {
                ": LINE WORKS refused the Client ID or Client Secret of the credentials Secret; copy both again from Developer Console > API 2.0 > (app), then authorize again"
            } else {
                ""
            };
            if matches!(e, lineworks_client::LineWorksError::TokenRejected { .. }) {
                record(e.code().to_string()).await;
            }
            return Err(Refusal::Failed(format!(
                "LINE WORKS did not exchange the code ({e}){hint}"
            )));
        }
    };
    tokens::store(
        &secrets,
        &notifier,
        (&issued, issued.issued_at),
        &credentials.fingerprint,
        spent.resource_version(),
    )
    .await
    .map_err(|e| Refusal::Failed(e.to_string()))?;
    ctx.metrics.wrote(super::metrics::Written::TokenSecret);
    Ok(key)
}
