//! The caller token of a notifier: 32 random bytes (64 hex digits) in Secret `<notifier>-relay-caller`
//! ([`caller_secret`]), owned by the notifier. A caller of the Deployment relay presents it to
//! send through this notifier and no other; whoever may read Secrets in the notifier's namespace
//! (its owners) can hand it to their reception app. The controller never overwrites it: to
//! rotate, delete the Secret and a new token is generated.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::metrics::Written;
use crate::api::LineWorksNotifier;
use crate::api::contract::{caller_secret, controlled_by};

/// The name of the notifier's caller Secret once it holds a token the notifier controls, or
/// `None` when a Secret of that name belongs to someone else (the relay then accepts no caller
/// for this notifier; an Event says what to do). `prefetched`: the Secret's metadata as read at
/// the start of the reconcile, if it was.
pub async fn ensure(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
    ctx: &Context,
    prefetched: Option<Option<PartialObjectMeta<Secret>>>,
) -> Result<Option<String>, kube::Error> {
    let name = caller_secret::name(&notifier.name_any());
    let owner = notifier.metadata.uid.as_deref();
    let found = match prefetched {
        Some(found) => found,
        None => secrets.get_metadata_opt(&name).await?,
    };
    let existing = match found {
        Some(found) => Some(found),
        None => match secrets
            .create(&post_params(), &fresh(notifier, &name))
            .await
        {
            Ok(_) => {
                ctx.metrics.wrote(Written::CallerSecret);
                return Ok(Some(name));
            }
            // Created meanwhile (by another writer): judge the one that is there.
            Err(kube::Error::Api(e)) if e.code == 409 => secrets.get_metadata_opt(&name).await?,
            Err(e) => return Err(e),
        },
    };
    match existing {
        Some(found) if controlled_by(&found.metadata, owner) => Ok(Some(name)),
        Some(_) => {
            let event = Event {
                type_: EventType::Warning,
                reason: "CallerSecretNotOwned".into(),
                note: Some(format!(
                    "Secret {name} exists but does not belong to this notifier, so the relay accepts no caller for it: delete or rename that Secret and a caller token is generated"
                )),
                action: "GenerateCallerToken".into(),
                secondary: None,
            };
            ctx.publish(notifier, &event).await;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Deletes the caller Secret with its notifier (only if the notifier controls it).
pub async fn delete(secrets: &Api<Secret>, notifier: &LineWorksNotifier) {
    let name = caller_secret::name(&notifier.name_any());
    let Ok(Some(found)) = secrets.get_metadata_opt(&name).await else {
        return;
    };
    if !controlled_by(&found.metadata, notifier.metadata.uid.as_deref()) {
        return;
    }
    let params = kube::api::DeleteParams {
        preconditions: Some(Preconditions {
            uid: found.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    if let Err(e) = secrets.delete(&name, &params).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        tracing::warn!(secret = name, error = %e, "could not delete the caller Secret");
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn fresh(notifier: &LineWorksNotifier, name: &str) -> Secret {
    let token: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Secret {
        metadata: super::tokens::owned_meta(notifier, name.to_string()),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(caller_secret::TOKEN.to_string(), token)])),
        ..Default::default()
    }
}
