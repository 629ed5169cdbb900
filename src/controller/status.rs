//! Turning verdicts into status: conditions keep their lastTransitionTime unless their status
//! flips, carry the generation they describe, and are written by server-side apply only when
//! something changed. Transitions become Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::verdict::Verdict;
use crate::api::conditions::ConditionStatus;
use crate::api::{LineWorksNotifier, LineWorksNotifierStatus};

/// The conditions after applying `verdicts` to `old` (conditions without a verdict are kept).
pub fn merge(
    old: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = old.to_vec();
    for v in verdicts {
        let previous = old.iter().find(|c| c.type_ == v.type_.as_str());
        let last_transition_time = match previous {
            Some(p) if p.status == v.status.as_str() => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        let condition = Condition {
            type_: v.type_.as_str().into(),
            status: v.status.as_str().into(),
            reason: v.reason.as_str().into(),
            message: v.message.clone(),
            observed_generation: generation,
            last_transition_time,
        };
        match out.iter_mut().find(|c| c.type_ == condition.type_) {
            Some(slot) => *slot = condition,
            None => out.push(condition),
        }
    }
    out.sort_by_key(|c| order(&c.type_));
    out
}

fn order(type_: &str) -> usize {
    [
        "Authorized",
        "BotInService",
        "TestNotified",
        "Ready",
        "Reconciling",
        "Stalled",
    ]
    .iter()
    .position(|t| *t == type_)
    .unwrap_or(usize::MAX)
}

/// Verdicts worth an Event: the status or reason differs from the old condition, or a False
/// condition now says something else (its cause changed: a client-secret error became a
/// private-key error), so the newest Event always matches the condition.
pub fn transitions<'a>(old: &[Condition], verdicts: &'a [Verdict]) -> Vec<&'a Verdict> {
    verdicts
        .iter()
        .filter(|v| {
            old.iter()
                .find(|c| c.type_ == v.type_.as_str())
                .is_none_or(|c| {
                    c.status != v.status.as_str()
                        || c.reason != v.reason.as_str()
                        || (v.status == ConditionStatus::False && c.message != v.message)
                })
        })
        .collect()
}

/// Writes `status` by server-side apply unless it equals what is stored.
pub async fn apply(
    api: &Api<LineWorksNotifier>,
    notifier: &LineWorksNotifier,
    status: &LineWorksNotifierStatus,
) -> Result<bool, kube::Error> {
    if unchanged(notifier.status.as_ref(), status) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": "lineworks-operator.dev/v1alpha1",
        "kind": "LineWorksNotifier",
        "status": status,
    });
    api.patch_status(
        &notifier.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

/// Whether `status` would be stored as `stored` is. Compared as written, not as held: times
/// are stored to the second, so a time made in this process (a pass remembered in memory) differs
/// in nanoseconds from the same time read back, and compared as held every reconcile wrote an
/// unchanged status again (and woke itself with it).
fn unchanged(stored: Option<&LineWorksNotifierStatus>, status: &LineWorksNotifierStatus) -> bool {
    let Some(stored) = stored else {
        return false;
    };
    stored == status
        || matches!(
            (serde_json::to_value(stored), serde_json::to_value(status)),
            (Ok(a), Ok(b)) if a == b
        )
}

/// One Event per transition: Warning when a condition became False (a person must act), Normal
/// otherwise. Its reason is the real cause (for Ready, that of the condition blocking it) and its
/// note the condition's own text.
pub async fn publish(ctx: &Context, notifier: &LineWorksNotifier, changed: &[&Verdict]) {
    for v in changed {
        let event = Event {
            type_: if v.status == ConditionStatus::False {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: v.event_reason().as_str().into(),
            note: Some(format!("{} {}: {}", v.type_, v.status.as_str(), v.message)),
            action: format!("Set{}", v.type_),
            secondary: None,
        };
        ctx.publish(notifier, &event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{ConditionType, Reason};

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"))
    }

    #[test]
    fn a_status_differing_only_below_a_second_is_unchanged() {
        let at =
            |nanos| Time(k8s_openapi::jiff::Timestamp::new(1_700_000_000, nanos).expect("time"));
        let status = |nanos| LineWorksNotifierStatus {
            bot_checks_passed: Some(crate::api::BotChecksPassed {
                digest: "d".into(),
                at: at(nanos),
            }),
            ..Default::default()
        };
        // As read back from the API server, and as remembered in this process.
        assert!(unchanged(Some(&status(0)), &status(123_456_789)));
        assert!(!unchanged(None, &status(0)));
        let mut later = status(0);
        later.observed_generation = Some(2);
        assert!(!unchanged(Some(&status(0)), &later));
    }

    #[test]
    fn last_transition_time_changes_only_on_a_flip() {
        let first = merge(
            &[],
            &[Verdict::new(
                ConditionType::Ready,
                ConditionStatus::False,
                Reason::NotAuthorized,
                "a",
            )],
            Some(1),
            &t(100),
        );
        let same_status = merge(
            &first,
            &[Verdict::new(
                ConditionType::Ready,
                ConditionStatus::False,
                Reason::BotNotInService,
                "b",
            )],
            Some(2),
            &t(200),
        );
        assert_eq!(same_status[0].last_transition_time, t(100));
        assert_eq!(same_status[0].reason, "BotNotInService");
        assert_eq!(same_status[0].observed_generation, Some(2));
        let flipped = merge(
            &same_status,
            &[Verdict::new(
                ConditionType::Ready,
                ConditionStatus::True,
                Reason::NotifierReady,
                "c",
            )],
            Some(2),
            &t(300),
        );
        assert_eq!(flipped[0].last_transition_time, t(300));
    }

    #[test]
    fn conditions_keep_a_stable_order_and_untouched_ones_survive() {
        let a = merge(
            &[],
            &[
                Verdict::new(
                    ConditionType::Ready,
                    ConditionStatus::True,
                    Reason::NotifierReady,
                    "",
                ),
                Verdict::new(
                    ConditionType::Authorized,
                    ConditionStatus::True,
                    Reason::TokenValid,
                    "",
                ),
            ],
            Some(1),
            &t(1),
        );
        let b = merge(
            &a,
            &[Verdict::new(
                ConditionType::BotInService,
                ConditionStatus::True,
                Reason::BotReachable,
                "",
            )],
            Some(1),
            &t(2),
        );
        let types: Vec<_> = b.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Authorized", "BotInService", "Ready"]);
    }
}
