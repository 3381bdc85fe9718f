//! The custom and external metrics APIs as the HorizontalPodAutoscaler reads them
//! (upstream's `pkg/controller/podautoscaler/metrics/client.go`):
//!
//! - `custom.metrics.k8s.io/v1beta2`: a metric of every pod a selector picks
//!   (`namespaces/<ns>/pods/*/<metric>?labelSelector=`) and of one described object
//!   (`namespaces/<ns>/<resource>/<name>/<metric>`), both as a `MetricValueList`;
//! - `external.metrics.k8s.io/v1beta1`: the values of an external metric
//!   (`namespaces/<ns>/<metric>?labelSelector=`), an `ExternalMetricValueList`.
//!
//! A metric's own `selector` goes as `metricLabelSelector` (custom) or `labelSelector`
//! (external). These APIs are served by metrics adapters the API server proxies to
//! through APIService registrations (API aggregation); values are Quantities, read here
//! in milli-units.

use std::collections::HashMap;

use kcore_k8s::Quantity;
use kube::Client;
use serde_json::Value;

/// The custom metrics API's group and version.
const CUSTOM: &str = "/apis/custom.metrics.k8s.io/v1beta2";
/// The external metrics API's group and version.
const EXTERNAL: &str = "/apis/external.metrics.k8s.io/v1beta1";

fn milli(v: &Value) -> Option<i64> {
    Quantity::parse(v.as_str()?).ok().map(|q| q.milli_value())
}

/// GETs `path` with the query pairs (those with an empty value left out) and decodes
/// the JSON answer; the error is the API's message.
async fn get(client: &Client, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
    let qs = {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
            qs.append_pair(k, v);
        }
        qs.finish()
    };
    let uri = if qs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{qs}")
    };
    let req = http::Request::get(uri)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client.request::<Value>(req).await.map_err(|e| match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    })
}

/// The metric `metric` of the pods `selector` picks in `ns`, by pod name (milli-units).
pub(crate) async fn pods_metric(
    client: &Client,
    ns: &str,
    metric: &str,
    selector: &str,
    metric_selector: &str,
) -> Result<HashMap<String, i64>, String> {
    let path = format!("{CUSTOM}/namespaces/{ns}/pods/*/{metric}");
    let list = get(
        client,
        &path,
        &[
            ("labelSelector", selector),
            ("metricLabelSelector", metric_selector),
        ],
    )
    .await
    .map_err(|e| format!("unable to fetch metrics from custom metrics API: {e}"))?;
    let out: HashMap<String, i64> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let name = i["describedObject"]["name"].as_str()?;
            Some((name.to_owned(), milli(&i["value"])?))
        })
        .collect();
    if out.is_empty() {
        return Err("no metrics returned from custom metrics API".into());
    }
    Ok(out)
}

/// The metric `metric` of the object `name` of resource `plural` in `ns`.
pub(crate) async fn object_metric(
    client: &Client,
    ns: &str,
    plural: &str,
    name: &str,
    metric: &str,
    metric_selector: &str,
) -> Result<i64, String> {
    let path = if plural == "namespaces" {
        format!("{CUSTOM}/namespaces/{name}/metrics/{metric}")
    } else {
        format!("{CUSTOM}/namespaces/{ns}/{plural}/{name}/{metric}")
    };
    let answer = get(client, &path, &[("metricLabelSelector", metric_selector)])
        .await
        .map_err(|e| format!("unable to fetch metrics from custom metrics API: {e}"))?;
    // a MetricValueList of exactly one (v1beta2), or a lone MetricValue
    let items: Vec<&Value> = match answer["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![&answer],
    };
    if items.len() != 1 {
        return Err(format!(
            "unable to fetch metrics from custom metrics API: the custom metrics API server returned {} results when we asked for exactly one",
            items.len()
        ));
    }
    milli(&items[0]["value"])
        .ok_or_else(|| "unable to fetch metrics from custom metrics API: no value".to_owned())
}

/// The values of the external metric `metric` in `ns` that `metric_selector` picks.
pub(crate) async fn external_metric(
    client: &Client,
    ns: &str,
    metric: &str,
    metric_selector: &str,
) -> Result<Vec<i64>, String> {
    let path = format!("{EXTERNAL}/namespaces/{ns}/{metric}");
    let list = get(client, &path, &[("labelSelector", metric_selector)])
        .await
        .map_err(|e| format!("unable to fetch metrics from external metrics API: {e}"))?;
    let values: Vec<i64> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| milli(&i["value"]))
        .collect();
    if values.is_empty() {
        return Err("no metrics returned from external metrics API".into());
    }
    Ok(values)
}
