//! The CEL environment for validation rules: cel-rust's standard library and its
//! strings extension, plus the Kubernetes libraries rules commonly use (lists, regex,
//! URLs, quantities), after k8s.io/apiserver/pkg/cel/library.

use std::sync::{Arc, OnceLock};

use cel::common::types::{Type, DYN_TYPE, INT_TYPE, LIST_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map, Opaque};
use cel::{Env, ExecutionError, Value};
use kcore_k8s::Quantity;

/// CEL type name of quantities (as upstream's `kubernetes.Quantity`).
const QUANTITY: &str = "kubernetes.Quantity";
/// CEL type name of URLs (as upstream's `kubernetes.URL`).
const URL: &str = "kubernetes.URL";

/// A quantity as a CEL value.
#[derive(Debug, PartialEq, Eq)]
struct Qty(Quantity);

impl Opaque for Qty {
    fn runtime_type_name(&self) -> &str {
        QUANTITY
    }
}

/// A parsed URL as a CEL value.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    scheme: String,
    host: String,
    hostname: String,
    port: String,
    escaped_path: String,
    query: Vec<(String, String)>,
}

impl Opaque for Url {
    fn runtime_type_name(&self) -> &str {
        URL
    }
}

/// The shared environment, built once.
pub(crate) fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        Arc::new(build().expect("the validation-rule CEL library declares each overload once"))
    })
    .clone()
}

type Fun = cel::common::functions::Function;

fn qt() -> Type {
    Type::new_opaque_type(QUANTITY)
}

fn ut() -> Type {
    Type::new_opaque_type(URL)
}

fn build() -> Result<Env, cel::DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)?;
    env.add_type(qt())?;
    env.add_type(ut())?;
    network(&mut env)?;
    formats(&mut env)?;
    let members: Vec<(&str, &str, Type, Vec<Type>, Fun)> = vec![
        // lists
        (
            "isSorted",
            "list_is_sorted",
            LIST_TYPE,
            vec![],
            list_is_sorted,
        ),
        ("sum", "list_sum", LIST_TYPE, vec![], list_sum),
        ("min", "list_min", LIST_TYPE, vec![], list_min),
        ("max", "list_max", LIST_TYPE, vec![], list_max),
        (
            "indexOf",
            "list_index_of",
            LIST_TYPE,
            vec![DYN_TYPE],
            list_index_of,
        ),
        (
            "lastIndexOf",
            "list_last_index_of",
            LIST_TYPE,
            vec![DYN_TYPE],
            list_last_index_of,
        ),
        // regex
        (
            "find",
            "string_find",
            STRING_TYPE,
            vec![STRING_TYPE],
            regex_find,
        ),
        (
            "findAll",
            "string_find_all",
            STRING_TYPE,
            vec![STRING_TYPE],
            regex_find_all,
        ),
        (
            "findAll",
            "string_find_all_n",
            STRING_TYPE,
            vec![STRING_TYPE, INT_TYPE],
            regex_find_all_n,
        ),
        // urls
        ("getScheme", "url_get_scheme", ut(), vec![], url_scheme),
        ("getHost", "url_get_host", ut(), vec![], url_host),
        (
            "getHostname",
            "url_get_hostname",
            ut(),
            vec![],
            url_hostname,
        ),
        ("getPort", "url_get_port", ut(), vec![], url_port),
        (
            "getEscapedPath",
            "url_get_escaped_path",
            ut(),
            vec![],
            url_escaped_path,
        ),
        ("getQuery", "url_get_query", ut(), vec![], url_query),
        // quantities
        (
            "isInteger",
            "quantity_is_integer",
            qt(),
            vec![],
            q_is_integer,
        ),
        (
            "asInteger",
            "quantity_as_integer",
            qt(),
            vec![],
            q_as_integer,
        ),
        (
            "asApproximateFloat",
            "quantity_as_float",
            qt(),
            vec![],
            q_as_float,
        ),
        ("sign", "quantity_sign", qt(), vec![], q_sign),
        ("add", "quantity_add", qt(), vec![qt()], q_add),
        ("add", "quantity_add_int", qt(), vec![INT_TYPE], q_add),
        ("sub", "quantity_sub", qt(), vec![qt()], q_sub),
        ("sub", "quantity_sub_int", qt(), vec![INT_TYPE], q_sub),
        (
            "isGreaterThan",
            "quantity_greater",
            qt(),
            vec![qt()],
            q_greater,
        ),
        ("isLessThan", "quantity_less", qt(), vec![qt()], q_less),
        ("compareTo", "quantity_compare", qt(), vec![qt()], q_compare),
    ];
    for (name, id, target, args, f) in members {
        env.add_member_overload(name, id, target, args, f)?;
    }
    let globals: Vec<(&str, &str, Vec<Type>, Fun)> = vec![
        ("url", "string_to_url", vec![STRING_TYPE], to_url),
        ("isURL", "is_url_string", vec![STRING_TYPE], is_url),
        (
            "quantity",
            "string_to_quantity",
            vec![STRING_TYPE],
            to_quantity,
        ),
        (
            "isQuantity",
            "is_quantity_string",
            vec![STRING_TYPE],
            is_quantity,
        ),
        // sets (cel-go's ext.Sets, in Kubernetes' environment)
        (
            "sets.contains",
            "list_sets_contains_list",
            vec![LIST_TYPE, LIST_TYPE],
            sets_contains,
        ),
        (
            "sets.equivalent",
            "list_sets_equivalent_list",
            vec![LIST_TYPE, LIST_TYPE],
            sets_equivalent,
        ),
        (
            "sets.intersects",
            "list_sets_intersects_list",
            vec![LIST_TYPE, LIST_TYPE],
            sets_intersects,
        ),
    ];
    for (name, id, args, f) in globals {
        env.add_overload(name, id, args, f)?;
    }
    Ok(env)
}

/// The call's arguments as owned values.
fn values(args: &[CowVal<'_, '_>]) -> Result<Vec<Value>, ExecutionError> {
    args.iter().map(|a| Value::try_from(a.as_ref())).collect()
}

fn ret<'b, 'v>(v: Value) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let b: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::from(b))
}

fn fail(function: &str, msg: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, msg)
}

fn list_arg(v: &Value, function: &str) -> Result<Arc<Vec<Value>>, ExecutionError> {
    match v {
        Value::List(l) => Ok(l.clone()),
        _ => Err(fail(function, "receiver is not a list")),
    }
}

fn compare(a: &Value, b: &Value, function: &str) -> Result<std::cmp::Ordering, ExecutionError> {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (Value::Opaque(x), Value::Opaque(y)) => {
            match (x.downcast_ref::<Qty>(), y.downcast_ref::<Qty>()) {
                (Some(p), Some(q)) => p.0.cmp(&q.0),
                _ => return Err(fail(function, "values are not comparable")),
            }
        }
        _ => return Err(fail(function, "values are not comparable")),
    };
    Ok(ord)
}

macro_rules! cel_fn {
    ($name:ident, |$args:ident| $body:block) => {
        fn $name<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
            let $args = values(&args)?;
            let out: Result<Value, ExecutionError> = $body;
            ret(out?)
        }
    };
}

cel_fn!(list_is_sorted, |a| {
    let l = list_arg(&a[0], "isSorted")?;
    let mut sorted = true;
    for w in l.windows(2) {
        if compare(&w[0], &w[1], "isSorted")? == std::cmp::Ordering::Greater {
            sorted = false;
            break;
        }
    }
    Ok(Value::Bool(sorted))
});

cel_fn!(list_sum, |a| {
    let l = list_arg(&a[0], "sum")?;
    let mut acc = match l.first() {
        Some(Value::Float(_)) => Value::Float(0.0),
        Some(Value::UInt(_)) => Value::UInt(0),
        _ => Value::Int(0),
    };
    for v in l.iter() {
        acc = match (&acc, v) {
            (Value::Int(x), Value::Int(y)) => Value::Int(
                x.checked_add(*y)
                    .ok_or_else(|| fail("sum", "integer overflow"))?,
            ),
            (Value::UInt(x), Value::UInt(y)) => Value::UInt(
                x.checked_add(*y)
                    .ok_or_else(|| fail("sum", "integer overflow"))?,
            ),
            (Value::Float(x), Value::Float(y)) => Value::Float(x + y),
            _ => return Err(fail("sum", "list elements must be numbers of one type")),
        };
    }
    Ok(acc)
});

fn extreme(a: &[Value], function: &str, want: std::cmp::Ordering) -> Result<Value, ExecutionError> {
    let l = list_arg(&a[0], function)?;
    let mut best: Option<&Value> = None;
    for v in l.iter() {
        best = match best {
            Some(b) if compare(v, b, function)? != want => Some(b),
            _ => Some(v),
        };
    }
    best.cloned()
        .ok_or_else(|| fail(function, format!("{function} called on an empty list")))
}

cel_fn!(list_min, |a| {
    extreme(&a, "min", std::cmp::Ordering::Less)
});
cel_fn!(list_max, |a| {
    extreme(&a, "max", std::cmp::Ordering::Greater)
});

cel_fn!(list_index_of, |a| {
    let l = list_arg(&a[0], "indexOf")?;
    Ok(Value::Int(
        l.iter().position(|v| *v == a[1]).map_or(-1, |i| i as i64),
    ))
});

cel_fn!(list_last_index_of, |a| {
    let l = list_arg(&a[0], "lastIndexOf")?;
    Ok(Value::Int(
        l.iter().rposition(|v| *v == a[1]).map_or(-1, |i| i as i64),
    ))
});

fn strings2<'a>(a: &'a [Value], function: &str) -> Result<(&'a str, &'a str), ExecutionError> {
    match (&a[0], &a[1]) {
        (Value::String(s), Value::String(r)) => Ok((s.as_str(), r.as_str())),
        _ => Err(fail(function, "arguments must be strings")),
    }
}

fn regex(pattern: &str, function: &str) -> Result<regex::Regex, ExecutionError> {
    regex::Regex::new(pattern).map_err(|e| fail(function, e))
}

cel_fn!(regex_find, |a| {
    let (s, r) = strings2(&a, "find")?;
    let re = regex(r, "find")?;
    Ok(Value::from(
        re.find(s).map_or("", |m| m.as_str()).to_owned(),
    ))
});

fn find_all(a: &[Value], limit: Option<i64>) -> Result<Value, ExecutionError> {
    let (s, r) = strings2(a, "findAll")?;
    let re = regex(r, "findAll")?;
    let take = match limit {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    };
    let found: Vec<Value> = re
        .find_iter(s)
        .take(take)
        .map(|m| Value::from(m.as_str().to_owned()))
        .collect();
    Ok(Value::List(Arc::new(found)))
}

cel_fn!(regex_find_all, |a| { find_all(&a, None) });
cel_fn!(regex_find_all_n, |a| {
    match a.get(2) {
        Some(Value::Int(n)) => find_all(&a, Some(*n)),
        _ => Err(fail("findAll", "limit must be an int")),
    }
});

/// Parses a URL as upstream's `url()` accepts it: an absolute URI or an absolute path.
fn parse_url(s: &str) -> Option<Url> {
    if s.starts_with('/') {
        let (p, q) = s.split_once('?').unwrap_or((s, ""));
        let query = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        return Some(Url {
            scheme: String::new(),
            host: String::new(),
            hostname: String::new(),
            port: String::new(),
            escaped_path: p.to_owned(),
            query,
        });
    }
    let u = url::Url::parse(s).ok()?;
    let hostname = match u.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    let port = u.port().map(|p| p.to_string()).unwrap_or_default();
    let bracketed = match u.host() {
        Some(url::Host::Ipv6(_)) => format!("[{hostname}]"),
        _ => hostname.clone(),
    };
    let host = if port.is_empty() {
        bracketed
    } else {
        format!("{bracketed}:{port}")
    };
    Some(Url {
        scheme: u.scheme().to_owned(),
        host,
        hostname,
        port,
        escaped_path: u.path().to_owned(),
        query: u.query_pairs().into_owned().collect(),
    })
}

fn string_arg<'a>(a: &'a [Value], function: &str) -> Result<&'a str, ExecutionError> {
    match &a[0] {
        Value::String(s) => Ok(s.as_str()),
        _ => Err(fail(function, "argument must be a string")),
    }
}

cel_fn!(to_url, |a| {
    let s = string_arg(&a, "url")?;
    let u = parse_url(s).ok_or_else(|| {
        fail(
            "url",
            format!("URL parse error during conversion from string: {s}"),
        )
    })?;
    Ok(Value::Opaque(Arc::new(u)))
});

cel_fn!(is_url, |a| {
    Ok(Value::Bool(parse_url(string_arg(&a, "isURL")?).is_some()))
});

fn url_of<'a>(a: &'a [Value], function: &str) -> Result<&'a Url, ExecutionError> {
    match &a[0] {
        Value::Opaque(o) => o
            .downcast_ref::<Url>()
            .ok_or_else(|| fail(function, "not a URL")),
        _ => Err(fail(function, "not a URL")),
    }
}

cel_fn!(url_scheme, |a| {
    Ok(Value::from(url_of(&a, "getScheme")?.scheme.clone()))
});
cel_fn!(url_host, |a| {
    Ok(Value::from(url_of(&a, "getHost")?.host.clone()))
});
cel_fn!(url_hostname, |a| {
    Ok(Value::from(url_of(&a, "getHostname")?.hostname.clone()))
});
cel_fn!(url_port, |a| {
    Ok(Value::from(url_of(&a, "getPort")?.port.clone()))
});
cel_fn!(url_escaped_path, |a| {
    Ok(Value::from(
        url_of(&a, "getEscapedPath")?.escaped_path.clone(),
    ))
});
cel_fn!(url_query, |a| {
    let u = url_of(&a, "getQuery")?;
    let mut m: std::collections::HashMap<Key, Value> = std::collections::HashMap::new();
    for (k, v) in &u.query {
        let entry = m
            .entry(Key::String(Arc::new(k.clone())))
            .or_insert_with(|| Value::List(Arc::new(Vec::new())));
        if let Value::List(l) = entry {
            Arc::make_mut(l).push(Value::from(v.clone()));
        }
    }
    Ok(Value::Map(Map { map: Arc::new(m) }))
});

cel_fn!(to_quantity, |a| {
    let s = string_arg(&a, "quantity")?;
    let q = Quantity::parse(s).map_err(|e| fail("quantity", e))?;
    Ok(Value::Opaque(Arc::new(Qty(q))))
});

cel_fn!(is_quantity, |a| {
    Ok(Value::Bool(
        Quantity::parse(string_arg(&a, "isQuantity")?).is_ok(),
    ))
});

fn qty(v: &Value, function: &str) -> Result<Quantity, ExecutionError> {
    match v {
        Value::Opaque(o) => o
            .downcast_ref::<Qty>()
            .map(|q| q.0)
            .ok_or_else(|| fail(function, "not a quantity")),
        Value::Int(i) => Ok(Quantity::new(*i, 0)),
        _ => Err(fail(function, "not a quantity")),
    }
}

fn is_integer(q: Quantity) -> bool {
    let v = q.value();
    v != i64::MAX && Quantity::new(v, 0) == q
}

cel_fn!(q_is_integer, |a| {
    Ok(Value::Bool(is_integer(qty(&a[0], "isInteger")?)))
});
cel_fn!(q_as_integer, |a| {
    let q = qty(&a[0], "asInteger")?;
    if !is_integer(q) {
        return Err(fail("asInteger", "cannot convert value to integer"));
    }
    Ok(Value::Int(q.value()))
});
cel_fn!(q_as_float, |a| {
    let q = qty(&a[0], "asApproximateFloat")?;
    Ok(Value::Float(q.scaled_value(-9) as f64 / 1e9))
});
cel_fn!(q_sign, |a| {
    let q = qty(&a[0], "sign")?;
    Ok(Value::Int(match q.cmp(&Quantity::ZERO) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }))
});
cel_fn!(q_add, |a| {
    let sum = qty(&a[0], "add")?
        .checked_add(qty(&a[1], "add")?)
        .ok_or_else(|| fail("add", "quantity overflow"))?;
    Ok(Value::Opaque(Arc::new(Qty(sum))))
});
cel_fn!(q_sub, |a| {
    let d = qty(&a[0], "sub")?
        .checked_sub(qty(&a[1], "sub")?)
        .ok_or_else(|| fail("sub", "quantity overflow"))?;
    Ok(Value::Opaque(Arc::new(Qty(d))))
});
cel_fn!(q_greater, |a| {
    Ok(Value::Bool(
        qty(&a[0], "isGreaterThan")? > qty(&a[1], "isGreaterThan")?,
    ))
});
cel_fn!(q_less, |a| {
    Ok(Value::Bool(
        qty(&a[0], "isLessThan")? < qty(&a[1], "isLessThan")?,
    ))
});
cel_fn!(q_compare, |a| {
    Ok(Value::Int(
        match qty(&a[0], "compareTo")?.cmp(&qty(&a[1], "compareTo")?) {
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater => 1,
        },
    ))
});

/// The two list arguments of a `sets.*` function.
type ListPair = (Arc<Vec<Value>>, Arc<Vec<Value>>);

fn two_lists(a: &[Value], function: &str) -> Result<ListPair, ExecutionError> {
    Ok((list_arg(&a[0], function)?, list_arg(&a[1], function)?))
}

cel_fn!(sets_contains, |a| {
    let (x, y) = two_lists(&a, "sets.contains")?;
    Ok(Value::Bool(y.iter().all(|e| x.contains(e))))
});

cel_fn!(sets_equivalent, |a| {
    let (x, y) = two_lists(&a, "sets.equivalent")?;
    Ok(Value::Bool(
        y.iter().all(|e| x.contains(e)) && x.iter().all(|e| y.contains(e)),
    ))
});

cel_fn!(sets_intersects, |a| {
    let (x, y) = two_lists(&a, "sets.intersects")?;
    Ok(Value::Bool(y.iter().any(|e| x.contains(e))))
});

/// CEL type name of IP addresses (as upstream's `net.IP`).
const IP: &str = "net.IP";
/// CEL type name of CIDRs (as upstream's `net.CIDR`).
const CIDR: &str = "net.CIDR";

/// An IP address as a CEL value.
#[derive(Debug, PartialEq, Eq)]
struct Ip(std::net::IpAddr);

impl Opaque for Ip {
    fn runtime_type_name(&self) -> &str {
        IP
    }
}

/// A CIDR (address and prefix length, as written) as a CEL value.
#[derive(Debug, PartialEq, Eq)]
struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Opaque for Cidr {
    fn runtime_type_name(&self) -> &str {
        CIDR
    }
}

fn ipt() -> Type {
    Type::new_opaque_type(IP)
}

fn cidrt() -> Type {
    Type::new_opaque_type(CIDR)
}

/// Kubernetes' IP and CIDR libraries (`ip`, `isIP`, `cidr`, `isCIDR` and their methods).
fn network(env: &mut Env) -> Result<(), cel::DeclarationError> {
    env.add_type(ipt())?;
    env.add_type(cidrt())?;
    let globals: Vec<(&str, &str, Vec<Type>, Fun)> = vec![
        ("ip", "string_to_ip", vec![STRING_TYPE], to_ip),
        ("isIP", "is_ip_string", vec![STRING_TYPE], is_ip),
        ("cidr", "string_to_cidr", vec![STRING_TYPE], to_cidr),
        ("isCIDR", "is_cidr_string", vec![STRING_TYPE], is_cidr),
        ("string", "ip_to_string", vec![ipt()], ip_string),
        ("string", "cidr_to_string", vec![cidrt()], cidr_string),
    ];
    for (name, id, args, f) in globals {
        env.add_overload(name, id, args, f)?;
    }
    let members: Vec<(&str, &str, Type, Vec<Type>, Fun)> = vec![
        ("family", "ip_family", ipt(), vec![], ip_family),
        (
            "isUnspecified",
            "ip_is_unspecified",
            ipt(),
            vec![],
            ip_is_unspecified,
        ),
        (
            "isLoopback",
            "ip_is_loopback",
            ipt(),
            vec![],
            ip_is_loopback,
        ),
        (
            "isLinkLocalMulticast",
            "ip_is_link_local_multicast",
            ipt(),
            vec![],
            ip_is_ll_multicast,
        ),
        (
            "isLinkLocalUnicast",
            "ip_is_link_local_unicast",
            ipt(),
            vec![],
            ip_is_ll_unicast,
        ),
        (
            "isGlobalUnicast",
            "ip_is_global_unicast",
            ipt(),
            vec![],
            ip_is_global_unicast,
        ),
        (
            "containsIP",
            "cidr_contains_ip_ip",
            cidrt(),
            vec![ipt()],
            cidr_contains_ip,
        ),
        (
            "containsIP",
            "cidr_contains_ip_string",
            cidrt(),
            vec![STRING_TYPE],
            cidr_contains_ip,
        ),
        (
            "containsCIDR",
            "cidr_contains_cidr_cidr",
            cidrt(),
            vec![cidrt()],
            cidr_contains_cidr,
        ),
        (
            "containsCIDR",
            "cidr_contains_cidr_string",
            cidrt(),
            vec![STRING_TYPE],
            cidr_contains_cidr,
        ),
        ("ip", "cidr_ip", cidrt(), vec![], cidr_ip),
        ("masked", "cidr_masked", cidrt(), vec![], cidr_masked),
        (
            "prefixLength",
            "cidr_prefix_length",
            cidrt(),
            vec![],
            cidr_prefix_length,
        ),
    ];
    for (name, id, target, args, f) in members {
        env.add_member_overload(name, id, target, args, f)?;
    }
    Ok(())
}

/// An IP as upstream's `ip()` accepts it: no zone, no IPv4-mapped IPv6 form.
fn parse_ip(s: &str) -> Option<std::net::IpAddr> {
    let ip: std::net::IpAddr = s.parse().ok()?;
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => None,
        _ => Some(ip),
    }
}

fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, prefix) = s.split_once('/')?;
    let addr = parse_ip(addr)?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some(Cidr { addr, prefix })
}

fn ip_of(v: &Value, function: &str) -> Result<std::net::IpAddr, ExecutionError> {
    match v {
        Value::Opaque(o) => o
            .downcast_ref::<Ip>()
            .map(|i| i.0)
            .ok_or_else(|| fail(function, "not an IP")),
        Value::String(s) => parse_ip(s).ok_or_else(|| {
            fail(
                function,
                format!("IP Address {s:?} parse error during conversion from string"),
            )
        }),
        _ => Err(fail(function, "not an IP")),
    }
}

fn cidr_of(v: &Value, function: &str) -> Result<(std::net::IpAddr, u8), ExecutionError> {
    match v {
        Value::Opaque(o) => o
            .downcast_ref::<Cidr>()
            .map(|c| (c.addr, c.prefix))
            .ok_or_else(|| fail(function, "not a CIDR")),
        Value::String(s) => parse_cidr(s).map(|c| (c.addr, c.prefix)).ok_or_else(|| {
            fail(
                function,
                format!("network address parse error during conversion from string: {s}"),
            )
        }),
        _ => Err(fail(function, "not a CIDR")),
    }
}

/// The address with the bits past `prefix` cleared.
fn mask(addr: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            std::net::IpAddr::V4((bits & m).into())
        }
        std::net::IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            std::net::IpAddr::V6((bits & m).into())
        }
    }
}

fn contains(net: (std::net::IpAddr, u8), ip: std::net::IpAddr) -> bool {
    net.0.is_ipv4() == ip.is_ipv4() && mask(net.0, net.1) == mask(ip, net.1)
}

cel_fn!(to_ip, |a| {
    Ok(Value::Opaque(Arc::new(Ip(ip_of(&a[0], "ip")?))))
});
cel_fn!(is_ip, |a| {
    Ok(Value::Bool(parse_ip(string_arg(&a, "isIP")?).is_some()))
});
cel_fn!(to_cidr, |a| {
    let (addr, prefix) = cidr_of(&a[0], "cidr")?;
    Ok(Value::Opaque(Arc::new(Cidr { addr, prefix })))
});
cel_fn!(is_cidr, |a| {
    Ok(Value::Bool(parse_cidr(string_arg(&a, "isCIDR")?).is_some()))
});
cel_fn!(ip_string, |a| {
    Ok(Value::from(ip_of(&a[0], "string")?.to_string()))
});
cel_fn!(cidr_string, |a| {
    let (addr, prefix) = cidr_of(&a[0], "string")?;
    Ok(Value::from(format!("{addr}/{prefix}")))
});
cel_fn!(ip_family, |a| {
    Ok(Value::Int(if ip_of(&a[0], "family")?.is_ipv4() {
        4
    } else {
        6
    }))
});
cel_fn!(ip_is_unspecified, |a| {
    Ok(Value::Bool(ip_of(&a[0], "isUnspecified")?.is_unspecified()))
});
cel_fn!(ip_is_loopback, |a| {
    Ok(Value::Bool(ip_of(&a[0], "isLoopback")?.is_loopback()))
});
cel_fn!(ip_is_ll_multicast, |a| {
    Ok(Value::Bool(match ip_of(&a[0], "isLinkLocalMulticast")? {
        std::net::IpAddr::V4(v) => v.octets()[..3] == [224, 0, 0],
        std::net::IpAddr::V6(v) => v.segments()[0] & 0xff0f == 0xff02,
    }))
});
cel_fn!(ip_is_ll_unicast, |a| {
    Ok(Value::Bool(match ip_of(&a[0], "isLinkLocalUnicast")? {
        std::net::IpAddr::V4(v) => v.is_link_local(),
        std::net::IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }))
});
cel_fn!(ip_is_global_unicast, |a| {
    let ip = ip_of(&a[0], "isGlobalUnicast")?;
    // Go's net.IP.IsGlobalUnicast: not unspecified, loopback, multicast, link-local
    // or (IPv4) broadcast
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || match ip {
            std::net::IpAddr::V4(v) => v.is_link_local() || v.is_broadcast(),
            std::net::IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
        };
    Ok(Value::Bool(!special))
});
cel_fn!(cidr_contains_ip, |a| {
    Ok(Value::Bool(contains(
        cidr_of(&a[0], "containsIP")?,
        ip_of(&a[1], "containsIP")?,
    )))
});
cel_fn!(cidr_contains_cidr, |a| {
    let outer = cidr_of(&a[0], "containsCIDR")?;
    let inner = cidr_of(&a[1], "containsCIDR")?;
    Ok(Value::Bool(inner.1 >= outer.1 && contains(outer, inner.0)))
});
cel_fn!(cidr_ip, |a| {
    Ok(Value::Opaque(Arc::new(Ip(cidr_of(&a[0], "ip")?.0))))
});
cel_fn!(cidr_masked, |a| {
    let (addr, prefix) = cidr_of(&a[0], "masked")?;
    Ok(Value::Opaque(Arc::new(Cidr {
        addr: mask(addr, prefix),
        prefix,
    })))
});
cel_fn!(cidr_prefix_length, |a| {
    Ok(Value::Int(i64::from(cidr_of(&a[0], "prefixLength")?.1)))
});

/// CEL type name of a named format (as upstream's `kubernetes.NamedFormat`).
const FORMAT: &str = "kubernetes.NamedFormat";

/// One of the formats of Kubernetes' format library.
#[derive(Debug, PartialEq, Eq)]
struct NamedFormat(&'static str);

impl Opaque for NamedFormat {
    fn runtime_type_name(&self) -> &str {
        FORMAT
    }
}

fn fmtt() -> Type {
    Type::new_opaque_type(FORMAT)
}

/// The formats `format.<name>()` and `format.named("<name>")` know.
const FORMAT_NAMES: [&str; 11] = [
    "dns1123Label",
    "dns1123Subdomain",
    "dns1035Label",
    "qualifiedName",
    "labelValue",
    "uri",
    "uuid",
    "byte",
    "date",
    "datetime",
    "dns1123LabelPrefix",
];

/// Kubernetes' format library: `format.dns1123Label().validate(s)` is an optional list
/// of what is wrong with `s` (none when valid); `format.named(name)` an optional format.
fn formats(env: &mut Env) -> Result<(), cel::DeclarationError> {
    env.add_type(fmtt())?;
    let constructors: [(&str, Fun); 11] = [
        ("format.dns1123Label", |_| ret(named("dns1123Label"))),
        ("format.dns1123Subdomain", |_| {
            ret(named("dns1123Subdomain"))
        }),
        ("format.dns1035Label", |_| ret(named("dns1035Label"))),
        ("format.qualifiedName", |_| ret(named("qualifiedName"))),
        ("format.labelValue", |_| ret(named("labelValue"))),
        ("format.uri", |_| ret(named("uri"))),
        ("format.uuid", |_| ret(named("uuid"))),
        ("format.byte", |_| ret(named("byte"))),
        ("format.date", |_| ret(named("date"))),
        ("format.datetime", |_| ret(named("datetime"))),
        ("format.dns1123LabelPrefix", |_| {
            ret(named("dns1123LabelPrefix"))
        }),
    ];
    for (name, f) in constructors {
        env.add_overload(name, name, vec![], f)?;
    }
    env.add_overload(
        "format.named",
        "format_named_string",
        vec![STRING_TYPE],
        format_named,
    )?;
    env.add_member_overload(
        "validate",
        "named_format_validate_string",
        fmtt(),
        vec![STRING_TYPE],
        format_validate,
    )?;
    Ok(())
}

fn named(name: &'static str) -> Value {
    Value::Opaque(Arc::new(NamedFormat(name)))
}

cel_fn!(format_named, |a| {
    let wanted = string_arg(&a, "format.named")?;
    let found = FORMAT_NAMES.iter().find(|n| **n == wanted);
    let opt = match found {
        Some(n) => cel::objects::OptionalValue::of(named(n)),
        None => cel::objects::OptionalValue::none(),
    };
    Ok(Value::Opaque(Arc::new(opt)))
});

cel_fn!(format_validate, |a| {
    let format = match &a[0] {
        Value::Opaque(o) => o
            .downcast_ref::<NamedFormat>()
            .map(|f| f.0)
            .ok_or_else(|| fail("validate", "not a format"))?,
        _ => return Err(fail("validate", "not a format")),
    };
    let s = match &a[1] {
        Value::String(s) => s.as_str(),
        _ => return Err(fail("validate", "argument must be a string")),
    };
    let problems = crate::format::named_format_errors(format, s);
    let opt = if problems.is_empty() {
        cel::objects::OptionalValue::none()
    } else {
        cel::objects::OptionalValue::of(Value::List(Arc::new(
            problems.into_iter().map(Value::from).collect(),
        )))
    };
    Ok(Value::Opaque(Arc::new(opt)))
});
