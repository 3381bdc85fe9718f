//! Writes: create, update (whole object or a subresource), patch; the checks every
//! write goes through (type, namespace, normalization and validation by the kind's
//! strategy).

use super::*;

impl Api {
    /// After a namespace write: waits until the watch cache (if primed) shows it, so that
    /// [`Self::namespace_exists`], which trusts the cache, never misses a deletion or a
    /// deletion mark this server acknowledged (the kinds whose strategy asks for it).
    /// Other kinds return at once.
    pub(super) async fn settle(&self, info: &ResourceInfo, rev: u64) {
        let cache = &self.inner.cache;
        if info.strategy.settle_in_cache()
            && cache.revision().is_some()
            && !cache.wait_for(rev, Duration::from_secs(3)).await
        {
            tracing::warn!(
                rev,
                "the watch cache did not catch up with a namespace write"
            );
        }
    }

    /// Upstream's DefaultIngressClass admission: an object with neither
    /// `spec.ingressClassName` nor the legacy `kubernetes.io/ingress.class` annotation
    /// gets the default IngressClass, read from the watch cache.
    pub(super) async fn namespace_exists(&self, ns: &str) -> Result<(), ApiError> {
        let info = resources::lookup("", "v1", "namespaces").expect("served");
        let key = info.key(None, ns);
        let terminating = |obj: &Value| obj["metadata"]["deletionTimestamp"].is_string();
        // Like upstream's NamespaceLifecycle admission, which reads an informer: a
        // namespace the watch cache holds and that is not being deleted is taken as it
        // is, without a storage read (under many writers the cache is always a batch
        // behind the store, so waiting for it to be fresh would mean a read and a decode
        // per create). Deleting a namespace first marks it, and the cache sees the mark
        // within a batch. A namespace the cache lacks or saw marked is looked up. The
        // first check primes the cache (a server taking writes has watchers anyway).
        let cache = &self.inner.cache;
        if let Err(e) = cache.ensure().await {
            tracing::debug!(error = %e, "watch cache unavailable; reading the namespace");
        }
        let obj = match cache.get(&key) {
            Some(Some(obj)) if !terminating(&obj) => return Ok(()),
            _ => self
                .inner
                .storage
                .get(&key)
                .await
                .map_err(|e| from_storage(e, "", "namespaces", ns))?
                .map(|kv| decode(&kv))
                .transpose()?,
        };
        match obj {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(obj) if terminating(&obj) => Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let api_version = info.api_version();
        match obj["apiVersion"].as_str() {
            None | Some("") => obj["apiVersion"] = json!(api_version),
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
        }
        match obj["kind"].as_str() {
            None | Some("") => obj["kind"] = json!(info.kind),
            Some(k) if k == info.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    info.kind
                )))
            }
        }
        Ok(())
    }

    pub(super) fn normalize_and_validate(
        info: &ResourceInfo,
        obj: Value,
        old: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let norm = (info.normalize)(obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
        let causes = registry::validate(&*info.strategy, &norm, old);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
        }
        Ok(norm)
    }

    pub(super) fn resolve_namespace(
        info: &ResourceInfo,
        namespace: Option<&str>,
        obj: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        if !info.namespaced {
            meta_mut(obj).remove("namespace");
            return Ok(None);
        }
        let in_obj = obj["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty());
        let ns = match (namespace, in_obj) {
            (Some(url), Some(body)) if url != body => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            (Some(url), _) => url.to_owned(),
            (None, Some(body)) => body.to_owned(),
            (None, None) => "default".to_owned(),
        };
        meta_mut(obj).insert("namespace".into(), json!(ns));
        Ok(Some(ns))
    }

    pub(crate) async fn create_in(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type(info, &mut obj)?;
        if let Some(e) = info.strategy.refuses_create() {
            return Err(e);
        }
        let ns = Self::resolve_namespace(info, namespace, &mut obj)?;
        let meta = meta_mut(&mut obj);
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let name = format!("{g}{}", random_suffix());
                    meta.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &info.group,
                        &info.kind,
                        "",
                        vec![Cause::required("metadata.name")],
                    ))
                }
            }
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        let strategy = &info.strategy;
        strategy.prepare_for_create(&mut obj);
        strategy.defaults(&mut obj);
        if let Some((api_version, plural)) = strategy.create_reads() {
            let read = self
                .list_value(api_version, plural, None, &ListOptions::default())
                .await?;
            strategy.admit_create(
                &mut obj,
                read["items"].as_array().map_or(&[], Vec::as_slice),
            );
        }
        if strategy.allocates_service_addresses() {
            self.allocate_service(&mut obj, None).await?;
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let req = admission::Request {
            info,
            sub: None,
            op: admission::Operation::Create,
            namespace: ns.as_deref(),
            name: &name,
            dry_run: opts.dry_run,
        };
        let check = |o| Self::normalize_and_validate(info, o, None);
        let obj = self.admit(&req, obj, None, check).await?;
        if let Some(ns) = &ns {
            self.namespace_exists(ns).await?;
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let key = info.key(ns.as_deref(), &name);
        let kv = tracing::Instrument::instrument(
            self.inner.storage.create(&key, encode_for(info, &obj)),
            tracing::debug_span!("create", %key),
        )
        .await
        .map_err(|e| from_storage(e, &info.group, &info.plural, &name))?;
        self.settle(info, kv.mod_revision).await;
        let mut out = obj;
        out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        Ok(out)
    }

    /// Computes and stores the new state of an existing object. `incoming` is the full new
    /// object; for `sub == Some(Status)` only its status is taken.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        old: &Value,
        old_rev: u64,
        mut incoming: Value,
        sub: Option<Sub>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type(info, &mut incoming)?;
        if let Some(n) = incoming["metadata"]["name"].as_str() {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let strategy = &info.strategy;
        let mut new = match sub {
            Some(Sub::Status) => {
                // the old object but its status (not copied only to be replaced)
                let mut n = clone_without(old, "status");
                n["status"] = incoming["status"].take();
                n
            }
            Some(Sub::EphemeralContainers) => {
                // pods/ephemeralcontainers: only spec.ephemeralContainers changes.
                let mut n = old.clone();
                match &incoming["spec"]["ephemeralContainers"] {
                    Value::Null => {
                        n["spec"]
                            .as_object_mut()
                            .map(|s| s.remove("ephemeralContainers"));
                    }
                    e => n["spec"]["ephemeralContainers"] = e.clone(),
                }
                n
            }
            Some(Sub::Approval) => {
                // certificatesigningrequests/approval: only the conditions change
                let mut n = old.clone();
                n["status"]["conditions"] = incoming["status"]["conditions"].clone();
                n
            }
            Some(Sub::Finalize) => {
                // namespaces/finalize: only spec.finalizers changes.
                let mut n = old.clone();
                let f = &incoming["spec"]["finalizers"];
                n["spec"]["finalizers"] = if f.is_null() { json!([]) } else { f.clone() };
                n
            }
            _ => {
                let mut n = incoming;
                if info.has(Sub::Status) && strategy.update_resets_status() {
                    n["status"] = old["status"].clone();
                }
                strategy.prepare_for_update(&mut n, old);
                n
            }
        };
        {
            let om = &old["metadata"];
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match om.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            m.insert("generation".into(), om["generation"].clone());
            if m.get("managedFields").is_none_or(Value::is_null) {
                if let Some(mf) = om.get("managedFields") {
                    m.insert("managedFields".into(), mf.clone());
                }
            }
            m.remove("resourceVersion");
        }
        if new["status"].is_null() {
            new.as_object_mut().map(|o| o.remove("status"));
        }
        strategy.defaults(&mut new);
        if strategy.allocates_service_addresses() {
            self.allocate_service(&mut new, Some(old)).await?;
        }
        let req = admission::Request {
            info,
            sub,
            op: admission::Operation::Update,
            namespace: ns,
            name,
            dry_run: opts.dry_run,
        };
        let check = |o| match sub {
            Some(Sub::EphemeralContainers) => Self::validate_ephemeral_containers(info, o, old),
            _ => Self::normalize_and_validate(info, o, Some(old)),
        };
        let mut new = self.admit(&req, new, Some(old), check).await?;
        // built-in validating admission (upstream's PersistentVolumeClaimResize): after
        // validation, so an update validation refuses gets its 422 first
        if sub.is_none() {
            if let Some((api_version, plural)) = strategy.update_reads(&new, old) {
                let read = self
                    .list_value(api_version, plural, None, &ListOptions::default())
                    .await?;
                let read = read["items"].as_array().map_or(&[][..], Vec::as_slice);
                if let Err(why) = strategy.admit_update(&new, old, read) {
                    return Err(ApiError::forbidden(&info.group, &info.plural, name, &why));
                }
            }
        }
        if strategy.spec_of(&new) != strategy.spec_of(old) {
            tracing::trace!(old = %strategy.spec_of(old), new = %strategy.spec_of(&new), "spec changed");
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        // unchanged: nothing is written, unless the stored value is under an encryption
        // key that no longer writes (a re-write is how keys are rotated)
        if same_but_resource_version(&new, old)
            && (opts.dry_run
                || !self
                    .inner
                    .storage
                    .stale(&info.key(ns, name))
                    .await
                    .unwrap_or(false))
        {
            return Ok(old.clone());
        }
        if opts.dry_run {
            return Ok(new);
        }
        let key = info.key(ns, name);
        let finalized = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            && !strategy.has_kind_finalizers(&new);
        if finalized {
            let kv = self
                .inner
                .storage
                .delete(&key, Some(old_rev))
                .await
                .map_err(|e| from_storage(e, &info.group, &info.plural, name))?;
            self.settle(info, kv.mod_revision).await;
            let mut out = new;
            out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
            return Ok(out);
        }
        let kv = self
            .inner
            .storage
            .update(&key, encode_for(info, &new), Some(old_rev))
            .await
            .map_err(|e| from_storage(e, &info.group, &info.plural, name))?;
        self.settle(info, kv.mod_revision).await;
        let mut out = new;
        out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        Ok(out)
    }

    /// PUT: replace an object, or its status.
    pub(crate) async fn update_in(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<Sub>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let given_rv = rv_of(&obj);
        if obj["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
            && given_rv.is_none()
        {
            return Err(ApiError::bad_request("invalid resourceVersion"));
        }
        loop {
            let (old, old_rev) = match self.get_kv(info, ns, name).await {
                Ok(x) => x,
                Err(e) if e.code == 404 && info.create_on_update && sub.is_none() => {
                    let mut obj = obj;
                    meta_mut(&mut obj).remove("resourceVersion");
                    return self.create_in(info, ns, obj, opts).await;
                }
                Err(e) => return Err(e),
            };
            if given_rv.is_some_and(|rv| rv != old_rev) {
                return Err(ApiError::modified(&info.group, &info.plural, name));
            }
            match self
                .write_update(info, ns, name, &old, old_rev, obj.clone(), sub, opts)
                .await
            {
                Err(e) if e.reason == "Conflict" && given_rv.is_none() => continue,
                r => return r,
            }
        }
    }

    /// PATCH an object or one of its subresources.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn patch_in(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        sub: Option<Sub>,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let manager = opts.field_manager.clone();
        if patch_type == PatchType::Strategic && !info.strategy.strategic_merge_patch() {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        if patch_type == PatchType::Apply && manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH with apply patch type requires fieldManager to be set",
            ));
        }
        loop {
            let (old, old_rev) = match self.get_kv(info, ns, name).await {
                Ok(x) => x,
                Err(e) if e.code == 404 && patch_type == PatchType::Apply && sub.is_none() => {
                    let applied = patch::parse_apply(body)?;
                    let obj =
                        patch::apply_create(applied, manager.as_deref().unwrap_or_default(), info)?;
                    if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({name})",
                            obj["metadata"]["name"].as_str().unwrap_or_default()
                        )));
                    }
                    match self.create_in(info, ns, obj, opts).await {
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        r => return r,
                    }
                }
                Err(e) => return Err(e),
            };
            let scale;
            let base = match sub {
                Some(Sub::Scale) => {
                    scale = scale_of(info, &old);
                    &scale
                }
                _ => &old,
            };
            let patched = patch::apply_patch(patch_type, base, body, info, opts)?;
            let given_rv = rv_of(&patched).filter(|rv| *rv != old_rev);
            if given_rv.is_some() {
                return Err(ApiError::modified(&info.group, &info.plural, name));
            }
            let result = match sub {
                Some(Sub::Scale) => {
                    let mut new = old.clone();
                    info.strategy
                        .set_replicas(&mut new, patched["spec"]["replicas"].clone());
                    self.write_update(info, ns, name, &old, old_rev, new, sub, opts)
                        .await
                        .map(|o| scale_of(info, &o))
                }
                _ => {
                    self.write_update(info, ns, name, &old, old_rev, patched, sub, opts)
                        .await
                }
            };
            match result {
                Err(e) if e.reason == "Conflict" && e.message.contains("has been modified") => {
                    continue
                }
                r => return r,
            }
        }
    }
}

/// A copy of the object `v` without its field `skip` (a copy of `v` if it is no object).
fn clone_without(v: &Value, skip: &str) -> Value {
    match v.as_object() {
        Some(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != skip)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => v.clone(),
    }
}

/// Whether `new` equals `old` once `old`'s `metadata.resourceVersion` is left out (what
/// an unchanged write looks like), without copying either.
fn same_but_resource_version(new: &Value, old: &Value) -> bool {
    let (Some(n), Some(o), Some(om)) = (
        new.as_object(),
        old.as_object(),
        old.get("metadata").and_then(Value::as_object),
    ) else {
        let mut old_cmp = old.clone();
        meta_mut(&mut old_cmp).remove("resourceVersion");
        return *new == old_cmp;
    };
    let Some(nm) = n.get("metadata").and_then(Value::as_object) else {
        return false;
    };
    nm.len() + usize::from(om.contains_key("resourceVersion")) == om.len()
        && om
            .iter()
            .filter(|(k, _)| k.as_str() != "resourceVersion")
            .all(|(k, v)| nm.get(k) == Some(v))
        && n.len() == o.len()
        && o.iter()
            .filter(|(k, _)| k.as_str() != "metadata")
            .all(|(k, v)| n.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_is_equal_but_for_the_resource_version() {
        let old = json!({"metadata": {"name": "a", "resourceVersion": "7"}, "spec": {"x": 1}});
        let same = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        assert!(same_but_resource_version(&same, &old));
        let other_rv = json!({"metadata": {"name": "a", "resourceVersion": "8"}, "spec": {"x": 1}});
        assert!(!same_but_resource_version(&other_rv, &old));
        let changed = json!({"metadata": {"name": "a"}, "spec": {"x": 2}});
        assert!(!same_but_resource_version(&changed, &old));
        let more = json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {}});
        assert!(!same_but_resource_version(&more, &old));
        let meta_more = json!({"metadata": {"name": "a", "uid": "u"}, "spec": {"x": 1}});
        assert!(!same_but_resource_version(&meta_more, &old));
        let no_rv = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        assert!(same_but_resource_version(&same, &no_rv));
        assert!(!same_but_resource_version(&other_rv, &no_rv));
        let no_meta = json!({"spec": {"x": 1}});
        assert!(same_but_resource_version(
            &json!({"metadata": {}, "spec": {"x": 1}}),
            &no_meta
        ));
    }

    #[test]
    fn a_copy_without_one_field() {
        let v = json!({"a": 1, "status": {"b": 2}, "c": [3]});
        assert_eq!(clone_without(&v, "status"), json!({"a": 1, "c": [3]}));
        assert_eq!(clone_without(&json!(5), "status"), json!(5));
    }
}
