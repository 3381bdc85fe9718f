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
//! changed, diffed from the policies that changed without rendering the table again, so
//! a pod coming or going costs about the same whatever the number of policies.
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
}

/// Whether two rules render to the same chain rules (they may differ in set elements:
/// peers and the addresses of named ports).
fn same_rule_shape(a: &PolicyRule, b: &PolicyRule) -> bool {
    a.peers.is_some() == b.peers.is_some()
        && match (&a.ports, &b.ports) {
            (None, None) => true,
            (Some(x), Some(y)) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(p, q)| match (p, q) {
                        (PortMatch::Named(_), PortMatch::Named(_)) => true,
                        _ => p == q,
                    })
            }
            _ => false,
        }
}

/// Whether two policies render to the same chains and sets, differing at most in set
/// elements.
fn same_shape(a: &CompiledPolicy, b: &CompiledPolicy) -> bool {
    let rules = |x: &Option<Vec<PolicyRule>>, y: &Option<Vec<PolicyRule>>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(r, q)| same_rule_shape(r, q))
        }
        _ => false,
    };
    rules(&a.ingress, &b.ingress) && rules(&a.egress, &b.egress)
}

/// The element changes of one transaction, by set: removals, then additions.
#[derive(Default)]
struct ElementDiff {
    gone: Vec<(String, Vec<Value>)>,
    added: Vec<(String, Vec<Value>)>,
    count: usize,
}

impl ElementDiff {
    /// Records the difference between two ordered sets of elements of set `name`.
    fn sets<T: Ord>(
        &mut self,
        name: impl Fn() -> String,
        old: &BTreeSet<T>,
        new: &BTreeSet<T>,
        elem: impl Fn(&T) -> Value,
    ) {
        let gone: Vec<Value> = old.difference(new).map(&elem).collect();
        let added: Vec<Value> = new.difference(old).map(&elem).collect();
        self.count += gone.len() + added.len();
        if !gone.is_empty() {
            self.gone.push((name(), gone));
        }
        if !added.is_empty() {
            self.added.push((name(), added));
        }
    }

    fn batch(self, table: &str) -> NftBatch {
        let mut b = NftBatch::default();
        for (verb, list) in [("delete", self.gone), ("add", self.added)] {
            for (name, elems) in list {
                let mut o = set_obj(table, &name);
                o["elem"] = Value::Array(elems);
                let mut cmd = serde_json::Map::new();
                cmd.insert(verb.to_owned(), json!({ "element": o }));
                b.push(Value::Object(cmd));
            }
        }
        b
    }
}

fn addr_elem(ip: &Ipv4Addr) -> Value {
    json!(ip.to_string())
}

fn named_elem((ip, p, n): &(Ipv4Addr, Protocol, u16)) -> Value {
    json!({"concat": [ip.to_string(), p.nft_name(), n]})
}

/// What the kernel's table holds, kept to plan the next change from: the policies
/// applied and, per direction, how many of them isolate each address.
#[derive(Debug, Clone)]
struct Applied {
    policies: Vec<CompiledPolicy>,
    /// Egress, then ingress.
    isolated: [BTreeMap<Ipv4Addr, u32>; 2],
}

const DIRS: [Dir; 2] = [Dir::Egress, Dir::Ingress];

impl Applied {
    fn of(set: &PolicySet) -> Self {
        let mut isolated = [BTreeMap::new(), BTreeMap::new()];
        for p in &set.policies {
            for (d, dir) in DIRS.iter().enumerate() {
                if dir.rules(p).is_some() {
                    for ip in &p.pods {
                        *isolated[d].entry(*ip).or_insert(0) += 1;
                    }
                }
            }
        }
        Self {
            policies: set.policies.clone(),
            isolated,
        }
    }

    /// The policies of `set` that differ from those applied, when every one keeps its
    /// shape (the same chains and sets); `None` when the table must be replaced. Costs
    /// one comparison per policy, whatever changed.
    fn changed(&self, set: &PolicySet) -> Option<Vec<usize>> {
        if set.policies.len() != self.policies.len() {
            return None;
        }
        let mut changed = Vec::new();
        for (i, (new, old)) in set.policies.iter().zip(&self.policies).enumerate() {
            if new != old {
                if !same_shape(new, old) {
                    return None;
                }
                changed.push(i);
            }
        }
        Some(changed)
    }

    /// How the isolated addresses of each direction move when the `changed` policies
    /// take their values from `set`: `(direction, address, old count, new count)` for
    /// every address whose count changes.
    fn isolation_moves(
        &self,
        set: &PolicySet,
        changed: &[usize],
    ) -> Vec<(usize, Ipv4Addr, u32, u32)> {
        let mut out = Vec::new();
        for (d, dir) in DIRS.iter().enumerate() {
            let mut delta: BTreeMap<Ipv4Addr, i64> = BTreeMap::new();
            for &i in changed {
                let (old, new) = (&self.policies[i], &set.policies[i]);
                // the shape is the same: both isolate in this direction, or neither
                if dir.rules(old).is_none() {
                    continue;
                }
                for ip in old.pods.difference(&new.pods) {
                    *delta.entry(*ip).or_insert(0) -= 1;
                }
                for ip in new.pods.difference(&old.pods) {
                    *delta.entry(*ip).or_insert(0) += 1;
                }
            }
            for (ip, dv) in delta {
                if dv == 0 {
                    continue;
                }
                let was = self.isolated[d].get(&ip).copied().unwrap_or(0);
                let now = u32::try_from(i64::from(was) + dv).unwrap_or(0);
                out.push((d, ip, was, now));
            }
        }
        out
    }

    /// The element changes that bring the table from these policies to `set`'s
    /// `changed` ones (same shape).
    fn diff(&self, set: &PolicySet, changed: &[usize], table: &str) -> (NftBatch, usize) {
        let mut diff = ElementDiff::default();
        for &i in changed {
            let (old, new) = (&self.policies[i], &set.policies[i]);
            diff.sets(|| format!("pol-{i}-pods"), &old.pods, &new.pods, addr_elem);
            for dir in DIRS {
                let (Some(was), Some(now)) = (dir.rules(old), dir.rules(new)) else {
                    continue;
                };
                let pc = format!("pol-{i}-{}", dir.tag());
                for (ri, (a, b)) in was.iter().zip(now).enumerate() {
                    if let (Some(x), Some(y)) = (&a.peers, &b.peers) {
                        if x != y {
                            let (x, y): (BTreeSet<_>, BTreeSet<_>) =
                                (x.iter().copied().collect(), y.iter().copied().collect());
                            diff.sets(|| format!("{pc}-{ri}-peers"), &x, &y, range_elem);
                        }
                    }
                    let (Some(x), Some(y)) = (&a.ports, &b.ports) else {
                        continue;
                    };
                    for (pi, (p, q)) in x.iter().zip(y).enumerate() {
                        if let (PortMatch::Named(p), PortMatch::Named(q)) = (p, q) {
                            diff.sets(|| format!("{pc}-{ri}-port-{pi}"), p, q, named_elem);
                        }
                    }
                }
            }
        }
        let mut gone: [BTreeSet<Ipv4Addr>; 2] = Default::default();
        let mut added: [BTreeSet<Ipv4Addr>; 2] = Default::default();
        for (d, ip, was, now) in self.isolation_moves(set, changed) {
            match (was, now) {
                (0, n) if n > 0 => {
                    added[d].insert(ip);
                }
                (w, 0) if w > 0 => {
                    gone[d].insert(ip);
                }
                _ => {}
            }
        }
        for (d, dir) in DIRS.iter().enumerate() {
            let name = || format!("{}-isolated", dir.base());
            // old = the addresses leaving, new = those arriving: their difference is
            // exactly the removals and additions
            diff.sets(name, &gone[d], &added[d], addr_elem);
        }
        let n = diff.count;
        (diff.batch(table), n)
    }

    /// Takes the `changed` policies from `set` (after their diff was applied).
    fn update(&mut self, set: &PolicySet, changed: &[usize]) {
        for (d, ip, _, now) in self.isolation_moves(set, changed) {
            if now == 0 {
                self.isolated[d].remove(&ip);
            } else {
                self.isolated[d].insert(ip, now);
            }
        }
        for &i in changed {
            self.policies[i] = set.policies[i].clone();
        }
    }
}

/// Programs a [`PolicySet`] into its own nftables table, replacing the table when the
/// rules change and updating set elements in place otherwise.
///
/// An update in place costs one comparison per policy plus the work of the policies that
/// changed: their set elements are diffed directly from the policies (the table is not
/// rendered again), so a pod joining one policy's pods costs about the same at 100
/// policies as at 1,000.
#[derive(Debug)]
pub struct PolicyFirewall<R: NftRunner> {
    table: String,
    runner: R,
    applied: Option<Applied>,
}

/// A planned transaction: in place (the policies that changed) or a new table.
enum Plan {
    InPlace(Vec<usize>),
    Replace,
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
        let (batch, stats, _) = self.plan_inner(set);
        (batch, stats)
    }

    fn plan_inner(&self, set: &PolicySet) -> (NftBatch, PolicyStats, Plan) {
        if let Some(old) = &self.applied {
            if let Some(changed) = old.changed(set) {
                let (b, elements) = old.diff(set, &changed, &self.table);
                let commands = b.len();
                return (
                    b,
                    PolicyStats {
                        replaced: false,
                        elements,
                        commands,
                    },
                    Plan::InPlace(changed),
                );
            }
        }
        let new = render(set, &self.table);
        let b = new.replace(&self.table);
        let commands = b.len();
        (
            b,
            PolicyStats {
                replaced: true,
                elements: 0,
                commands,
            },
            Plan::Replace,
        )
    }

    /// Converges the kernel's table to `set` in one transaction.
    pub fn apply(&mut self, set: &PolicySet) -> Result<PolicyStats, Error> {
        let (batch, stats, plan) = self.plan_inner(set);
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
        match (plan, &mut self.applied) {
            (Plan::InPlace(changed), Some(a)) => a.update(set, &changed),
            _ => self.applied = Some(Applied::of(set)),
        }
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

    /// The sets of a table after `batch`'s element commands, from `sets`.
    fn after(
        mut sets: BTreeMap<String, BTreeSet<String>>,
        batch: &NftBatch,
    ) -> BTreeMap<String, BTreeSet<String>> {
        for c in batch.commands() {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            let o = &body["element"];
            let set = sets.get_mut(o["name"].as_str().unwrap()).unwrap();
            for e in o["elem"].as_array().unwrap() {
                let changed = if verb == "add" {
                    set.insert(e.to_string())
                } else {
                    set.remove(&e.to_string())
                };
                assert!(changed, "{verb} {e} in {}", o["name"]);
            }
        }
        sets
    }

    fn element_sets(set: &PolicySet) -> BTreeMap<String, BTreeSet<String>> {
        render(set, "t")
            .sets
            .into_iter()
            .map(|(n, s)| (n, s.elems.into_keys().collect()))
            .collect()
    }

    #[test]
    fn an_update_in_place_reaches_what_a_new_table_holds() {
        let rule = |peers: &[&str], named: &[(&str, u16)]| PolicyRule {
            peers: Some(peers.iter().map(|p| AddrRange::single(ip(p))).collect()),
            ports: Some(vec![
                PortMatch::Ports {
                    protocol: Protocol::Tcp,
                    first: 80,
                    last: 80,
                },
                PortMatch::Named(
                    named
                        .iter()
                        .map(|(a, n)| (ip(a), Protocol::Tcp, *n))
                        .collect(),
                ),
            ]),
        };
        let policy =
            |name: &str, pods: &[&str], peers: &[&str], named: &[(&str, u16)]| CompiledPolicy {
                name: name.into(),
                pods: pods.iter().map(|p| ip(p)).collect(),
                ingress: Some(vec![rule(peers, named)]),
                egress: Some(vec![rule(peers, &[])]),
            };
        let a = PolicySet {
            policies: vec![
                policy(
                    "d/a",
                    &["10.0.0.1", "10.0.0.2"],
                    &["10.0.1.1"],
                    &[("10.0.0.1", 8080)],
                ),
                policy("d/b", &["10.0.0.2", "10.0.0.3"], &["10.0.1.2"], &[]),
                deny_all("d/c", &["10.0.0.4"]),
            ],
        };
        // pods leave and join (10.0.0.2 stays isolated through d/b), peers and named
        // ports change
        let b = PolicySet {
            policies: vec![
                policy(
                    "d/a",
                    &["10.0.0.1", "10.0.0.5"],
                    &["10.0.1.3"],
                    &[("10.0.0.5", 8080)],
                ),
                policy("d/b", &["10.0.0.3"], &["10.0.1.2", "10.0.1.4"], &[]),
                deny_all("d/c", &["10.0.0.4", "10.0.0.2"]),
            ],
        };
        let mut fw = PolicyFirewall::new("t", Recorder::default());
        fw.apply(&a).unwrap();
        for (from, to) in [(&a, &b), (&b, &a)] {
            let (batch, st) = fw.plan(to);
            assert!(!st.replaced);
            assert_eq!(after(element_sets(from), &batch), element_sets(to));
            fw.apply(to).unwrap();
        }
        // a rule's ports changed: a new table
        let mut c = a.clone();
        c.policies[1].ingress.as_mut().unwrap()[0].ports = None;
        assert!(fw.plan(&c).1.replaced);
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
