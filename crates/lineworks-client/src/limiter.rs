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
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::Api;

/// A pacing limiter for one API of one domain.
pub type Limiter = DefaultDirectRateLimiter;

/// A limiter and the per-minute limit it was built for.
type Entry = (u32, Arc<Limiter>);

/// Registry of limiters keyed by domain and API.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<(String, Api), Entry>>,
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

    /// The limiter for `api` on `domain` at `per_minute` calls per minute; a changed limit
    /// replaces the old limiter.
    pub fn limiter(&self, domain: &str, api: Api, per_minute: NonZeroU32) -> Arc<Limiter> {
        let mut map = match self.limiters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = map.entry((domain.to_string(), api)).or_insert_with(|| {
            (
                per_minute.get(),
                Arc::new(RateLimiter::direct(quota(per_minute))),
            )
        });
        if entry.0 != per_minute.get() {
            *entry = (
                per_minute.get(),
                Arc::new(RateLimiter::direct(quota(per_minute))),
            );
        }
        Arc::clone(&entry.1)
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

    #[test]
    fn a_changed_limit_replaces_the_limiter() {
        let limits = RateLimits::default();
        let sixty = NonZeroU32::new(60).expect("non-zero");
        let a = limits.limiter("example", Api::SendUserMessage, sixty);
        let b = limits.limiter("example", Api::SendUserMessage, sixty);
        assert!(Arc::ptr_eq(&a, &b));
        let other_api = limits.limiter("example", Api::SendChannelMessage, sixty);
        assert!(!Arc::ptr_eq(&a, &other_api));
        let c = limits.limiter(
            "example",
            Api::SendUserMessage,
            NonZeroU32::new(240).expect("non-zero"),
        );
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
