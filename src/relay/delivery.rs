//! Turning one visitor notification into LINE WORKS messages, following the rules of the vendor's manual
//! (RECEPTIONIST, LINE WORKS API 2.0 chat settings): a DM to
//! the host, or to the default user when the host is unset or unknown (`fallback`); a room message
//! when a room is configured; a route's own targets instead when a route is named.

use lineworks_client::{Content, LineWorksError, MessageSender, SecretString};

use super::Relay;
use super::api::{NotificationRequest, NotificationResult, Outcome, Target, TargetStatus};
use super::idempotency::Answer;
use crate::api::{LineWorksNotifier, Route};
use crate::templates;

/// What a caller asked to send.
pub enum Request {
    /// A visitor notification (`POST …/notifications`).
    Visitor(Box<NotificationRequest>),
    /// The console's テスト通知 button (`POST …/test-notification`).
    Test,
}

/// Where a notification goes.
struct Plan {
    /// The host's login ID or user ID, if one was given.
    pub host: Option<String>,
    /// Whether a failed host DM falls back to the default user.
    pub fallback_allowed: bool,
    pub default_user: String,
    pub room: Option<String>,
}

/// A host as LINE WORKS knows it: a login ID or a user ID (UUID form) stays as it is; any other
/// bare value is the part before `@` (the manual's ユーザーID) and gets the notifier's domain.
fn login_id(notifier: &LineWorksNotifier, host: &str) -> String {
    if host.contains('@') || is_user_id(host) {
        host.to_string()
    } else {
        format!("{host}@{}", notifier.spec.domain)
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex, the shape of LINE WORKS user IDs.
fn is_user_id(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Plan {
    /// A route's own targets (no fallback), or the host (falling back to the default user) and
    /// the notifier's room.
    fn new(notifier: &LineWorksNotifier, host: Option<&str>, route: Option<&Route>) -> Self {
        let spec = &notifier.spec;
        match route {
            Some(r) => Plan {
                host: r.user.as_deref().map(|u| login_id(notifier, u)),
                // An unknown user falls back like a host does; a room-only route sends no DM.
                fallback_allowed: r.user.is_some(),
                default_user: spec.default_user_login_id(),
                room: r.room_id.clone(),
            },
            None => Plan {
                host: host
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| login_id(notifier, h)),
                fallback_allowed: true,
                default_user: spec.default_user_login_id(),
                room: spec.room().map(str::to_string),
            },
        }
    }
}

/// The message a request turns into.
fn content(notifier: &LineWorksNotifier, request: &Request) -> Content {
    match request {
        Request::Test => templates::test_content(notifier),
        Request::Visitor(r) => templates::visitor_content(notifier, &fields(r), r.text.as_deref()),
    }
}

fn fields(request: &NotificationRequest) -> templates::Fields<'_> {
    templates::Fields {
        name: &request.visitor.name,
        company: &request.visitor.company,
        count: request.visitor.count,
        purpose: &request.visitor.purpose,
        note: &request.visitor.note,
        host: request.host.as_deref().unwrap_or_default(),
        host_name: request.host_name.as_deref().unwrap_or_default(),
    }
}

/// Delivers one admitted notification with the stored token; on a rejected token, once more
/// with a renewed one (the controller renews it; the relay only asks).
pub async fn deliver(
    relay: &Relay,
    notifier: &LineWorksNotifier,
    request: &Request,
    route: Option<&Route>,
) -> Answer {
    let host = match request {
        Request::Visitor(r) => r.host.as_deref(),
        Request::Test => None,
    };
    let plan = Plan::new(notifier, host, route);
    let content = content(notifier, request);
    let lineworks = relay.sender(notifier);
    let bot_id = notifier.spec.bot_id;
    let Some(token) = relay.cache.current_token(notifier).await else {
        return token_failed(
            &plan,
            "NO_TOKEN",
            "the controller has not stored a token for this notifier yet".into(),
        );
    };
    // A send slot is held only while sending: waiting for a token (above) or for its renewal
    // (below) must not keep other notifiers' visitors waiting.
    let mut outcome = {
        let _slot = relay.sending.acquire().await;
        send(&lineworks, &token, bot_id, &plan, &content).await
    };
    let mut renewed = false;
    if let Err(LineWorksError::Unauthorized { .. }) = &outcome
        && let Some(token) = relay.cache.renewed_token(notifier, &token).await
    {
        renewed = true;
        let _slot = relay.sending.acquire().await;
        outcome = send(&lineworks, &token, bot_id, &plan, &content).await;
    }
    match outcome {
        Ok((result, fallback, targets)) => Answer {
            status: match result {
                Outcome::Delivered => 200,
                Outcome::Partial => 207,
                Outcome::Failed => 502,
            },
            result: NotificationResult {
                outcome: result,
                fallback,
                targets,
            },
        },
        Err(e) if renewed => token_failed(
            &plan,
            "UNAUTHORIZED",
            format!("LINE WORKS rejected the token, and the renewed one too: {e}"),
        ),
        Err(e) => token_failed(
            &plan,
            "NO_TOKEN",
            format!("LINE WORKS rejected the token and no renewed one arrived: {e}"),
        ),
    }
}

/// 502 with the DM target failed for want of a token LINE WORKS accepts.
fn token_failed(plan: &Plan, code: &str, why: String) -> Answer {
    Answer {
        status: 502,
        result: NotificationResult {
            outcome: Outcome::Failed,
            fallback: false,
            targets: vec![Target {
                kind: "user".into(),
                id: plan
                    .host
                    .clone()
                    .unwrap_or_else(|| plan.default_user.clone()),
                status: TargetStatus::Failed,
                code: Some(code.into()),
                description: Some(why),
            }],
        },
    }
}

fn target(kind: &str, id: &str, outcome: &Result<(), LineWorksError>) -> Target {
    match outcome {
        Ok(()) => Target {
            kind: kind.into(),
            id: id.into(),
            status: TargetStatus::Delivered,
            code: None,
            description: None,
        },
        Err(e) => Target {
            kind: kind.into(),
            id: id.into(),
            status: TargetStatus::Failed,
            code: Some(e.code().to_string()),
            description: Some(e.to_string()),
        },
    }
}

/// Sends with `token`; `Err` only when LINE WORKS rejected the token itself (the caller renews
/// and calls again).
async fn send(
    lineworks: &MessageSender,
    token: &SecretString,
    bot_id: i64,
    plan: &Plan,
    content: &Content,
) -> Result<(Outcome, bool, Vec<Target>), LineWorksError> {
    let dm = async {
        match &plan.host {
            Some(host) => {
                let first = lineworks.send_to_user(token, bot_id, host, content).await;
                match first {
                    Err(LineWorksError::NotFound { .. }) if plan.fallback_allowed => {
                        let fallback = lineworks
                            .send_to_user(token, bot_id, &plan.default_user, content)
                            .await;
                        let skipped = Target {
                            kind: "user".into(),
                            id: host.clone(),
                            status: TargetStatus::Skipped,
                            code: Some("NOT_FOUND".into()),
                            description: Some(
                                "unknown user; the default user got the DM instead".into(),
                            ),
                        };
                        let sent = target("user", &plan.default_user, &fallback);
                        (fallback, true, vec![skipped, sent])
                    }
                    other => {
                        let t = target("user", host, &other);
                        (other, false, vec![t])
                    }
                }
            }
            None if plan.fallback_allowed => {
                let r = lineworks
                    .send_to_user(token, bot_id, &plan.default_user, content)
                    .await;
                let t = target("user", &plan.default_user, &r);
                (r, true, vec![t])
            }
            None => (Ok(()), false, Vec::new()),
        }
    };
    let room = async {
        match &plan.room {
            Some(room) => {
                let r = lineworks
                    .send_to_channel(token, bot_id, room, content)
                    .await;
                let t = target("room", room, &r);
                (r, vec![t])
            }
            None => (Ok(()), Vec::new()),
        }
    };
    let ((dm_result, fallback, mut targets), (room_result, room_targets)) = tokio::join!(dm, room);
    // A dead token fails every target alike: hand it back for a renewal and one more try,
    // unless something was delivered already (a retry would send that twice).
    let unauthorized =
        |r: &Result<(), LineWorksError>| matches!(r, Err(LineWorksError::Unauthorized { .. }));
    let dm_attempted = plan.host.is_some() || plan.fallback_allowed;
    let attempted: Vec<&Result<(), LineWorksError>> = [
        (dm_attempted, &dm_result),
        (plan.room.is_some(), &room_result),
    ]
    .into_iter()
    .filter_map(|(attempted, r)| attempted.then_some(r))
    .collect();
    if !attempted.is_empty()
        && attempted.iter().all(|r| unauthorized(r))
        && let Some(Err(e)) = attempted.into_iter().next()
    {
        return Err(e.clone());
    }
    targets.extend(room_targets);
    let sent: Vec<&Target> = targets
        .iter()
        .filter(|t| t.status != TargetStatus::Skipped)
        .collect();
    let delivered = sent
        .iter()
        .filter(|t| t.status == TargetStatus::Delivered)
        .count();
    let outcome = match delivered {
        0 => Outcome::Failed,
        d if d == sent.len() => Outcome::Delivered,
        _ => Outcome::Partial,
    };
    Ok((outcome, fallback, targets))
}

#[cfg(test)]
mod tests {
    use super::is_user_id;

    #[test]
    fn user_ids_are_told_from_login_names() {
        assert!(is_user_id("7b4a3c2d-1e2f-4a5b-8c9d-0e1f2a3b4c5d"));
        assert!(!is_user_id("yamada"));
        assert!(!is_user_id("12345a12-b12c-12d3-e123fghijkl"));
    }
}
