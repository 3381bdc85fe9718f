//! `pods/log`: the rules upstream applies before and after reaching the kubelet
//! (`pkg/registry/core/pod/strategy.go` `LogLocation`, `rest/log.go`, and the kubelet's
//! `validateContainerLogStatus`):
//!
//! - the query is a `PodLogOptions`, validated as upstream (`tailLines` ≥ 0,
//!   `limitBytes` and `sinceSeconds` > 0, not both `sinceSeconds` and `sinceTime`): a 422;
//! - the container: the only one when the pod has one, else it must be named, and be one
//!   of the pod's containers, init containers or ephemeral containers (400 otherwise);
//! - a pod not yet on a node has no log stream (204 No Content);
//! - the container's status decides whether there is a log to read: one waiting to
//!   start answers `container "c" in pod "p" is waiting to start: <reason>`, `previous`
//!   without a terminated earlier instance `previous terminated container "c" in pod
//!   "p" not found` (400, as the kubelet answers);
//! - an error answer of the node becomes a `Status` as upstream's response checker makes
//!   it (400 BadRequest and 500 InternalError carry the node's text).

use serde_json::{json, Value};

use crate::error::{ApiError, Cause};

/// The options of one `pods/log` request, parsed and validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    /// RFC 3339, normalised to UTC.
    pub since_time: Option<String>,
}

impl LogOptions {
    /// Parses the query parameters (`get` looks one up) and validates them as upstream's
    /// `ValidatePodLogOptions`; `pod` names the pod in the 422.
    pub(crate) fn parse<'a>(
        pod: &str,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<LogOptions, ApiError> {
        let flag = |k: &str| -> Result<bool, ApiError> {
            match get(k) {
                None | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") | Some("") => Ok(true),
                Some(v) => Err(ApiError::bad_request(format!(
                    "{k}: invalid boolean value {v:?}"
                ))),
            }
        };
        let int = |k: &str| -> Result<Option<i64>, ApiError> {
            get(k)
                .map(|v| {
                    v.parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!("{k}: invalid integer value {v:?}"))
                    })
                })
                .transpose()
        };
        let since_time = get("sinceTime")
            .map(|v| {
                v.parse::<k8s_openapi::jiff::Timestamp>()
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .map_err(|_| {
                        ApiError::bad_request(format!("sinceTime: invalid RFC 3339 time {v:?}"))
                    })
            })
            .transpose()?;
        let o = LogOptions {
            container: get("container")
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            follow: flag("follow")?,
            previous: flag("previous")?,
            timestamps: flag("timestamps")?,
            tail_lines: int("tailLines")?,
            limit_bytes: int("limitBytes")?,
            since_seconds: int("sinceSeconds")?,
            since_time,
        };
        let mut causes = Vec::new();
        if let Some(t) = o.tail_lines.filter(|t| *t < 0) {
            causes.push(Cause::invalid(
                "tailLines",
                &json!(t),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(l) = o.limit_bytes.filter(|l| *l < 1) {
            causes.push(Cause::invalid(
                "limitBytes",
                &json!(l),
                "must be greater than 0",
            ));
        }
        match (o.since_seconds, &o.since_time) {
            (Some(_), Some(_)) => causes.push(Cause::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(s), None) if s < 1 => causes.push(Cause::invalid(
                "sinceSeconds",
                &json!(s),
                "must be greater than 0",
            )),
            _ => {}
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("", "PodLogOptions", pod, causes));
        }
        Ok(o)
    }

    /// The node's query string (`/containerLogs/...?<this>`), as upstream's `LogLocation`
    /// builds it.
    pub(crate) fn node_query(&self) -> String {
        let mut q = Vec::new();
        for (k, on) in [
            ("follow", self.follow),
            ("previous", self.previous),
            ("timestamps", self.timestamps),
        ] {
            if on {
                q.push(format!("{k}=true"));
            }
        }
        for (k, v) in [
            ("sinceSeconds", self.since_seconds),
            ("tailLines", self.tail_lines),
            ("limitBytes", self.limit_bytes),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        }
        if let Some(t) = &self.since_time {
            q.push(format!("sinceTime={t}"));
        }
        q.join("&")
    }
}

fn names<'a>(pod: &'a Value, list: &str) -> Vec<&'a str> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The container whose log is read: `requested`, which must be one of the pod's
/// containers, init or ephemeral containers, else the pod's only container.
pub(crate) fn container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let (apps, inits, ephemeral) = (
        names(pod, "containers"),
        names(pod, "initContainers"),
        names(pod, "ephemeralContainers"),
    );
    match requested {
        Some(c) if apps.contains(&c) || inits.contains(&c) || ephemeral.contains(&c) => {
            Ok(c.to_owned())
        }
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if apps.len() == 1 => Ok(apps[0].to_owned()),
        None if apps.is_empty() => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                apps.join(" ")
            );
            if !inits.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                msg.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// Whether the pod's status leaves a log to read for `container` (the kubelet's
/// `validateContainerLogStatus`): `Err` with the kubelet's message (a 400) when not.
pub(crate) fn check_status(pod: &Value, container: &str, previous: bool) -> Result<(), ApiError> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|k| pod["status"][*k].as_array().into_iter().flatten())
    .find(|s| s["name"] == container);
    let fail = |what: String| Err(ApiError::bad_request(what));
    let Some(s) = status else {
        return fail(format!(
            "container {container:?} in pod {pod_name:?} is not available"
        ));
    };
    let has_id = |t: &Value| t["containerID"].as_str().is_some_and(|i| !i.is_empty());
    let last = &s["lastState"]["terminated"];
    let state = &s["state"];
    let terminated_msg = || format!("container {container:?} in pod {pod_name:?} is terminated");
    if previous {
        if !last.is_object() || !has_id(last) {
            return fail(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            ));
        }
        return Ok(());
    }
    if state["running"].is_object() {
        return Ok(());
    }
    if state["terminated"].is_object() {
        if has_id(&state["terminated"]) || (last.is_object() && has_id(last)) {
            return Ok(());
        }
        return fail(terminated_msg());
    }
    if last.is_object() {
        return if has_id(last) {
            Ok(())
        } else {
            fail(terminated_msg())
        };
    }
    if let Some(w) = state["waiting"].as_object() {
        let why = match w.get("reason").and_then(Value::as_str).unwrap_or_default() {
            "ErrImagePull" => "image can't be pulled".to_owned(),
            "ImagePullBackOff" => "trying and failing to pull image".to_owned(),
            r => r.to_owned(),
        };
        return fail(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {why}"
        ));
    }
    fail(format!(
        "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
    ))
}

/// The `Status` for an error answer of the node (upstream's
/// `GenericHttpResponseChecker` for `pods/log`): its text becomes the message of a
/// BadRequest or InternalError, and the cause of other codes.
pub(crate) fn node_error(code: u16, body: &str, pod: &str) -> ApiError {
    let body = body.trim_end();
    match code {
        400 => ApiError::bad_request(body),
        500 => ApiError::internal(body),
        _ => {
            let (reason, message) = match code {
                401 => (
                    "Unauthorized",
                    "the server has asked for the client to provide credentials",
                ),
                403 => (
                    "Forbidden",
                    "the server does not allow access to the requested resource",
                ),
                404 => (
                    "NotFound",
                    "the server could not find the requested resource",
                ),
                409 => ("Conflict", "the server reported a conflict"),
                503 => (
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                ),
                _ => ("", ""),
            };
            let message = if message.is_empty() {
                format!(
                    "the server responded with the status code {code} but did not return more information"
                )
            } else {
                message.to_owned()
            };
            let mut e = ApiError::new(
                code,
                if reason.is_empty() { "Unknown" } else { reason },
                format!("{message} ( pods/log {pod})"),
            );
            let mut details = json!({"name": pod, "kind": "pods/log"});
            if !body.is_empty() {
                details["causes"] =
                    json!([{"reason": "UnexpectedServerResponse", "message": body}]);
            }
            e.details = Some(details);
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as name/value pairs.
    type Query<'a> = &'a [(&'a str, &'a str)];

    fn parse(q: Query<'_>) -> Result<LogOptions, ApiError> {
        LogOptions::parse("p", |k| q.iter().find(|(n, _)| *n == k).map(|(_, v)| *v))
    }

    #[test]
    fn options_are_validated_as_upstream() {
        let o = parse(&[
            ("follow", "true"),
            ("tailLines", "0"),
            ("limitBytes", "10"),
            ("sinceTime", "2026-01-02T03:04:05+01:00"),
        ])
        .unwrap();
        assert!(o.follow && !o.previous);
        assert_eq!(
            o.node_query(),
            "follow=true&tailLines=0&limitBytes=10&sinceTime=2026-01-02T02:04:05Z"
        );
        let cases: &[(Query<'_>, u16, &str)] = &[
            (
                &[("tailLines", "-1")],
                422,
                r#"PodLogOptions "p" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"#,
            ),
            (
                &[("limitBytes", "0")],
                422,
                r#"PodLogOptions "p" is invalid: limitBytes: Invalid value: 0: must be greater than 0"#,
            ),
            (
                &[("sinceSeconds", "0")],
                422,
                r#"PodLogOptions "p" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0"#,
            ),
            (
                &[("sinceSeconds", "5"), ("sinceTime", "2026-01-02T03:04:05Z")],
                422,
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ),
            (&[("tailLines", "x")], 400, "tailLines"),
            (&[("sinceTime", "yesterday")], 400, "sinceTime"),
            (&[("follow", "maybe")], 400, "follow"),
        ];
        for (q, code, msg) in cases {
            let e = parse(q).unwrap_err();
            assert_eq!(e.code, *code, "{q:?}: {e:?}");
            assert!(e.message.contains(msg), "{q:?}: {}", e.message);
        }
    }

    fn pod(spec: Value, statuses: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec, "status": {"containerStatuses": statuses}})
    }

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one = pod(json!({"containers": [{"name": "c"}]}), json!([]));
        assert_eq!(container(&one, None).unwrap(), "c");
        let many = pod(
            json!({"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}]}),
            json!([]),
        );
        assert_eq!(container(&many, Some("i")).unwrap(), "i");
        assert_eq!(
            container(&many, None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let e = container(&many, Some("z")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container z is not valid for pod p")
        );
    }

    #[test]
    fn the_status_decides_as_the_kubelet() {
        let spec = json!({"containers": [{"name": "c"}]});
        let term = json!({"exitCode": 1, "containerID": "kcore://1"});
        let cases = [
            (json!({"state": {"running": {}}}), false, None),
            (
                json!({"state": {"waiting": {"reason": "ContainerCreating"}}}),
                false,
                Some(r#"container "c" in pod "p" is waiting to start: ContainerCreating"#),
            ),
            (
                json!({"state": {"waiting": {"reason": "ImagePullBackOff"}}}),
                false,
                Some(
                    r#"container "c" in pod "p" is waiting to start: trying and failing to pull image"#,
                ),
            ),
            (
                json!({"state": {"waiting": {"reason": "ErrImagePull"}}}),
                false,
                Some(r#"container "c" in pod "p" is waiting to start: image can't be pulled"#),
            ),
            // a crash loop shows the last instance's log
            (
                json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": term}}),
                false,
                None,
            ),
            (json!({"state": {"terminated": term}}), false, None),
            (
                json!({"state": {"terminated": {"exitCode": 0}}}),
                false,
                Some(r#"container "c" in pod "p" is terminated"#),
            ),
            (
                json!({"state": {}}),
                false,
                Some(r#"container "c" in pod "p" is waiting to start - no logs yet"#),
            ),
            (
                json!({"state": {"running": {}}}),
                true,
                Some(r#"previous terminated container "c" in pod "p" not found"#),
            ),
            (
                json!({"state": {"running": {}}, "lastState": {"terminated": term}}),
                true,
                None,
            ),
        ];
        for (mut st, previous, want) in cases {
            st["name"] = json!("c");
            let p = pod(spec.clone(), json!([st]));
            match (check_status(&p, "c", previous), want) {
                (Ok(()), None) => {}
                (Err(e), Some(m)) => {
                    assert_eq!((e.code, e.message.as_str()), (400, m), "{st}");
                }
                (got, want) => panic!("{st} previous={previous}: {got:?}, want {want:?}"),
            }
        }
        let none = pod(spec, json!([]));
        assert_eq!(
            check_status(&none, "c", false).unwrap_err().message,
            r#"container "c" in pod "p" is not available"#
        );
    }

    #[test]
    fn node_errors_become_statuses() {
        let e = node_error(
            400,
            "container \"c\" in pod \"p\" is waiting to start - no logs yet\n",
            "p",
        );
        assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
        assert_eq!(
            e.message,
            r#"container "c" in pod "p" is waiting to start - no logs yet"#
        );
        let e = node_error(404, "pod \"p\" does not exist", "p");
        assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
        assert_eq!(
            e.details.unwrap()["causes"][0]["message"],
            "pod \"p\" does not exist"
        );
        assert_eq!(node_error(500, "boom", "p").reason, "InternalError");
    }
}
