//! The options of reads, writes, deletes and watches, and the watch event type.

use super::*;

/// Options of a list or watch request (the `?` parameters of the same names).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `limit`: at most this many items per page.
    pub limit: Option<usize>,
    /// `continue`: the token from the previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion`: for a watch, the revision to start after.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
}

/// Options of a write (`?dryRun=All&fieldManager=..&force=true`).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Validate and default but store nothing.
    pub dry_run: bool,
    /// The actor, recorded in managedFields by server-side apply.
    pub field_manager: Option<String>,
    /// Server-side apply: take ownership of conflicting fields.
    pub force: bool,
}

/// Options of a delete (query parameters or a `DeleteOptions` body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// One watch event: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// The event type.
    pub kind: &'static str,
    /// The object (a `Status` for `ERROR`).
    pub object: Value,
}

impl WatchEvent {
    /// The event as a JSON line body: `{"type":..,"object":..}`.
    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "object": self.object})
    }

    /// The event as one line of a JSON watch stream (with its `\n`):
    /// `{"type":..,"object":..}`, `type` first as upstream's `metav1.WatchEvent` encodes
    /// it. A client that decodes the event type before the object (serde's adjacently
    /// tagged enums, as kube-rs's `WatchEvent`) then reads the object once, straight into
    /// its type, instead of buffering it whole first. Encoded without copying the object.
    pub fn to_json_line(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            object: &'a Value,
        }
        let mut line = serde_json::to_vec(&Line {
            kind: self.kind,
            object: &self.object,
        })
        .unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A stream of watch events; it ends at the timeout or after an `ERROR`.
pub type WatchEvents = BoxStream<'static, WatchEvent>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_the_event_encoded_type_first() {
        let ev = WatchEvent {
            kind: "MODIFIED",
            object: json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7"},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        };
        let line = ev.to_json_line();
        assert!(line.starts_with(br#"{"type":"MODIFIED","object":{"#));
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, ev.to_json());
    }
}
