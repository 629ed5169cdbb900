//! Prometheus metrics of the relay: accepted = delivered + partial + failed, always.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::api::{Outcome, TargetStatus};
use super::idempotency::Answer;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    kind: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifierLabel {
    namespace: String,
    name: String,
}

/// Notifiers the per-notifier series are kept for; past it (a fleet, or churn over a long
/// uptime) a new notifier gets none, so memory stays bounded whatever tenants create.
const MAX_NOTIFIER_SERIES: usize = 10_000;

/// Relay metrics: accepted = delivered + partial + failed, always.
pub struct RelayMetrics {
    registry: Registry,
    accepted: Counter,
    finished: Family<OutcomeLabel, Counter>,
    targets: Family<TargetLabel, Counter>,
    rejected: Family<RejectLabel, Counter>,
    in_flight: Gauge,
    /// Per notifier: when a notification last reached at least one target, and notifications
    /// that reached none (for alerts).
    last_delivery: Family<NotifierLabel, Gauge>,
    failed_by_notifier: Family<NotifierLabel, Counter>,
    tracked: std::sync::Mutex<std::collections::HashSet<NotifierLabel>>,
    /// Refusals of the HTTP server itself (connection cap, request timeout).
    pub serve: crate::http_server::ServeCounters,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lineworks_relay");
        let accepted = Counter::default();
        let finished = Family::<OutcomeLabel, Counter>::default();
        let targets = Family::<TargetLabel, Counter>::default();
        let rejected = Family::<RejectLabel, Counter>::default();
        let in_flight = Gauge::default();
        let last_delivery = Family::<NotifierLabel, Gauge>::default();
        let failed_by_notifier = Family::<NotifierLabel, Counter>::default();
        let serve = crate::http_server::ServeCounters::default();
        serve.register(&mut registry);
        registry.register(
            "notifications_accepted",
            "Notifications accepted for delivery",
            accepted.clone(),
        );
        registry.register(
            "notifications_finished",
            "Accepted notifications by outcome",
            finished.clone(),
        );
        registry.register("targets", "Targets by kind and status", targets.clone());
        registry.register(
            "requests_rejected",
            "Requests refused before delivery, by HTTP status",
            rejected.clone(),
        );
        registry.register(
            "in_flight",
            "Accepted notifications not finished yet",
            in_flight.clone(),
        );
        registry.register(
            "notifier_last_delivery_timestamp_seconds",
            "When a notification through the notifier last reached at least one target (Unix time)",
            last_delivery.clone(),
        );
        registry.register(
            "notifier_failed_notifications",
            "Accepted notifications through the notifier that reached no target",
            failed_by_notifier.clone(),
        );
        Self {
            registry,
            accepted,
            finished,
            targets,
            rejected,
            in_flight,
            last_delivery,
            failed_by_notifier,
            tracked: Default::default(),
            serve,
        }
    }
}

impl RelayMetrics {
    /// Every metric with one example series, for the generated reference (docs/metrics.md). The
    /// destructuring makes a new metric a compile error here until it is described.
    pub fn example_text() -> String {
        let m = Self::default();
        let Self {
            registry: _,
            accepted: _,
            finished,
            targets,
            rejected,
            in_flight: _,
            last_delivery,
            failed_by_notifier,
            tracked: _,
            serve: _,
        } = &m;
        let x = || "…".to_string();
        let _ = finished.get_or_create(&OutcomeLabel { outcome: x() });
        let _ = targets.get_or_create(&TargetLabel {
            kind: x(),
            status: x(),
        });
        let _ = rejected.get_or_create(&RejectLabel { status: x() });
        let notifier = NotifierLabel {
            namespace: x(),
            name: x(),
        };
        let _ = last_delivery.get_or_create(&notifier);
        let _ = failed_by_notifier.get_or_create(&notifier);
        m.encode()
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    /// Finished notifications of an outcome: "delivered", "partial" or "failed".
    pub fn finished(&self, outcome: &str) -> u64 {
        self.finished
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .get()
    }

    pub fn encode(&self) -> String {
        crate::telemetry::encode_metrics(&self.registry)
    }
}

impl RelayMetrics {
    /// A request refused before delivery.
    pub(super) fn rejected(&self, status: u16) {
        self.rejected
            .get_or_create(&RejectLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// A notification admitted for delivery.
    pub(super) fn admitted(&self) {
        self.accepted.inc();
        self.in_flight.inc();
    }

    /// An admitted notification through `namespace/name` finished with `answer`.
    pub(super) fn finished_with(&self, (namespace, name): (&str, &str), answer: &Answer) {
        self.in_flight.dec();
        let notifier = NotifierLabel {
            namespace: namespace.into(),
            name: name.into(),
        };
        let tracked = {
            let mut tracked = match self.tracked.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            tracked.contains(&notifier)
                || (tracked.len() < MAX_NOTIFIER_SERIES && tracked.insert(notifier.clone()))
        };
        if tracked {
            match answer.result.outcome {
                Outcome::Failed => {
                    self.failed_by_notifier.get_or_create(&notifier).inc();
                }
                Outcome::Delivered | Outcome::Partial => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    self.last_delivery
                        .get_or_create(&notifier)
                        .set(i64::try_from(now).unwrap_or(i64::MAX));
                }
            }
        }
        let outcome = match answer.result.outcome {
            Outcome::Delivered => "delivered",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
        };
        self.finished
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        for t in &answer.result.targets {
            let status = match t.status {
                TargetStatus::Delivered => "delivered",
                TargetStatus::Failed => "failed",
                TargetStatus::Skipped => "skipped",
                TargetStatus::Unknown => "unknown",
            };
            self.targets
                .get_or_create(&TargetLabel {
                    kind: t.kind.clone(),
                    status: status.into(),
                })
                .inc();
        }
    }
}
