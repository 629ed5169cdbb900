//! JWT signatures through ring, installed as `jsonwebtoken`'s crypto provider: RS256 (the
//! Service Account assertion) and HS256 (the controller's signed OAuth `state`), nothing else.
//! ring is the TLS library's backend already (kube, rustls), so this pulls in no second RSA
//! implementation: `jsonwebtoken`'s own `rust_crypto` backend brings the `rsa` crate
//! (RUSTSEC-2023-0071, a timing side channel) and curves this project never uses.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{hmac, rand, signature as ring_sig};

/// The provider: RS256 and HS256 only; any other algorithm is an error.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils::new_unimplemented(),
};

fn unsupported() -> jsonwebtoken::errors::Error {
    ErrorKind::InvalidAlgorithm.into()
}

fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    match (algorithm, key.family()) {
        (Algorithm::RS256, AlgorithmFamily::Rsa) => {
            let pair = ring_sig::RsaKeyPair::from_der(key.as_bytes())
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
            Ok(Box::new(Rs256Signer(pair)))
        }
        (Algorithm::HS256, AlgorithmFamily::Hmac) => Ok(Box::new(Hs256(hmac::Key::new(
            hmac::HMAC_SHA256,
            key.as_bytes(),
        )))),
        _ => Err(unsupported()),
    }
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match (algorithm, key.family()) {
        (Algorithm::RS256, AlgorithmFamily::Rsa) => Ok(Box::new(Rs256Verifier(key.clone()))),
        (Algorithm::HS256, AlgorithmFamily::Hmac) => Ok(Box::new(Hs256(hmac::Key::new(
            hmac::HMAC_SHA256,
            key.try_get_as_bytes()?,
        )))),
        _ => Err(unsupported()),
    }
}

struct Rs256Signer(ring_sig::RsaKeyPair);

impl Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut out = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &ring_sig::RSA_PKCS1_SHA256,
                &rand::SystemRandom::new(),
                msg,
                &mut out,
            )
            .map_err(|_| signature::Error::new())?;
        Ok(out)
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

struct Rs256Verifier(DecodingKey);

impl Verifier<Vec<u8>> for Rs256Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let params = &ring_sig::RSA_PKCS1_2048_8192_SHA256;
        match self.0.kind() {
            DecodingKeyKind::SecretOrDer(der) => ring_sig::UnparsedPublicKey::new(params, der)
                .verify(msg, sig)
                .map_err(|_| signature::Error::new()),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                ring_sig::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .map_err(|_| signature::Error::new())
            }
        }
    }
}

impl JwtVerifier for Rs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

struct Hs256(hmac::Key);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    /// Constant time (ring's `hmac::verify`).
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        hmac::verify(&self.0, msg, sig).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

/// Installs [`PROVIDER`] for the process (a second call, or another provider first, is fine).
pub fn install() {
    let _ = PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    #[test]
    fn hs256_round_trips_and_a_wrong_key_or_algorithm_is_refused() {
        super::install();
        let claims = Claims {
            sub: "s".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
        };
        let token = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"key"),
        )
        .expect("signed");
        let validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        assert!(
            jsonwebtoken::decode::<Claims>(&token, &DecodingKey::from_secret(b"key"), &validation)
                .is_ok()
        );
        assert!(
            jsonwebtoken::decode::<Claims>(
                &token,
                &DecodingKey::from_secret(b"other"),
                &validation
            )
            .is_err()
        );
        assert!(
            jsonwebtoken::encode(
                &Header::new(jsonwebtoken::Algorithm::ES256),
                &claims,
                &EncodingKey::from_secret(b"key"),
            )
            .is_err(),
            "only RS256 and HS256"
        );
    }
}
