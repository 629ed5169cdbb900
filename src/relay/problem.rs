//! Error answers: RFC 9457 problem details.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Most of a plain-text error body kept as a problem's detail.
const MAX_DETAIL_BYTES: usize = 2048;

use super::api::Problem;

/// Why a request was refused before delivery.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
}

impl Refusal {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
        }
    }

    pub fn into_response(self) -> Response {
        problem(self.status, self.title, self.detail)
    }
}

/// Turns every error answer that is not problem+json yet (axum's own 404, 405, 413 and path
/// rejections) into one, keeping its status, its text as the detail, and its other headers
/// (`Allow`, `Retry-After`), so callers can rely on one error format. A JSON answer is the
/// relay's own (502: a notification that reached no target, with its per-target result) and
/// passes as it is.
pub async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(b"application/problem+json") || v.starts_with(b"application/json")
        });
    if !(status.is_client_error() || status.is_server_error()) || ours {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_DETAIL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let title = status.canonical_reason().unwrap_or("Error");
    let detail = if text.is_empty() {
        title.to_string()
    } else {
        text
    };
    let mut answer = problem(status, title, detail);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

pub fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = Problem {
        type_: format!(
            "https://lineworks-operator.dev/problems/{}",
            status.as_u16()
        ),
        title: title.into(),
        status: status.as_u16(),
        detail: detail.into(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    response
}
