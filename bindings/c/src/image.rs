//! The image store: open, import (OCI layout, docker archive), pull, push, save (OCI
//! layout or docker-archive), build from a Dockerfile, unpack, list, inspect, remove.

use std::ffi::{c_char, c_void};
use std::path::Path;
use std::sync::Arc;

use kcore_image::{
    ImageStore, ImportOptions, Platform, Progress, PullOptions, PushOptions, SaveFormat,
    UnpackOptions,
};
use kcore_overlay::LayerStore;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ffi::{
    boundary, chain, clear_out, handle, non_null, opt_str, parse_json, put_handle, put_json,
    req_str, Failure, UserData,
};
use crate::{free_handle, KcoreResult};

/// An OCI image store (content-addressed blobs plus named images).
#[allow(non_camel_case_types)]
pub struct kcore_image_store {
    store: ImageStore,
}

/// A progress callback: `bytes` processed (uncompressed tar bytes when
/// unpacking, downloaded bytes when pulling) and `entries` (archive entries
/// when unpacking, finished blobs when pulling), totals so far. It may be
/// called from a worker thread while the call that took it runs, never after
/// it returns.
#[allow(non_camel_case_types)]
pub type kcore_progress_cb =
    Option<unsafe extern "C" fn(bytes: u64, entries: u64, user_data: *mut c_void)>;

fn progress_fn(cb: kcore_progress_cb, user_data: *mut c_void) -> Option<kcore_image::ProgressFn> {
    let cb = cb?;
    let data = UserData(user_data);
    Some(Arc::new(move |p: Progress| {
        let data = data;
        // SAFETY: the caller's callback with its own user_data, during the call.
        unsafe { cb(p.bytes, p.entries, data.0) }
    }))
}

/// A build progress callback: `kind` is `"step"` (a step starts; `text` is
/// `[stage n/total] INSTRUCTION`), `"cached"` (the step came from the cache), `"output"`
/// (a line a RUN step printed) or `"warning"`. Both strings are valid only during the
/// call. It may be called from a worker thread while the build runs, never after it
/// returns.
#[allow(non_camel_case_types)]
pub type kcore_build_event_cb =
    Option<unsafe extern "C" fn(kind: *const c_char, text: *const c_char, user_data: *mut c_void)>;

fn build_event_fn(
    cb: kcore_build_event_cb,
    user_data: *mut c_void,
) -> Option<kcore_build::EventFn> {
    let cb = cb?;
    let data = UserData(user_data);
    Some(Arc::new(move |e: &kcore_build::Event| {
        let data = data;
        let (kind, text) = (e.kind(), e.text());
        let kind = std::ffi::CString::new(kind).expect("no NUL");
        let text = std::ffi::CString::new(text.replace('\0', " ")).expect("NULs replaced");
        // SAFETY: the caller's callback with its own user_data, during the call; the
        // strings live until it returns.
        unsafe { cb(kind.as_ptr(), text.as_ptr(), data.0) }
    }))
}

pub(crate) fn image_failure(e: kcore_image::Error) -> Failure {
    let code = match &e {
        kcore_image::Error::ImageNotFound(_) | kcore_image::Error::BlobNotFound(_) => {
            KcoreResult::KCORE_NOT_FOUND
        }
        kcore_image::Error::InvalidReference { .. } => KcoreResult::KCORE_INVALID_ARGUMENT,
        _ => KcoreResult::KCORE_IMAGE_ERROR,
    };
    Failure::new(code, chain(&e))
}

/// Opens (creating if needed) an image store rooted at `root`.
///
/// # Safety
/// `root` is NUL-terminated; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_open(
    root: *const c_char,
    out: *mut *mut kcore_image_store,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out) };
    boundary(|| {
        // SAFETY: forwarded contract.
        let root = unsafe { req_str(root, "root")? };
        non_null(out, "out")?;
        let store = ImageStore::open(root).map_err(image_failure)?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe { put_handle(out, kcore_image_store { store }) };
        Ok(())
    })
}

/// Frees an image store handle (the store on disk stays). NULL is ignored.
///
/// # Safety
/// `store` is NULL or a live image store.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_free(store: *mut kcore_image_store) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(store) }
}

fn import_options(name: Option<&str>) -> ImportOptions {
    ImportOptions {
        name: name.map(str::to_string),
        ..ImportOptions::default()
    }
}

/// Imports an OCI image layout (a directory, or a tar of one) for linux/amd64.
/// `name` (may be NULL) overrides the recorded name, else the layout's
/// `org.opencontainers.image.ref.name`. `*out_json` receives the array of
/// image records (`[{"name", "manifest", "config", "created"}]`).
///
/// # Safety
/// `store` is live; the strings are NUL-terminated (or NULL for `name`);
/// `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_import_layout(
    store: *const kcore_image_store,
    path: *const c_char,
    name: *const c_char,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: forwarded contracts.
    unsafe { import(store, path, name, out_json, false) }
}

/// Imports a `docker save` archive (a tar, or a directory of one unpacked).
/// Arguments as for `kcore_image_store_import_layout`.
///
/// # Safety
/// As `kcore_image_store_import_layout`.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_import_archive(
    store: *const kcore_image_store,
    path: *const c_char,
    name: *const c_char,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: forwarded contracts.
    unsafe { import(store, path, name, out_json, true) }
}

unsafe fn import(
    store: *const kcore_image_store,
    path: *const c_char,
    name: *const c_char,
    out_json: *mut *mut c_char,
    docker: bool,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, path, name) = unsafe {
            (
                handle(store, "store")?,
                req_str(path, "path")?,
                opt_str(name, "name")?,
            )
        };
        non_null(out_json, "out_json")?;
        let opts = import_options(name);
        let recs = if docker {
            s.store.import_docker_archive(Path::new(path), &opts)
        } else {
            s.store.import_oci_layout(Path::new(path), &opts)
        }
        .map_err(image_failure)?;
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &recs) }
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PullJson {
    #[serde(default)]
    plain_http: bool,
    username: Option<String>,
    password: Option<String>,
    platform: Option<String>,
    name: Option<String>,
    jobs: Option<usize>,
    attempts: Option<u32>,
}

/// Pulls `reference` (`registry/repo:tag` or `@sha256:…`) from its registry.
/// `options_json` may be NULL or
/// `{"plain_http": false, "username": "…", "password": "…",
///   "platform": "linux/amd64", "name": "…", "jobs": 3, "attempts": 4}`
/// (all optional). `progress` (may be NULL) sees downloaded bytes.
/// `*out_json` receives the image record.
///
/// # Safety
/// `store` is live; the strings are NUL-terminated (or NULL where allowed);
/// `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_pull(
    store: *const kcore_image_store,
    reference: *const c_char,
    options_json: *const c_char,
    progress: kcore_progress_cb,
    user_data: *mut c_void,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, reference, options) = unsafe {
            (
                handle(store, "store")?,
                req_str(reference, "reference")?,
                opt_str(options_json, "options_json")?,
            )
        };
        non_null(out_json, "out_json")?;
        let o: PullJson = match options {
            Some(text) => parse_json(text, "options_json")?,
            None => PullJson::default(),
        };
        let mut opts = PullOptions {
            plain_http: o.plain_http,
            name: o.name,
            progress: progress_fn(progress, user_data),
            ..PullOptions::default()
        };
        opts.credentials = credentials(o.username, o.password)?;
        if let Some(p) = o.platform {
            opts.platform = p
                .parse::<Platform>()
                .map_err(|e| Failure::invalid(format!("options_json: platform: {e}")))?;
        }
        if let Some(j) = o.jobs {
            opts.jobs = j.max(1);
        }
        if let Some(a) = o.attempts {
            opts.attempts = a.max(1);
        }
        let rec = s.store.pull(reference, &opts).map_err(image_failure)?;
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &rec) }
    })
}

fn credentials(
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<(String, String)>, Failure> {
    match (username, password) {
        (Some(u), Some(p)) => Ok(Some((u, p))),
        (None, None) => Ok(None),
        _ => Err(Failure::invalid(
            "options_json: username and password go together",
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PushJson {
    #[serde(default)]
    plain_http: bool,
    username: Option<String>,
    password: Option<String>,
    jobs: Option<usize>,
    attempts: Option<u32>,
    chunk_size: Option<usize>,
    mount_from: Option<String>,
}

/// Pushes image `name` to a registry (OCI distribution: blobs the registry has are
/// skipped, others mounted from another repository or uploaded, monolithic or in
/// chunks; then the manifest). `dest` is the reference to push to
/// (`registry/repo:tag`), or NULL for the image's own name. `options_json` may be
/// NULL or `{"plain_http": false, "username": "…", "password": "…", "jobs": 3,
/// "attempts": 4, "chunk_size": 16777216, "mount_from": "other/repo"}` (all
/// optional). `progress` (may be NULL) sees uploaded bytes and finished blobs.
/// `*out_json` receives `{"reference": "…", "digest": "sha256:…", "manifest":
/// "sha256:…", "uploaded": n, "existing": n, "mounted": n, "bytes": n}`.
///
/// # Safety
/// `store` is live; the strings are NUL-terminated (or NULL where allowed);
/// `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_push(
    store: *const kcore_image_store,
    name: *const c_char,
    dest: *const c_char,
    options_json: *const c_char,
    progress: kcore_progress_cb,
    user_data: *mut c_void,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, name, dest, options) = unsafe {
            (
                handle(store, "store")?,
                req_str(name, "name")?,
                opt_str(dest, "dest")?,
                opt_str(options_json, "options_json")?,
            )
        };
        non_null(out_json, "out_json")?;
        let o: PushJson = match options {
            Some(text) => parse_json(text, "options_json")?,
            None => PushJson::default(),
        };
        let mut opts = PushOptions {
            credentials: credentials(o.username, o.password)?,
            plain_http: o.plain_http,
            mount_from: o.mount_from,
            progress: progress_fn(progress, user_data),
            ..PushOptions::default()
        };
        if let Some(j) = o.jobs {
            opts.jobs = j.max(1);
        }
        if let Some(a) = o.attempts {
            opts.attempts = a.max(1);
        }
        if let Some(c) = o.chunk_size {
            opts.chunk_size = c.max(1);
        }
        let r = s.store.push(name, dest, &opts).map_err(image_failure)?;
        let v = json!({
            "reference": r.reference,
            "digest": r.digest.to_string(),
            "manifest": r.manifest.to_string(),
            "uploaded": r.uploaded,
            "existing": r.existing,
            "mounted": r.mounted,
            "bytes": r.bytes,
        });
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &v) }
    })
}

/// Saves the `names_len` images `names` to `dest`: a directory when it exists or
/// ends in `/`, a tar file otherwise. `format` is `"oci"` (an OCI image layout;
/// NULL means this) or `"docker-archive"` (what `docker load` / `podman load`
/// read).
///
/// # Safety
/// `store` is live; `names` points to `names_len` NUL-terminated strings; `dest`
/// is NUL-terminated; `format` is NUL-terminated or NULL.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_save(
    store: *const kcore_image_store,
    names: *const *const c_char,
    names_len: usize,
    dest: *const c_char,
    format: *const c_char,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, dest, format) = unsafe {
            (
                handle(store, "store")?,
                req_str(dest, "dest")?,
                opt_str(format, "format")?,
            )
        };
        non_null(names, "names")?;
        if names_len == 0 {
            return Err(Failure::invalid("names: no image to save"));
        }
        let list = (0..names_len)
            .map(|i| {
                // SAFETY: `names` holds `names_len` pointers per the contract.
                let p = unsafe { *names.add(i) };
                // SAFETY: each is NUL-terminated per the contract.
                unsafe { req_str(p, "names[i]") }
            })
            .collect::<Result<Vec<&str>, Failure>>()?;
        let format: SaveFormat = format
            .unwrap_or("oci")
            .parse()
            .map_err(|e: kcore_image::Error| Failure::invalid(chain(&e)))?;
        s.store
            .save(&list, Path::new(dest), format)
            .map_err(image_failure)
    })
}

/// Unpacks image `name` into the new directory `dest` (which must not exist):
/// all layers applied in order, whiteouts deleting what they hide. On failure
/// `dest` is removed. `progress` (may be NULL) sees uncompressed bytes and
/// entries.
///
/// # Safety
/// `store` is live; the strings are NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_unpack(
    store: *const kcore_image_store,
    name: *const c_char,
    dest: *const c_char,
    progress: kcore_progress_cb,
    user_data: *mut c_void,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, name, dest) = unsafe {
            (
                handle(store, "store")?,
                req_str(name, "name")?,
                req_str(dest, "dest")?,
            )
        };
        let mut opts = UnpackOptions::new();
        if let Some(f) = progress_fn(progress, user_data) {
            opts = opts.progress(f);
        }
        s.store
            .flatten(name, Path::new(dest), &opts)
            .map_err(image_failure)
    })
}

/// Unpacks image `name` into the overlay layer store at `layer_root` (one diff
/// directory per layer, reused when present), `jobs` layers at a time (0 means
/// 1). `*out_json` receives `{"layer_ids": [bottom…top], "top": "…",
/// "unpacked": n}`.
///
/// # Safety
/// `store` is live; the strings are NUL-terminated; `out_json` is valid for
/// writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_unpack_layers(
    store: *const kcore_image_store,
    name: *const c_char,
    layer_root: *const c_char,
    jobs: u32,
    progress: kcore_progress_cb,
    user_data: *mut c_void,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, name, root) = unsafe {
            (
                handle(store, "store")?,
                req_str(name, "name")?,
                req_str(layer_root, "layer_root")?,
            )
        };
        non_null(out_json, "out_json")?;
        let layers = LayerStore::open(root).map_err(|e| {
            Failure::new(
                KcoreResult::KCORE_IMAGE_ERROR,
                format!("layer store {root}: {}", chain(&e)),
            )
        })?;
        let mut opts = UnpackOptions::new();
        if let Some(f) = progress_fn(progress, user_data) {
            opts = opts.progress(f);
        }
        let u = s
            .store
            .unpack(name, &layers, &opts, jobs.max(1) as usize)
            .map_err(image_failure)?;
        let v = json!({"layer_ids": u.layer_ids, "top": u.top(), "unpacked": u.unpacked});
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &v) }
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BuildJson {
    tag: Option<String>,
    #[serde(default)]
    build_args: std::collections::BTreeMap<String, String>,
    target: Option<String>,
    #[serde(default)]
    no_cache: bool,
    platform: Option<String>,
    bridge_name: Option<String>,
    bridge_subnet: Option<String>,
}

/// Builds an image from the Dockerfile at `dockerfile` with the build context
/// directory `context`, as `kcore image build` does (BuildKit's Dockerfile semantics;
/// RUN steps run in containers on overlay snapshots in the layer store at
/// `layer_root`, which needs root). `options_json` may be NULL or
/// `{"tag": "name:tag", "build_args": {"K": "V"}, "target": "stage",
///   "no_cache": false, "platform": "linux/amd64", "bridge_name": "kcore-build0",
///   "bridge_subnet": "10.213.0.0/24"}` (all optional; the bridge is the NAT'd network
/// of `RUN --network=default` steps; without `--network` a RUN step gets only
/// loopback). `progress` (may be NULL) sees each step. `*out_json` receives
/// `{"record": {…}, "layers_built": n, "steps_cached": n}`. A Dockerfile error is
/// `KCORE_INVALID_ARGUMENT`, with the line in the message.
///
/// # Safety
/// `store` is live; the strings are NUL-terminated (or NULL where allowed);
/// `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_build(
    store: *const kcore_image_store,
    dockerfile: *const c_char,
    context: *const c_char,
    layer_root: *const c_char,
    options_json: *const c_char,
    progress: kcore_build_event_cb,
    user_data: *mut c_void,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, dockerfile, context, root, options) = unsafe {
            (
                handle(store, "store")?,
                req_str(dockerfile, "dockerfile")?,
                req_str(context, "context")?,
                req_str(layer_root, "layer_root")?,
                opt_str(options_json, "options_json")?,
            )
        };
        non_null(out_json, "out_json")?;
        let o: BuildJson = match options {
            Some(text) => parse_json(text, "options_json")?,
            None => BuildJson::default(),
        };
        let text = std::fs::read_to_string(dockerfile)
            .map_err(|e| Failure::invalid(format!("dockerfile {dockerfile}: {e}")))?;
        let layers = LayerStore::open(root).map_err(|e| {
            Failure::new(
                KcoreResult::KCORE_IMAGE_ERROR,
                format!("layer store {root}: {}", chain(&e)),
            )
        })?;
        let platform = o
            .platform
            .map(|p| p.parse::<Platform>())
            .transpose()
            .map_err(|e| Failure::invalid(format!("options_json: platform: {e}")))?;
        let mut bridge = kcore_build::BridgeNetwork::default();
        if let Some(n) = o.bridge_name {
            bridge.bridge = n;
        }
        if let Some(c) = o.bridge_subnet {
            bridge.subnet = c
                .parse()
                .map_err(|e| Failure::invalid(format!("options_json: bridge_subnet: {e}")))?;
        }
        let opts = kcore_build::BuildOptions {
            dockerfile: text,
            context: context.into(),
            bridge,
            tag: o.tag,
            build_args: o.build_args,
            target: o.target,
            no_cache: o.no_cache,
            platform,
            progress: build_event_fn(progress, user_data),
            ..kcore_build::BuildOptions::default()
        };
        let r = kcore_build::Builder::new(&s.store, &layers)
            .build(&opts)
            .map_err(|e| {
                let code = match &e {
                    kcore_build::Error::Syntax { .. }
                    | kcore_build::Error::StageNotFound(_)
                    | kcore_build::Error::Unsupported { .. }
                    | kcore_build::Error::SourceNotFound { .. } => {
                        KcoreResult::KCORE_INVALID_ARGUMENT
                    }
                    _ => KcoreResult::KCORE_IMAGE_ERROR,
                };
                Failure::new(code, chain(&e))
            })?;
        let v = json!({
            "record": r.record,
            "layers_built": r.layers_built,
            "steps_cached": r.steps_cached,
        });
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &v) }
    })
}

/// Lists the images in the store: `*out_json` receives an array of records.
///
/// # Safety
/// `store` is live; `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_list(
    store: *const kcore_image_store,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { handle(store, "store")? };
        non_null(out_json, "out_json")?;
        let recs = s.store.list().map_err(image_failure)?;
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &recs) }
    })
}

/// Describes image `name`: `*out_json` receives `{"record": {…}, "manifest":
/// {…}, "config": {…}, "layers": [{"digest", "media_type", "size", "diff_id",
/// "chain_id"}]}`.
///
/// # Safety
/// `store` is live; `name` is NUL-terminated; `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_inspect(
    store: *const kcore_image_store,
    name: *const c_char,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, name) = unsafe { (handle(store, "store")?, req_str(name, "name")?) };
        non_null(out_json, "out_json")?;
        let img = s.store.inspect(name).map_err(image_failure)?;
        let layers: Vec<Value> = img
            .layers
            .iter()
            .map(|l| {
                json!({"digest": l.digest.to_string(), "media_type": l.media_type, "size": l.size,
                       "diff_id": l.diff_id.to_string(), "chain_id": l.chain_id.to_string()})
            })
            .collect();
        let v = json!({"record": img.record, "manifest": img.manifest, "config": img.config,
                       "layers": layers});
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &v) }
    })
}

/// Removes image `name` (its blobs stay until a prune).
///
/// # Safety
/// `store` is live; `name` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn kcore_image_store_remove(
    store: *const kcore_image_store,
    name: *const c_char,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (s, name) = unsafe { (handle(store, "store")?, req_str(name, "name")?) };
        s.store.remove(name).map(|_| ()).map_err(image_failure)
    })
}
