//! Watches from a resourceVersion, with bookmarks and selectors.

use super::*;

/// A change as a watcher reads it: from its own store watch, or decoded once for all
/// (`fanout`).
enum Item {
    Stored(crate::storage::Event),
    Shared(Arc<super::fanout::Shared>),
}

impl Item {
    fn revision(&self) -> u64 {
        match self {
            Item::Stored(e) => e.revision(),
            Item::Shared(e) => e.rev,
        }
    }
}

impl Api {
    /// Starts a watch.
    pub(crate) async fn watch_in(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<WatchEvents, ApiError> {
        let filter = Filter::new(info, opts)?;
        let served = info.strategy.clone();
        let prefix = info.prefix(namespace.filter(|_| info.namespaced));
        let rv = opts.resource_version.as_deref().filter(|s| !s.is_empty());
        let send_initial = opts
            .send_initial_events
            .unwrap_or(matches!(rv, None | Some("0")));
        if opts.send_initial_events == Some(true) && !matches!(rv, None | Some("0")) {
            // Upstream allows sendInitialEvents only with an unset or "0" resourceVersion
            // and resourceVersionMatch=NotOlderThan; be lenient on the latter.
        }
        let mut initial = Vec::new();
        let start = if send_initial || rv.is_none() || rv == Some("0") {
            let list_opts = ListOptions {
                label_selector: opts.label_selector.clone(),
                field_selector: opts.field_selector.clone(),
                ..Default::default()
            };
            let list = self.list_in(info, namespace, &list_opts).await?;
            let rev: u64 = list["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            if send_initial {
                initial = list["items"].as_array().cloned().unwrap_or_default();
            }
            rev
        } else {
            rv.and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?
        };
        let init_end_bookmark =
            opts.send_initial_events == Some(true) && opts.allow_watch_bookmarks;
        let timeout = opts
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.inner.config.default_watch_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let bookmarks = opts.allow_watch_bookmarks;
        let bookmark_every = self.inner.config.bookmark_interval;
        let api_version = info.api_version();
        let kind = info.kind.clone();
        let bookmark = move |rv: u64, end: bool| {
            let mut m = json!({"resourceVersion": rv.to_string()});
            if end {
                m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            WatchEvent {
                kind: "BOOKMARK",
                object: json!({"kind": kind, "apiVersion": api_version, "metadata": m}),
            }
        };
        let head: Vec<WatchEvent> = initial
            .into_iter()
            .map(|o| WatchEvent {
                kind: "ADDED",
                object: o,
            })
            .chain(init_end_bookmark.then(|| bookmark(start, true)))
            .collect();
        // an indexed resource (pods): the shared, decode-once watch if it can serve
        let shared = match info.strategy.watch_index() {
            Some(field) => {
                self.inner
                    .fanout
                    .subscribe(
                        &self.inner.storage,
                        info,
                        field,
                        &prefix,
                        start,
                        filter.fields.exact(field),
                    )
                    .await
            }
            None => None,
        };
        let storage_stream = match shared {
            Some(s) => Some(s.map(|e| Ok(Item::Shared(e))).boxed()),
            None => match self.inner.storage.watch(&prefix, start).await {
                Ok(s) => Some(s.map(|e| e.map(Item::Stored)).boxed()),
                Err(StorageError::Compacted {
                    requested,
                    compacted,
                }) => {
                    let err = ApiError::gone(format!(
                        "too old resource version: {requested} ({compacted})"
                    ));
                    let ev = WatchEvent {
                        kind: "ERROR",
                        object: err.to_status(),
                    };
                    return Ok(futures::stream::iter(head.into_iter().chain([ev])).boxed());
                }
                Err(e) => return Err(crate::error::from_store(e)),
            },
        };
        let convert = move |item: Item| -> Option<WatchEvent> {
            let (kind, had_prev, obj, prev_match) = match item {
                Item::Stored(ev) => {
                    let prev = ev.prev.as_ref().map(|p| &p.value[..]);
                    if !filter.may_match_raw(&ev.kv.value, prev) {
                        return None;
                    }
                    let mut obj = decode(&ev.kv).ok()?;
                    served.serve_stored(&mut obj);
                    // Without selectors every stored state matches: no need to decode
                    // the previous one (most watchers, the informers, have none).
                    let prev_match = ev.prev.as_ref().is_some_and(|p| {
                        filter.is_empty() || decode(p).is_ok_and(|p| filter.matches(&p))
                    });
                    (ev.kind, ev.prev.is_some(), obj, prev_match)
                }
                Item::Shared(ev) => {
                    let prev_match = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
                    if !prev_match && !filter.matches(&ev.obj) {
                        return None;
                    }
                    (ev.kind, ev.prev.is_some(), ev.obj.clone(), prev_match)
                }
            };
            let now_match = filter.matches(&obj);
            let kind = match kind {
                EventKind::Delete if prev_match || now_match => "DELETED",
                EventKind::Delete => return None,
                EventKind::Put if now_match && had_prev && prev_match => "MODIFIED",
                EventKind::Put if now_match => "ADDED",
                EventKind::Put if prev_match => "DELETED",
                EventKind::Put => return None,
            };
            Some(WatchEvent { kind, object: obj })
        };
        struct St {
            inner: Option<BoxStream<'static, Result<Item, StorageError>>>,
            last: u64,
            ticker: tokio::time::Interval,
        }
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let st = St {
            inner: storage_stream,
            last: start,
            ticker,
        };
        let live = futures::stream::unfold(st, move |mut st| {
            let convert = convert.clone();
            let bookmark = bookmark.clone();
            async move {
                loop {
                    let inner = st.inner.as_mut()?;
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => return None,
                        _ = st.ticker.tick(), if bookmarks => {
                            let ev = bookmark(st.last, false);
                            return Some((ev, st));
                        }
                        next = inner.next() => match next {
                            None => return None,
                            Some(Err(e)) => {
                                st.inner = None;
                                let err = match e {
                                    StorageError::Compacted { requested, compacted } => ApiError::gone(format!("too old resource version: {requested} ({compacted})")),
                                    other => ApiError::new(500, "InternalError", other.to_string()),
                                };
                                return Some((WatchEvent { kind: "ERROR", object: err.to_status() }, st));
                            }
                            Some(Ok(ev)) => {
                                st.last = ev.revision();
                                if let Some(w) = convert(ev) {
                                    return Some((w, st));
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(futures::stream::iter(head).chain(live).boxed())
    }
}
