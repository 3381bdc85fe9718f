//! The audit log, as upstream's: a policy (`--audit-policy-file`, `audit.k8s.io/v1`
//! `Policy`) chooses a level per request, and every audited request is written to
//! `--audit-log-path` as JSON lines of `audit.k8s.io/v1` `Event`s.
//!
//! - Rules match in order, the first wins; a request no rule matches is not audited
//!   (level `None`). A rule matches by `users`, `userGroups`, `verbs`, `namespaces`
//!   (resource requests; `""` is cluster-scoped), `resources` (`group`, `resources` as
//!   `pods`, `pods/log`, `*`, `*/status`, `pods/*`, `resourceNames`) and
//!   `nonResourceURLs` (a trailing `*` matches a prefix); `resources`/`namespaces` never
//!   match a non-resource request nor `nonResourceURLs` a resource one.
//! - Levels: `Metadata` (who, what, when, the outcome), `Request` (and the request
//!   body as `requestObject`), `RequestResponse` (and the response body as
//!   `responseObject`, except for streams).
//! - Stages: `RequestReceived` once the request is authenticated, `ResponseComplete`
//!   when the answer is ready; long-running requests (watches, `proxy`, and the `log`,
//!   `exec`, `attach`, `portforward` subresources, upstream's `LongRunningFunc`) also
//!   get `ResponseStarted` when the response starts, and `ResponseComplete` when it
//!   ends. `omitStages` of the rule and of the policy drop stages.
//! - Refused requests are audited as upstream's filters do: a 403 (authorization or
//!   impersonation) like any answer, with the authenticated user; a failed
//!   authentication (401) by one `ResponseStarted` event with an empty `user`, the level
//!   decided for that unknown user.
//! - The `authorization.k8s.io/decision` (`allow`/`forbid`) and
//!   `authorization.k8s.io/reason` annotations of the authorization step.
//! - Every response carries an `Audit-Id` header, the event's `auditID`.
//!
//! The log file is created 0600 and appended to, whole lines at a time, by a writer
//! thread that takes every event queued since its last write in one call (requests
//! never wait for the disk; see [`Auditor`]).
//! It is rotated as upstream's (`--audit-log-maxsize`, `--audit-log-maxbackup`,
//! `--audit-log-maxage`, lumberjack's rules, see [`Rotation`]).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures::StreamExt as _;
use k8s_openapi::jiff;
use serde_json::{json, Value};

use crate::auth::Attributes;
use crate::error::Error;

/// An audit level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "None" => Self::None,
            "Metadata" => Self::Metadata,
            "Request" => Self::Request,
            "RequestResponse" => Self::RequestResponse,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Metadata => "Metadata",
            Self::Request => "Request",
            Self::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    names: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    urls: Vec<String>,
    omit: Vec<String>,
}

const STAGES: &[&str] = &[
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn omit_stages(v: &Value, at: &str) -> Result<Vec<String>, String> {
    let list = strings(v);
    if let Some(bad) = list.iter().find(|s| !STAGES.contains(&s.as_str())) {
        return Err(format!("{at}: unknown stage {bad:?}"));
    }
    Ok(list)
}

impl Rule {
    fn parse(r: &Value, i: usize) -> Result<Self, String> {
        let level = r["level"].as_str().unwrap_or_default();
        let level = Level::parse(level).ok_or_else(|| {
            format!("rules[{i}].level: Unsupported value: {level:?}: supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\"")
        })?;
        let rule = Self {
            level,
            users: strings(&r["users"]),
            groups: strings(&r["userGroups"]),
            verbs: strings(&r["verbs"]),
            resources: r["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| GroupResources {
                    group: g["group"].as_str().unwrap_or_default().to_owned(),
                    resources: strings(&g["resources"]),
                    names: strings(&g["resourceNames"]),
                })
                .collect(),
            namespaces: strings(&r["namespaces"]),
            urls: strings(&r["nonResourceURLs"]),
            omit: omit_stages(&r["omitStages"], &format!("rules[{i}].omitStages"))?,
        };
        if !rule.urls.is_empty() && (!rule.resources.is_empty() || !rule.namespaces.is_empty()) {
            return Err(format!(
                "rules[{i}].nonResourceURLs: rules cannot apply to both regular resources and non-resource URLs"
            ));
        }
        Ok(rule)
    }

    /// Upstream's `ruleMatches`.
    fn matches(&self, user: &Value, a: &Attributes) -> bool {
        let name = user["username"].as_str().unwrap_or_default();
        if !self.users.is_empty() && !self.users.iter().any(|u| u == name) {
            return false;
        }
        if !self.groups.is_empty() {
            let groups = strings(&user["groups"]);
            if !self.groups.iter().any(|g| groups.contains(g)) {
                return false;
            }
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return a.resource_request && self.matches_resource(a);
        }
        if !self.urls.is_empty() {
            return !a.resource_request
                && self.urls.iter().any(|u| match u.strip_suffix('*') {
                    Some(prefix) => a.path.starts_with(prefix),
                    None => *u == a.path,
                });
        }
        true
    }

    fn matches_resource(&self, a: &Attributes) -> bool {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = a.combined_resource();
        self.resources.iter().any(|gr| {
            if gr.group != a.group {
                return false;
            }
            if gr.resources.is_empty() {
                return true;
            }
            gr.resources.iter().any(|r| {
                let hit = *r == combined
                    || r == "*"
                    || (!a.subresource.is_empty()
                        && (r.strip_prefix("*/") == Some(a.subresource.as_str())
                            || r.strip_suffix("/*") == Some(a.resource.as_str())));
                hit && (gr.names.is_empty() || gr.names.contains(&a.name))
            })
        })
    }
}

/// A parsed audit `Policy`.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    rules: Vec<Rule>,
    omit: Vec<String>,
}

impl Policy {
    fn parse(doc: &Value) -> Result<Self, String> {
        if doc["kind"] != "Policy" {
            return Err(format!("expected kind Policy, not {}", doc["kind"]));
        }
        match doc["apiVersion"].as_str() {
            Some("audit.k8s.io/v1") => {}
            other => return Err(format!("unsupported apiVersion {other:?}")),
        }
        let rules = doc["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| Rule::parse(r, i))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err("rules: a policy needs at least one rule".into());
        }
        Ok(Self {
            rules,
            omit: omit_stages(&doc["omitStages"], "omitStages")?,
        })
    }

    /// The level of a request and the stages it omits.
    fn decide(&self, user: &Value, a: &Attributes) -> (Level, Vec<String>) {
        match self.rules.iter().find(|r| r.matches(user, a)) {
            Some(r) => {
                let mut omit = r.omit.clone();
                omit.extend(self.omit.iter().cloned());
                (r.level, omit)
            }
            None => (Level::None, Vec::new()),
        }
    }
}

/// How the audit log is rotated (upstream's `--audit-log-max*` flags, with lumberjack's
/// rules): when a write would take the file past `max_size_mb` megabytes (0: 100), it is
/// renamed `<name>-<UTC time>.<ext>` (time as `2006-01-02T15-04-05.000`) and a new file
/// is started; then the oldest such backups beyond `max_backups` (0: keep all) and those
/// older than `max_age_days` days by the time in their name (0: keep all) are removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditLogRotation {
    /// `--audit-log-maxsize`: megabytes before a rotation (0: lumberjack's 100).
    pub max_size_mb: u64,
    /// `--audit-log-maxbackup`: old files kept (0: all).
    pub max_backups: usize,
    /// `--audit-log-maxage`: days old files are kept (0: forever).
    pub max_age_days: u64,
}

/// lumberjack's default size limit.
const DEFAULT_MAX_MB: u64 = 100;
/// The time in a backup's name (UTC).
const BACKUP_TIME: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// The open log and what it holds.
struct LogFile {
    file: std::fs::File,
    size: u64,
}

/// Lines waiting for the writer, and how far it got.
#[derive(Default)]
struct Queue {
    /// Whole lines, in the order they were audited.
    lines: Vec<u8>,
    /// How many batches were queued, and how many written (for `Auditor::flush`).
    queued: u64,
    written: u64,
    /// The auditor is gone: write what is queued and stop.
    closed: bool,
}

/// What request tasks and the writer thread share.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when lines are queued (or the auditor closes).
    queued: Condvar,
    /// Signalled when a batch is written.
    written: Condvar,
}

/// The audit backend: a policy, and the log file written by a thread of its own.
///
/// A request serializes its event and appends the line to a queue under a short lock;
/// the writer thread takes everything queued at once and writes it with one call
/// (upstream's batching, without its loss: nothing is dropped, and the queue is
/// written out when the auditor closes). A request never waits for the disk, nor for
/// another request's write.
pub(crate) struct Auditor {
    policy: Policy,
    path: PathBuf,
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.queued.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Auditor {
    /// Reads the policy file, opens (creates, mode 0600) the log for appending and
    /// starts its writer thread.
    pub(crate) fn open(
        policy: &Path,
        log: &Path,
        rotation: AuditLogRotation,
    ) -> Result<Self, Error> {
        let text = std::fs::read_to_string(policy).map_err(|source| Error::Io {
            path: policy.into(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "audit policy {}: not YAML or JSON: {e}",
                policy.display()
            ))
        })?;
        let policy = Policy::parse(&doc)
            .map_err(|why| Error::Config(format!("audit policy {}: {why}", policy.display())))?;
        let file = open_log(log).map_err(|source| Error::Io {
            path: log.into(),
            source,
        })?;
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            path: log.into(),
            rotation,
            file,
            shared: shared.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run())
            .map_err(|source| Error::Io {
                path: log.into(),
                source,
            })?;
        Ok(Self {
            policy,
            path: log.into(),
            shared,
            writer: Some(writer),
        })
    }

    /// Starts the audit of a request: its level decided, `RequestReceived` written.
    /// `None` when the policy does not audit it.
    pub(crate) fn begin(self: &Arc<Self>, req: RequestInfo) -> Option<Audit> {
        let a = self.begin_at(req, true)?;
        if a.wants("RequestReceived") {
            let mut ev = a.event("RequestReceived");
            ev["stageTimestamp"] = json!(a.received);
            self.write(&ev);
        }
        Some(a)
    }

    /// Audits a request whose authentication failed (upstream's
    /// `WithFailedAuthenticationAudit`): the level for an unknown user, and one
    /// `ResponseStarted` event with the 401.
    pub(crate) fn failed_authentication(self: &Arc<Self>, req: RequestInfo, code: u16) {
        let message = auth_methods(&req);
        let Some(a) = self.begin_at(req, false) else {
            return;
        };
        if a.wants("ResponseStarted") {
            let mut ev = a.event("ResponseStarted");
            ev["responseStatus"] = json!({"metadata": {}, "message": message, "code": code});
            self.write(&ev);
        }
    }

    /// [`Auditor::begin`], writing `RequestReceived` only if `received`.
    fn begin_at(self: &Arc<Self>, req: RequestInfo, received: bool) -> Option<Audit> {
        let (level, omit) = self.policy.decide(&req.user, &req.attrs);
        if level == Level::None {
            return None;
        }
        let mut omit = omit;
        if !received {
            omit.push("RequestReceived".into());
        }
        let a = Audit {
            auditor: Arc::clone(self),
            level,
            omit,
            id: req.id.clone(),
            received: timestamp(),
            req,
        };
        Some(a)
    }

    /// Queues one event for the writer.
    fn write(&self, ev: &Value) {
        let mut line = match serde_json::to_vec(ev) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "serializing an audit event");
                return;
            }
        };
        line.push(b'\n');
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = q.lines.is_empty();
        q.lines.extend_from_slice(&line);
        if was_empty {
            q.queued += 1;
            drop(q);
            self.shared.queued.notify_one();
        }
    }

    /// Waits until every event queued so far is written.
    #[cfg(test)]
    pub(crate) fn flush(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let target = q.queued;
        while q.written < target && self.writer.as_ref().is_some_and(|w| !w.is_finished()) {
            q = self
                .shared
                .written
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The writer thread's side: the log file and its rotation.
struct Writer {
    path: PathBuf,
    rotation: AuditLogRotation,
    file: LogFile,
    shared: Arc<Shared>,
}

impl Writer {
    /// Writes what is queued, batch by batch, until the auditor closes.
    fn run(mut self) {
        loop {
            let (lines, batch, closed) = {
                let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
                while q.lines.is_empty() && !q.closed {
                    q = self
                        .shared
                        .queued
                        .wait(q)
                        .unwrap_or_else(|e| e.into_inner());
                }
                (std::mem::take(&mut q.lines), q.queued, q.closed)
            };
            self.write(&lines);
            self.shared
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .written = batch;
            self.shared.written.notify_all();
            if closed {
                let rest = std::mem::take(
                    &mut self
                        .shared
                        .queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .lines,
                );
                self.write(&rest);
                return;
            }
        }
    }

    /// Appends whole lines, rotating the log before a line that would make it pass its
    /// size limit (lines between rotations go in one write).
    fn write(&mut self, lines: &[u8]) {
        let max = match self.rotation.max_size_mb {
            0 => DEFAULT_MAX_MB,
            n => n,
        } << 20;
        let (mut start, mut at, mut size) = (0, 0, self.file.size);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            let len = line.len() as u64;
            if size > 0 && size + len > max {
                self.append(&lines[start..at]);
                if let Err(e) = self.rotate() {
                    tracing::warn!(path = %self.path.display(), error = %e, "rotating the audit log");
                }
                start = at;
                size = self.file.size;
            }
            size += len;
            at += line.len();
        }
        self.append(&lines[start..]);
    }

    fn append(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        match self.file.file.write_all(chunk) {
            Ok(()) => self.file.size += chunk.len() as u64,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "writing the audit log")
            }
        }
    }

    /// Renames the log to its backup name, opens a new one and removes the backups the
    /// rotation settings no longer keep.
    fn rotate(&mut self) -> std::io::Result<()> {
        let now = jiff::Timestamp::now();
        let backup = backup_name(&self.path, now);
        std::fs::rename(&self.path, &backup)?;
        self.file = open_log(&self.path)?;
        for old in stale_backups(&self.path, self.rotation, now)? {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "removing an old audit log");
            }
        }
        Ok(())
    }
}

fn open_log(path: &Path) -> std::io::Result<LogFile> {
    let file = kcore_statedir::open(
        path,
        std::fs::OpenOptions::new().append(true).create(true),
        kcore_statedir::PRIVATE_FILE,
    )?;
    let size = file.metadata()?.len();
    Ok(LogFile { file, size })
}

/// The stem and extension of a log's file name (`audit.log` -> `audit`, `.log`).
fn name_parts(log: &Path) -> (String, String) {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = log
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let stem = name[..name.len() - ext.len()].to_owned();
    (stem, ext)
}

/// lumberjack's backup name: `<dir>/<stem>-<UTC time><ext>`.
fn backup_name(log: &Path, at: jiff::Timestamp) -> PathBuf {
    let (stem, ext) = name_parts(log);
    let time = at.strftime(BACKUP_TIME);
    log.with_file_name(format!("{stem}-{time}{ext}"))
}

/// The backups of `log` to remove: beyond the newest `max_backups`, or older than
/// `max_age_days` (by the time in their names).
fn stale_backups(
    log: &Path,
    rotation: AuditLogRotation,
    now: jiff::Timestamp,
) -> std::io::Result<Vec<PathBuf>> {
    if rotation.max_backups == 0 && rotation.max_age_days == 0 {
        return Ok(Vec::new());
    }
    let (stem, ext) = name_parts(log);
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut backups: Vec<(jiff::Timestamp, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(time) = name
            .strip_prefix(&stem)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        let Ok(t) = jiff::civil::DateTime::strptime(BACKUP_TIME, time)
            .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        else {
            continue;
        };
        backups.push((t.timestamp(), entry.path()));
    }
    backups.sort_by_key(|b| std::cmp::Reverse(b.0));
    let mut stale = Vec::new();
    if rotation.max_backups > 0 && backups.len() > rotation.max_backups {
        stale.extend(backups.drain(rotation.max_backups..).map(|(_, p)| p));
    }
    if rotation.max_age_days > 0 {
        let cutoff = now - jiff::SignedDuration::from_hours(24 * rotation.max_age_days as i64);
        stale.extend(
            backups
                .into_iter()
                .filter(|(t, _)| *t < cutoff)
                .map(|(_, p)| p),
        );
    }
    Ok(stale)
}

/// Upstream's `getAuthMethods`: what a failed request tried.
fn auth_methods(req: &RequestInfo) -> String {
    if req.auth_methods.is_empty() {
        "Authentication failed, no credentials provided".into()
    } else {
        format!(
            "Authentication failed, attempted: {}",
            req.auth_methods.join(", ")
        )
    }
}

/// What the audit log records of a request.
pub(crate) struct RequestInfo {
    /// The `Audit-Id`.
    pub id: String,
    pub uri: String,
    pub attrs: Attributes,
    /// The authenticated user (a `UserInfo` object).
    pub user: Value,
    /// The user the request was made as, when impersonating.
    pub impersonated: Option<Value>,
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
    /// The credentials the request brought (`basic`, `bearer`, `access_token`, `x509`).
    pub auth_methods: Vec<&'static str>,
}

impl RequestInfo {
    /// The audit view of a request from `user` (a `UserInfo` object).
    pub(crate) fn new(id: String, parts: &Parts, user: Value) -> Self {
        let uri = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        let attrs = crate::auth::request_attributes(parts);
        let header = |k: &str| {
            parts
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // X-Forwarded-For first, then X-Real-Ip, then the peer, as upstream's SourceIPs
        let mut source_ips: Vec<String> = header("x-forwarded-for")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ip) = header("x-real-ip") {
            source_ips.push(ip);
        }
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<kcore_tls::PeerCertificates>>()
            .map(|c| &c.0);
        if let Some(addr) = peer.and_then(|p| p.1) {
            let ip = addr.ip().to_string();
            if !source_ips.contains(&ip) {
                source_ips.push(ip);
            }
        }
        // upstream's NewEventFromRequest: the impersonation headers as asked
        let impersonated = header("impersonate-user").map(|name| {
            let mut u = json!({"username": name});
            let groups: Vec<&str> = parts
                .headers
                .get_all("impersonate-group")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if !groups.is_empty() {
                u["groups"] = json!(groups);
            }
            let mut extra = serde_json::Map::new();
            for (k, v) in &parts.headers {
                if let (Some(key), Ok(v)) =
                    (k.as_str().strip_prefix("impersonate-extra-"), v.to_str())
                {
                    let list = extra.entry(key).or_insert_with(|| json!([]));
                    if let Some(l) = list.as_array_mut() {
                        l.push(json!(v));
                    }
                }
            }
            if !extra.is_empty() {
                u["extra"] = Value::Object(extra);
            }
            u
        });
        let mut auth_methods = Vec::new();
        if let Some(auth) = header("authorization") {
            let auth = auth.trim();
            if auth.len() > 6 && auth[..6].eq_ignore_ascii_case("basic ") {
                auth_methods.push("basic");
            }
            let mut words = auth.split(' ');
            if words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("bearer"))
                && words.next().is_some()
            {
                auth_methods.push("bearer");
            }
        }
        if parts.uri.query().unwrap_or_default().split('&').any(|kv| {
            kv.strip_prefix("access_token=")
                .is_some_and(|v| !v.is_empty())
        }) {
            auth_methods.push("access_token");
        }
        if peer.is_some_and(|p| !p.0.is_empty()) {
            auth_methods.push("x509");
        }
        Self {
            id,
            uri,
            attrs,
            user,
            impersonated,
            source_ips,
            user_agent: header("user-agent"),
            auth_methods,
        }
    }
}

/// Puts the `Audit-Id` header on a response.
pub(crate) fn with_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("audit-id", v);
    }
    resp
}

/// The largest response body copied into `responseObject`.
const MAX_LOGGED_RESPONSE: usize = 64 << 20;

/// A JSON body as a value, if it is one.
fn json_body(content_type: Option<&str>, body: &[u8]) -> Option<Value> {
    let ct = content_type.unwrap_or("application/json");
    if ct.starts_with("application/json") || ct.ends_with("+json") {
        serde_json::from_slice(body).ok()
    } else if ct.starts_with("application/yaml") || ct.starts_with("application/apply-patch+yaml") {
        serde_yaml_ng::from_slice(body).ok()
    } else if ct.starts_with(crate::protobuf::MEDIA_TYPE) {
        crate::protobuf::decode_body(body).ok()
    } else {
        None
    }
}

/// One audited request in flight.
pub(crate) struct Audit {
    auditor: Arc<Auditor>,
    level: Level,
    omit: Vec<String>,
    id: String,
    received: String,
    req: RequestInfo,
}

fn timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl Audit {
    fn wants(&self, stage: &str) -> bool {
        !self.omit.iter().any(|s| s == stage)
    }

    /// Whether the request body is recorded (level `Request` and above).
    pub(crate) fn wants_request(&self) -> bool {
        self.level >= Level::Request
    }

    /// Whether the response body is recorded (level `RequestResponse`).
    pub(crate) fn wants_response(&self) -> bool {
        self.level >= Level::RequestResponse
    }

    fn event(&self, stage: &str) -> Value {
        let a = &self.req.attrs;
        let mut ev = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": self.level.as_str(),
            "auditID": self.id,
            "stage": stage,
            "requestURI": self.req.uri,
            "verb": a.verb,
            "user": self.req.user,
            "sourceIPs": self.req.source_ips,
            "requestReceivedTimestamp": self.received,
            "stageTimestamp": timestamp(),
        });
        if let Some(u) = &self.req.impersonated {
            ev["impersonatedUser"] = u.clone();
        }
        if let Some(ua) = &self.req.user_agent {
            ev["userAgent"] = json!(ua);
        }
        if a.resource_request {
            let mut r = json!({"resource": a.resource});
            let set = |r: &mut Value, k: &str, v: &str| {
                if !v.is_empty() {
                    r[k] = json!(v);
                }
            };
            set(&mut r, "namespace", &a.namespace);
            set(&mut r, "name", &a.name);
            set(&mut r, "apiGroup", &a.group);
            set(&mut r, "subresource", &a.subresource);
            if let Some(v) = api_version(&self.req.uri) {
                r["apiVersion"] = json!(v);
            }
            ev["objectRef"] = r;
        }
        ev
    }

    /// Whether the request is long-running (upstream's `BasicLongRunningRequestCheck`
    /// of kube-apiserver: verbs `watch` and `proxy`, subresources `attach`, `exec`,
    /// `proxy`, `log`, `portforward`).
    fn long_running(&self) -> bool {
        let a = &self.req.attrs;
        matches!(a.verb.as_str(), "watch" | "proxy")
            || (a.resource_request
                && matches!(
                    a.subresource.as_str(),
                    "attach" | "exec" | "proxy" | "log" | "portforward"
                ))
    }

    /// Completes the audit of a served request: reads back what the level records
    /// (the Status of a failure, the response body of a non-streaming JSON answer) and
    /// writes `ResponseComplete`; a long-running request gets `ResponseStarted` now and
    /// `ResponseComplete` when its response body ends (or the client goes away).
    /// Returns the response to send.
    pub(crate) async fn finish(self, resp: Response, served: crate::http::Served) -> Response {
        let code = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let json = content_type.as_deref().is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with(crate::protobuf::MEDIA_TYPE)
        });
        let long_running = self.long_running();
        // a long-running request's answer is a stream unless it failed
        let streaming = long_running && code < 300;
        let read_body = json && !streaming && (code >= 300 || self.wants_response());
        let (resp, body) = if read_body {
            let (parts, body) = resp.into_parts();
            match axum::body::to_bytes(body, MAX_LOGGED_RESPONSE).await {
                Ok(b) => {
                    let v = json_body(content_type.as_deref(), &b);
                    (Response::from_parts(parts, Body::from(b)), v)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a response for the audit log");
                    (Response::from_parts(parts, Body::empty()), None)
                }
            }
        } else {
            (resp, None)
        };
        let request = served
            .body
            .as_deref()
            .filter(|_| self.wants_request())
            .and_then(|b| json_body(served.content_type.as_deref(), b));
        let status = body.as_ref().filter(|v| v["kind"] == "Status").cloned();
        let response = body.filter(|_| self.wants_response());
        let done = Completion {
            audit: Some(self),
            code,
            status,
            request,
            response,
            annotations: served.annotations,
        };
        if !long_running {
            drop(done);
            return resp;
        }
        done.started();
        if code == 101 {
            // an upgraded connection carries no body to wait for
            drop(done);
            return resp;
        }
        // ResponseComplete when the body is dropped: at its end or when the client leaves
        let (parts, body) = resp.into_parts();
        let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _completes_when_dropped = &done;
            chunk
        }));
        Response::from_parts(parts, body)
    }

    /// The `responseStatus` of an answer with `code` (and the Status of a failure, of
    /// which upstream keeps the bounded fields).
    fn response_status(code: u16, status: Option<&Value>) -> Value {
        let mut rs = json!({"metadata": {}, "code": code});
        if let Some(s) = status.filter(|_| code >= 300) {
            for k in ["status", "reason"] {
                if !s[k].is_null() {
                    rs[k] = s[k].clone();
                }
            }
        }
        rs
    }
}

/// The end of an audited request, written as `ResponseComplete` when dropped.
struct Completion {
    audit: Option<Audit>,
    code: u16,
    status: Option<Value>,
    request: Option<Value>,
    response: Option<Value>,
    annotations: BTreeMap<String, String>,
}

impl Completion {
    /// Writes `ResponseStarted` (long-running requests).
    fn started(&self) {
        let Some(a) = &self.audit else { return };
        if !a.wants("ResponseStarted") {
            return;
        }
        let mut ev = a.event("ResponseStarted");
        ev["responseStatus"] = Audit::response_status(self.code, self.status.as_ref());
        if !self.annotations.is_empty() {
            ev["annotations"] = json!(self.annotations);
        }
        a.auditor.write(&ev);
    }
}

impl Drop for Completion {
    /// Writes `ResponseComplete`: the status code, the Status of a failure, the request
    /// and response bodies as the level asks, and the audit annotations.
    fn drop(&mut self) {
        let Some(a) = self.audit.take() else { return };
        if !a.wants("ResponseComplete") {
            return;
        }
        let mut ev = a.event("ResponseComplete");
        ev["responseStatus"] = Audit::response_status(self.code, self.status.as_ref());
        if a.wants_request() {
            if let Some(r) = self.request.take() {
                ev["requestObject"] = r;
            }
        }
        if a.wants_response() {
            if let Some(r) = self.response.take() {
                ev["responseObject"] = r;
            }
        }
        if !self.annotations.is_empty() {
            ev["annotations"] = json!(self.annotations);
        }
        a.auditor.write(&ev);
    }
}

/// The `version` of a resource path (`/api/v1/...` -> `v1`, `/apis/g/v1/...` -> `v1`).
fn api_version(uri: &str) -> Option<String> {
    let path = uri.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v, ..] => Some((*v).to_owned()),
        ["apis", _, v, ..] => Some((*v).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: Value) -> Policy {
        Policy::parse(&json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules}))
            .expect("valid policy")
    }

    fn attrs(verb: &str, group: &str, res: &str, sub: &str, ns: &str) -> Attributes {
        let mut a = Attributes::resource(verb, group, res, ns);
        a.subresource = sub.into();
        a
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = policy(json!([
            {"level": "None", "users": ["system:kube-proxy"]},
            {"level": "RequestResponse", "resources": [{"group": "", "resources": ["pods/log", "*/status"]}]},
            {"level": "Request", "verbs": ["create"], "namespaces": ["prod"]},
            {"level": "None", "nonResourceURLs": ["/healthz*", "/version"]},
            {"level": "Metadata", "omitStages": ["RequestReceived"]}
        ]));
        let admin = json!({"username": "admin", "groups": ["system:masters"]});
        let proxy = json!({"username": "system:kube-proxy"});
        let level = |u: &Value, a: &Attributes| p.decide(u, a).0;
        assert_eq!(
            level(&proxy, &attrs("get", "", "pods", "", "x")),
            Level::None
        );
        assert_eq!(
            level(&admin, &attrs("get", "", "pods", "log", "x")),
            Level::RequestResponse
        );
        assert_eq!(
            level(
                &admin,
                &attrs("update", "apps", "deployments", "status", "x")
            ),
            Level::Metadata
        );
        assert_eq!(
            level(&admin, &attrs("update", "", "nodes", "status", "")),
            Level::RequestResponse
        );
        assert_eq!(
            level(&admin, &attrs("create", "", "pods", "", "prod")),
            Level::Request
        );
        assert_eq!(
            level(&admin, &attrs("create", "", "pods", "", "dev")),
            Level::Metadata
        );
        assert_eq!(
            level(&admin, &Attributes::non_resource("get", "/healthz/etcd")),
            Level::None
        );
        assert_eq!(
            level(&admin, &Attributes::non_resource("get", "/metrics")),
            Level::Metadata
        );
        assert_eq!(
            p.decide(&admin, &Attributes::non_resource("get", "/metrics"))
                .1,
            vec!["RequestReceived".to_owned()]
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = |rules: Value| {
            Policy::parse(
                &json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules}),
            )
            .expect_err("refused")
        };
        assert!(bad(json!([{"level": "Everything"}])).contains("Unsupported value"));
        assert!(bad(json!([{"level": "None", "omitStages": ["Later"]}])).contains("unknown stage"));
        assert!(
            bad(json!([{"level": "None", "nonResourceURLs": ["/x"], "namespaces": ["a"]}]))
                .contains("both")
        );
    }

    fn auditor(dir: &Path, rotation: AuditLogRotation) -> Arc<Auditor> {
        let policy = dir.join("policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
        )
        .expect("policy");
        Arc::new(Auditor::open(&policy, &dir.join("audit.log"), rotation).expect("auditor"))
    }

    fn backups(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("audit-") && n.ends_with(".log"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_max_backups() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = auditor(
            dir.path(),
            AuditLogRotation {
                max_size_mb: 1,
                max_backups: 2,
                max_age_days: 0,
            },
        );
        // 300 KiB events: a 1 MiB file holds three
        let ev = json!({"kind": "Event", "pad": "x".repeat(300 << 10)});
        for _ in 0..4 {
            a.write(&ev);
            a.flush();
        }
        let first = backups(dir.path());
        assert_eq!(first.len(), 1, "{first:?}");
        // lumberjack's name: <stem>-<2006-01-02T15-04-05.000>.log, UTC
        let time = &first[0]["audit-".len()..first[0].len() - ".log".len()];
        assert!(
            jiff::civil::DateTime::strptime(BACKUP_TIME, time).is_ok(),
            "{time}"
        );
        for _ in 0..12 {
            a.write(&ev);
            a.flush();
            // distinct backup names (millisecond resolution)
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let kept = backups(dir.path());
        assert_eq!(kept.len(), 2, "{kept:?}");
        for name in kept.iter().map(String::as_str).chain(["audit.log"]) {
            let meta = std::fs::metadata(dir.path().join(name)).expect("file");
            assert!(meta.len() <= 1 << 20, "{name}: {}", meta.len());
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let lines = std::fs::read_to_string(dir.path().join("audit.log")).expect("log");
        assert!(lines
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    }

    #[test]
    fn old_backups_go_by_the_time_in_their_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("audit.log");
        let now = jiff::Timestamp::now();
        let old = backup_name(&log, now - jiff::SignedDuration::from_hours(24 * 3));
        let recent = backup_name(&log, now - jiff::SignedDuration::from_hours(12));
        for p in [&old, &recent] {
            std::fs::write(p, "{}\n").expect("backup");
        }
        std::fs::write(dir.path().join("audit-notatime.log"), "").expect("other file");
        let rotation = |max_backups, max_age_days| AuditLogRotation {
            max_size_mb: 0,
            max_backups,
            max_age_days,
        };
        assert_eq!(
            stale_backups(&log, rotation(0, 2), now).expect("read"),
            vec![old.clone()]
        );
        assert_eq!(
            stale_backups(&log, rotation(1, 0), now).expect("read"),
            vec![old.clone()]
        );
        assert!(stale_backups(&log, rotation(0, 0), now)
            .expect("read")
            .is_empty());
        assert!(stale_backups(&log, rotation(5, 7), now)
            .expect("read")
            .is_empty());
    }

    #[test]
    fn long_running_requests_are_upstreams() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = auditor(dir.path(), AuditLogRotation::default());
        let audit = |verb: &str, sub: &str| {
            let mut attrs = attrs(verb, "", "pods", sub, "d");
            attrs.name = "p".into();
            a.begin(RequestInfo {
                id: "x".into(),
                uri: "/api/v1/namespaces/d/pods/p".into(),
                attrs,
                user: json!({"username": "u"}),
                impersonated: None,
                source_ips: Vec::new(),
                user_agent: None,
                auth_methods: Vec::new(),
            })
            .expect("audited")
        };
        assert!(audit("watch", "").long_running());
        for sub in ["log", "exec", "attach", "portforward", "proxy"] {
            assert!(audit("get", sub).long_running(), "{sub}");
        }
        assert!(!audit("get", "").long_running());
        assert!(!audit("update", "status").long_running());
    }
}
