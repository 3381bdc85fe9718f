//! The crate's error type.

/// Everything that can go wrong while running controllers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request to the API server failed.
    #[error("{verb} {object} failed")]
    Api {
        /// What was attempted (`create`, `patch`, ...).
        verb: &'static str,
        /// The object or collection involved, as `kind ns/name`.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An object carries a field the controller cannot interpret.
    #[error("invalid {field} in {object}: {reason}")]
    Invalid {
        /// The object, as `kind ns/name`.
        object: String,
        /// The offending field path.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Leadership of the election lease was lost while controllers were running.
    #[error("lost leadership of lease {lease}")]
    LeadershipLost {
        /// The lease, as `ns/name`.
        lease: String,
    },
    /// A background task of the controller manager panicked or was cancelled.
    #[error("controller task {task} failed: {reason}")]
    Task {
        /// The task's name.
        task: String,
        /// The join error's text.
        reason: String,
    },
}

impl Error {
    /// A closure turning a [`kube::Error`] into [`Error::Api`] for `verb` on `object`.
    pub(crate) fn api(
        verb: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |source| Error::Api {
            verb,
            object,
            source,
        }
    }

    /// True when the server answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    /// True when the server answered 409 Conflict (stale resourceVersion or already exists).
    pub fn is_conflict(&self) -> bool {
        self.status_code() == Some(409)
    }

    fn status_code(&self) -> Option<u16> {
        match self {
            Error::Api { source, .. } => kcore_k8s::status_code(source),
            _ => None,
        }
    }
}
