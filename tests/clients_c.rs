//! The C client of the driver protocol (`clients/c/`), built with the system's `cc` under
//! `-Wall -Wextra -Werror` and tested by its own C test program
//! (`clients/c/test_ipcprop_driver.c`): the generator's test vectors, CRC-32C, the command
//! parser, the environment, both roles against a fake harness (exact lines, the pid in the
//! hello, `t`, every event, the harness going away), and `pipe_fixed.c` and the header's
//! example end to end against the same fake harness.
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

/// The C compiler: `$CC`, else `cc`, else `gcc` (a machine with gcc may lack the `cc` name).
fn compiler() -> String {
    if let Ok(cc) = std::env::var("CC") {
        return cc;
    }
    let found = |name: &str| Command::new(name).arg("--version").output().is_ok();
    if found("cc") || !found("gcc") {
        "cc".into()
    } else {
        "gcc".into()
    }
}

/// Compiles `sources` (with the driver) into `out`, or panics with the compiler's output.
fn compile(sources: &[PathBuf], out: &Path) {
    let mut cmd = Command::new(compiler());
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

/// Runs the C test program with `args` after the sockets' directory; panics with its
/// output if it fails.
fn run_c_tests(test: &Path, tmp: &Path, args: &[&std::ffi::OsStr]) {
    let sockets = tmp.join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let output = Command::new(test)
        .arg(&sockets)
        .args(args)
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

/// Builds the C test program in `tmp`.
fn build_tests(tmp: &Path) -> PathBuf {
    let test = tmp.join("test_ipcprop_driver");
    compile(&[clients_c().join("test_ipcprop_driver.c")], &test);
    test
}

/// The C tests of the client itself.
#[test]
fn c_driver_tests_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let test = build_tests(tmp.path());
    run_c_tests(&test, tmp.path(), &[]);
}

/// `pipe_fixed.c` builds with -Werror and passes a fake harness's conversation: two
/// senders, a message larger than the pipe, storms, the end of stream, a send after the
/// receiver closed.
#[test]
fn pipe_fixed_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let test = build_tests(tmp.path());
    let program = tmp.path().join("pipe_fixed");
    compile(&[clients_c().join("pipe_fixed.c")], &program);
    run_c_tests(
        &test,
        tmp.path(),
        &["--program".as_ref(), program.as_os_str(), "2".as_ref()],
    );
}

/// The example program in the header's comment (the first thing a user copies) builds
/// with -Werror and passes the one-sender conversations.
#[test]
fn header_example_end_to_end() {
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
    let program = tmp.path().join("example");
    compile(&[source], &program);
    let test = build_tests(tmp.path());
    run_c_tests(
        &test,
        tmp.path(),
        &["--program".as_ref(), program.as_os_str(), "1".as_ref()],
    );
}

/// The real harness: `ipcprop check --exec` passes `pipe_fixed` with the capabilities
/// file beside it (read from there, so its format is checked too).
#[cfg(feature = "cli")]
#[test]
fn pipe_fixed_passes_ipcprop_check() {
    let tmp = tempfile::tempdir().unwrap();
    let program = tmp.path().join("pipe_fixed");
    compile(&[clients_c().join("pipe_fixed.c")], &program);
    std::fs::copy(
        clients_c().join("pipe_fixed.ipcprop.toml"),
        tmp.path().join("pipe_fixed.ipcprop.toml"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ipcprop"))
        .args(["check", "--cases", "40", "--seed", "3", "--exec"])
        .arg(&program)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("c-pipe-fixed"),
        "ipcprop check --exec pipe_fixed failed ({}):\n{stdout}{stderr}",
        output.status
    );
}
