//! The TestNotified step: the console's テスト通知 button, declared. Each
//! `spec.testNotification.id` is sent at most once: the attempt is recorded in status (result
//! `Sending`) before the first message goes out, so a restart mid-send never sends it again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use lineworks_client::{LineWorksClient, LineWorksError, SecretString};

use super::diagnosis::{test_already_sent, test_not_requested, test_result, test_waiting};
use super::findings::Findings;
use super::reconcile::{ReconcileError, kube_err};
use super::status;
use crate::api::conditions::ConditionType;
use crate::api::{
    DeliveryResult, LineWorksNotifier, TargetKind, TargetResult, TestNotificationStatus,
};

/// Sends the requested test notification once per id, and reports the last one.
pub async fn run(
    notifier: &LineWorksNotifier,
    notifiers: &Api<LineWorksNotifier>,
    lineworks: &LineWorksClient,
    token: &SecretString,
    findings: &mut Findings,
) -> Result<(), ReconcileError> {
    let Some(request) = &notifier.spec.test_notification else {
        findings.set(test_not_requested());
        return Ok(());
    };
    let last_is_this = findings
        .status
        .last_test_notification
        .as_ref()
        .is_some_and(|t| t.id == request.id);
    if !last_is_this && findings.status.test_notification_sent(&request.id) {
        findings.set(test_already_sent(&request.id));
        return Ok(());
    }
    if !last_is_this {
        let ready_to_send = findings.is_true(ConditionType::BotInService)
            && findings.is_true(ConditionType::Authorized);
        if !ready_to_send {
            findings.set(test_waiting(&request.id));
            return Ok(());
        }
        // Record the attempt first: a restart mid-send must not send it again.
        let sent_at = Time(k8s_openapi::jiff::Timestamp::now());
        findings.status.remember_test_notification(&request.id);
        let mut pending = findings.status.clone();
        pending.last_test_notification = Some(TestNotificationStatus {
            id: request.id.clone(),
            sent_at: sent_at.clone(),
            result: DeliveryResult::Sending,
            targets: Vec::new(),
        });
        status::apply(notifiers, notifier, &pending)
            .await
            .map_err(kube_err("recording the test notification"))?;
        let targets = send(notifier, lineworks, token).await;
        let delivered = targets.iter().filter(|t| t.delivered).count();
        findings.status.last_test_notification = Some(TestNotificationStatus {
            id: request.id.clone(),
            sent_at,
            result: match delivered {
                d if d == targets.len() => DeliveryResult::Delivered,
                0 => DeliveryResult::Failed,
                _ => DeliveryResult::PartiallyDelivered,
            },
            targets,
        });
    }
    findings.set(test_result(findings.status.last_test_notification.as_ref()));
    Ok(())
}

async fn send(
    notifier: &LineWorksNotifier,
    lineworks: &LineWorksClient,
    token: &SecretString,
) -> Vec<TargetResult> {
    let content = crate::templates::test_content(notifier);
    let spec = &notifier.spec;
    let user = spec.default_user_login_id();
    let mut results = vec![target_result(
        TargetKind::User,
        &user,
        lineworks
            .send_to_user(token, spec.bot_id, &user, &content)
            .await,
    )];
    if let Some(room) = spec.room() {
        results.push(target_result(
            TargetKind::Room,
            room,
            lineworks
                .send_to_channel(token, spec.bot_id, room, &content)
                .await,
        ));
    }
    results
}

fn target_result(
    kind: TargetKind,
    target: &str,
    outcome: Result<(), LineWorksError>,
) -> TargetResult {
    let (code, description) = match &outcome {
        Ok(()) => (None, None),
        Err(e) => (Some(e.code().to_string()), Some(e.to_string())),
    };
    TargetResult {
        kind,
        target: target.into(),
        delivered: outcome.is_ok(),
        code,
        description,
    }
}
