//! IPv4 prefix type shared by IPAM, the bridge and the Service rules.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::Error;

/// An IPv4 network: a network address and a prefix length (`10.244.1.0/24`).
///
/// The address is always normalised to the network address (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Builds a network from any address inside it and a prefix length (0..=32).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        if prefix > 32 {
            return Err(Error::InvalidCidr {
                input: format!("{addr}/{prefix}"),
                reason: "prefix length is larger than 32",
            });
        }
        Ok(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The network address (`10.244.1.0` for `10.244.1.0/24`).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// The netmask as a 32-bit integer.
    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }

    /// The broadcast address (last address of the network).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// Number of addresses in the network (2^(32-prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` lies inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// The `n`-th address of the network (`nth(1)` is the conventional gateway), if inside it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        if u64::from(n) >= self.size() {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + n))
    }
}

pub(crate) fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidCidr {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| invalid("missing '/'"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("bad IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
        Self::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_and_formats() {
        let n: Ipv4Net = "10.244.1.7/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.244.1.0/24");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(n.nth(1), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(n.nth(256), None);
        assert!(n.contains(Ipv4Addr::new(10, 244, 1, 200)));
        assert!(!n.contains(Ipv4Addr::new(10, 244, 2, 1)));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.size(), 1 << 32);
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/x"] {
            assert!(matches!(
                bad.parse::<Ipv4Net>(),
                Err(Error::InvalidCidr { .. })
            ));
        }
    }
}
