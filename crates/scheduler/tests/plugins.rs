//! Table-driven Filter and Score tests per default plugin, against the
//! behaviour Kubernetes documents (and its plugin unit tests encode).

mod common;

use std::sync::Arc;

use common::*;
use kcore_scheduler::*;
use serde_json::json;

#[test]
fn node_unschedulable_filter() {
    let fw = only(Arc::new(NodeUnschedulable));
    let nodes = [
        node("a", "4", "8Gi", &[]),
        set(
            node("b", "4", "8Gi", &[]),
            "spec.unschedulable",
            json!(true),
        ),
    ];
    let tol = set(
        pod("p", "", ""),
        "spec.tolerations",
        json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]),
    );
    let cases = [
        (pod("p", "", ""), vec![("a", true), ("b", false)]),
        (tol, vec![("a", true), ("b", true)]),
    ];
    for (p, want) in cases {
        let mut s = snapshot(&nodes, &[]);
        let r = filter_all(&fw, &mut s, &p);
        assert_eq!(passed(&r), want);
        if let Some((_, code, reasons)) = r.iter().find(|e| e.1 != Code::Success) {
            assert_eq!(*code, Code::UnschedulableAndUnresolvable);
            assert_eq!(reasons, &vec!["node(s) were unschedulable".to_string()]);
        }
    }
}

#[test]
fn node_name_filter() {
    let fw = only(Arc::new(NodeName));
    let nodes = [node("a", "1", "1Gi", &[]), node("b", "1", "1Gi", &[])];
    let cases = [
        (pod("p", "", ""), vec![("a", true), ("b", true)]),
        (
            set(pod("p", "", ""), "spec.nodeName", json!("b")),
            vec![("a", false), ("b", true)],
        ),
    ];
    for (p, want) in cases {
        let mut s = snapshot(&nodes, &[]);
        assert_eq!(passed(&filter_all(&fw, &mut s, &p)), want);
    }
}

#[test]
fn taint_toleration_filter() {
    let fw = only(Arc::new(TaintToleration));
    let nodes = [
        node("a", "1", "1Gi", &[]),
        set(
            node("b", "1", "1Gi", &[]),
            "spec.taints",
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        ),
        set(
            node("c", "1", "1Gi", &[]),
            "spec.taints",
            json!([{"key": "soft", "effect": "PreferNoSchedule"}]),
        ),
        set(
            node("d", "1", "1Gi", &[]),
            "status.conditions",
            json!([{"type": "Ready", "status": "False"}]),
        ),
    ];
    let tol = |t: serde_json::Value| set(pod("p", "", ""), "spec.tolerations", t);
    let cases = [
        (
            "no tolerations",
            pod("p", "", ""),
            vec![("a", true), ("b", false), ("c", true), ("d", false)],
        ),
        (
            "equal value",
            tol(
                json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]),
            ),
            vec![("a", true), ("b", true), ("c", true), ("d", false)],
        ),
        (
            "wrong value",
            tol(json!([{"key": "dedicated", "value": "cpu"}])),
            vec![("a", true), ("b", false), ("c", true), ("d", false)],
        ),
        (
            "wrong effect",
            tol(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}])),
            vec![("a", true), ("b", false), ("c", true), ("d", false)],
        ),
        (
            "exists without key tolerates everything",
            tol(json!([{"operator": "Exists"}])),
            vec![("a", true), ("b", true), ("c", true), ("d", true)],
        ),
        (
            "not-ready toleration",
            tol(json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}])),
            vec![("a", true), ("b", false), ("c", true), ("d", true)],
        ),
    ];
    for (name, p, want) in cases {
        let mut s = snapshot(&nodes, &[]);
        let r = filter_all(&fw, &mut s, &p);
        assert_eq!(passed(&r), want, "{name}");
    }
    let mut s = snapshot(&nodes, &[]);
    let r = filter_all(&fw, &mut s, &pod("p", "", ""));
    assert_eq!(
        r[1].2,
        vec!["node(s) had untolerated taint {dedicated: gpu}".to_string()]
    );
    assert_eq!(r[1].1, Code::UnschedulableAndUnresolvable);
}

#[test]
fn taint_toleration_score_prefers_fewer_untolerated_soft_taints() {
    let fw = only(Arc::new(TaintToleration));
    let soft = |k: &str| json!({"key": k, "value": "x", "effect": "PreferNoSchedule"});
    let nodes = [
        node("a", "1", "1Gi", &[]),
        set(
            node("b", "1", "1Gi", &[]),
            "spec.taints",
            json!([soft("t1")]),
        ),
        set(
            node("c", "1", "1Gi", &[]),
            "spec.taints",
            json!([soft("t1"), soft("t2")]),
        ),
    ];
    let cases = [
        (pod("p", "", ""), vec![100, 50, 0]),
        // Tolerating t1 (effect PreferNoSchedule) leaves only c's t2.
        (
            set(
                pod("p", "", ""),
                "spec.tolerations",
                json!([{"key": "t1", "value": "x", "effect": "PreferNoSchedule"}]),
            ),
            vec![100, 100, 0],
        ),
        // A NoSchedule toleration does not count for PreferNoSchedule taints.
        (
            set(
                pod("p", "", ""),
                "spec.tolerations",
                json!([{"key": "t1", "value": "x", "effect": "NoSchedule"}]),
            ),
            vec![100, 50, 0],
        ),
    ];
    for (p, want) in cases {
        let mut s = snapshot(&nodes, &[]);
        let got: Vec<i64> = score_all(&fw, &mut s, &p)
            .into_iter()
            .map(|e| e.1)
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn node_affinity_filter() {
    let fw = only(Arc::new(NodeAffinity));
    let nodes = [
        node("a", "1", "1Gi", &[("zone", "z1"), ("cores", "8")]),
        node("b", "1", "1Gi", &[("zone", "z2"), ("cores", "2")]),
        node("c", "1", "1Gi", &[]),
    ];
    let req = |terms: serde_json::Value| {
        set(
            pod("p", "", ""),
            "spec.affinity",
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}),
        )
    };
    let cases = [
        (
            "none",
            pod("p", "", ""),
            vec![("a", true), ("b", true), ("c", true)],
        ),
        (
            "nodeSelector",
            set(pod("p", "", ""), "spec.nodeSelector", json!({"zone": "z2"})),
            vec![("a", false), ("b", true), ("c", false)],
        ),
        (
            "In",
            req(
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]),
            ),
            vec![("a", true), ("b", false), ("c", false)],
        ),
        (
            "NotIn matches missing label",
            req(
                json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}]),
            ),
            vec![("a", false), ("b", true), ("c", true)],
        ),
        (
            "Exists",
            req(json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}])),
            vec![("a", true), ("b", true), ("c", false)],
        ),
        (
            "DoesNotExist",
            req(json!([{"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}])),
            vec![("a", false), ("b", false), ("c", true)],
        ),
        (
            "Gt",
            req(
                json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}]),
            ),
            vec![("a", true), ("b", false), ("c", false)],
        ),
        (
            "Lt",
            req(
                json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}]),
            ),
            vec![("a", false), ("b", true), ("c", false)],
        ),
        (
            "terms are ORed",
            req(json!([
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}
            ])),
            vec![("a", true), ("b", false), ("c", true)],
        ),
        (
            "matchFields metadata.name",
            req(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]),
            ),
            vec![("a", false), ("b", true), ("c", false)],
        ),
        (
            "empty term matches nothing",
            req(json!([{}])),
            vec![("a", false), ("b", false), ("c", false)],
        ),
        (
            "selector and affinity both apply",
            set(
                req(json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}])),
                "spec.nodeSelector",
                json!({"zone": "z1"}),
            ),
            vec![("a", true), ("b", false), ("c", false)],
        ),
    ];
    for (name, p, want) in cases {
        let mut s = snapshot(&nodes, &[]);
        let r = filter_all(&fw, &mut s, &p);
        assert_eq!(passed(&r), want, "{name}");
        for (_, code, reasons) in r.iter().filter(|e| e.1 != Code::Success) {
            assert_eq!(*code, Code::UnschedulableAndUnresolvable, "{name}");
            assert_eq!(
                reasons[0],
                "node(s) didn't match Pod's node affinity/selector"
            );
        }
    }
}

#[test]
fn node_affinity_score_sums_matching_preferred_weights() {
    let fw = only(Arc::new(NodeAffinity));
    let nodes = [
        node("a", "1", "1Gi", &[("foo", "bar")]),
        node("b", "1", "1Gi", &[("foo", "bar"), ("key", "value")]),
        node("c", "1", "1Gi", &[]),
    ];
    let p = set(
        pod("p", "", ""),
        "spec.affinity",
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 2, "preference": {"matchExpressions": [{"key": "foo", "operator": "In", "values": ["bar"]}]}},
            {"weight": 4, "preference": {"matchExpressions": [{"key": "key", "operator": "In", "values": ["value"]}]}}
        ]}}),
    );
    let mut s = snapshot(&nodes, &[]);
    // Raw 2, 6, 0 → normalized to max: 2*100/6 = 33, 100, 0.
    let got: Vec<i64> = score_all(&fw, &mut s, &p)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![33, 100, 0]);
}

#[test]
fn node_ports_filter() {
    let fw = only(Arc::new(NodePorts));
    let port = |proto: &str, ip: &str, port: i32| {
        json!({
            "metadata": {"name": "hp", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [
                {"containerPort": 80, "hostPort": port, "protocol": proto, "hostIP": ip}
            ]}]}
        })
    };
    let nodes = [node("a", "1", "1Gi", &[]), node("b", "1", "1Gi", &[])];
    let mut used = port("TCP", "", 8080);
    used["metadata"]["name"] = json!("used");
    let mut used_ip = port("TCP", "10.0.0.1", 9090);
    used_ip["metadata"]["name"] = json!("used-ip");
    let assigned = [("a", used), ("a", used_ip)];
    let cases = [
        (
            "same port and protocol",
            port("TCP", "", 8080),
            vec![("a", false), ("b", true)],
        ),
        (
            "other protocol",
            port("UDP", "", 8080),
            vec![("a", true), ("b", true)],
        ),
        (
            "other port",
            port("TCP", "", 8081),
            vec![("a", true), ("b", true)],
        ),
        (
            "specific ip vs wildcard in use",
            port("TCP", "10.0.0.2", 8080),
            vec![("a", false), ("b", true)],
        ),
        (
            "wildcard vs specific ip in use",
            port("TCP", "0.0.0.0", 9090),
            vec![("a", false), ("b", true)],
        ),
        (
            "different specific ips",
            port("TCP", "10.0.0.2", 9090),
            vec![("a", true), ("b", true)],
        ),
    ];
    for (name, p, want) in cases {
        let mut s = snapshot(&nodes, &assigned);
        let r = filter_all(&fw, &mut s, &p);
        assert_eq!(passed(&r), want, "{name}");
        if !r[0].2.is_empty() {
            assert_eq!(r[0].1, Code::Unschedulable);
            assert_eq!(
                r[0].2[0],
                "node(s) didn't have free ports for the requested pod ports"
            );
        }
    }
}

type FitCase = (
    &'static str,
    serde_json::Value,
    Vec<(&'static str, bool)>,
    Vec<&'static str>,
);

#[test]
fn node_resources_fit_filter() {
    let fw = only(Arc::new(NodeResourcesFit::default()));
    let mut nodes = vec![node("a", "1", "1Gi", &[]), node("b", "4", "4Gi", &[])];
    nodes[1]["status"]["allocatable"]["example.com/gpu"] = json!("1");
    let mut full = node("full", "8", "8Gi", &[]);
    full["status"]["allocatable"]["pods"] = json!("1");
    nodes.push(full);
    let assigned = [
        ("a", pod("used", "500m", "512Mi")),
        ("full", pod("only", "", "")),
    ];
    let gpu = {
        let mut p = pod("p", "100m", "");
        p["spec"]["containers"][0]["resources"]["requests"]["example.com/gpu"] = json!("1");
        p
    };
    let with_init = |init_cpu: &str, sidecar: bool| {
        let mut p = pod("p", "100m", "");
        let mut c =
            json!({"name": "init", "image": "i", "resources": {"requests": {"cpu": init_cpu}}});
        if sidecar {
            c["restartPolicy"] = json!("Always");
        }
        p["spec"]["initContainers"] = json!([c]);
        p
    };
    let cases: Vec<FitCase> = vec![
        (
            "fits everywhere",
            pod("p", "500m", "512Mi"),
            vec![("a", true), ("b", true), ("full", false)],
            vec!["Too many pods"],
        ),
        (
            "cpu short on a",
            pod("p", "600m", "1Mi"),
            vec![("a", false), ("b", true), ("full", false)],
            vec!["Insufficient cpu"],
        ),
        (
            "both short on a",
            pod("p", "600m", "600Mi"),
            vec![("a", false), ("b", true), ("full", false)],
            vec!["Insufficient cpu", "Insufficient memory"],
        ),
        (
            "extended resource",
            gpu,
            vec![("a", false), ("b", true), ("full", false)],
            vec!["Insufficient example.com/gpu"],
        ),
        // Init containers run before the app: the max of the two counts.
        (
            "init container larger",
            with_init("600m", false),
            vec![("a", false), ("b", true), ("full", false)],
            vec!["Insufficient cpu"],
        ),
        (
            "init container smaller",
            with_init("200m", false),
            vec![("a", true), ("b", true), ("full", false)],
            vec![],
        ),
        // A sidecar (restartPolicy Always) runs alongside: its request adds.
        (
            "sidecar adds",
            with_init("450m", true),
            vec![("a", false), ("b", true), ("full", false)],
            vec!["Insufficient cpu"],
        ),
        (
            "overhead adds",
            set(
                pod("p", "400m", ""),
                "spec.overhead",
                json!({"cpu": "200m"}),
            ),
            vec![("a", false), ("b", true), ("full", false)],
            vec!["Insufficient cpu"],
        ),
    ];
    for (name, p, want, reasons_a) in cases {
        let mut s = snapshot(&nodes, &assigned);
        let r = filter_all(&fw, &mut s, &p);
        assert_eq!(passed(&r), want, "{name}");
        if !reasons_a.is_empty() && name != "fits everywhere" {
            assert_eq!(r[0].2, reasons_a, "{name}");
            assert_eq!(r[0].1, Code::Unschedulable);
        }
        assert_eq!(r[2].2[0], "Too many pods", "{name}");
    }
}

#[test]
fn node_resources_fit_scores_least_and_most_allocated() {
    // Upstream's "differently sized nodes" case: pod 3000m / 5000 bytes on
    // nodes of 4000m and 6000m with 10000 bytes.
    let nodes = [node("a", "4", "10000", &[]), node("b", "6", "10000", &[])];
    let p = {
        let mut p = pod("p", "1", "2000");
        p["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "d", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "3000"}}}));
        p
    };
    let cases = [
        (ScoringStrategy::LeastAllocated, vec![37, 50]),
        (ScoringStrategy::MostAllocated, vec![62, 50]),
    ];
    for (strategy, want) in cases {
        let fw = only(Arc::new(NodeResourcesFit::new(strategy)));
        let mut s = snapshot(&nodes, &[]);
        let got: Vec<i64> = score_all(&fw, &mut s, &p)
            .into_iter()
            .map(|e| e.1)
            .collect();
        assert_eq!(got, want, "{strategy:?}");
    }
    // Missing requests count as 100m / 200MiB when scoring.
    let fw = only(Arc::new(NodeResourcesFit::default()));
    let mut s = snapshot(&[node("a", "1", "1Gi", &[])], &[]);
    let got = score_all(&fw, &mut s, &pod("p", "", ""));
    // cpu (1000-100)*100/1000 = 90; mem (1024-200)*100/1024 = 80 → 85.
    assert_eq!(got[0].1, 85);
}

#[test]
fn balanced_allocation_score() {
    let fw = only(Arc::new(NodeResourcesBalancedAllocation));
    let nodes = [node("a", "4", "10000", &[]), node("b", "6", "10000", &[])];
    let mut p = pod("p", "3", "5000");
    p["metadata"]["name"] = json!("p");
    let mut s = snapshot(&nodes, &[]);
    // a: cpu 0.75, mem 0.5 → std 0.125 → 87; b: 0.5, 0.5 → 100.
    let got: Vec<i64> = score_all(&fw, &mut s, &p)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![87, 100]);
    // Best-effort pods are skipped (score 0 everywhere).
    let got: Vec<i64> = score_all(&fw, &mut s, &pod("be", "", ""))
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![0, 0]);
}

#[test]
fn image_locality_score() {
    let fw = only(Arc::new(ImageLocality));
    let img = |names: &[&str], mb: i64| json!({"names": names, "sizeBytes": mb * 1024 * 1024});
    let nodes = [
        set(
            node("a", "1", "1Gi", &[]),
            "status.images",
            json!([img(&["reg/app:v1"], 500), img(&["busybox"], 2)]),
        ),
        node("b", "1", "1Gi", &[]),
    ];
    let mut p = pod("p", "", "");
    p["spec"]["containers"][0]["image"] = json!("reg/app:v1");
    let mut s = snapshot(&nodes, &[]);
    // 500MB × spread 1/2 = 250MB → 100·(250−23)/(1000−23) = 23.
    let got: Vec<i64> = score_all(&fw, &mut s, &p)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![23, 0]);
    // On both nodes, spread is 1: 100·(500−23)/977 = 48 each.
    let nodes2 = [
        nodes[0].clone(),
        set(
            node("b", "1", "1Gi", &[]),
            "status.images",
            json!([img(&["reg/app:v1"], 500)]),
        ),
    ];
    let mut s = snapshot(&nodes2, &[]);
    let got: Vec<i64> = score_all(&fw, &mut s, &p)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![48, 48]);
    // Untagged names are normalized to :latest (busybox is below the 23MB floor).
    assert_eq!(normalize_image("busybox"), "busybox:latest");
    assert_eq!(normalize_image("reg:5000/app"), "reg:5000/app:latest");
    assert_eq!(normalize_image("app@sha256:abc"), "app@sha256:abc");
}

fn spread(p: serde_json::Value, c: serde_json::Value) -> serde_json::Value {
    set(p, "spec.topologySpreadConstraints", c)
}

#[test]
fn pod_topology_spread_filter() {
    let fw = only(Arc::new(PodTopologySpread));
    let nodes = [
        node("a1", "4", "4Gi", &[("zone", "a")]),
        node("a2", "4", "4Gi", &[("zone", "a")]),
        node("b1", "4", "4Gi", &[("zone", "b")]),
        node("nozone", "4", "4Gi", &[]),
    ];
    let web = |n: &str| labeled(pod(n, "", ""), &[("app", "web")]);
    let c = |skew: i32, min_domains: Option<i32>| {
        let mut c = json!({"maxSkew": skew, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}});
        if let Some(m) = min_domains {
            c["minDomains"] = json!(m);
        }
        json!([c])
    };
    let two_in_a = [("a1", web("w1")), ("a2", web("w2"))];
    let cases = [
        (
            "skew 1: zone a has 2, b has 0",
            c(1, None),
            &two_in_a[..],
            vec![
                ("a1", false),
                ("a2", false),
                ("b1", true),
                ("nozone", false),
            ],
        ),
        (
            "skew 3 allows a",
            c(3, None),
            &two_in_a[..],
            vec![("a1", true), ("a2", true), ("b1", true), ("nozone", false)],
        ),
        (
            "balanced: both ok",
            c(1, None),
            &[("a1", web("w1")), ("b1", web("w2"))][..],
            vec![("a1", true), ("a2", true), ("b1", true), ("nozone", false)],
        ),
        // minDomains 3 with only 2 domains: the global minimum is 0.
        (
            "minDomains",
            c(1, Some(3)),
            &[("a1", web("w1")), ("b1", web("w2"))][..],
            vec![
                ("a1", false),
                ("a2", false),
                ("b1", false),
                ("nozone", false),
            ],
        ),
    ];
    for (name, cons, assigned, want) in cases {
        let mut s = snapshot(&nodes, assigned);
        let r = filter_all(&fw, &mut s, &spread(web("new"), cons));
        assert_eq!(passed(&r), want, "{name}");
        let nozone = &r[3];
        assert_eq!(nozone.1, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            nozone.2[0],
            "node(s) didn't match pod topology spread constraints (missing required label)"
        );
    }
    // Pods in other namespaces and non-matching pods do not count.
    let mut other = web("o");
    other["metadata"]["namespace"] = json!("other");
    let mut s = snapshot(&nodes, &[("a1", other), ("a2", pod("plain", "", ""))]);
    let r = filter_all(&fw, &mut s, &spread(web("new"), c(1, None)));
    assert_eq!(passed(&r)[..3], [("a1", true), ("a2", true), ("b1", true)]);
    // nodeAffinityPolicy Honor (default): nodes the pod cannot use don't count
    // as domains, so zone b (excluded by nodeSelector) is not the minimum.
    let p = set(
        spread(web("new"), c(1, None)),
        "spec.nodeSelector",
        json!({"zone": "a"}),
    );
    let mut s = snapshot(&nodes, &[("a1", web("w1"))]);
    let r = filter_all(&fw, &mut s, &p);
    assert_eq!(passed(&r)[..2], [("a1", true), ("a2", true)]);
}

#[test]
fn pod_topology_spread_score_prefers_emptier_domains() {
    let fw = only(Arc::new(PodTopologySpread));
    let nodes = [
        node("n1", "4", "4Gi", &[]),
        node("n2", "4", "4Gi", &[]),
        node("n3", "4", "4Gi", &[]),
    ];
    let web = |n: &str| labeled(pod(n, "", ""), &[("app", "web")]);
    let assigned = [("n1", web("w1")), ("n1", web("w2")), ("n3", web("w3"))];
    let p = spread(
        web("new"),
        json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "web"}}}]),
    );
    let mut s = snapshot(&nodes, &assigned);
    // Raw: count × ln(3+2): n1 2×1.609 → 3, n2 0, n3 1.609 → 2.
    // Normalized 100·(max+min−s)/max: n1 0, n2 100, n3 33.
    let got: Vec<i64> = score_all(&fw, &mut s, &p)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![0, 100, 33]);
}

fn affinity(p: serde_json::Value, a: serde_json::Value) -> serde_json::Value {
    set(p, "spec.affinity", a)
}

fn term(key: &str, app: &str) -> serde_json::Value {
    json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
}

type AffinityCase = (
    &'static str,
    Vec<(&'static str, serde_json::Value)>,
    serde_json::Value,
    Vec<(&'static str, bool)>,
    Option<&'static str>,
);

#[test]
fn inter_pod_affinity_filter() {
    let fw = only(Arc::new(InterPodAffinity::default()));
    let nodes = [
        node("a1", "4", "4Gi", &[("zone", "a")]),
        node("a2", "4", "4Gi", &[("zone", "a")]),
        node("b1", "4", "4Gi", &[("zone", "b")]),
        node("nozone", "4", "4Gi", &[]),
    ];
    let app = |n: &str, a: &str| labeled(pod(n, "", ""), &[("app", a)]);
    let req_aff =
        |t| json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}});
    let req_anti =
        |t| json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}});
    let hostname = "kubernetes.io/hostname";
    let cases: Vec<AffinityCase> = vec![
        (
            "anti-affinity on hostname avoids the node with a web pod",
            vec![("a1", app("w", "web"))],
            affinity(app("new", "web"), req_anti(term(hostname, "web"))),
            vec![("a1", false), ("a2", true), ("b1", true), ("nozone", true)],
            Some("node(s) didn't match pod anti-affinity rules"),
        ),
        (
            "anti-affinity on zone avoids the whole zone",
            vec![("a1", app("w", "web"))],
            affinity(app("new", "web"), req_anti(term("zone", "web"))),
            vec![("a1", false), ("a2", false), ("b1", true), ("nozone", true)],
            Some("node(s) didn't match pod anti-affinity rules"),
        ),
        (
            "existing pod's anti-affinity repels the incoming pod",
            vec![(
                "b1",
                affinity(app("guard", "guard"), req_anti(term("zone", "db"))),
            )],
            app("new", "db"),
            vec![("a1", true), ("a2", true), ("b1", false), ("nozone", true)],
            Some("node(s) didn't satisfy existing pods anti-affinity rules"),
        ),
        (
            "affinity to a zone with a cache pod",
            vec![("a2", app("c", "cache"))],
            affinity(app("new", "web"), req_aff(term("zone", "cache"))),
            vec![("a1", true), ("a2", true), ("b1", false), ("nozone", false)],
            Some("node(s) didn't match pod affinity rules"),
        ),
        (
            "first pod of a self-affine group may go anywhere with the key",
            vec![],
            affinity(app("new", "web"), req_aff(term("zone", "web"))),
            vec![("a1", true), ("a2", true), ("b1", true), ("nozone", false)],
            Some("node(s) didn't match pod affinity rules"),
        ),
        (
            "affinity with no matching pod and no self match fails",
            vec![],
            affinity(app("new", "web"), req_aff(term("zone", "cache"))),
            vec![
                ("a1", false),
                ("a2", false),
                ("b1", false),
                ("nozone", false),
            ],
            Some("node(s) didn't match pod affinity rules"),
        ),
    ];
    for (name, assigned, p, want, reason) in cases {
        let mut s = snapshot(&nodes, &assigned);
        let r = filter_all(&fw, &mut s, &p);
        assert_eq!(passed(&r), want, "{name}");
        if let Some(reason) = reason {
            for (_, code, reasons) in r.iter().filter(|e| e.1 != Code::Success) {
                assert_eq!(reasons[0], reason, "{name}");
                let want_code = if reason.contains("match pod affinity") {
                    Code::UnschedulableAndUnresolvable
                } else {
                    Code::Unschedulable
                };
                assert_eq!(*code, want_code, "{name}");
            }
        }
    }
    // Terms select in the pod's own namespace unless told otherwise.
    let mut other = app("w", "web");
    other["metadata"]["namespace"] = json!("other");
    let mut s = snapshot(&nodes, &[("a1", other.clone())]);
    let p = affinity(app("new", "web"), req_anti(term(hostname, "web")));
    assert!(passed(&filter_all(&fw, &mut s, &p)).iter().all(|e| e.1));
    let mut t = term(hostname, "web");
    t["namespaces"] = json!(["other"]);
    let p = affinity(app("new", "web"), req_anti(t));
    assert_eq!(passed(&filter_all(&fw, &mut s, &p))[0], ("a1", false));
    // An empty namespaceSelector selects every namespace.
    let mut t = term(hostname, "web");
    t["namespaceSelector"] = json!({});
    let p = affinity(app("new", "web"), req_anti(t));
    assert_eq!(passed(&filter_all(&fw, &mut s, &p))[0], ("a1", false));
}

#[test]
fn inter_pod_affinity_score() {
    let fw = only(Arc::new(InterPodAffinity::default()));
    let nodes = [
        node("a1", "4", "4Gi", &[("zone", "a")]),
        node("b1", "4", "4Gi", &[("zone", "b")]),
        node("c1", "4", "4Gi", &[("zone", "c")]),
    ];
    let app = |n: &str, a: &str| labeled(pod(n, "", ""), &[("app", a)]);
    let assigned = [("a1", app("w", "web")), ("c1", app("d", "db"))];
    let p = affinity(
        app("new", "x"),
        json!({
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": term("zone", "web")}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": term("zone", "db")}]}
        }),
    );
    let mut s = snapshot(&nodes, &assigned);
    // Raw: a +5, b 0, c −5 → min-max normalized: 100, 50, 0.
    let got: Vec<i64> = score_all(&fw, &mut s, &p)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![100, 50, 0]);
    // Existing pods' required affinity attracts matching pods (hardPodAffinityWeight).
    let attracted = [(
        "b1",
        affinity(
            app("fan", "fan"),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "star")]}}),
        ),
    )];
    let mut s = snapshot(&nodes, &attracted);
    let got: Vec<i64> = score_all(&fw, &mut s, &app("new", "star"))
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![0, 100, 0]);
}

#[test]
fn default_profile_has_upstream_plugins_and_weights() {
    let fw = Framework::with_defaults();
    assert_eq!(
        fw.plugin_names(),
        vec![
            "NodeUnschedulable",
            "NodeName",
            "TaintToleration",
            "NodeAffinity",
            "NodePorts",
            "NodeResourcesFit",
            "VolumeBinding",
            "PodTopologySpread",
            "InterPodAffinity",
            "NodeResourcesBalancedAllocation",
            "ImageLocality",
            "DefaultPreemption",
        ]
    );
    // Weights show in the combined score: a node with one untolerated
    // PreferNoSchedule taint loses 3×100 on TaintToleration alone.
    let nodes = [
        node("clean", "4", "8Gi", &[]),
        set(
            node("tainted", "4", "8Gi", &[]),
            "spec.taints",
            json!([{"key": "k", "effect": "PreferNoSchedule"}]),
        ),
    ];
    let mut s = snapshot(&nodes, &[]);
    let got = score_all(&fw, &mut s, &pod("p", "100m", "100Mi"));
    assert_eq!(got[0].1 - got[1].1, 300);
}
