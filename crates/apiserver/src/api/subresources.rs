//! Subresources beyond status: scale, binding and eviction (PodDisruptionBudgets).

use super::*;

pub(super) fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// An int-or-percent of `total`, percentages rounded up (upstream's
/// `GetScaledValueFromIntOrPercent(.., true)`).
pub(super) fn scaled_up(v: &Value, total: usize) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    let pct: usize = v.as_str()?.strip_suffix('%')?.parse().ok()?;
    Some((pct * total).div_ceil(100))
}

/// The healthy pods a PodDisruptionBudget spec requires when `expected` pods match it.
pub(super) fn budget(spec: &Value, expected: usize) -> usize {
    if let Some(max) = scaled_up(&spec["maxUnavailable"], expected) {
        expected.saturating_sub(max)
    } else {
        scaled_up(&spec["minAvailable"], expected).unwrap_or(0)
    }
}

/// The autoscaling/v1 Scale view of a scalable object.
pub(crate) fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let m = &obj["metadata"];
    let (replicas, observed, selector) = info.strategy.scale(obj);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": observed, "selector": selector},
    })
}

impl Api {
    /// Reads the autoscaling/v1 Scale of an object.
    pub(crate) async fn get_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(scale_of(info, &self.get_in(info, namespace, name).await?))
    }

    /// PUT of a Scale.
    pub(crate) async fn update_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        scale: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let replicas = scale["spec"]["replicas"].clone();
        if replicas.as_i64().is_none_or(|r| r < 0) {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &replicas,
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let given_rv = rv_of(&scale);
        loop {
            let (old, old_rev) = self.get_kv(info, ns, name).await?;
            if given_rv.is_some_and(|rv| rv != old_rev) {
                return Err(ApiError::modified(&info.group, &info.plural, name));
            }
            let mut new = old.clone();
            info.strategy.set_replicas(&mut new, replicas.clone());
            match self
                .write_update(info, ns, name, &old, old_rev, new, Some(Sub::Scale), opts)
                .await
            {
                Err(e) if e.reason == "Conflict" && given_rv.is_none() => continue,
                r => return r.map(|o| scale_of(info, &o)),
            }
        }
    }

    /// POST pods/<name>/binding (or a Binding to pods/binding): sets spec.nodeName.
    pub(crate) async fn bind(
        &self,
        namespace: Option<&str>,
        name: &str,
        binding: Value,
    ) -> Result<Value, ApiError> {
        let info = resources::lookup("", "v1", "pods").expect("served");
        let ns = namespace.unwrap_or("default");
        let target = binding["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if target.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![Cause::required("target.name")],
            ));
        }
        loop {
            let (old, old_rev) = self.get_kv(info, Some(ns), name).await?;
            if let Some(cur) = old["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node {cur:?}"),
                ));
            }
            if old["metadata"]["deletionTimestamp"].is_string() {
                return Err(ApiError::conflict("", "pods", name, "pod is being deleted"));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(target);
            let conds = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conds.push(
                json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}),
            );
            new["status"]["conditions"] = json!(conds);
            // Binding writes spec and status at once, bypassing the status reset.
            let key = info.key(Some(ns), name);
            meta_mut(&mut new).remove("resourceVersion");
            match self
                .inner
                .storage
                .update(&key, encode_for(info, &new), Some(old_rev))
                .await
            {
                Ok(_) => {
                    return Ok(
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    )
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(from_storage(e, "", "pods", name)),
            }
        }
    }

    /// `pods/eviction`: deletes the pod unless that would violate its
    /// PodDisruptionBudget, in which case the answer is 429 TooManyRequests with a
    /// `DisruptionBudget` cause. Pods that are terminating, Pending, Succeeded or Failed
    /// are deleted without looking at budgets, as upstream. Evictions are serialized
    /// (within this API server) so two of them never spend the same allowed disruption.
    pub async fn evict(
        &self,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let pods = resources::lookup("", "v1", "pods").expect("served");
        let pdbs = resources::lookup("policy", "v1", "poddisruptionbudgets").expect("served");
        let _guard = self.inner.evictions.lock().await;
        let pod = self.get_in(pods, Some(namespace), name).await?;
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        let ignores_budget = pod["metadata"]["deletionTimestamp"].is_string()
            || matches!(phase, "Pending" | "Succeeded" | "Failed");
        if !ignores_budget {
            let all = self
                .list_in(pdbs, Some(namespace), &ListOptions::default())
                .await?;
            // A budget without a selector, or with one that does not compile, selects
            // nothing (upstream skips it).
            let matching: Vec<(&Value, LabelSelector)> = all["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| !b["spec"]["selector"].is_null())
                .filter_map(|b| Some((b, LabelSelector::from_object(&b["spec"]["selector"]).ok()?)))
                .filter(|(_, sel)| sel.matches(&pod))
                .collect();
            if matching.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some((pdb, sel)) = matching.first() {
                let peers = self
                    .list_in(pods, Some(namespace), &ListOptions::default())
                    .await?;
                let live: Vec<&Value> = peers["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        sel.matches(p)
                            && p["metadata"]["deletionTimestamp"].is_null()
                            && !matches!(
                                p["status"]["phase"].as_str(),
                                Some("Succeeded" | "Failed")
                            )
                    })
                    .collect();
                let healthy = live.iter().filter(|p| pod_ready(p)).count();
                let b = budget(&pdb["spec"], live.len());
                let pod_healthy = pod_ready(&pod);
                let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
                let allowed = if pod_healthy {
                    healthy > b
                } else {
                    always || healthy >= b
                };
                if !allowed {
                    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
                    let mut e = ApiError::new(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    );
                    e.details = Some(json!({"causes": [{
                        "reason": "DisruptionBudget",
                        "message": format!(
                            "The disruption budget {pdb_name} needs {b} healthy pods and has {healthy} currently"
                        ),
                    }]}));
                    return Err(e);
                }
            }
        }
        self.delete_in(pods, Some(namespace), name, opts).await?;
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }
}

impl Api {
    /// The checks of a `pods/ephemeralcontainers` write: the pod as a new pod would be
    /// checked (ephemeral containers with their own rules, `validate::pod::spec`), and
    /// no ephemeral container removed or changed once added.
    pub(super) fn validate_ephemeral_containers(
        info: &ResourceInfo,
        obj: Value,
        old: &Value,
    ) -> Result<Value, ApiError> {
        let norm = Self::normalize_and_validate(info, obj, None)?;
        let mut causes = Vec::new();
        crate::validate::pod::ephemeral_update(&norm, old, &mut causes);
        if !causes.is_empty() {
            let name = norm["metadata"]["name"].as_str().unwrap_or_default();
            return Err(ApiError::invalid(&info.group, &info.kind, name, causes));
        }
        Ok(norm)
    }
}
