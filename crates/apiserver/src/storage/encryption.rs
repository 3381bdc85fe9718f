//! Encryption at rest: a [`Storage`] that encrypts the values of chosen resources on their
//! way into another backend and decrypts them on the way out, configured by upstream's
//! `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`, `--encryption-provider-config`).
//!
//! - `resources[].resources` name what is encrypted: `secrets`, `<plural>.<group>`,
//!   `*.` (every core resource), `*.<group>`, `*.*`; the first entry that matches a key
//!   applies (as upstream).
//! - `providers` in order: the **first writes**, every one is tried on read. `aesgcm`
//!   (AES-GCM with 16- or 32-byte keys, via `ring`; a random 96-bit nonce per write, the
//!   storage key as authenticated data) stores `k8s:enc:aesgcm:v1:<keyname>:<nonce><sealed>`;
//!   `identity` stores the plain value. `aescbc`, `secretbox` and `kms` are refused with
//!   an error that says so: kcore carries no implementation of them.
//! - Key rotation as upstream: put the new key first, restart, and re-write every object
//!   (`kubectl get secrets -A -o json | kubectl replace -f -`). A re-write of an unchanged
//!   object still reaches the store when its value is not in the writing key
//!   ([`Storage::stale`]).
//!
//! Values are encrypted above the backend, so the embedded store's files, its history
//! and etcd's values hold only ciphertext for the configured resources.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::StreamExt;
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use super::{Event, KeyValue, RangeResult, Revisions, Storage, StorageError, WatchStream};
use crate::error::Error;

const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";
const ENC_PREFIX: &[u8] = b"k8s:enc:";

/// One provider of a resource rule.
enum Provider {
    /// Named AES-GCM keys, the first of which encrypts.
    AesGcm(Vec<(String, LessSafeKey)>),
    Identity,
}

/// Which resources a rule covers: `(group, plural)` where `None` is any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Matcher {
    group: Option<String>,
    plural: Option<String>,
}

impl Matcher {
    /// `secrets`, `deployments.apps`, `*.`, `*.apps`, `*.*`.
    fn parse(s: &str) -> Result<Self, String> {
        let (plural, group) = match s.split_once('.') {
            Some((p, g)) => (p, g),
            None => (s, ""),
        };
        if plural.is_empty() || (plural == "*" && s == "*") {
            return Err(format!(
                "resource {s:?} is not a resource: use <resource>, <resource>.<group>, '*.<group>' or '*.*'"
            ));
        }
        let any = |x: &str| (x != "*").then(|| x.to_owned());
        Ok(Self {
            group: any(if group.is_empty() { "core" } else { group }),
            plural: any(plural),
        })
    }

    fn matches(&self, group: &str, plural: &str) -> bool {
        self.group.as_deref().is_none_or(|g| g == group)
            && self.plural.as_deref().is_none_or(|p| p == plural)
    }
}

struct Rule {
    matchers: Vec<Matcher>,
    providers: Vec<Provider>,
}

/// A parsed `EncryptionConfiguration`.
pub(crate) struct EncryptionConfig {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl EncryptionConfig {
    /// Reads an `EncryptionConfiguration` file (YAML or JSON).
    pub(crate) fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "encryption provider config {}: not YAML or JSON: {e}",
                path.display()
            ))
        })?;
        Self::parse(&doc).map_err(|why| {
            Error::Config(format!(
                "encryption provider config {}: {why}",
                path.display()
            ))
        })
    }

    fn parse(doc: &Value) -> Result<Self, String> {
        if doc["kind"] != "EncryptionConfiguration" {
            return Err(format!(
                "expected kind EncryptionConfiguration, not {}",
                doc["kind"]
            ));
        }
        match doc["apiVersion"].as_str() {
            Some("apiserver.config.k8s.io/v1" | "apiserver.k8s.io/v1") => {}
            other => return Err(format!("unsupported apiVersion {other:?}")),
        }
        let mut rules = Vec::new();
        for (i, r) in doc["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let matchers = r["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Matcher::parse(s.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("resources[{i}]: {e}"))?;
            if matchers.is_empty() {
                return Err(format!("resources[{i}].resources: must name a resource"));
            }
            let mut providers = Vec::new();
            for (j, p) in r["providers"].as_array().into_iter().flatten().enumerate() {
                let at = format!("resources[{i}].providers[{j}]");
                providers.push(Provider::parse(p).map_err(|e| format!("{at}: {e}"))?);
            }
            if providers.is_empty() {
                return Err(format!("resources[{i}].providers: must name a provider"));
            }
            rules.push(Rule {
                matchers,
                providers,
            });
        }
        if rules.is_empty() {
            return Err("resources: at least one entry is required".into());
        }
        Ok(Self { rules })
    }

    /// The providers for a storage key `/registry/<group>/<plural>/…`, if any rule covers it.
    fn providers(&self, key: &str) -> Option<&[Provider]> {
        let mut parts = key.strip_prefix("/registry/")?.splitn(3, '/');
        let (group, plural) = (parts.next()?, parts.next()?);
        self.rules
            .iter()
            .find(|r| r.matchers.iter().any(|m| m.matches(group, plural)))
            .map(|r| r.providers.as_slice())
    }
}

impl Provider {
    fn parse(p: &Value) -> Result<Self, String> {
        let obj = p.as_object().ok_or("a provider is an object")?;
        if obj.len() != 1 {
            return Err("exactly one provider type per entry".into());
        }
        let (kind, conf) = obj.iter().next().expect("one entry");
        match kind.as_str() {
            "identity" => Ok(Provider::Identity),
            "aesgcm" => {
                let mut keys = Vec::new();
                for k in conf["keys"].as_array().into_iter().flatten() {
                    let name = k["name"].as_str().unwrap_or_default();
                    if name.is_empty() || name.contains(':') {
                        return Err(format!(
                            "aesgcm key name {name:?}: must be non-empty, without ':'"
                        ));
                    }
                    let secret = base64::engine::general_purpose::STANDARD
                        .decode(k["secret"].as_str().unwrap_or_default())
                        .map_err(|e| format!("aesgcm key {name:?}: secret is not base64: {e}"))?;
                    let alg = match secret.len() {
                        16 => &aead::AES_128_GCM,
                        32 => &aead::AES_256_GCM,
                        24 => {
                            return Err(format!(
                                "aesgcm key {name:?}: 24-byte (AES-192) keys are not supported by kcore; use 16 or 32 bytes"
                            ))
                        }
                        n => {
                            return Err(format!(
                                "aesgcm key {name:?}: key must be 16, 24 or 32 bytes, not {n}"
                            ))
                        }
                    };
                    let key = UnboundKey::new(alg, &secret)
                        .map_err(|_| format!("aesgcm key {name:?}: rejected by AES-GCM"))?;
                    keys.push((name.to_owned(), LessSafeKey::new(key)));
                }
                if keys.is_empty() {
                    return Err("aesgcm: at least one key is required".into());
                }
                Ok(Provider::AesGcm(keys))
            }
            "aescbc" | "secretbox" | "kms" => Err(format!(
                "provider {kind:?} is not supported by kcore (supported: aesgcm, identity)"
            )),
            other => Err(format!("unknown provider {other:?}")),
        }
    }
}

/// Why a stored value could not be decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum DecryptError {
    #[error("no key named {0:?} among the configured aesgcm keys")]
    UnknownKey(String),
    #[error("value is encrypted by a provider that is not configured")]
    UnknownProvider,
    #[error("value is not encrypted and identity is not a configured provider")]
    Plain,
    #[error("value is not a valid aesgcm ciphertext or its key is wrong")]
    Open,
}

/// A [`Storage`] that encrypts values of the configured resources.
pub(crate) struct EncryptedStorage {
    inner: Arc<dyn Storage>,
    config: Arc<EncryptionConfig>,
    rng: SystemRandom,
}

impl EncryptedStorage {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn Storage>, config: EncryptionConfig) -> Self {
        Self {
            inner,
            config: Arc::new(config),
            rng: SystemRandom::new(),
        }
    }

    fn encrypt(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let Some(providers) = self.config.providers(key) else {
            return Ok(value);
        };
        match &providers[0] {
            Provider::Identity => Ok(value),
            Provider::AesGcm(keys) => {
                let (name, k) = &keys[0];
                let mut nonce = [0u8; NONCE_LEN];
                self.rng
                    .fill(&mut nonce)
                    .map_err(|_| backend("encrypt", "no randomness"))?;
                let mut sealed = value;
                k.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(key.as_bytes()),
                    &mut sealed,
                )
                .map_err(|_| backend("encrypt", "AES-GCM sealing failed"))?;
                let mut out = Vec::with_capacity(
                    AESGCM_PREFIX.len() + name.len() + 1 + NONCE_LEN + sealed.len(),
                );
                out.extend_from_slice(AESGCM_PREFIX.as_bytes());
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
        }
    }

    /// Whether the stored value of `key` is written as the first provider writes.
    fn current(&self, key: &str, value: &[u8]) -> bool {
        let Some(providers) = self.config.providers(key) else {
            return true;
        };
        match &providers[0] {
            Provider::Identity => !value.starts_with(ENC_PREFIX),
            Provider::AesGcm(keys) => value
                .strip_prefix(AESGCM_PREFIX.as_bytes())
                .and_then(|r| r.strip_prefix(keys[0].0.as_bytes()))
                .is_some_and(|r| r.first() == Some(&b':')),
        }
    }

    fn decrypt_kv(config: &EncryptionConfig, mut kv: KeyValue) -> Result<KeyValue, StorageError> {
        if let Some(providers) = config.providers(&kv.key) {
            kv.value = decrypt(providers, &kv.key, std::mem::take(&mut kv.value)).map_err(|e| {
                StorageError::Backend {
                    op: "decrypt",
                    message: format!("{}: {e}", kv.key),
                }
            })?;
        }
        Ok(kv)
    }
}

fn backend(op: &'static str, message: &str) -> StorageError {
    StorageError::Backend {
        op,
        message: message.to_owned(),
    }
}

fn decrypt(providers: &[Provider], key: &str, value: Vec<u8>) -> Result<Vec<u8>, DecryptError> {
    if let Some(rest) = value.strip_prefix(AESGCM_PREFIX.as_bytes()) {
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or(DecryptError::Open)?;
        let name = String::from_utf8_lossy(&rest[..colon]);
        let body = &rest[colon + 1..];
        let k = providers
            .iter()
            .filter_map(|p| match p {
                Provider::AesGcm(keys) => Some(keys),
                Provider::Identity => None,
            })
            .flatten()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| k)
            .ok_or_else(|| DecryptError::UnknownKey(name.into_owned()))?;
        if body.len() < NONCE_LEN {
            return Err(DecryptError::Open);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&body[..NONCE_LEN]).map_err(|_| DecryptError::Open)?;
        let mut sealed = body[NONCE_LEN..].to_vec();
        let plain = k
            .open_in_place(nonce, aead::Aad::from(key.as_bytes()), &mut sealed)
            .map_err(|_| DecryptError::Open)?;
        let n = plain.len();
        sealed.truncate(n);
        return Ok(sealed);
    }
    if value.starts_with(ENC_PREFIX) {
        return Err(DecryptError::UnknownProvider);
    }
    if providers.iter().any(|p| matches!(p, Provider::Identity)) {
        return Ok(value);
    }
    Err(DecryptError::Plain)
}

impl Storage for EncryptedStorage {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StorageError>> {
        let key = key.to_owned();
        Box::pin(async move {
            self.inner
                .get(&key)
                .await?
                .map(|kv| Self::decrypt_kv(&self.config, kv))
                .transpose()
        })
    }

    fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RangeResult, StorageError>> {
        let (prefix, start_after) = (prefix.to_owned(), start_after.map(str::to_owned));
        Box::pin(async move {
            let mut r = self
                .inner
                .range(&prefix, start_after.as_deref(), limit)
                .await?;
            r.kvs = std::mem::take(&mut r.kvs)
                .into_iter()
                .map(|kv| Self::decrypt_kv(&self.config, kv))
                .collect::<Result<_, _>>()?;
            Ok(r)
        })
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let key = key.to_owned();
        Box::pin(async move {
            let stored = self.encrypt(&key, value.clone())?;
            let mut kv = self.inner.create(&key, stored).await?;
            kv.value = value;
            Ok(kv)
        })
    }

    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let key = key.to_owned();
        Box::pin(async move {
            let stored = self.encrypt(&key, value.clone())?;
            let mut kv = self.inner.update(&key, stored, expected_revision).await?;
            kv.value = value;
            Ok(kv)
        })
    }

    fn delete(
        &self,
        key: &str,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let key = key.to_owned();
        Box::pin(async move {
            let kv = self.inner.delete(&key, expected_revision).await?;
            Self::decrypt_kv(&self.config, kv)
        })
    }

    fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> BoxFuture<'_, Result<WatchStream, StorageError>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let config = Arc::clone(&self.config);
            let events = self.inner.watch(&prefix, after_revision).await?;
            let out: WatchStream = events
                .map(move |ev| {
                    let ev = ev?;
                    Ok(Event {
                        kind: ev.kind,
                        kv: Self::decrypt_kv(&config, ev.kv)?,
                        prev: ev.prev.map(|p| Self::decrypt_kv(&config, p)).transpose()?,
                    })
                })
                .boxed();
            Ok(out)
        })
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        self.inner.compact(revision)
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revisions, StorageError>> {
        self.inner.revision()
    }

    fn stale(&self, key: &str) -> BoxFuture<'_, Result<bool, StorageError>> {
        let key = key.to_owned();
        Box::pin(async move {
            if self.config.providers(&key).is_none() {
                return Ok(false);
            }
            // the raw value, as the backend holds it
            Ok(self
                .inner
                .get(&key)
                .await?
                .is_some_and(|kv| !self.current(&key, &kv.value)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(providers: Value) -> EncryptionConfig {
        EncryptionConfig::parse(&json!({
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets", "*.apps"], "providers": providers}]
        }))
        .expect("valid config")
    }

    const K1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="; // 32 bytes
    const K2: &str = "YWJjZGVmZ2hpamtsbW5vcA=="; // 16 bytes

    #[test]
    fn matchers_as_upstream() {
        let c = config(json!([{"identity": {}}]));
        assert!(c.providers("/registry/core/secrets/ns/a").is_some());
        assert!(c.providers("/registry/apps/deployments/ns/a").is_some());
        assert!(c.providers("/registry/core/configmaps/ns/a").is_none());
        assert_eq!(
            Matcher::parse("*.*").expect("valid"),
            Matcher {
                group: None,
                plural: None
            }
        );
        assert!(Matcher::parse("*").is_err());
    }

    #[test]
    fn aesgcm_round_trip_with_rotation() {
        let old = config(json!([{"aesgcm": {"keys": [{"name": "k1", "secret": K1}]}}]));
        let new = config(
            json!([{"aesgcm": {"keys": [{"name": "k2", "secret": K2}, {"name": "k1", "secret": K1}]}}]),
        );
        let key = "/registry/core/secrets/ns/a";
        let dir = tempfile::tempdir().expect("temp dir");
        let inner: Arc<dyn Storage> =
            Arc::new(super::super::RedbStorage::open(dir.path()).expect("store"));
        let store = EncryptedStorage::new(Arc::clone(&inner), old);
        let sealed = store.encrypt(key, b"hello".to_vec()).expect("encrypts");
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert!(store.current(key, &sealed));
        let Some(providers) = new.providers(key) else {
            panic!("covered")
        };
        assert_eq!(
            decrypt(providers, key, sealed.clone()).expect("decrypts"),
            b"hello"
        );
        // the key is authenticated: the value cannot move to another key
        assert!(decrypt(providers, "/registry/core/secrets/ns/b", sealed.clone()).is_err());
        // plain values are refused without identity
        assert!(matches!(
            decrypt(providers, key, b"{}".to_vec()),
            Err(DecryptError::Plain)
        ));
        let rotated = EncryptedStorage::new(inner, new);
        assert!(!rotated.current(key, &sealed));
    }

    #[test]
    fn unsupported_providers_are_refused_clearly() {
        for p in ["aescbc", "secretbox", "kms"] {
            let e = EncryptionConfig::parse(&json!({
                "apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                "resources": [{"resources": ["secrets"], "providers": [{p: {"keys": []}}]}]
            }))
            .expect_err("refused");
            assert!(e.contains("is not supported by kcore"), "{e}");
        }
        let e = EncryptionConfig::parse(&json!({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets"], "providers": [{"aesgcm": {"keys": [{"name": "a", "secret": "c2hvcnQ="}]}}]}]
        }))
        .expect_err("refused");
        assert!(e.contains("must be 16, 24 or 32 bytes, not 5"), "{e}");
    }
}
