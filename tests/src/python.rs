//! The official Python `kubernetes` client for tests that drive kcore with it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Python interpreter that can `import kubernetes`: `$KCORE_PYTHON` when set (the test
/// command makes one venv for every test), else a venv under `target_tmpdir` (pass the
/// test's `env!("CARGO_TARGET_TMPDIR")`), made and filled with pip on first use.
///
/// Panics with the reason when no such interpreter can be made: the test command installs
/// what this needs, so a missing client is a failure, not a skip.
pub fn python_with_client(target_tmpdir: &str) -> PathBuf {
    if let Ok(p) = std::env::var("KCORE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(target_tmpdir).join("kcore-py-kubernetes");
    let py = venv.join("bin/python");
    let has_client = |py: &Path| {
        Command::new(py)
            .args(["-c", "import kubernetes"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_client(&py) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 -m venv {} failed (Debian: python3-venv)",
            venv.display()
        );
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "kubernetes"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install kubernetes failed");
    }
    assert!(has_client(&py), "the kubernetes module is not importable");
    py
}
