//! Cluster DNS: `<svc>.<ns>.svc.<domain>` → ClusterIP (headless: the ready endpoints),
//! `<host>.<svc>.<ns>.svc.<domain>` → a named endpoint (StatefulSet pods), SRV records
//! for named ports, `<a-b-c-d>.<ns>.pod.<domain>`; everything else goes to the node's
//! resolvers. Messages are parsed and built with hickory-proto.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::ClusterCache;
use crate::error::{Error, Result};
use crate::netctx::NetCtx;

const TTL: u32 = 5;

/// What cluster DNS runs with.
#[derive(Debug)]
pub(crate) struct DnsEnv {
    /// Where the listeners and upstream queries live (the node's namespace).
    pub net: NetCtx,
    /// The address served (port 53).
    pub dns_ip: Ipv4Addr,
    /// The cluster domain.
    pub domain: String,
    /// Configured resolvers; empty means those of the node's resolv.conf.
    pub upstream_dns: Vec<SocketAddr>,
}

/// What the cluster zone says about a name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Records (possibly none: the name exists without data of that type).
    Answer(Vec<Record>),
    /// Inside the cluster domain, but no such name.
    NxDomain,
    /// Not the cluster's: ask upstream.
    Forward,
}

fn labels(name: &str) -> Vec<String> {
    name.trim_end_matches('.')
        .split('.')
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Answers `qname`/`qtype` from the cache.
pub(crate) fn lookup(
    cache: &ClusterCache,
    domain: &str,
    qname: &Name,
    qtype: RecordType,
) -> Lookup {
    let name = qname.to_ascii().to_ascii_lowercase();
    let dl = labels(domain);
    let l = labels(&name);
    if l.len() < dl.len() || l[l.len() - dl.len()..] != dl[..] {
        return Lookup::Forward;
    }
    let rel = &l[..l.len() - dl.len()];
    let a = |ip: Ipv4Addr| Record::from_rdata(qname.clone(), TTL, RData::A(A(ip)));
    let want_a = matches!(qtype, RecordType::A | RecordType::ANY);
    match rel {
        // <a-b-c-d>.<ns>.pod
        [ip, _ns, kind] if kind == "pod" => match ip.replace('-', ".").parse::<Ipv4Addr>() {
            Ok(ip) => Lookup::Answer(if want_a { vec![a(ip)] } else { vec![] }),
            Err(_) => Lookup::NxDomain,
        },
        [svc, ns, kind] if kind == "svc" => {
            let svcs = cache.services.read().unwrap_or_else(|p| p.into_inner());
            let Some(s) = svcs.get(&(ns.clone(), svc.clone())) else {
                return Lookup::NxDomain;
            };
            let spec = s.spec.clone().unwrap_or_default();
            if spec.type_.as_deref() == Some("ExternalName") {
                // as CoreDNS: a CNAME to the external name whatever the type asked for; the
                // client's resolver follows it
                let target = spec
                    .external_name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .and_then(|n| Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).ok());
                return match target {
                    Some(t) => Lookup::Answer(vec![Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::CNAME(CNAME(t)),
                    )]),
                    None => Lookup::NxDomain,
                };
            }
            let headless = spec
                .cluster_ip
                .as_deref()
                .is_none_or(|c| c == "None" || c.is_empty());
            if !want_a {
                return Lookup::Answer(vec![]);
            }
            if !headless {
                let ip = spec.cluster_ip.as_deref().and_then(|c| c.parse().ok());
                return Lookup::Answer(ip.map(a).into_iter().collect());
            }
            drop(svcs);
            let mut ips: Vec<Ipv4Addr> = cache
                .slices_of(ns, svc)
                .iter()
                .flat_map(|sl| sl.endpoints.clone().unwrap_or_default())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .flat_map(|e| e.addresses)
                .filter_map(|x| x.parse().ok())
                .collect();
            ips.sort();
            ips.dedup();
            Lookup::Answer(ips.into_iter().map(a).collect())
        }
        // _<port>._<proto>.<svc>.<ns>.svc
        [first, second, svc, ns, kind] if kind == "svc" => {
            let (Some(port), Some(proto)) = (first.strip_prefix('_'), second.strip_prefix('_'))
            else {
                return Lookup::NxDomain;
            };
            let svcs = cache.services.read().unwrap_or_else(|p| p.into_inner());
            let Some(s) = svcs.get(&(ns.clone(), svc.clone())) else {
                return Lookup::NxDomain;
            };
            let p = s
                .spec
                .as_ref()
                .and_then(|sp| sp.ports.as_ref())
                .and_then(|ps| {
                    ps.iter().find(|p| {
                        p.name.as_deref().map(str::to_ascii_lowercase).as_deref() == Some(port)
                            && p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase() == *proto
                    })
                });
            let Some(p) = p else {
                return Lookup::NxDomain;
            };
            if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
                return Lookup::Answer(vec![]);
            }
            let target = Name::from_ascii(format!("{svc}.{ns}.svc.{domain}.")).ok();
            Lookup::Answer(
                target
                    .map(|t| {
                        Record::from_rdata(
                            qname.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, 100, p.port as u16, t)),
                        )
                    })
                    .into_iter()
                    .collect(),
            )
        }
        // <host>.<svc>.<ns>.svc (StatefulSet pods and other named endpoints)
        [host, svc, ns, kind] if kind == "svc" => {
            let found: Vec<Ipv4Addr> = cache
                .slices_of(ns, svc)
                .iter()
                .flat_map(|sl| sl.endpoints.clone().unwrap_or_default())
                .filter(|e| {
                    e.hostname
                        .as_deref()
                        .map(str::to_ascii_lowercase)
                        .as_deref()
                        == Some(host.as_str())
                })
                .flat_map(|e| e.addresses)
                .filter_map(|x| x.parse().ok())
                .collect();
            if found.is_empty() {
                Lookup::NxDomain
            } else if want_a {
                Lookup::Answer(found.into_iter().map(a).collect())
            } else {
                Lookup::Answer(vec![])
            }
        }
        _ => Lookup::NxDomain,
    }
}

/// Builds the reply to `req` from the zone, or `None` when it must be forwarded.
pub(crate) fn reply(cache: &ClusterCache, domain: &str, req: &Message) -> Option<Message> {
    let q = req.queries().first()?;
    let res = lookup(cache, domain, q.name(), q.query_type());
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true)
        .add_query(q.clone());
    match res {
        Lookup::Forward => return None,
        Lookup::NxDomain => {
            m.set_response_code(ResponseCode::NXDomain);
        }
        Lookup::Answer(records) => {
            m.add_answers(records);
        }
    }
    Some(m)
}

fn upstreams(env: &DnsEnv) -> Vec<SocketAddr> {
    if !env.upstream_dns.is_empty() {
        return env.upstream_dns.clone();
    }
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| ip.is_ipv4() && *ip != std::net::IpAddr::V4(env.dns_ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

async fn forward(env: &DnsEnv, packet: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams(env) {
        let Ok(sock) = env
            .net
            .udp(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0))
        else {
            continue;
        };
        if sock.send_to(packet, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// Handles one DNS message; `None` means no answer can be given.
async fn handle(env: &DnsEnv, cache: &ClusterCache, packet: &[u8]) -> Option<Vec<u8>> {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return None,
    };
    match reply(cache, &env.domain, &req) {
        Some(m) => m.to_vec().ok(),
        None => match forward(env, packet).await {
            Some(r) => Some(r),
            None => {
                let mut m = Message::error_msg(req.id(), req.op_code(), ResponseCode::ServFail);
                if let Some(q) = req.queries().first() {
                    m.add_query(q.clone());
                }
                m.to_vec().ok()
            }
        },
    }
}

/// Serves DNS on the cluster DNS address (UDP and TCP port 53).
pub(crate) fn start(env: DnsEnv, cache: Arc<ClusterCache>) -> Result<tokio::task::JoinHandle<()>> {
    let addr = SocketAddr::new(env.dns_ip.into(), 53);
    let udp = env
        .net
        .udp(addr)
        .map_err(|e| Error::Listen { addr, source: e })?;
    let tcp = env
        .net
        .listen(addr)
        .map_err(|e| Error::Listen { addr, source: e })?;
    let udp = Arc::new(udp);
    let env = Arc::new(env);
    Ok(tokio::spawn(async move {
        let s2 = env.clone();
        let c2 = cache.clone();
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = tcp.accept().await {
                let (s, c) = (s2.clone(), c2.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = conn.read_u16().await else {
                            return;
                        };
                        let mut buf = vec![0u8; len as usize];
                        if conn.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Some(out) = handle(&s, &c, &buf).await else {
                            return;
                        };
                        if conn.write_u16(out.len() as u16).await.is_err()
                            || conn.write_all(&out).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                break;
            };
            let packet = buf[..n].to_vec();
            let (s, c, u) = (env.clone(), cache.clone(), udp.clone());
            tokio::spawn(async move {
                if let Some(out) = handle(&s, &c, &packet).await {
                    let _ = u.send_to(&out, peer).await;
                }
            });
        }
        tcp_task.abort();
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn cache() -> ClusterCache {
        let (tx, _) = tokio::sync::watch::channel(0);
        let c = ClusterCache {
            services: Default::default(),
            slices: Default::default(),
            ingresses: Default::default(),
            ingress_classes: Default::default(),
            tls_secrets: Default::default(),
            nodes: Default::default(),
            version: tx,
        };
        let svc = |v| serde_json::from_value::<Service>(v).unwrap();
        let mut s = c.services.write().unwrap();
        s.insert(
            ("d".into(), "web".into()),
            svc(json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "http", "port": 80}]}})),
        );
        s.insert(
            ("d".into(), "db".into()),
            svc(json!({"metadata": {"name": "db", "namespace": "d"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}})),
        );
        s.insert(
            ("d".into(), "ext".into()),
            svc(json!({"metadata": {"name": "ext", "namespace": "d"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}})),
        );
        drop(s);
        let sl: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "db-1", "namespace": "d", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.8"], "hostname": "db-1", "conditions": {"ready": true}}]
        }))
        .unwrap();
        c.slices
            .write()
            .unwrap()
            .insert(("d".into(), "db-1".into()), sl);
        c
    }

    fn ips(l: Lookup) -> Vec<Ipv4Addr> {
        match l {
            Lookup::Answer(r) => r
                .into_iter()
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_external_name_service_answers_with_a_cname() {
        let c = cache();
        let qname = Name::from_ascii("ext.d.svc.cluster.local.").unwrap();
        for qtype in [RecordType::CNAME, RecordType::A] {
            match lookup(&c, "cluster.local", &qname, qtype) {
                Lookup::Answer(r) => {
                    assert_eq!(r.len(), 1, "{qtype}: {r:?}");
                    assert_eq!(r[0].name(), &qname);
                    match r[0].data() {
                        RData::CNAME(t) => assert_eq!(t.0.to_ascii(), "example.com."),
                        other => panic!("{qtype}: {other:?}"),
                    }
                }
                other => panic!("{qtype}: {other:?}"),
            }
        }
    }

    #[test]
    fn cluster_names_resolve() {
        let c = cache();
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let d = "cluster.local";
        assert_eq!(
            ips(lookup(&c, d, &n("web.d.svc.cluster.local."), RecordType::A)),
            vec![Ipv4Addr::new(10, 96, 0, 9)]
        );
        assert_eq!(
            ips(lookup(&c, d, &n("WEB.d.svc.cluster.local."), RecordType::A)),
            vec![Ipv4Addr::new(10, 96, 0, 9)]
        );
        assert_eq!(
            ips(lookup(&c, d, &n("db.d.svc.cluster.local."), RecordType::A)),
            vec![Ipv4Addr::new(10, 244, 0, 7), Ipv4Addr::new(10, 244, 0, 8)]
        );
        assert_eq!(
            ips(lookup(
                &c,
                d,
                &n("db-1.db.d.svc.cluster.local."),
                RecordType::A
            )),
            vec![Ipv4Addr::new(10, 244, 0, 8)]
        );
        assert_eq!(
            ips(lookup(
                &c,
                d,
                &n("10-1-2-3.d.pod.cluster.local."),
                RecordType::A
            )),
            vec![Ipv4Addr::new(10, 1, 2, 3)]
        );
        assert_eq!(
            lookup(&c, d, &n("nope.d.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            lookup(&c, d, &n("example.com."), RecordType::A),
            Lookup::Forward
        );
        assert_eq!(
            ips(lookup(
                &c,
                d,
                &n("web.d.svc.cluster.local."),
                RecordType::AAAA
            )),
            Vec::<Ipv4Addr>::new()
        );
        match lookup(
            &c,
            d,
            &n("_http._tcp.web.d.svc.cluster.local."),
            RecordType::SRV,
        ) {
            Lookup::Answer(r) => assert!(matches!(r[0].data(), RData::SRV(s) if s.port() == 80)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_carry_the_question_and_codes() {
        let c = cache();
        let mut req = Message::new();
        req.set_id(77).add_query(hickory_proto::op::Query::query(
            Name::from_ascii("missing.d.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let r = reply(&c, "cluster.local", &req).unwrap();
        assert_eq!(r.id(), 77);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        let bytes = r.to_vec().unwrap();
        assert_eq!(Message::from_vec(&bytes).unwrap().queries().len(), 1);
    }
}
