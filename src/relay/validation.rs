//! Reading a visitor notification from the wire: media type, JSON, field limits, and which of
//! the notifier's targets it names. Pure, so the refusals are unit-tested below.

use axum::http::{HeaderMap, StatusCode, header};

use super::api::{self, NotificationRequest};
use super::problem::Refusal;
use crate::api::{LineWorksNotifier, Route};

/// The request in `body`, if it is a well-formed notification within the limits.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<NotificationRequest, Refusal> {
    require_json(headers, body)?;
    let request: NotificationRequest = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "Malformed notification",
            e.to_string(),
        )
    })?;
    check_limits(&request)?;
    Ok(request)
}

/// A JSON object, said to be JSON.
pub fn require_json(headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    if !is_json {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send Content-Type: application/json",
        ));
    }
    // serde reads a struct from a JSON array too; a notification is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Malformed notification",
            "the body must be a JSON object",
        ));
    }
    Ok(())
}

fn check_limits(request: &NotificationRequest) -> Result<(), Refusal> {
    let v = &request.visitor;
    let checks = [
        too_long("visitor.name", &v.name, api::MAX_FIELD_CHARS),
        too_long("visitor.company", &v.company, api::MAX_FIELD_CHARS),
        too_long("visitor.purpose", &v.purpose, api::MAX_FIELD_CHARS),
        too_long("visitor.note", &v.note, api::MAX_FIELD_CHARS),
        request
            .host
            .as_deref()
            .and_then(|h| too_long("host", h, api::MAX_HOST_CHARS)),
        request
            .host_name
            .as_deref()
            .and_then(|h| too_long("hostName", h, api::MAX_FIELD_CHARS)),
        request
            .text
            .as_deref()
            .and_then(|t| too_long("text", t, lineworks_client::MAX_TEXT_CHARS)),
    ];
    if let Some(why) = checks.into_iter().flatten().next() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "Field too long", why));
    }
    if let Some(text) = &request.text
        && crate::templates::clean(text).trim().is_empty()
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Empty text",
            "text has nothing visible to send: leave it out to use the notifier's template",
        ));
    }
    if request
        .visitor
        .count
        .is_some_and(|c| c == 0 || c > api::MAX_VISITOR_COUNT)
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Bad visitor count",
            format!(
                "visitor.count must be between 1 and {}",
                api::MAX_VISITOR_COUNT
            ),
        ));
    }
    if request.host.is_some() && request.route.is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Ambiguous target",
            "give host or route, not both",
        ));
    }
    Ok(())
}

fn too_long(field: &str, value: &str, max: usize) -> Option<String> {
    let n = value.chars().count();
    (n > max).then(|| format!("{field} has {n} characters; at most {max} are accepted"))
}

/// What the notifier's `spec.relayPolicy` lets a caller ask: their own text only when
/// `allowText`; a host only within `spec.domain` unless `hostDomains` names its domain (or `*`).
pub fn policy(notifier: &LineWorksNotifier, request: &NotificationRequest) -> Result<(), Refusal> {
    let spec = &notifier.spec;
    let policy = spec.relay_policy.clone().unwrap_or_default();
    if request.text.is_some() && !policy.allow_text {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Text not allowed",
            "this notifier's spec.relayPolicy.allowText is false: send the visitor's details and let the templates write the message",
        ));
    }
    let Some(host) = request.host.as_deref() else {
        return Ok(());
    };
    let any = policy.host_domains.iter().any(|d| d == "*");
    let domain = match host.split_once('@') {
        Some((_, domain)) => Some(domain),
        // A user ID names someone whose domain cannot be told from it.
        None if super::delivery::is_user_id(host) => None,
        None => Some(spec.domain.as_str()),
    };
    let allowed = any
        || domain.is_some_and(|d| {
            d.eq_ignore_ascii_case(&spec.domain)
                || policy
                    .host_domains
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(d))
        });
    if allowed {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Host outside the notifier's domain",
            format!(
                "host {host} is not a user of {} (write the login ID's part before @, or ask the notifier's owners to add the domain to spec.relayPolicy.hostDomains; user IDs need *)",
                spec.domain
            ),
        ))
    }
}

/// The route a request names, if any; an unknown name is refused with the known ones.
pub fn route(notifier: &LineWorksNotifier, name: Option<&str>) -> Result<Option<Route>, Refusal> {
    let Some(name) = name else {
        return Ok(None);
    };
    let routes = &notifier.spec.routes;
    match routes.iter().find(|r| r.name == name) {
        Some(route) => Ok(Some(route.clone())),
        None => {
            let known: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
            Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "Unknown route",
                format!(
                    "notifier {}/{} has no route {name:?} (routes: {known:?})",
                    notifier.metadata.namespace.as_deref().unwrap_or_default(),
                    notifier.metadata.name.as_deref().unwrap_or_default()
                ),
            ))
        }
    }
}

/// `application/json`, with any parameters, in any letter case (RFC 9110 media types).
fn is_json_media_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The idempotency key of a request: the body's `idempotencyKey`, else the `Idempotency-Key`
/// header. A key that is not 1–255 printable ASCII characters is refused: ignoring it would
/// turn a caller's retry into a second delivery.
pub fn idempotency_key(
    request: Option<&NotificationRequest>,
    headers: &HeaderMap,
) -> Result<Option<String>, Refusal> {
    let key = match request.and_then(|r| r.idempotency_key.as_deref()) {
        Some(k) => Some(k.as_bytes().to_vec()),
        None => headers
            .get("idempotency-key")
            .map(|v| v.as_bytes().to_vec()),
    };
    let Some(key) = key else {
        return Ok(None);
    };
    let printable = key.iter().all(|b| (b'!'..=b'~').contains(b));
    if key.is_empty() || key.len() > api::MAX_IDEMPOTENCY_KEY_CHARS || !printable {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Bad idempotency key",
            format!(
                "an idempotency key is 1 to {} printable ASCII characters (no spaces)",
                api::MAX_IDEMPOTENCY_KEY_CHARS
            ),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&key).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        h
    }

    #[test]
    fn refusals_name_the_problem() {
        let long = "x".repeat(api::MAX_FIELD_CHARS + 1);
        let json = json_headers;
        let cases: [(HeaderMap, String, StatusCode, &str); 8] = [
            (
                HeaderMap::new(),
                "{}".into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            (
                json(),
                "{".into(),
                StatusCode::BAD_REQUEST,
                "Malformed notification",
            ),
            (
                json(),
                r#"{"visitor": {"nmae": "x"}}"#.into(),
                StatusCode::BAD_REQUEST,
                "Malformed notification",
            ),
            (
                json(),
                format!(r#"{{"visitor": {{"name": "{long}"}}}}"#),
                StatusCode::BAD_REQUEST,
                "Field too long",
            ),
            (
                json(),
                r#"{"host": "a", "route": "b"}"#.into(),
                StatusCode::BAD_REQUEST,
                "Ambiguous target",
            ),
            (
                json(),
                "[]".into(),
                StatusCode::BAD_REQUEST,
                "Malformed notification",
            ),
            (
                json(),
                r#"{"text": " \u0007\u200b "}"#.into(),
                StatusCode::BAD_REQUEST,
                "Empty text",
            ),
            (
                json(),
                r#"{"visitor": {"count": 0}}"#.into(),
                StatusCode::BAD_REQUEST,
                "Bad visitor count",
            ),
        ];
        for (headers, body, status, title) in cases {
            let refusal = parse(&headers, body.as_bytes()).expect_err(&body);
            assert_eq!((refusal.status, refusal.title), (status, title), "{body}");
        }
        let ok = parse(&json(), br#"{"visitor": {"name": "x"}, "host": "h"}"#)
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(ok.host.as_deref(), Some("h"));
        let two = parse(
            &json(),
            br#"{"visitor": {"count": 2.0}, "host": null, "route": null}"#,
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(
            two.visitor.count,
            Some(2),
            "2.0 is the number 2 to JSON Schema"
        );
        assert!(parse(&json(), br#"{"visitor": {"count": 2.5}}"#).is_err());
        for media in ["Application/JSON", "application/json; charset=utf-8"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, media.parse().expect("header"));
            assert!(parse(&h, b"{}").is_ok(), "{media}");
        }
        let mut jsonx = HeaderMap::new();
        jsonx.insert(
            header::CONTENT_TYPE,
            "application/jsonx".parse().expect("header"),
        );
        assert!(parse(&jsonx, b"{}").is_err(), "not a prefix match");
    }

    #[test]
    fn idempotency_keys_come_from_the_body_or_the_header_and_are_checked() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "from-header".parse().expect("header"));
        let request = NotificationRequest {
            idempotency_key: Some("from-body".into()),
            ..Default::default()
        };
        let key = |r: Option<&NotificationRequest>, h: &HeaderMap| {
            idempotency_key(r, h).unwrap_or_else(|e| panic!("{e:?}"))
        };
        assert_eq!(key(Some(&request), &headers).as_deref(), Some("from-body"));
        assert_eq!(key(None, &headers).as_deref(), Some("from-header"));
        assert_eq!(key(None, &HeaderMap::new()), None);
        let mut bad = HeaderMap::new();
        bad.insert(
            "idempotency-key",
            axum::http::HeaderValue::from_bytes("訪問-1".as_bytes()).expect("header"),
        );
        assert!(
            idempotency_key(None, &bad).is_err(),
            "non-ASCII is refused, not ignored"
        );
        let long = NotificationRequest {
            idempotency_key: Some("k".repeat(256)),
            ..Default::default()
        };
        assert!(idempotency_key(Some(&long), &HeaderMap::new()).is_err());
    }

    #[test]
    fn the_relay_policy_limits_text_and_host_domains() {
        let mut notifier = crate::api::LineWorksNotifier::new(
            "front",
            serde_json::from_value(serde_json::json!({
                "botId": 1, "domain": "testtest", "defaultUser": "hogehoge",
                "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "app"}}
            }))
            .expect("spec"),
        );
        let host = |h: &str| NotificationRequest {
            host: Some(h.into()),
            ..Default::default()
        };
        let text = NotificationRequest {
            text: Some("anything".into()),
            ..Default::default()
        };
        assert!(policy(&notifier, &host("jinji")).is_ok());
        assert!(policy(&notifier, &host("jinji@TestTest")).is_ok());
        assert!(policy(&notifier, &host("ceo@other")).is_err());
        assert!(policy(&notifier, &host("0e5cd0a4-7b2c-4c1a-9f7e-3f0d2c1b9a88")).is_err());
        assert!(policy(&notifier, &text).is_err());
        notifier.spec.relay_policy = Some(crate::api::RelayPolicy {
            allow_text: true,
            host_domains: vec!["other".into()],
        });
        assert!(policy(&notifier, &host("ceo@other")).is_ok());
        assert!(policy(&notifier, &host("ceo@third")).is_err());
        assert!(policy(&notifier, &text).is_ok());
        notifier.spec.relay_policy = Some(crate::api::RelayPolicy {
            allow_text: false,
            host_domains: vec!["*".into()],
        });
        assert!(policy(&notifier, &host("0e5cd0a4-7b2c-4c1a-9f7e-3f0d2c1b9a88")).is_ok());
    }
}
