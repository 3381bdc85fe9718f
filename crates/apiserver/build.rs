//! Build metadata for the API server's `/version`: the git commit kcore was built from,
//! whether the tree had uncommitted changes, and the build date.
//!
//! * Commit: from `.cargo_vcs_info.json` when building a published package (cargo writes
//!   the commit it was packaged from there), else from `git` when this package is
//!   tracked by the git work tree around it, else `unknown` (a tarball without either).
//! * Tree state: `clean` or `dirty` from the same source, as of when this script ran
//!   (it runs again when HEAD moves or this package's files change), else `unknown`.
//! * Date: `SOURCE_DATE_EPOCH` when set (reproducible builds), else the time this
//!   script ran; RFC 3339 in UTC like upstream's `buildDate`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let (commit, tree) = from_vcs_info(&dir)
        .or_else(|| from_git(&dir))
        .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    println!("cargo:rustc-env=KCORE_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=KCORE_GIT_TREE_STATE={tree}");
    println!("cargo:rustc-env=KCORE_BUILD_DATE={}", rfc3339(build_time()));
}

/// The commit a published package was made from (`cargo package` records it).
fn from_vcs_info(dir: &Path) -> Option<(String, String)> {
    let path = dir.join(".cargo_vcs_info.json");
    let text = std::fs::read_to_string(&path).ok()?;
    println!("cargo:rerun-if-changed={}", path.display());
    let rest = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let start = rest.find('"')? + 1;
    let sha = &rest[start..start + rest[start..].find('"')?];
    let dirty = text.contains("\"dirty\": true") || text.contains("\"dirty\":true");
    is_sha(sha).then(|| (sha.to_owned(), tree_state(dirty)))
}

/// The commit checked out in the git work tree this package is tracked in.
fn from_git(dir: &Path) -> Option<(String, String)> {
    // Only a work tree that tracks this package describes it (not, say, an unrelated
    // repository a downloaded copy was unpacked into).
    git(dir, &["ls-files", "--error-unmatch", "Cargo.toml"])?;
    let sha = git(dir, &["rev-parse", "HEAD"])?;
    if !is_sha(&sha) {
        return None;
    }
    // Build again when HEAD moves: HEAD itself, the branch it points to, packed refs.
    // Only existing files: cargo would re-run the script on every build for a missing one.
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watch.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watch {
        if let Some(p) = git(dir, &["rev-parse", "--git-path", &name]) {
            let p = dir.join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).map(|out| !out.is_empty())?;
    Some((sha, tree_state(dirty)))
}

/// Runs git in `dir`; its trimmed output on success.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // `git status` must not rewrite the index (a refresh would look like a change).
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tree_state(dirty: bool) -> String {
    if dirty { "dirty" } else { "clean" }.to_owned()
}

/// Seconds since the epoch to build at.
fn build_time() -> i64 {
    match std::env::var("SOURCE_DATE_EPOCH") {
        // The reproducible-builds convention: a malformed value fails the build.
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `secs` since the epoch (days to civil date: Howard
/// Hinnant's algorithm).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
