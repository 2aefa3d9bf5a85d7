//! The C client of the driver protocol (`clients/c/`), built with the system's `cc` under
//! `-Wall -Wextra -Werror` and tested by its own C test program
//! (`clients/c/test_ipcprop_driver.c`): the generator's test vectors, CRC-32C, the command
//! parser, the environment, both roles against a fake harness (exact lines, the pid in the
//! hello, `t`, every event, the harness going away), and `pipe_fixed.c` end to end.
//! Everything is built in a temporary directory, removed when the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;

const FLAGS: &[&str] = &[
    "-std=c99",
    "-D_GNU_SOURCE",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-O2",
];

fn clients_c() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/c")
}

/// Compiles `sources` (with the driver) into `out`, or panics with the compiler's output.
fn compile(sources: &[PathBuf], out: &Path) {
    let mut cmd = Command::new("cc");
    cmd.args(FLAGS)
        .arg("-I")
        .arg(clients_c())
        .args(sources)
        .arg(clients_c().join("ipcprop_driver.c"))
        .arg("-o")
        .arg(out);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running cc (a C compiler is needed): {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The C tests of the client, then `pipe_fixed` (built with -Werror) end to end.
#[test]
fn c_driver_tests_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let test = tmp.path().join("test_ipcprop_driver");
    let pipe_fixed = tmp.path().join("pipe_fixed");
    compile(&[clients_c().join("test_ipcprop_driver.c")], &test);
    compile(&[clients_c().join("pipe_fixed.c")], &pipe_fixed);
    let sockets = tmp.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let output = Command::new(&test)
        .arg(&sockets)
        .arg(&pipe_fixed)
        .env_remove("IPCPROP_CONTROL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("all C driver tests passed"),
        "the C tests failed ({}):\n{stdout}{stderr}",
        output.status
    );
}

/// The example program in the header's comment compiles warning-free (it is the first
/// thing a user copies).
#[test]
fn header_example_compiles() {
    let header = std::fs::read_to_string(clients_c().join("ipcprop_driver.h")).unwrap();
    let begin = header
        .find(" * EXAMPLE BEGIN\n")
        .expect("EXAMPLE BEGIN in the header");
    let end = header
        .find(" * EXAMPLE END\n")
        .expect("EXAMPLE END in the header");
    let example = &header[begin + " * EXAMPLE BEGIN\n".len()..end];
    assert!(example.contains("int main(void)"), "{example}");
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("example.c");
    std::fs::write(&source, example).unwrap();
    compile(&[source], &tmp.path().join("example"));
}
