//! What every reconcile shares: clients, pacing, per-object backoff,
//! the event recorder and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, Recorder, Reporter};

use super::metrics::{CallMetrics, Metrics};
use super::verdict::{Verdict, unauthorized};
use crate::api::conditions::Reason;
use crate::api::{BotChecksPassed, LineWorksNotifier};
use crate::endpoints::AllowedHosts;
use lineworks_client::{LineWorksClient, RateLimits};

/// Default of [`Settings::renewal_floor`].
pub const DEFAULT_RENEWAL_FLOOR: Duration = Duration::from_secs(60);

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Timeout of one LINE WORKS request.
    pub request_timeout: Duration,
    /// Longest a reconcile waits on LINE WORKS (retries included) before reporting.
    pub call_deadline: Duration,
    /// First and longest wait before retrying a notifier whose reconcile failed.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Reporting instance of Events (the pod name).
    pub instance: String,
    /// How long an authorization URL (its signed `state`) works.
    pub state_lifetime: Duration,
    /// Hosts a notifier's apiBaseURL/authBaseURL may name besides LINE WORKS's own.
    pub allowed_hosts: AllowedHosts,
    /// The shortest time between two renewals of one notifier's token, whatever `expires_in`
    /// says and however often the relay reports the token rejected.
    pub renewal_floor: Duration,
    /// Certificate authorities LINE WORKS connections trust besides the system's.
    pub extra_roots: lineworks_client::ExtraRoots,
    /// Reconciles in flight at once (0: no limit). Each holds its future and its requests'
    /// buffers: unbounded, 10,000 new notifiers meant 10,000 at once and hundreds of MiB.
    pub max_concurrent_reconciles: u16,
}

/// The default of `max_concurrent_reconciles`: above what the API server absorbs (1,000 new
/// notifiers were all Ready as fast with 128 as with 256, and the controller's peak memory fell
/// from 39.5 to 31.2 MiB on the image's binary), and more than one tenant's notifiers waiting on
/// their own domain's LINE WORKS budget (each for at most the call deadline) are likely to fill.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 128;

impl Default for Settings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            call_deadline: Duration::from_secs(20),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            instance: std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "lineworks-operator".into()),
            state_lifetime: super::oauth_state::DEFAULT_STATE_LIFETIME,
            allowed_hosts: AllowedHosts::default(),
            renewal_floor: DEFAULT_RENEWAL_FLOOR,
            extra_roots: Default::default(),
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// This process, as named in refresh claims: the pod name plus a per-start suffix, so a
    /// restarted pod does not mistake its predecessor's claim for its own.
    pub instance: String,
    /// Signs and checks the `state` of authorization URLs.
    pub state_key: super::oauth_state::StateKey,
    limits: Arc<RateLimits>,
    http: reqwest::Client,
    /// Per notifier: the digest the bot checks last passed with, beside status.botChecksPassed:
    /// a reconcile woken before its own status write reached the watch cache still sees it.
    verified: Mutex<HashMap<String, (BotChecksPassed, Option<i64>)>>,
    /// Per notifier: the versions this controller's own writes replaced.
    pub own_writes: super::own_writes::OwnWrites,
    /// Per notifier: consecutive failed reconciles, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Per notifier: the last attempt to replace an existing token (the renewal floor).
    renewal_attempts: Mutex<HashMap<String, SystemTime>>,
    /// Per notifier: when a person's re-check last ran (at most one per renewal floor).
    rechecks: Mutex<HashMap<String, SystemTime>>,
    /// The relay's requests for a new token (from Events).
    pub refresh_requests: super::refresh_requests::RefreshRequests,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        state_key: super::oauth_state::StateKey,
    ) -> Result<Self, reqwest::Error> {
        let http = lineworks_client::http_client(settings.request_timeout, &settings.extra_roots)?;
        let reporter = Reporter {
            controller: "lineworks-operator".into(),
            instance: Some(settings.instance.clone()),
        };
        let instance = format!("{}/{:08x}", settings.instance, rand::random::<u32>());
        Ok(Self {
            client,
            settings,
            reporter,
            metrics,
            instance,
            state_key,
            limits: RateLimits::new(),
            http,
            verified: Mutex::default(),
            own_writes: Default::default(),
            failures: Mutex::default(),
            renewal_attempts: Mutex::default(),
            rechecks: Mutex::default(),
            refresh_requests: Default::default(),
        })
    }

    /// An Event recorder. A fresh one each time: kube's recorder folds Events of the same reason
    /// into one series that keeps the first note, so `kubectl describe` would show a cause that
    /// has since changed. The operator publishes only on transitions, so nothing floods.
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// Publishes `event` on `notifier`; a failure is logged, never fatal (Events are advice).
    pub async fn publish(&self, notifier: &LineWorksNotifier, event: &Event) {
        if let Err(e) = self
            .recorder()
            .publish(event, &notifier.object_ref(&()))
            .await
        {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }

    /// A LINE WORKS client for this notifier's endpoints and domain budget, or the verdict
    /// refusing an endpoint this installation does not allow (nothing is sent there).
    pub fn lineworks(&self, notifier: &LineWorksNotifier) -> Result<LineWorksClient, Verdict> {
        if let Err(refused) = self.settings.allowed_hosts.check_spec(&notifier.spec) {
            return Err(unauthorized(
                Reason::EndpointNotAllowed,
                refused.to_string(),
            ));
        }
        let config = notifier.spec.client_config(
            self.settings.request_timeout,
            self.settings.call_deadline,
            true,
        );
        Ok(
            LineWorksClient::with_http(config, Arc::clone(&self.limits), self.http.clone())
                .with_observer(Arc::new(CallMetrics(Arc::clone(&self.metrics)))),
        )
    }

    /// How long a refresh claim protects a refresh in flight: the longest one refresh call can
    /// take (its deadline plus one request timeout), and a margin.
    pub fn refresh_claim_ttl(&self) -> Duration {
        self.settings.call_deadline + self.settings.request_timeout + Duration::from_secs(1)
    }

    /// The last pass of the bot checks in this process, and the generation it was for.
    pub fn verified(&self, key: &str) -> Option<(BotChecksPassed, Option<i64>)> {
        lock(&self.verified).get(key).cloned()
    }

    pub fn set_verified(&self, key: &str, passed: Option<(BotChecksPassed, Option<i64>)>) {
        let mut map = lock(&self.verified);
        match passed {
            Some(p) => map.insert(key.to_string(), p),
            None => map.remove(key),
        };
    }

    /// The wait before the next attempt after a failure: doubling from `backoff_min`, capped,
    /// with up to 20% jitter so many failing notifiers do not retry in step.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        let base = self
            .settings
            .backoff_min
            .saturating_mul(1u32 << (*n - 1).min(16));
        let capped = base.min(self.settings.backoff_max);
        capped
            .mul_f64(1.0 + rand::random::<f64>() * 0.2)
            .min(self.settings.backoff_max)
    }

    pub fn reset_backoff(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// Forgets a deleted notifier.
    pub fn forget(&self, key: &str) {
        self.reset_backoff(key);
        self.set_verified(key, None);
        self.own_writes.forget(key);
        lock(&self.renewal_attempts).remove(key);
        lock(&self.rechecks).remove(key);
        self.refresh_requests.forget(key);
        if let Some((namespace, name)) = key.split_once('/') {
            self.metrics.notifiers.forget(namespace, name);
        }
    }

    /// When this process last tried to replace the notifier's existing token.
    pub fn last_renewal_attempt(&self, key: &str) -> Option<SystemTime> {
        lock(&self.renewal_attempts).get(key).copied()
    }

    pub fn renewal_attempted(&self, key: &str, at: SystemTime) {
        lock(&self.renewal_attempts).insert(key.to_string(), at);
    }

    /// Whether a person's re-check may run now (and records it): at most one per renewal floor
    /// per notifier, so an annotation rewritten in a loop costs LINE WORKS one round of bot
    /// checks per floor. `Err` is the wait until the next one may.
    pub fn recheck_allowed(&self, key: &str, now: SystemTime) -> Result<(), Duration> {
        let mut rechecks = lock(&self.rechecks);
        let wait = rechecks
            .get(key)
            .and_then(|at| (*at + self.settings.renewal_floor).duration_since(now).ok())
            .filter(|wait| !wait.is_zero());
        match wait {
            Some(wait) => Err(wait),
            None => {
                rechecks.insert(key.to_string(), now);
                Ok(())
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
