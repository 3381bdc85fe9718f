//! Mount clean-up for root tests.

use std::path::Path;

/// Lazily unmounts every mount at or below `dir`, deepest first, repeating while
/// stacked mounts uncover others (up to four passes). Errors are ignored: this runs
/// in `Drop` guards.
pub fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    for _ in 0..4 {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mps: Vec<String> = mi
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        if mps.is_empty() {
            break;
        }
        mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mps {
            let _ = kcore_ns::mount::unmount(Path::new(&m), true);
        }
    }
}
