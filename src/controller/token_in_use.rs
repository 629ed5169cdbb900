//! What the Authorized step says of the token in use: Authorized=True with its expiry, or a
//! failed renewal that keeps a still-valid token in use.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use lineworks_client::{LineWorksError, TokenSet, unix_seconds};

use super::authorization::Authorized;
use super::diagnosis;
use super::findings::Findings;
use super::tokens::{self, Stored};
use super::verdict::Verdict;
use crate::api::LineWorksNotifier;
use crate::api::conditions::{ConditionStatus, ConditionType, Reason};

/// A renewal that failed for a passing reason leaves the current token in use while it lasts:
/// an outage of the token endpoint must not take a working notifier down. Any other failure
/// sets its verdict and yields no token.
pub(super) fn keep_current_on_passing_failure(
    notifier: &LineWorksNotifier,
    e: &LineWorksError,
    current: Option<&Stored>,
    now: SystemTime,
    findings: &mut Findings,
) -> Option<Authorized> {
    let diagnosis = diagnosis::token_failure(&notifier.spec, e);
    let keep = current.filter(|s| s.tokens.expires_at() > now && diagnosis.passing);
    let Some(current) = keep else {
        findings.diagnose(diagnosis);
        return None;
    };
    findings.transient = true;
    let why = diagnosis
        .verdicts
        .first()
        .map(|v| v.message.clone())
        .unwrap_or_default();
    let mut authorized = accept(&current.tokens, Duration::ZERO, findings);
    findings.set(Verdict::new(
        ConditionType::Authorized,
        ConditionStatus::True,
        Reason::TokenValid,
        format!(
            "renewal failed ({why}); the current token stays valid until it expires, retrying with backoff"
        ),
    ));
    authorized.renew_at = now;
    Some(authorized)
}

/// Authorized=True for `tokens`, which are now the ones in use.
pub(super) fn accept(tokens: &TokenSet, floor: Duration, findings: &mut Findings) -> Authorized {
    findings.status.access_token_expires_at = Some(Time(to_timestamp(tokens.expires_at())));
    findings.status.authorization_url = None;
    findings.set(Verdict::new(
        ConditionType::Authorized,
        ConditionStatus::True,
        Reason::TokenValid,
        format!(
            "access token valid; renewed automatically before it expires (scope {})",
            tokens.scope
        ),
    ));
    Authorized {
        token: tokens.access_token.clone(),
        renew_at: tokens::renew_at(tokens, floor),
        version: unix_seconds(tokens.issued_at).to_string(),
        expires_at: tokens.expires_at(),
    }
}

pub(super) fn to_timestamp(t: SystemTime) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(unix_seconds(t)).unwrap_or(i64::MAX))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}
