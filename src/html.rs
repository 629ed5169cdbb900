//! The short pages a browser sees at an OAuth callback (the controller's and the CLI's): escaped
//! text, an `#title` heading tests and people can find, and headers that keep the URL (which
//! carries the authorization code) out of caches and Referer headers.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [("cache-control", "no-store"), ("referrer-policy", "no-referrer")],
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\"><title>{title}</title></head><body><h1 id=\"title\">{title}</h1>{body}</body></html>"
        )),
    )
        .into_response()
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
