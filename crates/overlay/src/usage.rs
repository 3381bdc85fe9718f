//! Disk usage of a layer's `diff` tree.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Space used by a layer's `diff` directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskUsage {
    /// Bytes allocated on disk (`st_blocks * 512`), hard links counted once.
    pub allocated_bytes: u64,
    /// Sum of file sizes (`st_size`), hard links counted once.
    pub apparent_bytes: u64,
    /// Number of inodes (files, directories, links, whiteouts), the root included.
    pub inodes: u64,
}

/// Walks `root` without following symlinks or crossing into other filesystems.
pub(crate) fn disk_usage(root: &Path) -> io::Result<DiskUsage> {
    let meta = fs::symlink_metadata(root)?;
    let dev = meta.dev();
    let mut usage = DiskUsage::default();
    let mut seen = HashSet::new();
    add(&mut usage, &mut seen, &meta);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.dev() != dev {
                continue;
            }
            add(&mut usage, &mut seen, &meta);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

fn add(usage: &mut DiskUsage, seen: &mut HashSet<u64>, meta: &fs::Metadata) {
    if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
        return;
    }
    usage.inodes += 1;
    usage.allocated_bytes += meta.blocks() * 512;
    usage.apparent_bytes += meta.size();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_once_per_inode() {
        let dir =
            std::env::temp_dir().join(format!("kcore-overlay-du-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a"), vec![1u8; 10_000]).unwrap();
        fs::write(dir.join("sub/b"), vec![2u8; 5_000]).unwrap();
        fs::hard_link(dir.join("a"), dir.join("sub/a-link")).unwrap();
        let usage = disk_usage(&dir);
        fs::remove_dir_all(&dir).unwrap();
        let usage = usage.unwrap();
        // root, sub, a (+ its link counted once), b
        assert_eq!(usage.inodes, 4);
        let dirs = usage.apparent_bytes - 15_000;
        assert!(dirs > 0 && dirs <= 2 * 65_536, "directory sizes {dirs}");
        assert!(usage.allocated_bytes >= 15_000);
    }
}
