//! The examples and the CLI, run as a user would run them, with their output checked.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/examples/<name>`: cargo builds the examples before running tests.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    let path: PathBuf = dir.join(name);
    assert!(
        path.exists(),
        "example binary {} not built: run the whole `cargo test` (it builds the examples) or `cargo build --examples` first",
        path.display()
    );
    Command::new(path)
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ipcprop"))
}

fn run(mut cmd: Command) -> (String, Output) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (stdout, out)
}

fn check_fork_output(stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    let parent_line = lines
        .iter()
        .find(|l| l.starts_with("parent: my pid is "))
        .expect(stdout);
    let parent_pid = parent_line.trim_start_matches("parent: my pid is ");
    let child_line = lines
        .iter()
        .find(|l| l.starts_with("child: my pid is "))
        .expect(stdout);
    assert!(
        child_line.ends_with(&format!("my parent's is {parent_pid}")),
        "{stdout}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("parent: child ") && l.ends_with("exited with code 0")));
    // Flushed before the fork: the parent's first line is printed once, not twice.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("parent: my pid"))
            .count(),
        1,
        "{stdout}"
    );
}

fn check_threads_output(stdout: &str) {
    let joined = stdout.find("main: all 3 threads joined").expect(stdout);
    for i in 1..=3 {
        let hello = format!("Hello from worker-{i}\n");
        assert_eq!(stdout.matches(&hello).count(), 1, "{stdout}");
        // Joined means every greeting came before the main thread went on.
        assert!(stdout.find(&hello).unwrap() < joined, "{stdout}");
    }
}

fn check_pipe_output(stdout: &str) {
    let received: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("child: received "))
        .collect();
    assert_eq!(
        received,
        [
            "child: received Message 1",
            "child: received Message 2",
            "child: received Message 3"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("child: the parent closed the pipe"),
        "{stdout}"
    );
    assert!(
        stdout.contains("parent: child ") && stdout.contains(" finished"),
        "{stdout}"
    );
}

fn check_shm_output(stdout: &str) {
    let read: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("parent: read "))
        .collect();
    assert_eq!(
        read,
        [
            "parent: read Message 1",
            "parent: read Message 2",
            "parent: read Message 3"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("parent: the child is done writing"),
        "{stdout}"
    );
    assert!(stdout.contains(" finished"), "{stdout}");
}

fn check_file_queue_output(stdout: &str) {
    let popped: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("parent: popped "))
        .collect();
    assert_eq!(
        popped,
        [
            "parent: popped Message 1",
            "parent: popped Message 2",
            "parent: popped Message 3"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("queue now holds 0"), "{stdout}");
}

#[test]
fn file_queue_example() {
    let (stdout, out) = run(example("file_queue"));
    assert!(out.status.success(), "{stdout}");
    check_file_queue_output(&stdout);
}

#[test]
fn shm_example() {
    let (stdout, out) = run(example("shm"));
    assert!(out.status.success(), "{stdout}");
    check_shm_output(&stdout);
}

#[test]
fn fork_example() {
    let (stdout, out) = run(example("fork"));
    assert!(out.status.success(), "{stdout}");
    check_fork_output(&stdout);
}

#[test]
fn threads_example() {
    let (stdout, out) = run(example("threads"));
    assert!(out.status.success(), "{stdout}");
    check_threads_output(&stdout);
}

#[test]
fn pipe_example() {
    let (stdout, out) = run(example("pipe"));
    assert!(out.status.success(), "{stdout}");
    check_pipe_output(&stdout);
}

#[test]
fn pipe_exec_example_hands_over_only_one_descriptor() {
    let (stdout, out) = run(example("pipe_exec"));
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("child: only the read end was inherited"),
        "{stdout}"
    );
    for i in 1..=3 {
        assert!(
            stdout.contains(&format!("child: received Message {i}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("child: end of stream"), "{stdout}");
}

#[test]
fn shm_exec_example_attaches_by_inherited_descriptors() {
    let (stdout, out) = run(example("shm_exec"));
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("child: received "))
        .collect();
    assert_eq!(
        received,
        [
            "child: received Message 1",
            "child: received Message 2",
            "child: received Message 3"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("child: the sender is gone"), "{stdout}");
}

#[test]
fn cli_demo_runs_every_scenario() {
    let mut cmd = cli();
    cmd.arg("demo");
    let (stdout, out) = run(cmd);
    assert!(out.status.success(), "{stdout}");
    check_fork_output(&stdout);
    check_threads_output(&stdout);
    check_pipe_output(&stdout);
    check_shm_output(&stdout);
    check_file_queue_output(&stdout);
}

#[test]
fn cli_refuses_bad_arguments() {
    let mut cmd = cli();
    cmd.args(["check", "--cases", "lots"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cases"));
}

#[test]
fn custom_transport_example_runs_the_battery_on_a_users_transport() {
    let (stdout, out) = run(example("custom_transport"));
    assert!(out.status.success(), "{stdout}");
    for check in ipcprop::check::battery::CHECKS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(check) && l.ends_with("pass")),
            "{check}: {stdout}"
        );
    }
}
