//! Deletes: one object (preconditions, propagation, finalizers, graceful deletion by the
//! kind's strategy) and collections.

use super::*;

impl Api {
    /// DELETE one object.
    pub(crate) async fn delete_in(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        loop {
            let (old, old_rev) = self.get_kv(info, ns, name).await?;
            if let Some(uid) = &opts.precondition_uid {
                if old["metadata"]["uid"].as_str() != Some(uid) {
                    return Err(ApiError::conflict(
                        &info.group,
                        &info.plural,
                        name,
                        &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                if rv != &old_rev.to_string() {
                    return Err(ApiError::conflict(&info.group, &info.plural, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rev}"
                    )));
                }
            }
            let req = admission::Request {
                info,
                sub: None,
                op: admission::Operation::Delete,
                namespace: ns,
                name,
                dry_run: opts.dry_run,
            };
            self.admit_delete(&req, &old).await?;
            let mut finalizers: Vec<Value> = old["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut add = |f: &str| {
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(json!(f));
                }
            };
            match opts.propagation_policy.as_deref() {
                Some("Foreground") => add("foregroundDeletion"),
                Some("Orphan") => add("orphan"),
                _ => {}
            }
            let strategy = &info.strategy;
            // A pod bound to a node is marked and left to its node agent.
            let graceful = strategy.graceful_deletion(&old, opts.grace_period_seconds);
            let graceful_pod = graceful.is_some();
            // A namespace with spec.finalizers (`kubernetes` by default) goes Terminating;
            // the namespace controller deletes its content, then finalizes it.
            let kind_finalizers = strategy.has_kind_finalizers(&old);
            if !finalizers.is_empty() || graceful_pod || kind_finalizers {
                if old["metadata"]["deletionTimestamp"].is_string()
                    && finalizers
                        == old["metadata"]["finalizers"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    && !graceful_pod
                {
                    return Ok(old);
                }
                let mut new = old.clone();
                let m = meta_mut(&mut new);
                if !m.contains_key("deletionTimestamp") {
                    let grace = graceful.unwrap_or(0);
                    let at = timestamp_now()
                        .checked_add(jiff::SignedDuration::from_secs(grace))
                        .unwrap_or_else(|_| timestamp_now());
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                } else if graceful_pod && finalizers.is_empty() {
                    // A second delete of a terminating pod: nothing more to do.
                    return Ok(old);
                }
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                m.remove("resourceVersion");
                strategy.mark_terminating(&mut new);
                if opts.dry_run {
                    return Ok(new);
                }
                let key = info.key(ns, name);
                match self
                    .inner
                    .storage
                    .update(&key, encode_for(info, &new), Some(old_rev))
                    .await
                {
                    Ok(kv) => {
                        self.settle(info, kv.mod_revision).await;
                        new["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                        return Ok(new);
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => return Err(from_storage(e, &info.group, &info.plural, name)),
                }
            }
            if opts.dry_run {
                return Ok(old);
            }
            match self
                .inner
                .storage
                .delete(&info.key(ns, name), Some(old_rev))
                .await
            {
                Ok(kv) => {
                    self.settle(info, kv.mod_revision).await;
                    let mut out = old;
                    out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                    return Ok(out);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(from_storage(e, &info.group, &info.plural, name)),
            }
        }
    }

    /// DELETE a collection: every object matching the selectors.
    pub(crate) async fn delete_collection(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        list_opts: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut list = self.list_in(info, namespace, list_opts).await?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let ns = item["metadata"]["namespace"].as_str();
            match self.delete_in(info, ns, name, opts).await {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        list["items"] = json!(deleted);
        Ok(list)
    }
}
