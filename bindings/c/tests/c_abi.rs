//! Runs bindings/c/tests/run.sh: the header check, the C tests against
//! libkcore.so and libkcore.a, and the valgrind run. Needs gcc, g++ and
//! valgrind; the container part runs only as root.

use std::process::Command;

#[test]
fn c_abi_run_sh() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run bash bindings/c/tests/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run.sh failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // Every C program ran and reported success in each flavour.
    for flavour in ["shared", "static", "valgrind"] {
        for test in ["test_basic", "test_image", "test_client"] {
            assert!(
                stdout.contains(&format!("== {flavour}: {test}\n{test}: ok")),
                "{flavour} {test} did not report ok:\n{stdout}"
            );
        }
    }
    assert!(stdout.contains("all C ABI checks passed"), "{stdout}");
}
