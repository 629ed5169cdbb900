//! The relay's HTTP wire types. Their JSON Schemas (schemars) feed the OpenAPI document.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest accepted value of any free-text field, in characters.
pub const MAX_FIELD_CHARS: usize = 500;
/// Longest accepted `host`, in characters.
pub const MAX_HOST_CHARS: usize = 256;
/// Longest accepted idempotency key, in characters (printable ASCII only).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// Most people one notification may announce.
pub const MAX_VISITOR_COUNT: u32 = 1000;

/// `POST …/notifications`: a visitor has arrived.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("not" = {
    "required": ["host", "route"],
    "properties": {"host": {"type": "string"}, "route": {"type": "string"}}
}))]
pub struct NotificationRequest {
    /// Who arrived.
    #[serde(default)]
    pub visitor: Visitor,
    /// The host to notify: LINE WORKS user ID, login ID (`user@domain`) or the part before `@`.
    /// Unset or unknown → the notifier's default user gets the DM (`fallback: true`).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub host: Option<String>,
    /// The host's name as the message should show it (`{{hostName}}`, e.g. "山田"); the default
    /// template leaves its 担当 line out when this is not given.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub host_name: Option<String>,
    /// Name of a route of the notifier (a custom button such as `delivery`) instead of a host.
    #[serde(default)]
    #[schemars(length(max = 63))]
    pub route: Option<String>,
    /// Message text to send instead of the notifier's template; it must contain something
    /// visible.
    #[serde(default)]
    #[schemars(length(min = 1, max = 2000))]
    pub text: Option<String>,
    /// Retries with the same key within the idempotency window get the first answer and send
    /// nothing again. The `Idempotency-Key` header is equivalent.
    #[serde(default)]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[!-~]+$"))]
    pub idempotency_key: Option<String>,
}

/// Visitor details, inserted into the message template.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Visitor {
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub name: String,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub company: String,
    /// Number of people.
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<u32>,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub purpose: String,
    /// Free text.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub note: String,
}

/// A count as JSON writes it: `3`, or `3.0` (the same number to JSON Schema); never `3.5`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole
        .and_then(|w| u32::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("visitor.count must be a whole number, not {n}"))
        })
}

/// What happened to each target.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationResult {
    /// delivered (every target), partial, or failed (none).
    pub outcome: Outcome,
    /// Whether the DM went to the default user because the host was unset or unknown.
    pub fallback: bool,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Delivered,
    Partial,
    Failed,
}

/// One user or room.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// user or room.
    pub kind: String,
    /// Login ID, user ID or channel ID.
    pub id: String,
    /// delivered, failed, skipped (an unknown host, replaced by the default user) or unknown
    /// (sent, but the answer was lost: it may have been delivered).
    pub status: TargetStatus,
    /// LINE WORKS error code when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// LINE WORKS error description (or why it was skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TargetStatus {
    Delivered,
    Failed,
    Skipped,
    /// The request went out but its answer was lost: LINE WORKS may have delivered it.
    /// Retrying may deliver it twice.
    Unknown,
}

/// RFC 9457 problem details, for every error answer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

/// `GET …/notifiers/{namespace}/{name}`: whether the notifier can take notifications.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    /// The Ready condition's reason and message.
    pub reason: String,
    pub message: String,
    /// What notifications reach now: a notifier that is not Ready may still deliver DMs.
    pub delivering: crate::api::deliverable::Delivering,
}

/// Most alerts one Alertmanager message may carry (set the receiver's `max_alerts` lower: the
/// rest are counted in `truncatedAlerts` and the message says how many more there were).
pub const MAX_ALERTS: usize = 1000;
/// Most labels, and most annotations, one alert (or a group's common set) may carry.
pub const MAX_ALERT_PAIRS: usize = 128;
/// Longest accepted label or annotation name, and `groupKey`, in characters.
pub const MAX_ALERT_KEY_CHARS: usize = 1024;
/// Longest accepted label or annotation value or URL, in characters.
pub const MAX_ALERT_VALUE_CHARS: usize = 8192;

/// `POST …/alertmanager`: Alertmanager's webhook message (version 4), one alert group. Fields
/// this relay does not know are accepted and ignored: Alertmanager adds fields over time.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerMessage {
    /// The webhook format's version: "4".
    #[schemars(extend("const" = "4"))]
    pub version: String,
    /// Identifies the alert group (with `status` and the alerts' fingerprints, the key that
    /// de-duplicates Alertmanager's retries and repeats).
    #[schemars(length(min = 1, max = 1024))]
    pub group_key: String,
    /// Alerts left out of this message by the receiver's `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// firing while any alert of the group fires, else resolved.
    pub status: AlertStatus,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    #[schemars(extend("maxProperties" = 128, "propertyNames" = {"maxLength": 1024}, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    pub group_labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    #[schemars(extend("maxProperties" = 128, "propertyNames" = {"maxLength": 1024}, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    pub common_labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    #[schemars(extend("maxProperties" = 128, "propertyNames" = {"maxLength": 1024}, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    pub common_annotations: std::collections::BTreeMap<String, String>,
    /// Link back to the Alertmanager that sent the message.
    #[serde(default, rename = "externalURL")]
    #[schemars(length(max = 8192))]
    pub external_url: String,
    #[schemars(length(max = 1000))]
    pub alerts: Vec<Alert>,
}

/// One alert of an Alertmanager message.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    #[serde(default)]
    #[schemars(extend("maxProperties" = 128, "propertyNames" = {"maxLength": 1024}, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    #[schemars(extend("maxProperties" = 128, "propertyNames" = {"maxLength": 1024}, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(default)]
    #[schemars(length(max = 8192))]
    pub starts_at: String,
    /// RFC 3339; Go's zero time while the alert fires.
    #[serde(default)]
    #[schemars(length(max = 8192))]
    pub ends_at: String,
    /// Link to the rule that fired it.
    #[serde(default, rename = "generatorURL")]
    #[schemars(length(max = 8192))]
    pub generator_url: String,
    /// Alertmanager's identity of the alert (a hash of its labels).
    #[serde(default)]
    #[schemars(length(max = 8192))]
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}
