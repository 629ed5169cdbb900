//! The throwaway credentials of a local control plane: a CA and serving certificate for the API
//! server, a key for signing ServiceAccount tokens, and an admin bearer token.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// PEM files the API server and its clients need, and the CA to issue more (a node's).
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
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

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// A new CA, and a serving certificate for `localhost`, 127.0.0.1, `kubernetes.default.svc`,
    /// the `kubernetes` Service's address `service_ip` (what pods connect to) and `extra_ips`.
    pub fn generate(service_ip: IpAddr, extra_ips: &[IpAddr]) -> Result<Self, rcgen::Error> {
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
            SanType::IpAddress(service_ip),
        ]);
        serving
            .subject_alt_names
            .extend(extra_ips.iter().map(|ip| SanType::IpAddress(*ip)));
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
            ca,
        })
    }

    /// A certificate from this CA for `common_name` in `organization` (Kubernetes reads them as
    /// user and group), valid for client and server use at `ips`.
    pub fn issue(
        &self,
        common_name: &str,
        organization: Option<&str>,
        ips: &[IpAddr],
    ) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(organization) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization);
        }
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A random bearer token for a node component.
pub fn component_token() -> Result<String, rcgen::Error> {
    random_token()
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

/// A serving certificate, its key and the CA that signed it (PEM), for a TLS server the tests or
/// the demo run inside the cluster (the LINE WORKS emulator).
pub struct ServingIdentity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ServingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingIdentity")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A new CA and a serving certificate from it for `ips` and `dns_names`.
pub fn serving_identity(
    ips: &[IpAddr],
    dns_names: &[String],
) -> Result<ServingIdentity, rcgen::Error> {
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "lineworks-operator test server CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(ServingIdentity {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
