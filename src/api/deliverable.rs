//! What a notifier can deliver right now, judged from its conditions: the one rule that the
//! controller (`status.delivering`) and the relay (which targets it sends to) share.
//!
//! A visitor must reach someone even when one target is broken: a DM needs a token and the bot
//! in the domain; a room message also needs the bot in that room; a failed test notification
//! blocks nothing by itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::conditions::{ConditionExt, ConditionStatus, ConditionType, Reason};
use super::{LineWorksNotifier, LineWorksNotifierSpec};

/// Which visitor notification targets work, as `kubectl get lwn` shows it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Delivering {
    /// Every configured target (DMs, and the room if one is set).
    All,
    /// DMs only: the room is broken (see BotInService); room messages are skipped.
    DirectMessagesOnly,
    /// Nothing: not authorized, the bot is not in service, or the notifier is suspended.
    None,
}

/// Why a target cannot be sent to: the condition reason and its fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: String,
    pub message: String,
}

/// Per part of a notification: whether it can be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deliverable {
    pub dm: Result<(), Blocked>,
    pub room: Result<(), Blocked>,
}

impl Deliverable {
    pub fn delivering(&self) -> Delivering {
        match (&self.dm, &self.room) {
            (Ok(()), Ok(())) => Delivering::All,
            (Ok(()), Err(_)) => Delivering::DirectMessagesOnly,
            (Err(_), _) => Delivering::None,
        }
    }
}

fn blocked(reason: impl Into<String>, message: impl Into<String>) -> Blocked {
    Blocked {
        reason: reason.into(),
        message: message.into(),
    }
}

impl LineWorksNotifier {
    /// What can be sent now, judged from the stored conditions.
    pub fn deliverable(&self) -> Deliverable {
        let conditions = self.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
        Deliverable::judge(&self.spec, conditions)
    }
}

impl Deliverable {
    /// What a notifier with `spec` and `conditions` can send. Unknown conditions do not block (a
    /// check that could not run says nothing about the target: LINE WORKS will answer for it);
    /// False ones do.
    pub fn judge(spec: &LineWorksNotifierSpec, conditions: &[Condition]) -> Deliverable {
        let condition = |t: ConditionType| conditions.iter().find(|c| c.type_ == t.as_str());
        let all = |b: Blocked| Deliverable {
            dm: Err(b.clone()),
            room: Err(b),
        };
        if spec.suspend {
            return all(blocked(
                Reason::Suspended.as_str(),
                "spec.suspend is true: set it to false to resume",
            ));
        }
        let Some(authorized) = condition(ConditionType::Authorized) else {
            return all(blocked(
                Reason::Reconciling.as_str(),
                "the controller has not reported yet",
            ));
        };
        if authorized.is(ConditionStatus::False) {
            return all(blocked(&authorized.reason, &authorized.message));
        }
        let bot = condition(ConditionType::BotInService).filter(|c| c.is(ConditionStatus::False));
        match bot.map(|c| (c, c.condition_reason())) {
            None => Deliverable {
                dm: Ok(()),
                room: Ok(()),
            },
            Some((c, Some(Reason::BotNotInRoom | Reason::RoomNotFound))) => Deliverable {
                dm: Ok(()),
                room: Err(blocked(&c.reason, &c.message)),
            },
            Some((c, _)) => all(blocked(&c.reason, &c.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LineWorksNotifierStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn notifier(conditions: &[(&str, &str, &str)], suspend: bool) -> LineWorksNotifier {
        let spec = serde_json::from_value(serde_json::json!({
            "botId": 1, "domain": "d", "defaultUser": "u", "roomId": "r", "suspend": suspend,
            "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "s"}}
        }))
        .unwrap_or_else(|e| panic!("spec: {e}"));
        let mut n = LineWorksNotifier::new("n", spec);
        n.status = Some(LineWorksNotifierStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, r)| Condition {
                    type_: t.to_string(),
                    status: s.to_string(),
                    reason: r.to_string(),
                    message: format!("{r} fix"),
                    observed_generation: None,
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..Default::default()
        });
        n
    }

    #[test]
    fn each_target_is_judged_by_the_conditions_it_needs() {
        use Delivering::{All, DirectMessagesOnly, None};
        let ok = ("Authorized", "True", "TokenValid");
        type Case<'a> = (Vec<(&'a str, &'a str, &'a str)>, bool, Delivering);
        let cases: [Case; 8] = [
            (
                vec![ok, ("BotInService", "True", "BotReachable")],
                false,
                All,
            ),
            (
                vec![ok, ("BotInService", "False", "BotNotInRoom")],
                false,
                DirectMessagesOnly,
            ),
            (
                vec![ok, ("BotInService", "False", "RoomNotFound")],
                false,
                DirectMessagesOnly,
            ),
            (
                vec![ok, ("BotInService", "False", "BotNotInDomain")],
                false,
                None,
            ),
            (
                vec![("Authorized", "False", "InvalidClientCredentials")],
                false,
                None,
            ),
            (vec![], false, None),
            (
                vec![ok, ("BotInService", "True", "BotReachable")],
                true,
                None,
            ),
            // A failed test notification blocks nothing; an unknown check neither.
            (
                vec![
                    ok,
                    ("BotInService", "Unknown", "Reconciling"),
                    ("TestNotified", "False", "DefaultUserNotFound"),
                    ("Ready", "False", "TestNotificationFailed"),
                ],
                false,
                All,
            ),
        ];
        for (conditions, suspend, expected) in cases {
            let d = notifier(&conditions, suspend).deliverable();
            assert_eq!(d.delivering(), expected, "{conditions:?} suspend={suspend}");
        }
        let d = notifier(&[ok, ("BotInService", "False", "BotNotInRoom")], false).deliverable();
        assert_eq!(
            d.room,
            Err(Blocked {
                reason: "BotNotInRoom".into(),
                message: "BotNotInRoom fix".into()
            })
        );
    }
}
