//! The panic boundary, the thread-local last error, and pointer/string helpers.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::KcoreResult;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A failed call: the result code and the message for `kcore_last_error`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: KcoreResult,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: KcoreResult, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(KcoreResult::KCORE_INVALID_ARGUMENT, message)
    }
}

/// An error with its whole source chain, `a: b: c`, without repeats.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let m = e.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = e.source();
    }
    s
}

pub(crate) fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

pub(crate) fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|e| f(&e.borrow()))
}

/// Runs `f` inside the panic boundary: clears the last error, maps `Err` to
/// its code (recording the message) and a panic to `KCORE_PANIC`.
pub(crate) fn boundary(f: impl FnOnce() -> Result<(), Failure>) -> KcoreResult {
    set_last_error(String::new());
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => KcoreResult::KCORE_OK,
        Ok(Err(fail)) => {
            set_last_error(fail.message);
            fail.code
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(format!("panic in libkcore: {what}"));
            KcoreResult::KCORE_PANIC
        }
    }
}

/// Fails with `KCORE_NULL_PARAMETER` naming `what` when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(Failure::new(
            KcoreResult::KCORE_NULL_PARAMETER,
            format!("parameter {what} is NULL"),
        ))
    } else {
        Ok(())
    }
}

/// A required NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn req_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    non_null(p, what)?;
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Failure::invalid(format!("parameter {what} is not valid UTF-8")))
}

/// An optional string: NULL gives `None`.
///
/// # Safety
/// As [`req_str`].
pub(crate) unsafe fn opt_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { req_str(p, what) }.map(Some)
    }
}

/// A shared reference to a handle.
///
/// # Safety
/// `p` is NULL or a live handle made by this library.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    non_null(p, what)?;
    // SAFETY: non-NULL and live per the caller's contract.
    Ok(unsafe { &*p })
}

/// An exclusive reference to a handle.
///
/// # Safety
/// `p` is NULL or a live handle made by this library, not used concurrently.
pub(crate) unsafe fn handle_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Failure> {
    non_null(p, what)?;
    // SAFETY: non-NULL, live and exclusive per the caller's contract.
    Ok(unsafe { &mut *p })
}

/// Clears an out-parameter (when not NULL) so it is NULL on failure.
///
/// # Safety
/// `out` is NULL or valid for writes.
pub(crate) unsafe fn clear_out<T>(out: *mut *mut T) {
    if !out.is_null() {
        // SAFETY: valid for writes per the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
    }
}

/// Writes a new handle to `out`.
///
/// # Safety
/// `out` is non-NULL and valid for writes.
pub(crate) unsafe fn put_handle<T>(out: *mut *mut T, value: T) {
    // SAFETY: valid for writes per the caller's contract.
    unsafe { *out = Box::into_raw(Box::new(value)) };
}

/// Writes a Rust-allocated copy of `s` to `out` (freed with `kcore_string_free`).
///
/// # Safety
/// `out` is non-NULL and valid for writes.
pub(crate) unsafe fn put_string(out: *mut *mut c_char, s: String) -> Result<(), Failure> {
    let c = CString::new(s).map_err(|_| Failure::invalid("result contains a NUL byte"))?;
    // SAFETY: valid for writes per the caller's contract.
    unsafe { *out = c.into_raw() };
    Ok(())
}

/// Serialises `v` as JSON into `out`.
///
/// # Safety
/// As [`put_string`].
pub(crate) unsafe fn put_json(
    out: *mut *mut c_char,
    v: &impl serde::Serialize,
) -> Result<(), Failure> {
    let s = serde_json::to_string(v)
        .map_err(|e| Failure::new(KcoreResult::KCORE_PANIC, format!("cannot encode JSON: {e}")))?;
    // SAFETY: forwarded contract.
    unsafe { put_string(out, s) }
}

/// Parses a JSON parameter.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
) -> Result<T, Failure> {
    serde_json::from_str(s).map_err(|e| Failure::invalid(format!("parameter {what}: {e}")))
}

/// A C callback's `void *user_data`, carried across threads. The caller
/// promises the callback may be called from any thread while the call runs.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(crate) *mut std::ffi::c_void);
// SAFETY: the pointer is only handed back to the caller's callback, which the
// API documents may run on another thread during the call.
unsafe impl Send for UserData {}
// SAFETY: as above; it is never dereferenced by Rust.
unsafe impl Sync for UserData {}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        with_last_error(str::to_string)
    }

    #[test]
    fn boundary_maps_ok_err_and_panic() {
        assert_eq!(
            boundary(|| Err(Failure::invalid("bad thing"))),
            KcoreResult::KCORE_INVALID_ARGUMENT
        );
        assert_eq!(last(), "bad thing");
        assert_eq!(boundary(|| Ok(())), KcoreResult::KCORE_OK);
        assert_eq!(last(), "", "success clears the message");
        let r = boundary(|| panic!("boom {}", 42));
        assert_eq!(r, KcoreResult::KCORE_PANIC);
        assert_eq!(last(), "panic in libkcore: boom 42");
    }

    #[test]
    fn strings_in_and_out() {
        let ok = c"héllo";
        // SAFETY: a valid NUL-terminated literal.
        assert_eq!(unsafe { req_str(ok.as_ptr(), "s") }.unwrap(), "héllo");
        // SAFETY: NULL is allowed.
        assert!(unsafe { opt_str(std::ptr::null(), "s") }.unwrap().is_none());
        let bad = [0xffu8, 0xfe, 0];
        // SAFETY: NUL-terminated bytes.
        let e = unsafe { req_str(bad.as_ptr().cast(), "name") }.unwrap_err();
        assert_eq!(e.code, KcoreResult::KCORE_INVALID_ARGUMENT);
        assert!(e.message.contains("name"), "{}", e.message);
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: out is a valid local.
        unsafe { put_string(&mut out, "x\0y".into()) }.unwrap_err();
        assert!(out.is_null());
        // SAFETY: out is a valid local; the string is freed once below.
        unsafe { put_json(&mut out, &serde_json::json!({"a": [1]})) }.unwrap();
        // SAFETY: made by put_json just above.
        let s = unsafe { CString::from_raw(out) };
        assert_eq!(s.to_str().unwrap(), r#"{"a":[1]}"#);
    }
}
