//! The HTTP endpoints. Each notification goes: authenticate → read the request → find the
//! notifier and route → idempotency claim → admission to the bounded queue → delivery in its
//! own task (a caller that disconnects does not cancel it, and shutdown waits for it).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::Relay;
use super::alert_message;
use super::api::Readiness;
use super::delivery::{self, AlertGroup, Parts, Request};
use super::idempotency::{self, Answer, Claim};
use super::problem::{Refusal, problem};
use super::validation;
use crate::api::conditions::{ConditionExt, ConditionStatus, ConditionType};
use crate::api::deliverable::{Blocked, Deliverable, Delivering};
use crate::api::{LineWorksNotifier, Route};
use crate::endpoints::EndpointField;
use kube::ResourceExt;

/// Which notification endpoint was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Notifications,
    TestNotification,
    Alertmanager,
}

/// The notifier of sidecar mode.
fn sidecar(relay: &Relay) -> Result<(String, String), Refusal> {
    relay.options.notifier.clone().ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "No default notifier",
            "this relay serves several notifiers: use /v1/notifiers/{namespace}/{name}/…",
        )
    })
}

/// A notification endpoint of sidecar mode, for the relay's own notifier.
async fn on_sidecar(
    relay: Arc<Relay>,
    headers: HeaderMap,
    endpoint: Endpoint,
    body: Bytes,
) -> Response {
    match sidecar(&relay) {
        Ok((ns, name)) => notification(relay, headers, ns, name, endpoint, body).await,
        Err(r) => r.into_response(),
    }
}

pub async fn sidecar_notify(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_sidecar(relay, headers, Endpoint::Notifications, body).await
}

pub async fn sidecar_alertmanager(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_sidecar(relay, headers, Endpoint::Alertmanager, body).await
}

pub async fn alertmanager(
    State(relay): State<Arc<Relay>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    notification(relay, headers, ns, name, Endpoint::Alertmanager, body).await
}

pub async fn sidecar_test(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> Response {
    on_sidecar(relay, headers, Endpoint::TestNotification, Bytes::new()).await
}

pub async fn sidecar_readiness(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> Response {
    match sidecar(&relay) {
        Ok((ns, name)) => readiness_of(&relay, &headers, &ns, &name),
        Err(r) => r.into_response(),
    }
}

pub async fn notify(
    State(relay): State<Arc<Relay>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    notification(relay, headers, ns, name, Endpoint::Notifications, body).await
}

pub async fn test_notify(
    State(relay): State<Arc<Relay>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    notification(
        relay,
        headers,
        ns,
        name,
        Endpoint::TestNotification,
        Bytes::new(),
    )
    .await
}

pub async fn readiness(
    State(relay): State<Arc<Relay>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    readiness_of(&relay, &headers, &ns, &name)
}

pub async fn readyz(State(relay): State<Arc<Relay>>) -> Response {
    if relay.cache.synced(Duration::from_millis(100)).await {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
    }
}

pub async fn metrics_text(State(relay): State<Arc<Relay>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        relay.metrics.encode(),
    )
        .into_response()
}

fn readiness_of(relay: &Relay, headers: &HeaderMap, ns: &str, name: &str) -> Response {
    let notifier = match relay.caller_notifier(headers, ns, name) {
        Ok(n) => n,
        Err(refusal) => return relay.reject(refusal),
    };
    let (mut ready, mut reason, mut message) = ready_condition(&notifier);
    if ready && relay.cache.token(&notifier).is_none() {
        (ready, reason, message) = (
            false,
            "TokenNotSeen".into(),
            "the relay has not seen the notifier's token Secret yet".into(),
        );
    }
    let delivering = if relay.cache.token(&notifier).is_some() {
        notifier.deliverable().delivering()
    } else {
        Delivering::None
    };
    axum::Json(Readiness {
        namespace: ns.into(),
        name: name.into(),
        ready,
        reason,
        message,
        delivering,
    })
    .into_response()
}

/// Whether the notifier is Ready, with the Ready condition's reason and message.
fn ready_condition(notifier: &LineWorksNotifier) -> (bool, String, String) {
    match notifier.condition(ConditionType::Ready) {
        Some(c) => (
            c.is(ConditionStatus::True),
            c.reason.clone(),
            c.message.clone(),
        ),
        None => (
            false,
            "Reconciling".into(),
            "the controller has not reported yet".into(),
        ),
    }
}

/// Where an admitted notification goes.
struct Destination {
    notifier: Arc<LineWorksNotifier>,
    route: Option<Route>,
    /// Why the notifier's room cannot be sent to, if it cannot.
    room_blocked: Option<Blocked>,
}

/// A notifier that can take notifications now (at least its DMs), and the route the request
/// names.
fn deliverable(
    relay: &Relay,
    notifier: Arc<LineWorksNotifier>,
    request: &Request,
) -> Result<Destination, Refusal> {
    let (ns, name) = (
        notifier.namespace().unwrap_or_default(),
        notifier.name_any(),
    );
    let route = match request {
        Request::Visitor(r) => validation::route(&notifier, r.route.as_deref())?,
        Request::Test => None,
        Request::Alert(a) => a.route.clone(),
    };
    if let Request::Visitor(r) = request {
        validation::policy(&notifier, r)?;
    }
    if notifier.spec.suspend {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Notifier suspended",
            format!("{ns}/{name} has spec.suspend: true"),
        ));
    }
    // The controller refuses such a notifier too; the relay checks on its own so that messages
    // never go to a host its installer did not allow, whatever status says.
    if let Err(refused) = relay
        .endpoints
        .check(EndpointField::ApiBaseUrl, notifier.spec.api_base_url())
    {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Endpoint not allowed",
            refused.to_string(),
        ));
    }
    // Conditions describe the spec the controller last looked at; after an edit they may vouch
    // for a room or user the spec no longer names (or for a host it no longer uses).
    let generation = notifier.metadata.generation;
    let observed = notifier.status.as_ref().and_then(|s| s.observed_generation);
    if generation.is_some() && observed < generation {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Notifier not yet checked",
            format!(
                "{ns}/{name} changed (generation {}) and the controller has not checked it yet (observed {}); retry shortly",
                generation.unwrap_or_default(),
                observed.unwrap_or_default()
            ),
        ));
    }
    // Per target, not Ready as a whole: a broken room or a failed test notification must not
    // keep a visitor's host from getting the DM.
    let Deliverable { dm, room } = notifier.deliverable();
    if let Err(b) = dm {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Notifier cannot deliver",
            format!("{}: {}", b.reason, b.message),
        ));
    }
    Ok(Destination {
        notifier,
        route,
        room_blocked: room.err(),
    })
}

async fn notification(
    relay: Arc<Relay>,
    headers: HeaderMap,
    ns: String,
    name: String,
    endpoint: Endpoint,
    body: Bytes,
) -> Response {
    let response = notification_response(relay, headers, ns, name, endpoint, body).await;
    if endpoint == Endpoint::Alertmanager {
        for_alertmanager(response)
    } else {
        response
    }
}

/// Alertmanager retries a 5xx or 429 answer and drops anything else that is not 2xx: a message
/// LINE WORKS did not take for every target (207, 502) is answered 503 with Retry-After, so it
/// is sent again (only to the targets that failed, by the idempotency record).
fn for_alertmanager(response: Response) -> Response {
    match response.status() {
        StatusCode::MULTI_STATUS | StatusCode::BAD_GATEWAY => {
            let (mut parts, body) = response.into_parts();
            parts.status = StatusCode::SERVICE_UNAVAILABLE;
            parts
                .headers
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
            Response::from_parts(parts, body)
        }
        _ => response,
    }
}

async fn notification_response(
    relay: Arc<Relay>,
    headers: HeaderMap,
    ns: String,
    name: String,
    endpoint: Endpoint,
    body: Bytes,
) -> Response {
    let mut alert_key = None;
    let admitted = relay
        .caller_notifier(&headers, &ns, &name)
        .and_then(|notifier| {
            let request = match endpoint {
                Endpoint::Notifications => {
                    Request::Visitor(Box::new(validation::parse(&headers, &body)?))
                }
                Endpoint::TestNotification => Request::Test,
                Endpoint::Alertmanager => {
                    let message = alert_message::parse(&headers, &body)?;
                    alert_key = Some(alert_message::dedupe_key(&message));
                    Request::Alert(Box::new(AlertGroup {
                        content: alert_message::content(&notifier, &message),
                        route: alert_message::route(&notifier, &message),
                    }))
                }
            };
            let destination = deliverable(&relay, notifier, &request)?;
            Ok((request, destination))
        });
    let (request, destination) = match admitted {
        Ok(a) => a,
        Err(refusal) => return relay.reject(refusal),
    };
    let visitor = match &request {
        Request::Visitor(r) => Some(&**r),
        Request::Test | Request::Alert(_) => None,
    };
    let key = match &alert_key {
        // Alertmanager's retries and repeats of a group are one notification: the key is the
        // group's, whatever else differs in the body (an alert's endsAt moves on each repeat).
        Some(key) => Some(key.clone()),
        None => match validation::idempotency_key(visitor, &headers) {
            Ok(key) => key,
            Err(refusal) => return relay.reject(refusal),
        },
    };
    let body_hash = idempotency::body_hash(alert_key.as_ref().map_or(&body[..], |k| k.as_bytes()));
    // Keys are remembered (and bounded) per notifier.
    let scope = format!("{ns}/{name}");
    // Admission first: a refused request must leave no idempotency key claimed.
    let Destination {
        notifier,
        route,
        room_blocked,
    } = destination;
    let (ticket, config) = match relay.admit(&notifier) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let mut previous = None;
    let first = match key {
        None => None,
        Some(key) => match relay.idempotency.claim(&scope, &key, body_hash) {
            Claim::Conflict => {
                return relay.reject(Refusal::new(
                    StatusCode::CONFLICT,
                    "Idempotency key reused",
                    "this idempotency key was used with a different body",
                ));
            }
            Claim::Done(answer) => return answer_response(&answer),
            Claim::Repeat(rx) => return first_answer(rx).await,
            Claim::New(tx) => Some((key, tx)),
            Claim::Retry(answer, tx) => {
                previous = Some(answer);
                Some((key, tx))
            }
        },
    };
    relay.metrics.admitted();
    let worker = Arc::clone(&relay);
    let job = relay.tasks.spawn(async move {
        let parts = previous.as_ref().map_or(Parts::ALL, Parts::failed_in);
        let mut answer = delivery::deliver(
            &worker,
            &notifier,
            config,
            &request,
            route.as_ref(),
            parts,
            room_blocked,
        )
        .await;
        if let Some(previous) = &previous {
            answer = delivery::merge(previous, parts, answer);
        }
        drop(ticket);
        worker.metrics.finished_with(
            scope.split_once('/').unwrap_or((scope.as_str(), "")),
            &answer,
        );
        if let Some((key, tx)) = &first {
            worker.idempotency.finish(&scope, key, tx, answer.clone());
        }
        answer
    });
    match job.await {
        Ok(answer) => answer_response(&answer),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Delivery crashed",
            e.to_string(),
        ),
    }
}

/// The answer of the first request with the same key, once it has one.
async fn first_answer(mut rx: watch::Receiver<Option<Answer>>) -> Response {
    let answer = loop {
        if let Some(a) = rx.borrow_and_update().clone() {
            break Some(a);
        }
        if rx.changed().await.is_err() {
            break None;
        }
    };
    match answer {
        Some(a) => answer_response(&a),
        None => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Interrupted",
            "the first request with this key did not finish",
        ),
    }
}

fn answer_response(answer: &Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(&answer.result)).into_response()
}
