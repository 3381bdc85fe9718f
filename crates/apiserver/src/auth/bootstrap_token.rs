//! Bootstrap tokens, as upstream's `bootstrap` token authenticator and `tokencleaner`
//! controller: a bearer token `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`) is valid while
//! the Secret `bootstrap-token-<id>` in `kube-system`, of type
//! `bootstrap.kubernetes.io/token`, holds the same `token-id` and `token-secret`, allows
//! `usage-bootstrap-authentication`, is not being deleted and has not passed its
//! `expiration` (RFC 3339). Its user is `system:bootstrap:<id>` in the group
//! `system:bootstrappers` and the `auth-extra-groups` the Secret names (each
//! `system:bootstrappers:...`).
//!
//! Expired bootstrap-token Secrets are deleted by [`run_cleaner`], which wakes at the
//! earliest expiration it knows of and on every change of a Secret in `kube-system`.
//!
//! A node joining with a bootstrap token may create and read CertificateSigningRequests
//! (`system:node-bootstrapper`), and its node client request is approved
//! (`certificatesigningrequests/nodeclient`): the ClusterRoleBindings kubeadm creates,
//! bound to `system:bootstrappers` ([`super::bootstrap`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::UserInfo;
use crate::api::{Api, DeleteOptions, ListOptions};
use crate::resources::{self, ResourceInfo};

/// The Secret type of bootstrap tokens.
pub(crate) const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The prefix of their Secrets' names.
const SECRET_PREFIX: &str = "bootstrap-token-";
/// Where their Secrets live.
const NAMESPACE: &str = "kube-system";
/// The group of every bootstrap token's user.
pub(crate) const GROUP: &str = "system:bootstrappers";
/// The prefix of a bootstrap token's user name.
const USER_PREFIX: &str = "system:bootstrap:";

fn secrets() -> &'static ResourceInfo {
    resources::lookup("", "v1", "secrets").expect("served")
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The id and secret of a bearer token of the bootstrap form, if it is one.
pub(crate) fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (is_token_part(id, 6) && is_token_part(secret, 16)).then_some((id, secret))
}

/// A decoded `data` entry of a Secret.
fn data(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// The expiration of a bootstrap-token Secret: `Ok(None)` for none, `Err` for one that
/// does not parse (upstream treats such a token as expired).
fn expiration(secret: &Value) -> Result<Option<Timestamp>, ()> {
    match data(secret, "expiration") {
        None => Ok(None),
        Some(s) => s.parse::<Timestamp>().map(Some).map_err(|_| ()),
    }
}

fn expired(secret: &Value, now: Timestamp) -> bool {
    match expiration(secret) {
        Ok(Some(at)) => at <= now,
        Ok(None) => false,
        Err(()) => true,
    }
}

/// Upstream's check of an extra group: `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
fn valid_extra_group(g: &str) -> bool {
    let Some(rest) = g.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `secret` makes `id.token_secret` valid at `now`: the user if so, upstream's
/// reason (for the log; clients only see 401) if not.
pub(crate) fn user_of(
    secret: &Value,
    id: &str,
    token_secret: &str,
    now: Timestamp,
) -> Result<UserInfo, String> {
    let name = format!("{SECRET_PREFIX}{id}");
    if secret["metadata"]["deletionTimestamp"].is_string() {
        return Err(format!("secret {NAMESPACE}/{name} is being deleted"));
    }
    if secret["type"] != SECRET_TYPE {
        return Err(format!(
            "secret {NAMESPACE}/{name} has invalid type, expected {SECRET_TYPE}"
        ));
    }
    let stored = data(secret, "token-secret").unwrap_or_default();
    if !ring_eq(stored.as_bytes(), token_secret.as_bytes()) {
        return Err(format!("secret {NAMESPACE}/{name} has invalid token"));
    }
    if data(secret, "token-id").as_deref() != Some(id) {
        return Err(format!(
            "Token ID ({id}) doesn't match the secret {NAMESPACE}/{name}"
        ));
    }
    if expired(secret, now) {
        return Err(format!("secret {NAMESPACE}/{name} has expired"));
    }
    if data(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(format!(
            "secret {NAMESPACE}/{name} not marked usage-bootstrap-authentication=true"
        ));
    }
    let mut groups = vec![GROUP.to_owned()];
    if let Some(extra) = data(secret, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_extra_group(g) {
                return Err(format!(
                    "secret {NAMESPACE}/{name} has invalid auth-extra-groups: {g:?}"
                ));
            }
            if !groups.iter().any(|x| x == g) {
                groups.push(g.to_owned());
            }
        }
    }
    Ok(UserInfo {
        username: format!("{USER_PREFIX}{id}"),
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    }
    .authenticated())
}

/// Constant-time comparison of two byte strings.
fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates a bootstrap token against its stored Secret; `None` when `token` is
/// not of the bootstrap form (another authenticator may know it).
pub(crate) async fn authenticate(api: &Api, token: &str) -> Option<Result<UserInfo, String>> {
    let (id, token_secret) = parse(token)?;
    let name = format!("{SECRET_PREFIX}{id}");
    Some(match api.get_in(secrets(), Some(NAMESPACE), &name).await {
        Ok(secret) => user_of(&secret, id, token_secret, Timestamp::now()),
        Err(e) if e.code == 404 => Err(format!("secret {NAMESPACE}/{name} not found")),
        Err(e) => Err(e.message),
    })
}

/// Deletes the expired bootstrap-token Secrets among `items`; the earliest expiration
/// still ahead.
async fn clean(api: &Api, items: &[Value], now: Timestamp) -> Option<Timestamp> {
    let mut next: Option<Timestamp> = None;
    for s in items.iter().filter(|s| s["type"] == SECRET_TYPE) {
        let name = s["metadata"]["name"].as_str().unwrap_or_default();
        if s["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        if expired(s, now) {
            let opts = DeleteOptions {
                precondition_uid: s["metadata"]["uid"].as_str().map(str::to_owned),
                ..DeleteOptions::default()
            };
            match api.delete_in(secrets(), Some(NAMESPACE), name, &opts).await {
                Ok(_) => tracing::info!(secret = %name, "deleted an expired bootstrap token"),
                Err(e) if matches!(e.code, 404 | 409) => {}
                Err(e) => {
                    tracing::warn!(secret = %name, error = %e.message, "deleting an expired bootstrap token")
                }
            }
        } else if let Ok(Some(at)) = expiration(s) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    next
}

/// Upstream's `tokencleaner` controller: deletes bootstrap-token Secrets once they
/// expire. Runs until the server stops.
pub(crate) async fn run_cleaner(api: Api) {
    let info = secrets();
    loop {
        let list = match api
            .list_in(info, Some(NAMESPACE), &ListOptions::default())
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e.message, "listing bootstrap tokens");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let next = clean(&api, &items, Timestamp::now()).await;
        let opts = ListOptions {
            resource_version: list["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_owned),
            send_initial_events: Some(false),
            ..ListOptions::default()
        };
        // wake at the next expiration (an hour at most), or when a Secret changes
        let wait = next
            .and_then(|at| {
                let d = at.duration_since(Timestamp::now());
                std::time::Duration::try_from(d).ok()
            })
            .unwrap_or(std::time::Duration::from_secs(3600))
            .min(std::time::Duration::from_secs(3600));
        let deadline = tokio::time::Instant::now() + wait;
        match api.watch_in(info, Some(NAMESPACE), &opts).await {
            Ok(mut events) => loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    ev = events.next() => match ev {
                        Some(ev) if ev.object["type"] == SECRET_TYPE => break,
                        Some(_) => {}
                        None => break,
                    },
                }
            },
            Err(e) => {
                tracing::debug!(error = %e.message, "watching bootstrap tokens");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(fields: &[(&str, &str)]) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let data: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(b64(v))))
            .collect();
        json!({"metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": SECRET_TYPE, "data": data})
    }

    #[test]
    fn tokens_are_checked_as_upstreams_authenticator() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef.x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let good = [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            ("auth-extra-groups", "system:bootstrappers:kcore:nodes"),
            ("expiration", "2026-01-02T00:00:00Z"),
        ];
        let u = user_of(&secret(&good), "abcdef", "0123456789abcdef", now).unwrap();
        assert_eq!(u.username, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:kcore:nodes",
                "system:authenticated"
            ]
        );
        assert_eq!(
            user_of(&secret(&good), "abcdef", "0123456789abcdee", now).unwrap_err(),
            "secret kube-system/bootstrap-token-abcdef has invalid token"
        );
        let later: Timestamp = "2026-01-02T00:00:01Z".parse().unwrap();
        assert_eq!(
            user_of(&secret(&good), "abcdef", "0123456789abcdef", later).unwrap_err(),
            "secret kube-system/bootstrap-token-abcdef has expired"
        );
        let mut s = secret(&good);
        s["type"] = json!("Opaque");
        assert!(user_of(&s, "abcdef", "0123456789abcdef", now).is_err());
        let no_usage = secret(&good[..2]);
        assert_eq!(
            user_of(&no_usage, "abcdef", "0123456789abcdef", now).unwrap_err(),
            "secret kube-system/bootstrap-token-abcdef not marked usage-bootstrap-authentication=true"
        );
        let mut bad_group = good;
        bad_group[3] = ("auth-extra-groups", "system:masters");
        assert!(user_of(&secret(&bad_group), "abcdef", "0123456789abcdef", now).is_err());
        let mut other_id = good;
        other_id[0] = ("token-id", "zzzzzz");
        assert!(user_of(&secret(&other_id), "abcdef", "0123456789abcdef", now).is_err());
        let mut garbled = good;
        garbled[4] = ("expiration", "tomorrow");
        assert!(
            user_of(&secret(&garbled), "abcdef", "0123456789abcdef", now).is_err(),
            "an unreadable expiration is expired, as upstream"
        );
        let mut deleting = secret(&good);
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(user_of(&deleting, "abcdef", "0123456789abcdef", now).is_err());
    }
}
