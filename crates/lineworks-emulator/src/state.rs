//! The emulator's memory: issued codes and tokens, delivered messages, rate windows, faults and
//! request counts. One mutex guards it; no lock is held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::world::World;

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

struct Window {
    started: Instant,
    used: u32,
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

    /// Counts a call of `api` for `domain_id` in the current one-minute window.
    pub fn count_call(&mut self, domain_id: i64, api: &'static str) -> RateCheck {
        let limit = self.world.rate_limit_per_minute;
        let now = Instant::now();
        let window = self.windows.entry((domain_id, api)).or_insert(Window {
            started: now,
            used: 0,
        });
        if now.duration_since(window.started) >= RATE_WINDOW {
            *window = Window {
                started: now,
                used: 0,
            };
        }
        let allowed = limit == 0 || window.used < limit;
        if allowed {
            window.used += 1;
        } else {
            self.rate_limited += 1;
        }
        RateCheck {
            allowed,
            limit,
            used: window.used,
            reset: RATE_WINDOW.saturating_sub(now.duration_since(window.started)),
        }
    }
}

/// A fresh opaque token: 128 random bits, hex, with a readable prefix.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}
