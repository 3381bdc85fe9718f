//! The etcd backend: the same [`Storage`] model on an etcd v3 cluster, for clusters that
//! outgrow one machine. Several API servers on one etcd see each other's writes and watches.

use std::sync::Arc;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::{
    Event, EventKind, KeyValue, RangeResult, Revisions, Storage, StorageError, WatchStream,
};

fn backend(op: &'static str) -> impl FnOnce(etcd_client::Error) -> StorageError {
    move |e| match unavailable(&e) {
        Some(message) => StorageError::Unavailable { op, message },
        None => StorageError::Backend {
            op,
            message: e.to_string(),
        },
    }
}

/// etcd's message when the error means "not now" (no quorum, no leader, unreachable,
/// timed out) rather than a bad request: the caller may retry.
fn unavailable(e: &etcd_client::Error) -> Option<String> {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s)
            if matches!(
                s.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ) || s.message().contains("no leader")
                || s.message().contains("request timed out") =>
        {
            // etcd's own messages name it (`etcdserver: no leader`); a transport failure
            // reported as a status (`tcp connect error`) gets the name added
            let m = s.message();
            Some(if m.starts_with("etcd") {
                m.to_owned()
            } else {
                format!("etcd: {m}")
            })
        }
        etcd_client::Error::TransportError(t) => Some(format!("etcd unreachable: {t}")),
        etcd_client::Error::IoError(io) => Some(format!("etcd unreachable: {io}")),
        _ => None,
    }
}

/// How the API server reaches etcd: mutual TLS (kube-apiserver's `--etcd-cafile`,
/// `--etcd-certfile`, `--etcd-keyfile`) and the time a request may take.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// PEM of the CA that signed the etcd members' certificates.
    pub ca_pem: Option<String>,
    /// PEM of the client certificate and its key shown to etcd.
    pub client_cert: Option<(String, String)>,
    /// How long one request may take before it fails as unavailable.
    pub request_timeout: std::time::Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            ca_pem: None,
            client_cert: None,
            request_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// A [`Storage`] on etcd. Every key is stored under a root prefix, so several independent
/// stores can share one etcd.
#[derive(Clone)]
pub struct EtcdStorage {
    client: Client,
    root: Arc<str>,
}

impl std::fmt::Debug for EtcdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStorage")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    /// The etcd client's options.
    pub fn connect_options(&self) -> etcd_client::ConnectOptions {
        let mut o = etcd_client::ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(std::time::Duration::from_secs(3))
            .with_keep_alive(
                std::time::Duration::from_secs(2),
                std::time::Duration::from_secs(2),
            )
            .with_timeout(self.request_timeout);
        if self.ca_pem.is_some() || self.client_cert.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca_pem {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.client_cert {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            o = o.with_tls(tls);
        }
        o
    }
}

fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

impl EtcdStorage {
    /// Connects to etcd at `endpoints` (e.g. `["http://127.0.0.1:2379"]`), storing keys
    /// under `root` (e.g. `""`, or `"/cluster-a"`).
    pub async fn connect(endpoints: &[&str], root: &str) -> Result<Self, StorageError> {
        Self::connect_with(endpoints, root, &EtcdOptions::default()).await
    }

    /// Connects as [`connect`](Self::connect) does, with TLS and timeouts from `opts`.
    /// Requests ask for a member with a leader (etcd's `require_leader`), so a member
    /// cut off from the quorum fails at once with `etcdserver: no leader` instead of
    /// waiting.
    pub async fn connect_with(
        endpoints: &[&str],
        root: &str,
        opts: &EtcdOptions,
    ) -> Result<Self, StorageError> {
        let client = Client::connect(endpoints, Some(opts.connect_options()))
            .await
            .map_err(backend("connect"))?;
        Ok(Self::from_client(client, root))
    }

    /// A store on an existing etcd client.
    pub fn from_client(client: Client, root: &str) -> Self {
        Self {
            client,
            root: root.trim_end_matches('/').into(),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn strip(&self, key: &[u8]) -> String {
        let k = String::from_utf8_lossy(key);
        k.strip_prefix(&*self.root).unwrap_or(&k).to_owned()
    }

    fn compact_key(&self) -> String {
        format!("{}/.kcore/compacted", self.root)
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(kv.key()),
            value: kv.value().to_vec(),
            create_revision: rev(kv.create_revision()),
            mod_revision: rev(kv.mod_revision()),
        }
    }

    async fn compacted(&self) -> Result<u64, StorageError> {
        let mut c = self.client.clone();
        let r = c
            .get(self.compact_key(), None)
            .await
            .map_err(backend("get"))?;
        Ok(r.kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// A conditional put or delete: `cond` guards `op`; on failure the key is read back to
    /// tell NotFound from Conflict.
    async fn guarded(
        &self,
        key: &str,
        expected: Option<u64>,
        op: TxnOp,
        what: &'static str,
    ) -> Result<(i64, Option<etcd_client::KeyValue>), StorageError> {
        let full = self.full(key);
        let cond = match expected {
            Some(e) => Compare::mod_revision(full.clone(), CompareOp::Equal, e as i64),
            None => Compare::create_revision(full.clone(), CompareOp::Greater, 0),
        };
        let mut c = self.client.clone();
        let resp = c
            .txn(
                Txn::new()
                    .when([cond])
                    .and_then([op])
                    .or_else([TxnOp::get(full, None)]),
            )
            .await
            .map_err(backend(what))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let ops = resp.op_responses();
        if resp.succeeded() {
            let prev = match ops.into_iter().next() {
                Some(TxnOpResponse::Put(p)) => p.prev_key().cloned(),
                Some(TxnOpResponse::Delete(d)) => d.prev_kvs().first().cloned(),
                _ => None,
            };
            return Ok((revision, prev));
        }
        let current = match ops.into_iter().next() {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| rev(kv.mod_revision())),
            _ => None,
        };
        Err(match (current, expected) {
            (None, _) => StorageError::NotFound { key: key.into() },
            (Some(current), Some(expected)) => StorageError::Conflict {
                key: key.into(),
                expected,
                current,
            },
            (Some(_), None) => StorageError::Backend {
                op: what,
                message: "transaction failed on an existing key".into(),
            },
        })
    }
}

impl Storage for EtcdStorage {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StorageError>> {
        let full = self.full(key);
        async move {
            let mut c = self.client.clone();
            let r = c.get(full, None).await.map_err(backend("get"))?;
            Ok(r.kvs().first().map(|kv| self.kv(kv)))
        }
        .boxed()
    }

    fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RangeResult, StorageError>> {
        let full_prefix = self.full(prefix);
        let start = match start_after {
            Some(s) if s >= prefix => {
                let mut k = self.full(s).into_bytes();
                k.push(0);
                k
            }
            _ => full_prefix.clone().into_bytes(),
        };
        async move {
            let mut opts = GetOptions::new().with_range(prefix_end(full_prefix.as_bytes()));
            if limit > 0 {
                opts = opts.with_limit(limit as i64);
            }
            let mut c = self.client.clone();
            let r = c.get(start, Some(opts)).await.map_err(backend("range"))?;
            Ok(RangeResult {
                kvs: r.kvs().iter().map(|kv| self.kv(kv)).collect(),
                more: r.more(),
                revision: rev(r.header().map(|h| h.revision()).unwrap_or(0)),
            })
        }
        .boxed()
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let full = self.full(key);
        let key = key.to_owned();
        async move {
            let mut c = self.client.clone();
            let txn = Txn::new()
                .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(full, value.clone(), None)]);
            let r = c.txn(txn).await.map_err(backend("create"))?;
            if !r.succeeded() {
                return Err(StorageError::AlreadyExists { key });
            }
            let revision = rev(r.header().map(|h| h.revision()).unwrap_or(0));
            Ok(KeyValue {
                key,
                value,
                create_revision: revision,
                mod_revision: revision,
            })
        }
        .boxed()
    }

    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let key = key.to_owned();
        async move {
            let op = TxnOp::put(
                self.full(&key),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            );
            let (revision, prev) = self.guarded(&key, expected_revision, op, "update").await?;
            Ok(KeyValue {
                create_revision: prev.map(|p| rev(p.create_revision())).unwrap_or(0),
                key,
                value,
                mod_revision: rev(revision),
            })
        }
        .boxed()
    }

    fn delete(
        &self,
        key: &str,
        expected_revision: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        let key = key.to_owned();
        async move {
            let op = TxnOp::delete(
                self.full(&key),
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            );
            let (revision, prev) = self.guarded(&key, expected_revision, op, "delete").await?;
            let prev = prev.ok_or_else(|| StorageError::NotFound { key: key.clone() })?;
            Ok(KeyValue {
                mod_revision: rev(revision),
                ..self.kv(&prev)
            })
        }
        .boxed()
    }

    fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> BoxFuture<'_, Result<WatchStream, StorageError>> {
        let full_prefix = self.full(prefix);
        let prefix = prefix.to_owned();
        async move {
            let compacted = self.compacted().await?;
            if after_revision < compacted {
                return Err(StorageError::Compacted {
                    requested: after_revision,
                    compacted,
                });
            }
            let mut c = self.client.clone();
            let opts = WatchOptions::new()
                .with_range(prefix_end(full_prefix.as_bytes()))
                .with_start_revision(after_revision as i64 + 1)
                .with_prev_key();
            let stream = c
                .watch(full_prefix, Some(opts))
                .await
                .map_err(backend("watch"))?;
            let this = self.clone();
            let events = futures::stream::unfold(Some(stream), move |state| {
                let this = this.clone();
                let prefix = prefix.clone();
                async move {
                    let mut stream = state?;
                    let resp = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => return None,
                        Err(e) => {
                            let err = StorageError::Backend {
                                op: "watch",
                                message: e.to_string(),
                            };
                            return Some((vec![Err(err)], None));
                        }
                    };
                    if resp.compact_revision() > 0 {
                        let err = StorageError::Compacted {
                            requested: after_revision,
                            compacted: rev(resp.compact_revision()),
                        };
                        return Some((vec![Err(err)], None));
                    }
                    if resp.canceled() {
                        let err = StorageError::WatchLagged { prefix };
                        return Some((vec![Err(err)], None));
                    }
                    let out: Vec<Result<Event, StorageError>> = resp
                        .events()
                        .iter()
                        .filter_map(|ev| {
                            let kv = ev.kv()?;
                            let prev = ev.prev_kv().map(|p| this.kv(p));
                            Some(Ok(match ev.event_type() {
                                EventType::Put => Event {
                                    kind: EventKind::Put,
                                    kv: this.kv(kv),
                                    prev,
                                },
                                EventType::Delete => {
                                    let mut last = prev.clone().unwrap_or_else(|| this.kv(kv));
                                    last.mod_revision = rev(kv.mod_revision());
                                    Event {
                                        kind: EventKind::Delete,
                                        kv: last,
                                        prev,
                                    }
                                }
                            }))
                        })
                        .collect();
                    Some((out, Some(stream)))
                }
            })
            .flat_map(futures::stream::iter);
            Ok(events.boxed())
        }
        .boxed()
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        async move {
            let current = self.revision().await?;
            if revision > current.current {
                return Err(StorageError::FutureRevision {
                    requested: revision,
                    current: current.current,
                });
            }
            if revision <= current.compacted {
                return Ok(());
            }
            let mut c = self.client.clone();
            c.compact(revision as i64, None)
                .await
                .map_err(backend("compact"))?;
            c.put(self.compact_key(), revision.to_string(), None)
                .await
                .map_err(backend("compact"))?;
            Ok(())
        }
        .boxed()
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revisions, StorageError>> {
        async move {
            let mut c = self.client.clone();
            let r = c
                .get(self.compact_key(), None)
                .await
                .map_err(backend("revision"))?;
            let compacted = r
                .kvs()
                .first()
                .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
                .unwrap_or(0);
            Ok(Revisions {
                current: rev(r.header().map(|h| h.revision()).unwrap_or(0)),
                compacted,
            })
        }
        .boxed()
    }
}
