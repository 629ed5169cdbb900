//! Reading a visitor notification from the wire: media type, JSON, field limits, and which of
//! the notifier's targets it names. Pure, so the refusals are unit-tested below.

use axum::http::{HeaderMap, StatusCode, header};

use super::api::{self, NotificationRequest};
use super::problem::Refusal;
use crate::api::{LineWorksNotifier, Route};

/// Longest accepted `host`, in characters.
const MAX_HOST_CHARS: usize = 256;

/// The request in `body`, if it is a well-formed notification within the limits.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<NotificationRequest, Refusal> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send Content-Type: application/json",
        ));
    }
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
            .and_then(|h| too_long("host", h, MAX_HOST_CHARS)),
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

/// The idempotency key of a request: the body's `idempotencyKey`, else the `Idempotency-Key`
/// header.
pub fn idempotency_key(
    request: Option<&NotificationRequest>,
    headers: &HeaderMap,
) -> Option<String> {
    request.and_then(|r| r.idempotency_key.clone()).or_else(|| {
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
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
        let cases: [(HeaderMap, String, StatusCode, &str); 5] = [
            (
                HeaderMap::new(),
                "{}".into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            (
                json_headers(),
                "{".into(),
                StatusCode::BAD_REQUEST,
                "Malformed notification",
            ),
            (
                json_headers(),
                r#"{"visitor": {"nmae": "x"}}"#.into(),
                StatusCode::BAD_REQUEST,
                "Malformed notification",
            ),
            (
                json_headers(),
                format!(r#"{{"visitor": {{"name": "{long}"}}}}"#),
                StatusCode::BAD_REQUEST,
                "Field too long",
            ),
            (
                json_headers(),
                r#"{"host": "a", "route": "b"}"#.into(),
                StatusCode::BAD_REQUEST,
                "Ambiguous target",
            ),
        ];
        for (headers, body, status, title) in cases {
            let refusal = parse(&headers, body.as_bytes()).expect_err(&body);
            assert_eq!((refusal.status, refusal.title), (status, title), "{body}");
        }
        let ok = parse(
            &json_headers(),
            br#"{"visitor": {"name": "x"}, "host": "h"}"#,
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(ok.host.as_deref(), Some("h"));
    }

    #[test]
    fn the_body_key_wins_over_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "from-header".parse().expect("header"));
        let request = NotificationRequest {
            idempotency_key: Some("from-body".into()),
            ..Default::default()
        };
        assert_eq!(
            idempotency_key(Some(&request), &headers).as_deref(),
            Some("from-body")
        );
        assert_eq!(
            idempotency_key(None, &headers).as_deref(),
            Some("from-header")
        );
        assert_eq!(idempotency_key(None, &HeaderMap::new()), None);
    }
}
