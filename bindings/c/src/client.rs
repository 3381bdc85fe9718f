//! The cluster client: connect with a kubeconfig, apply manifests, get, list,
//! delete and watch objects as JSON.

use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::time::Duration;

use ::kcore_client::{Client, Error};

use crate::ffi::{
    boundary, chain, clear_out, handle, non_null, opt_str, put_handle, put_json, req_str, Failure,
};
use crate::{free_handle, KcoreResult};

/// A connection to a Kubernetes API server. Safe to share between threads.
#[allow(non_camel_case_types)]
pub struct kcore_client {
    client: Client,
}

/// A watch callback: `event_type` is `"ADDED"`, `"MODIFIED"` or `"DELETED"`,
/// `object_json` the object; both are valid only during the call. Return 0 to
/// keep watching, anything else to stop. Called on the thread that called
/// `kcore_client_watch`.
#[allow(non_camel_case_types)]
pub type kcore_watch_cb = Option<
    unsafe extern "C" fn(
        event_type: *const c_char,
        object_json: *const c_char,
        user_data: *mut c_void,
    ) -> i32,
>;

fn client_failure(e: Error) -> Failure {
    let code = match &e {
        Error::NotFound { .. } => KcoreResult::KCORE_NOT_FOUND,
        Error::Conflict { .. } => KcoreResult::KCORE_CONFLICT,
        Error::Manifest { .. } => KcoreResult::KCORE_MANIFEST_ERROR,
        Error::Kubeconfig { .. } => KcoreResult::KCORE_KUBECONFIG_ERROR,
        Error::InvalidArgument { .. } => KcoreResult::KCORE_INVALID_ARGUMENT,
        _ => KcoreResult::KCORE_CLIENT_ERROR,
    };
    Failure::new(code, chain(&e))
}

/// Connects with the kubeconfig at `kubeconfig`, or with NULL the one named by
/// `KUBECONFIG` or `~/.kube/config`. Its current context picks the server,
/// user and default namespace. No request is made yet.
///
/// # Safety
/// `kubeconfig` is NULL or NUL-terminated; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_client_connect(
    kubeconfig: *const c_char,
    out: *mut *mut kcore_client,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out) };
    boundary(|| {
        // SAFETY: forwarded contract.
        let path = unsafe { opt_str(kubeconfig, "kubeconfig")? };
        non_null(out, "out")?;
        let client = Client::from_kubeconfig(path.map(Path::new)).map_err(client_failure)?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe { put_handle(out, kcore_client { client }) };
        Ok(())
    })
}

/// Closes a client. NULL is ignored.
///
/// # Safety
/// `client` is NULL or a live client, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn kcore_client_free(client: *mut kcore_client) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(client) }
}

/// Applies every object of `manifest` (multi-document YAML, JSON, a JSON
/// array or a `*List`) with server-side apply as `field_manager`, creating
/// absent objects; with `force`, takes over fields owned by other managers.
/// `*out_json` receives the array of objects as stored. A malformed manifest
/// gives `KCORE_MANIFEST_ERROR` naming the document; a field conflict
/// `KCORE_CONFLICT`.
///
/// # Safety
/// `client` is live; the strings are NUL-terminated; `out_json` is valid for
/// writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_client_apply(
    client: *const kcore_client,
    manifest: *const c_char,
    field_manager: *const c_char,
    force: bool,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (c, manifest, fm) = unsafe {
            (
                handle(client, "client")?,
                req_str(manifest, "manifest")?,
                req_str(field_manager, "field_manager")?,
            )
        };
        non_null(out_json, "out_json")?;
        let objs = c
            .client
            .apply_with(manifest, fm, force)
            .map_err(client_failure)?;
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &objs) }
    })
}

/// Reads one object as JSON. `namespace` NULL means the kubeconfig's default
/// namespace (ignored for cluster-scoped kinds). `KCORE_NOT_FOUND` if absent.
///
/// # Safety
/// `client` is live; the strings are NUL-terminated (or NULL for
/// `namespace`); `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_client_get(
    client: *const kcore_client,
    api_version: *const c_char,
    kind: *const c_char,
    namespace: *const c_char,
    name: *const c_char,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (c, av, kind, ns, name) = unsafe {
            (
                handle(client, "client")?,
                req_str(api_version, "api_version")?,
                req_str(kind, "kind")?,
                opt_str(namespace, "namespace")?,
                req_str(name, "name")?,
            )
        };
        non_null(out_json, "out_json")?;
        let obj = c.client.get(av, kind, ns, name).map_err(client_failure)?;
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &obj) }
    })
}

/// Lists objects as a JSON array, filtered by `label_selector` (may be NULL,
/// e.g. `"app=web,tier!=db"`). `namespace` NULL lists all namespaces.
///
/// # Safety
/// `client` is live; the strings are NUL-terminated (or NULL where allowed);
/// `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_client_list(
    client: *const kcore_client,
    api_version: *const c_char,
    kind: *const c_char,
    namespace: *const c_char,
    label_selector: *const c_char,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (c, av, kind, ns, sel) = unsafe {
            (
                handle(client, "client")?,
                req_str(api_version, "api_version")?,
                req_str(kind, "kind")?,
                opt_str(namespace, "namespace")?,
                opt_str(label_selector, "label_selector")?,
            )
        };
        non_null(out_json, "out_json")?;
        let objs = c.client.list(av, kind, ns, sel).map_err(client_failure)?;
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &objs) }
    })
}

/// Deletes one object. `namespace` NULL means the default namespace.
/// `KCORE_NOT_FOUND` if absent.
///
/// # Safety
/// `client` is live; the strings are NUL-terminated (or NULL for `namespace`).
#[no_mangle]
pub unsafe extern "C" fn kcore_client_delete(
    client: *const kcore_client,
    api_version: *const c_char,
    kind: *const c_char,
    namespace: *const c_char,
    name: *const c_char,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (c, av, kind, ns, name) = unsafe {
            (
                handle(client, "client")?,
                req_str(api_version, "api_version")?,
                req_str(kind, "kind")?,
                opt_str(namespace, "namespace")?,
                req_str(name, "name")?,
            )
        };
        c.client.delete(av, kind, ns, name).map_err(client_failure)
    })
}

/// Watches a collection, calling `callback` for each event until it returns
/// non-zero, `timeout_ms` passes (0: no timeout) or an error occurs; blocks
/// meanwhile. Existing objects come first as `ADDED`. `namespace` NULL
/// watches all namespaces; `label_selector` may be NULL. Returns `KCORE_OK`
/// when stopped by the callback or the timeout.
///
/// # Safety
/// `client` is live; the strings are NUL-terminated (or NULL where allowed);
/// `callback` is a valid function and `user_data` whatever it expects.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kcore_client_watch(
    client: *const kcore_client,
    api_version: *const c_char,
    kind: *const c_char,
    namespace: *const c_char,
    label_selector: *const c_char,
    timeout_ms: u64,
    callback: kcore_watch_cb,
    user_data: *mut c_void,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (c, av, kind, ns, sel) = unsafe {
            (
                handle(client, "client")?,
                req_str(api_version, "api_version")?,
                req_str(kind, "kind")?,
                opt_str(namespace, "namespace")?,
                opt_str(label_selector, "label_selector")?,
            )
        };
        let Some(cb) = callback else {
            return Err(Failure::new(
                KcoreResult::KCORE_NULL_PARAMETER,
                "parameter callback is NULL",
            ));
        };
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        let watch = c
            .client
            .watch(av, kind, ns, sel, timeout)
            .map_err(client_failure)?;
        for ev in watch {
            let ev = ev.map_err(client_failure)?;
            let object = serde_json::to_string(&ev.object).map_err(|e| {
                Failure::new(KcoreResult::KCORE_PANIC, format!("cannot encode JSON: {e}"))
            })?;
            let object =
                CString::new(object).map_err(|_| Failure::invalid("object contains a NUL byte"))?;
            let kind = CString::new(ev.kind.as_str()).expect("static name");
            // SAFETY: the caller's callback with valid NUL-terminated strings
            // that live until it returns.
            let stop = unsafe { cb(kind.as_ptr(), object.as_ptr(), user_data) };
            if stop != 0 {
                break;
            }
        }
        Ok(())
    })
}
