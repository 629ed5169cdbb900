//! The emulator's memory: issued codes and tokens, delivered messages, rate windows, faults and
//! request counts. One mutex guards it; no lock is held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::world::{RateWindow, World};

/// Length of a rate-limit window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Who a token acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    ServiceAccount(String),
    User(String),
}

#[derive(Clone, Debug)]
pub struct AccessGrant {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub subject: Subject,
    pub expires_at: SystemTime,
}

#[derive(Clone, Debug)]
pub struct RefreshGrant {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub subject: Subject,
    pub expires_at: SystemTime,
    /// A newer refresh token replaced this one (rotation on); it lives on only in the reuse window.
    pub rotated: bool,
}

#[derive(Clone, Debug)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub subject: Subject,
    pub expires_at: SystemTime,
    pub used: bool,
}

/// A message the emulator accepted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivered {
    pub bot_id: i64,
    /// "user" or "channel".
    pub kind: String,
    /// The path segment as received (decoded), e.g. a login ID.
    pub target: String,
    /// The user ID or channel ID it resolved to.
    pub resolved: String,
    pub content: Value,
}

/// An injected failure, matched by API name ("*" for every API).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    pub api: String,
    /// Answer with this status instead of handling the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// JSON body of that answer.
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Wait before answering (or before handling, when no status is set).
    #[serde(default)]
    pub delay_ms: u64,
    /// Close the connection without an answer (after reading the request).
    #[serde(default)]
    pub drop: bool,
    /// Handle the request (issue tokens, deliver the message), then close the connection without
    /// the answer: a lost acknowledgement.
    #[serde(default)]
    pub drop_answer: bool,
    /// With `status`: handle the request first (issue tokens, deliver the message), then answer
    /// with `status` instead of the real answer: a server that fails after doing the work.
    #[serde(default)]
    pub after_processing: bool,
    /// How many requests it applies to; unset = until cleared.
    #[serde(default)]
    pub times: Option<u32>,
}

/// The calls counted against one API of one domain: those of the current calendar minute, or
/// (sliding) the times of those within the last 60 seconds.
enum Window {
    Calendar { minute: u64, used: u32 },
    Sliding(std::collections::VecDeque<Instant>),
}

/// The outcome of counting a call against its rate window.
pub struct RateCheck {
    pub allowed: bool,
    pub limit: u32,
    pub used: u32,
    pub reset: Duration,
}

#[derive(Default)]
pub struct State {
    pub world: World,
    pub access: HashMap<String, AccessGrant>,
    pub refresh: HashMap<String, RefreshGrant>,
    pub codes: HashMap<String, CodeGrant>,
    pub delivered: Vec<Delivered>,
    pub faults: Vec<Fault>,
    pub requests: BTreeMap<String, u64>,
    /// Requests answered 429 by the rate limit (not by an injected fault).
    pub rate_limited: u64,
    /// Refresh-token grants that issued tokens.
    pub refreshes: u64,
    windows: HashMap<(i64, &'static str), Window>,
}

/// Shared handle on the state.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<State>>);

impl Shared {
    pub fn new(world: World) -> Self {
        Shared(Arc::new(Mutex::new(State {
            world,
            ..Default::default()
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl State {
    /// Counts a request and returns the fault to apply to it, if any.
    pub fn take_fault(&mut self, api: &str) -> Option<Fault> {
        *self.requests.entry(api.to_string()).or_default() += 1;
        let index = self
            .faults
            .iter()
            .position(|f| f.api == api || (f.api == "*" && api != "admin"))?;
        let fault = self.faults[index].clone();
        if let Some(times) = &mut self.faults[index].times {
            *times = times.saturating_sub(1);
            if *times == 0 {
                self.faults.remove(index);
            }
        }
        Some(fault)
    }

    /// Revokes every token acting for `user_id` (the user changed their password or lost the
    /// administrator role). Returns how many tokens were revoked.
    pub fn revoke_user_tokens(&mut self, user_id: &str) -> usize {
        let subject = Subject::User(user_id.to_string());
        let before = self.access.len() + self.refresh.len();
        self.access.retain(|_, g| g.subject != subject);
        self.refresh.retain(|_, g| g.subject != subject);
        before - self.access.len() - self.refresh.len()
    }

    /// Sets the per-minute limit and starts fresh windows.
    pub fn set_rate_limit(&mut self, per_minute: u32) {
        self.world.rate_limit_per_minute = per_minute;
        self.windows.clear();
    }

    /// Counts a call of `api` for `domain_id` in its window (a calendar minute, or the last 60
    /// seconds, as the world says).
    pub fn count_call(&mut self, domain_id: i64, api: &'static str) -> RateCheck {
        let limit = self.world.rate_limit_per_minute;
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let minute = wall.as_secs() / 60;
        let window =
            self.windows
                .entry((domain_id, api))
                .or_insert_with(|| match self.world.rate_window {
                    RateWindow::CalendarMinute => Window::Calendar { minute, used: 0 },
                    RateWindow::Sliding => Window::Sliding(Default::default()),
                });
        let (used, reset) = match window {
            Window::Calendar { minute: m, used } => {
                if *m != minute {
                    (*m, *used) = (minute, 0);
                }
                let into = wall - Duration::from_secs(minute * 60);
                (used, RATE_WINDOW.saturating_sub(into))
            }
            Window::Sliding(calls) => {
                while calls
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
                {
                    calls.pop_front();
                }
                let count = u32::try_from(calls.len()).unwrap_or(u32::MAX);
                let reset = calls.front().map_or(RATE_WINDOW, |t| {
                    RATE_WINDOW.saturating_sub(now.duration_since(*t))
                });
                let allowed = limit == 0 || count < limit;
                if allowed {
                    calls.push_back(now);
                } else {
                    self.rate_limited += 1;
                }
                let used = count + u32::from(allowed);
                return RateCheck {
                    allowed,
                    limit,
                    used,
                    reset,
                };
            }
        };
        let allowed = limit == 0 || *used < limit;
        if allowed {
            *used += 1;
        } else {
            self.rate_limited += 1;
        }
        RateCheck {
            allowed,
            limit,
            used: *used,
            reset,
        }
    }
}

/// A fresh opaque token: 128 random bits, hex, with a readable prefix.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limit: u32, window: RateWindow) -> State {
        let mut s = State::default();
        s.world.rate_limit_per_minute = limit;
        s.world.rate_window = window;
        s
    }

    #[test]
    fn a_sliding_window_refuses_the_call_over_the_limit_until_the_oldest_is_a_minute_old() {
        let mut s = state(3, RateWindow::Sliding);
        let checks: Vec<RateCheck> = (0..4).map(|_| s.count_call(1, "send")).collect();
        assert!(checks[..3].iter().all(|c| c.allowed));
        assert!(!checks[3].allowed);
        assert_eq!(checks[3].used, 3);
        assert!(checks[3].reset > Duration::from_secs(59) && checks[3].reset <= RATE_WINDOW);
        assert_eq!(s.rate_limited, 1);
        // Another domain, another API: budgets of their own.
        assert!(s.count_call(2, "send").allowed && s.count_call(1, "other").allowed);
    }

    #[test]
    fn a_calendar_window_resets_at_the_next_minute_of_the_wall_clock() {
        let mut s = state(2, RateWindow::CalendarMinute);
        let into = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            % 60;
        let first = s.count_call(1, "send");
        assert!(first.allowed);
        // What is left of this minute (less the fraction of the second already gone).
        let sum = first.reset + Duration::from_secs(into);
        assert!(
            sum > Duration::from_secs(59) && sum <= RATE_WINDOW,
            "{:?} left {into} s into the minute",
            first.reset
        );
        assert!(s.count_call(1, "send").allowed);
        assert!(!s.count_call(1, "send").allowed);
    }
}
