//! Credentials and tokens. Every secret is held in a [`SecretString`], whose `Debug` prints
//! `[REDACTED]`, and none of these types implements `Display` or `Serialize`: a secret can reach a
//! log line, an event or an error only by an explicit `expose_secret()` at the point of use.

use std::fmt;
use std::time::{Duration, SystemTime};

use jsonwebtoken::EncodingKey;
pub use secrecy::{ExposeSecret, SecretString};

use super::LineWorksError;

/// The app's Client ID and Client Secret (Developer Console > API 2.0 > app).
#[derive(Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .finish()
    }
}

/// A Service Account and its parsed PKCS#8 RSA private key.
#[derive(Clone)]
pub struct ServiceAccount {
    pub id: String,
    key: EncodingKey,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("id", &self.id)
            .field("private_key", &"[REDACTED]")
            .finish()
    }
}

impl ServiceAccount {
    /// Parses the private key file from Developer Console (`-----BEGIN PRIVATE KEY-----`).
    /// The error says what is wrong with the key without quoting it.
    pub fn new(
        id: impl Into<String>,
        private_key_pem: &SecretString,
    ) -> Result<Self, LineWorksError> {
        let pem = private_key_pem.expose_secret();
        let why = if !pem.contains("-----BEGIN") {
            Some("it is not PEM: expected the file that starts with -----BEGIN PRIVATE KEY-----")
        } else if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
            Some("it is encrypted; store the unencrypted key downloaded from Developer Console")
        } else if !(pem.contains("BEGIN PRIVATE KEY") || pem.contains("BEGIN RSA PRIVATE KEY")) {
            Some("it is not an RSA private key (expected -----BEGIN PRIVATE KEY-----)")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(LineWorksError::PrivateKeyInvalid(why.into()));
        }
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
            LineWorksError::PrivateKeyInvalid(
                "the PEM could not be parsed as an RSA private key (truncated or altered?)".into(),
            )
        })?;
        Ok(Self { id: id.into(), key })
    }

    pub(super) fn encoding_key(&self) -> &EncodingKey {
        &self.key
    }
}

/// Tokens as issued by the token endpoint.
#[derive(Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    /// Absent only when a refresh answered without one and no earlier one was known.
    pub refresh_token: Option<SecretString>,
    pub token_type: String,
    pub scope: String,
    pub issued_at: SystemTime,
    pub expires_in: Duration,
}

impl TokenSet {
    /// When the access token stops working.
    pub fn expires_at(&self) -> SystemTime {
        self.issued_at + self.expires_in
    }
}

/// Seconds since the Unix epoch (0 for a time before it), the form LINE WORKS and the token
/// Secret use.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("issued_at", &self.issued_at)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The result of a refresh: the tokens to store, and whether the refresh token was rotated
/// (the old one no longer works and the new one must be persisted before use).
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub tokens: TokenSet,
    pub rotated: bool,
}

/// A short, one-way name for a token (first 64 bits of its SHA-256), so two processes can say
/// "this token" to each other without passing the token.
pub fn token_fingerprint(token: &SecretString) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.expose_secret().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
