//! Turning one visitor notification into LINE WORKS messages, following the seed's rules: a DM to
//! the host, or to the default user when the host is unset or unknown (`fallback`); a room message
//! when a room is configured; a route's own targets instead when a route is named.

use crate::api::LineWorksNotifier;
use lineworks_client::{Content, LineWorksClient, LineWorksError, SecretString};

use super::api::{Outcome, Target, TargetStatus};

/// Where a notification goes.
pub struct Plan {
    /// The host's login ID or user ID, if one was given.
    pub host: Option<String>,
    /// Whether a failed host DM falls back to the default user.
    pub fallback_allowed: bool,
    pub default_user: String,
    pub room: Option<String>,
}

/// A host as LINE WORKS knows it: a login ID or a user ID (UUID form) stays as it is; any other
/// bare value is the part before `@` (the seed's ユーザーID) and gets the notifier's domain.
pub fn login_id(notifier: &LineWorksNotifier, host: &str) -> String {
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
            code: Some(
                e.body()
                    .map(|b| b.code.clone())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "ERROR".into()),
            ),
            description: Some(e.to_string()),
        },
    }
}

/// Sends with `token`; `Err` only when LINE WORKS rejected the token itself (the caller renews
/// and calls again).
pub async fn send(
    lineworks: &LineWorksClient,
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
