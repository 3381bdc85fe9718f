//! OCI / Docker document helpers: media types, platform choice, parsing.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Whether a media type names an index (OCI index or Docker manifest list).
pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Whether a media type names an image manifest.
pub(crate) fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// An `os/architecture[/variant]` platform to pick from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture, in Go's naming (`amd64`, `arm64`).
    pub architecture: String,
    /// Optional variant (`v8`).
    pub variant: Option<String>,
}

impl Default for Platform {
    /// `linux/amd64`.
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::Invalid {
            what: format!("platform {s:?}"),
            reason: "expected os/architecture[/variant]".into(),
        };
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: Some((*v).into()),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Whether an index entry's platform matches. A missing variant on
    /// either side matches any variant.
    pub(crate) fn matches(&self, d: &Descriptor) -> bool {
        let Some(p) = d.platform() else { return false };
        let v = serde_json::to_value(p).unwrap_or_default();
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        if get("os").as_deref() != Some(self.os.as_str())
            || get("architecture").as_deref() != Some(self.architecture.as_str())
        {
            return false;
        }
        match (&self.variant, get("variant")) {
            (Some(want), Some(have)) => want == &have,
            _ => true,
        }
    }
}

/// Pick the manifest for `platform` from an index.
pub(crate) fn select_manifest<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    let manifests = index.manifests();
    manifests
        .iter()
        .find(|d| is_manifest(d.media_type().as_ref()) && platform.matches(d))
        .or_else(|| {
            // An index of one manifest without platform information.
            match manifests.as_slice() {
                [only] if only.platform().is_none() => Some(only),
                _ => None,
            }
        })
        .ok_or_else(|| Error::NoMatchingPlatform {
            platform: platform.to_string(),
            what: what.to_owned(),
        })
}

pub(crate) fn parse_index(data: &[u8], what: &str) -> Result<ImageIndex> {
    ImageIndex::from_reader(data).map_err(|e| Error::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn parse_manifest(data: &[u8], what: &str) -> Result<ImageManifest> {
    ImageManifest::from_reader(data).map_err(|e| Error::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn parse_config(data: &[u8], what: &str) -> Result<ImageConfiguration> {
    ImageConfiguration::from_reader(data).map_err(|e| Error::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// The media type a JSON document declares about itself, if any.
pub(crate) fn declared_media_type(data: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(data).ok()?;
    p.media_type.or_else(|| {
        if p.manifests.is_some() {
            Some(OCI_INDEX.to_owned())
        } else if p.layers.is_some() {
            Some(OCI_MANIFEST.to_owned())
        } else {
            None
        }
    })
}

/// Our digest type from oci-spec's.
pub(crate) fn digest_of(d: &Descriptor) -> Result<Digest> {
    d.digest().to_string().parse()
}

/// The DiffIDs of a config.
pub(crate) fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|s| s.parse())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_and_print() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(Platform::default().to_string(), "linux/amd64");
        assert!("linux".parse::<Platform>().is_err());
    }

    #[test]
    fn picks_the_platform() {
        let d = |arch: &str, dig: char| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": format!("sha256:{}", dig.to_string().repeat(64)),
                "size": 1,
                "platform": {"os": "linux", "architecture": arch}
            })
        };
        let idx = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [d("arm64", 'a'), d("amd64", 'b')]
        });
        let idx = parse_index(idx.to_string().as_bytes(), "test").unwrap();
        let m = select_manifest(&idx, &Platform::default(), "test").unwrap();
        assert!(m.digest().to_string().ends_with("bbbb"));
        let s390: Platform = "linux/s390x".parse().unwrap();
        assert!(matches!(
            select_manifest(&idx, &s390, "test"),
            Err(Error::NoMatchingPlatform { .. })
        ));
    }
}
