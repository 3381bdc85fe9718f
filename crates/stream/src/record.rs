//! Which protocol each session negotiated: a bounded list of recent sessions the node
//! exposes (tests assert a client used WebSocket or SPDY), plus counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many sessions [`Sessions`] remembers.
const KEEP: usize = 256;

/// The transport a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Transport {
    /// WebSocket with a channel subprotocol (`v5.channel.k8s.io`, ...).
    #[serde(rename = "websocket")]
    WebSocket,
    /// SPDY/3.1 tunnelled in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`).
    #[serde(rename = "websocket-spdy-tunnel")]
    WebSocketSpdyTunnel,
    /// A plain SPDY/3.1 upgrade.
    #[serde(rename = "spdy")]
    Spdy,
}

impl Transport {
    /// The name recorded and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::WebSocketSpdyTunnel => "websocket-spdy-tunnel",
            Transport::Spdy => "spdy",
        }
    }
}

/// One session as recorded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// `exec`, `attach` or `portforward`.
    pub kind: &'static str,
    /// The transport.
    pub transport: Transport,
    /// The negotiated subprotocol (`v5.channel.k8s.io`, `portforward.k8s.io`, ...; empty
    /// when the client named none).
    pub protocol: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container (empty for port-forward).
    pub container: String,
    /// When the session started, in seconds since the epoch.
    pub started: u64,
    /// The session's number on this node (set by [`Sessions::record`]).
    pub id: u64,
    /// The session's span on the node, in microseconds: from the request's arrival to
    /// the session's end (for an exec, past its exit status); `None` while it runs.
    pub duration_micros: Option<u64>,
    /// The request came from an API server in the node's own process (it carried
    /// [`InProcess`](crate::InProcess)): the session runs on the client's own
    /// connection, without a hop through the node's port.
    pub in_process: bool,
}

/// Recent sessions, shared by every handler of a node's server.
///
/// ```
/// let s = kcore_stream::Sessions::default();
/// assert!(s.recent().is_empty());
/// assert_eq!(s.to_json()["sessions"], serde_json::json!([]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<SessionRecord>,
    counts: BTreeMap<String, u64>,
    in_process: u64,
    next: u64,
}

impl Sessions {
    /// Records a session that just negotiated its protocol; returns its number (for
    /// [`Sessions::finish`]).
    pub fn record(&self, mut r: SessionRecord) -> u64 {
        tracing::info!(
            kind = r.kind,
            transport = r.transport.as_str(),
            protocol = %r.protocol,
            namespace = %r.namespace,
            pod = %r.pod,
            container = %r.container,
            in_process = r.in_process,
            "streaming session negotiated"
        );
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.counts
            .entry(format!(
                "{}/{}/{}",
                r.kind,
                r.transport.as_str(),
                r.protocol
            ))
            .or_default() += 1;
        if r.in_process {
            g.in_process += 1;
        }
        g.next += 1;
        r.id = g.next;
        if g.recent.len() == KEEP {
            g.recent.pop_front();
        }
        g.recent.push_back(r);
        g.next
    }

    /// Records that session `id` ended, `span` after its request arrived.
    pub fn finish(&self, id: u64, span: std::time::Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = g.recent.iter_mut().rev().find(|r| r.id == id) {
            r.duration_micros = Some(u64::try_from(span.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// The recent sessions, oldest first.
    pub fn recent(&self) -> Vec<SessionRecord> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.recent.iter().cloned().collect()
    }

    /// `{"sessions": [...], "counts": {"exec/websocket/v5.channel.k8s.io": 1, ...},
    /// "inProcess": 1}` (how many sessions came from an API server in the node's own
    /// process), as a node's `/debug/streams` serves it.
    pub fn to_json(&self) -> serde_json::Value {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({"sessions": g.recent, "counts": g.counts, "inProcess": g.in_process})
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
