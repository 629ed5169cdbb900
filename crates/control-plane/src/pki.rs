//! The throwaway credentials of a local control plane: a CA and serving certificate for the API
//! server, a key for signing ServiceAccount tokens, and an admin bearer token.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// PEM files the API server and its clients need.
pub struct Pki {
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub service_account_key_pem: String,
    pub service_account_pub_pem: String,
    pub admin_token: String,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("ca_pem", &self.ca_pem)
            .field("serving_cert_pem", &self.serving_cert_pem)
            .field("keys_and_token", &"<redacted>")
            .finish()
    }
}

impl Pki {
    pub fn generate() -> Result<Self, rcgen::Error> {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(
            DnType::CommonName,
            "lineworks-operator local control plane CA",
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut serving = CertificateParams::new(vec!["localhost".to_string()])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.subject_alt_names.extend([
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("kubernetes.default.svc".try_into()?),
        ]);
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let service_account_key = KeyPair::generate()?;
        Ok(Self {
            ca_pem: ca.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            service_account_key_pem: service_account_key.serialize_pem(),
            service_account_pub_pem: service_account_key.public_key_pem(),
            admin_token: random_token()?,
        })
    }
}

/// 256 random bits as hex, from the kernel's generator.
fn random_token() -> Result<String, rcgen::Error> {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom writes at most bytes.len() bytes into the buffer it is given.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(filled).ok() != Some(bytes.len()) {
        return Err(rcgen::Error::RingUnspecified);
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
