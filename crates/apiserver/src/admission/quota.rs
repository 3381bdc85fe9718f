//! ResourceQuota: the admission plugin and the controller that keeps `status.used`
//! current (upstream's `plugin/pkg/admission/resourcequota` and
//! `pkg/controller/resourcequota`, with the evaluators of `pkg/quota/v1/evaluator/core`).
//!
//! One counting rule ([`usage`]) serves both: what an object uses, per quota resource
//! name:
//!
//! - every namespaced object: `count/<resource>[.<group>]`; pods, services,
//!   configmaps, secrets, persistentvolumeclaims, replicationcontrollers and
//!   resourcequotas also under their bare names (`pods`, `services`, ...);
//! - pods that are not terminal: `requests.cpu`/`cpu`, `requests.memory`/`memory`,
//!   `requests.ephemeral-storage`, `limits.*`, summed over the app containers, an init
//!   container counting when it asks for more (upstream's `PodRequests`);
//! - services: `services.nodeports` and `services.loadbalancers`;
//! - claims: `requests.storage` and the per-class
//!   `<class>.storageclass.storage.k8s.io/requests.storage` and `.../persistentvolumeclaims`.
//!
//! A quota's scopes (`scopes` and `scopeSelector`: Terminating, NotTerminating,
//! BestEffort, NotBestEffort, PriorityClass) select the pods it covers; a scoped quota
//! covers no other kind.
//!
//! Admission of a create: each covering quota of the namespace that limits something
//! the object uses must have room (`exceeded quota: <q>, requested: ..., used: ...,
//! limited: ...`), and a pod must name the cpu and memory requests and limits a quota
//! limits (`failed quota: <q>: must specify limits.cpu for: c`), in upstream's words;
//! the use is then charged to the quota's status at once (a compare-and-swap on the
//! quota, retried on conflict) so concurrent creates cannot overshoot. A quota the
//! controller has not filled in yet is counted on the spot instead of refusing with
//! upstream's `status unknown for quota`.

use std::collections::BTreeMap;
use std::time::Duration;

use kcore_k8s::Quantity;
use serde_json::{json, Value};

use super::{Operation, Request};
use crate::api::{Api, WriteOptions};
use crate::error::ApiError;
use crate::resources::Sub;

/// Resource name → amount.
pub(crate) type Usage = BTreeMap<String, Quantity>;

/// Kinds counted under their bare plural as well as `count/<plural>`.
const BARE_COUNTS: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

/// The resources a pod must name in each container when a quota limits them.
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// How often the controller recounts every quota, beside the recounts that changes
/// trigger.
const FULL_RESYNC: Duration = Duration::from_secs(60);

/// How long a recount waits for the watch cache to show the changes that caused it.
const CACHE_WAIT: Duration = Duration::from_secs(5);

fn q(s: &Value) -> Quantity {
    s.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .unwrap_or(Quantity::ZERO)
}

fn add(u: &mut Usage, name: impl Into<String>, amount: Quantity) {
    let e = u.entry(name.into()).or_insert(Quantity::ZERO);
    *e = e.checked_add(amount).unwrap_or(*e);
}

/// Whether a pod no longer uses its resources (upstream's `isTerminating`-free check:
/// a terminal phase).
fn pod_is_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// The requests (`key` = "requests") or limits of a pod: the sum over app containers,
/// raised to any single init container's (upstream's effective pod request).
fn pod_resources(spec: &Value, key: &str) -> BTreeMap<String, Quantity> {
    let mut sum = BTreeMap::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        for (k, v) in c["resources"][key].as_object().into_iter().flatten() {
            let e = sum.entry(k.clone()).or_insert(Quantity::ZERO);
            *e = e.checked_add(q(v)).unwrap_or(*e);
        }
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        for (k, v) in c["resources"][key].as_object().into_iter().flatten() {
            let e = sum.entry(k.clone()).or_insert(Quantity::ZERO);
            *e = (*e).max(q(v));
        }
    }
    sum
}

/// What `obj`, an object of resource `plural` in group `group`, uses (see the module
/// documentation).
pub(crate) fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let one = Quantity::new(1, 0);
    if plural == "pods" && group.is_empty() && pod_is_terminal(obj) {
        return u;
    }
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    add(&mut u, count, one);
    if group.is_empty() && BARE_COUNTS.contains(&plural) {
        add(&mut u, plural, one);
    }
    match (group, plural) {
        ("", "pods") => {
            for key in ["requests", "limits"] {
                for (res, amount) in pod_resources(&obj["spec"], key) {
                    if matches!(res.as_str(), "cpu" | "memory" | "ephemeral-storage")
                        || res.contains('/')
                    {
                        add(&mut u, format!("{key}.{res}"), amount);
                        if key == "requests" && res != "ephemeral-storage" && !res.contains('/') {
                            add(&mut u, res, amount);
                        }
                    }
                }
            }
        }
        ("", "services") => {
            let spec = &obj["spec"];
            match spec["type"].as_str() {
                Some("NodePort") | Some("LoadBalancer") => {
                    let ports = spec["ports"].as_array().map_or(0, Vec::len);
                    add(&mut u, "services.nodeports", Quantity::new(ports as i64, 0));
                    if spec["type"] == "LoadBalancer" {
                        add(&mut u, "services.loadbalancers", one);
                    }
                }
                _ => {}
            }
        }
        ("", "persistentvolumeclaims") => {
            let storage = q(&obj["spec"]["resources"]["requests"]["storage"]);
            add(&mut u, "requests.storage", storage);
            if let Some(class) = obj["spec"]["storageClassName"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                let prefix = format!("{class}.storageclass.storage.k8s.io/");
                add(&mut u, format!("{prefix}requests.storage"), storage);
                add(&mut u, format!("{prefix}persistentvolumeclaims"), one);
            }
        }
        _ => {}
    }
    u
}

/// Whether a quota's scopes select `pod` (`None`: an object of another kind, which only
/// unscoped quotas cover).
fn covers(quota: &Value, pod: Option<&Value>) -> bool {
    let spec = &quota["spec"];
    let scopes: Vec<&str> = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let exprs = spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if scopes.is_empty() && exprs.is_empty() {
        return true;
    }
    let Some(pod) = pod else {
        return false;
    };
    let scope_holds = |scope: &str| {
        let terminating = pod["spec"]["activeDeadlineSeconds"].as_i64().is_some();
        let best_effort = pod["status"]["qosClass"] == "BestEffort";
        match scope {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort,
            "NotBestEffort" => !best_effort,
            _ => false,
        }
    };
    scopes.iter().all(|s| scope_holds(s))
        && exprs.iter().all(|e| {
            let scope = e["scopeName"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if scope != "PriorityClass" {
                let holds = scope_holds(scope);
                return match e["operator"].as_str() {
                    Some("DoesNotExist") => !holds,
                    _ => holds,
                };
            }
            let class = pod["spec"]["priorityClassName"]
                .as_str()
                .filter(|c| !c.is_empty());
            match e["operator"].as_str() {
                Some("In") => class.is_some_and(|c| values.contains(&c)),
                Some("NotIn") => class.is_none_or(|c| !values.contains(&c)),
                Some("Exists") => class.is_some(),
                Some("DoesNotExist") => class.is_none(),
                _ => false,
            }
        })
}

/// Which resources a scoped quota may track for pods (a BestEffort quota only counts
/// pods, as upstream).
fn tracks(quota: &Value, resource: &str) -> bool {
    let best_effort = quota["spec"]["scopes"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s == "BestEffort"));
    !best_effort || resource == "pods" || resource == "count/pods"
}

fn to_json(u: &Usage) -> Value {
    Value::Object(
        u.iter()
            .map(|(k, v)| (k.clone(), json!(v.to_string())))
            .collect(),
    )
}

fn from_json(v: &Value) -> Usage {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), q(v)))
        .collect()
}

/// Upstream's `prettyPrint`: `a=1,b=2`, sorted.
fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The resources (of `required`, those a pod must name) some container leaves out:
/// upstream's `must specify <res> for: <containers>; ...`.
fn missing_constraints(pod: &Value, required: &[&str]) -> Option<String> {
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let spec = &pod["spec"];
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for c in containers {
        let r = &c["resources"];
        for res in required {
            let (key, name) = match res.split_once('.') {
                Some((k, n)) => (k, n),
                None => ("requests", *res),
            };
            if r[key][name].is_null() {
                missing
                    .entry(res)
                    .or_default()
                    .push(c["name"].as_str().unwrap_or_default());
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(res, mut names)| {
            names.sort_unstable();
            names.dedup();
            format!("{res} for: {}", names.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// What the quota `name` with limits `hard` decides about a new object using `delta`,
/// given what is `used`: `Ok(Some(new used))` to charge, `Ok(None)` when the quota
/// limits nothing the object uses, `Err(why)` to refuse (upstream's message after
/// `<resource> "<name>" is forbidden: `). `tracks` says which resources the quota's
/// scopes let it count.
fn decide(
    name: &str,
    hard: &Usage,
    used: &Usage,
    delta: &Usage,
    pod: Option<&Value>,
    tracks: impl Fn(&str) -> bool,
) -> Result<Option<Usage>, String> {
    if let Some(pod) = pod {
        let required: Vec<&str> = MUST_SPECIFY
            .iter()
            .copied()
            .filter(|r| hard.contains_key(*r))
            .collect();
        if let Some(why) = missing_constraints(pod, &required) {
            return Err(format!("failed quota: {name}: {why}"));
        }
    }
    let requested: Usage = delta
        .iter()
        .filter(|(k, _)| hard.contains_key(*k) && tracks(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if requested.is_empty() {
        return Ok(None);
    }
    let mut new_used = used.clone();
    for (k, v) in &requested {
        add(&mut new_used, k.clone(), *v);
    }
    let exceeded: Vec<&String> = requested
        .keys()
        .filter(|k| new_used[*k] > hard[*k])
        .collect();
    if !exceeded.is_empty() {
        let mask = |u: &Usage| -> Usage {
            exceeded
                .iter()
                .map(|k| ((*k).clone(), u.get(*k).copied().unwrap_or(Quantity::ZERO)))
                .collect()
        };
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&mask(&requested)),
            pretty(&mask(used)),
            pretty(&mask(hard))
        ));
    }
    Ok(Some(new_used))
}

/// The usage a quota counts now: every covered object of the namespace, for the
/// resources the quota limits. The objects are read from the watch cache (the API
/// server's shared informer), not listed from the store; a caller that must see a given
/// change first waits for the cache to reach it ([`Api::cache_reached`]).
async fn count(api: &Api, quota: &Value) -> Result<Usage, ApiError> {
    let ns = quota["metadata"]["namespace"].as_str().unwrap_or("default");
    let hard = from_json(&quota["spec"]["hard"]);
    let mut kinds: Vec<(String, String, &'static crate::resources::ResourceInfo)> = Vec::new();
    for res in hard.keys() {
        let (group, plural) = counted_kind(res);
        // One served version of the kind: every version shares the stored objects.
        let Some(info) = crate::resources::RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
        else {
            continue;
        };
        if !kinds.iter().any(|(g, p, _)| *g == group && *p == plural) {
            kinds.push((group, plural, info));
        }
    }
    let mut used: Usage = hard.keys().map(|k| (k.clone(), Quantity::ZERO)).collect();
    for (group, plural, info) in kinds {
        for obj in api.cached_objects(info, Some(ns)).await? {
            let pod = (plural == "pods" && group.is_empty()).then_some(obj.as_ref());
            if !covers(quota, pod) {
                continue;
            }
            for (k, v) in usage(&group, &plural, &obj) {
                if hard.contains_key(&k) && tracks(quota, &k) {
                    add(&mut used, k, v);
                }
            }
        }
    }
    Ok(used)
}

/// The `(group, plural)` whose objects a quota resource name counts.
fn counted_kind(res: &str) -> (String, String) {
    if let Some(rest) = res.strip_prefix("count/") {
        return match rest.split_once('.') {
            Some((p, g)) => (g.to_owned(), p.to_owned()),
            None => (String::new(), rest.to_owned()),
        };
    }
    if BARE_COUNTS.contains(&res) {
        return (String::new(), res.to_owned());
    }
    if res.starts_with("services.") {
        return (String::new(), "services".into());
    }
    if res.contains("storage.k8s.io/") || res == "requests.storage" {
        return (String::new(), "persistentvolumeclaims".into());
    }
    (String::new(), "pods".into())
}

/// Whether the quota resource name `res` counts objects of `(group, plural)` (upstream's
/// evaluator `MatchingResources`).
fn counts_kind(res: &str, group: &str, plural: &str) -> bool {
    let (g, p) = counted_kind(res);
    g == group && p == plural
}

/// Whether updates of `(group, plural)` are charged: a claim's resize and a Service's
/// change of type can grow their use (upstream's PVC and Service evaluators handle
/// UPDATE; pods only through `pods/resize`, which kcore does not serve, and other
/// kinds only CREATE).
fn charges_updates(group: &str, plural: &str) -> bool {
    group.is_empty() && matches!(plural, "persistentvolumeclaims" | "services")
}

/// What an update adds: upstream's `SubtractWithNonNegativeResult(new, old)` with the
/// zeros removed.
fn growth(new: Usage, old: &Usage) -> Usage {
    new.into_iter()
        .filter_map(|(k, v)| {
            let before = old.get(&k).copied().unwrap_or(Quantity::ZERO);
            let d = v.checked_sub(before)?;
            (d > Quantity::ZERO).then_some((k, d))
        })
        .collect()
}

/// The limits a quota enforces and the use it starts from: upstream reads both from the
/// quota's status, which the controller fills. A quota the controller has not filled
/// in yet (no `status.hard`) is counted on the spot against its spec instead of being
/// passed over, so it holds from its first moment.
async fn limits_and_use(api: &Api, quota: &Value) -> Result<(Usage, Usage), ApiError> {
    if quota["status"]["hard"].is_object() {
        return Ok((
            from_json(&quota["status"]["hard"]),
            from_json(&quota["status"]["used"]),
        ));
    }
    Ok((from_json(&quota["spec"]["hard"]), count(api, quota).await?))
}

/// The plugin: on the create of a namespaced object (and the update of a claim or a
/// Service), checks and charges every quota of its namespace that covers it. The
/// namespace's quotas are read from the watch cache; the few that limit what the
/// object uses are then read from the store, so the decision and the charge rest on
/// the latest charge.
pub(super) async fn admit(
    api: &Api,
    req: &Request<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let info = req.info;
    let (Some(ns), None) = (req.namespace, req.sub) else {
        return Ok(());
    };
    if !info.namespaced {
        return Ok(());
    }
    let (group, plural): (&str, &str) = (&info.group, &info.plural);
    let delta = match (req.op, old) {
        (Operation::Create, _) => usage(group, plural, obj),
        (Operation::Update, Some(old)) if charges_updates(group, plural) => {
            growth(usage(group, plural, obj), &usage(group, plural, old))
        }
        _ => return Ok(()),
    };
    let pod = (group.is_empty() && plural == "pods").then_some(obj);
    let quotas_info = crate::resources::lookup("", "v1", "resourcequotas").expect("served");
    let cached = api.cached_objects(quotas_info, Some(ns)).await?;
    let relevant: Vec<String> = cached
        .iter()
        .filter(|q| covers(q, pod))
        .filter(|q| {
            let hard = if q["status"]["hard"].is_object() {
                &q["status"]["hard"]
            } else {
                &q["spec"]["hard"]
            };
            hard.as_object()
                .is_some_and(|h| h.keys().any(|k| counts_kind(k, group, plural)))
        })
        .filter_map(|q| q["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    if relevant.is_empty() {
        return Ok(());
    }
    let forbidden = |why: String| ApiError::forbidden(&info.group, &info.plural, req.name, &why);
    for _attempt in 0..10 {
        let mut charges = Vec::new();
        for name in &relevant {
            let quota = match api.get_in(quotas_info, Some(ns), name).await {
                Ok(q) => q,
                Err(e) if e.code == 404 => continue,
                Err(e) => return Err(e),
            };
            if !covers(&quota, pod) {
                continue;
            }
            let (hard, used) = limits_and_use(api, &quota).await?;
            let restricted: Vec<&String> = hard
                .keys()
                .filter(|k| counts_kind(k, group, plural))
                .collect();
            if restricted.is_empty() {
                continue;
            }
            if quota["status"]["hard"].is_object()
                && restricted.iter().any(|k| !used.contains_key(*k))
            {
                let names: Vec<&str> = restricted.iter().map(|k| k.as_str()).collect();
                return Err(forbidden(format!(
                    "status unknown for quota: {name}, resources: {}",
                    names.join(",")
                )));
            }
            match decide(name, &hard, &used, &delta, pod, |k| tracks(&quota, k)) {
                Ok(Some(new_used)) => charges.push((quota, new_used)),
                Ok(None) => {}
                Err(why) => return Err(forbidden(why)),
            }
        }
        if req.dry_run || charges.is_empty() {
            return Ok(());
        }
        let mut conflict = false;
        for (quota, used) in charges {
            let mut updated = quota.clone();
            let hard = if quota["status"]["hard"].is_object() {
                quota["status"]["hard"].clone()
            } else {
                quota["spec"]["hard"].clone()
            };
            updated["status"] = json!({"hard": hard, "used": to_json(&used)});
            let name = quota["metadata"]["name"].as_str().unwrap_or_default();
            match write_status(api, Some(ns), name, updated).await {
                Ok(_) => {}
                Err(e) if e.code == 409 => {
                    conflict = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !conflict {
            return Ok(());
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        "resource quota: too many conflicts charging the namespace's quotas",
    ))
}

/// The resourcequota controller: follows every change in the store and recounts the
/// quotas of the namespaces where a change can move a quota's use, plus a full recount
/// every [`FULL_RESYNC`] (upstream's `--resource-quota-sync-period`, which also mends a
/// charge whose object was never written). A quota's status is written when it
/// changed.
pub(crate) async fn run(api: Api) {
    loop {
        if let Err(e) = follow(&api).await {
            tracing::debug!(error = %e.message, "resource quota controller restarts");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The namespace and `(group, plural)` of a stored object's key
/// (`/registry/<group>/<plural>/<namespace>/<name>`), for namespaced objects.
fn key_parts(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.strip_prefix("/registry/")?.split('/');
    let (g, plural, ns, _name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((if g == "core" { "" } else { g }, plural, ns))
}

/// What of an object can move a quota: its use and, for pods, what scopes look at.
fn quota_relevant(group: &str, plural: &str, obj: &Value) -> (Usage, Value) {
    let scope = if group.is_empty() && plural == "pods" {
        json!([
            obj["spec"]["activeDeadlineSeconds"],
            obj["status"]["qosClass"],
            obj["spec"]["priorityClassName"]
        ])
    } else {
        Value::Null
    };
    (usage(group, plural, obj), scope)
}

/// Whether a stored change can move the use of a quota of its namespace: a create or a
/// delete, a quota's spec, or an update that changes what [`quota_relevant`] sees (a
/// pod's status updates mostly do not).
fn moves_use(ev: &crate::storage::Event, group: &str, plural: &str) -> bool {
    let Some(prev) = &ev.prev else {
        return true;
    };
    if ev.kind == crate::storage::EventKind::Delete {
        return true;
    }
    let (Ok(new), Ok(old)) = (
        serde_json::from_slice::<Value>(&ev.kv.value),
        serde_json::from_slice::<Value>(&prev.value),
    ) else {
        return true;
    };
    if group.is_empty() && plural == "resourcequotas" {
        // As upstream's controller: a quota is recounted when its spec changes or its
        // status does not carry the spec's limits.
        return new["spec"] != old["spec"] || new["spec"]["hard"] != new["status"]["hard"];
    }
    quota_relevant(group, plural, &new) != quota_relevant(group, plural, &old)
}

async fn follow(api: &Api) -> Result<(), ApiError> {
    let storage_err = |e: crate::storage::StorageError| ApiError::internal(e.to_string());
    let info = crate::resources::lookup("", "v1", "resourcequotas").expect("served");
    let from = api.storage().revision().await.map_err(storage_err)?.current;
    let mut events = api
        .storage()
        .watch("/registry/", from)
        .await
        .map_err(storage_err)?;
    let mut resync = tokio::time::interval(FULL_RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Namespaces that hold a quota (a change elsewhere moves nothing).
    let mut with_quotas: std::collections::HashSet<String> = std::collections::HashSet::new();
    // The latest store revision seen: recounts wait for the watch cache to reach it.
    let mut seen = from;
    loop {
        let mut dirty: BTreeMap<String, ()> = BTreeMap::new();
        tokio::select! {
            _ = resync.tick() => {
                let all = api.cached_objects(info, None).await?;
                with_quotas.clear();
                for q in &all {
                    if let Some(ns) = q["metadata"]["namespace"].as_str() {
                        with_quotas.insert(ns.to_owned());
                        dirty.insert(ns.to_owned(), ());
                    }
                }
            }
            ev = futures::StreamExt::next(&mut events) => {
                let Some(ev) = ev else {
                    return Err(ApiError::internal("the store's watch ended"));
                };
                let mut next = Some(ev.map_err(storage_err)?);
                // Take every change already delivered, then recount once per namespace.
                while let Some(ev) = next.take() {
                    seen = seen.max(ev.revision());
                    if let Some((group, plural, ns)) = key_parts(&ev.kv.key) {
                        let is_quota = group.is_empty() && plural == "resourcequotas";
                        if is_quota && ev.kind == crate::storage::EventKind::Put {
                            with_quotas.insert(ns.to_owned());
                        }
                        if (is_quota || with_quotas.contains(ns)) && moves_use(&ev, group, plural) {
                            dirty.insert(ns.to_owned(), ());
                        }
                    }
                    if let Some(Some(more)) = futures::FutureExt::now_or_never(
                        futures::StreamExt::next(&mut events),
                    ) {
                        next = Some(more.map_err(storage_err)?);
                    }
                }
            }
        }
        if dirty.is_empty() {
            continue;
        }
        if !api.cache_reached(seen, CACHE_WAIT).await {
            tracing::debug!(
                revision = seen,
                "the watch cache lags; recounting from what it holds"
            );
        }
        for ns in dirty.into_keys() {
            let items = api.cached_objects(info, Some(&ns)).await?;
            if items.is_empty() {
                with_quotas.remove(&ns);
            }
            for quota in &items {
                if let Err(e) = sync(api, quota).await {
                    tracing::debug!(error = %e.message, quota = %quota["metadata"]["name"], "syncing a resource quota");
                }
            }
        }
    }
}

/// Writes a quota's status (boxed: the write goes through admission, which calls this
/// module again).
fn write_status<'a>(
    api: &'a Api,
    ns: Option<&'a str>,
    name: &'a str,
    quota: Value,
) -> futures::future::BoxFuture<'a, Result<Value, ApiError>> {
    Box::pin(async move {
        let info = crate::resources::lookup("", "v1", "resourcequotas").expect("served");
        api.update_in(
            info,
            ns,
            name,
            quota,
            Some(Sub::Status),
            &WriteOptions::default(),
        )
        .await
    })
}

async fn sync(api: &Api, quota: &Value) -> Result<(), ApiError> {
    let used = to_json(&count(api, quota).await?);
    let status = json!({"hard": quota["spec"]["hard"], "used": used});
    if quota["status"] == status {
        return Ok(());
    }
    let mut updated = quota.clone();
    updated["status"] = status;
    let ns = quota["metadata"]["namespace"].as_str();
    let name = quota["metadata"]["name"].as_str().unwrap_or_default();
    match write_status(api, ns, name, updated).await {
        Err(e) if e.code != 409 && e.code != 404 => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers},
            "status": {"phase": "Pending", "qosClass": "Burstable"}})
    }

    fn quota(hard: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard}})
    }

    #[test]
    fn counts_pods_and_their_resources() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
        ]));
        let u = usage("", "pods", &p);
        let f = |k: &str| u[k].to_string();
        assert_eq!(f("pods"), "1");
        assert_eq!(f("count/pods"), "1");
        assert_eq!(f("requests.cpu"), "500m");
        assert_eq!(f("cpu"), "500m");
        assert_eq!(f("requests.memory"), "128Mi");
        assert_eq!(f("limits.cpu"), "1");
        let mut done = p.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert!(usage("", "pods", &done).is_empty());
        let u = usage("apps", "deployments", &json!({}));
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        let pvc = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let u = usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"].to_string(),
            "1Gi"
        );
        assert_eq!(u["requests.storage"].to_string(), "1Gi");
    }

    fn decide(
        quota: &Value,
        used: &Usage,
        delta: &Usage,
        pod: Option<&Value>,
    ) -> Result<Option<Usage>, String> {
        let hard = from_json(&quota["spec"]["hard"]);
        super::decide("q", &hard, used, delta, pod, |k| tracks(quota, k))
    }

    #[test]
    fn refusals_in_upstream_words() {
        let q = quota(json!({"pods": "2"}));
        let p = pod(json!([{"name": "c"}]));
        let delta = usage("", "pods", &p);
        let used = from_json(&json!({"pods": "2"}));
        assert_eq!(
            decide(&q, &used, &delta, Some(&p)).unwrap_err(),
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let used = from_json(&json!({"pods": "1"}));
        let charged = decide(&q, &used, &delta, Some(&p)).unwrap().unwrap();
        assert_eq!(to_json(&charged), json!({"pods": "2"}));

        let q = quota(json!({"limits.cpu": "2", "requests.memory": "1Gi"}));
        let p = pod(json!([{"name": "c"}, {"name": "d", "resources": {"limits": {"cpu": "1"}}}]));
        assert_eq!(
            decide(&q, &Usage::new(), &usage("", "pods", &p), Some(&p)).unwrap_err(),
            "failed quota: q: must specify limits.cpu for: c; requests.memory for: c,d"
        );
        // A quota limiting nothing the object uses leaves it alone.
        let cm = usage("", "configmaps", &json!({}));
        assert!(decide(&q, &Usage::new(), &cm, None).unwrap().is_none());
    }

    #[test]
    fn scopes_select_pods() {
        let mut be = pod(json!([{"name": "c"}]));
        be["status"]["qosClass"] = json!("BestEffort");
        let burst = pod(json!([{"name": "c"}]));
        let scoped = |scopes: Value| json!({"spec": {"hard": {"pods": "1"}, "scopes": scopes}});
        assert!(covers(&scoped(json!(["BestEffort"])), Some(&be)));
        assert!(!covers(&scoped(json!(["BestEffort"])), Some(&burst)));
        assert!(covers(&scoped(json!(["NotBestEffort"])), Some(&burst)));
        assert!(covers(&scoped(json!(["NotTerminating"])), Some(&burst)));
        assert!(!covers(&scoped(json!(["Terminating"])), Some(&burst)));
        assert!(!covers(&scoped(json!(["NotTerminating"])), None));
        let mut high = burst.clone();
        high["spec"]["priorityClassName"] = json!("high");
        let by_class = json!({"spec": {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        assert!(covers(&by_class, Some(&high)));
        assert!(!covers(&by_class, Some(&burst)));
        assert!(covers(&quota(json!({"pods": "1"})), None));
    }

    #[test]
    fn quantities_print_canonically() {
        let sum = |a: &str, b: &str| {
            let mut u = Usage::new();
            add(&mut u, "requests.memory", Quantity::parse(a).unwrap());
            add(&mut u, "requests.memory", Quantity::parse(b).unwrap());
            to_json(&u)["requests.memory"].clone()
        };
        assert_eq!(sum("512Mi", "512Mi"), "1Gi");
        assert_eq!(sum("1Gi", "512Mi"), "1536Mi");
        assert_eq!(sum("500M", "500M"), "1G");
        assert_eq!(sum("500m", "500m"), "1");
        assert_eq!(sum("750m", "750m"), "1500m");
        assert_eq!(sum("0.25", "0.25"), "500m");
        assert_eq!(
            pretty(&from_json(&json!({"pods": "0", "cpu": "1000m"}))),
            "cpu=1,pods=0"
        );
    }

    #[test]
    fn updates_charge_only_growth() {
        let small = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let big = json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}});
        let g = growth(
            usage("", "persistentvolumeclaims", &big),
            &usage("", "persistentvolumeclaims", &small),
        );
        assert_eq!(to_json(&g), json!({"requests.storage": "2Gi"}));
        let g = growth(
            usage("", "persistentvolumeclaims", &small),
            &usage("", "persistentvolumeclaims", &big),
        );
        assert!(g.is_empty());
        let q = quota(json!({"requests.storage": "2Gi"}));
        let used = from_json(&json!({"requests.storage": "1Gi"}));
        let delta = growth(
            usage("", "persistentvolumeclaims", &big),
            &usage("", "persistentvolumeclaims", &small),
        );
        assert_eq!(
            decide(&q, &used, &delta, None).unwrap_err(),
            "exceeded quota: q, requested: requests.storage=2Gi, used: requests.storage=1Gi, limited: requests.storage=2Gi"
        );
        assert!(charges_updates("", "services") && !charges_updates("", "pods"));
        assert!(counts_kind(
            "requests.storage",
            "",
            "persistentvolumeclaims"
        ));
        assert!(counts_kind("count/deployments.apps", "apps", "deployments"));
        assert!(!counts_kind("pods", "", "services"));
    }

    #[test]
    fn store_keys_name_the_namespace() {
        assert_eq!(
            key_parts("/registry/core/pods/ns1/p"),
            Some(("", "pods", "ns1"))
        );
        assert_eq!(
            key_parts("/registry/apps/deployments/ns1/d"),
            Some(("apps", "deployments", "ns1"))
        );
        assert_eq!(key_parts("/registry/core/nodes/n1"), None);
    }
}
