//! Root tests of persistent network namespaces.

mod common;

use std::path::Path;

use common::*;
use kcore_ns::{Error, Namespace, NetNs, NetnsDir, NsCommand};

/// Removes the named netns on drop even when the test fails.
struct NetnsGuard<'a>(&'a NetnsDir, String);

impl Drop for NetnsGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.remove(&self.1);
    }
}

fn thread_net_dev() -> String {
    std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()
}

#[test]
#[ignore = "needs root"]
fn persisted_netns_can_be_entered_joined_and_removed() {
    let serial = serial();
    let dir = TestDir::new("netns");
    let store = NetnsDir::new(dir.path());
    let name = unique("ns");
    let _guard = NetnsGuard(&store, name.clone());

    let ns = store.create(&name).unwrap();
    assert_eq!(store.list().unwrap(), vec![name.clone()]);
    assert!(store.exists(&name).unwrap());
    let host = NetNs::current().unwrap();
    let ino = ns.inode().unwrap();
    assert_ne!(ino, host.inode().unwrap());
    assert!(our_mounts().iter().any(|m| m.ends_with(&name)));

    // A closure runs inside it and sees only loopback.
    let (seen, devs) = ns
        .run(|| (NetNs::current().unwrap().inode().unwrap(), thread_net_dev()))
        .unwrap();
    assert_eq!(seen, ino);
    assert_eq!(interfaces(&devs), vec!["lo".to_string()]);
    // The caller's thread stayed where it was.
    assert_eq!(
        NetNs::current().unwrap().inode().unwrap(),
        host.inode().unwrap()
    );

    // Sockets made inside stay there: bind loopback port in the netns, then connect
    // from a second entry.
    let listener = ns
        .run(|| {
            kcore_ns::netns::loopback_up().unwrap();
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let connected = kcore_ns::netns::run_in(&store.path(&name).unwrap(), move || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap();
    assert!(connected);

    // Name taken; open_or_create adopts it.
    assert!(matches!(
        store.create(&name),
        Err(Error::NetnsExists { .. })
    ));
    assert_eq!(store.open_or_create(&name).unwrap().inode().unwrap(), ino);
    assert_eq!(store.open(&name).unwrap().inode().unwrap(), ino);
    assert_eq!(ns.try_clone().unwrap().inode().unwrap(), ino);

    // A spawned process can join it by path.
    let mut cmd = NsCommand::new("sleep");
    cmd.arg("100")
        .join(Namespace::Net, store.path(&name).unwrap());
    let mut child = cmd.run().unwrap();
    assert_eq!(Namespace::Net.inode(Some(child.pid())).unwrap(), ino);
    child.kill(libc::SIGKILL).unwrap();
    child.wait().unwrap();

    drop((ns, listener));
    assert!(store.remove(&name).unwrap());
    assert!(!store.remove(&name).unwrap());
    assert!(!store.path(&name).unwrap().exists());
    assert!(store.open(&name).is_err());
    assert!(!our_mounts().iter().any(|m| m.ends_with(&name)));
    drop(dir);
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn shared_netns_dir_is_made_a_shared_mount() {
    let serial = serial();
    let dir = TestDir::new("netns-shared");
    let store = NetnsDir::new(dir.path()).shared_mount(true);
    let name = unique("ns");
    let guard = NetnsGuard(&store, name.clone());
    store.create(&name).unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir_line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.path().to_str().unwrap()))
        .expect("netns dir is a mount point");
    assert!(dir_line.contains(" shared:"), "{dir_line}");
    // Creating a second one reuses the existing shared mount.
    let second = unique("ns");
    let guard2 = NetnsGuard(&store, second.clone());
    store.create(&second).unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
    drop((guard, guard2));
    assert!(store.list().unwrap().is_empty());
    drop(dir); // unmounts the directory's own bind mount
    serial.assert_mounts_unchanged();
}

#[test]
#[ignore = "needs root"]
fn invalid_names_are_rejected() {
    let store = NetnsDir::new(Path::new("/nonexistent-kcore"));
    assert!(matches!(
        store.create("../x"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(store.remove(""), Err(Error::InvalidName { .. })));
}
