//! The relay's OpenAPI 3.1 document, generated from the wire types' JSON Schemas (schemars), served
//! at `/openapi.json` and committed as `docs/relay-openapi.json` (a test fails when it drifts).

use schemars::{SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use super::api::{
    AlertmanagerMessage, NotificationRequest, NotificationResult, Problem, Readiness,
};

/// What a caller needs to know beyond the schemas; also the opening of docs/relay-api.md.
const DESCRIPTION: &str = "Visitor notifications to LINE WORKS: a DM to the host (or the notifier's default user) and a message in the notifier's talk room.

## Delivery, per target

- **Host and fallback.** `host` is a LINE WORKS user ID, a login ID, or the part before `@` (the notifier's domain is added). An unset host, or one LINE WORKS does not know, falls back to the notifier's `defaultUser`: `fallback: true`, the unknown host listed as `skipped`. A `route`'s user falls back the same way; a route with only a room sends no DM.
- **Each target on its own.** A broken room (bot not invited, wrong チャンネルID) or a failed test notification does not stop the DM: the room is reported `failed` with the notifier's BotInService reason as `code` and the fix as `description` (207). The answer is 503 only when nothing can be sent (not authorized, bot not in service, suspended).
- **Target statuses.** `delivered`; `failed` (LINE WORKS's `code` and `description`; `NOT_SENT` when the domain's per-minute budget had no room before the deadline, so LINE WORKS was never asked; `UNAUTHORIZED` when LINE WORKS refused the token and no renewed one worked); `skipped` (an unknown host, replaced by the default user); `unknown` (`MAYBE_DELIVERED`: the request went out and its answer was lost, so it may have been delivered: do not resend it blindly). 200: every target delivered; 207: some; 502: none delivered and none possibly delivered.
- **At least once on 5xx.** A 5xx from LINE WORKS is retried within the deadline, since LINE WORKS has no idempotency key and a visitor must not go unannounced: rarely, a host may read a message twice. A request whose answer was lost is never resent.
- **Token renewal.** When LINE WORKS refuses the token while a notification is out, the relay asks the controller for a new one and sends again exactly the targets that were refused, never one already delivered.
- **Idempotency, per target.** With `idempotencyKey` (or the `Idempotency-Key` header: 1 to 255 printable ASCII characters, no spaces), repeating the same request within 24 hours sends again only the targets that `failed` (never one `delivered`, `skipped` or `unknown`) and answers with the merged result; when nothing is left to retry it answers as before. The same key with another body is 409.
- **Admission.** A notification is accepted only when the domain's per-minute budget can send it before the relay's deadline; otherwise 429 with `Retry-After` in seconds. A 429 claims no idempotency key: retry with the same key.
- **Alertmanager.** `…/alertmanager` takes Alertmanager's webhook message (version 4) and sends one message per alert group to the notifier's room (or a route `spec.alerts` picks by a label; the default user when there is no room, or the room is broken). It answers 2xx only when LINE WORKS took the message for every target, else 503 with `Retry-After` so Alertmanager retries; a message with the same group key, status and alerts within 24 hours is sent once (Alertmanager's retries and its `repeat_interval` repeats).
- **Errors** are `application/problem+json`, 404, 405 and 413 included.";

/// Where the generated document is committed, relative to the repository root.
pub const OPENAPI_PATH: &str = "docs/relay-openapi.json";

fn schemas() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
    }));
    let mut all = serde_json::Map::new();
    for (name, schema) in [
        (
            "NotificationRequest",
            generator.subschema_for::<NotificationRequest>(),
        ),
        (
            "NotificationResult",
            generator.subschema_for::<NotificationResult>(),
        ),
        ("Problem", generator.subschema_for::<Problem>()),
        (
            "AlertmanagerMessage",
            generator.subschema_for::<AlertmanagerMessage>(),
        ),
        ("Readiness", generator.subschema_for::<Readiness>()),
    ] {
        all.insert(name.into(), schema.to_value());
    }
    for (name, schema) in generator.take_definitions(true) {
        all.insert(name, schema);
    }
    // Top-level entries that are only references point to their own definition.
    all.retain(|_, v| v.get("$ref").is_none());
    Value::Object(all)
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn problems(codes: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|(code, why)| {
            (
                code.to_string(),
                json!({"description": why, "content": {"application/problem+json": {"schema": reference("Problem")}}}),
            )
        })
        .collect()
}

fn notify_operation(summary: &str, with_body: bool) -> Value {
    let mut responses = serde_json::Map::new();
    for (code, why) in [
        ("200", "Delivered to every target"),
        ("207", "Delivered to some targets; see each target"),
        ("502", "Delivered to no target; see each target"),
    ] {
        responses.insert(
            code.into(),
            json!({"description": why, "content": {"application/json": {"schema": reference("NotificationResult")}}}),
        );
    }
    const UNAUTHORIZED: (&str, &str) = (
        "401",
        "Missing or wrong bearer token (Deployment mode: the notifier's own caller token; an unknown notifier is answered the same way)",
    );
    const BUSY: (&str, &str) = (
        "429",
        "Queue or the domain's rate budget full; retry after the Retry-After seconds",
    );
    const UNAVAILABLE: (&str, &str) = (
        "503",
        "Nothing can be sent: the notifier is suspended, not authorized, or its bot not in service",
    );
    if with_body {
        responses.extend(problems(&[
            ("400", "Malformed body or a field over its limit"),
            UNAUTHORIZED,
            ("403", "The notifier's spec.relayPolicy does not allow this: caller-written text, or a host outside its domain"),
            ("404", "Unknown notifier or route"),
            ("409", "Idempotency key reused with a different body"),
            ("413", "Body too large"),
            ("415", "Not application/json"),
            BUSY,
            UNAVAILABLE,
        ]));
    } else {
        // The test notification reads no body: nothing to be malformed or too large; only the
        // Idempotency-Key header can be wrong, or already used for a visitor notification.
        responses.extend(problems(&[
            ("400", "Malformed Idempotency-Key header"),
            UNAUTHORIZED,
            ("404", "Unknown notifier"),
            (
                "409",
                "Idempotency key already used for a different request (a visitor notification)",
            ),
            BUSY,
            UNAVAILABLE,
        ]));
    }
    let mut op = json!({"summary": summary, "responses": responses, "security": [{"bearer": []}]});
    if with_body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": reference("NotificationRequest")}}});
    }
    op["parameters"] = json!([{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}}]);
    op
}

/// `…/alertmanager`: Alertmanager's webhook. Answers 2xx only when delivered, so Alertmanager
/// retries everything else it can (5xx, 429).
fn alertmanager_operation(summary: &str) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "Delivered to every target (or delivered before: a retry or repeat of the same group, status and alerts)", "content": {"application/json": {"schema": reference("NotificationResult")}}}),
    );
    responses.extend(problems(&[
        ("400", "Not Alertmanager's webhook format version 4, or over a limit"),
        ("401", "Missing or wrong bearer token (Deployment mode: the notifier's own caller token; an unknown notifier is answered the same way)"),
        ("404", "Unknown notifier"),
        ("413", "Body larger than 1 MiB: set max_alerts in the receiver"),
        ("415", "Not application/json"),
        ("429", "Queue or the domain's rate budget full; retry after the Retry-After seconds"),
    ]));
    responses.insert(
        "503".into(),
        json!({"description": "Not delivered to every target (Alertmanager retries; a retry sends only to the targets that failed), or nothing can be sent now (suspended, not authorized, bot not in service)", "content": {
            "application/json": {"schema": reference("NotificationResult")},
            "application/problem+json": {"schema": reference("Problem")}
        }}),
    );
    json!({"summary": summary, "responses": responses, "security": [{"bearer": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": reference("AlertmanagerMessage")}}}})
}

fn readiness_operation() -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "The notifier's readiness", "content": {"application/json": {"schema": reference("Readiness")}}}),
    );
    responses.extend(problems(&[
        ("401", "Missing or wrong bearer token (Deployment mode: the notifier's own caller token; an unknown notifier is answered the same way)"),
        ("404", "Unknown notifier"),
    ]));
    json!({"summary": "Whether the notifier can take notifications", "responses": responses, "security": [{"bearer": []}]})
}

fn with_path_params(mut op: Value) -> Value {
    op["parameters"] = {
        let mut params = vec![
            json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}),
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        ];
        if let Some(existing) = op.get("parameters").and_then(Value::as_array) {
            params.extend(existing.iter().cloned());
        }
        Value::Array(params)
    };
    op
}

/// The whole document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "lineworks-operator relay",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION
        },
        "paths": {
            "/v1/notifiers/{namespace}/{name}/notifications": {"post": with_path_params(notify_operation("Notify a visitor's arrival", true))},
            "/v1/notifiers/{namespace}/{name}/test-notification": {"post": with_path_params(notify_operation("Send the test notification (the テスト通知 button)", false))},
            "/v1/notifiers/{namespace}/{name}": {"get": with_path_params(readiness_operation())},
            "/v1/notifications": {"post": notify_operation("Sidecar mode: notify through the relay's own notifier", true)},
            "/v1/test-notification": {"post": notify_operation("Sidecar mode: send the test notification", false)},
            "/v1/notifier": {"get": readiness_operation()},
            "/v1/notifiers/{namespace}/{name}/alertmanager": {"post": with_path_params(alertmanager_operation("Alertmanager webhook receiver: one message per alert group"))},
            "/v1/alertmanager": {"post": alertmanager_operation("Sidecar mode: Alertmanager webhook receiver")},
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Deployment mode: the token of the notifier named in the path, from Secret <notifier>-relay-caller (key token) in its namespace. Sidecar mode: the relay's --token-file, or none with --no-auth on loopback."}}
        }
    })
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_text() -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(&document()).unwrap_or_default()
    )
}
