//! Route tables: the pod-subnet LPM table of kcore-vxlan and the Service
//! load-balancing table of kcore-netbridge.

use std::ffi::c_char;
use std::net::{Ipv4Addr, SocketAddrV4};

use kcore_netbridge::{Protocol, Service, ServiceTable};
use kcore_vxlan::{Ipv4Net, RouteTable};

use crate::ffi::{
    boundary, chain, clear_out, handle, handle_mut, non_null, parse_json, put_handle, put_string,
    req_str, Failure,
};
use crate::{free_handle, KcoreResult};

/// A longest-prefix-match table from IPv4 prefixes to strings (a node name,
/// a VTEP address, …).
#[allow(non_camel_case_types)]
pub struct kcore_route_table {
    table: RouteTable<String>,
}

/// A Service table: frontends (cluster IP, node port, load-balancer IPs) to
/// endpoints, picked per flow with Maglev hashing.
#[allow(non_camel_case_types)]
pub struct kcore_service_table {
    table: ServiceTable,
}

fn parse_net(s: &str) -> Result<Ipv4Net, Failure> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|e| Failure::invalid(format!("invalid IPv4 prefix {s:?}: {e}")))?;
    if net.trunc() != net {
        return Err(Failure::invalid(format!(
            "prefix {s:?} has host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

fn parse_ip(s: &str, what: &str) -> Result<Ipv4Addr, Failure> {
    s.parse()
        .map_err(|_| Failure::invalid(format!("{what}: invalid IPv4 address {s:?}")))
}

/// Makes an empty route table in `*out`.
///
/// # Safety
/// `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_route_table_new(out: *mut *mut kcore_route_table) -> KcoreResult {
    boundary(|| {
        non_null(out, "out")?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe {
            put_handle(
                out,
                kcore_route_table {
                    table: RouteTable::new(),
                },
            )
        };
        Ok(())
    })
}

/// Frees a route table. NULL is ignored.
///
/// # Safety
/// `table` is NULL or a live route table.
#[no_mangle]
pub unsafe extern "C" fn kcore_route_table_free(table: *mut kcore_route_table) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(table) }
}

/// Inserts or replaces the route for `cidr` (`"10.244.1.0/24"`, no host bits)
/// with `value`.
///
/// # Safety
/// `table` is a live route table; the strings are NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn kcore_route_table_insert(
    table: *mut kcore_route_table,
    cidr: *const c_char,
    value: *const c_char,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (t, cidr, value) = unsafe {
            (
                handle_mut(table, "table")?,
                req_str(cidr, "cidr")?,
                req_str(value, "value")?,
            )
        };
        t.table.insert(parse_net(cidr)?, value.to_string());
        Ok(())
    })
}

/// Removes the route for exactly `cidr`; `KCORE_NOT_FOUND` when there is none.
///
/// # Safety
/// `table` is a live route table; `cidr` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn kcore_route_table_remove(
    table: *mut kcore_route_table,
    cidr: *const c_char,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (t, cidr) = unsafe { (handle_mut(table, "table")?, req_str(cidr, "cidr")?) };
        match t.table.remove(parse_net(cidr)?) {
            Some(_) => Ok(()),
            None => Err(Failure::new(
                KcoreResult::KCORE_NOT_FOUND,
                format!("no route for {cidr}"),
            )),
        }
    })
}

/// Writes the number of routes to `*out`.
///
/// # Safety
/// `table` is a live route table; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_route_table_len(
    table: *const kcore_route_table,
    out: *mut usize,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contract.
        let t = unsafe { handle(table, "table")? };
        non_null(out, "out")?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe { *out = t.table.len() };
        Ok(())
    })
}

/// Longest-prefix match of `ip`: writes the matching prefix to `*out_cidr`
/// (may be NULL if not wanted) and its value to `*out_value`, both freed with
/// `kcore_string_free`. `KCORE_NOT_FOUND` when no route covers `ip`.
///
/// # Safety
/// `table` is a live route table; `ip` is NUL-terminated; the out-params are
/// NULL (`out_cidr` only) or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_route_table_lookup(
    table: *const kcore_route_table,
    ip: *const c_char,
    out_cidr: *mut *mut c_char,
    out_value: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe {
        clear_out(out_cidr);
        clear_out(out_value);
    }
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (t, ip) = unsafe { (handle(table, "table")?, req_str(ip, "ip")?) };
        non_null(out_value, "out_value")?;
        let addr = parse_ip(ip, "ip")?;
        let Some((net, value)) = t.table.lookup_entry(addr) else {
            return Err(Failure::new(
                KcoreResult::KCORE_NOT_FOUND,
                format!("no route to {addr}"),
            ));
        };
        // SAFETY: out_value is non-NULL and valid; out_cidr checked for NULL.
        unsafe {
            put_string(out_value, value.clone())?;
            if !out_cidr.is_null() {
                if let Err(e) = put_string(out_cidr, net.to_string()) {
                    crate::kcore_string_free(*out_value);
                    *out_value = std::ptr::null_mut();
                    return Err(e);
                }
            }
        }
        Ok(())
    })
}

/// Makes an empty Service table in `*out`.
///
/// # Safety
/// `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_service_table_new(
    out: *mut *mut kcore_service_table,
) -> KcoreResult {
    boundary(|| {
        non_null(out, "out")?;
        // SAFETY: out is non-NULL and valid for writes.
        unsafe {
            put_handle(
                out,
                kcore_service_table {
                    table: ServiceTable::new(),
                },
            )
        };
        Ok(())
    })
}

/// Frees a Service table. NULL is ignored.
///
/// # Safety
/// `table` is NULL or a live Service table.
#[no_mangle]
pub unsafe extern "C" fn kcore_service_table_free(table: *mut kcore_service_table) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(table) }
}

/// Inserts or replaces a Service given as JSON:
/// `{"name": "default/web:http", "protocol": "TCP", "cluster_ip": "10.96.0.10",
/// "port": 80, "node_port": 30080, "load_balancer_ips": [],
/// "affinity": "None" | {"ClientIp": {"timeout_secs": 10800}},
/// "endpoints": [{"addr": "10.244.1.5:8080", "ready": true}]}`
/// (`node_port` may be omitted or null).
///
/// # Safety
/// `table` is a live Service table; `service_json` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn kcore_service_table_upsert(
    table: *mut kcore_service_table,
    service_json: *const c_char,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (t, json) = unsafe {
            (
                handle_mut(table, "table")?,
                req_str(service_json, "service_json")?,
            )
        };
        let svc: Service = parse_json(json, "service_json")?;
        t.table
            .upsert(&svc)
            .map_err(|e| Failure::new(KcoreResult::KCORE_NETWORK_ERROR, chain(&e)))
    })
}

/// Removes a Service by name; `KCORE_NOT_FOUND` when absent.
///
/// # Safety
/// `table` is a live Service table; `name` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn kcore_service_table_remove(
    table: *mut kcore_service_table,
    name: *const c_char,
) -> KcoreResult {
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (t, name) = unsafe { (handle_mut(table, "table")?, req_str(name, "name")?) };
        if t.table.remove(name) {
            Ok(())
        } else {
            Err(Failure::new(
                KcoreResult::KCORE_NOT_FOUND,
                format!("no service {name:?}"),
            ))
        }
    })
}

/// Picks the endpoint for a new flow from `client` (`"ip:port"`) to
/// `vip`:`port` over `protocol` (`"TCP"`, `"UDP"` or `"SCTP"`, any case),
/// writing `"ip:port"` to `*out_endpoint` (free with `kcore_string_free`).
/// Node ports match any `vip`. `KCORE_NOT_FOUND` when no frontend matches or
/// it has no ready endpoint.
///
/// # Safety
/// `table` is a live Service table; the strings are NUL-terminated;
/// `out_endpoint` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kcore_service_table_pick(
    table: *const kcore_service_table,
    vip: *const c_char,
    port: u16,
    protocol: *const c_char,
    client: *const c_char,
    out_endpoint: *mut *mut c_char,
) -> KcoreResult {
    // SAFETY: NULL or valid for writes.
    unsafe { clear_out(out_endpoint) };
    boundary(|| {
        // SAFETY: forwarded contracts.
        let (t, vip, proto, client) = unsafe {
            (
                handle(table, "table")?,
                req_str(vip, "vip")?,
                req_str(protocol, "protocol")?,
                req_str(client, "client")?,
            )
        };
        non_null(out_endpoint, "out_endpoint")?;
        let vip = parse_ip(vip, "vip")?;
        let proto = match proto.to_ascii_uppercase().as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => return Err(Failure::invalid(format!("unknown protocol {other:?}"))),
        };
        let client: SocketAddrV4 = client
            .parse()
            .map_err(|_| Failure::invalid(format!("client: invalid ip:port {client:?}")))?;
        match t.table.pick(vip, port, proto, client) {
            // SAFETY: out_endpoint is non-NULL and valid for writes.
            Some(ep) => unsafe { put_string(out_endpoint, ep.to_string()) },
            None => Err(Failure::new(
                KcoreResult::KCORE_NOT_FOUND,
                format!("no endpoint for {vip}:{port}/{}", proto.nft_name()),
            )),
        }
    })
}
