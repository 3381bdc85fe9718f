//! The Kubernetes version kcore implements: one place for the API server's `/version`,
//! the node's `kubeletVersion`, the probes' `User-Agent` and the OpenAPI document.
//!
//! It is the version of the object model kcore is built on (k8s-openapi's `latest`
//! feature); a unit test keeps the two together.

// Literal macros so the strings below are built at compile time with concat!.
macro_rules! major {
    () => {
        "1"
    };
}
macro_rules! minor {
    () => {
        "37"
    };
}
macro_rules! patch {
    () => {
        "0"
    };
}

/// The major version (`/version` `major`): `"1"`.
pub const MAJOR: &str = major!();

/// The minor version (`/version` `minor`), e.g. `"37"`.
pub const MINOR: &str = minor!();

/// The Kubernetes version, `v<major>.<minor>.<patch>`, e.g. `"v1.37.0"`.
pub const VERSION: &str = concat!("v", major!(), ".", minor!(), ".", patch!());

/// The version kcore's components report (`/version` `gitVersion`, a node's
/// `kubeletVersion`): the Kubernetes version with kcore's own as a pre-release part, e.g.
/// `"v1.37.0-kcore.0.1.0"`.
pub const GIT_VERSION: &str = concat!(
    "v",
    major!(),
    ".",
    minor!(),
    ".",
    patch!(),
    "-kcore.",
    env!("CARGO_PKG_VERSION")
);

/// The `User-Agent` of HTTP probes, as the kubelet sends it: `kube-probe/<major>.<minor>`.
pub const PROBE_USER_AGENT: &str = concat!("kube-probe/", major!(), ".", minor!());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_agree() {
        assert_eq!(VERSION, format!("v{MAJOR}.{MINOR}.0"));
        assert!(GIT_VERSION.starts_with(&format!("{VERSION}-kcore.")));
        assert_eq!(PROBE_USER_AGENT, format!("kube-probe/{MAJOR}.{MINOR}"));
    }

    /// The version we claim is the version of the object model we are built on.
    #[test]
    #[allow(clippy::vec_init_then_push)] // each push is behind a version macro
    fn matches_the_object_model() {
        let mut built_on = Vec::new();
        k8s_openapi::k8s_if_1_33! { built_on.push("33"); }
        k8s_openapi::k8s_if_1_34! { built_on.push("34"); }
        k8s_openapi::k8s_if_1_35! { built_on.push("35"); }
        k8s_openapi::k8s_if_1_36! { built_on.push("36"); }
        k8s_openapi::k8s_if_1_37! { built_on.push("37"); }
        assert_eq!(built_on, [MINOR], "k8s-openapi's enabled version");
    }
}
