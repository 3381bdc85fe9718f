//! OCI containers: create from a bundle (or a spec given as JSON), start,
//! kill, wait, delete, state.

use std::ffi::c_char;
use std::path::Path;

use ::kcore_runtime as oci;
use oci::{Container, CreateOptions, ExitStatus, Runtime};

use crate::ffi::{
    boundary, chain, clear_out, handle, handle_mut, non_null, opt_str, put_handle, put_json,
    put_string, req_str, Failure,
};
use crate::{free_handle, KcoreResult};

/// A container runtime: a state root directory holding one directory per
/// container.
#[allow(non_camel_case_types)]
pub struct kcore_runtime {
    rt: Runtime,
}

/// One container. Not safe to use from two threads at once.
#[allow(non_camel_case_types)]
pub struct kcore_container {
    rt: Runtime,
    id: String,
    /// `None` once deleted.
    c: Option<Container>,
}

fn runtime_failure(e: oci::Error) -> Failure {
    use oci::Error as E;
    let code = match &e {
        E::NotFound { .. } => KcoreResult::KCORE_NOT_FOUND,
        E::Exists { .. } | E::InvalidState { .. } => KcoreResult::KCORE_CONFLICT,
        E::InvalidId { .. } | E::InvalidSpec { .. } => KcoreResult::KCORE_INVALID_ARGUMENT,
        _ => KcoreResult::KCORE_RUNTIME_ERROR,
    };
    Failure::new(code, chain(&e))
}

impl kcore_container {
    fn live(&mut self) -> Result<&mut Container, Failure> {
        self.c.as_mut().ok_or_else(|| {
            Failure::new(
                KcoreResult::KCORE_NOT_FOUND,
                format!("container {} was deleted", self.id),
            )
        })
    }
}

/// Makes a runtime keeping container state under `root` (created on first
/// use; `/run/kcore-runc` is the CLI's default).
///
/// # Safety
/// `root` is NUL-terminated; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_runtime_new(
    root: *const c_char,
    out: *mut *mut kcore_runtime,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out) };
    boundary(|| {
        // SAFETY: forwarded contract.
        let root = unsafe { req_str(root, "root")? };
        non_null(out, "out")?;
        if root.is_empty() {
            return Err(Failure::invalid("root is empty"));
        }
        // SAFETY: out is non-NULL and valid for writes.
        unsafe {
            put_handle(
                out,
                kcore_runtime {
                    rt: Runtime::new(root),
                },
            )
        };
        Ok(())
    })
}

/// Frees a runtime handle (containers keep running). NULL is ignored.
///
/// # Safety
/// `rt` is NULL or a live runtime.
#[no_mangle]
pub unsafe extern "C" fn kcore_runtime_free(rt: *mut kcore_runtime) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(rt) }
}

/// Lists the container ids under the runtime's root as a JSON array.
///
/// # Safety
/// `rt` is live; `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_runtime_list(
    rt: *const kcore_runtime,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contract.
        let rt = unsafe { handle(rt, "rt")? };
        non_null(out_json, "out_json")?;
        let ids = rt.rt.list().map_err(runtime_failure)?;
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &ids) }
    })
}

/// Creates container `id` from `bundle` (a directory holding the rootfs).
/// `spec_json` is the OCI runtime spec as JSON, or NULL to read
/// `bundle/config.json`. On success the container is `created`: its
/// namespaces, mounts and cgroup exist and the program waits for
/// `kcore_container_start`. It inherits this process's stdio. Needs root.
///
/// # Safety
/// `rt` is live; the strings are NUL-terminated (or NULL for `spec_json`);
/// `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_create(
    rt: *const kcore_runtime,
    id: *const c_char,
    bundle: *const c_char,
    spec_json: *const c_char,
    out: *mut *mut kcore_container,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (rt, id, bundle, spec) = unsafe {
            (
                handle(rt, "rt")?,
                req_str(id, "id")?,
                req_str(bundle, "bundle")?,
                opt_str(spec_json, "spec_json")?,
            )
        };
        non_null(out, "out")?;
        let bundle = Path::new(bundle);
        let spec = match spec {
            Some(json) => oci::parse_spec(json),
            None => oci::load_spec(bundle),
        }
        .map_err(runtime_failure)?;
        let c = rt
            .rt
            .create(id, bundle, &spec, CreateOptions::default())
            .map_err(runtime_failure)?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe {
            put_handle(
                out,
                kcore_container {
                    rt: rt.rt.clone(),
                    id: id.to_string(),
                    c: Some(c),
                },
            )
        };
        Ok(())
    })
}

/// Loads existing container `id` (made by this or another process; only a
/// container created by this process can be waited for).
///
/// # Safety
/// `rt` is live; `id` is NUL-terminated; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_load(
    rt: *const kcore_runtime,
    id: *const c_char,
    out: *mut *mut kcore_container,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (rt, id) = unsafe { (handle(rt, "rt")?, req_str(id, "id")?) };
        non_null(out, "out")?;
        let c = rt.rt.load(id).map_err(runtime_failure)?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe {
            put_handle(
                out,
                kcore_container {
                    rt: rt.rt.clone(),
                    id: id.to_string(),
                    c: Some(c),
                },
            )
        };
        Ok(())
    })
}

/// Frees a container handle (the container itself is not deleted). NULL is
/// ignored.
///
/// # Safety
/// `c` is NULL or a live container handle.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_free(c: *mut kcore_container) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(c) }
}

/// Writes the container id to `*out` (free with `kcore_string_free`).
///
/// # Safety
/// `c` is live; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_id(
    c: *const kcore_container,
    out: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out) };
    boundary(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(c, "c")? };
        non_null(out, "out")?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe { put_string(out, c.id.clone()) }
    })
}

/// Writes the host pid of the container process to `*out` (0 once stopped).
///
/// # Safety
/// `c` is live; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_pid(
    c: *mut kcore_container,
    out: *mut i32,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle_mut(c, "c")? };
        non_null(out, "out")?;
        let st = c.live()?.state();
        // SAFETY: out is non-NULL and valid for writes.
        unsafe { *out = st.pid };
        Ok(())
    })
}

/// Runs the container's program (`created` → `running`).
///
/// # Safety
/// `c` is live and not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_start(c: *mut kcore_container) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle_mut(c, "c")? };
        c.live()?.start().map_err(runtime_failure)
    })
}

/// Sends `signal` to the container process, or with `all` to every process in
/// its cgroup.
///
/// # Safety
/// `c` is live and not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_kill(
    c: *mut kcore_container,
    signal: i32,
    all: bool,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle_mut(c, "c")? };
        c.live()?.kill(signal, all).map_err(runtime_failure)
    })
}

/// Waits for the container process to exit. Writes its exit code to
/// `*out_exit_code` (or -1 if killed) and the killing signal to `*out_signal`
/// (0 if it exited); either may be NULL. Only for containers created by this
/// process.
///
/// # Safety
/// `c` is live and not used concurrently; the out-params are NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_wait(
    c: *mut kcore_container,
    out_exit_code: *mut i32,
    out_signal: *mut i32,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle_mut(c, "c")? };
        let st = c.live()?.wait().map_err(runtime_failure)?;
        let (code, sig) = match st {
            ExitStatus::Exited(code) => (code, 0),
            ExitStatus::Signaled(sig) => (-1, sig),
        };
        // SAFETY: each is NULL or valid for writes.
        unsafe {
            if !out_exit_code.is_null() {
                *out_exit_code = code;
            }
            if !out_signal.is_null() {
                *out_signal = sig;
            }
        }
        Ok(())
    })
}

/// Writes the OCI state as JSON to `*out_json`: `{"ociVersion", "id",
/// "status": "created"|"running"|"paused"|"stopped", "pid", "bundle", …}`.
///
/// # Safety
/// `c` is live and not used concurrently; `out_json` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_state(
    c: *mut kcore_container,
    out_json: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_json) };
    boundary(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle_mut(c, "c")? };
        non_null(out_json, "out_json")?;
        let st = c.live()?.state();
        // SAFETY: out_json is non-NULL and valid for writes.
        unsafe { put_json(out_json, &st) }
    })
}

/// Deletes the container: its processes (with `force`, or when it never
/// started), cgroup, mounts and state. The handle must still be freed; other
/// calls on it then return `KCORE_NOT_FOUND`. If deletion fails the handle
/// stays usable.
///
/// # Safety
/// `c` is live and not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn kcore_container_delete(
    c: *mut kcore_container,
    force: bool,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle_mut(c, "c")? };
        c.live()?;
        let container = c.c.take().expect("checked live");
        match container.delete(force) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Keep the handle usable for a retry (with force).
                c.c = c.rt.load(&c.id).ok();
                Err(runtime_failure(e))
            }
        }
    })
}
