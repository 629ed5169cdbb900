//! What the finalizer does when a notifier is deleted: revoke its tokens at LINE WORKS (so a copy
//! of the token Secret left in a backup or a log is worthless) and delete the token Secret (so a
//! relay stops using it at once, also where no garbage collector runs). It never blocks deletion
//! for long: when LINE WORKS cannot be reached for `GIVE_UP_AFTER`, or the credentials are gone,
//! it records a Warning event saying what was left and lets the deletion finish.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::metrics::ResultLabel;
use super::reconcile::{ReconcileError, kube_err};
use super::tokens::{self, Found};
use crate::api::LineWorksNotifier;
use lineworks_client::TokenKind;

/// Finalizer on every notifier the controller has seen.
pub use crate::api::contract::REVOKE_FINALIZER as FINALIZER;
/// How long a deletion waits for LINE WORKS to answer the revocation.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

pub async fn cleanup(
    notifier: &LineWorksNotifier,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let ns = notifier.namespace().ok_or(ReconcileError::NoNamespace)?;
    let key = format!("{ns}/{}", notifier.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let outcome = revoke(notifier, ctx, &secrets).await?;
    let (label, event) = match outcome {
        Revoked::Nothing => ("nothing", None),
        Revoked::Done(n) => (
            "revoked",
            Some((
                EventType::Normal,
                "TokensRevoked",
                format!(
                    "revoked {n} token(s) at LINE WORKS and deleted Secret {}",
                    notifier.token_secret_name()
                ),
            )),
        ),
        Revoked::Failed(why) => {
            let deleting_for = notifier
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| {
                    let secs = k8s_openapi::jiff::Timestamp::now()
                        .duration_since(t.0)
                        .as_secs();
                    Duration::from_secs(u64::try_from(secs).unwrap_or_default())
                })
                .unwrap_or_default();
            if why.transient && deleting_for < GIVE_UP_AFTER {
                // Try again with backoff; the deletion waits a little for a clean revocation.
                return Err(ReconcileError::Revocation(why.message));
            }
            (
                "failed",
                Some((
                    EventType::Warning,
                    "TokenRevocationFailed",
                    format!(
                        "could not revoke the tokens ({}); they lapse on their own (access token within 24 hours). To cut them off now, remove the app's authorization in LINE WORKS Developer Console",
                        why.message
                    ),
                )),
            )
        }
    };
    if let Err(e) = secrets
        .delete(&notifier.token_secret_name(), &Default::default())
        .await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        tracing::warn!(notifier = key, error = %e, "could not delete the token Secret");
    }
    super::caller_token::delete(&secrets, notifier).await;
    ctx.metrics
        .token_revocations
        .get_or_create(&ResultLabel {
            result: label.into(),
        })
        .inc();
    if let Some((type_, reason, note)) = event {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Delete".into(),
            secondary: None,
        };
        ctx.publish(notifier, &event).await;
    }
    ctx.forget(&key);
    Ok(Action::await_change())
}

enum Revoked {
    Nothing,
    Done(usize),
    Failed(Failure),
}

struct Failure {
    message: String,
    transient: bool,
}

async fn revoke(
    notifier: &LineWorksNotifier,
    ctx: &Context,
    secrets: &Api<Secret>,
) -> Result<Revoked, ReconcileError> {
    let read = |source| ReconcileError::Kube {
        action: "reading the token Secret",
        source,
    };
    let stored = match tokens::read(secrets, notifier).await.map_err(read)? {
        Found::Ours {
            stored: Some(stored),
            ..
        } => stored,
        _ => return Ok(Revoked::Nothing),
    };
    let credentials = match super::credentials::load(secrets, notifier).await {
        Ok(Ok(c)) => c,
        Ok(Err(verdict)) => {
            return Ok(Revoked::Failed(Failure {
                message: verdict.message,
                transient: false,
            }));
        }
        Err(source) => {
            return Err(ReconcileError::Kube {
                action: "reading the credentials Secret",
                source,
            });
        }
    };
    let lineworks = match ctx.lineworks(notifier) {
        Ok(client) => client,
        // Never send the tokens and the client secret to a host nobody allowed.
        Err(verdict) => {
            return Ok(Revoked::Failed(Failure {
                message: verdict.message,
                transient: false,
            }));
        }
    };
    let mut revoked = 0;
    let mut wanted = vec![(stored.tokens.access_token.clone(), TokenKind::Access)];
    if let Some(refresh) = &stored.tokens.refresh_token {
        // The refresh token first: it is the long-lived one.
        wanted.insert(0, (refresh.clone(), TokenKind::Refresh));
    }
    for (token, kind) in wanted {
        match lineworks.revoke(&credentials.client, &token, kind).await {
            Ok(()) => revoked += 1,
            Err(e) => {
                return Ok(Revoked::Failed(Failure {
                    message: e.to_string(),
                    transient: e.may_pass(),
                }));
            }
        }
    }
    Ok(Revoked::Done(revoked))
}

/// Adds the revocation finalizer if missing and returns the object as written, so the first
/// checks run in this same reconcile: kube's helper adds it and stops, and waiting for the watch
/// event of that write made every new notifier a round trip slower to become Ready. The patch
/// tests the list it extends, as the helper's does (two writers never duplicate it). A failed
/// test means the cached copy is older than the object (mostly: this controller's own write,
/// whose watch event has not arrived yet), so the object is read again instead of failing.
pub(super) async fn with_finalizer(
    api: &Api<LineWorksNotifier>,
    mut notifier: Arc<LineWorksNotifier>,
    ctx: &Context,
    key: &str,
) -> Result<Arc<LineWorksNotifier>, ReconcileError> {
    let fin = FINALIZER;
    for _ in 0..3 {
        let finalizers = notifier.finalizers();
        if notifier.metadata.deletion_timestamp.is_some() || finalizers.iter().any(|f| f == fin) {
            return Ok(notifier);
        }
        let operations = if finalizers.is_empty() {
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [fin]},
            ])
        } else {
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                {"op": "add", "path": "/metadata/finalizers/-", "value": fin},
            ])
        };
        let patch: json_patch::Patch = serde_json::from_value(operations)
            .map_err(|e| ReconcileError::Finalizer(e.to_string()))?;
        let name = notifier.name_any();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(written) => {
                ctx.own_writes
                    .wrote_over(key, notifier.metadata.resource_version.clone());
                return Ok(Arc::new(written));
            }
            Err(kube::Error::Api(answer)) if answer.code == 422 => {
                notifier = Arc::new(
                    api.get(&name)
                        .await
                        .map_err(kube_err("re-reading the notifier"))?,
                );
            }
            Err(e) => return Err(kube_err("adding the finalizer")(e)),
        }
    }
    Err(ReconcileError::Finalizer(
        "the notifier's finalizers kept changing while adding this operator's".into(),
    ))
}
