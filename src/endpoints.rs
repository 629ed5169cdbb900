//! Which hosts a notifier's `apiBaseURL`/`authBaseURL` may name. Tokens, the client secret and
//! message texts go to those URLs, so a tenant who can edit a notifier must not be able to point
//! them at a host of their choosing: beyond the public LINE WORKS endpoints, a host must be
//! allowed by whoever installed the operator (`--allow-host`, Helm value `allowedHosts`). The
//! check runs on the parsed URL (the CRD's CEL rule is only a first, textual filter).

use std::sync::{LazyLock, Mutex, PoisonError};

use reqwest::Url;

use crate::api::LineWorksNotifierSpec;
use crate::api::contract::{DEFAULT_API_BASE_URL, DEFAULT_AUTH_BASE_URL};

/// Name of the command-line flag that allows a host (controller and relay).
pub const ALLOW_HOST_FLAG: &str = "--allow-host";
/// Name of the Helm value that sets [`ALLOW_HOST_FLAG`].
pub const ALLOW_HOST_VALUE: &str = "allowedHosts";

/// Hosts the installer allowed beyond the LINE WORKS defaults: `host` (any port) or `host:port`,
/// lower case. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

/// A spec field that names a remote endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointField {
    ApiBaseUrl,
    AuthBaseUrl,
}

impl EndpointField {
    pub fn spec_name(self) -> &'static str {
        match self {
            Self::ApiBaseUrl => "spec.apiBaseURL",
            Self::AuthBaseUrl => "spec.authBaseURL",
        }
    }

    /// The field's LINE WORKS default, parsed once (the relay checks a URL per notification).
    fn default_url(self) -> Option<&'static Url> {
        static API: LazyLock<Option<Url>> = LazyLock::new(|| Url::parse(DEFAULT_API_BASE_URL).ok());
        static AUTH: LazyLock<Option<Url>> =
            LazyLock::new(|| Url::parse(DEFAULT_AUTH_BASE_URL).ok());
        match self {
            Self::ApiBaseUrl => API.as_ref(),
            Self::AuthBaseUrl => AUTH.as_ref(),
        }
    }
}

/// Why a URL was refused; the text says what to change and who can allow it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefused {
    #[error("{field} is not a URL: {1}", field = .0.spec_name())]
    Unparsable(EndpointField, String),
    #[error("{field} must not carry a user name, password, query or fragment: write only scheme, host, port and path", field = .0.spec_name())]
    ExtraParts(EndpointField),
    #[error("{field} must be https (plain http only for localhost, 127.0.0.1 or ::1)", field = .0.spec_name())]
    PlainHttp(EndpointField),
    #[error("{field} names host {1}, which this installation does not allow: remove the field to use LINE WORKS itself, or ask the operator's installer to allow it ({ALLOW_HOST_FLAG} {1} on the controller and relay, Helm value {ALLOW_HOST_VALUE})", field = .0.spec_name())]
    HostNotAllowed(EndpointField, String),
}

impl AllowedHosts {
    /// Allow-list entries as given on the command line: `host` or `host:port`.
    pub fn new(entries: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for entry in entries {
            let entry = entry.trim().to_ascii_lowercase();
            // Parsed as a URL authority, so an entry means what the URL check will compare.
            let parsed = Url::parse(&format!("https://{entry}/"))
                .map_err(|e| format!("{ALLOW_HOST_FLAG} {entry}: {e}"))?;
            if entry.is_empty()
                || entry.contains(['/', '@', '?', '#'])
                || parsed.host_str().is_none()
            {
                return Err(format!(
                    "{ALLOW_HOST_FLAG} {entry}: write a host name or address, optionally with :port"
                ));
            }
            hosts.push(entry);
        }
        Ok(Self(hosts))
    }

    /// Loopback hosts only: the demo and tests, whose emulator listens on 127.0.0.1.
    pub fn loopback() -> Self {
        Self(vec!["127.0.0.1".into(), "localhost".into(), "[::1]".into()])
    }

    /// Checks one URL of a spec field; `Ok` is the URL to use.
    pub fn check(&self, field: EndpointField, url: &str) -> Result<Url, EndpointRefused> {
        let parsed =
            Url::parse(url).map_err(|e| EndpointRefused::Unparsable(field, e.to_string()))?;
        if !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(EndpointRefused::ExtraParts(field));
        }
        // IPv6 addresses come bracketed, as in an allow-list entry.
        let Some(host) = parsed.host_str().map(str::to_ascii_lowercase) else {
            return Err(EndpointRefused::Unparsable(field, "no host".into()));
        };
        let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(EndpointRefused::PlainHttp(field)),
        }
        let Some(port) = parsed.port_or_known_default() else {
            return Err(EndpointRefused::Unparsable(field, "no port".into()));
        };
        let default = field.default_url();
        let is_default = default.is_some_and(|d| {
            d.scheme() == parsed.scheme()
                && d.host_str() == Some(host.as_str())
                && d.port_or_known_default() == Some(port)
        });
        let with_port = format!("{host}:{port}");
        if is_default || self.0.iter().any(|e| *e == host || *e == with_port) {
            Ok(parsed)
        } else {
            Err(EndpointRefused::HostNotAllowed(field, with_port))
        }
    }

    /// Checks both endpoints of a notifier.
    pub fn check_spec(&self, spec: &LineWorksNotifierSpec) -> Result<(), EndpointRefused> {
        self.check(EndpointField::ApiBaseUrl, spec.api_base_url())?;
        self.check(EndpointField::AuthBaseUrl, spec.auth_base_url())?;
        Ok(())
    }
}

/// The allowed hosts with the last check remembered: the relay checks a notifier's apiBaseURL
/// for every notification, and its notifiers nearly always share one URL, so it is parsed again
/// only when it changes.
#[derive(Debug, Default)]
pub struct LastCheck {
    allowed: AllowedHosts,
    last: Mutex<Option<Checked>>,
}

/// A field, its URL and the verdict on it.
type Checked = (EndpointField, String, Result<(), EndpointRefused>);

impl LastCheck {
    pub fn new(allowed: AllowedHosts) -> Self {
        Self {
            allowed,
            last: Mutex::default(),
        }
    }

    /// [`AllowedHosts::check`], answered from memory when `field` and `url` are the last ones.
    pub fn check(&self, field: EndpointField, url: &str) -> Result<(), EndpointRefused> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match &*last {
            Some((f, u, verdict)) if *f == field && u == url => verdict.clone(),
            _ => {
                let verdict = self.allowed.check(field, url).map(|_| ());
                *last = Some((field, url.to_string(), verdict.clone()));
                verdict
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(allowed: &AllowedHosts, url: &str) -> Result<(), EndpointRefused> {
        allowed.check(EndpointField::ApiBaseUrl, url).map(|_| ())
    }

    #[test]
    fn a_remembered_check_answers_for_its_url_only() {
        let last =
            LastCheck::new(AllowedHosts::new(["relay.example.com".to_string()]).expect("hosts"));
        let ok = "https://relay.example.com/v1.0";
        let other = "https://evil.example.com/v1.0";
        assert_eq!(last.check(EndpointField::ApiBaseUrl, ok), Ok(()));
        assert_eq!(last.check(EndpointField::ApiBaseUrl, ok), Ok(()));
        // Another URL is checked afresh, and so is the same one after it.
        assert!(matches!(
            last.check(EndpointField::ApiBaseUrl, other),
            Err(EndpointRefused::HostNotAllowed(..))
        ));
        assert!(last.check(EndpointField::ApiBaseUrl, other).is_err());
        assert_eq!(last.check(EndpointField::ApiBaseUrl, ok), Ok(()));
        // The same URL for another field is another question.
        assert_eq!(
            last.check(EndpointField::AuthBaseUrl, DEFAULT_API_BASE_URL),
            Err(EndpointRefused::HostNotAllowed(
                EndpointField::AuthBaseUrl,
                "www.worksapis.com:443".into()
            ))
        );
        assert_eq!(
            last.check(EndpointField::ApiBaseUrl, DEFAULT_API_BASE_URL),
            Ok(())
        );
    }

    #[test]
    fn the_line_works_defaults_need_no_allowance() {
        let none = AllowedHosts::default();
        assert_eq!(api(&none, DEFAULT_API_BASE_URL), Ok(()));
        assert!(
            none.check(EndpointField::AuthBaseUrl, DEFAULT_AUTH_BASE_URL)
                .is_ok()
        );
        // Each default only for its own field, and only over https on 443.
        assert!(api(&none, DEFAULT_AUTH_BASE_URL).is_err());
        assert!(api(&none, "https://www.worksapis.com:8443/v1.0").is_err());
        assert!(api(&none, "http://www.worksapis.com/v1.0").is_err());
    }

    #[test]
    fn loopback_is_not_allowed_unless_installed_so() {
        let none = AllowedHosts::default();
        assert!(matches!(
            api(&none, "http://127.0.0.1:8080/v1.0"),
            Err(EndpointRefused::HostNotAllowed(_, h)) if h == "127.0.0.1:8080"
        ));
        let lo = AllowedHosts::loopback();
        assert_eq!(api(&lo, "http://127.0.0.1:8080/v1.0"), Ok(()));
        assert_eq!(api(&lo, "http://localhost:8080/v1.0"), Ok(()));
        assert_eq!(api(&lo, "http://[::1]:8080/v1.0"), Ok(()));
    }

    #[test]
    fn tricks_with_user_info_and_look_alike_hosts_are_refused() {
        let lo = AllowedHosts::loopback();
        for url in [
            "http://localhost:@169.254.169.254/",
            "http://user:pw@localhost:8080/",
            "http://localhost:8080/?next=http://evil.example",
            "http://localhost:8080/#x",
        ] {
            assert_eq!(
                api(&lo, url),
                Err(EndpointRefused::ExtraParts(EndpointField::ApiBaseUrl)),
                "{url}"
            );
        }
        assert_eq!(
            api(&lo, "http://localhost.evil.example/"),
            Err(EndpointRefused::PlainHttp(EndpointField::ApiBaseUrl))
        );
        assert!(matches!(
            api(&lo, "https://localhost.evil.example/"),
            Err(EndpointRefused::HostNotAllowed(..))
        ));
        assert!(matches!(
            api(&lo, "ftp://localhost/"),
            Err(EndpointRefused::PlainHttp(_))
        ));
    }

    #[test]
    fn entries_name_a_host_or_a_host_and_port() {
        let allowed = AllowedHosts::new([
            "Proxy.Example.com".to_string(),
            "relay.example.com:8443".into(),
        ])
        .expect("valid");
        assert_eq!(api(&allowed, "https://proxy.example.com/v1.0"), Ok(()));
        assert_eq!(api(&allowed, "https://proxy.example.com:9000/v1.0"), Ok(()));
        assert_eq!(api(&allowed, "https://relay.example.com:8443/v1.0"), Ok(()));
        assert!(api(&allowed, "https://relay.example.com/v1.0").is_err());
        assert!(api(&allowed, "https://example.com/v1.0").is_err());
        for bad in ["", "a/b", "user@host", "http://x"] {
            assert!(AllowedHosts::new([bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_refusal_names_the_flag_and_the_helm_value() {
        let text = api(&AllowedHosts::default(), "https://evil.example/")
            .expect_err("refused")
            .to_string();
        assert!(
            text.contains("--allow-host evil.example:443") && text.contains("allowedHosts"),
            "{text}"
        );
    }
}
