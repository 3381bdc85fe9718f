//! Push an image to an OCI distribution registry.
//!
//! Blobs first (config and layers), then the manifest, then (when the
//! image came from an index whose manifests are all in the store) the
//! index, under the tag. For each blob:
//!
//! 1. `HEAD /v2/<repo>/blobs/<digest>`: a blob the registry has is skipped;
//! 2. with a mount source (another repository of the same registry),
//!    `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<source>`: a
//!    `201` means the registry linked the blob without any upload; a `202`
//!    opens an ordinary upload session instead;
//! 3. otherwise `POST /v2/<repo>/blobs/uploads/` opens a session, and the
//!    blob goes up in one `PUT <location>?digest=` (monolithic, blobs up to
//!    [`PushOptions::chunk_size`]) or as `PATCH` chunks with a
//!    `Content-Range` each, closed by an empty `PUT <location>?digest=`.
//!
//! The registry client (auth negotiation, basic and bearer tokens, retries)
//! is the one [`ImageStore::pull`] uses; a push asks the token endpoint for
//! `pull,push` on the repository and `pull` on the mount source.

use std::io::Read;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::ImageStore;
use crate::oci;
use crate::registry::{transfer_blobs, PullOptions, Reference, RegistryClient};
use crate::unpack::ProgressFn;

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    /// User name and password (basic auth, or to obtain a bearer token).
    pub credentials: Option<(String, String)>,
    /// Talk plain HTTP instead of HTTPS (local registries).
    pub plain_http: bool,
    /// Attempts per request on transport errors and 5xx / 429 answers.
    pub attempts: u32,
    /// Blobs uploaded at the same time.
    pub jobs: usize,
    /// Blobs up to this size go up in one `PUT`; bigger ones as `PATCH`
    /// chunks of this size (each held in memory once).
    pub chunk_size: usize,
    /// A repository of the destination registry to mount blobs from
    /// (`?mount=&from=`). Default: the repository of the image's own name,
    /// when it is on the same registry.
    pub mount_from: Option<String>,
    /// Called with uploaded bytes and finished blobs (as `entries`).
    pub progress: Option<ProgressFn>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            credentials: None,
            plain_http: false,
            attempts: 4,
            jobs: 3,
            chunk_size: 16 << 20,
            mount_from: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "***")),
            )
            .field("plain_http", &self.plain_http)
            .field("attempts", &self.attempts)
            .field("jobs", &self.jobs)
            .field("chunk_size", &self.chunk_size)
            .field("mount_from", &self.mount_from)
            .finish()
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Where it went (`registry/repository:tag`).
    pub reference: String,
    /// Digest of what the tag now names (the manifest, or the index).
    pub digest: Digest,
    /// Digest of the image manifest.
    pub manifest: Digest,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry had already (skipped after a `HEAD`).
    pub existing: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// How one blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Existing,
    Mounted,
    Uploaded,
}

/// A registry client with the push protocol on top.
struct Pusher<'a> {
    client: RegistryClient,
    store: &'a ImageStore,
    chunk: usize,
    mount_from: Option<String>,
}

impl Pusher<'_> {
    fn blob_url(&self, digest: &Digest) -> String {
        format!(
            "{}/v2/{}/blobs/{digest}",
            self.client.base(),
            self.client.repository()
        )
    }

    fn uploads_url(&self) -> String {
        format!(
            "{}/v2/{}/blobs/uploads/",
            self.client.base(),
            self.client.repository()
        )
    }

    /// The `Location` of an upload session, made absolute.
    fn location(&self, url: &str, resp: &ureq::http::Response<ureq::Body>) -> Result<String> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Registry {
                url: url.to_owned(),
                reason: "upload answer without a Location".into(),
            })?;
        Ok(if loc.starts_with('/') {
            format!("{}{loc}", self.client.base())
        } else {
            loc.to_owned()
        })
    }

    fn with_query(loc: &str, query: &str) -> String {
        let sep = if loc.contains('?') { '&' } else { '?' };
        format!("{loc}{sep}{query}")
    }

    fn push_blob(&self, digest: &Digest, on_bytes: &dyn Fn(u64)) -> Result<Outcome> {
        let url = self.blob_url(digest);
        let head = self.client.send("HEAD", &url, &[], None, &[200, 404])?;
        if head.status().as_u16() == 200 {
            return Ok(Outcome::Existing);
        }
        // Open a session, mounting when a source repository is known.
        let start = match &self.mount_from {
            Some(from) if from != self.client.repository() => format!(
                "{}?mount={digest}&from={}",
                self.uploads_url(),
                from.replace('/', "%2F")
            ),
            _ => self.uploads_url(),
        };
        let resp = self.client.send(
            "POST",
            &start,
            &[("Content-Length", "0")],
            Some(&[]),
            &[201, 202],
        )?;
        if resp.status().as_u16() == 201 {
            return Ok(Outcome::Mounted);
        }
        let mut loc = self.location(&start, &resp)?;
        let size = self.store.content().blob_size(digest)?;
        let mut file = self.store.content().open_blob(digest)?;
        let path = self.store.content().blob_path(digest);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let digest_q = format!("digest={digest}");
        let octet = [("Content-Type", "application/octet-stream")];
        if size <= self.chunk as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(io)?;
            let put = Self::with_query(&loc, &digest_q);
            self.client.send("PUT", &put, &octet, Some(&data), &[201])?;
            on_bytes(size);
            return Ok(Outcome::Uploaded);
        }
        let mut buf = vec![0u8; self.chunk];
        let mut sent = 0u64;
        loop {
            let mut n = 0;
            while n < buf.len() {
                match file.read(&mut buf[n..]).map_err(io)? {
                    0 => break,
                    k => n += k,
                }
            }
            if n == 0 {
                break;
            }
            let range = format!("{}-{}", sent, sent + n as u64 - 1);
            let resp = self.client.send(
                "PATCH",
                &loc,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                Some(&buf[..n]),
                &[202],
            )?;
            loc = self.location(&loc, &resp)?;
            sent += n as u64;
            on_bytes(n as u64);
        }
        if sent != size {
            return Err(Error::SizeMismatch {
                what: format!("blob {digest}"),
                expected: size,
                actual: sent,
            });
        }
        let put = Self::with_query(&loc, &digest_q);
        self.client
            .send("PUT", &put, &[("Content-Length", "0")], Some(&[]), &[201])?;
        Ok(Outcome::Uploaded)
    }

    fn put_manifest(&self, object: &str, body: &[u8], media_type: &str) -> Result<Digest> {
        let url = format!(
            "{}/v2/{}/manifests/{object}",
            self.client.base(),
            self.client.repository()
        );
        let resp = self.client.send(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Some(body),
            &[201],
        )?;
        let digest = Digest::of(body);
        let claimed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok());
        if let Some(c) = claimed {
            if c != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {url}"),
                    expected: digest,
                    actual: c,
                });
            }
        }
        Ok(digest)
    }
}

/// An index and its manifests (digest, bytes, media type).
type IndexParts = (Vec<u8>, Vec<(Digest, Vec<u8>, String)>);

impl ImageStore {
    /// The index `d` with all its manifests, when the store holds every
    /// one of them and all their blobs.
    fn complete_index(&self, d: &Digest) -> Result<Option<IndexParts>> {
        let body = self.content().read_blob(d)?;
        let idx = oci::parse_index(&body, &format!("index {d}"))?;
        let mut manifests = Vec::new();
        for m in idx.manifests() {
            let md = oci::digest_of(m)?;
            if !self.content().contains(&md) {
                tracing::info!(index = %d, missing = %md, "the store lacks a platform's manifest: pushing the image manifest alone");
                return Ok(None);
            }
            let b = self.content().read_blob(&md)?;
            let parsed = oci::parse_manifest(&b, &format!("manifest {md}"))?;
            let mut needed = vec![oci::digest_of(parsed.config())?];
            for l in parsed.layers() {
                needed.push(oci::digest_of(l)?);
            }
            if let Some(missing) = needed.iter().find(|x| !self.content().contains(x)) {
                tracing::info!(index = %d, %missing, "the store lacks a platform's blob: pushing the image manifest alone");
                return Ok(None);
            }
            manifests.push((md, b, m.media_type().to_string()));
        }
        Ok(Some((body, manifests)))
    }

    /// Push the image `name` to `dest` (`registry/repository[:tag]`; the
    /// image's own name when `None`): every blob the registry lacks, then
    /// the manifest under the tag (and the index, when the image came from
    /// one whose manifests are all in the store). Pull it back by the
    /// returned digest.
    ///
    /// ```no_run
    /// use kcore_image::{ImageStore, PushOptions};
    /// let images = ImageStore::open("/var/lib/kcore/images")?;
    /// let opts = PushOptions { plain_http: true, ..Default::default() };
    /// let report = images.push("web:v1", Some("127.0.0.1:5000/team/web:v1"), &opts)?;
    /// println!("pushed {}", report.digest);
    /// Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push(&self, name: &str, dest: Option<&str>, opts: &PushOptions) -> Result<PushReport> {
        let img = self.inspect(name)?;
        let target = dest.unwrap_or(&img.record.name);
        let r: Reference = target.parse()?;
        let span = tracing::info_span!("push", image = %img.record.name, dest = %r);
        let _g = span.enter();
        let _gc = self.gc_guard(false)?;
        // Mount from the repository the image came from, on the same registry.
        let mount_from = opts.mount_from.clone().or_else(|| {
            let own: Reference = img.record.name.parse().ok()?;
            (own.registry == r.registry && own.repository != r.repository).then_some(own.repository)
        });
        let mut scopes = vec![format!("repository:{}:pull,push", r.repository)];
        if let Some(from) = &mount_from {
            scopes.push(format!("repository:{from}:pull"));
        }
        let pull_opts = PullOptions {
            credentials: opts.credentials.clone(),
            plain_http: opts.plain_http,
            attempts: opts.attempts,
            ..Default::default()
        };
        let pusher = Pusher {
            client: RegistryClient::new(&r, &pull_opts).with_scopes(scopes),
            store: self,
            chunk: opts.chunk_size.max(1),
            mount_from,
        };
        // The index goes too when the store holds every platform's image
        // (manifest, config and layers); otherwise the manifest alone.
        let index = match &img.record.index {
            Some(d) => self.complete_index(d)?,
            None => None,
        };
        let mut blobs = vec![img.record.config.clone()];
        blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
        if let Some((_, manifests)) = &index {
            for (_, body, _) in manifests {
                let m = oci::parse_manifest(body, "manifest")?;
                blobs.push(oci::digest_of(m.config())?);
                for l in m.layers() {
                    blobs.push(oci::digest_of(l)?);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        blobs.retain(|d| seen.insert(d.clone()));

        let (outcomes, bytes) =
            transfer_blobs(&blobs, opts.jobs, opts.progress.as_ref(), |d, on_bytes| {
                pusher.push_blob(d, on_bytes)
            })?;
        let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
        let (uploaded, existing, mounted) = (
            count(Outcome::Uploaded),
            count(Outcome::Existing),
            count(Outcome::Mounted),
        );
        let tag = r.tag.clone().unwrap_or_else(|| "latest".to_owned());
        let object = match &r.digest {
            Some(d) => d.to_string(),
            None => tag,
        };
        let mbody = self.content().read_blob(&img.record.manifest)?;
        let mtype = oci::declared_media_type(&mbody).unwrap_or_else(|| oci::OCI_MANIFEST.into());
        let digest = match index {
            None => pusher.put_manifest(&object, &mbody, &mtype)?,
            Some((body, manifests)) => {
                for (md, b, media_type) in &manifests {
                    pusher.put_manifest(&md.to_string(), b, media_type)?;
                }
                let itype =
                    oci::declared_media_type(&body).unwrap_or_else(|| oci::OCI_INDEX.into());
                pusher.put_manifest(&object, &body, &itype)?
            }
        };
        Ok(PushReport {
            reference: r.to_string(),
            digest,
            manifest: img.record.manifest.clone(),
            uploaded,
            existing,
            mounted,
            bytes,
        })
    }
}
