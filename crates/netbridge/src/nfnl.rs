//! nf_tables over netlink: [`NftNetlink`] applies an [`NftBatch`] as one
//! `NFNL_SUBSYS_NFTABLES` transaction (batch begin, messages, batch end) on a
//! netlink socket opened inside the target network namespace.
//!
//! The `nft` binary reads the whole table back from the kernel before every
//! change, so one changed Service costs time proportional to every Service. Here
//! the batch is encoded straight into `NEWSETELEM` / `DELSETELEM`, `NEWCHAIN`,
//! `NEWRULE` ... messages and sent in one `send(2)`: the cost follows the size of
//! the change.
//!
//! The encoder understands the subset of the nftables JSON schema that
//! [`ServiceProxy`](crate::ServiceProxy) emits (tables, chains, rules, named sets
//! and verdict maps, their elements; payload, meta, fib, ct, bitwise, cmp, lookup,
//! numgen, dynset, immediate, nat and masq expressions) and refuses anything else
//! with [`Error::NftEncode`], so both runners program the same ruleset.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use kcore_ns::NetNs;
use serde_json::Value;

use crate::nft::{NftBatch, NftRunner};
use crate::Error;

// linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;

// linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_IPV4: u8 = 2;

// linux/netfilter/nf_tables.h: messages
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

// attributes
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_USERDATA: u16 = 13;
// nft's set userdata (type, length, value): the byte order of integer keys, so
// `nft list` prints a numgen map's keys as the numbers they are
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

// set flags
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

// verdicts
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

// registers: the verdict register and the 32-bit data registers
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG32_00: u32 = 8;

// hooks (NF_INET_*)
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;

// nft's datatype ids (NFTA_SET_KEY_TYPE / DATA_TYPE), concatenated 6 bits at a time
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

// expression attributes
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFT_META_MARK: u32 = 3;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_NG_DREG: u16 = 1;
const NFTA_NG_MODULUS: u16 = 2;
const NFTA_NG_TYPE: u16 = 3;
const NFTA_NG_OFFSET: u16 = 4;
const NFT_NG_INCREMENTAL: u32 = 0;
const NFT_NG_RANDOM: u32 = 1;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_SADDR: u32 = 1;
const NFTA_FIB_F_DADDR: u32 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFT_NAT_SNAT: u32 = 0;
const NFT_NAT_DNAT: u32 = 1;
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;
const NFT_BYTEORDER_HTON: u32 = 1;
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFT_DYNSET_OP_ADD: u32 = 0;
const NFT_DYNSET_OP_UPDATE: u32 = 1;

// conntrack state bits (NF_CT_STATE_BIT and friends)
const CT_STATE_INVALID: u32 = 1;
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;
const CT_STATE_NEW: u32 = 1 << 3;
const CT_STATE_UNTRACKED: u32 = 1 << 6;

// conntrack status bits (IPS_*)
const IPS_SRC_NAT: u32 = 0x10;
const IPS_DST_NAT: u32 = 0x20;
// rtnetlink route types (fib ... type)
const RTN_LOCAL: u32 = 2;

/// Applies [`NftBatch`]es to the kernel directly over nf_tables netlink, one
/// transaction per batch, inside the network namespace it was opened in.
///
/// Clones share one socket (and serialise on it), like one connection per
/// namespace reused for every request.
#[derive(Debug, Clone)]
pub struct NftNetlink {
    inner: Arc<Mutex<Conn>>,
    maps: bool,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    seq: u32,
    sndbuf: usize,
    target: String,
}

impl NftNetlink {
    /// Opens an nf_tables netlink socket in the caller's network namespace.
    pub fn new() -> Result<Self, Error> {
        Self::open(None)
    }

    /// Opens an nf_tables netlink socket inside the network namespace file at
    /// `path` (e.g. `/run/netns/node-a`).
    pub fn in_netns(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open(Some(&NetNs::open(path.as_ref())?))
    }

    /// Opens an nf_tables netlink socket inside `netns` (the caller's namespace if
    /// `None`).
    pub fn open(netns: Option<&NetNs>) -> Result<Self, Error> {
        let target = netns.map_or_else(
            || "/proc/thread-self/ns/net".to_owned(),
            |n| n.path().display().to_string(),
        );
        let fd = kcore_ns::netlink::socket_in(netns, kcore_ns::netlink::NETLINK_NETFILTER)?;
        let io = |source| Error::NftNetlink {
            op: "configure socket".into(),
            target: target.clone(),
            source,
        };
        // errors then carry only the header of the failed message, not all of it
        setsockopt(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1).map_err(io)?;
        let timeout = libc::timeval {
            tv_sec: 30,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO reads a timeval of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Conn {
                fd,
                seq: std::process::id().wrapping_mul(0x1000),
                sndbuf: 0,
                target,
            })),
            maps: true,
        })
    }

    /// Whether [`ServiceProxy`](crate::ServiceProxy) may use per-Service endpoint
    /// maps (default `true`; see [`NftRunner::endpoint_maps`]). With `false` the
    /// ruleset is exactly the one [`NftCommand`](crate::NftCommand) programs.
    pub fn with_endpoint_maps(mut self, on: bool) -> Self {
        self.maps = on;
        self
    }
}

fn setsockopt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: the option value is a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl NftRunner for NftNetlink {
    fn apply(&self, batch: &NftBatch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let _span = tracing::debug_span!("nft_netlink_apply", commands = batch.len()).entered();
        let mut conn = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = conn.seq;
        let msgs = encode(batch, first)?;
        conn.seq = msgs.next_seq;
        conn.transact(&msgs)
    }

    fn endpoint_maps(&self) -> bool {
        self.maps
    }
}

impl Conn {
    fn err(&self, op: impl Into<String>, source: std::io::Error) -> Error {
        Error::NftNetlink {
            op: op.into(),
            target: self.target.clone(),
            source,
        }
    }

    /// Sends the batch and waits for the kernel's verdict on it.
    fn transact(&mut self, msgs: &Encoded) -> Result<(), Error> {
        let len = msgs.buf.len();
        if len + 4096 > self.sndbuf {
            // a netlink send must fit the socket buffer whole; root may exceed wmem_max
            let want = i32::try_from(len + 65_536).unwrap_or(i32::MAX);
            setsockopt(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
                .or_else(|_| setsockopt(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUF, want))
                .map_err(|e| self.err("size send buffer", e))?;
            self.sndbuf = want as usize;
        }
        let mut addr: libc::sockaddr_nl =
            // SAFETY: sockaddr_nl is plain data; all-zero is "the kernel".
            unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msgs.buf.as_ptr().cast(),
                len,
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(self.err("send batch", std::io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; 65_536];
        loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.err("receive acknowledgement", e));
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let mlen = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
                if mlen < 16 || mlen > rest.len() {
                    break;
                }
                if ty == NLMSG_ERROR && mlen >= 20 {
                    let code = i32::from_ne_bytes(rest[16..20].try_into().unwrap_or_default());
                    if let Some(what) = msgs.describe(seq) {
                        if code != 0 {
                            return Err(self.err(what, std::io::Error::from_raw_os_error(-code)));
                        }
                        if seq == msgs.ack_seq {
                            return Ok(());
                        }
                    }
                }
                let step = ((mlen + 3) & !3).min(rest.len());
                rest = &rest[step..];
            }
        }
    }
}

/// A batch encoded as netlink messages.
struct Encoded {
    buf: Vec<u8>,
    /// The sequence number of the batch-begin message.
    first_seq: u32,
    /// The message that asks for an acknowledgement (the last one before the end).
    ack_seq: u32,
    next_seq: u32,
    /// What each message does, by `seq - first_seq - 1`.
    ops: Vec<String>,
}

impl Encoded {
    fn describe(&self, seq: u32) -> Option<String> {
        let i = seq.wrapping_sub(self.first_seq) as usize;
        if i == 0 {
            return Some("commit transaction".into());
        }
        self.ops.get(i - 1).cloned()
    }
}

/// Netlink message writer: messages with nested attributes.
struct Writer {
    buf: Vec<u8>,
    seq: u32,
    nests: Vec<usize>,
    /// An attribute outgrew netlink's 16-bit length.
    overflow: bool,
}

impl Writer {
    fn msg(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        start
    }

    fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn set_flags(&mut self, start: usize, flags: u16) {
        let old = u16::from_ne_bytes([self.buf[start + 6], self.buf[start + 7]]);
        self.buf[start + 6..start + 8].copy_from_slice(&(old | flags).to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn end_nest(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = self.buf.len() - start;
            self.overflow |= len > usize::from(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        }
    }

    /// `NFTA_DATA_VALUE` inside a nest of type `ty`.
    fn data_value(&mut self, ty: u16, v: &[u8]) {
        self.nest(ty);
        self.attr(NFTA_DATA_VALUE, v);
        self.end_nest();
    }

    /// `NFTA_DATA_VERDICT` inside a nest of type `ty`.
    fn data_verdict(&mut self, ty: u16, code: i32, chain: Option<&str>) {
        self.nest(ty);
        self.nest(NFTA_DATA_VERDICT);
        self.attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
        if let Some(c) = chain {
            self.str(NFTA_VERDICT_CHAIN, c);
        }
        self.end_nest();
        self.end_nest();
    }

    /// Starts one expression of a rule's expression list.
    fn expr(&mut self, name: &str) {
        self.nest(NFTA_LIST_ELEM);
        self.str(NFTA_EXPR_NAME, name);
        self.nest(NFTA_EXPR_DATA);
    }

    fn end_expr(&mut self) {
        self.end_nest();
        self.end_nest();
    }
}

/// Set elements per `NEWSETELEM` / `DELSETELEM` message: their list is one netlink
/// attribute, whose length must fit 16 bits.
const ELEMS_PER_MSG: usize = 128;

/// Why a JSON command cannot be encoded.
type Enc<T> = Result<T, String>;

fn field<'a>(v: &'a Value, k: &str) -> Enc<&'a Value> {
    v.get(k).ok_or_else(|| format!("missing {k:?}"))
}

fn text<'a>(v: &'a Value, k: &str) -> Enc<&'a str> {
    field(v, k)?
        .as_str()
        .ok_or_else(|| format!("{k:?} is not a string"))
}

fn num(v: &Value) -> Enc<u64> {
    v.as_u64().ok_or_else(|| format!("{v} is not a number"))
}

fn family(v: &Value) -> Enc<()> {
    match v.get("family").and_then(Value::as_str) {
        None | Some("ip") => Ok(()),
        Some(f) => Err(format!("family {f} (only ip)")),
    }
}

/// The encoding of one value class (what a register holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ipv4,
    Proto,
    Service,
    Ifname,
    /// A host-endian 32-bit integer (marks, numgen, fib address type, ct status).
    U32,
    AddrType,
    CtStatus,
    /// `ct state` bits (host-endian 32 bits).
    CtState,
}

impl Kind {
    fn len(self) -> usize {
        match self {
            Kind::Ipv4 | Kind::U32 | Kind::AddrType | Kind::CtStatus | Kind::CtState => 4,
            Kind::Proto => 1,
            Kind::Service => 2,
            Kind::Ifname => 16,
        }
    }

    fn type_id(self) -> Enc<u32> {
        Ok(match self {
            Kind::Ipv4 => TYPE_IPADDR,
            Kind::Proto => TYPE_INET_PROTOCOL,
            Kind::Service => TYPE_INET_SERVICE,
            Kind::U32 => TYPE_INTEGER,
            k => return Err(format!("{k:?} cannot key a set")),
        })
    }

    fn of_type_name(name: &str) -> Enc<Kind> {
        Ok(match name {
            "ipv4_addr" => Kind::Ipv4,
            "inet_proto" => Kind::Proto,
            "inet_service" => Kind::Service,
            "integer" | "mark" => Kind::U32,
            other => return Err(format!("set type {other}")),
        })
    }

    /// Encodes a JSON constant as this kind's bytes (unpadded).
    fn value(self, v: &Value) -> Enc<Vec<u8>> {
        let bad = || format!("{v} is not a {self:?} value");
        Ok(match self {
            Kind::Ipv4 => v
                .as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
                .ok_or_else(bad)?
                .octets()
                .to_vec(),
            Kind::Proto => vec![match v {
                Value::String(s) => match s.as_str() {
                    "tcp" => 6,
                    "udp" => 17,
                    "sctp" => 132,
                    "icmp" => 1,
                    _ => return Err(bad()),
                },
                Value::Number(_) => u8::try_from(num(v)?).map_err(|_| bad())?,
                _ => return Err(bad()),
            }],
            Kind::Service => u16::try_from(num(v)?)
                .map_err(|_| bad())?
                .to_be_bytes()
                .to_vec(),
            Kind::Ifname => {
                let s = v.as_str().ok_or_else(bad)?;
                if s.len() >= 16 || s.contains('*') {
                    return Err(bad());
                }
                let mut b = s.as_bytes().to_vec();
                b.resize(16, 0);
                b
            }
            Kind::U32 => u32::try_from(num(v)?)
                .map_err(|_| bad())?
                .to_ne_bytes()
                .to_vec(),
            Kind::AddrType => match v.as_str() {
                Some("local") => RTN_LOCAL.to_ne_bytes().to_vec(),
                _ => return Err(bad()),
            },
            Kind::CtStatus => match v.as_str() {
                Some("dnat") => IPS_DST_NAT.to_ne_bytes().to_vec(),
                Some("snat") => IPS_SRC_NAT.to_ne_bytes().to_vec(),
                _ => return Err(bad()),
            },
            Kind::CtState => {
                // one state name or a list of them, or'ed together
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                let mut bits = 0;
                for n in names {
                    bits |= match n.as_str() {
                        Some("invalid") => CT_STATE_INVALID,
                        Some("established") => CT_STATE_ESTABLISHED,
                        Some("related") => CT_STATE_RELATED,
                        Some("new") => CT_STATE_NEW,
                        Some("untracked") => CT_STATE_UNTRACKED,
                        _ => return Err(bad()),
                    };
                }
                bits.to_ne_bytes().to_vec()
            }
        })
    }
}

/// Register-aligned length: every field starts on a 32-bit register.
fn reg_len(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Encodes a (possibly `concat`) constant guessing each field's kind from its
/// shape: dotted quads are addresses, protocol names are protocols, numbers are
/// ports unless `int` says they are 32-bit integers.
fn guess_value(v: &Value, int: bool) -> Enc<Vec<u8>> {
    let fields: Vec<&Value> = match v.get("concat").and_then(Value::as_array) {
        Some(a) => a.iter().collect(),
        None => vec![v],
    };
    let mut out = Vec::new();
    for f in fields {
        let kind = match f {
            Value::String(s) if s.parse::<Ipv4Addr>().is_ok() => Kind::Ipv4,
            Value::String(_) => Kind::Proto,
            Value::Number(_) if int => Kind::U32,
            Value::Number(_) => Kind::Service,
            other => return Err(format!("constant {other}")),
        };
        let mut b = kind.value(f)?;
        b.resize(reg_len(b.len()), 0);
        out.extend(b);
    }
    Ok(out)
}

/// An interval element's start key and end key (none for an interval that runs to the
/// end of the key space).
type IntervalKeys = (Vec<u8>, Option<Vec<u8>>);

/// An interval key: `{"range": [lo, hi]}` of two addresses, or of 32-bit integers
/// (alone or ending a concatenation of them). Returns the start key and the end key
/// (`hi + 1`), every field big-endian so that ranges are contiguous byte strings
/// (rules convert their host-order integers with `byteorder` before looking them up).
fn interval_key(key: &Value) -> Option<Enc<IntervalKeys>> {
    let fields: Vec<&Value> = match key.get("concat").and_then(Value::as_array) {
        Some(a) => a.iter().collect(),
        None => vec![key],
    };
    let (last, prefix) = fields.split_last()?;
    let range = last.get("range")?.as_array()?;
    if prefix.is_empty() {
        if let [lo, hi] = range.as_slice() {
            let addr = |v: &Value| v.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
            if let (Some(lo), Some(hi)) = (addr(lo), addr(hi)) {
                // an address range: the end element is hi + 1, none when hi is the
                // last address (the interval then runs to the end of the space)
                let end = u32::from(hi)
                    .checked_add(1)
                    .map(|e| e.to_be_bytes().to_vec());
                return Some(Ok((lo.octets().to_vec(), end)));
            }
        }
    }
    let int = |v: &Value| u32::try_from(num(v)?).map_err(|e| e.to_string());
    Some((|| {
        let [lo, hi] = range.as_slice() else {
            return Err("a range has two ends".to_string());
        };
        let mut start = Vec::new();
        for p in prefix {
            start.extend_from_slice(&int(p)?.to_be_bytes());
        }
        let mut end = start.clone();
        start.extend_from_slice(&int(lo)?.to_be_bytes());
        let past = int(hi)?.checked_add(1).ok_or("range end past 2^32 - 1")?;
        end.extend_from_slice(&past.to_be_bytes());
        Ok((start, Some(end)))
    })())
}

/// Builds the messages of one batch.
struct Encoder {
    w: Writer,
    ops: Vec<String>,
    set_id: u32,
    anon: u32,
}

/// Encodes `batch` as one nf_tables transaction whose first message has `seq`.
fn encode(batch: &NftBatch, seq: u32) -> Result<Encoded, Error> {
    let mut e = Encoder {
        w: Writer {
            buf: Vec::with_capacity(256 * batch.len() + 64),
            seq,
            nests: Vec::new(),
            overflow: false,
        },
        ops: Vec::new(),
        set_id: 0,
        anon: 0,
    };
    let begin = e.w.msg(NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES);
    e.w.end_msg(begin);
    let mut last = begin;
    for cmd in batch.commands() {
        last = e.command(cmd).map_err(|reason| Error::NftEncode {
            command: cmd.to_string(),
            reason,
        })?;
    }
    if e.w.overflow {
        return Err(Error::NftEncode {
            command: format!("a batch of {} commands", batch.len()),
            reason: "an attribute is longer than netlink's 65,535 bytes".into(),
        });
    }
    e.w.set_flags(last, NLM_F_ACK);
    let ack_seq = e.w.seq.wrapping_sub(1);
    let end = e.w.msg(NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES);
    e.w.end_msg(end);
    Ok(Encoded {
        buf: e.w.buf,
        first_seq: seq,
        ack_seq,
        next_seq: e.w.seq,
        ops: e.ops,
    })
}

impl Encoder {
    /// Starts an nf_tables message and records what it does.
    fn start(&mut self, msg: u16, flags: u16, what: String) -> usize {
        self.ops.push(what);
        self.w
            .msg((NFNL_SUBSYS_NFTABLES << 8) | msg, flags, NFPROTO_IPV4, 0)
    }

    /// Encodes one JSON command; returns the offset of its last message.
    fn command(&mut self, cmd: &Value) -> Enc<usize> {
        let obj = cmd.as_object().ok_or("command is not an object")?;
        let (verb, body) = obj.iter().next().ok_or("empty command")?;
        let (kind, o) = body
            .as_object()
            .and_then(|b| b.iter().next())
            .ok_or("empty command body")?;
        family(o)?;
        match (verb.as_str(), kind.as_str()) {
            ("add", "table") | ("delete", "table") => {
                let name = text(o, "name")?;
                let (msg, flags) = if verb == "add" {
                    (NFT_MSG_NEWTABLE, NLM_F_CREATE)
                } else {
                    (NFT_MSG_DELTABLE, 0)
                };
                let m = self.start(msg, flags, format!("{verb} table ip {name}"));
                self.w.str(NFTA_TABLE_NAME, name);
                self.w.end_msg(m);
                Ok(m)
            }
            ("add", "chain") => self.add_chain(o),
            ("flush", "chain") | ("delete", "chain") => {
                let (table, name) = (text(o, "table")?, text(o, "name")?);
                let (msg, attr) = if verb == "flush" {
                    (NFT_MSG_DELRULE, NFTA_RULE_CHAIN)
                } else {
                    (NFT_MSG_DELCHAIN, NFTA_CHAIN_NAME)
                };
                let m = self.start(msg, 0, format!("{verb} chain ip {table} {name}"));
                self.w.str(NFTA_CHAIN_TABLE, table);
                self.w.str(attr, name);
                self.w.end_msg(m);
                Ok(m)
            }
            ("add", "rule") => self.add_rule(o),
            ("add", "map") | ("add", "set") => self.add_set(o, kind == "map"),
            ("delete", "set") | ("delete", "map") => {
                let (table, name) = (text(o, "table")?, text(o, "name")?);
                let m = self.start(
                    NFT_MSG_DELSET,
                    0,
                    format!("delete {kind} ip {table} {name}"),
                );
                self.w.str(NFTA_SET_TABLE, table);
                self.w.str(NFTA_SET_NAME, name);
                self.w.end_msg(m);
                Ok(m)
            }
            ("add", "element") | ("delete", "element") => {
                let (table, name) = (text(o, "table")?, text(o, "name")?);
                let elems = field(o, "elem")?.as_array().ok_or("elem is not a list")?;
                let (msg, flags) = if verb == "add" {
                    (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
                } else {
                    (NFT_MSG_DELSETELEM, 0)
                };
                let mut m = 0;
                for (c, chunk) in elems.chunks(ELEMS_PER_MSG).enumerate() {
                    m = self.start(
                        msg,
                        flags,
                        format!(
                            "{verb} element ip {table} {name} (elements {} to {} of {}, first {})",
                            c * ELEMS_PER_MSG + 1,
                            c * ELEMS_PER_MSG + chunk.len(),
                            elems.len(),
                            chunk[0]
                        ),
                    );
                    self.w.str(NFTA_SET_ELEM_LIST_TABLE, table);
                    self.w.str(NFTA_SET_ELEM_LIST_SET, name);
                    self.w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
                    for el in chunk {
                        // a map element is [key, data]; a set element is the key alone
                        let (key, data) = match el.as_array() {
                            Some(kv) if kv.len() == 2 && verb == "add" => (&kv[0], Some(&kv[1])),
                            _ => (el, None),
                        };
                        // a range [lo, hi] of 32-bit integers is an interval: a start
                        // element carrying the data and an end element at hi + 1, keys in
                        // network order (rules convert with `byteorder` before looking up)
                        let (start, end) = match interval_key(key) {
                            Some(r) => r?,
                            None => (guess_value(key, false)?, None),
                        };
                        self.w.nest(NFTA_LIST_ELEM);
                        self.w.data_value(NFTA_SET_ELEM_KEY, &start);
                        if let Some(d) = data {
                            match verdict(d) {
                                Ok((code, chain)) => {
                                    self.w.data_verdict(NFTA_SET_ELEM_DATA, code, Some(chain))
                                }
                                Err(_) => self
                                    .w
                                    .data_value(NFTA_SET_ELEM_DATA, &guess_value(d, false)?),
                            }
                        }
                        self.w.end_nest();
                        if let Some(end) = end {
                            self.w.nest(NFTA_LIST_ELEM);
                            self.w.data_value(NFTA_SET_ELEM_KEY, &end);
                            self.w.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                            self.w.end_nest();
                        }
                    }
                    self.w.end_nest();
                    self.w.end_msg(m);
                }
                if elems.is_empty() {
                    return Err("no elements".into());
                }
                Ok(m)
            }
            (v, k) => Err(format!("unsupported command {v} {k}")),
        }
    }

    fn add_chain(&mut self, o: &Value) -> Enc<usize> {
        let (table, name) = (text(o, "table")?, text(o, "name")?);
        let m = self.start(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            format!("add chain ip {table} {name}"),
        );
        self.w.str(NFTA_CHAIN_TABLE, table);
        self.w.str(NFTA_CHAIN_NAME, name);
        if let Some(hook) = o.get("hook").and_then(Value::as_str) {
            let num = match hook {
                "prerouting" => NF_INET_PRE_ROUTING,
                "input" => NF_INET_LOCAL_IN,
                "forward" => NF_INET_FORWARD,
                "output" => NF_INET_LOCAL_OUT,
                "postrouting" => NF_INET_POST_ROUTING,
                h => return Err(format!("hook {h}")),
            };
            let prio = field(o, "prio")?
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or("prio is not a number")?;
            self.w.nest(NFTA_CHAIN_HOOK);
            self.w.u32(NFTA_HOOK_HOOKNUM, num);
            self.w.attr(NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
            self.w.end_nest();
            self.w.str(NFTA_CHAIN_TYPE, text(o, "type")?);
            match o.get("policy").and_then(Value::as_str) {
                None | Some("accept") => self.w.u32(NFTA_CHAIN_POLICY, NF_ACCEPT),
                Some("drop") => self.w.u32(NFTA_CHAIN_POLICY, 0),
                Some(p) => return Err(format!("policy {p}")),
            }
        }
        self.w.end_msg(m);
        Ok(m)
    }

    fn add_set(&mut self, o: &Value, map: bool) -> Enc<usize> {
        let (table, name) = (text(o, "table")?, text(o, "name")?);
        let kinds: Vec<Kind> = match field(o, "type")? {
            Value::String(s) => vec![Kind::of_type_name(s)?],
            Value::Array(a) => a
                .iter()
                .map(|t| Kind::of_type_name(t.as_str().unwrap_or_default()))
                .collect::<Enc<_>>()?,
            t => return Err(format!("set type {t}")),
        };
        let mut flags = 0;
        for f in flag_list(o) {
            flags |= match f.as_str() {
                // a set that rules update is "dynamic" (NFT_SET_EVAL)
                Some("timeout") => NFT_SET_TIMEOUT | NFT_SET_EVAL,
                Some("dynamic") => NFT_SET_EVAL,
                Some("interval") => NFT_SET_INTERVAL,
                _ => return Err(format!("set flag {f}")),
            };
        }
        // a map's data: verdicts, or values of one or more (concatenated) types
        let data: Option<Vec<Kind>> = match o.get("map") {
            _ if !map => None,
            Some(Value::String(v)) if v == "verdict" => None,
            Some(Value::String(t)) => Some(vec![Kind::of_type_name(t)?]),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|t| Kind::of_type_name(t.as_str().unwrap_or_default()))
                    .collect::<Enc<_>>()?,
            ),
            other => return Err(format!("map data {other:?}")),
        };
        if map {
            flags |= NFT_SET_MAP;
        }
        let kind = if map { "map" } else { "set" };
        let m = self.start(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            format!("add {kind} ip {table} {name}"),
        );
        self.set_id += 1;
        self.w.str(NFTA_SET_TABLE, table);
        self.w.str(NFTA_SET_NAME, name);
        self.w.u32(NFTA_SET_FLAGS, flags);
        self.set_types(&kinds)?;
        match &data {
            Some(kinds) => {
                let ty = kinds
                    .iter()
                    .try_fold(0, |ty, k| Ok::<_, String>((ty << TYPE_BITS) | k.type_id()?))?;
                let len: usize = kinds.iter().map(|k| reg_len(k.len())).sum();
                self.w.u32(NFTA_SET_DATA_TYPE, ty);
                self.w.u32(NFTA_SET_DATA_LEN, len as u32);
            }
            None if map => {
                self.w.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
                self.w.u32(NFTA_SET_DATA_LEN, 16);
            }
            None => {}
        }
        self.w.u32(NFTA_SET_ID, self.set_id);
        if let Some(t) = o.get("timeout") {
            self.w.u64(NFTA_SET_TIMEOUT, num(t)?.saturating_mul(1000));
        }
        self.w.end_msg(m);
        Ok(m)
    }

    fn set_types(&mut self, kinds: &[Kind]) -> Enc<()> {
        let mut ty = 0;
        let mut len = 0;
        for k in kinds {
            ty = (ty << TYPE_BITS) | k.type_id()?;
            len += if kinds.len() > 1 {
                reg_len(k.len())
            } else {
                k.len()
            };
        }
        self.w.u32(NFTA_SET_KEY_TYPE, ty);
        self.w.u32(NFTA_SET_KEY_LEN, len as u32);
        Ok(())
    }

    /// An anonymous constant map (`numgen ... map { 0 : ..., 1 : ... }`), keyed by
    /// 32-bit integers. `verdicts` picks verdict data, else values (concatenations).
    fn anon_map(&mut self, table: &str, arms: &[Value], verdicts: bool) -> Enc<(String, u32)> {
        let name = "__map%d".to_owned();
        self.set_id += 1;
        self.anon += 1;
        let id = self.set_id;
        let data: Vec<Enc<Vec<u8>>> = if verdicts {
            Vec::new()
        } else {
            arms.iter()
                .map(|a| guess_value(a.get(1).ok_or("map arm without data")?, false))
                .collect()
        };
        let data: Vec<Vec<u8>> = data.into_iter().collect::<Enc<_>>()?;
        let m = self.start(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            format!("add anonymous map in table ip {table}"),
        );
        self.w.str(NFTA_SET_TABLE, table);
        self.w.str(NFTA_SET_NAME, &name);
        self.w.u32(
            NFTA_SET_FLAGS,
            NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP,
        );
        self.w.u32(NFTA_SET_KEY_TYPE, TYPE_INTEGER);
        self.w.u32(NFTA_SET_KEY_LEN, 4);
        if verdicts {
            self.w.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            self.w.u32(NFTA_SET_DATA_LEN, 16);
        } else {
            // the values are address . port concatenations
            let first = arms.first().and_then(|a| a.get(1)).ok_or("empty map")?;
            let fields = first
                .get("concat")
                .and_then(Value::as_array)
                .map_or(1, Vec::len);
            let ty = if fields == 2 {
                (TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE
            } else {
                TYPE_IPADDR
            };
            self.w.u32(NFTA_SET_DATA_TYPE, ty);
            self.w.u32(NFTA_SET_DATA_LEN, data[0].len() as u32);
        }
        self.w.nest(NFTA_SET_DESC);
        self.w.u32(NFTA_SET_DESC_SIZE, arms.len() as u32);
        self.w.end_nest();
        self.w.u32(NFTA_SET_ID, id);
        let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
        udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
        self.w.attr(NFTA_SET_USERDATA, &udata);
        self.w.end_msg(m);

        for (c, chunk) in arms.chunks(ELEMS_PER_MSG).enumerate() {
            let m = self.start(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                format!("add elements to an anonymous map in table ip {table}"),
            );
            self.w.str(NFTA_SET_ELEM_LIST_TABLE, table);
            self.w.str(NFTA_SET_ELEM_LIST_SET, &name);
            self.w.u32(NFTA_SET_ELEM_LIST_SET_ID, id);
            self.w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            for (j, arm) in chunk.iter().enumerate() {
                let i = c * ELEMS_PER_MSG + j;
                let key = arm.get(0).ok_or("map arm without key")?;
                self.w.nest(NFTA_LIST_ELEM);
                self.w
                    .data_value(NFTA_SET_ELEM_KEY, &guess_value(key, true)?);
                if verdicts {
                    let (code, chain) = verdict(arm.get(1).ok_or("map arm without verdict")?)?;
                    self.w.data_verdict(NFTA_SET_ELEM_DATA, code, Some(chain));
                } else {
                    self.w.data_value(NFTA_SET_ELEM_DATA, &data[i]);
                }
                self.w.end_nest();
            }
            self.w.end_nest();
            self.w.end_msg(m);
        }
        Ok((name, id))
    }

    fn add_rule(&mut self, o: &Value) -> Enc<usize> {
        let (table, chain) = (text(o, "table")?, text(o, "chain")?);
        let stmts = field(o, "expr")?.as_array().ok_or("expr is not a list")?;
        // anonymous maps go first: the rule refers to them by id
        let mut anon = Vec::new();
        for s in stmts {
            if let Some((arms, verdicts)) = anon_arms(s) {
                anon.push(self.anon_map(table, arms, verdicts)?);
            }
        }
        let m = self.start(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            format!("add rule ip {table} {chain}"),
        );
        self.w.str(NFTA_RULE_TABLE, table);
        self.w.str(NFTA_RULE_CHAIN, chain);
        self.w.nest(NFTA_RULE_EXPRESSIONS);
        let mut anon = anon.into_iter();
        for s in stmts {
            self.statement(s, &mut anon)?;
        }
        self.w.end_nest();
        self.w.end_msg(m);
        Ok(m)
    }

    /// Loads `v` (a payload, meta, fib, ct, `&` or `concat` expression) into
    /// registers from `reg` on; returns the kind of each field.
    fn load(&mut self, v: &Value, reg: u32) -> Enc<Vec<Kind>> {
        if let Some(fields) = v.get("concat").and_then(Value::as_array) {
            let mut kinds = Vec::new();
            let mut r = reg;
            for f in fields {
                let k = self.load(f, r)?;
                r += k.iter().map(|k| reg_len(k.len()) as u32 / 4).sum::<u32>();
                kinds.extend(k);
            }
            return Ok(kinds);
        }
        if let Some(p) = v.get("payload") {
            let (base, off, kind) = match (text(p, "protocol")?, text(p, "field")?) {
                ("ip", "saddr") => (NFT_PAYLOAD_NETWORK_HEADER, 12, Kind::Ipv4),
                ("ip", "daddr") => (NFT_PAYLOAD_NETWORK_HEADER, 16, Kind::Ipv4),
                ("th" | "tcp" | "udp" | "sctp", "sport") => {
                    (NFT_PAYLOAD_TRANSPORT_HEADER, 0, Kind::Service)
                }
                ("th" | "tcp" | "udp" | "sctp", "dport") => {
                    (NFT_PAYLOAD_TRANSPORT_HEADER, 2, Kind::Service)
                }
                (p, f) => return Err(format!("payload {p} {f}")),
            };
            self.w.expr("payload");
            self.w.u32(NFTA_PAYLOAD_DREG, reg);
            self.w.u32(NFTA_PAYLOAD_BASE, base);
            self.w.u32(NFTA_PAYLOAD_OFFSET, off);
            self.w.u32(NFTA_PAYLOAD_LEN, kind.len() as u32);
            self.w.end_expr();
            return Ok(vec![kind]);
        }
        if let Some(m) = v.get("meta") {
            let (key, kind) = meta_key(text(m, "key")?)?;
            self.w.expr("meta");
            self.w.u32(NFTA_META_DREG, reg);
            self.w.u32(NFTA_META_KEY, key);
            self.w.end_expr();
            return Ok(vec![kind]);
        }
        if let Some(f) = v.get("fib") {
            if text(f, "result")? != "type" {
                return Err(format!("fib result {}", f["result"]));
            }
            let mut flags = 0;
            for fl in flag_list(f) {
                flags |= match fl.as_str() {
                    Some("daddr") => NFTA_FIB_F_DADDR,
                    Some("saddr") => NFTA_FIB_F_SADDR,
                    _ => return Err(format!("fib flag {fl}")),
                };
            }
            self.w.expr("fib");
            self.w.u32(NFTA_FIB_DREG, reg);
            self.w.u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
            self.w.u32(NFTA_FIB_FLAGS, flags);
            self.w.end_expr();
            return Ok(vec![Kind::AddrType]);
        }
        if let Some(c) = v.get("ct") {
            let (key, kind) = match text(c, "key")? {
                "status" => (NFT_CT_STATUS, Kind::CtStatus),
                "state" => (NFT_CT_STATE, Kind::CtState),
                k => return Err(format!("ct key {k}")),
            };
            self.w.expr("ct");
            self.w.u32(NFTA_CT_DREG, reg);
            self.w.u32(NFTA_CT_KEY, key);
            self.w.end_expr();
            return Ok(vec![kind]);
        }
        if let Some(and) = v.get("&").and_then(Value::as_array) {
            let [left, mask] = and.as_slice() else {
                return Err("& takes two operands".into());
            };
            let kinds = self.load(left, reg)?;
            let [kind] = kinds.as_slice() else {
                return Err("& of a concatenation".into());
            };
            let mask = kind.value(mask)?;
            self.bitwise(reg, &mask, &vec![0; mask.len()]);
            return Ok(kinds);
        }
        if let Some(ng) = v.get("numgen") {
            let mode = match text(ng, "mode")? {
                "random" => NFT_NG_RANDOM,
                "inc" => NFT_NG_INCREMENTAL,
                m => return Err(format!("numgen mode {m}")),
            };
            let modulus = u32::try_from(num(field(ng, "mod")?)?).map_err(|e| e.to_string())?;
            let offset = ng.get("offset").map(num).transpose()?.unwrap_or(0);
            self.w.expr("numgen");
            self.w.u32(NFTA_NG_DREG, reg);
            self.w.u32(NFTA_NG_MODULUS, modulus);
            self.w.u32(NFTA_NG_TYPE, mode);
            self.w.u32(
                NFTA_NG_OFFSET,
                u32::try_from(offset).map_err(|e| e.to_string())?,
            );
            self.w.end_expr();
            return Ok(vec![Kind::U32]);
        }
        Err(format!("expression {v}"))
    }

    fn bitwise(&mut self, reg: u32, mask: &[u8], xor: &[u8]) {
        self.w.expr("bitwise");
        self.w.u32(NFTA_BITWISE_SREG, reg);
        self.w.u32(NFTA_BITWISE_DREG, reg);
        self.w.u32(NFTA_BITWISE_LEN, mask.len() as u32);
        self.w.data_value(NFTA_BITWISE_MASK, mask);
        self.w.data_value(NFTA_BITWISE_XOR, xor);
        self.w.end_expr();
    }

    fn cmp(&mut self, reg: u32, op: u32, data: &[u8]) {
        self.w.expr("cmp");
        self.w.u32(NFTA_CMP_SREG, reg);
        self.w.u32(NFTA_CMP_OP, op);
        self.w.data_value(NFTA_CMP_DATA, data);
        self.w.end_expr();
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, sreg: u32, dreg: Option<u32>, invert: bool) {
        self.w.expr("lookup");
        self.w.str(NFTA_LOOKUP_SET, set);
        if let Some(id) = id {
            self.w.u32(NFTA_LOOKUP_SET_ID, id);
        }
        self.w.u32(NFTA_LOOKUP_SREG, sreg);
        if let Some(d) = dreg {
            self.w.u32(NFTA_LOOKUP_DREG, d);
        }
        if invert {
            self.w.u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        }
        self.w.end_expr();
    }

    fn immediate_verdict(&mut self, code: i32, chain: Option<&str>) {
        self.w.expr("immediate");
        self.w.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        self.w.data_verdict(NFTA_IMMEDIATE_DATA, code, chain);
        self.w.end_expr();
    }

    fn statement(&mut self, s: &Value, anon: &mut impl Iterator<Item = (String, u32)>) -> Enc<()> {
        let r = NFT_REG32_00;
        if let Some(m) = s.get("match") {
            let op = text(m, "op")?;
            let kinds = self.load(field(m, "left")?, r)?;
            let right = field(m, "right")?;
            let set = right.as_str().and_then(|s| s.strip_prefix('@'));
            let kind = match kinds.as_slice() {
                [kind] => *kind,
                // a concatenation can only be looked up in a set
                _ if set.is_some() => Kind::U32,
                _ => return Err("match on a concatenation".into()),
            };
            let kind = &kind;
            if let Some(range) = right.get("range").and_then(Value::as_array) {
                // lo <= left <= hi, compared as big-endian bytes
                let [lo, hi] = range.as_slice() else {
                    return Err("a range has two ends".into());
                };
                if op != "==" || !matches!(kind, Kind::Service | Kind::Ipv4) {
                    return Err(format!("range match {op} on {kind:?}"));
                }
                self.cmp(r, NFT_CMP_GTE, &kind.value(lo)?);
                self.cmp(r, NFT_CMP_LTE, &kind.value(hi)?);
                return Ok(());
            }
            if let Some(set) = set {
                let invert = match op {
                    "==" | "in" => false,
                    "!=" => true,
                    o => return Err(format!("set match op {o}")),
                };
                self.lookup(set, None, r, None, invert);
                return Ok(());
            }
            if let Some(p) = right.get("prefix") {
                if *kind != Kind::Ipv4 {
                    return Err("prefix of a non-address".into());
                }
                let addr: Ipv4Addr = text(p, "addr")?
                    .parse()
                    .map_err(|e: std::net::AddrParseError| e.to_string())?;
                let len = num(field(p, "len")?)?.min(32) as u32;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                self.bitwise(r, &mask.to_be_bytes(), &[0; 4]);
                let op = cmp_op(op)?;
                self.cmp(r, op, &(u32::from(addr) & mask).to_be_bytes());
                return Ok(());
            }
            if op == "in" {
                // a flag test: (left & flag) != 0
                let flag = kind.value(right)?;
                self.bitwise(r, &flag, &vec![0; flag.len()]);
                self.cmp(r, NFT_CMP_NEQ, &vec![0; flag.len()]);
                return Ok(());
            }
            let data = kind.value(right)?;
            self.cmp(r, cmp_op(op)?, &data);
            return Ok(());
        }
        if let Some(vm) = s.get("vmap") {
            let key = field(vm, "key")?;
            self.load(key, r)?;
            match field(vm, "data")? {
                Value::String(d) => {
                    let set = d.strip_prefix('@').ok_or("vmap data is not a @map")?;
                    self.lookup(set, None, r, Some(NFT_REG_VERDICT), false);
                }
                Value::Object(_) => {
                    let (name, id) = anon.next().ok_or("anonymous map missing")?;
                    self.lookup(&name, Some(id), r, Some(NFT_REG_VERDICT), false);
                }
                d => return Err(format!("vmap data {d}")),
            }
            return Ok(());
        }
        for (k, code) in [("accept", NF_ACCEPT), ("drop", NF_DROP)] {
            if s.get(k).is_some() {
                self.immediate_verdict(code as i32, None);
                return Ok(());
            }
        }
        for (k, code) in [("jump", NFT_JUMP), ("goto", NFT_GOTO)] {
            if let Some(j) = s.get(k) {
                let target = text(j, "target")?;
                self.immediate_verdict(code, Some(target));
                return Ok(());
            }
        }
        if s.get("masquerade").is_some() {
            self.w.expr("masq");
            self.w.end_expr();
            return Ok(());
        }
        if let Some(mg) = s.get("mangle") {
            // meta mark set meta mark | BITS
            let key = field(mg, "key")?;
            if key
                .get("meta")
                .and_then(|m| m.get("key"))
                .and_then(Value::as_str)
                != Some("mark")
            {
                return Err(format!("mangle of {key}"));
            }
            let or = field(mg, "value")?
                .get("|")
                .and_then(Value::as_array)
                .ok_or("mangle value is not an or")?;
            let [left, bits] = or.as_slice() else {
                return Err("| takes two operands".into());
            };
            if left != key {
                return Err("mangle must or into the same key".into());
            }
            let bits = u32::try_from(num(bits)?).map_err(|e| e.to_string())?;
            self.load(key, r)?;
            self.bitwise(r, &(!bits).to_ne_bytes(), &bits.to_ne_bytes());
            self.w.expr("meta");
            self.w.u32(NFTA_META_KEY, NFT_META_MARK);
            self.w.u32(NFTA_META_SREG, r);
            self.w.end_expr();
            return Ok(());
        }
        if let Some(st) = s.get("set") {
            let op = match text(st, "op")? {
                "update" => NFT_DYNSET_OP_UPDATE,
                "add" => NFT_DYNSET_OP_ADD,
                o => return Err(format!("set op {o}")),
            };
            let set = text(st, "set")?
                .strip_prefix('@')
                .ok_or("set statement target is not a @set")?;
            self.load(field(st, "elem")?, r)?;
            self.w.expr("dynset");
            self.w.str(NFTA_DYNSET_SET_NAME, set);
            self.w.u32(NFTA_DYNSET_OP, op);
            self.w.u32(NFTA_DYNSET_SREG_KEY, r);
            self.w.end_expr();
            return Ok(());
        }
        if let Some(nat) = s.get("dnat").or_else(|| s.get("snat")) {
            let ty = if s.get("dnat").is_some() {
                NFT_NAT_DNAT
            } else {
                NFT_NAT_SNAT
            };
            family(nat)?;
            let addr = field(nat, "addr")?;
            let mut proto_reg = None;
            if let Some(named) = addr
                .get("map")
                .and_then(|m| m.get("data"))
                .and_then(Value::as_str)
            {
                // a named interval map keyed by 32-bit integers (constants and
                // numgen), stored big-endian; its data is address . port
                let set = named.strip_prefix('@').ok_or("map data is not a @map")?;
                let key = field(&addr["map"], "key")?;
                let fields: Vec<&Value> = match key.get("concat").and_then(Value::as_array) {
                    Some(a) => a.iter().collect(),
                    None => vec![key],
                };
                for (i, f) in fields.iter().enumerate() {
                    let reg = r + i as u32;
                    if let Some(c) = f.as_u64() {
                        let c = u32::try_from(c).map_err(|e| e.to_string())?;
                        self.w.expr("immediate");
                        self.w.u32(NFTA_IMMEDIATE_DREG, reg);
                        self.w.data_value(NFTA_IMMEDIATE_DATA, &c.to_be_bytes());
                        self.w.end_expr();
                    } else if self.load(f, reg)? == [Kind::U32] {
                        self.w.expr("byteorder");
                        self.w.u32(NFTA_BYTEORDER_SREG, reg);
                        self.w.u32(NFTA_BYTEORDER_DREG, reg);
                        self.w.u32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON);
                        self.w.u32(NFTA_BYTEORDER_LEN, 4);
                        self.w.u32(NFTA_BYTEORDER_SIZE, 4);
                        self.w.end_expr();
                    } else {
                        return Err(format!("interval map key field {f}"));
                    }
                }
                self.lookup(set, None, r, Some(r), false);
                proto_reg = Some(r + 1);
            } else if addr.get("map").is_some() {
                let map = &addr["map"];
                self.load(field(map, "key")?, r)?;
                let (name, id) = anon.next().ok_or("anonymous map missing")?;
                self.lookup(&name, Some(id), r, Some(r), false);
                let arms = anon_arms(s).map(|(a, _)| a).unwrap_or_default();
                let concat = arms
                    .first()
                    .and_then(|a| a.get(1))
                    .is_some_and(|d| d.get("concat").is_some());
                if concat {
                    proto_reg = Some(r + 1);
                }
            } else {
                self.w.expr("immediate");
                self.w.u32(NFTA_IMMEDIATE_DREG, r);
                self.w
                    .data_value(NFTA_IMMEDIATE_DATA, &Kind::Ipv4.value(addr)?);
                self.w.end_expr();
                if let Some(port) = nat.get("port") {
                    self.w.expr("immediate");
                    self.w.u32(NFTA_IMMEDIATE_DREG, r + 1);
                    self.w
                        .data_value(NFTA_IMMEDIATE_DATA, &Kind::Service.value(port)?);
                    self.w.end_expr();
                    proto_reg = Some(r + 1);
                }
            }
            self.w.expr("nat");
            self.w.u32(NFTA_NAT_TYPE, ty);
            self.w.u32(NFTA_NAT_FAMILY, u32::from(NFPROTO_IPV4));
            self.w.u32(NFTA_NAT_REG_ADDR_MIN, r);
            if let Some(p) = proto_reg {
                self.w.u32(NFTA_NAT_REG_PROTO_MIN, p);
            }
            self.w.end_expr();
            return Ok(());
        }
        Err(format!("statement {s}"))
    }
}

/// The `"flags"` list of a JSON object (empty when absent).
fn flag_list(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("flags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn cmp_op(op: &str) -> Enc<u32> {
    match op {
        "==" => Ok(NFT_CMP_EQ),
        "!=" => Ok(NFT_CMP_NEQ),
        o => Err(format!("match op {o}")),
    }
}

fn meta_key(key: &str) -> Enc<(u32, Kind)> {
    Ok(match key {
        "l4proto" => (NFT_META_L4PROTO, Kind::Proto),
        "mark" => (NFT_META_MARK, Kind::U32),
        "oifname" => (NFT_META_OIFNAME, Kind::Ifname),
        "iifname" => (NFT_META_IIFNAME, Kind::Ifname),
        k => return Err(format!("meta key {k}")),
    })
}

/// `{"goto": {"target": c}}` / `{"jump": ...}` as a verdict code and chain.
fn verdict(v: &Value) -> Enc<(i32, &str)> {
    if let Some(g) = v.get("goto") {
        return Ok((NFT_GOTO, text(g, "target")?));
    }
    if let Some(j) = v.get("jump") {
        return Ok((NFT_JUMP, text(j, "target")?));
    }
    Err(format!("verdict {v}"))
}

/// The arms of the anonymous map a statement carries, and whether they are
/// verdicts (`vmap`) rather than values (`dnat ... map`).
fn anon_arms(s: &Value) -> Option<(&[Value], bool)> {
    if let Some(Value::Object(set)) = s.get("vmap").and_then(|v| v.get("data")) {
        return set
            .get("set")
            .and_then(Value::as_array)
            .map(|a| (a.as_slice(), true));
    }
    let nat = s.get("dnat").or_else(|| s.get("snat"))?;
    nat.get("addr")?
        .get("map")?
        .get("data")?
        .get("set")?
        .as_array()
        .map(|a| (a.as_slice(), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(cmds: Vec<Value>) -> NftBatch {
        let mut b = NftBatch::default();
        for c in cmds {
            b.push(c);
        }
        b
    }

    /// Splits an encoded buffer into (type, flags, seq, payload-after-nfgenmsg).
    fn messages(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = buf;
        while rest.len() >= 20 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            out.push((
                u16::from_ne_bytes([rest[4], rest[5]]),
                u16::from_ne_bytes([rest[6], rest[7]]),
                u32::from_ne_bytes(rest[8..12].try_into().unwrap()),
                rest[20..len].to_vec(),
            ));
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        out
    }

    fn nft(msg: u16) -> u16 {
        (NFNL_SUBSYS_NFTABLES << 8) | msg
    }

    #[test]
    fn batch_is_framed_and_only_the_last_message_asks_for_an_ack() {
        let b = batch(vec![
            json!({"add": {"table": {"family": "ip", "name": "kcore"}}}),
            json!({"delete": {"table": {"family": "ip", "name": "kcore"}}}),
        ]);
        let e = encode(&b, 100).unwrap();
        let m = messages(&e.buf);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].0, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(m[1].0, nft(NFT_MSG_NEWTABLE));
        assert_eq!(m[1].1, NLM_F_REQUEST | NLM_F_CREATE);
        assert_eq!(m[2].0, nft(NFT_MSG_DELTABLE));
        assert_eq!(m[2].1, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(m[3].0, NFNL_MSG_BATCH_END);
        assert_eq!(
            m.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![100, 101, 102, 103]
        );
        assert_eq!(e.ack_seq, 102);
        assert_eq!(e.next_seq, 104);
        // NFTA_TABLE_NAME "kcore\0" padded to 8: len 10, type 1
        assert_eq!(
            &m[1].3[..10],
            &[10, 0, 1, 0, b'k', b'c', b'o', b'r', b'e', 0]
        );
        assert_eq!(e.describe(102).unwrap(), "delete table ip kcore");
        assert_eq!(e.describe(100).unwrap(), "commit transaction");
    }

    #[test]
    fn element_keys_are_register_padded_concatenations() {
        let key = json!({"concat": ["10.96.0.1", "tcp", 80]});
        assert_eq!(
            guess_value(&key, false).unwrap(),
            vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(
            guess_value(&json!(2), true).unwrap(),
            2u32.to_ne_bytes().to_vec()
        );
        let data = json!({"concat": ["10.244.0.18", 8080]});
        assert_eq!(
            guess_value(&data, false).unwrap(),
            vec![10, 244, 0, 18, 0x1f, 0x90, 0, 0]
        );
    }

    #[test]
    fn a_numgen_dnat_rule_brings_its_anonymous_map_first() {
        let rule = json!({"add": {"rule": {"family": "ip", "table": "kcore", "chain": "svc-1",
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
            {"dnat": {"family": "ip", "addr": {"map": {
                "key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}},
                "data": {"set": [[0, {"concat": ["10.0.0.1", 80]}], [1, {"concat": ["10.0.0.2", 80]}]]}}}}}
        ]}}});
        let e = encode(&batch(vec![rule]), 1).unwrap();
        let m = messages(&e.buf);
        let types: Vec<u16> = m.iter().map(|x| x.0).collect();
        assert_eq!(
            types,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                nft(NFT_MSG_NEWSET),
                nft(NFT_MSG_NEWSETELEM),
                nft(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END
            ]
        );
        let rule = &m[3].3;
        let has = |needle: &[u8]| rule.windows(needle.len()).any(|w| w == needle);
        for name in ["meta", "cmp", "numgen", "lookup", "nat"] {
            assert!(has(format!("{name}\0").as_bytes()), "{name}");
        }
        assert!(has(b"__map%d\0"));
        // the set carries ANONYMOUS|CONSTANT|MAP and data length 8 (addr . port)
        let set = &m[1].3;
        let flags = (NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP).to_be_bytes();
        assert!(set
            .windows(8)
            .any(|w| w[..4] == [8, 0, 3, 0] && w[4..] == flags));
        assert!(set
            .windows(8)
            .any(|w| w[..4] == [8, 0, 7, 0] && w[4..] == 8u32.to_be_bytes()));
    }

    #[test]
    fn long_element_lists_split_into_several_messages() {
        let elems: Vec<Value> = (0..1000u64)
            .map(|i| json!([{"range": [i * 65, i * 65 + 64]}, {"concat": ["10.0.0.1", 80]}]))
            .collect();
        let b = batch(vec![
            json!({"add": {"element": {"family": "ip", "table": "t",
            "name": "m", "elem": elems}}}),
        ]);
        let e = encode(&b, 1).unwrap();
        let m = messages(&e.buf);
        // begin, ceil(1000 / 128) = 8 element messages, end
        assert_eq!(m.len(), 10);
        assert!(m[1..9].iter().all(|x| x.0 == nft(NFT_MSG_NEWSETELEM)));
        assert!(
            e.ops[7].contains("elements 897 to 1000 of 1000"),
            "{}",
            e.ops[7]
        );
        // only the last one asks for the acknowledgement
        assert_eq!(m[8].1 & NLM_F_ACK, NLM_F_ACK);
        assert_eq!(m[7].1 & NLM_F_ACK, 0);
    }

    #[test]
    fn unsupported_json_is_refused_with_the_command() {
        let b = batch(vec![
            json!({"add": {"rule": {"family": "ip", "table": "t", "chain": "c",
            "expr": [{"counter": null}]}}}),
        ]);
        let err = encode(&b, 1).err().unwrap();
        assert!(matches!(err, Error::NftEncode { .. }), "{err}");
        assert!(err.to_string().contains("counter"), "{err}");
        let b = batch(vec![
            json!({"add": {"table": {"family": "inet", "name": "t"}}}),
        ]);
        assert!(encode(&b, 1).is_err());
    }

    #[test]
    fn the_whole_service_ruleset_encodes() {
        use crate::service::{Endpoint, Protocol, Service, SessionAffinity};
        use crate::{NftConfig, ServiceProxy};
        #[derive(Default)]
        struct Keep(std::cell::RefCell<Vec<NftBatch>>);
        impl NftRunner for Keep {
            fn apply(&self, b: &NftBatch) -> Result<(), Error> {
                self.0.borrow_mut().push(b.clone());
                Ok(())
            }
        }
        let cfg = NftConfig {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            local_pods: Some(("10.244.1.0/24".parse().unwrap(), "kcore0".into())),
            ..NftConfig::default()
        };
        let mut p = ServiceProxy::new(cfg, Keep::default());
        let mut a = Service::cluster_ip("d/a", Protocol::Tcp, Ipv4Addr::new(10, 96, 0, 1), 80);
        a.endpoints = vec![Endpoint::ready(Ipv4Addr::new(10, 244, 1, 2), 8080)];
        a.node_port = Some(30001);
        a.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
        let mut b = Service::cluster_ip("d/b", Protocol::Udp, Ipv4Addr::new(10, 96, 0, 2), 53);
        b.endpoints = vec![
            Endpoint::ready(Ipv4Addr::new(10, 244, 1, 3), 53),
            Endpoint::ready(Ipv4Addr::new(10, 244, 1, 4), 53),
        ];
        b.affinity = SessionAffinity::ClientIp { timeout_secs: 60 };
        p.restore(&[a.clone(), b.clone()]).unwrap();
        b.affinity = SessionAffinity::None;
        p.sync(&[b]).unwrap();
        p.teardown().unwrap();
        for batch in p.runner().0.borrow().iter() {
            let e = encode(batch, 1).unwrap();
            assert_eq!(messages(&e.buf).len(), e.ops.len() + 2);
        }
    }

    #[test]
    fn the_policy_ruleset_encodes() {
        use crate::policy::{AddrRange, CompiledPolicy, PolicyFirewall, PolicyRule, PolicySet};
        use crate::{PortMatch, Protocol};
        #[derive(Default)]
        struct Keep(std::cell::RefCell<Vec<NftBatch>>);
        impl NftRunner for Keep {
            fn apply(&self, b: &NftBatch) -> Result<(), Error> {
                self.0.borrow_mut().push(b.clone());
                Ok(())
            }
        }
        let pod = Ipv4Addr::new(10, 244, 1, 5);
        let mut set = PolicySet {
            policies: vec![CompiledPolicy {
                name: "d/p".into(),
                pods: [pod].into(),
                ingress: Some(vec![PolicyRule {
                    peers: Some(vec![
                        AddrRange::single(Ipv4Addr::new(10, 244, 1, 6)),
                        AddrRange {
                            first: Ipv4Addr::new(11, 0, 0, 0),
                            last: Ipv4Addr::BROADCAST,
                        },
                    ]),
                    ports: Some(vec![
                        PortMatch::Ports {
                            protocol: Protocol::Tcp,
                            first: 80,
                            last: 90,
                        },
                        PortMatch::Ports {
                            protocol: Protocol::Tcp,
                            first: 443,
                            last: 443,
                        },
                        PortMatch::Named([(pod, Protocol::Tcp, 8080)].into()),
                        PortMatch::Protocol(Protocol::Udp),
                    ]),
                }]),
                egress: Some(vec![PolicyRule::default()]),
            }],
        };
        let mut fw = PolicyFirewall::new("kcore-policy", Keep::default());
        fw.apply(&set).unwrap();
        set.policies[0].pods.insert(Ipv4Addr::new(10, 244, 1, 9));
        fw.apply(&set).unwrap();
        fw.teardown().unwrap();
        let batches = fw.runner().0.borrow();
        assert_eq!(batches.len(), 3);
        for batch in batches.iter() {
            let e = encode(batch, 1).unwrap();
            assert_eq!(messages(&e.buf).len(), e.ops.len() + 2);
        }
        // the open-ended range has a start element and no end element: the peers set
        // message carries 3 elements (10.244.1.6 start + end, 11.0.0.0 start)
        let e = encode(&batches[0], 1).unwrap();
        let peers = e
            .ops
            .iter()
            .filter(|o| o.contains("pol-0-in-0-peers") && o.starts_with("add element"))
            .count();
        assert_eq!(peers, 1, "{:?}", e.ops);
    }
}
