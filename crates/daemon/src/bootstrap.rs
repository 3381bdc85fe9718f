//! The cluster's bootstrap data, shared through etcd as k3s shares it: the first server
//! of a control plane on etcd stores its CA (certificate and key), its service-account
//! signing key, its token file and its encryption-at-rest configuration in etcd, sealed
//! with a key derived from the join token's secret; a server that joins later with
//! `--token` reads the sealed data, opens it with the same secret, checks the CA against
//! the hash the token pins, and writes the files into its own data directory before its
//! API server starts. No file is ever copied by hand, and etcd (or its snapshots) never
//! holds the keys in the clear.
//!
//! Sealing: PBKDF2-HMAC-SHA256 (a random 16-byte salt, [`PBKDF2_ROUNDS`] rounds) turns
//! the secret into an AES-256-GCM key; a random 12-byte nonce; the salt, nonce and
//! ciphertext are stored as JSON at [`BOOTSTRAP_KEY`]. A wrong secret fails the GCM tag
//! check, which is reported as a wrong token, never as garbage files.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

/// The etcd key of the sealed bootstrap data (outside the API server's `/registry`).
pub const BOOTSTRAP_KEY: &str = "/kcore/bootstrap";

/// PBKDF2 rounds of the key derivation.
pub const PBKDF2_ROUNDS: u32 = 100_000;

/// The files, relative to the API server's data directory, that make a server part of
/// the cluster: the CA, the service-account signing key, the token file and the join
/// token (the encryption configuration is added when the first server has one).
pub const FILES: &[&str] = &[
    "pki/ca.crt",
    "pki/ca.key",
    "sa.key",
    "tokens.csv",
    crate::cluster::JOIN_TOKEN,
];

/// Where a joining server keeps the cluster's encryption configuration.
pub const ENCRYPTION_FILE: &str = "encryption-config.yaml";

/// Bootstrap data: file path (relative) → contents.
pub type Files = BTreeMap<String, String>;

/// Errors of sealing, opening and storing the bootstrap data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The secret does not open the sealed data.
    #[error(
        "the join token does not open this cluster's bootstrap data in etcd: \
         wrong token (print the right one on a running server with `kcored token`)"
    )]
    WrongToken,
    /// The stored data is not what a kcore server writes.
    #[error("the bootstrap data in etcd is malformed: {0}")]
    Malformed(String),
    /// The CA in the data is not the one the token pins.
    #[error("the cluster CA in etcd does not match the CA hash of the join token")]
    CaMismatch,
    /// A file of the data directory could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
}

fn key(secret: &str, salt: &[u8]) -> LessSafeKey {
    let mut k = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(PBKDF2_ROUNDS).expect("non-zero"),
        salt,
        secret.as_bytes(),
        &mut k,
    );
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).expect("a 32-byte key"))
}

const AAD: &[u8] = b"kcore bootstrap v1";

/// Seals `files` with `secret`.
///
/// ```
/// use kcored::bootstrap::{open, seal, Files};
/// let mut files = Files::new();
/// files.insert("pki/ca.crt".into(), "-----BEGIN CERTIFICATE-----".into());
/// let blob = seal("s3cret", &files)?;
/// assert_eq!(open("s3cret", &blob)?, files);
/// assert!(open("wrong", &blob).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn seal(secret: &str, files: &Files) -> Result<Vec<u8>, BootstrapError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rng.fill(&mut salt).map_err(|_| BootstrapError::Random)?;
    rng.fill(&mut nonce).map_err(|_| BootstrapError::Random)?;
    let mut data = serde_json::to_vec(files).expect("serialisable");
    key(secret, &salt)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut data,
        )
        .map_err(|_| BootstrapError::Random)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sealed = serde_json::json!({
        "version": 1,
        "salt": b64.encode(salt),
        "nonce": b64.encode(nonce),
        "ciphertext": b64.encode(data),
    });
    Ok(serde_json::to_vec(&sealed).expect("serialisable"))
}

/// Opens data sealed by [`seal`]; a wrong `secret` is [`BootstrapError::WrongToken`].
pub fn open(secret: &str, blob: &[u8]) -> Result<Files, BootstrapError> {
    let malformed = |what: &str| BootstrapError::Malformed(what.to_owned());
    let sealed: serde_json::Value =
        serde_json::from_slice(blob).map_err(|_| malformed("not JSON"))?;
    if sealed["version"] != 1 {
        return Err(malformed("unknown version"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |name: &str| -> Result<Vec<u8>, BootstrapError> {
        sealed[name]
            .as_str()
            .and_then(|s| b64.decode(s).ok())
            .ok_or_else(|| malformed(name))
    };
    let salt = field("salt")?;
    let nonce: [u8; 12] = field("nonce")?.try_into().map_err(|_| malformed("nonce"))?;
    let mut data = field("ciphertext")?;
    let plain = key(secret, &salt)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut data,
        )
        .map_err(|_| BootstrapError::WrongToken)?;
    serde_json::from_slice(plain).map_err(|_| malformed("sealed content"))
}

/// Reads the bootstrap files from an API server data directory (and the encryption
/// configuration the server was started with, if any).
pub fn collect(api_dir: &Path, encryption: Option<&Path>) -> Result<Files, BootstrapError> {
    let mut files = Files::new();
    for rel in FILES {
        let path = api_dir.join(rel);
        let text = std::fs::read_to_string(&path).map_err(|source| BootstrapError::Io {
            op: "read",
            path: path.display().to_string(),
            source,
        })?;
        files.insert((*rel).to_owned(), text);
    }
    if let Some(p) = encryption {
        let text = std::fs::read_to_string(p).map_err(|source| BootstrapError::Io {
            op: "read",
            path: p.display().to_string(),
            source,
        })?;
        files.insert(ENCRYPTION_FILE.to_owned(), text);
    }
    Ok(files)
}

/// Writes the bootstrap files into an API server data directory (private modes).
pub fn install(api_dir: &Path, files: &Files) -> Result<(), BootstrapError> {
    for (rel, text) in files {
        if rel.contains("..") || rel.starts_with('/') {
            return Err(BootstrapError::Malformed(format!("file name {rel:?}")));
        }
        let path = api_dir.join(rel);
        let io = |source| BootstrapError::Io {
            op: "write",
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            kcore_statedir::ensure_dir(dir, kcore_statedir::PRIVATE_DIR).map_err(io)?;
        }
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        write_private(&path, text).map_err(io)?;
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Checks the CA certificate in `files` against the hash a join token pins.
pub fn check_ca(files: &Files, ca_hash: &[u8; 32]) -> Result<(), BootstrapError> {
    let ca = files
        .get("pki/ca.crt")
        .ok_or_else(|| BootstrapError::Malformed("no CA certificate".into()))?;
    let token = crate::join::JoinToken::for_ca(ca, "-")
        .map_err(|e| BootstrapError::Malformed(format!("the CA certificate: {e:#}")))?;
    if &token.ca_hash == ca_hash {
        Ok(())
    } else {
        Err(BootstrapError::CaMismatch)
    }
}

#[cfg(feature = "etcd")]
mod store {
    use super::BOOTSTRAP_KEY;
    use anyhow::{Context, Result};
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};

    /// The sealed bootstrap data in etcd, if a server stored it.
    pub async fn fetch(etcd: &mut etcd_client::Client) -> Result<Option<Vec<u8>>> {
        let r = etcd
            .get(BOOTSTRAP_KEY, None)
            .await
            .context("reading the bootstrap data from etcd")?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Stores sealed data unless some server stored its own first; `Ok(false)` then.
    pub async fn store_if_absent(etcd: &mut etcd_client::Client, blob: Vec<u8>) -> Result<bool> {
        let r = etcd
            .txn(
                Txn::new()
                    .when([Compare::create_revision(BOOTSTRAP_KEY, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(BOOTSTRAP_KEY, blob, None)]),
            )
            .await
            .context("storing the bootstrap data in etcd")?;
        Ok(r.succeeded())
    }
}

#[cfg(feature = "etcd")]
pub use store::{fetch, store_if_absent};

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Files {
        let mut f = Files::new();
        f.insert("pki/ca.key".into(), "KEY".into());
        f.insert(
            "tokens.csv".into(),
            "abc,admin,admin,system:masters\n".into(),
        );
        f
    }

    #[test]
    fn a_wrong_secret_is_a_wrong_token() {
        let blob = seal("right", &files()).unwrap();
        assert!(matches!(
            open("wrong", &blob),
            Err(BootstrapError::WrongToken)
        ));
        assert_eq!(open("right", &blob).unwrap(), files());
    }

    #[test]
    fn the_keys_are_never_stored_in_the_clear() {
        let blob = seal("right", &files()).unwrap();
        let text = String::from_utf8_lossy(&blob);
        assert!(!text.contains("KEY") && !text.contains("system:masters"));
    }

    #[test]
    fn tampered_data_does_not_open() {
        let blob = seal("right", &files()).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&blob).unwrap();
        let mut ct = base64::engine::general_purpose::STANDARD
            .decode(v["ciphertext"].as_str().unwrap())
            .unwrap();
        ct[0] ^= 1;
        v["ciphertext"] = base64::engine::general_purpose::STANDARD.encode(ct).into();
        let blob = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            open("right", &blob),
            Err(BootstrapError::WrongToken)
        ));
    }

    #[test]
    fn install_writes_private_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), &files()).unwrap();
        let meta = std::fs::metadata(dir.path().join("pki/ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let mut bad = Files::new();
        bad.insert("../x".into(), String::new());
        assert!(install(dir.path(), &bad).is_err());
    }
}
