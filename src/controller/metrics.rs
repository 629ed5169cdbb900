//! Prometheus metrics of the controller (prometheus-client, the Prometheus project's own crate).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use lineworks_client::{Api, CallObserver};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub condition: String,
    pub reason: String,
}

/// How tokens were obtained, as counted in `token_grants{grant}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// serviceAccount: a JWT assertion signed with the private key.
    Jwt,
    /// Either mode: the refresh token.
    Refresh,
    /// userAccount: the code an administrator's consent produced.
    AuthorizationCode,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Jwt => "jwt",
            Grant::Refresh => "refresh",
            Grant::AuthorizationCode => "authorization_code",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabel {
    pub grant: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub api: String,
    pub status: String,
}

/// What the controller wrote, as counted in `kube_writes{object}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Status,
    TokenSecret,
    CallerSecret,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabel {
    pub object: String,
}

impl Written {
    fn label(self) -> ObjectLabel {
        ObjectLabel {
            object: match self {
                Written::Status => "status",
                Written::TokenSecret => "token_secret",
                Written::CallerSecret => "caller_secret",
            }
            .into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub failures: Family<ReasonLabel, Counter>,
    pub token_grants: Family<TokenLabel, Counter>,
    pub calls: Family<CallLabel, Counter>,
    pub call_seconds: Family<ApiLabel, Histogram>,
    pub leader: Gauge,
    pub oauth_callbacks: Family<ResultLabel, Counter>,
    pub token_revocations: Family<ResultLabel, Counter>,
    pub kube_writes: Family<ObjectLabel, Counter>,
    /// Refusals of the HTTP server itself (connection cap, request timeout).
    pub serve: crate::http_server::ServeCounters,
    /// Per notifier: Ready and token expiries (while this replica leads).
    pub notifiers: super::notifier_gauges::NotifierGauges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counts one write to the API server.
    pub fn wrote(&self, what: Written) {
        self.kube_writes.get_or_create(&what.label()).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lineworks_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let token_grants = Family::<TokenLabel, Counter>::default();
        let calls = Family::<CallLabel, Counter>::default();
        let call_seconds = Family::<ApiLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let leader = Gauge::default();
        let oauth_callbacks = Family::<ResultLabel, Counter>::default();
        let token_revocations = Family::<ResultLabel, Counter>::default();
        let kube_writes = Family::<ObjectLabel, Counter>::default();
        let serve = crate::http_server::ServeCounters::default();
        serve.register(&mut registry);
        let notifiers = super::notifier_gauges::NotifierGauges::default();
        notifiers.register(&mut registry);
        registry.register(
            "kube_writes",
            "Writes to the API server by object (status, token_secret, caller_secret): flat in a steady fleet",
            kube_writes.clone(),
        );
        registry.register(
            "oauth_callbacks",
            "OAuth callbacks by result (authorized, or why the state or code was refused)",
            oauth_callbacks.clone(),
        );
        registry.register(
            "token_revocations",
            "Token revocations at notifier deletion by result (revoked, failed, nothing)",
            token_revocations.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by result (ok, error)",
            reconciles.clone(),
        );
        registry.register(
            "condition_failures",
            "Reconciles that left a condition not True, by condition and reason",
            failures.clone(),
        );
        registry.register(
            "token_grants",
            "Tokens obtained from LINE WORKS, by grant (jwt, refresh, authorization_code) and result",
            token_grants.clone(),
        );
        registry.register(
            "lineworks_calls",
            "LINE WORKS API attempts by API and HTTP status",
            calls.clone(),
        );
        registry.register(
            "lineworks_call_duration_seconds",
            "LINE WORKS API attempt latency by API",
            call_seconds.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica reconciles: it holds the leader lease, or runs without leader election",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            token_grants,
            calls,
            call_seconds,
            leader,
            oauth_callbacks,
            token_revocations,
            kube_writes,
            serve,
            notifiers,
        }
    }
}

impl Metrics {
    /// Every metric with one example series, for the generated reference (docs/metrics.md). The
    /// destructuring makes a new metric a compile error here until it is described.
    pub fn example_text() -> String {
        let m = Self::default();
        let Self {
            registry: _,
            reconciles,
            failures,
            token_grants,
            calls,
            call_seconds,
            leader: _,
            oauth_callbacks,
            token_revocations,
            kube_writes,
            serve: _,
            notifiers,
        } = &m;
        let x = || "…".to_string();
        let _ = reconciles.get_or_create(&ResultLabel { result: x() });
        let _ = failures.get_or_create(&ReasonLabel {
            condition: x(),
            reason: x(),
        });
        let _ = token_grants.get_or_create(&TokenLabel {
            grant: x(),
            result: x(),
        });
        let _ = calls.get_or_create(&CallLabel {
            api: x(),
            status: x(),
        });
        let _ = call_seconds.get_or_create(&ApiLabel { api: x() });
        let _ = oauth_callbacks.get_or_create(&ResultLabel { result: x() });
        let _ = token_revocations.get_or_create(&ResultLabel { result: x() });
        let _ = kube_writes.get_or_create(&ObjectLabel { object: x() });
        notifiers.observe(
            "…",
            "…",
            &super::notifier_gauges::Observed {
                ready: false,
                reason: crate::api::conditions::Reason::BotNotInRoom,
                access_token_expires: Some(0),
                refresh_token_expires: Some(0),
            },
        );
        m.encode()
    }

    /// Reconciles that completed without error so far.
    pub fn reconciles_ok(&self) -> u64 {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: "ok".into(),
            })
            .get()
    }

    /// OAuth callbacks answered with this result so far.
    pub fn oauth_callbacks(&self, result: &str) -> u64 {
        self.oauth_callbacks
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .get()
    }

    /// Counts one token request and passes its result through.
    pub fn count_grant<T, E>(&self, grant: Grant, result: Result<T, E>) -> Result<T, E> {
        self.token_grants
            .get_or_create(&TokenLabel {
                grant: grant.as_str().into(),
                result: if result.is_ok() { "ok" } else { "error" }.into(),
            })
            .inc();
        result
    }

    /// Writes of this kind counted so far.
    pub fn writes(&self, what: Written) -> u64 {
        self.kube_writes.get_or_create(&what.label()).get()
    }

    /// Whether this replica reconciles (holds the leader lease, or runs without one).
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        crate::telemetry::encode_metrics(&self.registry)
    }
}

/// Feeds the client's per-attempt reports into the metrics.
pub struct CallMetrics(pub Arc<Metrics>);

impl CallObserver for CallMetrics {
    fn observe(&self, api: Api, outcome: &str, elapsed: Duration) {
        self.0
            .calls
            .get_or_create(&CallLabel {
                api: api.as_str().into(),
                status: outcome.into(),
            })
            .inc();
        self.0
            .call_seconds
            .get_or_create(&ApiLabel {
                api: api.as_str().into(),
            })
            .observe(elapsed.as_secs_f64());
    }
}
