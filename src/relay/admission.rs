//! Admission: a notification is accepted only if it can be served in time. The queue is bounded
//! as a whole, per namespace (so one tenant flooding a shared relay leaves room for the others),
//! and per budget (domain and app) by what its per-minute budget lets start before the relay's
//! deadline, so a caller gets an honest 429 with the wait in `Retry-After` instead of a
//! notification that times out queued behind the budget and is reported as LINE WORKS's fault.
//! A ticket holds its place until dropped, also if its delivery task panics.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use lineworks_client::Budget;

use super::problem::Refusal;

/// Share of the deadline the budget may fill: the rest absorbs LINE WORKS's own latency.
const DEADLINE_SHARE: f64 = 0.8;

pub struct Admission {
    capacity: usize,
    /// Places one namespace may hold at once.
    namespace_capacity: usize,
    deadline: Duration,
    state: Mutex<Queued>,
}

#[derive(Default)]
struct Queued {
    total: usize,
    per_namespace: HashMap<String, usize>,
    per_budget: HashMap<Budget, usize>,
}

/// A place in the queue; dropping it gives the place back.
pub struct Ticket {
    admission: Arc<Admission>,
    namespace: String,
    budget: Budget,
}

/// A refusal for a full queue, and how many seconds to wait before trying again.
pub struct Full {
    pub refusal: Refusal,
    pub retry_after_secs: u64,
}

impl Admission {
    pub fn new(capacity: usize, deadline: Duration, namespace_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            namespace_capacity: namespace_capacity.clamp(1, capacity.max(1)),
            deadline,
            state: Mutex::new(Queued::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// How many notifications of one domain can be queued at once: each needs one call of each
    /// message API, and `per_minute` (None = not paced) bounds how many start before the
    /// deadline.
    pub fn domain_capacity(&self, per_minute: Option<NonZeroU32>) -> usize {
        match per_minute {
            None => self.capacity,
            Some(rate) => {
                let window = self.deadline.mul_f64(DEADLINE_SHARE);
                let calls = lineworks_client::calls_within(rate, window);
                usize::try_from(calls).unwrap_or(usize::MAX).max(1)
            }
        }
    }

    /// A place for one notification of a notifier in `namespace` drawing from `budget`, or the
    /// wait before there may be one.
    pub fn admit(
        self: &Arc<Self>,
        namespace: &str,
        budget: &Budget,
        per_minute: Option<NonZeroU32>,
    ) -> Result<Ticket, Full> {
        let domain_capacity = self.domain_capacity(per_minute);
        let domain = &budget.domain;
        let mut queued = self.lock();
        let in_namespace = queued
            .per_namespace
            .get(namespace)
            .copied()
            .unwrap_or_default();
        if queued.total >= self.capacity || in_namespace >= self.namespace_capacity {
            return Err(Full {
                refusal: Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Queue full",
                    "too many notifications in flight; retry shortly",
                ),
                retry_after_secs: 1,
            });
        }
        let mine = queued.per_budget.get(budget).copied().unwrap_or_default();
        if mine >= domain_capacity {
            // Roughly when one place frees: the time one call of the budget takes.
            let per_call = per_minute.map(|r| 60.0 / f64::from(r.get())).unwrap_or(1.0);
            return Err(Full {
                refusal: Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate budget full",
                    format!(
                        "{mine} notifications for LINE WORKS domain {domain} are waiting for its per-minute budget ({} per minute); more could not be sent within the {}s deadline",
                        per_minute.map_or(0, NonZeroU32::get),
                        self.deadline.as_secs()
                    ),
                ),
                retry_after_secs: per_call.ceil().max(1.0) as u64,
            });
        }
        queued.total += 1;
        *queued
            .per_namespace
            .entry(namespace.to_string())
            .or_default() += 1;
        *queued.per_budget.entry(budget.clone()).or_default() += 1;
        Ok(Ticket {
            admission: Arc::clone(self),
            namespace: namespace.to_string(),
            budget: budget.clone(),
        })
    }

    /// Notifications admitted and not finished.
    pub fn queued(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut queued = self.admission.lock();
        queued.total = queued.total.saturating_sub(1);
        release(&mut queued.per_namespace, &self.namespace);
        release(&mut queued.per_budget, &self.budget);
    }
}

/// One place fewer under `key`; a count of 0 leaves the map.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(domain: &str) -> Budget {
        Budget {
            domain: domain.into(),
            app: "app".into(),
        }
    }

    #[test]
    fn a_domain_gets_what_its_budget_serves_in_time_and_places_come_back() {
        let admission = Admission::new(1000, Duration::from_secs(10), 1000);
        let sixty = NonZeroU32::new(60);
        // Burst 1 plus one per 60/58 s over 8 s.
        let capacity = admission.domain_capacity(sixty);
        assert_eq!(capacity, 1 + 7);
        let tickets: Vec<Ticket> = (0..capacity)
            .map(|_| {
                admission
                    .admit("ns", &budget("a"), sixty)
                    .unwrap_or_else(|_| panic!("admitted"))
            })
            .collect();
        let full = admission
            .admit("ns", &budget("a"), sixty)
            .err()
            .expect("a is full");
        assert_eq!(full.refusal.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(full.retry_after_secs >= 1);
        assert!(
            admission.admit("ns", &budget("b"), sixty).is_ok(),
            "another domain has its own budget"
        );
        let other_app = Budget {
            app: "other".into(),
            ..budget("a")
        };
        assert!(
            admission.admit("ns", &other_app, sixty).is_ok(),
            "another app naming the domain has its own"
        );
        drop(tickets);
        assert_eq!(admission.queued(), 0);
        assert!(admission.admit("ns", &budget("a"), sixty).is_ok());
    }

    #[test]
    fn one_namespace_cannot_take_the_whole_queue() {
        let admission = Admission::new(10, Duration::from_secs(10), 5);
        let held: Vec<Ticket> = (0..5)
            .map(|i| {
                admission
                    .admit("flood", &budget(&format!("d{i}")), None)
                    .unwrap_or_else(|_| panic!("admitted"))
            })
            .collect();
        assert!(admission.admit("flood", &budget("d9"), None).is_err());
        assert!(admission.admit("quiet", &budget("q"), None).is_ok());
        drop(held);
        assert!(admission.admit("flood", &budget("d9"), None).is_ok());
    }
}
