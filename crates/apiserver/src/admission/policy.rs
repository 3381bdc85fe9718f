//! ValidatingAdmissionPolicies in the admission chain (upstream's
//! `plugin/policy/validating`): for each policy with bindings whose
//! `matchConstraints` select the request, each binding whose `matchResources` (if any)
//! select it too is evaluated once per parameter object (`paramRef`: by name or by
//! selector, in the request's namespace unless the binding names one): the policy's
//! `matchConditions`, then its `variables` (in order; each sees the ones before it as
//! `variables.<name>`), then its `validations`.
//!
//! A validation that is false fails with its `messageExpression`'s result, else its
//! `message`, else `failed expression: <expression>`, and its `reason` (default
//! `Invalid`, which answers 422; `Forbidden` 403, `Unauthorized` 401,
//! `RequestEntityTooLarge` 413). An expression that fails to evaluate follows the
//! policy's `failurePolicy`. Each failure goes through the binding's
//! `validationActions`: `Deny` refuses the request with upstream's
//! `<resource> "<name>" is forbidden: ValidatingAdmissionPolicy '<policy>' with binding
//! '<binding>' denied request: <message>`, `Warn` adds the `Warning` header
//! `Validation failed for ValidatingAdmissionPolicy '<policy>' with binding '<binding>':
//! <message>`, `Audit` is logged (kcore writes no audit log). A binding that cannot
//! get its parameters (unknown `paramKind`, `Deny` when none is found) refuses the
//! request with `failed to configure binding: …` unless the policy's failurePolicy is
//! `Ignore`.
//!
//! Not done: `auditAnnotations` are validated but not evaluated (no audit log), the
//! `authorizer` variable, and type checking (`status.typeChecking` stays empty).

use std::sync::{Arc, Mutex};

use kcore_schema::Bindings;
use serde_json::{json, Map, Value};

use super::conditions::{Compiled, MatchConditions, POLICY_VARIABLES};
use super::matching::{self, Rule};
use super::{add_warnings_list, admission_request, forbidden, Request, EXEMPT_GROUP};
use crate::api::{Api, ListOptions};
use crate::error::ApiError;
use crate::resources::{self, ResourceInfo};
use crate::selectors::LabelSelector;

/// A resource rule with its `resourceNames`.
#[derive(Debug)]
struct NamedRule {
    rule: Rule,
    names: Vec<String>,
}

/// `matchConstraints` of a policy or `matchResources` of a binding.
#[derive(Debug)]
struct MatchResources {
    rules: Vec<NamedRule>,
    exclude: Vec<NamedRule>,
    equivalent: bool,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
}

fn named_rules(v: &Value) -> Vec<NamedRule> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| NamedRule {
            rule: Rule::parse(r),
            names: r["resourceNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

impl MatchResources {
    fn parse(m: &Value) -> Result<Self, String> {
        let selector = |f: &str| {
            if m[f].is_null() {
                Ok(LabelSelector::default())
            } else {
                LabelSelector::from_object(&m[f])
            }
        };
        Ok(Self {
            rules: named_rules(&m["resourceRules"]),
            exclude: named_rules(&m["excludeResourceRules"]),
            equivalent: m["matchPolicy"].as_str() != Some("Exact"),
            namespace_selector: selector("namespaceSelector")?,
            object_selector: selector("objectSelector")?,
        })
    }

    /// The resource `rules` match the request as (upstream's `matchesResourceRules`).
    fn matched<'a>(&self, rules: &[NamedRule], req: &Request<'a>) -> Option<&'a ResourceInfo> {
        let sub = req.sub.map_or("", |s| s.name());
        let namespaced = req.info.namespaced && req.namespace.is_some();
        matching::matched_with(req, self.equivalent, |i| {
            rules.iter().any(|r| {
                r.rule
                    .matches(req.op, (&i.group, &i.version, &i.plural), sub, namespaced)
                    && (r.names.is_empty() || r.names.iter().any(|n| n == req.name))
            })
        })
    }
}

/// One `validations` entry.
#[derive(Debug)]
struct Validation {
    expression: Compiled,
    message: Option<String>,
    message_expression: Option<Compiled>,
    reason: Option<String>,
}

/// A compiled ValidatingAdmissionPolicy.
#[derive(Debug)]
pub(crate) struct Policy {
    name: String,
    fail_open: bool,
    constraints: Result<MatchResources, String>,
    param_kind: Option<(String, String)>,
    match_conditions: MatchConditions,
    variables: Vec<(String, Compiled)>,
    validations: Vec<Validation>,
}

impl Policy {
    fn parse(p: &Value) -> Self {
        let spec = &p["spec"];
        let compile = |v: &Value| Compiled::new(v.as_str().unwrap_or_default(), POLICY_VARIABLES);
        Self {
            name: p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            fail_open: spec["failurePolicy"].as_str() == Some("Ignore"),
            constraints: MatchResources::parse(&spec["matchConstraints"]),
            param_kind: spec["paramKind"].as_object().map(|pk| {
                let s = |k: &str| {
                    pk.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                (s("apiVersion"), s("kind"))
            }),
            match_conditions: MatchConditions::parse(&spec["matchConditions"], POLICY_VARIABLES),
            variables: spec["variables"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_owned(),
                        compile(&v["expression"]),
                    )
                })
                .collect(),
            validations: spec["validations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| Validation {
                    expression: compile(&v["expression"]),
                    message: v["message"].as_str().map(str::to_owned),
                    message_expression: v
                        .get("messageExpression")
                        .filter(|m| m.is_string())
                        .map(compile),
                    reason: v["reason"].as_str().map(str::to_owned),
                })
                .collect(),
        }
    }
}

/// What a binding's failures do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Deny,
    Warn,
    Audit,
}

/// `paramRef`.
#[derive(Debug)]
struct ParamRef {
    name: Option<String>,
    namespace: Option<String>,
    selector: Option<LabelSelector>,
    deny_if_missing: bool,
}

/// A compiled ValidatingAdmissionPolicyBinding.
#[derive(Debug)]
pub(crate) struct Binding {
    name: String,
    match_resources: Option<Result<MatchResources, String>>,
    param_ref: Option<ParamRef>,
    actions: Vec<Action>,
}

impl Binding {
    fn parse(b: &Value) -> Self {
        let spec = &b["spec"];
        let pr = &spec["paramRef"];
        let non_empty = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        Self {
            name: b["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            match_resources: spec
                .get("matchResources")
                .filter(|m| m.is_object())
                .map(MatchResources::parse),
            param_ref: pr.is_object().then(|| ParamRef {
                name: non_empty(&pr["name"]),
                namespace: non_empty(&pr["namespace"]),
                selector: (!pr["selector"].is_null())
                    .then(|| LabelSelector::from_object(&pr["selector"]).ok())
                    .flatten(),
                deny_if_missing: pr["parameterNotFoundAction"].as_str() == Some("Deny"),
            }),
            actions: spec["validationActions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| match a.as_str()? {
                    "Deny" => Some(Action::Deny),
                    "Warn" => Some(Action::Warn),
                    "Audit" => Some(Action::Audit),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// Policies that have bindings, each with its bindings (both by name).
pub(crate) type Bound = Arc<Vec<(Arc<Policy>, Vec<Arc<Binding>>)>>;

/// The compiled policies, recompiled only when a policy or binding changes.
#[derive(Default)]
pub(crate) struct Memo {
    versions: Vec<String>,
    bound: Bound,
}

fn versions(objs: &[Arc<Value>]) -> impl Iterator<Item = String> + '_ {
    objs.iter().map(|c| {
        format!(
            "{}@{}",
            c["metadata"]["name"].as_str().unwrap_or_default(),
            c["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
        )
    })
}

/// The current policies with their bindings.
pub(crate) async fn bound(api: &Api, memo: &Mutex<Memo>) -> Result<Bound, ApiError> {
    let lookup = |plural| resources::lookup(EXEMPT_GROUP, "v1", plural).expect("served");
    let bindings = api
        .current_objects(lookup("validatingadmissionpolicybindings"))
        .await?;
    if bindings.is_empty() {
        return Ok(Bound::default());
    }
    let policies = api
        .current_objects(lookup("validatingadmissionpolicies"))
        .await?;
    let v: Vec<String> = versions(&policies).chain(versions(&bindings)).collect();
    {
        let m = memo.lock().unwrap_or_else(|e| e.into_inner());
        if m.versions == v {
            return Ok(Arc::clone(&m.bound));
        }
    }
    // The cache lists cluster-scoped objects by name.
    let bound: Vec<(Arc<Policy>, Vec<Arc<Binding>>)> = policies
        .iter()
        .filter_map(|p| {
            let name = p["metadata"]["name"].as_str()?;
            let mine: Vec<Arc<Binding>> = bindings
                .iter()
                .filter(|b| b["spec"]["policyName"] == name)
                .map(|b| Arc::new(Binding::parse(b)))
                .collect();
            (!mine.is_empty()).then(|| (Arc::new(Policy::parse(p)), mine))
        })
        .collect();
    let bound = Arc::new(bound);
    *memo.lock().unwrap_or_else(|e| e.into_inner()) = Memo {
        versions: v,
        bound: Arc::clone(&bound),
    };
    Ok(bound)
}

/// A failed validation (or a failure to evaluate one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub message: String,
    /// `reason` of the validation; empty for errors (upstream answers Invalid).
    pub reason: String,
}

/// The values one evaluation sees.
pub(crate) struct Inputs<'v> {
    pub object: &'v Value,
    pub old_object: &'v Value,
    pub request: &'v Value,
    pub params: &'v Value,
    pub namespace_object: &'v Value,
}

/// Evaluates a policy for one binding and parameter: the failed validations.
pub(crate) fn evaluate(policy: &Policy, inputs: &Inputs<'_>) -> Vec<Decision> {
    let _span =
        tracing::debug_span!("validating_admission_policy", policy = %policy.name).entered();
    let base = Bindings::new()
        .bind("object", inputs.object)
        .bind("oldObject", inputs.old_object)
        .bind("request", inputs.request)
        .bind("params", inputs.params)
        .bind("namespaceObject", inputs.namespace_object);
    let error = |message: String| Decision {
        message,
        reason: String::new(),
    };
    let mut budget = super::conditions::limits().per_object;
    // Variables, each seeing the ones before it; one that fails is left out, so an
    // expression that reads it fails.
    let mut vars = Map::new();
    for (name, c) in &policy.variables {
        let so_far = Value::Object(vars.clone());
        let b = base.clone().bind("variables", &so_far);
        match c.evaluate(&b, &mut budget) {
            Ok(v) => {
                vars.insert(name.clone(), v);
            }
            Err(e) => tracing::debug!(variable = %name, error = %e, "policy variable failed"),
        }
    }
    let vars = Value::Object(vars);
    let b = base.bind("variables", &vars);
    if !policy.match_conditions.is_empty() {
        match policy.match_conditions.matches(&b, policy.fail_open) {
            Ok(true) => {}
            Ok(false) => return Vec::new(),
            Err(e) => return vec![error(e)],
        }
    }
    let mut out = Vec::new();
    for v in &policy.validations {
        match v.expression.evaluate_bool(&b, &mut budget) {
            Ok(true) => {}
            Err(_) if policy.fail_open => {}
            Err(e) => out.push(error(e)),
            Ok(false) => {
                let from_expression = v
                    .message_expression
                    .as_ref()
                    .and_then(|m| m.evaluate(&b, &mut budget).ok())
                    .and_then(|m| m.as_str().map(|s| s.trim().to_owned()))
                    .filter(|m| !m.is_empty() && !m.contains('\n') && m.len() <= 5 * 1024);
                let message = from_expression
                    .or_else(|| {
                        v.message
                            .as_deref()
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| {
                        format!("failed expression: {}", v.expression.source().trim())
                    });
                out.push(Decision {
                    message,
                    reason: v.reason.clone().unwrap_or_else(|| "Invalid".to_owned()),
                });
            }
        }
    }
    out
}

/// Upstream's `reasonToCode`.
fn reason_code(reason: &str) -> u16 {
    match reason {
        "Forbidden" => 403,
        "Unauthorized" => 401,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

/// The error of the first denial, as upstream words it.
fn denial(req: &Request<'_>, policy: &str, binding: &str, d: &Decision) -> ApiError {
    let message = format!(
        "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}",
        d.message
    );
    let mut e = forbidden(req.info, req.name, &message);
    e.reason = if d.reason.is_empty() {
        "Invalid".to_owned()
    } else {
        d.reason.clone()
    };
    e.code = reason_code(&e.reason);
    if let Some(causes) = e.details.as_mut().and_then(|d| d["causes"].as_array_mut()) {
        causes.push(json!({"message": message}));
    }
    e
}

impl Api {
    /// The parameter objects of a binding (`[null]` when the policy takes none).
    async fn collect_params(
        &self,
        policy: &Policy,
        binding: &Binding,
        req: &Request<'_>,
    ) -> Result<Vec<Value>, String> {
        let (Some((api_version, kind)), Some(pr)) = (&policy.param_kind, &binding.param_ref) else {
            return Ok(vec![Value::Null]);
        };
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let Some(info) = self
            .registry()
            .all()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind.as_str())
        else {
            return Err(format!(
                "paramKind kind `&ParamKind{{APIVersion:{api_version},Kind:{kind},}}` not known"
            ));
        };
        let namespace = if info.namespaced {
            let own = req
                .namespace
                .filter(|_| req.info.namespaced)
                .map(str::to_owned);
            match pr.namespace.clone().or(own) {
                Some(ns) => Some(ns),
                None => {
                    return Err("cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".to_owned())
                }
            }
        } else if pr.namespace.is_some() {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
                    .to_owned(),
            );
        } else {
            None
        };
        let params = match (&pr.name, &pr.selector) {
            (Some(name), _) => match self.get_in(&info, namespace.as_deref(), name).await {
                Ok(p) => vec![p],
                Err(e) if e.code == 404 => Vec::new(),
                Err(e) => return Err(e.message),
            },
            (None, selector) => {
                let list = self
                    .list_in(&info, namespace.as_deref(), &ListOptions::default())
                    .await
                    .map_err(|e| e.message)?;
                list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| selector.as_ref().is_none_or(|s| s.matches(p)))
                    .cloned()
                    .collect()
            }
        };
        if params.is_empty() && pr.deny_if_missing {
            return Err(
                "no params found for policy binding with `Deny` parameterNotFoundAction".to_owned(),
            );
        }
        Ok(params)
    }

    /// The resource `m` selects the request as, if it does.
    async fn selects<'a>(
        &self,
        m: &MatchResources,
        req: &Request<'a>,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Option<&'a ResourceInfo> {
        if !matching::object_selected(&m.object_selector, obj, old)
            || !self
                .namespace_selected(&m.namespace_selector, req, obj, old)
                .await
            || m.matched(&m.exclude, req).is_some()
        {
            return None;
        }
        m.matched(&m.rules, req)
    }

    /// Runs the bound policies on a request (`obj` absent on delete, `old` on create).
    pub(crate) async fn run_policies(
        &self,
        bound: &Bound,
        req: &Request<'_>,
        obj: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let mut denied: Option<ApiError> = None;
        let mut namespace_object: Option<Value> = None;
        let uid = uuid::Uuid::new_v4().to_string();
        for (policy, bindings) in bound.iter() {
            let constraints = match &policy.constraints {
                Ok(c) => c,
                Err(e) => {
                    if !policy.fail_open && denied.is_none() {
                        let d = Decision {
                            message: format!("failed to configure policy: {e}"),
                            reason: String::new(),
                        };
                        denied = Some(denial(req, &policy.name, "", &d));
                    }
                    continue;
                }
            };
            let Some(matched) = self.selects(constraints, req, obj, old).await else {
                continue;
            };
            let request = admission_request(req, matched, &uid);
            if namespace_object.is_none() {
                namespace_object = Some(self.namespace_object(req).await.unwrap_or(Value::Null));
            }
            let ns_obj = namespace_object.as_ref().unwrap_or(&Value::Null);
            for binding in bindings {
                let selected = match &binding.match_resources {
                    None => true,
                    Some(Ok(m)) => self.selects(m, req, obj, old).await.is_some(),
                    Some(Err(_)) => false,
                };
                if !selected {
                    continue;
                }
                let params = match self.collect_params(policy, binding, req).await {
                    Ok(p) => p,
                    Err(e) => {
                        if !policy.fail_open && denied.is_none() {
                            let d = Decision {
                                message: format!("failed to configure binding: {e}"),
                                reason: String::new(),
                            };
                            denied = Some(denial(req, &policy.name, &binding.name, &d));
                        }
                        continue;
                    }
                };
                for param in &params {
                    let inputs = Inputs {
                        object: obj.unwrap_or(&Value::Null),
                        old_object: old.unwrap_or(&Value::Null),
                        request: &request,
                        params: param,
                        namespace_object: ns_obj,
                    };
                    for d in evaluate(policy, &inputs) {
                        for action in &binding.actions {
                            match action {
                                Action::Deny => {
                                    if denied.is_none() {
                                        denied = Some(denial(req, &policy.name, &binding.name, &d));
                                    }
                                }
                                Action::Warn => add_warnings_list(vec![format!(
                                    "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                                    policy.name, binding.name, d.message
                                )]),
                                Action::Audit => tracing::info!(
                                    policy = %policy.name, binding = %binding.name,
                                    message = %d.message, "validation failure (audit)"
                                ),
                            }
                        }
                    }
                }
            }
        }
        denied.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: Value) -> Policy {
        let mut s = json!({"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [
            {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]}});
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        Policy::parse(&json!({"metadata": {"name": "p"}, "spec": s}))
    }

    fn run(p: &Policy, object: Value, params: Value) -> Vec<Decision> {
        let request = json!({"operation": "CREATE", "name": "x"});
        evaluate(
            p,
            &Inputs {
                object: &object,
                old_object: &Value::Null,
                request: &request,
                params: &params,
                namespace_object: &Value::Null,
            },
        )
    }

    #[test]
    fn messages_reasons_variables_and_failure_policy() {
        let deploy = json!({"spec": {"replicas": 7}, "metadata": {"name": "web"}});
        type Case = (Value, Value, Vec<(&'static str, &'static str)>);
        let table: Vec<Case> = vec![
            // the expression when there is no message
            (
                json!({"validations": [{"expression": "object.spec.replicas <= 5"}]}),
                Value::Null,
                vec![("failed expression: object.spec.replicas <= 5", "Invalid")],
            ),
            (
                json!({"validations": [{"expression": "object.spec.replicas <= 5", "message": " too many ", "reason": "Forbidden"}]}),
                Value::Null,
                vec![("too many", "Forbidden")],
            ),
            // messageExpression wins, falls back when it is not a usable string
            (
                json!({"validations": [{"expression": "object.spec.replicas <= params.max", "message": "m",
                "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > ' + string(params.max)"}]}),
                json!({"max": 5}),
                vec![("replicas 7 > 5", "Invalid")],
            ),
            (
                json!({"validations": [{"expression": "false", "message": "m", "messageExpression": "1"}]}),
                Value::Null,
                vec![("m", "Invalid")],
            ),
            (
                json!({"validations": [{"expression": "false", "message": "m", "messageExpression": "'a\\nb'"}]}),
                Value::Null,
                vec![("m", "Invalid")],
            ),
            // variables see the ones before them
            (
                json!({"variables": [{"name": "r", "expression": "object.spec.replicas"},
                                  {"name": "big", "expression": "variables.r > 5"}],
                    "validations": [{"expression": "!variables.big", "message": "big"}]}),
                Value::Null,
                vec![("big", "Invalid")],
            ),
            // match conditions gate the validations
            (
                json!({"matchConditions": [{"name": "not-web", "expression": "object.metadata.name != 'web'"}],
                    "validations": [{"expression": "false"}]}),
                Value::Null,
                vec![],
            ),
            // evaluation errors: Fail denies with the error, Ignore admits
            (
                json!({"validations": [{"expression": "object.spec.missing > 1"}]}),
                Value::Null,
                vec![(
                    "expression 'object.spec.missing > 1' resulted in error: no such key: missing",
                    "",
                )],
            ),
            (
                json!({"failurePolicy": "Ignore", "validations": [{"expression": "object.spec.missing > 1"}]}),
                Value::Null,
                vec![],
            ),
            (
                json!({"validations": [{"expression": "object.spec.replicas < 10"}]}),
                Value::Null,
                vec![],
            ),
        ];
        for (spec, params, want) in table {
            let got = run(&policy(spec.clone()), deploy.clone(), params);
            let got: Vec<(&str, &str)> = got
                .iter()
                .map(|d| (d.message.as_str(), d.reason.as_str()))
                .collect();
            assert_eq!(got, want, "{spec}");
        }
    }

    #[test]
    fn denial_words_and_codes() {
        let info = resources::lookup("apps", "v1", "deployments").unwrap();
        let req = Request {
            info,
            sub: None,
            op: super::super::Operation::Create,
            namespace: Some("default"),
            name: "web",
            dry_run: false,
        };
        let d = Decision {
            message: "failed expression: object.spec.replicas <= 5".into(),
            reason: "Invalid".into(),
        };
        let e = denial(&req, "demo", "demo-binding", &d);
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            e.message,
            "deployments.apps \"web\" is forbidden: ValidatingAdmissionPolicy 'demo' with binding 'demo-binding' denied request: failed expression: object.spec.replicas <= 5"
        );
        let forbidden = Decision {
            reason: "Forbidden".into(),
            ..d.clone()
        };
        assert_eq!(denial(&req, "p", "b", &forbidden).code, 403);
        let error = Decision {
            reason: String::new(),
            ..d
        };
        assert_eq!(denial(&req, "p", "b", &error).reason, "Invalid");
    }
}
