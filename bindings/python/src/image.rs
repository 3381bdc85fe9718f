//! `kcore.image.Store`: the OCI image store of kcore-image.

use std::fs::File;
use std::path::{Path, PathBuf};

use kcore_image::{
    ImageRecord, ImageStore, ImportOptions, Platform, PullOptions, PushOptions, SaveFormat,
    UnpackOptions,
};
use kcore_overlay::LayerStore;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use serde_json::json;

use crate::convert::{ser_to_py, to_py};
use crate::errors;
use crate::progress::Progress;

/// An image store under one directory: blobs, names, and unpack markers.
#[pyclass(module = "kcore.image", name = "Store", frozen)]
pub(crate) struct Store {
    inner: ImageStore,
}

fn record(py: Python<'_>, r: &ImageRecord) -> PyResult<Py<PyAny>> {
    Ok(ser_to_py(py, r)?.unbind())
}

fn records(py: Python<'_>, rs: &[ImageRecord]) -> PyResult<Py<PyList>> {
    let list = PyList::empty(py);
    for r in rs {
        list.append(record(py, r)?)?;
    }
    Ok(list.unbind())
}

fn credentials(
    username: Option<String>,
    password: Option<String>,
) -> PyResult<Option<(String, String)>> {
    match (username, password) {
        (Some(u), Some(p)) => Ok(Some((u, p))),
        (None, None) => Ok(None),
        _ => Err(PyValueError::new_err("username and password go together")),
    }
}

fn platform(p: Option<&str>) -> PyResult<Platform> {
    match p {
        None => Ok(Platform::default()),
        Some(s) => s.parse().map_err(errors::image),
    }
}

/// The kind of an import source: an OCI image layout or a `docker save`
/// archive, as a directory or a tar of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Oci,
    Docker,
}

fn detect_format(path: &Path) -> PyResult<Format> {
    if path.is_dir() {
        if path.join("oci-layout").exists() {
            return Ok(Format::Oci);
        }
        if path.join("manifest.json").exists() {
            return Ok(Format::Docker);
        }
    } else {
        let file = File::open(path)
            .map_err(|e| errors::ImageError::new_err(format!("opening {}: {e}", path.display())))?;
        let mut archive = tar::Archive::new(file);
        let entries = archive
            .entries()
            .map_err(|e| errors::ImageError::new_err(format!("reading {}: {e}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                errors::ImageError::new_err(format!("reading {}: {e}", path.display()))
            })?;
            let name = entry.path().map(|p| p.into_owned()).unwrap_or_default();
            let name = name.strip_prefix("./").unwrap_or(&name);
            if name == Path::new("oci-layout") {
                return Ok(Format::Oci);
            }
            if name == Path::new("manifest.json") {
                return Ok(Format::Docker);
            }
        }
    }
    Err(errors::ImageError::new_err(format!(
        "{} is neither an OCI image layout nor a docker archive (no oci-layout or manifest.json)",
        path.display()
    )))
}

#[pymethods]
impl Store {
    /// Opens (creating if needed) the image store under `path`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| ImageStore::open(&path))
            .map_err(errors::image)?;
        Ok(Store { inner })
    }

    /// The store's root directory.
    #[getter]
    fn root(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Every image the store knows, as dicts (`name`, `manifest`, `config`,
    /// `created`, and `index` when it came from an index).
    fn list(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let rs = py.detach(|| self.inner.list()).map_err(errors::image)?;
        records(py, &rs)
    }

    /// The record of one image, by name or manifest digest.
    fn get(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let r = py.detach(|| self.inner.get(name)).map_err(errors::image)?;
        record(py, &r)
    }

    /// An image's record, parsed manifest and config, and its layers
    /// (`digest`, `media_type`, `size`, `diff_id`, `chain_id`), bottom first.
    fn inspect(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let img = py
            .detach(|| self.inner.inspect(name))
            .map_err(errors::image)?;
        let layers: Vec<_> = img
            .layers
            .iter()
            .map(|l| {
                json!({
                    "digest": l.digest.to_string(),
                    "media_type": l.media_type,
                    "size": l.size,
                    "diff_id": l.diff_id.to_string(),
                    "chain_id": l.chain_id.to_string(),
                })
            })
            .collect();
        let value = json!({
            "record": serde_json::to_value(&img.record).map_err(|e| PyValueError::new_err(e.to_string()))?,
            "manifest": serde_json::to_value(&img.manifest).map_err(|e| PyValueError::new_err(e.to_string()))?,
            "config": serde_json::to_value(&img.config).map_err(|e| PyValueError::new_err(e.to_string()))?,
            "layers": layers,
        });
        Ok(to_py(py, &value)?.unbind())
    }

    /// Imports an OCI image layout or a `docker save` archive (a directory or
    /// a tar of one); `format` is `"oci"`, `"docker"` or `None` to detect it.
    /// Returns the records of the images imported.
    #[pyo3(signature = (path, *, name=None, format=None, platform=None))]
    fn import_(
        &self,
        py: Python<'_>,
        path: PathBuf,
        name: Option<String>,
        format: Option<&str>,
        platform: Option<&str>,
    ) -> PyResult<Py<PyList>> {
        let opts = ImportOptions {
            name,
            platform: self::platform(platform)?,
        };
        let format = match format {
            None => py.detach(|| detect_format(&path))?,
            Some("oci") => Format::Oci,
            Some("docker") => Format::Docker,
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "format must be \"oci\", \"docker\" or None, not {other:?}"
                )))
            }
        };
        let rs = py
            .detach(|| match format {
                Format::Oci => self.inner.import_oci_layout(&path, &opts),
                Format::Docker => self.inner.import_docker_archive(&path, &opts),
            })
            .map_err(errors::image)?;
        records(py, &rs)
    }

    /// Pulls `reference` from its registry and returns the image's record.
    /// `progress(bytes, blobs)` is called as blobs download.
    #[pyo3(signature = (reference, *, name=None, platform=None, plain_http=false, username=None, password=None, jobs=3, attempts=4, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn pull(
        &self,
        py: Python<'_>,
        reference: &str,
        name: Option<String>,
        platform: Option<&str>,
        plain_http: bool,
        username: Option<String>,
        password: Option<String>,
        jobs: usize,
        attempts: u32,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let progress = Progress::new(progress)?;
        let opts = PullOptions {
            platform: self::platform(platform)?,
            credentials: credentials(username, password)?,
            plain_http,
            attempts: attempts.max(1),
            jobs: jobs.max(1),
            name,
            progress: progress.image_fn(),
        };
        let result = py.detach(|| self.inner.pull(reference, &opts));
        progress.finish()?;
        let r = result.map_err(errors::image)?;
        record(py, &r)
    }

    /// Unpacks an image's layers into the layer store at `layers` (one diff
    /// directory per layer, named by chain ID; layers already there are
    /// reused), `jobs` layers at a time. Returns `layer_ids` (bottom first),
    /// `top`, `paths` (each layer's diff directory) and `unpacked` (how many
    /// were unpacked now). `progress(bytes, entries)` is called as it goes.
    #[pyo3(signature = (name, layers, *, jobs=2, progress=None))]
    fn unpack(
        &self,
        py: Python<'_>,
        name: &str,
        layers: PathBuf,
        jobs: usize,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let progress = Progress::new(progress)?;
        let mut opts = UnpackOptions::new();
        if let Some(f) = progress.image_fn() {
            opts = opts.progress(f);
        }
        let result = py.detach(|| -> PyResult<_> {
            let store = LayerStore::open(&layers).map_err(errors::overlay)?;
            let unpacked = self
                .inner
                .unpack(name, &store, &opts, jobs.max(1))
                .map_err(errors::image)?;
            let paths = unpacked
                .layer_ids
                .iter()
                .map(|id| store.diff_path(id).map_err(errors::overlay))
                .collect::<PyResult<Vec<_>>>()?;
            Ok((unpacked, paths))
        });
        progress.finish()?;
        let (unpacked, paths) = result?;
        let value = json!({
            "layer_ids": unpacked.layer_ids,
            "top": unpacked.top(),
            "paths": paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
            "unpacked": unpacked.unpacked,
        });
        Ok(to_py(py, &value)?.unbind())
    }

    /// Builds an image from the Dockerfile at `dockerfile` with the build context
    /// directory `context`, as `kcore image build` does (BuildKit's Dockerfile
    /// semantics). RUN steps run in containers on overlay snapshots in the layer
    /// store at `layers` (root needed). `progress(kind, text)` sees each step:
    /// `"step"`, `"cached"`, `"output"` (a line a RUN step printed), `"warning"`.
    /// Returns `record` (the stored image), `layers_built` and `steps_cached`.
    /// A RUN step gets only loopback unless it asks for `--network=default` (a
    /// NAT'd bridge, `bridge_name` on `bridge_subnet`, by default `kcore-build0` on
    /// `10.213.0.0/24`) or `--network=host`.
    #[pyo3(signature = (
        dockerfile,
        context,
        tag=None,
        *,
        layers,
        build_args=None,
        target=None,
        no_cache=false,
        platform=None,
        progress=None,
        bridge_name=None,
        bridge_subnet=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        py: Python<'_>,
        dockerfile: PathBuf,
        context: PathBuf,
        tag: Option<String>,
        layers: PathBuf,
        build_args: Option<std::collections::BTreeMap<String, String>>,
        target: Option<String>,
        no_cache: bool,
        platform: Option<String>,
        progress: Option<Bound<'_, PyAny>>,
        bridge_name: Option<String>,
        bridge_subnet: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let mut bridge = kcore_build::BridgeNetwork::default();
        if let Some(n) = bridge_name {
            bridge.bridge = n;
        }
        if let Some(c) = bridge_subnet {
            bridge.subnet = c
                .parse()
                .map_err(|e| PyValueError::new_err(format!("bridge_subnet {c:?}: {e}")))?;
        }
        let text = std::fs::read_to_string(&dockerfile)
            .map_err(|e| PyValueError::new_err(format!("reading {}: {e}", dockerfile.display())))?;
        let platform = match platform.as_deref() {
            Some(p) => Some(self::platform(Some(p))?),
            None => None,
        };
        let progress = Progress::new(progress)?;
        let opts = kcore_build::BuildOptions {
            dockerfile: text,
            context,
            tag,
            build_args: build_args.unwrap_or_default(),
            target,
            no_cache,
            platform,
            progress: progress.build_fn(),
            bridge,
            ..kcore_build::BuildOptions::default()
        };
        let result = py.detach(|| -> PyResult<_> {
            let store = LayerStore::open(&layers).map_err(errors::overlay)?;
            kcore_build::Builder::new(&self.inner, &store)
                .build(&opts)
                .map_err(errors::build)
        });
        progress.finish()?;
        let r = result?;
        let value = json!({
            "record": r.record,
            "layers_built": r.layers_built,
            "steps_cached": r.steps_cached,
        });
        Ok(to_py(py, &value)?.unbind())
    }

    /// Applies all of an image's layers, in order, onto `dest` (which must not
    /// exist): a plain root filesystem, whiteouts applied. `dest` is removed
    /// on failure.
    #[pyo3(signature = (name, dest, *, progress=None))]
    fn flatten(
        &self,
        py: Python<'_>,
        name: &str,
        dest: PathBuf,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let progress = Progress::new(progress)?;
        let mut opts = UnpackOptions::new();
        if let Some(f) = progress.image_fn() {
            opts = opts.progress(f);
        }
        let result = py.detach(|| self.inner.flatten(name, &dest, &opts));
        progress.finish()?;
        result.map_err(errors::image)
    }

    /// Gives the image `source` (a name or manifest digest) another name.
    fn tag(&self, py: Python<'_>, source: &str, name: &str) -> PyResult<Py<PyAny>> {
        let r = py
            .detach(|| self.inner.tag_image(source, name))
            .map_err(errors::image)?;
        record(py, &r)
    }

    /// Pushes the image `name` to `dest` (`registry/repository[:tag]`, the
    /// image's own name when `None`). Returns `reference`, `digest`,
    /// `manifest`, `uploaded`, `existing`, `mounted` and `bytes`.
    /// `progress(bytes, blobs)` is called as blobs upload.
    #[pyo3(signature = (name, dest=None, *, plain_http=false, username=None, password=None, jobs=3, attempts=4, chunk_size=16777216, mount_from=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        py: Python<'_>,
        name: &str,
        dest: Option<&str>,
        plain_http: bool,
        username: Option<String>,
        password: Option<String>,
        jobs: usize,
        attempts: u32,
        chunk_size: usize,
        mount_from: Option<String>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let progress = Progress::new(progress)?;
        let opts = PushOptions {
            credentials: credentials(username, password)?,
            plain_http,
            attempts: attempts.max(1),
            jobs: jobs.max(1),
            chunk_size: chunk_size.max(1),
            mount_from,
            progress: progress.image_fn(),
        };
        let result = py.detach(|| self.inner.push(name, dest, &opts));
        progress.finish()?;
        let r = result.map_err(errors::image)?;
        let value = json!({
            "reference": r.reference,
            "digest": r.digest.to_string(),
            "manifest": r.manifest.to_string(),
            "uploaded": r.uploaded,
            "existing": r.existing,
            "mounted": r.mounted,
            "bytes": r.bytes,
        });
        Ok(to_py(py, &value)?.unbind())
    }

    /// Saves the images `names` to `dest`: a directory when it exists or
    /// ends in `/`, a tar file otherwise. `format` is `"oci"` (an OCI image
    /// layout) or `"docker-archive"` (what `docker load` / `podman load` read).
    #[pyo3(signature = (names, dest, *, format="oci"))]
    fn save(
        &self,
        py: Python<'_>,
        names: Vec<String>,
        dest: PathBuf,
        format: &str,
    ) -> PyResult<()> {
        let format: SaveFormat = format.parse().map_err(errors::image)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        py.detach(|| self.inner.save(&names, &dest, format))
            .map_err(errors::image)
    }

    /// Forgets an image name; returns its record (blobs stay until `prune`).
    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let r = py
            .detach(|| self.inner.remove(name))
            .map_err(errors::image)?;
        record(py, &r)
    }

    /// Deletes blobs no image references and, given a layer store directory,
    /// unpacked layers no image references. Returns `blobs`, `blob_bytes`,
    /// `layers`.
    #[pyo3(signature = (layers=None))]
    fn prune(&self, py: Python<'_>, layers: Option<PathBuf>) -> PyResult<Py<PyAny>> {
        let report = py.detach(|| -> PyResult<_> {
            let store = layers
                .as_ref()
                .map(LayerStore::open)
                .transpose()
                .map_err(errors::overlay)?;
            self.inner.prune(store.as_ref()).map_err(errors::image)
        })?;
        let value = json!({
            "blobs": report.blobs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "blob_bytes": report.blob_bytes,
            "layers": report.layers,
        });
        Ok(to_py(py, &value)?.unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "kcore.image.Store({:?})",
            self.inner.root().display().to_string()
        )
    }
}

/// Adds the image classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Store>()?;
    Ok(())
}
