//! Client-side pacing under LINE WORKS's limits: per minute, per API, per domain (Free 60,
//! Standard/Advanced 240). One [`RateLimits`] is shared by every client in the process, so all
//! notifiers of a domain draw from the same budget.
//!
//! The service counts per minute, by a window whose kind is undocumented (a calendar minute, or
//! the last 60 seconds). A token bucket that allowed a full minute's worth as a burst could send
//! up to twice the limit within one such window. So the bucket holds a hundredth of the limit as
//! burst (at least 1) and refills at the rest less one per minute: no closed 60-second interval
//! holds more than the limit less one call (one to spare for arrival jitter at a window's edge),
//! whichever window the service counts by, and a long burst runs at 98.75 % of the limit at 240
//! per minute (96.7 % at 60).
//!
//! The service's own `rateLimit-remaining`/`rateLimit-reset` answers can only slow the pacing
//! down: when it says nothing remains (someone else, another app of the domain, spent the
//! budget), the budget's calls wait until its window resets, at most a minute.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::Api;

/// The longest pause the service's answers can impose: one counting window.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// The pacing of one API of one budget: the token bucket, and a pause the service's answers
/// may impose on top of it.
pub struct Limiter {
    bucket: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<tokio::time::Instant>>,
}

impl Limiter {
    fn new(quota: Quota) -> Self {
        Self {
            bucket: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
        }
    }

    /// Waits out any pause, then for a token of the bucket.
    pub async fn until_ready(&self) {
        let paused = *lock(&self.paused_until);
        if let Some(until) = paused {
            tokio::time::sleep_until(until).await;
        }
        self.bucket.until_ready().await;
    }

    /// Holds every call of this budget and API back for `wait` (at most [`MAX_PAUSE`]); a
    /// shorter pause never cuts a longer one short.
    pub fn pause(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait.min(MAX_PAUSE);
        let mut paused = lock(&self.paused_until);
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

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
            limiter: Arc::new(Limiter::new(quota(per_minute))),
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
            entry.limiter = Arc::new(Limiter::new(quota));
        }
        Arc::clone(&entry.limiter)
    }
}

/// The burst and the refill period of the pacing at `per_minute`: burst + refill per minute is
/// the limit less one (see the module's comment).
fn shape(per_minute: NonZeroU32) -> (u32, Duration) {
    let limit = per_minute.get();
    let burst = (limit / 100).max(1);
    let refill = limit.saturating_sub(burst + 1).max(1);
    (burst, Duration::from_secs(60) / refill)
}

/// How many calls the pacing at `per_minute` lets start within `window` from a rested bucket:
/// what a queue of calls to one API of one domain can get through in that time.
pub fn calls_within(per_minute: NonZeroU32, window: Duration) -> u32 {
    let (burst, period) = shape(per_minute);
    let refills = window.as_nanos() / period.as_nanos().max(1);
    burst.saturating_add(u32::try_from(refills).unwrap_or(u32::MAX))
}

/// Burst of a hundredth of the limit (at least 1), refilled at the rest less one over a minute.
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
        // Burst 1, then one per 60/58 s.
        assert_eq!(super::calls_within(sixty, Duration::ZERO), 1);
        assert_eq!(super::calls_within(sixty, Duration::from_secs(30)), 1 + 29);
        let many = std::num::NonZeroU32::new(240).expect("240");
        assert_eq!(super::calls_within(many, Duration::from_secs(60)), 2 + 237);
    }

    #[test]
    fn no_sixty_second_window_reaches_the_limit_and_a_burst_uses_98_percent_of_it() {
        for limit in [3u32, 60, 240, 1000] {
            let q = quota(NonZeroU32::new(limit).expect("non-zero"));
            let burst = q.burst_size().get();
            let per_window = Duration::from_secs(60).as_nanos() / q.replenish_interval().as_nanos();
            assert!(
                u128::from(burst) + per_window < u128::from(limit),
                "limit {limit}: burst {burst} + refill {per_window}"
            );
        }
        let rate = |limit: u32| {
            let q = quota(NonZeroU32::new(limit).expect("non-zero"));
            60.0 / q.replenish_interval().as_secs_f64() / f64::from(limit)
        };
        assert!(rate(240) >= 0.98, "{}", rate(240));
        assert!(rate(60) >= 0.96, "{}", rate(60));
    }

    #[tokio::test]
    async fn a_pause_holds_calls_back_a_shorter_one_does_not_shorten_it_and_none_exceeds_a_minute()
    {
        let limiter = Limiter::new(quota(NonZeroU32::new(240).expect("240")));
        let paused = || {
            lock(&limiter.paused_until)
                .map(|u| u.saturating_duration_since(tokio::time::Instant::now()))
                .unwrap_or_default()
        };
        limiter.pause(Duration::from_millis(300));
        limiter.pause(Duration::from_millis(5));
        assert!(paused() > Duration::from_millis(200), "{:?}", paused());
        let started = tokio::time::Instant::now();
        limiter.until_ready().await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        // A lying answer asks for an hour: a minute at most.
        limiter.pause(Duration::from_secs(3600));
        assert!(paused() <= MAX_PAUSE, "{:?}", paused());
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
