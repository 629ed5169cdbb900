//! Gauges per notifier, to alert on (docs/metrics.md, docs/gitops.md): whether it is Ready and,
//! if not, the reason that decided it; when its access and refresh tokens lapse. One series per
//! notifier and gauge: a notifier whose reason changes replaces its series, a deleted one loses
//! them, and a replica that stops leading drops them all, so only the leader reports. The labels
//! are the notifier's namespace and name (bounded by what tenants may create) and a reason from
//! the operator's fixed list: nothing a tenant writes into a spec becomes a label.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::conditions::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifierLabel {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabel {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// What one reconcile concluded about a notifier.
pub struct Observed {
    pub ready: bool,
    /// NotifierReady, or the reason of the condition that kept it from Ready.
    pub reason: Reason,
    /// Unix seconds.
    pub access_token_expires: Option<i64>,
    /// Unix seconds; userAccount notifiers only (a person renews it).
    pub refresh_token_expires: Option<i64>,
}

#[derive(Default)]
pub struct NotifierGauges {
    pub ready: Family<ReadyLabel, Gauge>,
    pub access_token_expiry: Family<NotifierLabel, Gauge>,
    pub refresh_token_expiry: Family<NotifierLabel, Gauge>,
    /// The reason label each notifier's `ready` series carries now, to replace it.
    reasons: Mutex<HashMap<NotifierLabel, String>>,
}

impl NotifierGauges {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifier_ready",
            "1 while the notifier is Ready, else 0; reason: NotifierReady or the reason that decided Ready (one series per notifier)",
            self.ready.clone(),
        );
        registry.register(
            "notifier_access_token_expiry_timestamp_seconds",
            "When the notifier's current access token expires (Unix time)",
            self.access_token_expiry.clone(),
        );
        registry.register(
            "notifier_refresh_token_expiry_timestamp_seconds",
            "When a userAccount notifier's refresh token lapses and an administrator must authorize again (Unix time; LINE WORKS: 90 days after issue); serviceAccount notifiers renew with a JWT and report none",
            self.refresh_token_expiry.clone(),
        );
    }

    pub fn observe(&self, namespace: &str, name: &str, observed: &Observed) {
        let notifier = NotifierLabel {
            namespace: namespace.into(),
            name: name.into(),
        };
        let reason = observed.reason.as_str().to_string();
        let previous = lock(&self.reasons).insert(notifier.clone(), reason.clone());
        if let Some(previous) = previous.filter(|p| *p != reason) {
            self.ready.remove(&ready_label(&notifier, previous));
        }
        self.ready
            .get_or_create(&ready_label(&notifier, reason))
            .set(i64::from(observed.ready));
        for (family, value) in [
            (&self.access_token_expiry, observed.access_token_expires),
            (&self.refresh_token_expiry, observed.refresh_token_expires),
        ] {
            match value {
                Some(at) => {
                    family.get_or_create(&notifier).set(at);
                }
                None => {
                    family.remove(&notifier);
                }
            }
        }
    }

    /// A deleted notifier: its series go.
    pub fn forget(&self, namespace: &str, name: &str) {
        let notifier = NotifierLabel {
            namespace: namespace.into(),
            name: name.into(),
        };
        if let Some(reason) = lock(&self.reasons).remove(&notifier) {
            self.ready.remove(&ready_label(&notifier, reason));
        }
        self.access_token_expiry.remove(&notifier);
        self.refresh_token_expiry.remove(&notifier);
    }

    /// This replica no longer leads: the new leader reports.
    pub fn forget_all(&self) {
        lock(&self.reasons).clear();
        self.ready.clear();
        self.access_token_expiry.clear();
        self.refresh_token_expiry.clear();
    }
}

fn ready_label(notifier: &NotifierLabel, reason: String) -> ReadyLabel {
    ReadyLabel {
        namespace: notifier.namespace.clone(),
        name: notifier.name.clone(),
        reason,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(g: &NotifierGauges) -> String {
        let mut registry = Registry::default();
        g.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap_or_default();
        out
    }

    #[test]
    fn one_series_per_notifier_replaced_on_a_new_reason_and_gone_with_it() {
        let g = NotifierGauges::default();
        let broken = Observed {
            ready: false,
            reason: Reason::BotNotInRoom,
            access_token_expires: Some(1_800_000_000),
            refresh_token_expires: None,
        };
        g.observe("ns", "a", &broken);
        let fixed = Observed {
            ready: true,
            reason: Reason::NotifierReady,
            ..broken
        };
        g.observe("ns", "a", &fixed);
        let out = text(&g);
        assert!(
            out.contains(r#"notifier_ready{namespace="ns",name="a",reason="NotifierReady"} 1"#),
            "{out}"
        );
        assert!(
            !out.contains("BotNotInRoom"),
            "the old reason's series is gone: {out}"
        );
        assert!(out.contains("1800000000"), "{out}");
        g.forget("ns", "a");
        let out = text(&g);
        assert!(!out.contains(r#"name="a""#), "{out}");
    }
}
