//! Layer store bookkeeping: needs no privileges.

mod common;

use std::collections::HashSet;
use std::fs;

use common::TestDir;
use kcore_overlay::{Error, LayerStore, MAX_DEPTH};

#[test]
fn creates_overlay2_layout() {
    let dir = TestDir::new("layout");
    let store = LayerStore::open(dir.store_root()).unwrap();
    let base = store.create("base", None).unwrap();
    let mid = store.create("mid", Some("base")).unwrap();
    let top = store.create("top", Some("mid")).unwrap();
    let root = store.root().to_path_buf();

    for layer in [&base, &mid, &top] {
        let d = root.join(layer.id());
        for sub in ["diff", "work", "merged"] {
            assert!(d.join(sub).is_dir(), "{}/{sub}", layer.id());
        }
        assert_eq!(common::read(d.join("link")), layer.short_id());
        assert_eq!(layer.short_id().len(), 26);
        let link = root.join("l").join(layer.short_id());
        assert_eq!(
            fs::read_link(&link).unwrap().to_str().unwrap(),
            format!("../{}/diff", layer.id())
        );
        assert_eq!(
            fs::canonicalize(&link).unwrap(),
            fs::canonicalize(d.join("diff")).unwrap()
        );
    }
    assert!(
        !root.join("base/lower").exists(),
        "a base layer has no lower file"
    );
    assert_eq!(
        common::read(root.join("mid/lower")),
        format!("l/{}", base.short_id())
    );
    assert_eq!(
        common::read(root.join("top/lower")),
        format!("l/{}:l/{}", mid.short_id(), base.short_id())
    );
    assert_eq!(top.parent(), Some("mid"));
    assert_eq!(top.depth(), 2);
    assert_eq!(store.parents("top").unwrap(), ["mid", "base"]);
    assert_eq!(store.parents("base").unwrap(), Vec::<String>::new());
    assert_eq!(store.children("base").unwrap(), ["mid"]);
    assert_eq!(store.get("top").unwrap(), top);
    assert_eq!(store.diff_path("mid").unwrap(), root.join("mid/diff"));
    let ids: Vec<_> = store
        .list()
        .unwrap()
        .iter()
        .map(|l| l.id().to_owned())
        .collect();
    assert_eq!(ids, ["base", "mid", "top"]);
}

#[test]
fn rejects_bad_ids_and_duplicates() {
    let dir = TestDir::new("ids");
    let store = LayerStore::open(dir.store_root()).unwrap();
    for bad in ["", "..", "../escape", "a/b", ".lock", "l", "x,lowerdir=/"] {
        let err = store.create(bad, None).unwrap_err();
        assert!(matches!(err, Error::InvalidId { .. }), "{bad:?}: {err}");
    }
    assert!(!dir.path.join("escape").exists());
    store.create("one", None).unwrap();
    assert!(matches!(
        store.create("one", None),
        Err(Error::AlreadyExists { id }) if id == "one"
    ));
    assert!(matches!(
        store.create("two", Some("missing")),
        Err(Error::NotFound { id }) if id == "missing"
    ));
    assert!(matches!(store.get("missing"), Err(Error::NotFound { .. })));
    assert!(!store.exists("two").unwrap());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn remove_with_children_is_refused() {
    let dir = TestDir::new("children");
    let store = LayerStore::open(dir.store_root()).unwrap();
    store.create("parent", None).unwrap();
    let child = store.create("child", Some("parent")).unwrap();
    let err = store.remove("parent").unwrap_err();
    assert!(
        matches!(&err, Error::HasChildren { id, children } if id == "parent" && children == &["child"]),
        "{err:?}"
    );
    assert!(err.to_string().contains("has child layers"), "{err}");
    assert!(store.exists("parent").unwrap());

    store.remove("child").unwrap();
    assert!(!store.root().join("l").join(child.short_id()).exists());
    store.remove("parent").unwrap();
    assert!(store.list().unwrap().is_empty());
    let left: Vec<_> = fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, [".lock", "l"]);
    assert_eq!(fs::read_dir(store.root().join("l")).unwrap().count(), 0);
}

#[test]
fn reopened_store_sees_the_same_layers() {
    let dir = TestDir::new("reopen");
    let before = {
        let store = LayerStore::open(dir.store_root()).unwrap();
        store.create("a", None).unwrap();
        store.create("b", Some("a")).unwrap();
        store.create("c", Some("b")).unwrap();
        fs::write(store.diff_path("b").unwrap().join("f"), "kept").unwrap();
        store.list().unwrap()
    };
    let store = LayerStore::open(dir.store_root()).unwrap();
    assert_eq!(store.list().unwrap(), before);
    assert_eq!(store.parents("c").unwrap(), ["b", "a"]);
    assert_eq!(
        common::read(store.diff_path("b").unwrap().join("f")),
        "kept"
    );
    // And a relative path to the same root is the same store.
    let other = LayerStore::open(dir.store_root().join("l/..")).unwrap();
    assert_eq!(other.list().unwrap(), before);
}

#[test]
fn concurrent_stores_on_one_root_stay_consistent() {
    let dir = TestDir::new("concurrent");
    let root = dir.store_root();
    LayerStore::open(&root)
        .unwrap()
        .create("base", None)
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let root = &root;
            s.spawn(move || {
                let store = LayerStore::open(root).unwrap();
                let mut parent = "base".to_owned();
                for i in 0..10 {
                    let id = format!("t{t}-{i}");
                    store.create(&id, Some(&parent)).unwrap();
                    parent = id;
                }
            });
        }
    });
    let store = LayerStore::open(&root).unwrap();
    let layers = store.list().unwrap();
    assert_eq!(layers.len(), 41);
    let shorts: HashSet<_> = layers.iter().map(|l| l.short_id().to_owned()).collect();
    assert_eq!(shorts.len(), 41);
    assert_eq!(store.parents("t3-9").unwrap().len(), 10);
    assert_eq!(store.parents("t3-9").unwrap().last().unwrap(), "base");
    let mut children = store.children("base").unwrap();
    children.sort();
    assert_eq!(children, ["t0-0", "t1-0", "t2-0", "t3-0"]);
}

#[test]
fn depth_is_limited() {
    let dir = TestDir::new("depth");
    let store = LayerStore::open(dir.store_root()).unwrap();
    store.create("d0", None).unwrap();
    for i in 1..=MAX_DEPTH {
        store
            .create(&format!("d{i}"), Some(&format!("d{}", i - 1)))
            .unwrap();
    }
    assert_eq!(
        store.get(&format!("d{MAX_DEPTH}")).unwrap().depth(),
        MAX_DEPTH
    );
    let err = store
        .create("too-deep", Some(&format!("d{MAX_DEPTH}")))
        .unwrap_err();
    assert!(
        matches!(err, Error::TooDeep { depth, max, .. } if depth == MAX_DEPTH + 1 && max == MAX_DEPTH)
    );
}

#[test]
fn open_cleans_interrupted_operations() {
    let dir = TestDir::new("leftovers");
    let root = dir.store_root();
    LayerStore::open(&root)
        .unwrap()
        .create("real", None)
        .unwrap();
    fs::create_dir_all(root.join(".tmp-half/diff")).unwrap();
    fs::create_dir_all(root.join(".rm-gone/diff")).unwrap();
    let dangling = root.join("l").join("A".repeat(26));
    std::os::unix::fs::symlink("../half/diff", &dangling).unwrap();

    let store = LayerStore::open(&root).unwrap();
    assert!(!root.join(".tmp-half").exists());
    assert!(!root.join(".rm-gone").exists());
    assert!(fs::symlink_metadata(&dangling).is_err());
    let real = store.get("real").unwrap();
    assert!(root.join("l").join(real.short_id()).exists());
}

#[test]
fn disk_usage_counts_the_diff() {
    let dir = TestDir::new("du");
    let store = LayerStore::open(dir.store_root()).unwrap();
    store.create("a", None).unwrap();
    let empty = store.disk_usage("a").unwrap();
    assert_eq!(empty.inodes, 1);
    let diff = store.diff_path("a").unwrap();
    fs::create_dir(diff.join("d")).unwrap();
    fs::write(diff.join("d/big"), vec![7u8; 100_000]).unwrap();
    let usage = store.disk_usage("a").unwrap();
    assert_eq!(usage.inodes, 3);
    assert!(usage.apparent_bytes >= 100_000);
    assert!(usage.allocated_bytes >= 100_000);
    assert!(matches!(
        store.disk_usage("nope"),
        Err(Error::NotFound { .. })
    ));
}
