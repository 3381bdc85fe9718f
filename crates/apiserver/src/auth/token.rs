//! Service-account tokens: JWTs signed ES256 (ECDSA P-256, SHA-256) by a key the API
//! server keeps (`<data_dir>/pki/sa.key`, PKCS#8, mode 0600), with upstream's claims
//! (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti` and the `kubernetes.io` object
//! bindings), and their verification. The public key is served as a JWK set
//! (`/openid/v1/jwks`), its `kid` the base64url SHA-256 of the public point.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{json, Value};

use crate::error::Error;

/// The issuer kcore's tokens name, as a kubeadm cluster's.
pub(crate) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Why a token is not one of ours or no longer valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not a JWT signed by this server's key.
    #[error("invalid bearer token")]
    Invalid,
    /// Past its expiry or before its start.
    #[error("token has expired")]
    Expired,
    /// Issued for audiences this server does not accept.
    #[error("token audiences {0:?} is invalid for the target audiences")]
    Audience(Vec<String>),
}

/// Signs and verifies service-account tokens.
pub(crate) struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

const PEM_LABEL: &str = "PRIVATE KEY";

fn key_error(path: &Path, what: &str) -> Error {
    Error::Config(format!("service-account key {}: {what}", path.display()))
}

impl Issuer {
    /// A fresh key, kept only in memory (a server without a data directory).
    pub(crate) fn ephemeral() -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| Error::Config("generating a service-account key".into()))?;
        Self::from_pkcs8(pkcs8.as_ref())
            .ok_or_else(|| Error::Config("reading a generated service-account key".into()))
    }

    /// The key kept at `path`, made on first start.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| key_error(path, "generating"))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .filter_map(|c| std::str::from_utf8(c).ok())
                .collect();
            let pem = format!(
                "-----BEGIN {PEM_LABEL}-----\n{}\n-----END {PEM_LABEL}-----\n",
                lines.join("\n")
            );
            kcore_tls::write_private(path, &pem)?;
            tracing::info!(path = %path.display(), "generated the service-account signing key");
        }
        let pem = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| key_error(path, "not PEM"))?;
        Self::from_pkcs8(&der).ok_or_else(|| key_error(path, "not an ECDSA P-256 PKCS#8 key"))
    }

    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64.encode(digest.as_ref());
        Some(Self { key, kid, rng })
    }

    /// Signs `claims` into a compact JWS.
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, Error> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| Error::Config("signing a service-account token".into()))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }

    /// The claims of `token` when this key signed it, it is within its validity at
    /// `now` (seconds since the epoch) and names one of `audiences`.
    pub(crate) fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let decode = |p: &str| B64.decode(p).map_err(|_| TokenError::Invalid);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Invalid)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Invalid);
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed = &token[..h.len() + 1 + c.len()];
        public
            .verify(signed.as_bytes(), &decode(s)?)
            .map_err(|_| TokenError::Invalid)?;
        let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|_| TokenError::Invalid)?;
        if claims["iss"] != ISSUER {
            return Err(TokenError::Invalid);
        }
        let exp = claims["exp"].as_i64().ok_or(TokenError::Invalid)?;
        let nbf = claims["nbf"].as_i64().unwrap_or(0);
        // upstream allows 60 s of clock skew
        if now > exp + 60 || now + 60 < nbf {
            return Err(TokenError::Expired);
        }
        let aud: Vec<String> = match &claims["aud"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Audience(aud));
        }
        Ok(claims)
    }

    /// The public key as a JWK set.
    pub(crate) fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // uncompressed: 0x04 || x (32) || y (32)
        let (x, y) = point[1..].split_at(32);
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(x), "y": B64.encode(y)}]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_only_for_their_audience() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        let issuer = Issuer::load_or_create(&path).unwrap();
        let claims = json!({"iss": ISSUER, "sub": "system:serviceaccount:d:x", "aud": [ISSUER], "exp": 2000, "nbf": 1000, "iat": 1000});
        let t = issuer.sign(&claims).unwrap();
        let ours = vec![ISSUER.to_owned()];
        assert_eq!(
            issuer.verify(&t, &ours, 1500).unwrap()["sub"],
            "system:serviceaccount:d:x"
        );
        assert_eq!(issuer.verify(&t, &ours, 2100), Err(TokenError::Expired));
        assert!(matches!(
            issuer.verify(&t, &["other".to_owned()], 1500),
            Err(TokenError::Audience(_))
        ));
        // the same key after a restart; another key does not verify it
        let again = Issuer::load_or_create(&path).unwrap();
        assert!(again.verify(&t, &ours, 1500).is_ok());
        assert_eq!(
            Issuer::ephemeral().unwrap().verify(&t, &ours, 1500),
            Err(TokenError::Invalid)
        );
        // a changed payload breaks the signature
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(
            json!({"iss": ISSUER, "sub": "system:admin", "aud": [ISSUER], "exp": 2000}).to_string(),
        );
        parts[1] = &forged;
        assert_eq!(
            issuer.verify(&parts.join("."), &ours, 1500),
            Err(TokenError::Invalid)
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let jwks = issuer.jwks();
        assert_eq!(
            jwks["keys"][0]["kid"],
            t.split('.')
                .next()
                .map(|h| {
                    let h: Value = serde_json::from_slice(&B64.decode(h).unwrap()).unwrap();
                    h["kid"].clone()
                })
                .unwrap()
        );
    }
}
