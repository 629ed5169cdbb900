//! OAuth 2.0 against LINE WORKS: Service Account JWT grant, authorization code, refresh (with
//! Refresh Token Rotation on or off) and revoke. Forms are encoded exactly once, by reqwest.

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Deserializer, Serialize};

use super::client::{Call, Repeat, json, path_segment};
use super::credentials::{
    ClientCredentials, ExposeSecret, Refreshed, SecretString, ServiceAccount, TokenSet,
    unix_seconds,
};
use super::{Api, LineWorksClient, LineWorksError};

/// Lifetime of a JWT assertion; every official sample uses 60 minutes.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Which kind of token is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// The token endpoint's answer, read defensively: `expires_in` comes as a string or a number.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(deserialize_with = "seconds_as_string_or_number")]
    expires_in: u64,
    #[serde(default)]
    scope: Option<String>,
}

fn seconds_as_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("expires_in {t:?} is not a number of seconds"))
        }),
    }
}

/// The longest token lifetime accepted from the token endpoint: 90 days.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(90 * 86_400);

impl TokenAnswer {
    fn into_tokens(self, issued_at: SystemTime) -> Result<TokenSet, LineWorksError> {
        // LINE WORKS issues 1-hour or 24-hour tokens; anything past a refresh token's 90 days is
        // a broken answer, and would overflow time arithmetic near u64::MAX.
        if self.expires_in > MAX_EXPIRES_IN.as_secs() {
            return Err(LineWorksError::InvalidResponse {
                api: Api::Token,
                detail: format!(
                    "expires_in {} s is beyond what LINE WORKS issues (at most {} s)",
                    self.expires_in,
                    MAX_EXPIRES_IN.as_secs()
                ),
            });
        }
        if self.access_token.is_empty() {
            return Err(LineWorksError::InvalidResponse {
                api: Api::Token,
                detail: "the answer has an empty access_token".into(),
            });
        }
        Ok(TokenSet {
            access_token: SecretString::from(self.access_token),
            refresh_token: self
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            token_type: self.token_type.unwrap_or_else(|| "Bearer".into()),
            scope: self.scope.unwrap_or_default(),
            issued_at,
            expires_in: Duration::from_secs(self.expires_in),
        })
    }
}

impl LineWorksClient {
    /// The URL an administrator opens to authorize the app (userAccount mode).
    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
    ) -> String {
        let query = [
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", &scopes.join(" ")),
            ("response_type", "code"),
            ("state", state),
        ];
        let encoded = query
            .iter()
            .map(|(k, v)| format!("{k}={}", path_segment(v)))
            .collect::<Vec<_>>()
            .join("&");
        format!("{}?{encoded}", self.auth_url("/authorize"))
    }

    /// Service Account grant: a JWT signed with the app's private key (RS256, base64url).
    pub async fn issue_service_account_token(
        &self,
        credentials: &ClientCredentials,
        account: &ServiceAccount,
        scopes: &[String],
    ) -> Result<TokenSet, LineWorksError> {
        let now = unix_seconds(SystemTime::now());
        let claims = Claims {
            iss: &credentials.client_id,
            sub: &account.id,
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
        };
        let assertion = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            account.encoding_key(),
        )
        .map_err(|_| {
            LineWorksError::PrivateKeyInvalid("signing the JWT assertion failed".into())
        })?;
        let scope = scopes.join(" ");
        self.token_request(
            Call {
                api: Api::Token,
                repeat: Repeat::Harmless,
            },
            &[
                ("assertion", assertion.as_str()),
                ("grant_type", JWT_BEARER_GRANT),
                ("client_id", &credentials.client_id),
                ("client_secret", credentials.client_secret.expose_secret()),
                ("scope", &scope),
            ],
        )
        .await
    }

    /// Authorization code grant (single use: never retried once it may have been processed).
    pub async fn exchange_code(
        &self,
        credentials: &ClientCredentials,
        code: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenSet, LineWorksError> {
        self.token_request(
            Call {
                api: Api::Token,
                repeat: Repeat::AtMostOnce,
            },
            &[
                ("grant_type", "authorization_code"),
                ("code", code.expose_secret()),
                ("client_id", &credentials.client_id),
                ("client_secret", credentials.client_secret.expose_secret()),
                ("redirect_uri", redirect_uri),
            ],
        )
        .await
    }

    /// Refresh. With rotation ON the answer carries a new refresh token, which must be stored
    /// before the access token is used; with rotation OFF it carries none and the old one stays.
    pub async fn refresh(
        &self,
        credentials: &ClientCredentials,
        refresh_token: &SecretString,
    ) -> Result<Refreshed, LineWorksError> {
        let mut tokens = self
            .token_request(
                // With rotation ON a processed refresh spends the old token.
                Call {
                    api: Api::Token,
                    repeat: Repeat::AtMostOnce,
                },
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose_secret()),
                    ("client_id", &credentials.client_id),
                    ("client_secret", credentials.client_secret.expose_secret()),
                ],
            )
            .await?;
        let rotated = match &tokens.refresh_token {
            Some(new) => new.expose_secret() != refresh_token.expose_secret(),
            None => {
                tokens.refresh_token = Some(refresh_token.clone());
                false
            }
        };
        Ok(Refreshed { tokens, rotated })
    }

    /// Revokes an access or refresh token.
    pub async fn revoke(
        &self,
        credentials: &ClientCredentials,
        token: &SecretString,
        kind: TokenKind,
    ) -> Result<(), LineWorksError> {
        let hint = match kind {
            TokenKind::Access => "access_token",
            TokenKind::Refresh => "refresh_token",
        };
        let form = [
            ("client_id", credentials.client_id.as_str()),
            ("client_secret", credentials.client_secret.expose_secret()),
            ("token", token.expose_secret()),
            ("token_type_hint", hint),
        ];
        let url = self.auth_url("/revoke");
        self.send(
            Call {
                api: Api::Revoke,
                repeat: Repeat::Harmless,
            },
            || self.http.post(&url).form(&form),
        )
        .await?;
        Ok(())
    }

    async fn token_request(
        &self,
        call: Call,
        form: &[(&str, &str)],
    ) -> Result<TokenSet, LineWorksError> {
        let url = self.auth_url("/token");
        let issued_at = SystemTime::now();
        let response = self.send(call, || self.http.post(&url).form(form)).await?;
        json::<TokenAnswer>(Api::Token, response)
            .await?
            .into_tokens(issued_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_read_as_a_string_or_a_number() {
        for body in [
            r#"{"access_token":"a","expires_in":"86400"}"#,
            r#"{"access_token":"a","expires_in":86400}"#,
        ] {
            let answer: TokenAnswer = serde_json::from_str(body).expect("parses");
            assert_eq!(answer.expires_in, 86400);
        }
        assert!(
            serde_json::from_str::<TokenAnswer>(r#"{"access_token":"a","expires_in":"soon"}"#)
                .is_err()
        );
    }
}
