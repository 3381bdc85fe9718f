//! NetworkPolicies (networking.k8s.io/v1), as upstream's `pkg/registry/networking/networkpolicy`:
//! `policyTypes` defaulted (`Ingress` always, `Egress` when egress rules are given), port
//! protocols defaulted to TCP, and the spec validated (selectors, peers, ipBlocks whose
//! `except` entries are strict subsets of `cidr`, ports and `endPort` ranges). The columns
//! `kubectl get networkpolicy` prints: NAME, POD-SELECTOR, AGE.

use serde_json::{json, Value};

use super::Strategy;
use crate::error::Cause;
use crate::resources::{res, ResourceInfo, NONE};
use crate::table::{age, col};
use crate::validate;

/// The served `NetworkPolicy` resource.
pub(crate) const RESOURCE: ResourceInfo = res!(
    k8s_openapi::api::networking::v1::NetworkPolicy,
    "networkpolicies",
    true,
    &["netpol"],
    NONE,
    &[],
    false,
    &NetworkPolicyStrategy
);

/// The `NetworkPolicy` strategy.
pub(crate) struct NetworkPolicyStrategy;

/// Upstream's `IsValidCIDR` message.
const MSG_CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// The direction lists of a spec and their `from` / `to` peer field.
const DIRECTIONS: [(&str, &str); 2] = [("ingress", "from"), ("egress", "to")];

impl Strategy for NetworkPolicyStrategy {
    fn kind(&self) -> &'static str {
        "NetworkPolicy"
    }

    fn defaults(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        for (dir, _) in DIRECTIONS {
            for rule in spec
                .get_mut(dir)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for port in rule
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(p) = port.as_object_mut() {
                        if p.get("protocol").is_none_or(Value::is_null) {
                            p.insert("protocol".into(), json!("TCP"));
                        }
                    }
                }
            }
        }
        let none = spec
            .get("policyTypes")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if none {
            let egress = spec
                .get("egress")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty());
            let types = if egress {
                json!(["Ingress", "Egress"])
            } else {
                json!(["Ingress"])
            };
            spec.insert("policyTypes".into(), types);
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let spec = &obj["spec"];
        validate::label_selector(&spec["podSelector"], "spec.podSelector", causes);
        for (dir, peers) in DIRECTIONS {
            for (i, rule) in spec[dir].as_array().into_iter().flatten().enumerate() {
                let rp = format!("spec.{dir}[{i}]");
                for (j, port) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                    policy_port(port, &format!("{rp}.ports[{j}]"), causes);
                }
                for (j, peer) in rule[peers].as_array().into_iter().flatten().enumerate() {
                    policy_peer(peer, &format!("{rp}.{peers}[{j}]"), causes);
                }
            }
        }
        let types = spec["policyTypes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if types.len() > 2 {
            causes.push(Cause::invalid(
                "spec.policyTypes",
                &spec["policyTypes"],
                "may not specify more than two policyTypes",
            ));
            return;
        }
        for (i, t) in types.iter().enumerate() {
            validate::one_of(
                t,
                &format!("spec.policyTypes[{i}]"),
                &["Ingress", "Egress"],
                causes,
            );
        }
    }

    fn table_columns(&self) -> Vec<Value> {
        let s = "string";
        vec![
            col("Name", s, 0),
            col("Pod-Selector", s, 0),
            col("Age", s, 0),
        ]
    }

    fn table_cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(o["metadata"]["name"]),
            json!(format_selector(&o["spec"]["podSelector"])),
            json!(age(&o["metadata"]["creationTimestamp"])),
        ]
    }
}

/// Upstream's `ValidateNetworkPolicyPort`.
fn policy_port(port: &Value, p: &str, causes: &mut Vec<Cause>) {
    if !port["protocol"].is_null() {
        validate::one_of(
            &port["protocol"],
            &format!("{p}.protocol"),
            &["TCP", "UDP", "SCTP"],
            causes,
        );
    }
    let end = &port["endPort"];
    match &port["port"] {
        Value::Null => {
            if !end.is_null() {
                causes.push(Cause::invalid(
                    format!("{p}.endPort"),
                    end,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
        Value::String(s) => {
            if !end.is_null() {
                causes.push(Cause::invalid(
                    format!("{p}.endPort"),
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for why in validate::port_name_errors(s) {
                causes.push(Cause::invalid(format!("{p}.port"), &port["port"], why));
            }
        }
        n => {
            validate::port_number(n, &format!("{p}.port"), causes);
            if !end.is_null() {
                if end.as_i64() < n.as_i64() {
                    causes.push(Cause::invalid(
                        format!("{p}.endPort"),
                        n,
                        "must be greater than or equal to `port`",
                    ));
                }
                validate::port_number(end, &format!("{p}.endPort"), causes);
            }
        }
    }
}

/// Upstream's `ValidateNetworkPolicyPeer`.
fn policy_peer(peer: &Value, p: &str, causes: &mut Vec<Cause>) {
    let mut n = 0;
    for sel in ["podSelector", "namespaceSelector"] {
        if !peer[sel].is_null() {
            n += 1;
            validate::label_selector(&peer[sel], &format!("{p}.{sel}"), causes);
        }
    }
    let block = &peer["ipBlock"];
    if !block.is_null() {
        n += 1;
        ip_block(block, &format!("{p}.ipBlock"), causes);
    }
    if n == 0 {
        causes.push(Cause::required_because(p, "must specify a peer"));
    } else if n > 1 && !block.is_null() {
        causes.push(Cause::forbidden(
            p,
            "may not specify both ipBlock and another peer",
        ));
    }
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR into (address bits, width, prefix length).
fn parse_cidr(s: &str) -> Option<(u128, u32, u32)> {
    let (addr, len) = s.split_once('/')?;
    let len: u32 = len.parse().ok()?;
    match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) if len <= 32 => Some((u32::from(a).into(), 32, len)),
        std::net::IpAddr::V6(a) if len <= 128 => Some((u128::from(a), 128, len)),
        _ => None,
    }
}

/// The network address of a parsed CIDR.
fn network((addr, width, len): (u128, u32, u32)) -> u128 {
    if len == 0 {
        return 0;
    }
    let host_bits = width - len;
    if host_bits >= 128 {
        0
    } else {
        addr >> host_bits << host_bits
    }
}

/// Upstream's `ValidateIPBlock`.
fn ip_block(block: &Value, p: &str, causes: &mut Vec<Cause>) {
    let cidr_v = &block["cidr"];
    let Some(cidr) = cidr_v.as_str().filter(|c| !c.is_empty()) else {
        causes.push(Cause::required(format!("{p}.cidr")));
        return;
    };
    let Some(outer) = parse_cidr(cidr) else {
        causes.push(Cause::invalid(format!("{p}.cidr"), cidr_v, MSG_CIDR));
        return;
    };
    for (i, e) in block["except"].as_array().into_iter().flatten().enumerate() {
        let ep = format!("{p}.except[{i}]");
        let Some(inner) = e.as_str().and_then(parse_cidr) else {
            causes.push(Cause::invalid(ep, e, MSG_CIDR));
            continue;
        };
        let contained = inner.1 == outer.1
            && network((inner.0, inner.1, outer.2)) == network(outer)
            && outer.2 < inner.2;
        if !contained {
            causes.push(Cause::invalid(ep, e, "must be a strict subset of `cidr`"));
        }
    }
}

/// Upstream's `FormatLabelSelector`: the selector's requirements, or `<none>` for a
/// selector that selects everything.
fn format_selector(sel: &Value) -> String {
    match kcore_k8s::label_selector_string(sel) {
        s if s.is_empty() => "<none>".into(),
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes_of(spec: Value) -> Vec<(String, String)> {
        let mut obj = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": spec});
        NetworkPolicyStrategy.defaults(&mut obj);
        let mut causes = Vec::new();
        NetworkPolicyStrategy.validate(&obj, &mut causes);
        causes.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn defaults_policy_types_and_protocols_as_upstream() {
        let mut o = json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}});
        NetworkPolicyStrategy.defaults(&mut o);
        assert_eq!(o["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(o["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
        let mut o = json!({"spec": {"podSelector": {}, "egress": [{}]}});
        NetworkPolicyStrategy.defaults(&mut o);
        assert_eq!(o["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        // explicit types stay
        let mut o = json!({"spec": {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}});
        NetworkPolicyStrategy.defaults(&mut o);
        assert_eq!(o["spec"]["policyTypes"], json!(["Egress"]));
    }

    #[test]
    fn validation_table() {
        let ok = |spec: Value| {
            let c = causes_of(spec.clone());
            assert!(c.is_empty(), "{spec}: {c:?}");
        };
        ok(json!({"podSelector": {}}));
        ok(
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"a": "b"}}, "namespaceSelector": {}},
                     {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
            "ports": [{"port": 8000, "endPort": 9000}, {"port": "http"}, {"protocol": "UDP"}]}]}),
        );
        ok(
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8", "except": ["fd00:1::/32"]}}]}]}),
        );
        let cases: &[(Value, &str, &str)] = &[
            (
                json!({"podSelector": {}, "ingress": [{"from": [{}]}]}),
                "spec.ingress[0].from[0]",
                "Required value: must specify a peer",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
                "spec.ingress[0].from[0]",
                "Forbidden: may not specify both ipBlock and another peer",
            ),
            (
                json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]}),
                "spec.egress[0].to[0].ipBlock.except[0]",
                "must be a strict subset of `cidr`",
            ),
            (
                json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]}),
                "spec.egress[0].to[0].ipBlock.except[0]",
                "must be a strict subset of `cidr`",
            ),
            (
                json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]}),
                "spec.egress[0].to[0].ipBlock.cidr",
                "must be a valid CIDR value",
            ),
            (
                json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {}}]}]}),
                "spec.egress[0].to[0].ipBlock.cidr",
                "Required value",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "must be greater than or equal to `port`",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "may not be specified when `port` is non-numeric",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "may not be specified when `port` is not specified",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}),
                "spec.ingress[0].ports[0].port",
                "must be between 1 and 65535",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
                "spec.ingress[0].ports[0].protocol",
                "Unsupported value: \"ICMP\"",
            ),
            (
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]}),
                "spec.policyTypes[1]",
                "Unsupported value",
            ),
            (
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}),
                "spec.policyTypes",
                "may not specify more than two policyTypes",
            ),
            (
                json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
                "spec.podSelector.matchExpressions[0].values",
                "Required value",
            ),
        ];
        for (spec, field, msg) in cases {
            let c = causes_of(spec.clone());
            assert!(
                c.iter().any(|(f, m)| f == field && m.contains(msg)),
                "{spec}: want {field}: {msg}, got {c:?}"
            );
        }
    }

    #[test]
    fn pod_selector_column_as_kubectl_prints_it() {
        assert_eq!(format_selector(&json!({})), "<none>");
        assert_eq!(
            format_selector(&json!({"matchLabels": {"role": "db", "app": "x"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]},
                                     {"key": "gone", "operator": "DoesNotExist"}]})),
            "app=x,env in (a,b),!gone,role=db"
        );
        let o = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        let cells = NetworkPolicyStrategy.table_cells(&o);
        assert_eq!(cells[0], "deny");
        assert_eq!(cells[1], "<none>");
        assert_eq!(NetworkPolicyStrategy.table_columns().len(), 3);
    }
}
