//! Which certificate authorities a LINE WORKS connection trusts, and which proxy it goes through.
//!
//! Behind a TLS-inspecting corporate proxy, or in front of a stand-in server with its own CA, the
//! system's roots are not enough: [`ExtraRoots`] adds the CAs of a PEM bundle to them (never
//! replaces them). Proxies come from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`,
//! upper or lower case), which reqwest reads when a client is built.

use std::path::{Path, PathBuf};

/// At most this many certificates in a bundle (a system bundle holds about 150).
const MAX_CERTIFICATES: usize = 1_000;
/// At most this many bytes in a bundle file.
const MAX_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// Certificate authorities trusted besides the system's.
#[derive(Clone, Default)]
pub struct ExtraRoots {
    certificates: Vec<reqwest::Certificate>,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("certificates", &self.certificates.len())
            .field("source", &self.source)
            .finish()
    }
}

/// Why a CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the CA bundle {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA bundle {path} is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge { path: String },
    #[error("the CA bundle {path} is not PEM certificates: {detail}")]
    Invalid { path: String, detail: String },
    #[error("the CA bundle {path} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)")]
    Empty { path: String },
    #[error("the CA bundle {path} holds more than {MAX_CERTIFICATES} certificates")]
    TooMany { path: String },
}

impl ExtraRoots {
    /// The CAs of a PEM bundle file (one or more `BEGIN CERTIFICATE` blocks).
    pub fn from_pem_file(path: &Path) -> Result<Self, TrustError> {
        let shown = path.display().to_string();
        let read = |source| TrustError::Read {
            path: shown.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_BUNDLE_BYTES {
            return Err(TrustError::TooLarge { path: shown });
        }
        let pem = std::fs::read(path).map_err(read)?;
        Self::from_pem(&pem, &shown)
    }

    fn from_pem(pem: &[u8], shown: &str) -> Result<Self, TrustError> {
        let certificates =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| TrustError::Invalid {
                path: shown.to_string(),
                detail: e.to_string(),
            })?;
        if certificates.is_empty() {
            return Err(TrustError::Empty {
                path: shown.to_string(),
            });
        }
        if certificates.len() > MAX_CERTIFICATES {
            return Err(TrustError::TooMany {
                path: shown.to_string(),
            });
        }
        Ok(Self {
            certificates,
            source: Some(PathBuf::from(shown)),
        })
    }

    /// How many CAs are added.
    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    pub(crate) fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        if self.certificates.is_empty() {
            builder
        } else {
            builder.tls_certs_merge(self.certificates.iter().cloned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused_with_its_name() {
        let err = ExtraRoots::from_pem(b"not a certificate\n", "/x/ca.crt").unwrap_err();
        assert!(err.to_string().contains("/x/ca.crt"), "{err}");
        assert!(matches!(err, TrustError::Empty { .. }), "{err:?}");
    }
}
