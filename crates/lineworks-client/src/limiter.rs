//! Client-side pacing under LINE WORKS's limits: per minute, per API, per domain (Free 60,
//! Standard/Advanced 240). One [`RateLimits`] is shared by every client in the process, so all
//! notifiers of a domain draw from the same budget.
//!
//! The service counts per minute; a token bucket that allowed a full minute's worth as a burst
//! could send up to twice the limit within one counting window. So the bucket holds a tenth of
//! the limit as burst and refills at the remaining nine tenths per minute: no window of the
//! service's can see more than the limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::Api;

/// A pacing limiter for one API of one budget.
pub type Limiter = DefaultDirectRateLimiter;

/// Whose per-minute budget a call draws from: LINE WORKS counts per domain, and the operator
/// also keys by the app (a fingerprint of its credentials), because a notifier's `domain` is
/// only a claim: a notifier of another app naming this domain must not pace (or throttle) this
/// app's calls. Two apps of one domain can then together exceed the domain's limit; LINE WORKS
/// answers 429 and the client backs off.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    pub domain: String,
    pub app: String,
}

/// How long a requested limit counts after it was last asked for: a lower one asked for by one
/// notifier of the app holds for every notifier of it until nobody has asked for it this long.
pub const LIMIT_MEMORY: Duration = Duration::from_secs(600);

/// Distinct limits remembered per budget (the oldest is forgotten beyond it).
const REMEMBERED_LIMITS: usize = 8;

/// The limiter of one API of one budget, and the limits asked for it recently.
struct Entry {
    /// Limit → when it was last asked for.
    requested: Vec<(u32, Instant)>,
    /// The limit the limiter was built for: the lowest recently asked for.
    effective: u32,
    limiter: Arc<Limiter>,
}

/// Registry of limiters keyed by budget and API.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<(Budget, Api), Entry>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The limiter for `api` of `budget`, asked for at `per_minute` calls per minute. It paces
    /// at the lowest limit asked for within [`LIMIT_MEMORY`]: a higher request never replaces
    /// a lower one (two notifiers of one app disagreeing get the safer pace), and a raised
    /// limit applies once the lower one is no longer asked for.
    pub fn limiter(&self, budget: &Budget, api: Api, per_minute: NonZeroU32) -> Arc<Limiter> {
        self.limiter_at(budget, api, per_minute, Instant::now())
    }

    fn limiter_at(
        &self,
        budget: &Budget,
        api: Api,
        per_minute: NonZeroU32,
        now: Instant,
    ) -> Arc<Limiter> {
        let mut map = match self.limiters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let limit = per_minute.get();
        let entry = map.entry((budget.clone(), api)).or_insert_with(|| Entry {
            requested: Vec::new(),
            effective: limit,
            limiter: Arc::new(RateLimiter::direct(quota(per_minute))),
        });
        entry
            .requested
            .retain(|(l, at)| *l != limit && now.saturating_duration_since(*at) < LIMIT_MEMORY);
        entry.requested.push((limit, now));
        if entry.requested.len() > REMEMBERED_LIMITS {
            entry.requested.remove(0);
        }
        let lowest = entry
            .requested
            .iter()
            .map(|(l, _)| *l)
            .min()
            .unwrap_or(limit);
        if lowest != entry.effective {
            entry.effective = lowest;
            let quota = quota(NonZeroU32::new(lowest).unwrap_or(per_minute));
            entry.limiter = Arc::new(RateLimiter::direct(quota));
        }
        Arc::clone(&entry.limiter)
    }
}

/// The burst and the refill period of the pacing at `per_minute`.
fn shape(per_minute: NonZeroU32) -> (u32, Duration) {
    let limit = per_minute.get();
    let burst = (limit / 10).max(1);
    let refill = (limit - burst).max(1);
    (burst, Duration::from_secs(60) / refill)
}

/// How many calls the pacing at `per_minute` lets start within `window` from a rested bucket:
/// what a queue of calls to one API of one domain can get through in that time.
pub fn calls_within(per_minute: NonZeroU32, window: Duration) -> u32 {
    let (burst, period) = shape(per_minute);
    let refills = window.as_nanos() / period.as_nanos().max(1);
    burst.saturating_add(u32::try_from(refills).unwrap_or(u32::MAX))
}

/// Burst of a tenth of the limit (at least 1), refilled at the rest over a minute.
pub fn quota(per_minute: NonZeroU32) -> Quota {
    let (burst, period) = shape(per_minute);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_minute(per_minute))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_within_a_window_follow_the_burst_and_refill() {
        let sixty = std::num::NonZeroU32::new(60).expect("60");
        // Burst 6, then one per 60/54 s.
        assert_eq!(super::calls_within(sixty, Duration::ZERO), 6);
        assert_eq!(super::calls_within(sixty, Duration::from_secs(30)), 6 + 27);
        let many = std::num::NonZeroU32::new(240).expect("240");
        assert_eq!(super::calls_within(many, Duration::from_secs(60)), 24 + 216);
    }

    #[test]
    fn no_sixty_second_window_exceeds_the_limit() {
        for limit in [1u32, 60, 240] {
            let q = quota(NonZeroU32::new(limit).expect("non-zero"));
            let burst = q.burst_size().get();
            let per_window = Duration::from_secs(60).as_nanos() / q.replenish_interval().as_nanos();
            assert!(
                u128::from(burst) + per_window <= u128::from(limit.max(2)),
                "limit {limit}: burst {burst} + refill {per_window}"
            );
        }
    }

    fn budget(domain: &str, app: &str) -> Budget {
        Budget {
            domain: domain.into(),
            app: app.into(),
        }
    }

    #[test]
    fn budgets_are_per_domain_app_and_api_and_the_lowest_recent_limit_wins() {
        let limits = RateLimits::default();
        let n = |v| NonZeroU32::new(v).expect("non-zero");
        let ours = budget("example", "app-a");
        let t0 = Instant::now();
        let a = limits.limiter_at(&ours, Api::SendUserMessage, n(240), t0);
        let b = limits.limiter_at(&ours, Api::SendUserMessage, n(240), t0);
        assert!(Arc::ptr_eq(&a, &b));
        let other_api = limits.limiter_at(&ours, Api::SendChannelMessage, n(240), t0);
        assert!(!Arc::ptr_eq(&a, &other_api));
        // Another app naming our domain with a limit of 1 gets a limiter of its own.
        let theirs = limits.limiter_at(&budget("example", "app-b"), Api::SendUserMessage, n(1), t0);
        assert!(!Arc::ptr_eq(&a, &theirs));
        assert!(Arc::ptr_eq(
            &a,
            &limits.limiter_at(&ours, Api::SendUserMessage, n(240), t0)
        ));
        // Within one app a lower limit wins and a higher one does not replace it...
        let lower = limits.limiter_at(&ours, Api::SendUserMessage, n(60), t0);
        assert!(!Arc::ptr_eq(&a, &lower));
        let asked_higher = limits.limiter_at(&ours, Api::SendUserMessage, n(240), t0);
        assert!(Arc::ptr_eq(&lower, &asked_higher));
        // ...until nobody has asked for it for LIMIT_MEMORY.
        let later = t0 + LIMIT_MEMORY + Duration::from_secs(1);
        let raised = limits.limiter_at(&ours, Api::SendUserMessage, n(240), later);
        assert!(!Arc::ptr_eq(&lower, &raised));
    }
}
