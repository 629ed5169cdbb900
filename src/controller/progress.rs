//! The kstatus conditions, `Reconciling` and `Stalled`, for GitOps tools (Flux's `wait`, Kustomize,
//! kstatus-based health checks): without them a notifier that is not Ready reads as in progress
//! forever, so a wrong client secret waits out a whole sync timeout. Both are "abnormal-true":
//! present only while True, so `kubectl get lwn`'s REASON column (the first False condition) and
//! the failure counters see only the four conditions a person reads.

use super::findings::Findings;
use super::verdict::Verdict;
use crate::api::conditions::{ConditionStatus, ConditionType};

/// The condition types this module owns.
pub const TYPES: [ConditionType; 2] = [ConditionType::Reconciling, ConditionType::Stalled];

/// `Reconciling` while the operator is still working it out (a check could not finish, LINE WORKS
/// did not answer, nothing decided yet), `Stalled` when a person must act, nothing when Ready.
/// Either carries the reason of the condition that decided Ready (e.g. InvalidClientCredentials)
/// and `<reason>: <Ready's message>`, so a tool that shows one line shows the cause.
pub fn verdict(findings: &Findings) -> Option<Verdict> {
    let ready = findings
        .verdicts
        .iter()
        .find(|v| v.type_ == ConditionType::Ready)?;
    if ready.is_true() {
        return None;
    }
    // The first of the three conditions Ready summarises that is not True decides.
    let blocking = [
        ConditionType::Authorized,
        ConditionType::BotInService,
        ConditionType::TestNotified,
    ]
    .iter()
    .find_map(|t| {
        findings
            .verdicts
            .iter()
            .find(|v| v.type_ == *t && !v.is_true())
    });
    let settled = ready.status == ConditionStatus::False
        && !findings.transient
        && blocking.is_none_or(|b| b.status == ConditionStatus::False);
    let type_ = if settled {
        ConditionType::Stalled
    } else {
        ConditionType::Reconciling
    };
    let reason = ready.event_reason();
    Some(Verdict::new(
        type_,
        ConditionStatus::True,
        reason,
        format!("{reason}: {}", ready.message),
    ))
}
