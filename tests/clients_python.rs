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

/// `ipcprop check --exec` on the Python programs, through the real harness: the three fixed
/// channels pass a short campaign (capabilities from the `.ipcprop.toml` beside each), and
/// the tutorial pipe is caught hanging (it never closes its unused write ends, so its
/// receiver never sees the end of the stream). A short campaign each, one after the other
/// (the 2-core CI machine is shared).
#[cfg(feature = "cli")]
#[test]
fn real_harness_passes_the_fixed_programs_and_catches_the_tutorial_pipe() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = |program: &str, cases: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ipcprop"))
            .args(["check", "--json", "--cases", cases, "--seed", "3", "--exec"])
            .arg(format!("python3 examples/python/{program}.py"))
            .current_dir(root)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{program}: no JSON report ({e}), {}:\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), report)
    };
    for program in ["pipe_fixed", "shm_fixed", "queue_fixed"] {
        let (code, report) = check(program, "8");
        assert_eq!(code, Some(0), "{program}: {report:#}");
        assert_eq!(report["passed"], true, "{program}: {report:#}");
    }
    let (code, report) = check("tutorial_pipe", "3");
    assert_eq!(code, Some(1), "tutorial_pipe: {report:#}");
    let kinds: Vec<&str> = report["transports"][0]["failure"]["minimal"]["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("tutorial_pipe: no violations: {report:#}"))
        .iter()
        .filter_map(|v| v["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"hung"),
        "tutorial_pipe: {kinds:?}: {report:#}"
    );
}
