//! Turning one visitor notification into LINE WORKS messages, following the rules of the vendor's manual
//! (RECEPTIONIST, LINE WORKS API 2.0 chat settings): a DM to
//! the host, or to the default user when the host is unset or unknown (`fallback`); a room message
//! when a room is configured; a route's own targets instead when a route is named.

use lineworks_client::{Content, LineWorksError, MessageSender, SecretString};

use super::Relay;
use super::api::{NotificationRequest, NotificationResult, Outcome, Target, TargetStatus};
use super::idempotency::Answer;
use crate::api::deliverable::Blocked;
use crate::api::{LineWorksNotifier, Route};
use crate::templates;

/// What a caller asked to send.
pub enum Request {
    /// A visitor notification (`POST …/notifications`).
    Visitor(Box<NotificationRequest>),
    /// The console's テスト通知 button (`POST …/test-notification`).
    Test,
    /// An Alertmanager alert group (`POST …/alertmanager`), rendered.
    Alert(Box<AlertGroup>),
}

/// An alert group as the relay sends it.
pub struct AlertGroup {
    pub content: Content,
    /// The route `spec.alerts` picks for it, if any.
    pub route: Option<Route>,
}

/// Where a notification goes.
struct Plan {
    /// The host's login ID or user ID, if one was given.
    pub host: Option<String>,
    /// Whether a failed host DM falls back to the default user.
    pub fallback_allowed: bool,
    pub default_user: String,
    pub room: Option<String>,
    /// Why the room is not sent to (the BotInService condition and its fix), if it is not.
    pub room_blocked: Option<Blocked>,
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
pub(super) fn is_user_id(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Plan {
    /// An alert group's targets: its route's, else the notifier's room alone, else (no room, or
    /// a room the bot cannot post to) the default user, so an alert always reaches someone.
    fn for_alert(
        notifier: &LineWorksNotifier,
        route: Option<&Route>,
        room_blocked: Option<&Blocked>,
    ) -> Self {
        if route.is_some() {
            return Plan::new(notifier, None, route);
        }
        let room = notifier
            .spec
            .room()
            .filter(|_| room_blocked.is_none())
            .map(str::to_string);
        Plan {
            host: None,
            fallback_allowed: room.is_none(),
            default_user: notifier.spec.default_user_login_id(),
            room,
            room_blocked: None,
        }
    }

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
                room_blocked: None,
            },
            None => Plan {
                host: host
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| login_id(notifier, h)),
                fallback_allowed: true,
                default_user: spec.default_user_login_id(),
                room: spec.room().map(str::to_string),
                room_blocked: None,
            },
        }
    }
}

/// The message a request turns into.
fn content(notifier: &LineWorksNotifier, request: &Request) -> Content {
    match request {
        Request::Test => templates::test_content(notifier),
        Request::Visitor(r) => templates::visitor_content(notifier, &fields(r), r.text.as_deref()),
        Request::Alert(a) => a.content.clone(),
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

/// Delivers one admitted notification with the stored token and the settings it was admitted
/// under; on a rejected token, once more with one the controller renewed (the relay only asks).
pub async fn deliver(
    relay: &Relay,
    notifier: &LineWorksNotifier,
    config: lineworks_client::ClientConfig,
    request: &Request,
    route: Option<&Route>,
    parts: Parts,
    room_blocked: Option<Blocked>,
) -> Answer {
    let plan = match request {
        Request::Alert(_) => Plan::for_alert(notifier, route, room_blocked.as_ref()),
        Request::Visitor(_) | Request::Test => {
            let host = match request {
                Request::Visitor(r) => r.host.as_deref(),
                _ => None,
            };
            let mut plan = Plan::new(notifier, host, route);
            // The notifier's own room is broken (a route's room is not checked, so it is tried).
            if route.is_none() {
                plan.room_blocked = room_blocked;
            }
            plan
        }
    };
    let content = content(notifier, request);
    let lineworks = relay.sender(config);
    let bot_id = notifier.spec.bot_id;
    let Some(token) = relay.cache.current_token(notifier).await else {
        return token_failed(
            &plan,
            "NO_TOKEN",
            "the controller has not stored a token for this notifier yet".into(),
        );
    };
    // The client takes one of the relay's send slots only while a request is on the wire:
    // pacing, waiting for a token (above) or for its renewal (below) keeps no other
    // notifier's visitor waiting.
    let (mut dm, mut room) = send(&lineworks, &token, bot_id, &plan, &content, parts).await;
    // The token died while this notification was out (revoked, expired early): renew it and
    // send again exactly the parts LINE WORKS refused for it, never one already delivered.
    let refused = Parts {
        dm: dm.as_ref().is_some_and(Sent::token_refused),
        room: room.as_ref().is_some_and(Sent::token_refused),
    };
    let mut renewal = Renewal::NotNeeded;
    if refused.any() {
        renewal = Renewal::NoneArrived;
        if let Some(token) = relay.cache.renewed_token(notifier, &token).await {
            renewal = Renewal::Renewed;
            let (again_dm, again_room) =
                send(&lineworks, &token, bot_id, &plan, &content, refused).await;
            if refused.dm {
                dm = again_dm;
            }
            if refused.room {
                room = again_room;
            }
        }
    }
    let fallback = dm.as_ref().is_some_and(|d| d.fallback);
    let mut targets: Vec<Target> = [dm, room]
        .into_iter()
        .flatten()
        .flat_map(|part| part.targets)
        .collect();
    for t in &mut targets {
        if t.code.as_deref() == Some(UNAUTHORIZED) {
            t.description = Some(match renewal {
                Renewal::Renewed => "LINE WORKS rejected the token, and the renewed one too: the app's authorization was revoked (see the notifier's Authorized condition)".into(),
                _ => "LINE WORKS rejected the token and the controller stored no renewed one in time".into(),
            });
        }
    }
    let outcome = outcome(&targets);
    Answer {
        status: status_of(outcome),
        result: NotificationResult {
            outcome,
            fallback,
            targets,
        },
    }
}

/// The code a target refused for its token carries.
const UNAUTHORIZED: &str = "UNAUTHORIZED";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Renewal {
    NotNeeded,
    NoneArrived,
    Renewed,
}

/// Which parts of a notification to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    dm: bool,
    room: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        dm: true,
        room: true,
    };

    fn any(self) -> bool {
        self.dm || self.room
    }

    /// The parts an earlier answer to the same request left failed: a repeat sends those again
    /// and nothing else (never a target delivered, skipped, or possibly delivered). An answer
    /// that never got to send (no token yet) is sent again whole.
    pub fn failed_in(previous: &Answer) -> Parts {
        let targets = &previous.result.targets;
        if targets
            .iter()
            .any(|t| t.code.as_deref() == Some("NO_TOKEN"))
        {
            return Parts::ALL;
        }
        let failed = |kind: &str| {
            targets
                .iter()
                .any(|t| t.kind == kind && t.status == TargetStatus::Failed)
        };
        Parts {
            dm: failed("user"),
            room: failed("room"),
        }
    }
}

/// The answer to a repeat: the earlier targets of the parts not sent again, and the new ones.
pub fn merge(previous: &Answer, parts: Parts, again: Answer) -> Answer {
    let no_token = |a: &Answer| {
        a.result
            .targets
            .iter()
            .any(|t| t.code.as_deref() == Some("NO_TOKEN"))
    };
    if no_token(previous) {
        return again;
    }
    if no_token(&again) {
        // Nothing was sent this time: the failed targets stay failed for the next repeat.
        return previous.clone();
    }
    let kept = previous
        .result
        .targets
        .iter()
        .filter(|t| (t.kind == "user" && !parts.dm) || (t.kind == "room" && !parts.room));
    let mut targets: Vec<Target> = kept.cloned().collect();
    targets.extend(again.result.targets);
    targets.sort_by_key(|t| t.kind != "user");
    let outcome = outcome(&targets);
    Answer {
        status: status_of(outcome),
        result: NotificationResult {
            outcome,
            fallback: if parts.dm {
                again.result.fallback
            } else {
                previous.result.fallback
            },
            targets,
        },
    }
}

fn status_of(outcome: Outcome) -> u16 {
    match outcome {
        Outcome::Delivered => 200,
        Outcome::Partial => 207,
        Outcome::Failed => 502,
    }
}

/// What sending one part gave.
struct Sent {
    /// The answer that decides the part (the fallback DM's, when the host was unknown).
    result: Result<(), LineWorksError>,
    fallback: bool,
    targets: Vec<Target>,
}

impl Sent {
    fn token_refused(&self) -> bool {
        matches!(self.result, Err(LineWorksError::Unauthorized { .. }))
    }
}

/// delivered: every target that was sent to; failed: none delivered and none possibly
/// delivered; partial otherwise.
fn outcome(targets: &[Target]) -> Outcome {
    let sent: Vec<&Target> = targets
        .iter()
        .filter(|t| t.status != TargetStatus::Skipped)
        .collect();
    let count = |status| sent.iter().filter(|t| t.status == status).count();
    match (count(TargetStatus::Delivered), count(TargetStatus::Unknown)) {
        (d, _) if d == sent.len() => Outcome::Delivered,
        (0, 0) => Outcome::Failed,
        _ => Outcome::Partial,
    }
}

/// 502 with the DM target failed for want of a token.
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
    let (status, code, description) = match outcome {
        Ok(()) => (TargetStatus::Delivered, None, None),
        // The request went out and its answer was lost: LINE WORKS may have delivered it.
        Err(e) if e.maybe_processed() => (
            TargetStatus::Unknown,
            Some("MAYBE_DELIVERED".to_string()),
            Some(format!(
                "LINE WORKS may have delivered it but its answer was lost ({e}); retrying may deliver it twice: ask the recipient, or retry with the same idempotency key"
            )),
        ),
        Err(e) if e.never_sent() => (
            TargetStatus::Failed,
            Some("NOT_SENT".to_string()),
            Some(format!(
                "not sent: the domain's per-minute budget had no room before the deadline, so LINE WORKS was never asked; retry later ({e})"
            )),
        ),
        Err(LineWorksError::Unauthorized { .. }) => {
            (TargetStatus::Failed, Some(UNAUTHORIZED.to_string()), None)
        }
        Err(e) => (
            TargetStatus::Failed,
            Some(e.code().to_string()),
            Some(e.to_string()),
        ),
    };
    Target {
        kind: kind.into(),
        id: id.into(),
        status,
        code,
        description,
    }
}

/// Sends the chosen parts with `token`, DM and room at once. A part not in the plan is `None`.
async fn send(
    lineworks: &MessageSender,
    token: &SecretString,
    bot_id: i64,
    plan: &Plan,
    content: &Content,
    parts: Parts,
) -> (Option<Sent>, Option<Sent>) {
    let dm = async {
        if parts.dm {
            send_dm(lineworks, token, bot_id, plan, content).await
        } else {
            None
        }
    };
    let room = async {
        match (&plan.room, parts.room) {
            (Some(room), true) if let Some(b) = &plan.room_blocked => Some(Sent {
                result: Ok(()),
                fallback: false,
                targets: vec![Target {
                    kind: "room".into(),
                    id: room.clone(),
                    status: TargetStatus::Failed,
                    code: Some(b.reason.clone()),
                    description: Some(format!("not sent: {}", b.message)),
                }],
            }),
            (Some(room), true) => {
                let result = lineworks
                    .send_to_channel(token, bot_id, room, content)
                    .await;
                let targets = vec![target("room", room, &result)];
                Some(Sent {
                    result,
                    fallback: false,
                    targets,
                })
            }
            _ => None,
        }
    };
    tokio::join!(dm, room)
}

/// The DM: to the host, or to the default user when the host is unset or unknown to LINE WORKS.
async fn send_dm(
    lineworks: &MessageSender,
    token: &SecretString,
    bot_id: i64,
    plan: &Plan,
    content: &Content,
) -> Option<Sent> {
    let host = match &plan.host {
        Some(host) => host,
        None if plan.fallback_allowed => {
            let result = lineworks
                .send_to_user(token, bot_id, &plan.default_user, content)
                .await;
            let targets = vec![target("user", &plan.default_user, &result)];
            return Some(Sent {
                result,
                fallback: true,
                targets,
            });
        }
        None => return None,
    };
    let first = lineworks.send_to_user(token, bot_id, host, content).await;
    if !(plan.fallback_allowed && matches!(first, Err(LineWorksError::NotFound { .. }))) {
        let targets = vec![target("user", host, &first)];
        return Some(Sent {
            result: first,
            fallback: false,
            targets,
        });
    }
    let result = lineworks
        .send_to_user(token, bot_id, &plan.default_user, content)
        .await;
    let skipped = Target {
        kind: "user".into(),
        id: host.clone(),
        status: TargetStatus::Skipped,
        code: Some("NOT_FOUND".into()),
        description: Some("unknown user; the default user got the DM instead".into()),
    };
    let targets = vec![skipped, target("user", &plan.default_user, &result)];
    Some(Sent {
        result,
        fallback: true,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: &str, status: TargetStatus, code: Option<&str>) -> Target {
        Target {
            kind: kind.into(),
            id: format!("{kind}-id"),
            status,
            code: code.map(str::to_string),
            description: None,
        }
    }

    fn answer(targets: Vec<Target>) -> Answer {
        let outcome = outcome(&targets);
        Answer {
            status: status_of(outcome),
            result: NotificationResult {
                outcome,
                fallback: false,
                targets,
            },
        }
    }

    #[test]
    fn a_repeat_sends_only_what_failed_and_merges() {
        use TargetStatus::{Delivered, Failed, Skipped, Unknown};
        let room_failed = answer(vec![
            t("user", Delivered, None),
            t("room", Failed, Some("FORBIDDEN")),
        ]);
        let parts = Parts::failed_in(&room_failed);
        assert_eq!(
            parts,
            Parts {
                dm: false,
                room: true
            }
        );
        let merged = merge(
            &room_failed,
            parts,
            answer(vec![t("room", Delivered, None)]),
        );
        assert_eq!(
            (merged.status, merged.result.outcome),
            (200, Outcome::Delivered)
        );
        assert_eq!(merged.result.targets.len(), 2);
        assert_eq!(merged.result.targets[0].kind, "user");

        // Possibly delivered and skipped targets are never sent again.
        let unsure = answer(vec![
            t("user", Skipped, Some("NOT_FOUND")),
            t("user", Unknown, None),
        ]);
        assert!(!Parts::failed_in(&unsure).any());
        // Nothing sent for want of a token: everything, once a token is there.
        let no_token = answer(vec![t("user", Failed, Some("NO_TOKEN"))]);
        assert_eq!(Parts::failed_in(&no_token), Parts::ALL);
        // Still no token on the repeat: the earlier answer stands.
        let merged = merge(&room_failed, parts, no_token);
        assert_eq!(merged.status, 207);
    }

    #[test]
    fn an_alert_goes_to_its_route_else_the_room_else_the_default_user() {
        let mut n = LineWorksNotifier::new(
            "n",
            serde_json::from_value(serde_json::json!({
                "botId": 1, "domain": "d", "defaultUser": "u", "roomId": "room-1",
                "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "s"}}
            }))
            .expect("spec"),
        );
        let room_only = Plan::for_alert(&n, None, None);
        assert_eq!(room_only.room.as_deref(), Some("room-1"));
        assert!(
            room_only.host.is_none() && !room_only.fallback_allowed,
            "no DM"
        );
        // A room the bot cannot post to: the default user instead, so someone is told.
        let blocked = Blocked {
            reason: "BotNotInRoom".into(),
            message: "invite the bot".into(),
        };
        let to_user = Plan::for_alert(&n, None, Some(&blocked));
        assert!(to_user.room.is_none() && to_user.fallback_allowed);
        assert_eq!(to_user.default_user, "u@d");
        n.spec.room_id = None;
        assert!(Plan::for_alert(&n, None, None).fallback_allowed);
        let route = Route {
            name: "oncall".into(),
            user: Some("sato".into()),
            room_id: None,
        };
        let routed = Plan::for_alert(&n, Some(&route), Some(&blocked));
        assert_eq!(routed.host.as_deref(), Some("sato@d"));
        assert!(routed.room.is_none());
    }

    #[test]
    fn user_ids_are_told_from_login_names() {
        assert!(is_user_id("7b4a3c2d-1e2f-4a5b-8c9d-0e1f2a3b4c5d"));
        assert!(!is_user_id("yamada"));
        assert!(!is_user_id("12345a12-b12c-12d3-e123fghijkl"));
    }
}
