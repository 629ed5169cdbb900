//! Terminal helpers for people (also a kubectl plugin, `kubectl lineworks …`): `status`,
//! `test-notify`, `recheck` and `authorize`. They use the caller's kubeconfig, like kubectl.

pub mod authorize;

use std::fmt;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::api::conditions::{ConditionExt, ConditionStatus, ConditionType};
use crate::api::{DeliveryResult, LineWorksNotifier};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("notifier {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(String),
}

/// A notifier named as `namespace/name`, or `name` plus a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifierRef {
    pub namespace: String,
    pub name: String,
}

impl NotifierRef {
    /// `ns/name`, or `name` in `default_namespace`.
    pub fn parse(text: &str, default_namespace: &str) -> Result<Self, CliError> {
        let (namespace, name) = match text.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (default_namespace, text),
        };
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(CliError::Usage(format!(
                "{text:?}: name a notifier as NAME (with -n NAMESPACE) or NAMESPACE/NAME"
            )));
        }
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

impl fmt::Display for NotifierRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Polls the notifier until `done` holds or `timeout` passes.
pub async fn wait_until(
    api: &Api<LineWorksNotifier>,
    name: &str,
    timeout: Duration,
    done: impl Fn(&LineWorksNotifier) -> bool,
) -> Result<LineWorksNotifier, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = api.get(name).await?;
        if done(&n) {
            return Ok(n);
        }
        if tokio::time::Instant::now() >= deadline {
            print_conditions(&n);
            return Err(CliError::Timeout(format!("{name} after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints each condition with its reason and message (the message is the fix).
pub fn print_conditions(n: &LineWorksNotifier) {
    let Some(status) = n.status.as_ref().filter(|s| !s.conditions.is_empty()) else {
        println!("no status yet: is the controller running?");
        return;
    };
    for c in &status.conditions {
        // Reconciling and Stalled are True when something is not well.
        let alarm = [ConditionType::Reconciling, ConditionType::Stalled]
            .iter()
            .any(|t| c.type_ == t.as_str());
        let mark = match c.condition_status() {
            ConditionStatus::True if alarm => "!",
            ConditionStatus::True => "✓",
            ConditionStatus::False => "✗",
            ConditionStatus::Unknown => "…",
        };
        println!("{mark} {:<13} {:<24} {}", c.type_, c.reason, c.message);
    }
    if let Some(url) = &status.authorization_url {
        println!("\nAuthorization URL: {url}");
    }
}

/// `status <notifier>`: the conditions with their fixes; fails unless Ready.
pub async fn status(client: kube::Client, at: &NotifierRef) -> Result<(), CliError> {
    let api: Api<LineWorksNotifier> = Api::namespaced(client, &at.namespace);
    let n = api
        .get_opt(&at.name)
        .await?
        .ok_or_else(|| CliError::NotFound(at.to_string()))?;
    println!("{at}");
    print_conditions(&n);
    if n.condition(ConditionType::Ready).is_some()
        && n.current_condition(ConditionType::Ready).is_none()
    {
        // The spec changed since the controller last looked: what status says is about the old one.
        return Err(CliError::Failed(format!(
            "{at} is not known to be Ready: the controller has not reconciled generation {} yet (status describes generation {})",
            n.metadata.generation.unwrap_or_default(),
            n.status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or_default()
        )));
    }
    if n.condition_is(ConditionType::Ready, ConditionStatus::True) {
        Ok(())
    } else {
        Err(CliError::Failed(format!("{at} is not Ready")))
    }
}

/// `recheck <notifier>`: after fixing something in LINE WORKS, check again now instead of
/// waiting out the backoff. Sets the reconcile-requested annotation to a new value, waits until
/// the controller has acted on it, and reports like `status`.
pub async fn recheck(
    client: kube::Client,
    at: &NotifierRef,
    timeout: Duration,
) -> Result<(), CliError> {
    let api: Api<LineWorksNotifier> = Api::namespaced(client.clone(), &at.namespace);
    if api.get_opt(&at.name).await?.is_none() {
        return Err(CliError::NotFound(at.to_string()));
    }
    let requested = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    api.patch(
        &at.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            crate::api::contract::RECONCILE_REQUESTED_ANNOTATION: requested
        }}})),
    )
    .await?;
    println!("Checking {at} again…");
    wait_until(&api, &at.name, timeout, |n| {
        n.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some(requested.as_str())
    })
    .await?;
    status(client, at).await
}

/// `test-notify <notifier>`: the console's テスト通知 button. Sets spec.testNotification.id to a
/// new value, waits for the controller to send it, and prints the result per target.
pub async fn test_notify(
    client: kube::Client,
    at: &NotifierRef,
    timeout: Duration,
) -> Result<(), CliError> {
    let api: Api<LineWorksNotifier> = Api::namespaced(client, &at.namespace);
    if api.get_opt(&at.name).await?.is_none() {
        return Err(CliError::NotFound(at.to_string()));
    }
    let id = format!(
        "cli-{}",
        k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%S%.3fZ")
            .to_string()
            .replace('.', "-")
    );
    // A merge patch of the one field, so it works next to GitOps-managed specs (the field is not
    // set by the GitOps source, or the next sync resets it, which sends nothing).
    api.patch(
        &at.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"testNotification": {"id": id}}})),
    )
    .await?;
    println!("Sending test notification {id} through {at}…");
    let n = wait_until(&api, &at.name, timeout, |n| {
        let sent = n
            .status
            .as_ref()
            .and_then(|s| s.last_test_notification.as_ref())
            .is_some_and(|t| t.id == id && t.result != DeliveryResult::Sending);
        // Or the controller says why it cannot send (not authorized, bot not in service).
        let blocked = n
            .current_condition(ConditionType::TestNotified)
            .is_some_and(|c| !c.is(ConditionStatus::True) && c.message.contains(&id));
        sent || blocked
    })
    .await?;
    let last = n
        .status
        .as_ref()
        .and_then(|s| s.last_test_notification.clone())
        .filter(|t| t.id == id);
    let Some(last) = last else {
        print_conditions(&n);
        return Err(CliError::Failed(format!(
            "test notification {id} was not sent"
        )));
    };
    for t in &last.targets {
        let kind = t.kind;
        if t.delivered {
            println!("✓ {kind} {}: delivered", t.target);
        } else {
            println!(
                "✗ {kind} {}: {} {}",
                t.target,
                t.code.as_deref().unwrap_or_default(),
                t.description.as_deref().unwrap_or_default()
            );
        }
    }
    match last.result {
        DeliveryResult::Delivered => Ok(()),
        other => {
            print_conditions(&n);
            Err(CliError::Failed(format!(
                "test notification {id}: {other:?}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifiers_are_named_with_or_without_a_namespace() {
        let r = NotifierRef::parse("reception/front", "default").ok();
        assert_eq!(r.map(|r| r.to_string()).as_deref(), Some("reception/front"));
        let r = NotifierRef::parse("front", "lobby").ok();
        assert_eq!(r.map(|r| r.to_string()).as_deref(), Some("lobby/front"));
        assert!(NotifierRef::parse("a/b/c", "x").is_err());
        assert!(NotifierRef::parse("/b", "x").is_err());
    }
}
