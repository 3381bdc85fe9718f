//! Role-based access control (`rbac.authorization.k8s.io/v1`): upstream's rule matching
//! (`RuleAllows`), the bindings that apply to a user, the authorizer over a snapshot of
//! the stored Roles and bindings, and the coverage check behind escalation prevention.
//!
//! The snapshot ([`Policy`]) indexes bindings by subject (user name, group), with each
//! binding's role resolved, so a decision looks at the bindings of the user's own name and
//! groups only. It is rebuilt when the watch cache shows a different set of RBAC objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::Value;

use super::request::Attributes;
use super::UserInfo;

/// The API group of RBAC.
pub(crate) const GROUP: &str = "rbac.authorization.k8s.io";

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// Whether one entry of a rule's `resources` names `resource` (with `subresource`, may be
/// empty): `*`, the exact `resource/subresource` (or the resource alone), or
/// `*/subresource` (upstream's `ResourceMatches`), compared without building the
/// combined name.
fn resource_entry_matches(entry: &str, resource: &str, subresource: &str) -> bool {
    if entry == "*" {
        return true;
    }
    if subresource.is_empty() {
        return entry == resource;
    }
    match entry.split_once('/') {
        Some((r, sub)) => sub == subresource && (r == "*" || r == resource),
        None => false,
    }
}

fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    rule.resources
        .iter()
        .flatten()
        .any(|r| resource_entry_matches(r, resource, subresource))
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls
        .iter()
        .flatten()
        .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p)))
}

/// Whether `rule` allows the request `a` (upstream's `RuleAllows`).
pub(crate) fn rule_allows(a: &Attributes, rule: &PolicyRule) -> bool {
    if !has(&rule.verbs, &a.verb) {
        return false;
    }
    if !a.resource_request {
        return non_resource_url_matches(rule, &a.path);
    }
    has(rule.api_groups.as_deref().unwrap_or_default(), &a.group)
        && resource_matches(rule, &a.resource, &a.subresource)
        && rule
            .resource_names
            .as_ref()
            .is_none_or(|n| n.is_empty() || n.iter().any(|x| x == &a.name))
}

/// Who a binding subject names, as a key of [`Policy`]'s indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Group(String),
}

fn subject_key(s: &Subject, binding_namespace: &str) -> Option<Key> {
    match s.kind.as_str() {
        "User" => Some(Key::User(s.name.clone())),
        "Group" => Some(Key::Group(s.name.clone())),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            Some(Key::User(format!("system:serviceaccount:{ns}:{}", s.name)))
        }
        _ => None,
    }
}

/// The rules a binding grants, or why its role cannot be found.
type Grant = Result<Arc<Vec<PolicyRule>>, String>;

/// The bindings of one scope (cluster-wide, or one namespace) by subject: user names
/// and groups apart, so that a decision looks them up by `&str` without building a key.
#[derive(Debug, Default)]
struct Subjects {
    users: HashMap<String, Vec<Grant>>,
    groups: HashMap<String, Vec<Grant>>,
}

impl Subjects {
    fn add(&mut self, key: Key, grant: Grant) {
        let (map, name) = match key {
            Key::User(n) => (&mut self.users, n),
            Key::Group(n) => (&mut self.groups, n),
        };
        map.entry(name).or_default().push(grant);
    }

    /// The grants of bindings to `user` (its name, then each of its groups).
    fn of<'a>(&'a self, user: &'a str, groups: &'a [String]) -> impl Iterator<Item = &'a Grant> {
        let named = self.users.get(user).into_iter().flatten();
        named.chain(
            groups
                .iter()
                .filter_map(|g| self.groups.get(g.as_str()))
                .flatten(),
        )
    }
}

/// A snapshot of the stored RBAC objects, indexed for decisions.
///
/// A decision looks up the user's name and groups in the cluster-wide index, then in
/// its namespace's, and matches the rules of those bindings only; it allocates nothing
/// unless it refuses with an unresolved role to report.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
    /// ClusterRoleBindings by subject.
    cluster: Subjects,
    /// RoleBindings by namespace, then subject.
    namespaced: HashMap<String, Subjects>,
}

fn rules_of(v: Option<Vec<PolicyRule>>) -> Arc<Vec<PolicyRule>> {
    Arc::new(v.unwrap_or_default())
}

impl Policy {
    /// Builds the snapshot from stored objects (JSON, as served).
    pub(crate) fn build(
        cluster_roles: &[Arc<Value>],
        roles: &[Arc<Value>],
        cluster_bindings: &[Arc<Value>],
        bindings: &[Arc<Value>],
    ) -> Self {
        fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
            T::deserialize(v).ok()
        }
        let mut p = Policy::default();
        for cr in cluster_roles.iter().filter_map(|v| parse::<ClusterRole>(v)) {
            let name = cr.metadata.name.unwrap_or_default();
            p.cluster_roles.insert(name, rules_of(cr.rules));
        }
        for r in roles.iter().filter_map(|v| parse::<Role>(v)) {
            let key = (
                r.metadata.namespace.unwrap_or_default(),
                r.metadata.name.unwrap_or_default(),
            );
            p.roles.insert(key, rules_of(r.rules));
        }
        for b in cluster_bindings
            .iter()
            .filter_map(|v| parse::<ClusterRoleBinding>(v))
        {
            let grant = p.resolve(&b.role_ref, "");
            for s in b.subjects.iter().flatten() {
                if let Some(k) = subject_key(s, "") {
                    p.cluster.add(k, grant.clone());
                }
            }
        }
        for b in bindings.iter().filter_map(|v| parse::<RoleBinding>(v)) {
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let grant = p.resolve(&b.role_ref, &ns);
            let idx = p.namespaced.entry(ns.clone()).or_default();
            for s in b.subjects.iter().flatten() {
                if let Some(k) = subject_key(s, &ns) {
                    idx.add(k, grant.clone());
                }
            }
        }
        p
    }

    /// The rules a role reference grants in `namespace` (upstream's
    /// `GetRoleReferenceRules`).
    pub(crate) fn resolve(&self, r: &RoleRef, namespace: &str) -> Grant {
        match r.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&r.name)
                .cloned()
                .ok_or_else(|| format!("clusterrole.{GROUP} {:?} not found", r.name)),
            "Role" => self
                .roles
                .get(&(namespace.to_owned(), r.name.clone()))
                .cloned()
                .ok_or_else(|| format!("role.{GROUP} {:?} not found", r.name)),
            k => Err(format!("unsupported role reference kind: {k:?}")),
        }
    }

    /// The grants of the bindings that apply to `user` in `groups` in `namespace`
    /// (cluster-wide bindings first, then the namespace's; `""`: cluster-wide only).
    fn grants<'a>(
        &'a self,
        user: &'a str,
        groups: &'a [String],
        namespace: &str,
    ) -> impl Iterator<Item = &'a Grant> {
        let local = (!namespace.is_empty())
            .then(|| self.namespaced.get(namespace))
            .flatten();
        self.cluster
            .of(user, groups)
            .chain(local.into_iter().flat_map(move |s| s.of(user, groups)))
    }

    /// Decides `a` for `user`: allowed, or the reason it is not (empty when no rule
    /// matched and every role resolved, as upstream).
    pub(crate) fn authorize(&self, user: &UserInfo, a: &Attributes) -> Result<(), String> {
        self.decide(&user.username, &user.groups, a)
    }

    /// [`Policy::authorize`] for a user given by name and groups.
    pub(crate) fn decide(
        &self,
        user: &str,
        groups: &[String],
        a: &Attributes,
    ) -> Result<(), String> {
        let mut unresolved = false;
        for g in self.grants(user, groups, &a.namespace) {
            match g {
                Ok(rules) if rules.iter().any(|r| rule_allows(a, r)) => return Ok(()),
                Ok(_) => {}
                Err(_) => unresolved = true,
            }
        }
        if !unresolved {
            return Err(String::new());
        }
        // a refusal that names the roles it could not find: collected only now
        let mut errors: Vec<&str> = Vec::new();
        for e in self
            .grants(user, groups, &a.namespace)
            .filter_map(|g| g.as_ref().err())
        {
            if !errors.contains(&e.as_str()) {
                errors.push(e);
            }
        }
        Err(format!("RBAC: {}", errors.join(", ")))
    }

    /// Every rule that applies to `user` in `namespace` (`""`: cluster-wide only), and the
    /// roles that could not be resolved.
    pub(crate) fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for g in self.grants(&user.username, &user.groups, namespace) {
            match g {
                Ok(r) => rules.extend(r.iter().cloned()),
                Err(e) if !errors.contains(e) => errors.push(e.clone()),
                Err(_) => {}
            }
        }
        (rules, errors)
    }
}

/// One permission, broken down: a verb on one group/resource (and name), or on a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Atom {
    group: Option<String>,
    resource: Option<String>,
    name: Option<String>,
    url: Option<String>,
    verb: String,
}

fn atoms(rule: &PolicyRule) -> Vec<Atom> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                let names: Vec<Option<String>> = match rule.resource_names.as_deref() {
                    Some(n) if !n.is_empty() => n.iter().cloned().map(Some).collect(),
                    _ => vec![None],
                };
                for name in names {
                    out.push(Atom {
                        group: Some(g.clone()),
                        resource: Some(r.clone()),
                        name,
                        url: None,
                        verb: verb.clone(),
                    });
                }
            }
        }
        for u in rule.non_resource_urls.iter().flatten() {
            out.push(Atom {
                group: None,
                resource: None,
                name: None,
                url: Some(u.clone()),
                verb: verb.clone(),
            });
        }
    }
    out
}

/// Whether an owner's resource entry covers a requested one (upstream's
/// `resourceCoversAll`): `*`, equal, `*/sub` for any `x/sub`, `x/*` for any `x/sub`.
fn resource_covers(owner: &str, requested: &str) -> bool {
    if owner == "*" || owner == requested {
        return true;
    }
    if let Some((r, sub)) = requested.split_once('/') {
        if owner == format!("*/{sub}") || owner == format!("{r}/*") {
            return true;
        }
    }
    false
}

fn covers(owner: &PolicyRule, a: &Atom) -> bool {
    if !has(&owner.verbs, &a.verb) {
        return false;
    }
    if let Some(url) = &a.url {
        return owner.non_resource_urls.iter().flatten().any(|o| {
            o == "*" || o == url || o.strip_suffix('*').is_some_and(|p| url.starts_with(p))
        });
    }
    let (Some(g), Some(r)) = (&a.group, &a.resource) else {
        return false;
    };
    has(owner.api_groups.as_deref().unwrap_or_default(), g)
        && owner
            .resources
            .iter()
            .flatten()
            .any(|o| resource_covers(o, r))
        && match owner.resource_names.as_deref() {
            None | Some([]) => true,
            Some(names) => a.name.as_ref().is_some_and(|n| names.contains(n)),
        }
}

/// The parts of `requested` that no rule of `owned` covers, compacted as upstream prints
/// them (`{APIGroups:["apps"], Resources:["deployments"], Verbs:["get" "list"]}`), one
/// per line; empty when everything is covered.
pub(crate) fn uncovered(owned: &[PolicyRule], requested: &[PolicyRule]) -> Vec<String> {
    // (group, resource, name, url) -> verbs
    type Target = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut missing: BTreeMap<Target, Vec<String>> = BTreeMap::new();
    for rule in requested {
        for a in atoms(rule) {
            if !owned.iter().any(|o| covers(o, &a)) {
                let verbs = missing
                    .entry((
                        a.group.clone(),
                        a.resource.clone(),
                        a.name.clone(),
                        a.url.clone(),
                    ))
                    .or_default();
                if !verbs.contains(&a.verb) {
                    verbs.push(a.verb);
                }
            }
        }
    }
    let q = |v: &[String]| {
        let parts: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", parts.join(" "))
    };
    missing
        .into_iter()
        .map(|((g, r, n, u), verbs)| {
            let mut parts = Vec::new();
            if let Some(g) = g {
                parts.push(format!("APIGroups:{}", q(&[g])));
            }
            if let Some(r) = r {
                parts.push(format!("Resources:{}", q(&[r])));
            }
            if let Some(u) = u {
                parts.push(format!("NonResourceURLs:{}", q(&[u])));
            }
            if let Some(n) = n {
                parts.push(format!("ResourceNames:{}", q(&[n])));
            }
            parts.push(format!("Verbs:{}", q(&verbs)));
            format!("{{{}}}", parts.join(", "))
        })
        .collect()
}

/// The policy snapshot, rebuilt when the set of stored RBAC objects changes.
///
/// A request first asks [`PolicyCache::at`] with the watch cache's revision of the last
/// RBAC change, which answers without looking at the objects while nothing changed; else
/// the objects are read and compared by identity, and the snapshot is rebuilt only when
/// they differ.
#[derive(Default)]
pub(crate) struct PolicyCache {
    /// Read by every request (a shared lock: readers do not wait for each other), written
    /// only when the RBAC objects change.
    memo: RwLock<Option<Memo>>,
}

struct Memo {
    /// The identity of each object the snapshot was built from.
    fingerprint: Vec<usize>,
    /// The revision of the last RBAC change it reflects, when known.
    revision: Option<u64>,
    policy: Arc<Policy>,
}

impl PolicyCache {
    /// The snapshot, if it reflects the RBAC change at `revision`.
    pub(crate) fn at(&self, revision: u64) -> Option<Arc<Policy>> {
        let memo = self.memo.read().unwrap_or_else(|e| e.into_inner());
        memo.as_ref()
            .filter(|m| m.revision == Some(revision))
            .map(|m| Arc::clone(&m.policy))
    }

    /// The current snapshot for these objects (cluster roles, roles, cluster role
    /// bindings, role bindings), read when the last RBAC change was at `revision`;
    /// reusing the last one when they are the same objects.
    pub(crate) fn get(&self, objects: [&[Arc<Value>]; 4], revision: Option<u64>) -> Arc<Policy> {
        let fingerprint: Vec<usize> = objects
            .iter()
            .flat_map(|l| l.iter().map(|o| Arc::as_ptr(o) as usize).chain([0]))
            .collect();
        let mut memo = self.memo.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = memo.as_mut().filter(|m| m.fingerprint == fingerprint) {
            m.revision = revision;
            return Arc::clone(&m.policy);
        }
        let policy = Arc::new(Policy::build(
            objects[0], objects[1], objects[2], objects[3],
        ));
        *memo = Some(Memo {
            fingerprint,
            revision,
            policy: Arc::clone(&policy),
        });
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            path: String::new(),
            field_selector: String::new(),
        }
    }

    #[test]
    fn rules_match_as_upstreams_rule_allows() {
        let pods_read = rule(
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}),
        );
        let logs = rule(json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}));
        let any_status =
            rule(json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["update"]}));
        let named = rule(
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["*"]}),
        );
        let urls = rule(json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}));
        let cases: Vec<(&PolicyRule, Attributes, bool)> = vec![
            (&pods_read, res("get", "", "pods", "", "d", "p"), true),
            (&pods_read, res("watch", "", "pods", "", "d", ""), true),
            (&pods_read, res("delete", "", "pods", "", "d", "p"), false),
            (&pods_read, res("get", "apps", "pods", "", "d", "p"), false),
            (&pods_read, res("get", "", "pods", "log", "d", "p"), false),
            (&logs, res("get", "", "pods", "log", "d", "p"), true),
            (&logs, res("get", "", "pods", "", "d", "p"), false),
            (
                &any_status,
                res("update", "apps", "deployments", "status", "", "x"),
                true,
            ),
            (
                &any_status,
                res("update", "apps", "deployments", "", "", "x"),
                false,
            ),
            (
                &named,
                res("delete", "", "configmaps", "", "d", "cfg"),
                true,
            ),
            (
                &named,
                res("delete", "", "configmaps", "", "d", "other"),
                false,
            ),
            (&named, res("list", "", "configmaps", "", "d", ""), false),
            (&urls, Attributes::non_resource("get", "/healthz"), true),
            (
                &urls,
                Attributes::non_resource("get", "/apis/apps/v1"),
                true,
            ),
            (&urls, Attributes::non_resource("post", "/healthz"), false),
            (&urls, Attributes::non_resource("get", "/api"), false),
            (&urls, res("get", "", "healthz", "", "", ""), false),
        ];
        for (r, a, want) in cases {
            assert_eq!(rule_allows(&a, r), want, "{a:?} against {r:?}");
        }
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    #[test]
    fn bindings_grant_their_roles_to_their_subjects_where_they_apply() {
        let v = |x: Value| vec![Arc::new(x)];
        let crs = v(
            json!({"metadata": {"name": "view"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
        );
        let roles = v(
            json!({"metadata": {"name": "cm", "namespace": "a"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}),
        );
        let crbs = v(
            json!({"metadata": {"name": "ops-view"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "apiGroup": GROUP, "name": "ops"}]}),
        );
        let mut rbs = v(
            json!({"metadata": {"name": "alice", "namespace": "a"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": GROUP, "name": "alice"}, {"kind": "ServiceAccount", "name": "app"}]}),
        );
        rbs.push(Arc::new(json!({"metadata": {"name": "cm", "namespace": "a"}, "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "cm"},
            "subjects": [{"kind": "User", "apiGroup": GROUP, "name": "alice"}]})));
        rbs.push(Arc::new(json!({"metadata": {"name": "gone", "namespace": "b"}, "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "missing"},
            "subjects": [{"kind": "User", "apiGroup": GROUP, "name": "alice"}]})));
        let p = Policy::build(&crs, &roles, &crbs, &rbs);
        let alice = user("alice", &["system:authenticated"]);
        let sa = user("system:serviceaccount:a:app", &["system:serviceaccounts"]);
        let bob = user("bob", &["ops"]);
        assert!(p
            .authorize(&alice, &res("list", "", "pods", "", "a", ""))
            .is_ok());
        assert!(p
            .authorize(&alice, &res("create", "", "configmaps", "", "a", ""))
            .is_ok());
        assert_eq!(
            p.authorize(&alice, &res("list", "", "pods", "", "c", "")),
            Err(String::new())
        );
        assert_eq!(
            p.authorize(&alice, &res("list", "", "pods", "", "", "")),
            Err(String::new())
        );
        assert_eq!(
            p.authorize(&alice, &res("list", "", "pods", "", "b", "")),
            Err(format!("RBAC: role.{GROUP} \"missing\" not found"))
        );
        assert!(p
            .authorize(&sa, &res("get", "", "pods", "", "a", "x"))
            .is_ok());
        assert!(p
            .authorize(&sa, &res("get", "", "pods", "", "b", "x"))
            .is_err());
        assert!(p
            .authorize(&bob, &res("get", "", "pods", "", "any", "x"))
            .is_ok());
        assert!(p
            .authorize(&bob, &res("get", "", "pods", "", "", ""))
            .is_ok());
        assert!(p
            .authorize(&bob, &res("get", "", "secrets", "", "any", "x"))
            .is_err());
        let (rules, _) = p.rules_for(&alice, "a");
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn coverage_finds_what_a_new_role_would_add() {
        let owned = vec![
            rule(
                json!({"apiGroups": [""], "resources": ["pods", "pods/*"], "verbs": ["get", "list"]}),
            ),
            rule(json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]})),
            rule(
                json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]}),
            ),
            rule(json!({"nonResourceURLs": ["/metrics*"], "verbs": ["get"]})),
        ];
        let ok = vec![
            rule(json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]})),
            rule(
                json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]}),
            ),
            rule(
                json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]}),
            ),
            rule(json!({"nonResourceURLs": ["/metrics/x"], "verbs": ["get"]})),
        ];
        assert!(uncovered(&owned, &ok).is_empty());
        let bad = vec![
            rule(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]})),
            rule(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]})),
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]})),
        ];
        assert_eq!(
            uncovered(&owned, &bad),
            [
                r#"{APIGroups:[""], Resources:["configmaps"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}"#,
            ]
        );
    }
}
