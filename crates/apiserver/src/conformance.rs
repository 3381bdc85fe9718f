//! A conformance suite for [`Storage`] backends.
//!
//! Every backend must pass [`run`]: it is called from this crate's tests for the embedded
//! backend and for etcd. Each case gets a fresh, empty store from the factory; a failure
//! panics with the case's name and what differed.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;

use crate::storage::{EventKind, Storage, StorageError, WatchStream};

/// Runs every case, each on a fresh store from `fresh`.
pub async fn run<F, Fut, S>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Storage,
{
    create_and_get(&fresh().await).await;
    update_if_revision(&fresh().await).await;
    delete_semantics(&fresh().await).await;
    range_prefix_order_and_pages(&fresh().await).await;
    watch_from_revision(&fresh().await).await;
    watch_live_and_prefix(&fresh().await).await;
    compaction(&fresh().await).await;
    concurrent_writers(&fresh().await).await;
}

async fn next_event(stream: &mut WatchStream, case: &str) -> crate::storage::Event {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("{case}: expected a watch event, got {other:?}"),
    }
}

/// Create returns the new revisions, get reads them back, a second create fails.
pub async fn create_and_get<S: Storage>(s: &S) {
    let before = s.revision().await.expect("revision").current;
    let kv = s.create("/c/a", b"one".to_vec()).await.expect("create");
    assert!(
        kv.mod_revision > before,
        "create_and_get: revision must grow"
    );
    assert_eq!(kv.create_revision, kv.mod_revision, "create_and_get");
    let got = s
        .get("/c/a")
        .await
        .expect("get")
        .expect("create_and_get: key missing");
    assert_eq!(got, kv, "create_and_get: get differs from create");
    assert_eq!(got.value, b"one", "create_and_get");
    assert!(
        s.get("/c/b").await.expect("get").is_none(),
        "create_and_get"
    );
    match s.create("/c/a", b"two".to_vec()).await {
        Err(StorageError::AlreadyExists { key }) => assert_eq!(key, "/c/a"),
        other => panic!("create_and_get: second create gave {other:?}"),
    }
    let cur = s.revision().await.expect("revision").current;
    assert_eq!(
        cur, kv.mod_revision,
        "create_and_get: failed create bumped revision"
    );
}

/// Update succeeds only at the expected revision and keeps the creation revision.
pub async fn update_if_revision<S: Storage>(s: &S) {
    let c = s.create("/u/a", b"1".to_vec()).await.expect("create");
    let u = s
        .update("/u/a", b"2".to_vec(), Some(c.mod_revision))
        .await
        .expect("update at current revision");
    assert!(u.mod_revision > c.mod_revision, "update_if_revision");
    assert_eq!(u.create_revision, c.create_revision, "update_if_revision");
    match s.update("/u/a", b"3".to_vec(), Some(c.mod_revision)).await {
        Err(StorageError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (c.mod_revision, u.mod_revision)),
        other => panic!("update_if_revision: stale update gave {other:?}"),
    }
    assert_eq!(s.get("/u/a").await.expect("get").expect("key").value, b"2");
    match s.update("/u/missing", b"x".to_vec(), None).await {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("update_if_revision: update of missing key gave {other:?}"),
    }
    let w = s.update("/u/a", b"4".to_vec(), None).await.expect("update");
    assert!(w.mod_revision > u.mod_revision, "update_if_revision");
}

/// Delete returns the last value at the deletion's revision; recreation starts anew.
pub async fn delete_semantics<S: Storage>(s: &S) {
    let c = s.create("/d/a", b"v".to_vec()).await.expect("create");
    match s.delete("/d/a", Some(c.mod_revision + 1000)).await {
        Err(StorageError::Conflict { .. }) => {}
        other => panic!("delete_semantics: stale delete gave {other:?}"),
    }
    let d = s
        .delete("/d/a", Some(c.mod_revision))
        .await
        .expect("delete");
    assert_eq!(d.value, b"v", "delete_semantics");
    assert!(d.mod_revision > c.mod_revision, "delete_semantics");
    assert!(
        s.get("/d/a").await.expect("get").is_none(),
        "delete_semantics"
    );
    match s.delete("/d/a", None).await {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("delete_semantics: second delete gave {other:?}"),
    }
    let again = s.create("/d/a", b"w".to_vec()).await.expect("recreate");
    assert!(again.create_revision > d.mod_revision, "delete_semantics");
}

/// Range honours the prefix, returns keys in order, and pages with limit + start_after.
pub async fn range_prefix_order_and_pages<S: Storage>(s: &S) {
    for k in ["/r/b/2", "/r/a/1", "/r/b/1", "/r/b/3", "/r/bb/1", "/r/c"] {
        s.create(k, k.as_bytes().to_vec()).await.expect("create");
    }
    let all = s.range("/r/b/", None, 0).await.expect("range");
    let keys: Vec<_> = all.kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/r/b/1", "/r/b/2", "/r/b/3"], "range: prefix");
    assert!(!all.more, "range: more without limit");
    assert_eq!(all.revision, s.revision().await.expect("rev").current);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .range("/r/", after.as_deref(), 2)
            .await
            .expect("range page");
        assert!(page.kvs.len() <= 2, "range: limit");
        seen.extend(page.kvs.iter().map(|k| k.key.clone()));
        after = page.kvs.last().map(|k| k.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(
        seen,
        ["/r/a/1", "/r/b/1", "/r/b/2", "/r/b/3", "/r/bb/1", "/r/c"],
        "range: pages"
    );
    assert!(s
        .range("/none/", None, 0)
        .await
        .expect("range")
        .kvs
        .is_empty());
}

/// Watching from a past revision replays the history in order, then goes live.
pub async fn watch_from_revision<S: Storage>(s: &S) {
    let start = s.revision().await.expect("rev").current;
    let a = s.create("/w/a", b"1".to_vec()).await.expect("create");
    let a2 = s.update("/w/a", b"2".to_vec(), None).await.expect("update");
    let d = s.delete("/w/a", None).await.expect("delete");
    let mut w = s.watch("/w/", start).await.expect("watch");
    let e1 = next_event(&mut w, "watch_from_revision").await;
    assert_eq!(
        (e1.kind, e1.kv.mod_revision),
        (EventKind::Put, a.mod_revision)
    );
    assert!(e1.prev.is_none(), "watch_from_revision: create has no prev");
    let e2 = next_event(&mut w, "watch_from_revision").await;
    assert_eq!(
        (e2.kind, e2.kv.value.as_slice()),
        (EventKind::Put, &b"2"[..])
    );
    assert_eq!(
        e2.prev.as_ref().map(|p| p.value.as_slice()),
        Some(&b"1"[..])
    );
    let e3 = next_event(&mut w, "watch_from_revision").await;
    assert_eq!(e3.kind, EventKind::Delete, "watch_from_revision");
    assert_eq!(e3.kv.mod_revision, d.mod_revision, "watch_from_revision");
    assert_eq!(
        e3.kv.value, b"2",
        "watch_from_revision: delete carries last value"
    );
    assert!(a2.mod_revision < d.mod_revision);
    let b = s.create("/w/b", b"3".to_vec()).await.expect("create");
    let e4 = next_event(&mut w, "watch_from_revision").await;
    assert_eq!(
        e4.kv.mod_revision, b.mod_revision,
        "watch_from_revision: live"
    );
    // Starting in the middle skips what came before.
    let mut mid = s.watch("/w/", a2.mod_revision).await.expect("watch");
    let m = next_event(&mut mid, "watch_from_revision").await;
    assert_eq!(
        m.kv.mod_revision, d.mod_revision,
        "watch_from_revision: middle"
    );
}

/// Live watchers see only their prefix, in revision order.
pub async fn watch_live_and_prefix<S: Storage>(s: &S) {
    let now = s.revision().await.expect("rev").current;
    let mut w = s.watch("/p/x/", now).await.expect("watch");
    let mut revs = Vec::new();
    for i in 0..20 {
        let key = if i % 2 == 0 {
            format!("/p/x/{i}")
        } else {
            format!("/p/y/{i}")
        };
        let kv = s.create(&key, vec![i]).await.expect("create");
        if i % 2 == 0 {
            revs.push(kv.mod_revision);
        }
    }
    for want in revs {
        let ev = next_event(&mut w, "watch_live_and_prefix").await;
        assert!(
            ev.kv.key.starts_with("/p/x/"),
            "watch_live_and_prefix: prefix"
        );
        assert_eq!(ev.kv.mod_revision, want, "watch_live_and_prefix: order");
    }
}

/// After compaction, watching from before it fails; from it onwards works.
pub async fn compaction<S: Storage>(s: &S) {
    let mut last = 0;
    for i in 0..5u8 {
        last = s
            .create(&format!("/k/{i}"), vec![i])
            .await
            .expect("create")
            .mod_revision;
    }
    let mid = last - 2;
    s.compact(mid).await.expect("compact");
    assert_eq!(
        s.revision().await.expect("rev").compacted,
        mid,
        "compaction"
    );
    match s.watch("/k/", mid - 1).await {
        Err(StorageError::Compacted { compacted, .. }) => assert_eq!(compacted, mid),
        Err(e) => panic!("compaction: watch before compaction gave {e}"),
        Ok(_) => panic!("compaction: watch before compaction succeeded"),
    }
    let mut w = s.watch("/k/", mid).await.expect("watch at compaction");
    let ev = next_event(&mut w, "compaction").await;
    assert_eq!(ev.kv.mod_revision, mid + 1, "compaction: first event after");
    // Data itself survives compaction.
    assert_eq!(s.range("/k/", None, 0).await.expect("range").kvs.len(), 5);
    assert!(
        s.compact(last + 100).await.is_err(),
        "compaction: future revision"
    );
}

/// Concurrent writers all succeed with distinct revisions; of racing conditional updates
/// exactly one wins.
pub async fn concurrent_writers<S: Storage>(s: &S) {
    let creates = (0..64).map(|i| s.create_owned(format!("/cc/{i:03}"), vec![1]));
    let kvs: Vec<_> = futures::future::join_all(creates).await;
    let mut revs: Vec<u64> = kvs
        .into_iter()
        .map(|r| r.expect("concurrent create").mod_revision)
        .collect();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(
        revs.len(),
        64,
        "concurrent_writers: revisions must be distinct"
    );
    let base = s.create("/cc/race", b"0".to_vec()).await.expect("create");
    let racers = (0..16).map(|i| s.update_owned("/cc/race".into(), vec![i], base.mod_revision));
    let results = futures::future::join_all(racers).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        wins, 1,
        "concurrent_writers: exactly one conditional update wins"
    );
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, StorageError::Conflict { .. })));
}

/// Helpers that own their arguments so many futures can be built at once.
trait OwnedArgs: Storage {
    fn create_owned(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<crate::storage::KeyValue, StorageError>> + '_ {
        async move { self.create(&key, value).await }
    }
    fn update_owned(
        &self,
        key: String,
        value: Vec<u8>,
        rev: u64,
    ) -> impl Future<Output = Result<crate::storage::KeyValue, StorageError>> + '_ {
        async move { self.update(&key, value, Some(rev)).await }
    }
}
impl<S: Storage> OwnedArgs for S {}
