//! HTTP status codes of API errors.

/// The HTTP status code the API server answered with (404 Not Found, 409 Conflict, …), or
/// `None` when the request failed before an answer (connection, TLS, decoding).
///
/// ```
/// # #[cfg(feature = "kube")] {
/// use kube::core::Status;
///
/// let not_found = kube::Error::Api(Box::new(Status::failure("pods \"x\" not found", "NotFound").with_code(404)));
/// assert_eq!(kcore_k8s::status_code(&not_found), Some(404));
/// # }
/// ```
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
