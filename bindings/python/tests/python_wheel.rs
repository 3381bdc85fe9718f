//! Builds the `kcore` wheel with maturin into a venv and runs the Python test
//! suite (stubtest, mypy on the tests, pytest) through `python/run-tests.sh`.
//!
//! Needs python3 with venv and pip, and PyPI for maturin, pytest and mypy. The
//! container tests inside need root; without it pytest skips them and says why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo target directory and profile directory this test binary was
/// built in (`<target>/<profile>/deps/python_wheel-<hash>`).
fn target_dirs() -> Option<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().ok()?;
    let profile = exe.parent()?.parent()?;
    Some((profile.parent()?.to_path_buf(), profile.to_path_buf()))
}

#[test]
fn python_test_suite_passes() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("python/run-tests.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).current_dir(&repo);
    if let Some((target, profile)) = target_dirs() {
        // reuse this build's artifacts for the wheel and for kcored
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            cmd.env("CARGO_TARGET_DIR", &target);
        }
        let kcored = profile.join("kcored");
        if std::env::var_os("KCORED").is_none() && kcored.exists() {
            cmd.env("KCORED", &kcored);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed: {status}", script.display());
}
