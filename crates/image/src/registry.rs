//! Pulling from an OCI distribution registry.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::{ImageRecord, ImageStore};
use crate::oci::{self, Platform, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::unpack::{Progress, ProgressFn};

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_MANIFEST: u64 = 8 << 20;

/// A parsed image reference: `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port): `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path: `library/alpine`.
    pub repository: String,
    /// Tag, if given (`latest` is assumed when neither tag nor digest is).
    pub tag: Option<String>,
    /// Digest, if given.
    pub digest: Option<Digest>,
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidReference {
            reference: s.to_owned(),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| bad("invalid digest"))?),
            ),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), p.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), rest.to_owned()),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (repository, tag) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => {
                (path[..i].to_owned(), Some(path[i + 1..].to_owned()))
            }
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(bad("empty repository"));
        }
        let ok_repo = repository.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
        if !ok_repo {
            return Err(bad("repository must be lower-case [a-z0-9._-] components"));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// What to ask the manifests endpoint for: the digest if given, else
    /// the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

/// How to pull.
#[derive(Clone)]
pub struct PullOptions {
    /// Platform to pick from an index.
    pub platform: Platform,
    /// User name and password (basic auth, or to obtain a bearer token).
    pub credentials: Option<(String, String)>,
    /// Talk plain HTTP instead of HTTPS (local registries).
    pub plain_http: bool,
    /// Attempts per request on transport errors and 5xx / 429 answers.
    pub attempts: u32,
    /// Blobs downloaded at the same time.
    pub jobs: usize,
    /// Name to record instead of the reference.
    pub name: Option<String>,
    /// Called with downloaded bytes and finished blobs (as `entries`).
    pub progress: Option<ProgressFn>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::default(),
            credentials: None,
            plain_http: false,
            attempts: 4,
            jobs: 3,
            name: None,
            progress: None,
        }
    }
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "***")),
            )
            .field("plain_http", &self.plain_http)
            .field("attempts", &self.attempts)
            .field("jobs", &self.jobs)
            .field("name", &self.name)
            .finish()
    }
}

/// A client for one registry and repository, with token caching.
pub struct RegistryClient {
    agent: ureq::Agent,
    base: String,
    repository: String,
    credentials: Option<(String, String)>,
    attempts: u32,
    auth: Mutex<Option<String>>,
    /// Scopes asked for besides the challenge's (a push asks for
    /// `pull,push` on its repository and `pull` on a mount's source).
    scopes: Vec<String>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("repository", &self.repository)
            .finish()
    }
}

struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(k.trim().to_ascii_lowercase(), v.to_owned());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

impl RegistryClient {
    /// A client for `reference`'s registry and repository.
    pub fn new(reference: &Reference, opts: &PullOptions) -> RegistryClient {
        let host = if reference.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &reference.registry
        };
        let scheme = if opts.plain_http { "http" } else { "https" };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build()
            .into();
        RegistryClient {
            agent,
            base: format!("{scheme}://{host}"),
            repository: reference.repository.clone(),
            credentials: opts.credentials.clone(),
            attempts: opts.attempts.max(1),
            auth: Mutex::new(None),
            scopes: Vec::new(),
        }
    }

    /// Ask for these token scopes too (`repository:NAME:ACTIONS`).
    pub(crate) fn with_scopes(mut self, scopes: Vec<String>) -> Self {
        self.scopes = scopes;
        self
    }

    /// `https://host` (or `http://`) of the registry.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The repository this client talks to.
    pub(crate) fn repository(&self) -> &str {
        &self.repository
    }

    fn err(url: &str, reason: impl Into<String>) -> Error {
        Error::Registry {
            url: url.to_owned(),
            reason: reason.into(),
        }
    }

    /// GET with auth negotiation and retries; returns a 200 response.
    fn get(&self, url: &str, accept: &str) -> Result<ureq::http::Response<ureq::Body>> {
        self.send("GET", url, &[("Accept", accept)], None, &[200])
    }

    /// One request with auth negotiation (a 401 is answered once, from its
    /// challenge) and retries on transport errors, 429 and 5xx; returns
    /// the response when its status is one of `ok`.
    pub(crate) fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        ok: &[u16],
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut attempt = 0;
        let mut authed_once = false;
        loop {
            attempt += 1;
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = self.auth.lock().expect("not poisoned").clone() {
                req = req.header("Authorization", a);
            }
            let sent = match body {
                Some(b) => req.body(b).map(|r| self.agent.run(r)),
                None => req.body(()).map(|r| self.agent.run(r)),
            }
            .map_err(|e| Self::err(url, e.to_string()))?;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if attempt < self.attempts => {
                    tracing::debug!(
                        url,
                        error = &e as &dyn std::error::Error,
                        attempt,
                        "registry request failed; retrying"
                    );
                    std::thread::sleep(Duration::from_millis(200 << attempt.min(5)));
                    continue;
                }
                Err(e) => return Err(Self::err(url, e.to_string())),
            };
            let status = resp.status().as_u16();
            if ok.contains(&status) {
                return Ok(resp);
            }
            match status {
                401 if !authed_once => {
                    authed_once = true;
                    let h = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| Self::err(url, "401 without a WWW-Authenticate challenge"))?
                        .to_owned();
                    let auth = self.authenticate(url, &h)?;
                    *self.auth.lock().expect("not poisoned") = Some(auth);
                }
                429 | 500..=599 if attempt < self.attempts => {
                    tracing::debug!(url, status, attempt, "registry busy; retrying");
                    std::thread::sleep(Duration::from_millis(200 << attempt.min(5)));
                }
                401 => return Err(Self::err(url, "authentication failed (http 401)")),
                404 => return Err(Self::err(url, "not found (http 404)")),
                s => {
                    let detail = error_detail(resp);
                    return Err(Self::err(url, format!("{method}: http {s}{detail}")));
                }
            }
        }
    }

    fn basic(&self) -> Option<String> {
        self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// Answer a challenge: basic credentials, or a bearer token from the
    /// realm named by the challenge.
    fn authenticate(&self, url: &str, header: &str) -> Result<String> {
        let c = parse_challenge(header)
            .ok_or_else(|| Self::err(url, format!("unparsable challenge {header:?}")))?;
        match c.scheme.as_str() {
            "basic" => self.basic().ok_or_else(|| {
                Self::err(
                    url,
                    "registry wants basic auth and no credentials were given",
                )
            }),
            "bearer" => {
                let realm = c
                    .params
                    .get("realm")
                    .ok_or_else(|| Self::err(url, "bearer challenge without a realm"))?;
                let mut req = self.agent.get(realm);
                if let Some(s) = c.params.get("service") {
                    req = req.query("service", s);
                }
                let scope = c
                    .params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                req = req.query("scope", &scope);
                for extra in self.scopes.iter().filter(|s| **s != scope) {
                    req = req.query("scope", extra);
                }
                if let Some(b) = self.basic() {
                    req = req.header("Authorization", b);
                }
                let mut resp = req.call().map_err(|e| Self::err(realm, e.to_string()))?;
                if resp.status().as_u16() != 200 {
                    return Err(Self::err(
                        realm,
                        format!("token request refused (http {})", resp.status().as_u16()),
                    ));
                }
                #[derive(serde::Deserialize)]
                struct Tok {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .map_err(|e| Self::err(realm, e.to_string()))?;
                let t: Tok = serde_json::from_slice(&body)
                    .map_err(|e| Self::err(realm, format!("bad token response: {e}")))?;
                let tok = t
                    .token
                    .or(t.access_token)
                    .ok_or_else(|| Self::err(realm, "token response without a token"))?;
                Ok(format!("Bearer {tok}"))
            }
            other => Err(Self::err(url, format!("unsupported auth scheme {other}"))),
        }
    }

    /// Fetch a manifest or index by tag or digest. Returns the bytes, their
    /// digest and media type. When `object` is a digest, the bytes must
    /// hash to it.
    pub fn manifest(&self, object: &str) -> Result<(Vec<u8>, Digest, String)> {
        let url = format!("{}/v2/{}/manifests/{}", self.base, self.repository, object);
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        let mut resp = self.get(&url, &accept)?;
        let header_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_owned());
        let claimed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok());
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| Self::err(&url, e.to_string()))?;
        let digest = Digest::of(&body);
        let expected = object.parse::<Digest>().ok().or(claimed);
        if let Some(exp) = expected {
            if exp != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {url}"),
                    expected: exp,
                    actual: digest,
                });
            }
        }
        let media_type = oci::declared_media_type(&body)
            .or(header_type)
            .unwrap_or_else(|| OCI_MANIFEST.to_owned());
        Ok((body, digest, media_type))
    }

    /// Download a blob into the store (skipped when present), verifying
    /// digest and size. `on_bytes` sees each chunk's length.
    pub fn blob(
        &self,
        store: &ImageStore,
        digest: &Digest,
        size: u64,
        on_bytes: &dyn Fn(u64),
    ) -> Result<()> {
        if store.content().contains(digest) {
            on_bytes(size);
            return Ok(());
        }
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repository, digest);
        let mut last_err = None;
        for _ in 0..self.attempts {
            let resp = self.get(&url, "*/*")?;
            let reader = resp.into_body().into_reader().take(size + 1);
            let counted = Counting {
                inner: reader,
                on_bytes,
            };
            match store
                .content()
                .put_reader(counted, Some(digest), Some(size))
            {
                Ok(_) => return Ok(()),
                // A connection cut mid-blob is worth another try; a wrong
                // digest or size is not.
                Err(e @ Error::Io { .. }) => {
                    tracing::debug!(
                        url,
                        error = &e as &dyn std::error::Error,
                        "blob download interrupted; retrying"
                    );
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Self::err(&url, "download failed")))
    }
}

/// The first error of a registry's JSON error body (`{"errors":[{"code":..,
/// "message":..}]}`), as `": CODE message"`, or nothing.
fn error_detail(mut resp: ureq::http::Response<ureq::Body>) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(body) = resp.body_mut().with_config().limit(64 << 10).read_to_vec() else {
        return String::new();
    };
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) => e
            .errors
            .first()
            .map(|i| {
                format!(
                    ": {} {}",
                    i.code.as_deref().unwrap_or(""),
                    i.message.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

struct Counting<'a, R> {
    inner: R,
    on_bytes: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

impl ImageStore {
    /// Pull `reference` (by tag or digest) from its registry: manifest (via
    /// the platform's entry when it is an index), config and layers, each
    /// verified against its digest; blobs already present are skipped.
    /// Records the image under the reference (or `opts.name`).
    pub fn pull(&self, reference: &str, opts: &PullOptions) -> Result<ImageRecord> {
        let r: Reference = reference.parse()?;
        let span = tracing::info_span!("pull", reference = %r);
        let _g = span.enter();
        let _gc = self.gc_guard(false)?;
        let client = RegistryClient::new(&r, opts);
        let (body, digest, media_type) = client.manifest(&r.object())?;
        self.content().put_bytes(&body)?;
        let (manifest_digest, index) = if oci::is_index(&media_type) {
            let idx = oci::parse_index(&body, &format!("index {digest}"))?;
            let m = oci::select_manifest(&idx, &opts.platform, &format!("index {digest}"))?;
            let md = oci::digest_of(m)?;
            let (mbody, got, _) = client.manifest(&md.to_string())?;
            debug_assert_eq!(got, md);
            self.content().put_bytes(&mbody)?;
            (md, Some(digest))
        } else {
            (digest, None)
        };
        let m = oci::parse_manifest(
            &self.content().read_blob(&manifest_digest)?,
            &format!("manifest {manifest_digest}"),
        )?;
        let mut blobs = vec![(oci::digest_of(m.config())?, m.config().size())];
        for l in m.layers() {
            blobs.push((oci::digest_of(l)?, l.size()));
        }
        transfer_blobs(
            &blobs,
            opts.jobs,
            opts.progress.as_ref(),
            |(d, size), on_bytes| client.blob(self, d, *size, on_bytes),
        )?;
        let name = opts.name.clone().unwrap_or_else(|| r.to_string());
        self.tag(&name, &manifest_digest, index.as_ref())
    }
}

/// Moves `blobs` with up to `jobs` threads: `work` transfers one, reporting its bytes as
/// they go through the callback it is given. Progress reaches `progress` as (bytes so
/// far, blobs done). The first error stops handing out blobs and is returned; otherwise
/// each blob's outcome, in `blobs` order, and the bytes reported.
pub(crate) fn transfer_blobs<T: Sync, R: Send>(
    blobs: &[T],
    jobs: usize,
    progress: Option<&ProgressFn>,
    work: impl Fn(&T, &dyn Fn(u64)) -> Result<R> + Sync,
) -> Result<(Vec<R>, u64)> {
    let bytes = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(blobs.len()));
    let errors = Mutex::new(Vec::new());
    let report = |b: u64, d: u64| {
        if let Some(p) = progress {
            p(Progress {
                bytes: b,
                entries: d,
            });
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, blobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(blob) = blobs.get(i) else { break };
                let on_bytes = |n: u64| {
                    let b = bytes.fetch_add(n, Ordering::Relaxed) + n;
                    report(b, done.load(Ordering::Relaxed));
                };
                match work(blob, &on_bytes) {
                    Ok(r) => {
                        results.lock().expect("not poisoned").push((i, r));
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        report(bytes.load(Ordering::Relaxed), n);
                    }
                    Err(e) => {
                        errors.lock().expect("not poisoned").push(e);
                        // Stop handing out more work.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if let Some(e) = errors
        .into_inner()
        .expect("not poisoned")
        .into_iter()
        .next()
    {
        return Err(e);
    }
    let mut results = results.into_inner().expect("not poisoned");
    results.sort_by_key(|(i, _)| *i);
    Ok((
        results.into_iter().map(|(_, r)| r).collect(),
        bytes.into_inner(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r: Reference = "localhost:5000/a/b:v1".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.to_string(), "localhost:5000/a/b:v1");
        let d = Digest::of(b"x");
        let r: Reference = format!("127.0.0.1:5000/x@{d}").parse().unwrap();
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.tag, None);
        assert_eq!(r.object(), d.to_string());
        assert!("Upper/Case".parse::<Reference>().is_err());
        assert!("x@sha256:zz".parse::<Reference>().is_err());
        assert!("localhost:5000/x:bad/tag:".parse::<Reference>().is_err());
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
    }
}
