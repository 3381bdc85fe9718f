//! NetworkPolicy enforcement in nftables: a [`PolicySet`] (policies already resolved to
//! addresses: selected pods, peer address ranges, ports) is rendered into one table
//! (`ip kcore-policy` by default) and applied by a [`PolicyFirewall`].
//!
//! The layout keeps the rule count proportional to the policies and puts every address
//! in a set, so pod churn only changes set elements:
//!
//! * `egress` and `ingress` — base chains on the `forward` hook (priorities -1 and 0).
//!   Each accepts `ct state established,related` first (replies and connections already
//!   allowed keep flowing), accepts what is not from (to) an isolated pod (sets
//!   `egress-isolated` / `ingress-isolated`), then jumps, for each policy `i` of that
//!   direction, to `pol-<i>-eg` / `pol-<i>-in` when the source (destination) is in
//!   `pol-<i>-pods`; what no policy accepted is dropped. The two chains are separate
//!   base chains, so a connection needs both the sender's egress and the receiver's
//!   ingress to allow it, while several policies of one direction combine as a union.
//! * `pol-<i>-in` / `pol-<i>-eg` — one rule per (rule, port entry): the peer as an
//!   interval set of addresses (`pol-<i>-in-<r>-peers`: pod addresses and ipBlocks, with
//!   their `except` ranges cut out), the port as a protocol, a port or a port range, or,
//!   for named ports, a set of `daddr . protocol . port` resolved from the pods' container
//!   ports (`pol-<i>-in-<r>-named`), then `accept`.
//!
//! Filtering on `forward` sees traffic after Service DNAT (the pod's real address) and,
//! with `bridge-nf-call-iptables` on in the node's namespace, traffic between pods on the
//! same bridge; traffic between the node and its own pods (probes) never crosses
//! `forward` and stays allowed, as upstream.
//!
//! [`PolicyFirewall::apply`] replaces the table in one transaction when the rules change
//! (a policy added, removed or edited) and otherwise sends only the set elements that
//! changed, so a pod coming or going costs the same whatever the number of policies.
//!
//! # Example
//!
//! ```
//! use std::net::Ipv4Addr;
//! use kcore_netbridge::{AddrRange, CompiledPolicy, PolicyFirewall, PolicyRule, PolicySet, PortMatch, Protocol};
//! # use kcore_netbridge::{NftBatch, NftRunner, Error};
//! # struct Dry;
//! # impl NftRunner for Dry { fn apply(&self, _: &NftBatch) -> Result<(), Error> { Ok(()) } }
//!
//! // pods 10.244.0.5 only accept TCP 80 from 10.244.0.7
//! let set = PolicySet {
//!     policies: vec![CompiledPolicy {
//!         name: "default/web".into(),
//!         pods: [Ipv4Addr::new(10, 244, 0, 5)].into(),
//!         ingress: Some(vec![PolicyRule {
//!             peers: Some(vec![AddrRange::single(Ipv4Addr::new(10, 244, 0, 7))]),
//!             ports: Some(vec![PortMatch::Ports { protocol: Protocol::Tcp, first: 80, last: 80 }]),
//!         }]),
//!         egress: None,
//!     }],
//! };
//! let mut fw = PolicyFirewall::new("kcore-policy", Dry);
//! let stats = fw.apply(&set)?;
//! assert!(stats.replaced);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::nft::{NftBatch, NftRunner};
use crate::service::Protocol;
use crate::{Error, Ipv4Net};

/// An inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    /// The first address.
    pub first: Ipv4Addr,
    /// The last address (inclusive).
    pub last: Ipv4Addr,
}

impl AddrRange {
    /// One address.
    pub fn single(ip: Ipv4Addr) -> Self {
        Self {
            first: ip,
            last: ip,
        }
    }

    /// Every address of a prefix.
    pub fn of_net(net: Ipv4Net) -> Self {
        Self {
            first: net.network(),
            last: net.broadcast(),
        }
    }
}

/// Sorts and merges overlapping or adjacent ranges into the fewest disjoint ones (what an
/// nftables interval set accepts).
pub fn merge_ranges(mut ranges: Vec<AddrRange>) -> Vec<AddrRange> {
    ranges.sort();
    let mut out: Vec<AddrRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u64::from(u32::from(r.first)) <= u64::from(u32::from(last.last)) + 1 => {
                if r.last > last.last {
                    last.last = r.last;
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// The addresses of `cidr` outside every `except` prefix, as disjoint ranges (an
/// ipBlock). Excepts outside `cidr` cut nothing.
pub fn cidr_except(cidr: Ipv4Net, except: &[Ipv4Net]) -> Vec<AddrRange> {
    let mut holes = merge_ranges(except.iter().map(|e| AddrRange::of_net(*e)).collect());
    holes.retain(|h| h.last >= cidr.network() && h.first <= cidr.broadcast());
    let mut out = Vec::new();
    let mut next = u64::from(u32::from(cidr.network()));
    let end = u64::from(u32::from(cidr.broadcast()));
    for h in holes {
        let (hf, hl) = (u64::from(u32::from(h.first)), u64::from(u32::from(h.last)));
        if hf > next {
            out.push(range64(next, hf - 1));
        }
        next = next.max(hl + 1);
    }
    if next <= end {
        out.push(range64(next, end));
    }
    out
}

fn range64(a: u64, b: u64) -> AddrRange {
    // both ends come from 32-bit addresses: the conversions cannot fail
    let ip = |v: u64| Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX));
    AddrRange {
        first: ip(a),
        last: ip(b),
    }
}

/// What a rule's port entry lets through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Any port of a protocol (a port entry without `port`).
    Protocol(Protocol),
    /// A port or an inclusive range (`port` .. `endPort`).
    Ports {
        /// The protocol.
        protocol: Protocol,
        /// The first port.
        first: u16,
        /// The last port (inclusive; equal to `first` for one port).
        last: u16,
    },
    /// A named port, resolved on each destination pod: `(pod address, protocol, port)`.
    /// Empty when no pod has a container port of that name (nothing matches).
    Named(BTreeSet<(Ipv4Addr, Protocol, u16)>),
}

/// One ingress or egress rule of a policy, resolved to addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// The peers' addresses (disjoint, merged); `None` for any peer (no `from` / `to`).
    pub peers: Option<Vec<AddrRange>>,
    /// The ports; `None` for any port (no `ports`).
    pub ports: Option<Vec<PortMatch>>,
}

/// A NetworkPolicy resolved to addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// `namespace/name`, for diagnostics.
    pub name: String,
    /// The addresses of the pods the policy selects.
    pub pods: BTreeSet<Ipv4Addr>,
    /// The ingress rules when the policy's types include `Ingress` (an empty list
    /// isolates the pods for ingress and allows nothing).
    pub ingress: Option<Vec<PolicyRule>>,
    /// The egress rules when the policy's types include `Egress`.
    pub egress: Option<Vec<PolicyRule>>,
}

/// Every policy of the cluster, resolved; the input of [`PolicyFirewall::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// The policies, in a stable order (by name).
    pub policies: Vec<CompiledPolicy>,
}

/// What [`PolicyFirewall::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyStats {
    /// Whether the table was replaced (the rules changed) rather than updated in place.
    pub replaced: bool,
    /// Set elements added or removed by an in-place update.
    pub elements: usize,
    /// nftables commands in the transaction (0 when nothing changed).
    pub commands: usize,
}

/// A named set of the rendered table.
#[derive(Debug, Clone, PartialEq)]
struct SetDef {
    ty: Value,
    interval: bool,
    /// Elements by their JSON text (a stable, ordered key).
    elems: BTreeMap<String, Value>,
}

/// A chain of the rendered table: its declaration and its rules.
#[derive(Debug, Clone, PartialEq)]
struct ChainDef {
    decl: Value,
    rules: Vec<Value>,
}

/// The table a [`PolicySet`] renders to.
#[derive(Debug, Clone, PartialEq, Default)]
struct Rendered {
    sets: BTreeMap<String, SetDef>,
    chains: Vec<(String, ChainDef)>,
}

/// The two directions, with the chain names, the address a policy selects by and the
/// address its peers match.
#[derive(Clone, Copy)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn tag(self) -> &'static str {
        match self {
            Dir::Ingress => "in",
            Dir::Egress => "eg",
        }
    }
    fn base(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
    /// The pod's own address field.
    fn own(self) -> &'static str {
        match self {
            Dir::Ingress => "daddr",
            Dir::Egress => "saddr",
        }
    }
    /// The peer's address field.
    fn peer(self) -> &'static str {
        match self {
            Dir::Ingress => "saddr",
            Dir::Egress => "daddr",
        }
    }
    fn prio(self) -> i32 {
        match self {
            Dir::Ingress => 0,
            Dir::Egress => -1,
        }
    }
    fn rules(self, p: &CompiledPolicy) -> Option<&Vec<PolicyRule>> {
        match self {
            Dir::Ingress => p.ingress.as_ref(),
            Dir::Egress => p.egress.as_ref(),
        }
    }
}

fn ip_field(f: &str) -> Value {
    json!({"payload": {"protocol": "ip", "field": f}})
}

fn dport() -> Value {
    json!({"payload": {"protocol": "th", "field": "dport"}})
}

fn l4proto(p: Protocol) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": p.nft_name()}})
}

fn in_set(left: Value, set: &str, op: &str) -> Value {
    json!({"match": {"op": op, "left": left, "right": format!("@{set}")}})
}

fn range_elem(r: &AddrRange) -> Value {
    json!({"range": [r.first.to_string(), r.last.to_string()]})
}

fn elems(it: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    it.into_iter().map(|v| (v.to_string(), v)).collect()
}

/// Renders the table for `set` (pure).
fn render(set: &PolicySet, table: &str) -> Rendered {
    let mut r = Rendered::default();
    let chain = |name: &str, base: Option<Dir>| {
        let mut decl = json!({"family": "ip", "table": table, "name": name});
        if let Some(d) = base {
            decl["type"] = json!("filter");
            decl["hook"] = json!("forward");
            decl["prio"] = json!(d.prio());
            decl["policy"] = json!("accept");
        }
        decl
    };
    let addr_set = |ips: &BTreeSet<Ipv4Addr>| SetDef {
        ty: json!("ipv4_addr"),
        interval: false,
        elems: elems(ips.iter().map(|ip| json!(ip.to_string()))),
    };
    for (i, p) in set.policies.iter().enumerate() {
        r.sets.insert(format!("pol-{i}-pods"), addr_set(&p.pods));
    }
    let mut policy_chains = Vec::new();
    for dir in [Dir::Egress, Dir::Ingress] {
        let isolated: BTreeSet<Ipv4Addr> = set
            .policies
            .iter()
            .filter(|p| dir.rules(p).is_some())
            .flat_map(|p| p.pods.iter().copied())
            .collect();
        let iso_name = format!("{}-isolated", dir.base());
        r.sets.insert(iso_name.clone(), addr_set(&isolated));
        let mut base = vec![
            json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                "right": ["established", "related"]}}, {"accept": null}]),
            json!([in_set(ip_field(dir.own()), &iso_name, "!="), {"accept": null}]),
        ];
        for (i, p) in set.policies.iter().enumerate() {
            let Some(rules) = dir.rules(p) else { continue };
            let pc = format!("pol-{i}-{}", dir.tag());
            base.push(json!([
                in_set(ip_field(dir.own()), &format!("pol-{i}-pods"), "=="),
                {"jump": {"target": pc}}
            ]));
            let mut body = Vec::new();
            for (ri, rule) in rules.iter().enumerate() {
                let mut head = Vec::new();
                match &rule.peers {
                    None => {}
                    // an empty set never matches; keeping the rule keeps the table's
                    // shape a function of the policies alone, so pod churn stays
                    // element changes
                    Some(peers) => {
                        let s = format!("{pc}-{ri}-peers");
                        r.sets.insert(
                            s.clone(),
                            SetDef {
                                ty: json!("ipv4_addr"),
                                interval: true,
                                elems: elems(peers.iter().map(range_elem)),
                            },
                        );
                        head.push(in_set(ip_field(dir.peer()), &s, "=="));
                    }
                }
                let Some(ports) = &rule.ports else {
                    head.push(json!({"accept": null}));
                    body.push(Value::Array(head));
                    continue;
                };
                for (pi, port) in ports.iter().enumerate() {
                    let mut e = head.clone();
                    match port {
                        PortMatch::Protocol(p) => e.push(l4proto(*p)),
                        PortMatch::Ports {
                            protocol,
                            first,
                            last,
                        } => {
                            e.push(l4proto(*protocol));
                            let right = if first == last {
                                json!(first)
                            } else {
                                json!({"range": [first, last]})
                            };
                            e.push(json!({"match": {"op": "==", "left": dport(), "right": right}}));
                        }
                        PortMatch::Named(resolved) => {
                            let s = format!("{pc}-{ri}-port-{pi}");
                            r.sets.insert(
                                s.clone(),
                                SetDef {
                                    ty: json!(["ipv4_addr", "inet_proto", "inet_service"]),
                                    interval: false,
                                    elems: elems(resolved.iter().map(|(ip, p, n)| {
                                        json!({"concat": [ip.to_string(), p.nft_name(), n]})
                                    })),
                                },
                            );
                            let key = json!({"concat": [ip_field("daddr"),
                                {"meta": {"key": "l4proto"}}, dport()]});
                            e.push(in_set(key, &s, "=="));
                        }
                    }
                    e.push(json!({"accept": null}));
                    body.push(Value::Array(e));
                }
            }
            policy_chains.push((
                pc.clone(),
                ChainDef {
                    decl: chain(&pc, None),
                    rules: body,
                },
            ));
        }
        base.push(json!([in_set(ip_field(dir.own()), &iso_name, "=="), {"drop": null}]));
        r.chains.push((
            dir.base().to_owned(),
            ChainDef {
                decl: chain(dir.base(), Some(dir)),
                rules: base,
            },
        ));
    }
    // policy chains are declared before the base chains that jump to them
    policy_chains.append(&mut r.chains);
    r.chains = policy_chains;
    r
}

fn set_obj(table: &str, name: &str) -> Value {
    json!({"family": "ip", "table": table, "name": name})
}

impl Rendered {
    /// Whether `other` differs from `self` only in set elements.
    fn same_shape(&self, other: &Rendered) -> bool {
        self.chains == other.chains
            && self.sets.len() == other.sets.len()
            && self
                .sets
                .iter()
                .zip(&other.sets)
                .all(|((a, x), (b, y))| a == b && x.ty == y.ty && x.interval == y.interval)
    }

    /// One transaction that replaces the table with this one.
    fn replace(&self, table: &str) -> NftBatch {
        let mut b = NftBatch::default();
        let t = json!({"family": "ip", "name": table});
        b.push(json!({"add": {"table": t}}));
        b.push(json!({"delete": {"table": t}}));
        b.push(json!({"add": {"table": t}}));
        for (name, s) in &self.sets {
            let mut o = set_obj(table, name);
            o["type"] = s.ty.clone();
            if s.interval {
                o["flags"] = json!(["interval"]);
            }
            b.push(json!({"add": {"set": o}}));
            if !s.elems.is_empty() {
                let mut o = set_obj(table, name);
                o["elem"] = json!(s.elems.values().collect::<Vec<_>>());
                b.push(json!({"add": {"element": o}}));
            }
        }
        for (_, c) in &self.chains {
            b.push(json!({"add": {"chain": c.decl}}));
        }
        for (name, c) in &self.chains {
            for r in &c.rules {
                b.push(json!({"add": {"rule": {"family": "ip", "table": table,
                    "chain": name, "expr": r}}}));
            }
        }
        b
    }

    /// The element changes from `old` to `self` (same shape): removals first.
    fn element_diff(&self, old: &Rendered, table: &str) -> (NftBatch, usize) {
        let mut b = NftBatch::default();
        let mut n = 0;
        let mut adds = Vec::new();
        for ((name, new), (_, was)) in self.sets.iter().zip(&old.sets) {
            let gone: Vec<&Value> = was
                .elems
                .iter()
                .filter(|(k, _)| !new.elems.contains_key(*k))
                .map(|(_, v)| v)
                .collect();
            let added: Vec<&Value> = new
                .elems
                .iter()
                .filter(|(k, _)| !was.elems.contains_key(*k))
                .map(|(_, v)| v)
                .collect();
            n += gone.len() + added.len();
            if !gone.is_empty() {
                let mut o = set_obj(table, name);
                o["elem"] = json!(gone);
                b.push(json!({"delete": {"element": o}}));
            }
            if !added.is_empty() {
                let mut o = set_obj(table, name);
                o["elem"] = json!(added);
                adds.push(json!({"add": {"element": o}}));
            }
        }
        for a in adds {
            b.push(a);
        }
        (b, n)
    }
}

/// Programs a [`PolicySet`] into its own nftables table, replacing the table when the
/// rules change and updating set elements in place otherwise.
#[derive(Debug)]
pub struct PolicyFirewall<R: NftRunner> {
    table: String,
    runner: R,
    applied: Option<Rendered>,
}

impl<R: NftRunner> PolicyFirewall<R> {
    /// A firewall over table `ip <table>` that has applied nothing yet (the first
    /// [`apply`](Self::apply) replaces whatever a previous run left).
    pub fn new(table: impl Into<String>, runner: R) -> Self {
        Self {
            table: table.into(),
            runner,
            applied: None,
        }
    }

    /// The runner.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// The transaction that would bring the table from what was applied to `set`, and
    /// what it does (pure: nothing is applied).
    pub fn plan(&self, set: &PolicySet) -> (NftBatch, PolicyStats) {
        self.plan_rendered(&render(set, &self.table))
    }

    fn plan_rendered(&self, new: &Rendered) -> (NftBatch, PolicyStats) {
        match &self.applied {
            Some(old) if old.same_shape(new) => {
                let (b, elements) = new.element_diff(old, &self.table);
                let commands = b.len();
                (
                    b,
                    PolicyStats {
                        replaced: false,
                        elements,
                        commands,
                    },
                )
            }
            _ => {
                let b = new.replace(&self.table);
                let commands = b.len();
                (
                    b,
                    PolicyStats {
                        replaced: true,
                        elements: 0,
                        commands,
                    },
                )
            }
        }
    }

    /// Converges the kernel's table to `set` in one transaction.
    pub fn apply(&mut self, set: &PolicySet) -> Result<PolicyStats, Error> {
        let new = render(set, &self.table);
        let (batch, stats) = self.plan_rendered(&new);
        let _span = tracing::debug_span!(
            "policy_apply",
            policies = set.policies.len(),
            replaced = stats.replaced,
            commands = stats.commands
        )
        .entered();
        if !batch.is_empty() {
            if let Err(e) = self.runner.apply(&batch) {
                // the kernel's state is unknown: replace the table next time
                self.applied = None;
                return Err(e);
            }
        }
        self.applied = Some(new);
        Ok(stats)
    }

    /// Removes the table (idempotent).
    pub fn teardown(&mut self) -> Result<(), Error> {
        let mut b = NftBatch::default();
        let t = json!({"family": "ip", "name": self.table});
        b.push(json!({"add": {"table": t}}));
        b.push(json!({"delete": {"table": t}}));
        self.runner.apply(&b)?;
        self.applied = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder(RefCell<Vec<NftBatch>>);

    impl NftRunner for Recorder {
        fn apply(&self, batch: &NftBatch) -> Result<(), Error> {
            self.0.borrow_mut().push(batch.clone());
            Ok(())
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn r(a: &str, b: &str) -> AddrRange {
        AddrRange {
            first: ip(a),
            last: ip(b),
        }
    }

    #[test]
    fn ranges_merge_and_cidrs_lose_their_excepts() {
        let cases: Vec<(Vec<AddrRange>, Vec<AddrRange>)> = vec![
            (vec![], vec![]),
            (
                vec![r("10.0.0.5", "10.0.0.5"), r("10.0.0.4", "10.0.0.4")],
                vec![r("10.0.0.4", "10.0.0.5")],
            ),
            (
                vec![r("10.0.0.0", "10.0.0.255"), r("10.0.0.9", "10.0.1.3")],
                vec![r("10.0.0.0", "10.0.1.3")],
            ),
            (
                vec![r("10.0.0.1", "10.0.0.1"), r("10.0.0.3", "10.0.0.3")],
                vec![r("10.0.0.1", "10.0.0.1"), r("10.0.0.3", "10.0.0.3")],
            ),
            (
                vec![
                    r("255.255.255.255", "255.255.255.255"),
                    r("0.0.0.0", "255.255.255.254"),
                ],
                vec![r("0.0.0.0", "255.255.255.255")],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(merge_ranges(input.clone()), want, "{input:?}");
        }
        let cases: Vec<(&str, Vec<&str>, Vec<AddrRange>)> = vec![
            ("10.0.0.0/24", vec![], vec![r("10.0.0.0", "10.0.0.255")]),
            (
                "10.0.0.0/24",
                vec!["10.0.0.128/25"],
                vec![r("10.0.0.0", "10.0.0.127")],
            ),
            (
                "10.0.0.0/24",
                vec!["10.0.0.16/28", "10.0.0.0/30", "10.0.0.20/30"],
                vec![r("10.0.0.4", "10.0.0.15"), r("10.0.0.32", "10.0.0.255")],
            ),
            (
                "0.0.0.0/0",
                vec!["10.0.0.0/8"],
                vec![
                    r("0.0.0.0", "9.255.255.255"),
                    r("11.0.0.0", "255.255.255.255"),
                ],
            ),
            ("10.0.0.0/24", vec!["10.0.0.0/24"], vec![]),
            (
                "10.0.0.0/24",
                vec!["192.168.0.0/16"],
                vec![r("10.0.0.0", "10.0.0.255")],
            ),
        ];
        for (cidr, except, want) in cases {
            let ex: Vec<Ipv4Net> = except.iter().map(|e| net(e)).collect();
            assert_eq!(
                cidr_except(net(cidr), &ex),
                want,
                "{cidr} except {except:?}"
            );
        }
    }

    fn deny_all(name: &str, pods: &[&str]) -> CompiledPolicy {
        CompiledPolicy {
            name: name.into(),
            pods: pods.iter().map(|p| ip(p)).collect(),
            ingress: Some(vec![]),
            egress: None,
        }
    }

    fn text(b: &NftBatch) -> String {
        b.to_json()
    }

    #[test]
    fn no_policy_isolates_nothing() {
        let fw = PolicyFirewall::new("t", Recorder::default());
        let (b, st) = fw.plan(&PolicySet::default());
        assert!(st.replaced);
        let t = text(&b);
        // both base chains exist, their isolated sets are empty, so all is accepted
        assert!(t.contains(r#""hook":"forward""#), "{t}");
        assert!(!t.contains(r#""element""#), "{t}");
        assert!(!t.contains("pol-"), "{t}");
    }

    #[test]
    fn rules_render_peers_ports_ranges_and_named_ports() {
        let named: BTreeSet<_> = [(ip("10.244.0.5"), Protocol::Tcp, 8080)].into();
        let set = PolicySet {
            policies: vec![CompiledPolicy {
                name: "d/web".into(),
                pods: [ip("10.244.0.5")].into(),
                ingress: Some(vec![
                    PolicyRule {
                        peers: Some(vec![
                            r("10.244.0.7", "10.244.0.7"),
                            r("192.0.2.0", "192.0.2.127"),
                        ]),
                        ports: Some(vec![
                            PortMatch::Ports {
                                protocol: Protocol::Tcp,
                                first: 80,
                                last: 80,
                            },
                            PortMatch::Ports {
                                protocol: Protocol::Udp,
                                first: 5000,
                                last: 5100,
                            },
                            PortMatch::Named(named),
                            PortMatch::Named(BTreeSet::new()),
                            PortMatch::Protocol(Protocol::Sctp),
                        ]),
                    },
                    // a peer list that resolved to nothing never matches
                    PolicyRule {
                        peers: Some(vec![]),
                        ports: None,
                    },
                ]),
                egress: Some(vec![PolicyRule::default()]),
            }],
        };
        let fw = PolicyFirewall::new("t", Recorder::default());
        let (b, _) = fw.plan(&set);
        let t = text(&b);
        for want in [
            r#"{"range":["10.244.0.7","10.244.0.7"]}"#,
            r#"{"range":["192.0.2.0","192.0.2.127"]}"#,
            r#""right":{"range":[5000,5100]}"#,
            r#""right":80"#,
            r#"{"concat":["10.244.0.5","tcp",8080]}"#,
            r#""right":"@pol-0-in-0-port-2""#,
            r#""right":"sctp""#,
            r#"{"jump":{"target":"pol-0-in"}}"#,
            r#"{"jump":{"target":"pol-0-eg"}}"#,
            r#""right":["established","related"]"#,
        ] {
            assert!(t.contains(want), "{want} missing: {t}");
        }
        // empty sets render (they never match), so the shape does not depend on pods
        assert!(t.contains(r#""right":"@pol-0-in-0-port-3""#), "{t}");
        assert!(t.contains(r#""right":"@pol-0-in-1-peers""#), "{t}");
        // six lines in the ingress chain, one allow-all line in egress
        let rules_in = |c: &str| {
            b.commands()
                .iter()
                .filter(|v| v["add"]["rule"]["chain"] == c)
                .count()
        };
        assert_eq!(rules_in("pol-0-in"), 6);
        assert_eq!(rules_in("pol-0-eg"), 1);
        // each base chain: established, not-isolated, one jump, drop
        assert_eq!(rules_in("ingress"), 4);
        assert_eq!(rules_in("egress"), 4);
        // chains are declared before any rule jumps to them
        let pos = |pred: &dyn Fn(&Value) -> bool| b.commands().iter().position(pred).unwrap();
        let decl = pos(&|v| v["add"]["chain"]["name"] == "pol-0-in");
        let jump = pos(&|v| v["add"]["rule"]["chain"] == "ingress");
        assert!(decl < jump);
    }

    #[test]
    fn pod_churn_changes_only_elements() {
        let mut fw = PolicyFirewall::new("t", Recorder::default());
        let mut set = PolicySet {
            policies: (0..50)
                .map(|i| deny_all(&format!("d/p{i}"), &["10.244.0.5"]))
                .collect(),
        };
        let st = fw.apply(&set).unwrap();
        assert!(st.replaced);
        // the same set again: nothing to do
        let st = fw.apply(&set).unwrap();
        assert_eq!(st, PolicyStats::default());
        // a new pod selected by one policy: two elements (its set and the isolated set)
        set.policies[7].pods.insert(ip("10.244.0.9"));
        let st = fw.apply(&set).unwrap();
        assert!(!st.replaced);
        assert_eq!(st.elements, 2);
        let last = text(fw.runner().0.borrow().last().unwrap());
        assert!(!last.contains(r#""rule""#), "{last}");
        assert!(last.contains(r#""name":"pol-7-pods""#), "{last}");
        // it goes away again: removed from both
        set.policies[7].pods.remove(&ip("10.244.0.9"));
        let (b, st) = fw.plan(&set);
        assert_eq!(st.elements, 2);
        assert!(text(&b).starts_with(r#"{"nftables":[{"delete":{"element""#));
        // a policy added: the table is replaced in one transaction
        set.policies.push(deny_all("d/new", &["10.244.0.6"]));
        let (b, st) = fw.plan(&set);
        assert!(st.replaced);
        assert_eq!(
            b.commands()[1],
            json!({"delete": {"table": {"family": "ip", "name": "t"}}})
        );
    }

    #[test]
    fn a_failed_apply_replaces_the_table_next_time() {
        struct Failing;
        impl NftRunner for Failing {
            fn apply(&self, _: &NftBatch) -> Result<(), Error> {
                Err(Error::NftFailed {
                    status: 1,
                    stderr: "no".into(),
                })
            }
        }
        let mut fw = PolicyFirewall::new("t", Failing);
        let set = PolicySet {
            policies: vec![deny_all("d/a", &["10.244.0.5"])],
        };
        assert!(fw.apply(&set).is_err());
        assert!(fw.plan(&set).1.replaced);
    }
}
