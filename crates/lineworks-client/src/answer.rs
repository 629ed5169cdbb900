//! Reading LINE WORKS's answers: bodies capped, error bodies of both shapes parsed, remote texts
//! made printable, and the waits a server asks for clamped. A lying or broken server gets an
//! error, never a panic or an unbounded wait.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;

use super::limiter::MAX_PAUSE;
use super::{Api, ErrorBody, LineWorksError};

/// Reads a JSON answer into the client's own wire type.
pub(super) async fn json<T: DeserializeOwned>(
    api: Api,
    response: Response,
) -> Result<T, LineWorksError> {
    let bytes = read_capped(api, response).await?;
    serde_json::from_slice(&bytes).map_err(|e| LineWorksError::InvalidResponse {
        api,
        detail: format!("body does not match the documented format: {e}"),
    })
}

/// Reads a body of at most [`MAX_BODY_BYTES`]; a longer one is an invalid answer, read no
/// further.
async fn read_capped(api: Api, mut response: Response) -> Result<Vec<u8>, LineWorksError> {
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| LineWorksError::InvalidResponse {
                api,
                detail: format!("reading the body: {}", e.without_url()),
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(LineWorksError::InvalidResponse {
                api,
                detail: format!("the answer is longer than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
}

pub(super) fn transport_error(api: Api, timeout: Duration, e: &reqwest::Error) -> LineWorksError {
    // A failed connect means nothing was sent; anything later may have reached the service.
    let maybe_delivered = !e.is_connect();
    if e.is_timeout() {
        return LineWorksError::Timeout {
            api,
            after: timeout,
            maybe_delivered,
        };
    }
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    LineWorksError::Transport {
        api,
        detail,
        maybe_delivered,
    }
}

pub(super) async fn error_from_response(api: Api, response: Response) -> LineWorksError {
    let status = response.status();
    let retry_after = wait_requested(response.headers(), SystemTime::now());
    let text = read_capped(api, response)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let body = parse_error_body(&text);
    let code = status.as_u16();
    match status {
        s if s.is_redirection() => LineWorksError::InvalidResponse {
            api,
            detail: format!(
                "HTTP {code} redirect, not followed: set the base URL to the address that answers"
            ),
        },
        StatusCode::TOO_MANY_REQUESTS => LineWorksError::RateLimited {
            api,
            retry_after,
            body,
        },
        s if s.is_server_error() => LineWorksError::Server {
            api,
            status: code,
            body,
        },
        // On the token endpoint every other refusal is about the credentials or the grant.
        _ if matches!(api, Api::Token | Api::Revoke) => {
            LineWorksError::TokenRejected { status: code, body }
        }
        StatusCode::UNAUTHORIZED => LineWorksError::Unauthorized {
            api,
            status: code,
            body,
        },
        StatusCode::FORBIDDEN if body.code == "UNAUTHORIZED" => LineWorksError::Unauthorized {
            api,
            status: code,
            body,
        },
        StatusCode::FORBIDDEN => LineWorksError::Forbidden { api, body },
        StatusCode::NOT_FOUND => LineWorksError::NotFound { api, body },
        _ => LineWorksError::BadRequest {
            api,
            status: code,
            body,
        },
    }
}

/// `{code, description}` (API), `{error, error_description}` (OAuth), or the start of the text.
fn parse_error_body(text: &str) -> ErrorBody {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            return ErrorBody {
                code: String::new(),
                description: printable(text.trim(), 200),
            };
        }
    };
    let field = |names: &[&str]| {
        printable(
            names
                .iter()
                .find_map(|n| value.get(*n).and_then(|v| v.as_str()))
                .unwrap_or_default(),
            500,
        )
    };
    ErrorBody {
        code: field(&["code", "error"]),
        description: field(&["description", "error_description", "message"]),
    }
}

/// At most `max` characters of a remote text, without control, bidi-override or zero-width
/// characters: it ends up in status messages and events, where such characters could hide or
/// reorder what a person reads.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| !hides_text(*c))
        .take(max)
        .collect()
}

/// Whether `c` is a control, bidirectional-control or zero-width character: one that could hide
/// or reorder what a person reads where the text is shown.
pub fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// The longest wait a server's answer can ask for: a lying or broken server must not make time
/// arithmetic overflow, nor park a caller for longer than a rate window or two.
pub const MAX_REQUESTED_WAIT: Duration = Duration::from_secs(600);

/// The most of a response body this client reads: LINE WORKS's answers are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The wait a 429 asks for, at most [`MAX_REQUESTED_WAIT`].
pub(super) fn wait_requested(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    raw_wait_requested(headers, now).map(|w| w.min(MAX_REQUESTED_WAIT))
}

/// When an answer (a success too) says the budget is spent, `rateLimit-remaining: 0`: how long
/// until its window resets (`rateLimit-reset`, read as for a 429), at most [`MAX_PAUSE`]. Nothing
/// when it says something remains, or says nothing: the answers can only slow the pacing down.
pub(super) fn budget_spent_for(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    (header_number(headers, "ratelimit-remaining")? == 0)
        .then(|| reset_wait(headers, now))
        .flatten()
        .map(|w| w.min(MAX_PAUSE))
}

/// A header's non-negative number, rounded up.
fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v.ceil() as u64)
}

/// `Retry-After` (seconds), else `rateLimit-reset` (seconds until the window resets, or an epoch
/// time in seconds: the unit is undocumented, so both are accepted).
fn raw_wait_requested(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(seconds) = header_number(headers, "retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    reset_wait(headers, now)
}

fn reset_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let reset = header_number(headers, "ratelimit-reset")?;
    const EPOCH_THRESHOLD: u64 = 1_000_000_000;
    if reset >= EPOCH_THRESHOLD {
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now)));
    }
    Some(Duration::from_secs(reset))
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_answer_saying_the_budget_is_spent_pauses_until_its_reset_within_a_minute() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let spent = |pairs| budget_spent_for(&headers(pairs), now);
        assert_eq!(
            spent(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "17")]),
            Some(Duration::from_secs(17))
        );
        assert_eq!(
            spent(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "2000000030")
            ]),
            Some(Duration::from_secs(30))
        );
        // Lies and silence: an hour is a minute; something left, or no reset, is no pause.
        assert_eq!(
            spent(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "3600")]),
            Some(MAX_PAUSE)
        );
        assert_eq!(
            spent(&[("ratelimit-remaining", "3"), ("ratelimit-reset", "17")]),
            None
        );
        assert_eq!(spent(&[("ratelimit-remaining", "0")]), None);
        assert_eq!(
            spent(&[("ratelimit-remaining", "-1"), ("ratelimit-reset", "17")]),
            None
        );
        assert_eq!(spent(&[]), None);
    }

    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn remote_error_texts_lose_control_and_invisible_characters() {
        let body =
            parse_error_body(r#"{"code": "BAD\u0007", "description": "ok\u202eevil\u200b\nnext"}"#);
        assert_eq!(body.code, "BAD");
        assert_eq!(body.description, "okevil next");
        let long = "x".repeat(10_000);
        assert_eq!(parse_error_body(&long).description.chars().count(), 200);
    }

    #[test]
    fn a_wait_asked_for_is_clamped() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        for (name, value) in [
            ("retry-after", "1e300"),
            ("retry-after", "18446744073709551615"),
            ("ratelimit-reset", "99999999999999999999"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            assert_eq!(
                wait_requested(&h, now),
                Some(MAX_REQUESTED_WAIT),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn waits_come_from_retry_after_or_the_reset_header_in_either_unit() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(wait_requested(&h, now), None);
        h.insert("rateLimit-reset", HeaderValue::from_static("17"));
        assert_eq!(wait_requested(&h, now), Some(Duration::from_secs(17)));
        h.insert("ratelimit-reset", HeaderValue::from_static("2000000030"));
        assert_eq!(wait_requested(&h, now), Some(Duration::from_secs(30)));
        h.insert("Retry-After", HeaderValue::from_static("3"));
        assert_eq!(wait_requested(&h, now), Some(Duration::from_secs(3)));
    }

    #[test]
    fn error_bodies_of_both_shapes_are_read() {
        let api = parse_error_body(r#"{"code":"NOT_FOUND","description":"bot not found"}"#);
        assert_eq!(
            (api.code.as_str(), api.description.as_str()),
            ("NOT_FOUND", "bot not found")
        );
        let oauth =
            parse_error_body(r#"{"error":"invalid_client","error_description":"bad secret"}"#);
        assert_eq!(oauth.code, "invalid_client");
        let text = parse_error_body("Bad Gateway");
        assert_eq!(text.description, "Bad Gateway");
    }
}
