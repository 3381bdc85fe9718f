//! The server's RBAC decisions as a library ([`RbacAuthorizer`]): upstream's
//! `RBACAuthorizer` over a set of Roles, ClusterRoles and their bindings.

use std::sync::Arc;

use serde_json::Value;

use crate::auth::{rbac, Attributes};

/// RBAC decisions over a fixed set of `rbac.authorization.k8s.io/v1` objects, exactly as
/// the API server makes them for each request (the server keeps one of these per
/// version of its stored RBAC objects). Bindings are indexed by subject, so a decision
/// looks only at the bindings of the user's own name and groups.
///
/// # Example
///
/// ```
/// use kcore_apiserver::{RbacAuthorizer, RbacRequest};
/// use serde_json::json;
///
/// let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
///     "metadata": {"name": "reader", "namespace": "dev"},
///     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
/// let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
///     "metadata": {"name": "alice-reads", "namespace": "dev"},
///     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
///     "subjects": [{"kind": "User", "name": "alice"}]});
/// let rbac = RbacAuthorizer::new(&[], &[role], &[], &[binding]);
/// let list = RbacRequest::resource("list", "", "pods", "dev");
/// assert!(rbac.authorize("alice", &[], &list).is_ok());
/// assert!(rbac.authorize("bob", &[], &list).is_err());
/// assert!(rbac.authorize("alice", &[], &RbacRequest::resource("list", "", "pods", "prod")).is_err());
/// ```
#[derive(Debug)]
pub struct RbacAuthorizer {
    policy: rbac::Policy,
}

/// What a request asks to do, as [`RbacAuthorizer`] sees it (upstream's authorizer
/// attributes).
#[derive(Debug, Clone)]
pub struct RbacRequest(Attributes);

impl RbacRequest {
    /// `verb` on `resource` of API `group` in `namespace` (`""`: cluster scope).
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str) -> Self {
        Self(Attributes::resource(verb, group, resource, namespace))
    }

    /// The request names one object.
    pub fn name(mut self, name: &str) -> Self {
        self.0.name = name.into();
        self
    }

    /// The request is on a subresource (`status`, `log`, ...).
    pub fn subresource(mut self, subresource: &str) -> Self {
        self.0.subresource = subresource.into();
        self
    }

    /// `verb` (`get`, `post`, ...) on a path that is no resource (`/healthz`, `/metrics`).
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Self(Attributes::non_resource(verb, path))
    }
}

impl RbacAuthorizer {
    /// Decisions over these objects (JSON, as served); objects that do not parse are
    /// ignored, and a binding to a missing role grants nothing.
    pub fn new(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_role_bindings: &[Value],
        role_bindings: &[Value],
    ) -> Self {
        let arcs = |v: &[Value]| v.iter().cloned().map(Arc::new).collect::<Vec<_>>();
        Self {
            policy: rbac::Policy::build(
                &arcs(cluster_roles),
                &arcs(roles),
                &arcs(cluster_role_bindings),
                &arcs(role_bindings),
            ),
        }
    }

    /// Whether `user` in `groups` may do `request`; `Err` with upstream's reason when not
    /// (empty when no rule matched and every role resolved). The groups are taken as
    /// given (an authenticated user also has `system:authenticated`).
    pub fn authorize(
        &self,
        user: &str,
        groups: &[String],
        request: &RbacRequest,
    ) -> Result<(), String> {
        self.policy.decide(user, groups, &request.0)
    }
}
