//! Pure judgements: what a failed call, a test notification's result or the other conditions
//! mean for a condition, with the one-line fix a person reads in `kubectl describe`. No I/O, so
//! each is unit-tested as a table below.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use lineworks_client::LineWorksError;

use super::verdict::{Verdict, unauthorized};
use crate::api::conditions::{ConditionExt, ConditionStatus, ConditionType, Reason};
use crate::api::{
    AuthMode, DeliveryResult, LineWorksNotifier, LineWorksNotifierSpec, TargetKind, TargetResult,
    TestNotificationStatus,
};

/// Verdicts for a failure, and whether it may pass by itself (then the reconcile backs off and
/// looks again; nothing needs fixing unless it persists).
#[derive(Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub verdicts: Vec<Verdict>,
    pub passing: bool,
}

/// Whether a token request failed for a reason that may pass: LINE WORKS busy or unreachable, or
/// an answer in no documented form (a proxy's error page).
pub fn token_endpoint_unavailable(e: &LineWorksError) -> bool {
    e.may_pass() || matches!(e, LineWorksError::InvalidResponse { .. })
}

/// Authorized for a failed token request.
pub fn token_failure(spec: &LineWorksNotifierSpec, e: &LineWorksError) -> Diagnosis {
    let secret = &spec.auth.credentials_secret_ref.name;
    if token_endpoint_unavailable(e) {
        return Diagnosis {
            verdicts: vec![unauthorized(
                Reason::TokenEndpointUnavailable,
                format!(
                    "LINE WORKS token endpoint {} is not answering ({e}); retrying with backoff, nothing to fix unless it persists (check authBaseURL and egress to it)",
                    spec.auth_base_url()
                ),
            )],
            passing: true,
        };
    }
    let verdict = match (e.code(), spec.auth.mode) {
        ("invalid_client", _) => unauthorized(
            Reason::InvalidClientCredentials,
            format!(
                "LINE WORKS refused the Client ID or Client Secret in Secret {secret} ({e}): copy both again from Developer Console > API 2.0 > (app)"
            ),
        ),
        ("invalid_scope", _) => unauthorized(
            Reason::ScopeMissing,
            format!(
                "the app lacks a requested scope ({e}): in Developer Console > API 2.0 > (app) > OAuth Scopes check {}",
                spec.auth.scopes.join(", ")
            ),
        ),
        (_, AuthMode::ServiceAccount) => unauthorized(
            Reason::PrivateKeyInvalid,
            format!(
                "LINE WORKS refused the Service Account assertion ({e}): the Service Account ID or private key in Secret {secret} does not belong to this app; issue them again in Developer Console > API 2.0 > (app) > Service Account"
            ),
        ),
        (_, AuthMode::UserAccount) => unauthorized(
            Reason::ReauthorizationRequired,
            format!(
                "LINE WORKS refused the refresh token ({e}): it lapsed (90 days unused) or the authorizing administrator's password or role changed; an administrator must authorize again"
            ),
        ),
    };
    Diagnosis {
        verdicts: vec![verdict],
        passing: false,
    }
}

/// A check (condition `type_`) whose LINE WORKS call failed without saying what is
/// misconfigured: look again later. A token refused right after it was renewed means the app's
/// authorization itself was revoked.
pub fn check_failure(type_: ConditionType, e: &LineWorksError) -> Diagnosis {
    let mut verdicts = Vec::new();
    if matches!(e, LineWorksError::Unauthorized { .. }) {
        verdicts.push(unauthorized(
            Reason::ReauthorizationRequired,
            format!("a fresh token was refused too ({e}): the app's authorization was revoked; authorize again"),
        ));
    }
    verdicts.push(Verdict::new(
        type_,
        ConditionStatus::Unknown,
        Reason::Reconciling,
        format!("could not check with LINE WORKS ({e}); retrying with backoff"),
    ));
    Diagnosis {
        verdicts,
        passing: true,
    }
}

/// The token renewed after a refusal expired before LINE WORKS answered its check: look again.
pub fn renewed_token_lapsed() -> Diagnosis {
    Diagnosis {
        verdicts: vec![Verdict::new(
            ConditionType::BotInService,
            ConditionStatus::Unknown,
            Reason::Reconciling,
            "the renewed access token expired before LINE WORKS answered the check; retrying with backoff",
        )],
        passing: true,
    }
}

/// Where a condition message sends a person to authorize: the link itself (about 450 characters)
/// lives in status.authorizationURL, so messages stay one line.
pub const OPEN_THE_LINK: &str =
    "open the link in status.authorizationURL (`kubectl lineworks authorize` prints it)";

/// ReauthorizationRequired while waiting for an administrator: keeps the cause found when the
/// refresh token was refused (the stored Authorized condition).
pub fn reauthorization(previous: Option<&Condition>) -> Verdict {
    let kept = previous.filter(|c| c.condition_reason() == Some(Reason::ReauthorizationRequired));
    match kept {
        Some(c) => unauthorized(Reason::ReauthorizationRequired, c.message.clone()),
        None => unauthorized(
            Reason::ReauthorizationRequired,
            format!(
                "LINE WORKS refused the refresh token: it lapsed (90 days unused) or the authorizing administrator's password or role changed; an administrator must authorize again: {OPEN_THE_LINK}"
            ),
        ),
    }
}

/// Authorized=False for an authorization that failed at the callback (recorded in the token
/// Secret as LINE WORKS's OAuth error code): the person who fixes it learns why, instead of
/// reading "an administrator must authorize" forever.
pub fn authorization_failed(spec: &LineWorksNotifierSpec, code: &str) -> Verdict {
    let secret = &spec.auth.credentials_secret_ref.name;
    match code {
        "invalid_client" => unauthorized(
            Reason::InvalidClientCredentials,
            format!(
                "an administrator authorized, but LINE WORKS refused the Client ID or Client Secret in Secret {secret} when the code was exchanged: copy both again from Developer Console > API 2.0 > (app), then {OPEN_THE_LINK}"
            ),
        ),
        "access_denied" | "unauthorized_client" => unauthorized(
            Reason::AuthorizationDenied,
            format!(
                "LINE WORKS did not authorize the app ({code}): the account that signed in is not a super or sub administrator, or it declined; sign in as an administrator: {OPEN_THE_LINK}"
            ),
        ),
        other => unauthorized(
            Reason::AuthorizationRequired,
            format!(
                "the last authorization failed at LINE WORKS ({other}); a super or sub administrator must authorize again: {OPEN_THE_LINK}"
            ),
        ),
    }
}

/// BotInService=True's message.
pub fn in_service_message(spec: &LineWorksNotifierSpec) -> String {
    match spec.room() {
        Some(room) => format!(
            "bot {} is added to the domain and invited to room {room}",
            spec.bot_id
        ),
        None => format!("bot {} is added to the domain (DM only)", spec.bot_id),
    }
}

/// TestNotified for the last test notification sent.
pub fn test_result(last: Option<&TestNotificationStatus>) -> Verdict {
    let Some(last) = last else {
        return Verdict::new(
            ConditionType::TestNotified,
            ConditionStatus::Unknown,
            Reason::NotRequested,
            "no test notification yet",
        );
    };
    let failed: Vec<&TargetResult> = last.targets.iter().filter(|t| !t.delivered).collect();
    match last.result {
        DeliveryResult::Delivered => Verdict::new(
            ConditionType::TestNotified,
            ConditionStatus::True,
            Reason::TestNotificationDelivered,
            format!(
                "test notification {} delivered to {}",
                last.id,
                last.targets
                    .iter()
                    .map(|t| t.target.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ),
        DeliveryResult::Sending => Verdict::new(
            ConditionType::TestNotified,
            ConditionStatus::Unknown,
            Reason::TestNotificationFailed,
            format!(
                "test notification {} was interrupted while sending; its result is unknown and it is not resent: change spec.testNotification.id to send another",
                last.id
            ),
        ),
        DeliveryResult::PartiallyDelivered | DeliveryResult::Failed => {
            // The user the test was sent to, which may no longer be spec.defaultUser.
            let missing_user = failed
                .iter()
                .find(|t| t.kind == TargetKind::User && t.code.as_deref() == Some("NOT_FOUND"));
            let details = failed
                .iter()
                .map(|t| {
                    format!(
                        "{} {}: {}",
                        t.kind,
                        t.target,
                        t.description.as_deref().unwrap_or("failed")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            if let Some(user) = missing_user {
                Verdict::new(
                    ConditionType::TestNotified,
                    ConditionStatus::False,
                    Reason::DefaultUserNotFound,
                    format!(
                        "LINE WORKS has no user {}: check LINE WORKS admin screen > Members (deleted?) and spec.defaultUser, then change spec.testNotification.id ({details})",
                        user.target
                    ),
                )
            } else {
                Verdict::new(
                    ConditionType::TestNotified,
                    ConditionStatus::False,
                    Reason::TestNotificationFailed,
                    format!(
                        "test notification {} failed: {details}; fix it and change spec.testNotification.id",
                        last.id
                    ),
                )
            }
        }
    }
}

pub fn test_not_requested() -> Verdict {
    Verdict::new(
        ConditionType::TestNotified,
        ConditionStatus::Unknown,
        Reason::NotRequested,
        "set spec.testNotification.id to send a test notification",
    )
}

pub fn test_already_sent(id: &str) -> Verdict {
    Verdict::new(
        ConditionType::TestNotified,
        ConditionStatus::Unknown,
        Reason::NotRequested,
        format!(
            "test notification {id} was sent before and is not sent again (each id is sent once; the last 16 are remembered in status.sentTestNotificationIds): set a new spec.testNotification.id to send another"
        ),
    )
}

pub fn test_waiting(id: &str) -> Verdict {
    Verdict::new(
        ConditionType::TestNotified,
        ConditionStatus::Unknown,
        Reason::Reconciling,
        format!("test notification {id} waits until Authorized and BotInService are True"),
    )
}

/// Ready=False (or Unknown while `blocker` is Unknown) with the blocking condition's message.
pub fn ready_blocked_by(blocker: &Verdict, false_reason: Reason) -> Verdict {
    let (status, reason) = match blocker.status {
        ConditionStatus::False => (ConditionStatus::False, false_reason),
        _ => (ConditionStatus::Unknown, Reason::Reconciling),
    };
    Verdict::new(
        ConditionType::Ready,
        status,
        reason,
        format!("{}: {}", blocker.type_, blocker.message),
    )
    .caused_by(blocker.reason)
}

/// The verdicts a reconcile's own verdicts leave open: BotInService and TestNotified when no
/// step reached them, and Ready, which summarises the other three (taking a condition no step
/// judged this time from status).
pub fn summarize(
    notifier: &LineWorksNotifier,
    verdicts: &[Verdict],
    last_test: Option<&TestNotificationStatus>,
) -> Vec<Verdict> {
    let spec = &notifier.spec;
    let mine = |type_: ConditionType| verdicts.iter().find(|v| v.type_ == type_).cloned();
    let mut added = Vec::new();
    if spec.suspend {
        added.push(Verdict::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::Suspended,
            "suspended: set spec.suspend to false to resume",
        ));
        return added;
    }
    let bot = mine(ConditionType::BotInService).unwrap_or_else(|| {
        let waiting = Verdict::new(
            ConditionType::BotInService,
            ConditionStatus::Unknown,
            Reason::NotAuthorized,
            "waiting for Authorized",
        );
        added.push(waiting.clone());
        waiting
    });
    let test = mine(ConditionType::TestNotified).unwrap_or_else(|| {
        let verdict = match &spec.test_notification {
            None => test_not_requested(),
            Some(r) if last_test.is_some_and(|t| t.id == r.id) => test_result(last_test),
            Some(r)
                if notifier
                    .status
                    .as_ref()
                    .is_some_and(|s| s.test_notification_sent(&r.id)) =>
            {
                test_already_sent(&r.id)
            }
            Some(r) => test_waiting(&r.id),
        };
        added.push(verdict.clone());
        verdict
    });
    let stored = |type_: ConditionType| {
        notifier.condition(type_).map(|c| {
            Verdict::new(
                type_,
                c.condition_status(),
                Reason::Reconciling,
                c.message.clone(),
            )
        })
    };
    let auth = mine(ConditionType::Authorized).or_else(|| stored(ConditionType::Authorized));
    let ready = match auth {
        Some(a) if !a.is_true() => ready_blocked_by(&a, Reason::NotAuthorized),
        Some(_) if !bot.is_true() => ready_blocked_by(&bot, Reason::BotNotInService),
        Some(_) if test.status == ConditionStatus::False => Verdict::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::TestNotificationFailed,
            format!("TestNotified: {}", test.message),
        )
        .caused_by(test.reason),
        Some(_) => Verdict::new(
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
            match spec.room() {
                Some(room) => format!(
                    "visitor notifications go to {} (fallback DM) and room {room}",
                    spec.default_user_login_id()
                ),
                None => format!(
                    "visitor notifications go to {} (fallback DM), DM only",
                    spec.default_user_login_id()
                ),
            },
        ),
        None => Verdict::new(
            ConditionType::Ready,
            ConditionStatus::Unknown,
            Reason::Reconciling,
            "checking",
        ),
    };
    added.push(ready);
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use lineworks_client::{Api, ErrorBody};
    use serde_json::json;

    fn notifier(extra: serde_json::Value) -> LineWorksNotifier {
        let mut spec = json!({
            "botId": 7, "domain": "example", "defaultUser": "desk", "roomId": "room-1",
            "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "app"}}
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let spec = serde_json::from_value(spec).unwrap_or_else(|e| panic!("spec: {e}"));
        let mut n = LineWorksNotifier::new("front", spec);
        n.metadata.generation = Some(1);
        n
    }

    fn rejected(code: &str) -> LineWorksError {
        LineWorksError::TokenRejected {
            status: 400,
            body: ErrorBody {
                code: code.into(),
                description: String::new(),
            },
        }
    }

    fn server_error() -> LineWorksError {
        LineWorksError::Server {
            api: Api::Token,
            status: 503,
            body: ErrorBody::default(),
        }
    }

    #[test]
    fn token_failures_name_what_to_fix() {
        let service = notifier(json!({}));
        let user = notifier(json!({"auth": {"mode": "userAccount",
            "credentialsSecretRef": {"name": "app"},
            "userAccount": {"redirectURL": "https://example.com/cb"}}}));
        let cases = [
            (
                &service,
                rejected("invalid_client"),
                Reason::InvalidClientCredentials,
                false,
            ),
            (
                &user,
                rejected("invalid_client"),
                Reason::InvalidClientCredentials,
                false,
            ),
            (
                &service,
                rejected("invalid_scope"),
                Reason::ScopeMissing,
                false,
            ),
            (
                &service,
                rejected("invalid_grant"),
                Reason::PrivateKeyInvalid,
                false,
            ),
            (
                &user,
                rejected("invalid_grant"),
                Reason::ReauthorizationRequired,
                false,
            ),
            (
                &service,
                server_error(),
                Reason::TokenEndpointUnavailable,
                true,
            ),
            (
                &user,
                LineWorksError::DeadlineExceeded {
                    attempts: 3,
                    last: Box::new(server_error()),
                },
                Reason::TokenEndpointUnavailable,
                true,
            ),
            (
                &service,
                LineWorksError::InvalidResponse {
                    api: Api::Token,
                    detail: "an HTML page".into(),
                },
                Reason::TokenEndpointUnavailable,
                true,
            ),
        ];
        for (n, error, reason, passing) in cases {
            let d = token_failure(&n.spec, &error);
            assert_eq!(d.passing, passing, "{error}");
            assert_eq!(d.verdicts.len(), 1);
            let v = &d.verdicts[0];
            assert_eq!(
                (v.type_, v.status, v.reason),
                (ConditionType::Authorized, ConditionStatus::False, reason),
                "{error}"
            );
            assert!(!v.message.is_empty());
        }
    }

    #[test]
    fn a_refused_fresh_token_also_says_authorize_again() {
        let unauthorized = LineWorksError::Unauthorized {
            api: Api::GetBot,
            status: 401,
            body: ErrorBody::default(),
        };
        let d = check_failure(ConditionType::BotInService, &unauthorized);
        let reasons: Vec<_> = d.verdicts.iter().map(|v| (v.type_, v.reason)).collect();
        assert_eq!(
            reasons,
            [
                (ConditionType::Authorized, Reason::ReauthorizationRequired),
                (ConditionType::BotInService, Reason::Reconciling)
            ]
        );
        assert!(d.passing);
        let d = check_failure(ConditionType::BotInService, &server_error());
        assert_eq!(d.verdicts.len(), 1);
    }

    fn target(kind: TargetKind, delivered: bool, code: Option<&str>) -> TargetResult {
        TargetResult {
            kind,
            target: "t".into(),
            delivered,
            code: code.map(str::to_string),
            description: (!delivered).then(|| "no".to_string()),
        }
    }

    fn sent(result: DeliveryResult, targets: Vec<TargetResult>) -> TestNotificationStatus {
        TestNotificationStatus {
            id: "t1".into(),
            sent_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            result,
            targets,
        }
    }

    #[test]
    fn test_results_as_conditions() {
        let user_ok = || target(TargetKind::User, true, None);
        let cases = [
            (None, ConditionStatus::Unknown, Reason::NotRequested),
            (
                Some(sent(DeliveryResult::Delivered, vec![user_ok()])),
                ConditionStatus::True,
                Reason::TestNotificationDelivered,
            ),
            (
                Some(sent(DeliveryResult::Sending, vec![])),
                ConditionStatus::Unknown,
                Reason::TestNotificationFailed,
            ),
            (
                Some(sent(
                    DeliveryResult::PartiallyDelivered,
                    vec![
                        target(TargetKind::User, false, Some("NOT_FOUND")),
                        target(TargetKind::Room, true, None),
                    ],
                )),
                ConditionStatus::False,
                Reason::DefaultUserNotFound,
            ),
            (
                Some(sent(
                    DeliveryResult::PartiallyDelivered,
                    vec![
                        user_ok(),
                        target(TargetKind::Room, false, Some("FORBIDDEN")),
                    ],
                )),
                ConditionStatus::False,
                Reason::TestNotificationFailed,
            ),
        ];
        for (last, status, reason) in cases {
            let v = test_result(last.as_ref());
            assert_eq!(
                (v.type_, v.status, v.reason),
                (ConditionType::TestNotified, status, reason)
            );
        }
    }

    fn verdict(type_: ConditionType, status: ConditionStatus) -> Verdict {
        Verdict::new(
            type_,
            status,
            Reason::Reconciling,
            format!("{type_} says so"),
        )
    }

    #[test]
    fn ready_summarises_in_order() {
        use ConditionStatus::{False, True, Unknown};
        use ConditionType::{Authorized, BotInService, TestNotified};
        let n = notifier(json!({}));
        let cases: [(Vec<Verdict>, ConditionStatus, Reason); 6] = [
            (vec![], Unknown, Reason::Reconciling),
            (
                vec![verdict(Authorized, False)],
                False,
                Reason::NotAuthorized,
            ),
            (
                vec![verdict(Authorized, Unknown)],
                Unknown,
                Reason::Reconciling,
            ),
            (
                vec![verdict(Authorized, True), verdict(BotInService, False)],
                False,
                Reason::BotNotInService,
            ),
            (
                vec![
                    verdict(Authorized, True),
                    verdict(BotInService, True),
                    verdict(TestNotified, False),
                ],
                False,
                Reason::TestNotificationFailed,
            ),
            (
                vec![verdict(Authorized, True), verdict(BotInService, True)],
                True,
                Reason::NotifierReady,
            ),
        ];
        for (verdicts, status, reason) in cases {
            let added = summarize(&n, &verdicts, None);
            let ready = added
                .iter()
                .find(|v| v.type_ == ConditionType::Ready)
                .unwrap_or_else(|| panic!("no Ready for {verdicts:?}"));
            assert_eq!(
                (ready.status, ready.reason),
                (status, reason),
                "{verdicts:?}"
            );
        }
    }

    #[test]
    fn summarize_fills_what_no_step_reached() {
        let n = notifier(json!({"testNotification": {"id": "t1"}}));
        let added = summarize(
            &n,
            &[verdict(ConditionType::Authorized, ConditionStatus::False)],
            None,
        );
        let types: Vec<_> = added.iter().map(|v| (v.type_, v.reason)).collect();
        assert_eq!(
            types,
            [
                (ConditionType::BotInService, Reason::NotAuthorized),
                (ConditionType::TestNotified, Reason::Reconciling),
                (ConditionType::Ready, Reason::NotAuthorized),
            ]
        );
        let blocked = &added[2];
        assert_eq!(blocked.message, "Authorized: Authorized says so");
        // Suspended: only Ready, whatever else was found.
        let suspended = notifier(json!({"suspend": true}));
        let added = summarize(&suspended, &[], None);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].reason, Reason::Suspended);
    }

    #[test]
    fn a_stored_authorized_condition_counts_when_no_step_judged_it() {
        let mut n = notifier(json!({}));
        n.status = Some(crate::api::LineWorksNotifierStatus {
            conditions: vec![Condition {
                type_: "Authorized".into(),
                status: "True".into(),
                reason: "TokenValid".into(),
                message: "ok".into(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        let added = summarize(
            &n,
            &[verdict(ConditionType::BotInService, ConditionStatus::True)],
            None,
        );
        assert_eq!(added.last().map(|v| v.reason), Some(Reason::NotifierReady));
    }

    #[test]
    fn reauthorization_keeps_the_cause_and_stays_one_line() {
        let kept = Condition {
            type_: "Authorized".into(),
            status: "False".into(),
            reason: "ReauthorizationRequired".into(),
            message: "a refresh never finished".into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        assert_eq!(reauthorization(Some(&kept)).message, kept.message);
        let fresh = reauthorization(None).message;
        assert!(
            fresh.contains("lapsed (90 days unused)") && fresh.contains("status.authorizationURL")
        );
        assert!(!fresh.contains("https://"), "one line, no URL: {fresh}");
    }

    #[test]
    fn failed_authorizations_name_their_cause() {
        let spec = notifier(json!({})).spec;
        for (code, reason) in [
            ("invalid_client", Reason::InvalidClientCredentials),
            ("access_denied", Reason::AuthorizationDenied),
            ("server_error", Reason::AuthorizationRequired),
        ] {
            let v = authorization_failed(&spec, code);
            assert_eq!(
                (v.type_, v.status, v.reason),
                (ConditionType::Authorized, ConditionStatus::False, reason)
            );
            assert!(
                v.message.contains("status.authorizationURL"),
                "{}",
                v.message
            );
        }
    }
}
