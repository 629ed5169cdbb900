//! The relay's HTTP wire types. Their JSON Schemas (schemars) feed the OpenAPI document.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest accepted value of any free-text field, in characters.
pub const MAX_FIELD_CHARS: usize = 500;

/// `POST …/notifications`: a visitor has arrived.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationRequest {
    /// Who arrived.
    #[serde(default)]
    pub visitor: Visitor,
    /// The host to notify: LINE WORKS user ID, login ID (`user@domain`) or the part before `@`.
    /// Unset or unknown → the notifier's default user gets the DM (`fallback: true`).
    #[serde(default)]
    pub host: Option<String>,
    /// The host's name as the message should show it (`{{hostName}}`, e.g. "山田"); the default
    /// template leaves its 担当 line out when this is not given.
    #[serde(default)]
    pub host_name: Option<String>,
    /// Name of a route of the notifier (a custom button such as `delivery`) instead of a host.
    #[serde(default)]
    pub route: Option<String>,
    /// Message text to send instead of the notifier's template.
    #[serde(default)]
    pub text: Option<String>,
    /// Retries with the same key within the idempotency window get the first answer and send
    /// nothing again. The `Idempotency-Key` header is equivalent.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Visitor details, inserted into the message template.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Visitor {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub company: String,
    /// Number of people.
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub purpose: String,
    /// Free text.
    #[serde(default)]
    pub note: String,
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
    /// delivered, failed or skipped.
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
}
