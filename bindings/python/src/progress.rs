//! A Python callable as a progress callback for work running without the GIL.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

/// Forwards progress to a Python callable (`callback(bytes, entries)` for images,
/// `callback(kind, text)` for builds), taking the GIL for each call.
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
                    "progress must be callable",
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
        let f = self.forward(|p: &kcore_image::Progress| (p.bytes, p.entries))?;
        Some(Arc::new(move |p: kcore_image::Progress| f(&p)))
    }

    /// The callback as a build's event callback, called as `callback(kind, text)`:
    /// `"step"` with `[stage n/total] INSTRUCTION`, `"cached"`, `"output"` with a line
    /// a RUN step printed, or `"warning"` ([`kcore_build::Event::kind`]).
    pub(crate) fn build_fn(&self) -> Option<kcore_build::EventFn> {
        let f = self.forward(|e: &kcore_build::Event| (e.kind(), e.text()))?;
        Some(Arc::new(move |e: &kcore_build::Event| f(e)))
    }

    /// A Rust callback that calls the Python one with `args(event)`, taking the GIL;
    /// after the first exception it calls nothing more (`finish` re-raises it).
    #[allow(clippy::type_complexity)]
    fn forward<T: ?Sized, A>(
        &self,
        args: impl Fn(&T) -> A + Send + Sync + 'static,
    ) -> Option<Arc<dyn Fn(&T) + Send + Sync>>
    where
        A: for<'py> pyo3::call::PyCallArgs<'py>,
    {
        let py_cb = Python::attach(|py| self.callback.as_ref().map(|c| c.clone_ref(py)))?;
        let error = Arc::clone(&self.error);
        let cb = Arc::new(py_cb);
        Some(Arc::new(move |event: &T| {
            // never hold the lock while taking the GIL: `finish` takes the lock
            // with the GIL held
            if error.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                return;
            }
            let result = Python::attach(|py| cb.call1(py, args(event)).map(drop));
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
