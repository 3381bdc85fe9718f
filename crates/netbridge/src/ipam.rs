//! Host-local IPAM: addresses handed out from the node's pod CIDR, persisted on disk.
//!
//! The on-disk layout follows CNI's `host-local` plugin: one file per allocated
//! address (named after the address, holding the owner id), a `last_reserved_ip.0`
//! file remembering where the round-robin search stopped, and a `lock` file taken
//! with `flock(2)` around every operation, so that several processes (or a
//! restarted daemon) never hand out the same address twice. The directory is 0700 and
//! its files 0600: which pod holds which address is the node's business.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Ipv4Net};

const LAST_RESERVED: &str = "last_reserved_ip.0";
const LOCK: &str = "lock";

/// A persisted, file-locked address allocator over one IPv4 range.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    first: u32,
    last: u32,
}

impl Ipam {
    /// Opens (creating if needed) the store in `dir` for `subnet`.
    ///
    /// The gateway is the subnet's first host address (`.1`); allocations run from
    /// the address after it to the last address before the broadcast address.
    /// Host bits of `subnet` are ignored (`10.244.1.7/24` is `10.244.1.0/24`).
    pub fn open(dir: impl Into<PathBuf>, subnet: Ipv4Net) -> Result<Self, Error> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(Error::InvalidCidr {
                input: subnet.to_string(),
                reason: "a pod subnet needs a prefix of /30 or shorter",
            });
        }
        let base = u32::from(subnet.network());
        let gateway = Ipv4Addr::from(base + 1);
        let first = base + 2;
        let last = u32::from(subnet.broadcast()) - 1;
        let dir = dir.into();
        kcore_statedir::ensure_dir(&dir, kcore_statedir::PRIVATE_DIR).map_err(|source| {
            Error::Ipam {
                path: dir.clone(),
                source,
            }
        })?;
        Ok(Self {
            dir,
            subnet,
            gateway,
            first,
            last,
        })
    }

    /// The subnet this store allocates from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The reserved gateway address (the subnet's `.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Allocates an address for `owner` (a container or pod id).
    ///
    /// Idempotent: an owner that already holds an address gets the same one back.
    /// The search is round-robin, starting after the last reserved address, so
    /// a just-released address is not reused at once.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, Error> {
        validate_owner(owner)?;
        let _lock = self.lock()?;
        if let Some(ip) = self.find_owner(owner)? {
            return Ok(ip);
        }
        let span = self.last - self.first + 1;
        let start = match self.read_last_reserved()? {
            Some(last) if (self.first..=self.last).contains(&last) => last - self.first + 1,
            _ => 0,
        };
        for i in 0..span {
            let candidate = self.first + (start + i) % span;
            let ip = Ipv4Addr::from(candidate);
            let path = self.dir.join(ip.to_string());
            let mut create = OpenOptions::new();
            create.write(true).create_new(true);
            match kcore_statedir::open(&path, &create, kcore_statedir::PRIVATE_FILE) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|source| Error::Ipam {
                            path: path.clone(),
                            source,
                        })?;
                    self.write_last_reserved(ip)?;
                    tracing::debug!(%ip, owner, subnet = %self.subnet, "allocated address");
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::Ipam { path, source }),
            }
        }
        Err(Error::RangeExhausted {
            range: self.subnet,
            dir: self.dir.clone(),
        })
    }

    /// Releases whatever address `owner` holds; returns it, or `None` if it held none.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, Error> {
        validate_owner(owner)?;
        let _lock = self.lock()?;
        let Some(ip) = self.find_owner(owner)? else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Ipam { path, source }),
        }
        tracing::debug!(%ip, owner, "released address");
        Ok(Some(ip))
    }

    /// All current allocations, sorted by address.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, Error> {
        let _lock = self.lock()?;
        self.scan()
    }

    fn scan(&self) -> Result<Vec<(Ipv4Addr, String)>, Error> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Ipam { path, source }
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            if !self.subnet.contains(&ip) {
                continue;
            }
            let path = entry.path();
            let owner = match fs::read_to_string(&path) {
                Ok(s) => s.trim().to_owned(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(Error::Ipam { path, source }),
            };
            out.push((ip, owner));
        }
        out.sort();
        Ok(out)
    }

    fn find_owner(&self, owner: &str) -> Result<Option<Ipv4Addr>, Error> {
        Ok(self
            .scan()?
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip))
    }

    fn lock(&self) -> Result<Flock<File>, Error> {
        let path = self.dir.join(LOCK);
        let file = kcore_statedir::open(
            &path,
            OpenOptions::new().create(true).truncate(false).write(true),
            kcore_statedir::PRIVATE_FILE,
        )
        .map_err(|source| Error::Ipam {
            path: path.clone(),
            source,
        })?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| Error::Ipam {
            path,
            source: errno.into(),
        })
    }

    fn read_last_reserved(&self) -> Result<Option<u32>, Error> {
        let path = self.dir.join(LAST_RESERVED);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse::<Ipv4Addr>().ok().map(u32::from)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Ipam { path, source }),
        }
    }

    fn write_last_reserved(&self, ip: Ipv4Addr) -> Result<(), Error> {
        let path = self.dir.join(LAST_RESERVED);
        kcore_statedir::write(
            &path,
            ip.to_string().as_bytes(),
            kcore_statedir::PRIVATE_FILE,
        )
        .map_err(|source| Error::Ipam { path, source })
    }
}

fn validate_owner(owner: &str) -> Result<(), Error> {
    if owner.is_empty() || owner.contains(['\n', '\0']) || owner.trim() != owner {
        return Err(Error::InvalidOwner {
            owner: owner.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_round_robin_after_gateway() {
        let dir = tempfile::tempdir().unwrap();
        // host bits are dropped: the store covers 10.244.3.0/24
        let ipam = Ipam::open(dir.path(), net("10.244.3.77/24")).unwrap();
        assert_eq!(ipam.subnet(), net("10.244.3.0/24"));
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 3, 3));
        // idempotent per owner
        assert_eq!(ipam.allocate("a").unwrap(), a);
        // a released address is not reused immediately (round robin)
        assert_eq!(ipam.release("a").unwrap(), Some(a));
        assert_eq!(ipam.release("a").unwrap(), None);
        let c = ipam.allocate("c").unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 244, 3, 4));
    }

    #[test]
    fn the_store_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("ipam");
        let ipam = Ipam::open(&dir, net("10.244.6.0/24")).unwrap();
        let ip = ipam.allocate("pod-a").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        for f in [ip.to_string().as_str(), LAST_RESERVED, LOCK] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }

    #[test]
    fn restart_neither_double_allocates_nor_leaks() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ipam::open(dir.path(), net("10.244.5.0/29")).unwrap();
        let a = first.allocate("a").unwrap();
        let b = first.allocate("b").unwrap();
        drop(first);
        let again = Ipam::open(dir.path(), net("10.244.5.0/29")).unwrap();
        let c = again.allocate("c").unwrap();
        assert!(c != a && c != b);
        assert_eq!(again.allocate("b").unwrap(), b);
        let all = again.allocations().unwrap();
        assert_eq!(all, vec![(a, "a".into()), (b, "b".into()), (c, "c".into())]);
    }

    #[test]
    fn exhaustion_is_a_clear_error_and_release_recovers() {
        let dir = tempfile::tempdir().unwrap();
        // /29: .0 network, .1 gateway, .2-.6 usable, .7 broadcast
        let ipam = Ipam::open(dir.path(), net("10.9.0.0/29")).unwrap();
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}")).unwrap())
            .collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 9, 0, 6)));
        let err = ipam.allocate("one-too-many").unwrap_err();
        assert!(matches!(err, Error::RangeExhausted { .. }), "{err}");
        assert!(err.to_string().contains("10.9.0.0/29"), "{err}");
        ipam.release("p2").unwrap();
        assert_eq!(ipam.allocate("late").unwrap(), Ipv4Addr::new(10, 9, 0, 4));
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), net("10.10.0.0/24")).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let ipam = ipam.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| ipam.allocate(&format!("t{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 160);
    }

    #[test]
    fn rejects_bad_owner_and_tiny_subnet() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Ipam::open(dir.path(), net("10.0.0.0/31")).is_err());
        let ipam = Ipam::open(dir.path(), net("10.0.0.0/24")).unwrap();
        assert!(matches!(
            ipam.allocate("a\nb"),
            Err(Error::InvalidOwner { .. })
        ));
    }
}
