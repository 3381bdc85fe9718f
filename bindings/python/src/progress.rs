//! A Python callable as a progress callback for work running without the GIL.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

/// Forwards progress to `callback(bytes, entries)`, taking the GIL for each call.
/// The first exception the callback raises is kept and re-raised by
/// [`Progress::finish`] once the operation returns; later calls are skipped.
pub(crate) struct Progress {
    callback: Option<Py<PyAny>>,
    error: Arc<Mutex<Option<PyErr>>>,
}

impl Progress {
    pub(crate) fn new(callback: Option<Bound<'_, PyAny>>) -> PyResult<Self> {
        if let Some(cb) = &callback {
            if !cb.is_callable() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "progress must be callable as progress(bytes, entries)",
                ));
            }
        }
        Ok(Progress {
            callback: callback.map(Bound::unbind),
            error: Arc::new(Mutex::new(None)),
        })
    }

    /// The callback in the form kcore-image takes, if one was given.
    pub(crate) fn image_fn(&self) -> Option<kcore_image::ProgressFn> {
        let py_cb = Python::attach(|py| self.callback.as_ref().map(|c| c.clone_ref(py)))?;
        let error = Arc::clone(&self.error);
        let cb = Arc::new(py_cb);
        Some(Arc::new(move |p: kcore_image::Progress| {
            // never hold the lock while taking the GIL: `finish` takes the lock
            // with the GIL held
            if error.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                return;
            }
            let result = Python::attach(|py| cb.call1(py, (p.bytes, p.entries)).map(drop));
            if let Err(e) = result {
                error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }))
    }

    /// Re-raises the callback's first exception, if any.
    pub(crate) fn finish(self) -> PyResult<()> {
        let taken = self.error.lock().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
