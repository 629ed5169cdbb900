//! What the controller's and the CLI's OAuth callbacks share: the query LINE WORKS redirects the
//! browser with, and the short pages the browser then shows: escaped text, an `#title` heading
//! tests and people can find, and headers that keep the URL (which carries the authorization
//! code) out of caches and Referer headers.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use lineworks_client::SecretString;
use serde::Deserialize;

/// The query of a redirect from LINE WORKS after consent (or refusal).
#[derive(Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl CallbackQuery {
    /// What LINE WORKS said when it did not authorize (the administrator declined, or the app
    /// is misconfigured).
    pub fn denial(&self) -> Option<String> {
        // Anyone can craft this URL: the texts are shortened and stripped of control and
        // invisible characters here (and HTML-escaped where shown).
        let error = crate::templates::clean(self.error.as_ref()?);
        let error: String = error.chars().take(64).collect();
        Some(format!(
            "LINE WORKS answered {error}{}",
            self.error_description
                .as_ref()
                .map(|d| format!(
                    ": {}",
                    crate::templates::clean(d)
                        .chars()
                        .take(300)
                        .collect::<String>()
                ))
                .unwrap_or_default()
        ))
    }

    /// The authorization code, if one came.
    pub fn code(&self) -> Option<SecretString> {
        self.code
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|c| SecretString::from(c.clone()))
    }
}

pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            ("x-content-type-options", "nosniff"),
            // Text only: no script, style, frame or form may load or run on these pages.
            (
                "content-security-policy",
                "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ],
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
