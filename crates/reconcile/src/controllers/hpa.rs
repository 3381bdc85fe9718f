//! The HorizontalPodAutoscaler's decisions, apart from their side effects (upstream's
//! `pkg/controller/podautoscaler/replica_calculator.go` and the normalization in
//! `horizontal.go`), table-tested:
//!
//! - [`resource_replicas`]: the replica count for a resource metric, by utilization (of
//!   the pods' requests) or by average value, with the tolerance of 0.1, pods without a
//!   metric counted at 100 % of their request (or the target) when scaling down and at 0
//!   when scaling up, not-yet-ready pods counted at 0 when scaling up, and no change when
//!   counting them would flip the direction;
//! - [`Normalizer`]: the stabilization windows and scale policies of `behavior` (with
//!   upstream's defaults when it is unset), and min/max, giving the `ScalingLimited`
//!   reason and message.
//!
//! The controller that reads the metrics API and writes the scale subresource is
//! [`super::podautoscaler`].

use std::collections::HashMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// Upstream's default tolerance: no scaling while the usage ratio is within 10 % of 1.
pub(crate) const TOLERANCE: f64 = 0.1;

/// The controller manager's `--horizontal-pod-autoscaler-downscale-stabilization`
/// default (s), for HPAs without `behavior`.
pub(crate) const DOWNSCALE_STABILIZATION: i64 = 300;

/// What the calculator needs of one pod.
#[derive(Debug, Clone)]
pub(crate) struct PodInfo {
    pub name: String,
    /// Being deleted, or Failed: left out.
    pub ignored: bool,
    /// Pending, or not Ready yet: counted only as upstream does.
    pub unready: bool,
    /// The sum of its containers' requests of the resource (milli-units), or the name of
    /// the first container without one.
    pub request: Result<i64, String>,
}

/// Why no replica count could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CalcError {
    /// No pod had a metric.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    /// A pod's container has no request for the resource.
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        resource: String,
        container: String,
        pod: String,
    },
}

/// The target of a resource metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// A percentage of the pods' requests.
    Utilization(i64),
    /// An average value per pod, in milli-units.
    AverageValue(i64),
}

/// The outcome: replicas, and the current utilization (percent, for a utilization
/// target) and average value (milli-units) of the ready pods with metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Calculated {
    pub replicas: i32,
    pub utilization: Option<i64>,
    pub average_milli: i64,
}

/// Upstream's `GetResourceReplicas` / `GetRawResourceReplicas`.
pub(crate) fn resource_replicas(
    current: i32,
    resource: &str,
    target: Target,
    pods: &[PodInfo],
    metrics: &HashMap<String, i64>,
) -> Result<Calculated, CalcError> {
    let mut ready: HashMap<&str, i64> = HashMap::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    for p in pods {
        if p.ignored {
            continue;
        }
        match metrics.get(&p.name) {
            None if !p.unready => missing.push(p),
            // Pending pods count as unready with or without a metric
            None => unready.push(p),
            Some(_) if p.unready => unready.push(p),
            Some(v) => {
                ready.insert(&p.name, *v);
            }
        }
    }
    if ready.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let request_of = |p: &PodInfo| {
        p.request
            .clone()
            .map_err(|container| CalcError::MissingRequest {
                resource: resource.to_owned(),
                container,
                pod: p.name.clone(),
            })
    };
    // the ratio of usage to target over a set of (usage, request) pairs
    let ratio = |set: &[(i64, i64)]| -> (f64, Option<i64>, i64) {
        let usage: i64 = set.iter().map(|(u, _)| u).sum();
        let avg = usage / set.len().max(1) as i64;
        match target {
            Target::Utilization(t) => {
                let req: i64 = set.iter().map(|(_, r)| r).sum();
                let util = if req > 0 { usage * 100 / req } else { 0 };
                (util as f64 / t as f64, Some(util), avg)
            }
            Target::AverageValue(t) => (avg as f64 / t as f64, None, avg),
        }
    };
    let request_needed = matches!(target, Target::Utilization(_));
    let mut set: Vec<(i64, i64)> = Vec::new();
    for p in pods.iter().filter(|p| ready.contains_key(p.name.as_str())) {
        let req = if request_needed { request_of(p)? } else { 0 };
        set.push((ready[p.name.as_str()], req));
    }
    let (usage_ratio, utilization, average_milli) = ratio(&set);
    let out = |replicas| Calculated {
        replicas,
        utilization,
        average_milli,
    };
    let rebalance_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !rebalance_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(out(current));
        }
        return Ok(out((usage_ratio * set.len() as f64).ceil() as i32));
    }
    // the pods without a metric: at their request (the target) when scaling down, 0 up
    for p in &missing {
        let req = if request_needed { request_of(p)? } else { 0 };
        let usage = if usage_ratio < 1.0 {
            match target {
                Target::Utilization(_) => req,
                Target::AverageValue(t) => t,
            }
        } else {
            0
        };
        set.push((usage, req));
    }
    if rebalance_unready {
        for p in &unready {
            let req = if request_needed { request_of(p)? } else { 0 };
            set.push((0, req));
        }
    }
    let (new_ratio, _, _) = ratio(&set);
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(out(current));
    }
    let replicas = (new_ratio * set.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(out(current));
    }
    Ok(out(replicas))
}

/// Upstream's `getUsageRatioReplicaCount`, for an Object or External metric with a
/// `Value` target: the ratio of usage to target scales the ready pods (`None`: not
/// counted yet, needed only outside the tolerance; the caller counts them on demand).
pub(crate) fn usage_ratio_replicas(
    current: i32,
    usage_ratio: f64,
    ready_pods: impl FnOnce() -> i64,
) -> i32 {
    if current == 0 {
        // scale from zero: to as many pods as the ratio asks
        return usage_ratio.ceil() as i32;
    }
    if (1.0 - usage_ratio).abs() <= TOLERANCE {
        return current;
    }
    (usage_ratio * ready_pods() as f64).ceil() as i32
}

/// Upstream's `GetObjectPerPodMetricReplicas` and `GetExternalPerPodMetricReplicas`:
/// an `AverageValue` target over a total `usage` (milli-units), per current replica.
/// The replicas and the per-pod average reported as the current value.
pub(crate) fn per_pod_replicas(status_replicas: i32, usage: i64, target: i64) -> (i32, i64) {
    let n = f64::from(status_replicas.max(1));
    let ratio = usage as f64 / (target.max(1) as f64 * n);
    let replicas = if (1.0 - ratio).abs() > TOLERANCE {
        (usage as f64 / target.max(1) as f64).ceil() as i32
    } else {
        status_replicas
    };
    (replicas, (usage as f64 / n).ceil() as i64)
}

/// One scaling direction's rules (`HPAScalingRules`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rules {
    pub window: i64,
    pub select: String,
    /// (type, value, periodSeconds).
    pub policies: Vec<(String, i32, i64)>,
}

impl Rules {
    /// The rules in `v` (a `HPAScalingRules` object), upstream's defaults for what is
    /// missing.
    pub(crate) fn from_value(v: &Value, up: bool) -> Self {
        let policies: Vec<(String, i32, i64)> = match v["policies"].as_array() {
            Some(ps) => ps
                .iter()
                .map(|p| {
                    (
                        p["type"].as_str().unwrap_or("Pods").to_owned(),
                        p["value"].as_i64().unwrap_or(0) as i32,
                        p["periodSeconds"].as_i64().unwrap_or(15),
                    )
                })
                .collect(),
            None if up => vec![("Pods".into(), 4, 15), ("Percent".into(), 100, 15)],
            None => vec![("Percent".into(), 100, 15)],
        };
        Rules {
            window: v["stabilizationWindowSeconds"]
                .as_i64()
                .unwrap_or(if up { 0 } else { 300 }),
            select: v["selectPolicy"].as_str().unwrap_or("Max").to_owned(),
            policies,
        }
    }
}

/// Why the replica count was limited (`ScalingLimited` reason and message).
pub(crate) type Limit = (&'static str, &'static str);

/// The recommendations and scale events of one HPA, which the stabilization windows and
/// the policies' periods look back on.
#[derive(Debug)]
pub(crate) struct Normalizer {
    recommendations: Vec<(Timestamp, i32)>,
    up_events: Vec<(Timestamp, i32)>,
    down_events: Vec<(Timestamp, i32)>,
    /// The scale-down window (s) of HPAs without `behavior`, or whose `scaleDown` sets
    /// none (the controller manager's `--horizontal-pod-autoscaler-downscale-stabilization`).
    down_window: i64,
}

impl Default for Normalizer {
    fn default() -> Self {
        Self::new(DOWNSCALE_STABILIZATION)
    }
}

/// The `AbleToScale` message of a stabilization reason of [`Normalizer::normalize`].
pub(crate) fn stabilized_message(reason: &str) -> &'static str {
    if reason == "ScaleUpStabilized" {
        "recent recommendations were lower than current one, applying the lowest recent recommendation"
    } else {
        "recent recommendations were higher than current one, applying the highest recent recommendation"
    }
}

fn change_in_period(events: &[(Timestamp, i32)], now: Timestamp, period: i64) -> i32 {
    let cutoff = now - SignedDuration::from_secs(period);
    events
        .iter()
        .filter(|(t, _)| *t > cutoff)
        .map(|(_, n)| n)
        .sum()
}

impl Normalizer {
    /// No history yet, with `down_window` seconds as the default scale-down window.
    pub(crate) fn new(down_window: i64) -> Self {
        Self {
            recommendations: Vec::new(),
            up_events: Vec::new(),
            down_events: Vec::new(),
            down_window,
        }
    }

    /// Upstream's `recordInitialRecommendation`: the first time an HPA is seen, its
    /// target's current size counts as a recommendation (so a restart does not scale
    /// down at once).
    pub(crate) fn record_initial(&mut self, now: Timestamp, current: i32) {
        if self.recommendations.is_empty() {
            self.recommendations.push((now, current));
        }
    }

    /// The replica count to scale to from the `desired` one computed at `now`, given the
    /// `behavior` (a `HorizontalPodAutoscalerBehavior` object, or null for upstream's
    /// defaults); with the stabilization reason (if any) and the limit that applied.
    pub(crate) fn normalize(
        &mut self,
        now: Timestamp,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        behavior: &Value,
    ) -> (i32, Option<&'static str>, Limit) {
        if behavior.is_null() {
            return self.normalize_without_behavior(now, current, desired, min, max);
        }
        let up = Rules::from_value(&behavior["scaleUp"], true);
        let mut down = Rules::from_value(&behavior["scaleDown"], false);
        if behavior["scaleDown"]["stabilizationWindowSeconds"].is_null() {
            down.window = self.down_window;
        }
        // stabilization: the lowest recommendation of the up window, the highest of the
        // down window
        let up_cut = now - SignedDuration::from_secs(up.window);
        let down_cut = now - SignedDuration::from_secs(down.window);
        let (mut up_rec, mut down_rec) = (desired, desired);
        for (t, r) in &self.recommendations {
            if *t > up_cut {
                up_rec = up_rec.min(*r);
            }
            if *t > down_cut {
                down_rec = down_rec.max(*r);
            }
        }
        let keep = up.window.max(down.window);
        let oldest = now - SignedDuration::from_secs(keep);
        self.recommendations.retain(|(t, _)| *t > oldest);
        self.recommendations.push((now, desired));
        let stabilized = current.max(up_rec).min(down_rec);
        let reason = match stabilized {
            s if s == desired => None,
            s if s > desired => Some("ScaleDownStabilized"),
            _ => Some("ScaleUpStabilized"),
        };
        let (n, limit) = self.rate_limited(now, current, stabilized, min, max, &up, &down);
        (n, reason, limit)
    }

    /// Upstream's rules for an HPA without `behavior`: the highest recommendation of the
    /// last 5 minutes, and a scale-up of at most double (at least 4).
    fn normalize_without_behavior(
        &mut self,
        now: Timestamp,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> (i32, Option<&'static str>, Limit) {
        let cut = now - SignedDuration::from_secs(self.down_window);
        self.recommendations.retain(|(t, _)| *t > cut);
        self.recommendations.push((now, desired));
        let stabilized = self
            .recommendations
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(desired);
        let reason = (stabilized != desired).then_some("ScaleDownStabilized");
        let up_limit = (2 * current).max(4);
        let (allowed_max, why) = if max > up_limit {
            (
                up_limit,
                (
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                ),
            )
        } else {
            (
                max,
                (
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                ),
            )
        };
        if stabilized < min {
            let why = (
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            );
            return (min, reason, why);
        }
        if stabilized > allowed_max {
            return (allowed_max, reason, why);
        }
        (
            stabilized,
            reason,
            (
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            ),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn rate_limited(
        &self,
        now: Timestamp,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        up: &Rules,
        down: &Rules,
    ) -> (i32, Limit) {
        let within = (
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        );
        if desired > current {
            let limit = self.scale_up_limit(now, current, up).max(current);
            let (allowed, why) = if max > limit {
                (
                    limit,
                    (
                        "ScaleUpLimit",
                        "the desired replica count is increasing faster than the maximum scale rate",
                    ),
                )
            } else {
                (
                    max,
                    (
                        "TooManyReplicas",
                        "the desired replica count is more than the maximum replica count",
                    ),
                )
            };
            if desired > allowed {
                return (allowed, why);
            }
        } else if desired < current {
            let limit = self.scale_down_limit(now, current, down).min(current);
            let (allowed, why) = if min < limit {
                (
                    limit,
                    (
                        "ScaleDownLimit",
                        "the desired replica count is decreasing faster than the maximum scale rate",
                    ),
                )
            } else {
                (
                    min,
                    (
                        "TooFewReplicas",
                        "the desired replica count is less than the minimum replica count",
                    ),
                )
            };
            if desired < allowed {
                return (allowed, why);
            }
        }
        (desired, within)
    }

    fn scale_up_limit(&self, now: Timestamp, current: i32, r: &Rules) -> i32 {
        if r.select == "Disabled" {
            return current;
        }
        let proposals = r.policies.iter().map(|(ty, value, period)| {
            let start = current - change_in_period(&self.up_events, now, *period)
                + change_in_period(&self.down_events, now, *period);
            if ty == "Pods" {
                start + value
            } else {
                (f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil() as i32
            }
        });
        if r.select == "Min" {
            proposals.min().unwrap_or(i32::MAX)
        } else {
            proposals.max().unwrap_or(i32::MIN)
        }
    }

    fn scale_down_limit(&self, now: Timestamp, current: i32, r: &Rules) -> i32 {
        if r.select == "Disabled" {
            return current;
        }
        let proposals = r.policies.iter().map(|(ty, value, period)| {
            let start = current - change_in_period(&self.up_events, now, *period)
                + change_in_period(&self.down_events, now, *period);
            if ty == "Pods" {
                start - value
            } else {
                (f64::from(start) * (1.0 - f64::from(*value) / 100.0)) as i32
            }
        });
        if r.select == "Min" {
            proposals.max().unwrap_or(i32::MIN)
        } else {
            proposals.min().unwrap_or(i32::MAX)
        }
    }

    /// Records a rescale from `from` to `to` at `now` (the policies' periods count it).
    pub(crate) fn record_scale(&mut self, now: Timestamp, from: i32, to: i32) {
        let horizon = now - SignedDuration::from_secs(1800);
        self.up_events.retain(|(t, _)| *t > horizon);
        self.down_events.retain(|(t, _)| *t > horizon);
        if to > from {
            self.up_events.push((now, to - from));
        } else if to < from {
            self.down_events.push((now, from - to));
        }
    }
}

/// Milli-units as a canonical decimal quantity, as upstream's
/// `resource.NewMilliQuantity(v, DecimalSI)` prints (`250m`, `1`, `1500m`, `2k`,
/// `52428800`).
pub(crate) fn milli_quantity(milli: i64) -> String {
    if milli == 0 {
        return "0".into();
    }
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut v = milli / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while v % 1000 == 0 && suffix + 1 < SUFFIXES.len() {
        v /= 1000;
        suffix += 1;
    }
    format!("{v}{}", SUFFIXES[suffix])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, request: i64) -> PodInfo {
        PodInfo {
            name: name.into(),
            ignored: false,
            unready: false,
            request: Ok(request),
        }
    }

    fn metrics(v: &[(&str, i64)]) -> HashMap<String, i64> {
        v.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn utilization_scales_by_ratio_within_tolerance() {
        let pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000)];
        // 90 % of requests against 50 %: ceil(1.8 × 3) = 6
        let m = metrics(&[("a", 900), ("b", 900), ("c", 900)]);
        let c = resource_replicas(3, "cpu", Target::Utilization(50), &pods, &m).unwrap();
        assert_eq!(
            (c.replicas, c.utilization, c.average_milli),
            (6, Some(90), 900)
        );
        // 54 % against 50 %: within 10 %, no change
        let m = metrics(&[("a", 540), ("b", 540), ("c", 540)]);
        let c = resource_replicas(3, "cpu", Target::Utilization(50), &pods, &m).unwrap();
        assert_eq!(c.replicas, 3);
        // down: 10 % of 50 %: ceil(0.2 × 3) = 1
        let m = metrics(&[("a", 100), ("b", 100), ("c", 100)]);
        let c = resource_replicas(3, "cpu", Target::Utilization(50), &pods, &m).unwrap();
        assert_eq!(c.replicas, 1);
        // by average value: 600m each against 200m
        let m = metrics(&[("a", 600), ("b", 600), ("c", 600)]);
        let c = resource_replicas(3, "cpu", Target::AverageValue(200), &pods, &m).unwrap();
        assert_eq!((c.replicas, c.utilization), (9, None));
    }

    #[test]
    fn missing_and_unready_pods_as_upstream() {
        // scaling up: the pod without metrics counts at 0 → ratio (900+900+0)/3000/0.5 = 1.2
        let pods = [pod("a", 1000), pod("b", 1000), pod("c", 1000)];
        let m = metrics(&[("a", 900), ("b", 900)]);
        let c = resource_replicas(3, "cpu", Target::Utilization(50), &pods, &m).unwrap();
        assert_eq!(c.replicas, 4);
        // scaling down: it counts at its request (100 %), which flips the direction: no change
        let m = metrics(&[("a", 100), ("b", 100)]);
        let c = resource_replicas(3, "cpu", Target::Utilization(50), &pods, &m).unwrap();
        assert_eq!(c.replicas, 3);
        // an unready pod counts at 0 when scaling up
        let mut p = pods.clone();
        p[2].unready = true;
        let m = metrics(&[("a", 900), ("b", 900), ("c", 0)]);
        let c = resource_replicas(3, "cpu", Target::Utilization(50), &p, &m).unwrap();
        assert_eq!(c.replicas, 4);
        // ignored pods are left out; no metrics at all is an error
        p[0].ignored = true;
        p[1].ignored = true;
        assert_eq!(
            resource_replicas(3, "cpu", Target::Utilization(50), &p, &m),
            Err(CalcError::NoMetrics)
        );
        let no_req = [PodInfo {
            request: Err("app".into()),
            ..pod("a", 0)
        }];
        let err = resource_replicas(
            1,
            "cpu",
            Target::Utilization(50),
            &no_req,
            &metrics(&[("a", 5)]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing request for cpu in container app of Pod a"
        );
    }

    #[test]
    fn behavior_defaults_limit_and_stabilize() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = |n: i64| t0 + SignedDuration::from_secs(n);
        // without behavior: at most double (at least 4); the 5-minute down window
        let mut n = Normalizer::default();
        let (r, why, limit) = n.normalize(s(0), 1, 10, 1, 20, &Value::Null);
        assert_eq!((r, why, limit.0), (4, None, "ScaleUpLimit"));
        // the earlier 10 holds, still rate-limited from the current 4
        let (r, why, _) = n.normalize(s(30), 4, 2, 1, 20, &Value::Null);
        assert_eq!((r, why), (8, Some("ScaleDownStabilized")));
        let (r, _, _) = n.normalize(s(400), 4, 2, 1, 20, &Value::Null);
        assert_eq!(r, 2);
        // behavior with the defaults filled in: max(4 pods, 100 %) per 15 s
        let d = json!({"scaleUp": {}, "scaleDown": {}});
        let mut n = Normalizer::default();
        let (r, why, limit) = n.normalize(s(0), 1, 10, 1, 20, &d);
        assert_eq!((r, why, limit.0), (5, None, "ScaleUpLimit"));
        n.record_scale(s(0), 1, 5);
        // within the same period the added pods count against the limit
        let (r, _, _) = n.normalize(s(5), 5, 20, 1, 20, &d);
        assert_eq!(r, 5);
        let (r, _, limit) = n.normalize(s(20), 5, 30, 1, 20, &d);
        assert_eq!((r, limit.0), (10, "ScaleUpLimit"));
        n.record_scale(s(20), 5, 10);
        // down: the 300 s window keeps the highest recent recommendation
        let (r, why, _) = n.normalize(s(30), 10, 2, 1, 20, &d);
        assert_eq!((r, why), (10, Some("ScaleDownStabilized")));
        // a short window and a 1-pod policy
        let b = json!({"scaleDown": {"stabilizationWindowSeconds": 5,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}});
        let mut n = Normalizer::default();
        n.normalize(s(0), 4, 4, 1, 10, &b);
        let (r, why, limit) = n.normalize(s(10), 4, 1, 1, 10, &b);
        assert_eq!((r, why, limit.0), (3, None, "ScaleDownLimit"));
        n.record_scale(s(10), 4, 3);
        let (r, _, _) = n.normalize(s(20), 3, 1, 1, 10, &b);
        assert_eq!(r, 3);
        let (r, _, _) = n.normalize(s(80), 3, 1, 1, 10, &b);
        assert_eq!(r, 2);
        // min and max
        let mut n = Normalizer::default();
        let (r, _, limit) = n.normalize(s(0), 3, 30, 1, 5, &json!({"scaleUp": {"policies": [{"type": "Percent", "value": 900, "periodSeconds": 15}]}}));
        assert_eq!((r, limit.0), (5, "TooManyReplicas"));
        let (r, _, limit) = n.normalize(s(0), 3, 3, 1, 5, &d);
        assert_eq!((r, limit.0), (3, "DesiredWithinRange"));
        // disabled
        let mut n = Normalizer::default();
        let (r, _, _) = n.normalize(
            s(0),
            3,
            8,
            1,
            10,
            &json!({"scaleUp": {"selectPolicy": "Disabled"}}),
        );
        assert_eq!(r, 3);
    }

    #[test]
    fn milli_quantities_as_upstream_prints_them() {
        assert_eq!(milli_quantity(250), "250m");
        assert_eq!(milli_quantity(1000), "1");
        assert_eq!(milli_quantity(1500), "1500m");
        assert_eq!(milli_quantity(2_000_000), "2k");
        assert_eq!(milli_quantity(52_428_800_000), "52428800");
        assert_eq!(milli_quantity(0), "0");
    }

    #[test]
    fn initial_recommendation_holds_a_scale_down() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = |n: i64| t0 + SignedDuration::from_secs(n);
        let mut n = Normalizer::new(60);
        n.record_initial(s(0), 5);
        n.record_initial(s(1), 9); // only the first counts
        let (r, why, _) = n.normalize(s(10), 5, 2, 1, 10, &Value::Null);
        assert_eq!((r, why), (5, Some("ScaleDownStabilized")));
        let (r, why, _) = n.normalize(s(61), 5, 2, 1, 10, &Value::Null);
        assert_eq!((r, why), (2, None));
        // a scaleDown without a window takes the configured one
        let b = serde_json::json!({"scaleDown": {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}});
        let mut n = Normalizer::new(5);
        n.record_initial(s(0), 4);
        assert_eq!(n.normalize(s(3), 4, 1, 1, 10, &b).0, 4);
        assert_eq!(n.normalize(s(9), 4, 1, 1, 10, &b).0, 1);
        assert_eq!(
            stabilized_message("ScaleUpStabilized"),
            "recent recommendations were lower than current one, applying the lowest recent recommendation"
        );
    }

    #[test]
    fn value_targets_scale_the_ready_pods() {
        // (current, ratio, ready) -> replicas
        for (current, ratio, ready, want) in [
            (3, 1.05, 3, 3), // within the tolerance: no pod count needed
            (3, 2.5, 3, 8),  // 2.5 × 3 ready
            (4, 2.0, 2, 4),  // only the ready pods count
            (5, 0.5, 5, 3),
            (0, 3.2, 0, 4), // from zero: the ratio itself
        ] {
            assert_eq!(
                usage_ratio_replicas(current, ratio, || ready),
                want,
                "{current} {ratio} {ready}"
            );
        }
        let mut counted = false;
        usage_ratio_replicas(3, 1.0, || {
            counted = true;
            3
        });
        assert!(!counted, "pods are not listed within the tolerance");
    }

    #[test]
    fn average_value_targets_divide_by_the_replicas() {
        // 250 over 2 replicas against 30 each: 9 replicas, 125 per pod
        assert_eq!(per_pod_replicas(2, 250_000, 30_000), (9, 125_000));
        // within the tolerance: unchanged
        assert_eq!(per_pod_replicas(4, 122_000, 30_000), (4, 30_500));
        assert_eq!(per_pod_replicas(4, 10_000, 30_000), (1, 2_500));
    }
}
