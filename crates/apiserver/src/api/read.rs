//! Reads: get and list, with pagination (continue tokens), resourceVersion semantics and
//! list serving from the watch cache.

use super::*;

/// The continuation token: the last key returned and the list's revision.
pub(super) fn encode_continue(key: &str, rv: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"k": key, "rv": rv}).to_string())
}

pub(super) fn decode_continue(tok: &str) -> Result<(String, Option<u64>), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {tok:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let key = v["k"].as_str().map(str::to_owned).ok_or_else(bad)?;
    Ok((key, v["rv"].as_u64().filter(|r| *r > 0)))
}

/// Which state of the store a list reads (`resourceVersion` + `resourceVersionMatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadAt {
    /// Unset resourceVersion: the latest state (a consistent read).
    Latest,
    /// `resourceVersion=0`: any state, the cache's as it is.
    Any,
    /// `resourceVersion=N` (NotOlderThan): a state at least as new as N.
    NotOlderThan(u64),
    /// `resourceVersionMatch=Exact` or a continue token: exactly revision N.
    Exact(u64),
}

impl ReadAt {
    pub(super) fn of(opts: &ListOptions, token_rv: Option<u64>) -> Result<Self, ApiError> {
        let rv = opts.resource_version.as_deref().filter(|s| !s.is_empty());
        let m = opts
            .resource_version_match
            .as_deref()
            .filter(|s| !s.is_empty());
        let parse = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {s:?}: not a number"))
            })
        };
        if let Some(m) = m {
            if !matches!(m, "Exact" | "NotOlderThan") {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch {m:?} is not supported: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
            if rv.is_none() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if token_rv.is_some() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if m == "Exact" && rv == Some("0") {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if let Some(t) = token_rv {
            return Ok(Self::Exact(t));
        }
        Ok(match (rv, m) {
            (None, _) => Self::Latest,
            (Some("0"), _) => Self::Any,
            (Some(v), Some("Exact")) => Self::Exact(parse(v)?),
            (Some(v), _) => Self::NotOlderThan(parse(v)?),
        })
    }
}

pub(super) fn too_large(rv: u64, current: u64) -> ApiError {
    let mut e = ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {rv}, current: {current}"),
    );
    e.details = Some(
        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
    );
    e
}

#[derive(Clone)]
pub(super) struct Filter {
    labels: LabelSelector,
    pub(super) fields: FieldSelector,
}

impl Filter {
    /// The selectors of a list or watch of `info`; a field selector on a field the
    /// resource does not offer is refused, as upstream.
    pub(super) fn new(info: &ResourceInfo, opts: &ListOptions) -> Result<Self, ApiError> {
        let fields = FieldSelector::parse(opts.field_selector.as_deref().unwrap_or(""))?;
        if let Some(f) = fields.fields().find(|f| !info.strategy.selectable_field(f)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
        Ok(Self {
            labels: LabelSelector::parse(opts.label_selector.as_deref().unwrap_or(""))?,
            fields,
        })
    }
    pub(super) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// False only when neither stored encoding can match (see
    /// [`FieldSelector::may_match_json`]): the event needs no decoding.
    pub(super) fn may_match_raw(&self, kv: &[u8], prev: Option<&[u8]>) -> bool {
        self.fields.may_match_json(kv) || prev.is_some_and(|p| self.fields.may_match_json(p))
    }

    /// Whether the filter keeps every object (no selector terms at all).
    pub(super) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

impl Api {
    pub(crate) async fn get_in(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(self.get_kv(info, namespace, name).await?.0)
    }

    pub(super) async fn get_kv(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(Value, u64), ApiError> {
        let ns = if info.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        let kv = self
            .inner
            .storage
            .get(&info.key(ns, name))
            .await
            .map_err(|e| from_storage(e, &info.group, &info.plural, name))?
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        Ok((decode_for(info, &kv)?, kv.mod_revision))
    }

    pub(crate) async fn list_in(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let filter = Filter::new(info, opts)?;
        let prefix = info.prefix(namespace.filter(|_| info.namespaced));
        let limit = opts.limit.unwrap_or(0);
        let (start, token_rv) = match &opts.continue_token {
            Some(t) if !t.is_empty() => {
                let (k, rv) = decode_continue(t)?;
                (Some(k), rv)
            }
            _ => (None, None),
        };
        let at = ReadAt::of(opts, token_rv)?;
        let keep = |o: &Value| filter.matches(o);
        let (objs, more, rev) = match self
            .cached_page(&prefix, at, start.as_deref(), &keep, limit)
            .await?
        {
            Some(found) => found,
            None => {
                let (all, rev) = self.snapshot_from_storage(&prefix, at).await?;
                // Objects are in key order: page after the continue key.
                let mut rest = all
                    .into_iter()
                    .filter(|o| {
                        start
                            .as_deref()
                            .is_none_or(|s| key_of(info, o).as_str() > s)
                    })
                    .filter(|o| filter.matches(o));
                let mut page = Vec::new();
                for o in rest.by_ref() {
                    page.push(o);
                    if limit > 0 && page.len() == limit {
                        break;
                    }
                }
                let more = limit > 0 && page.len() == limit && rest.next().is_some();
                (page, more, rev)
            }
        };
        let items: Vec<Value> = objs
            .iter()
            .map(|o| {
                let mut v = (**o).clone();
                info.strategy.serve_stored(&mut v);
                v
            })
            .collect();
        let next = more.then(|| {
            let last = items.last().map(|o| key_of(info, o)).unwrap_or_default();
            encode_continue(&last, rev)
        });
        Ok(self.list_object(info, items, rev, next))
    }

    /// The objects under `prefix` from the watch cache, per `at`; `None` when the cache
    /// cannot answer (not primed, or the history back to `at` is gone).
    pub(super) async fn cached_page(
        &self,
        prefix: &str,
        at: ReadAt,
        start_after: Option<&str>,
        keep: &(dyn Fn(&Value) -> bool + Sync),
        limit: usize,
    ) -> Result<Option<(Vec<crate::cache::Obj>, bool, u64)>, ApiError> {
        let cache = &self.inner.cache;
        if let Err(e) = cache.ensure().await {
            tracing::debug!(error = %e, "watch cache unavailable; listing from storage");
            return Ok(None);
        }
        let wait = |rev: u64| async move {
            if cache.wait_for(rev, Duration::from_secs(3)).await {
                Ok(())
            } else {
                Err(too_large(rev, cache.revision().unwrap_or(0)))
            }
        };
        match at {
            // "Any" may be served from any state, but a cache behind an acknowledged
            // write makes clients such as kubectl's `rollout status` (whose first list
            // is resourceVersion=0) see a finished rollout that has not started: serve
            // it, like an unset resourceVersion, once the cache has caught up.
            ReadAt::Any | ReadAt::Latest => {
                // A consistent read: the cache must have caught up with the store.
                let current = self
                    .inner
                    .storage
                    .revision()
                    .await
                    .map_err(crate::error::from_store)?
                    .current;
                if !cache.wait_for(current, Duration::from_secs(3)).await {
                    return Ok(None);
                }
            }
            ReadAt::NotOlderThan(rev) | ReadAt::Exact(rev) => wait(rev).await?,
        }
        let exact = match at {
            ReadAt::Exact(rev) => Some(rev),
            _ => None,
        };
        Ok(cache.list_page(prefix, exact, start_after, keep, limit))
    }

    /// The objects under `prefix` read from the store; for an exact revision, the
    /// current state with the changes after it undone (from the store's history).
    pub(super) async fn snapshot_from_storage(
        &self,
        prefix: &str,
        at: ReadAt,
    ) -> Result<(Vec<crate::cache::Obj>, u64), ApiError> {
        let storage = &self.inner.storage;
        let internal = crate::error::from_store;
        let page = storage.range(prefix, None, 0).await.map_err(internal)?;
        let mut objs: std::collections::BTreeMap<String, Value> = page
            .kvs
            .iter()
            .map(|kv| Ok((kv.key.clone(), decode(kv)?)))
            .collect::<Result<_, ApiError>>()?;
        let target = match at {
            ReadAt::NotOlderThan(rev) if rev > page.revision => {
                return Err(too_large(rev, page.revision))
            }
            ReadAt::Exact(rev) if rev > page.revision => return Err(too_large(rev, page.revision)),
            ReadAt::Exact(rev) if rev < page.revision => rev,
            _ => return Ok((objs.into_values().map(Arc::new).collect(), page.revision)),
        };
        // Every revision is one write, so the history after `target` up to the range's
        // revision is complete; the first change to each key holds its state at `target`.
        let mut history = storage
            .watch("", target)
            .await
            .map_err(crate::error::from_store)?;
        let mut seen = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline, history.next())
                .await
                .map_err(|_| ApiError::internal("reading the store's history timed out"))?;
            let Some(ev) = ev else { break };
            let ev = ev.map_err(internal)?;
            if ev.revision() > page.revision {
                break;
            }
            let key = ev.kv.key.clone();
            if key.starts_with(prefix) && seen.insert(key.clone()) {
                match &ev.prev {
                    Some(p) => {
                        objs.insert(key, decode(p)?);
                    }
                    None => {
                        objs.remove(&key);
                    }
                }
            }
            if ev.revision() == page.revision {
                break;
            }
        }
        Ok((objs.into_values().map(Arc::new).collect(), target))
    }

    pub(super) fn list_object(
        &self,
        info: &ResourceInfo,
        items: Vec<Value>,
        rv: u64,
        cont: Option<String>,
    ) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(),
            "metadata": meta,
            "items": items,
        })
    }
}
