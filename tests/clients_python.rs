//! The Python client of the driver protocol (`clients/python`): its unittest suite (the
//! message generator and CRC-32C against the protocol's vectors, whole conversations with
//! a fake harness, and the programs of `examples/python` run end to end), run by
//! `cargo test` so a broken client fails the build. Needs `python3` (3.8 or later) on
//! `PATH`.

use std::path::Path;
use std::process::Command;

#[test]
fn python_client_unittests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("clients/python"))
        .args(["-p", "test_*.py"])
        .current_dir(root)
        // No __pycache__ left in the source tree, by the suite or the programs it runs.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("IPCPROP_CONTROL")
        .output()
        .expect("python3 not found: the Python client's tests need python3 (>= 3.8) on PATH");
    assert!(
        out.status.success(),
        "the Python client's tests failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // unittest reports on stderr; make sure it ran tests (a discovery mistake runs none).
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains("\nOK") && !report.contains("Ran 0 tests"),
        "{report}"
    );
}
