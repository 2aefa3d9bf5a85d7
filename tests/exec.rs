//! `ipcprop check --exec`: the harness over the driver protocol (docs/PROTOCOL.md).
//!
//! - The built-in transports, served as programs under test by `ipcprop serve-role`, pass
//!   the plan battery over the protocol: the protocol path is proven against transports
//!   known to be good.
//! - Deliberately broken transports served the same way are caught, with the violation
//!   kinds their defects imply: faults and checks work through the protocol.
//! - Programs that break the protocol get a driver error naming the program, the role and
//!   the line (exit 2), are never reported as a violation, and leave no process and no
//!   file behind.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ipcprop::check::battery::{self, BatteryConfig};
use ipcprop::check::builtin::Builtin;
use ipcprop::check::exec::ExecTransport;
use ipcprop::check::{Transport, ViolationKind};

const BIN: &str = env!("CARGO_BIN_EXE_ipcprop");

/// Built-in transport `name` served over the protocol, declaring its own capabilities
/// (the queue's persistence too: a case whose receiver is killed gets a recovery run).
fn served(name: &str) -> ExecTransport {
    served_after("", name)
}

/// `served(name)`, with shell commands run first in each run of the program.
fn served_after(prelude: &str, name: &str) -> ExecTransport {
    let b = Builtin::parse(name).unwrap();
    let caps = b.capabilities().unwrap();
    ExecTransport::new(format!(
        "{prelude} exec {BIN} serve-role --transport '{name}'"
    ))
    .with_name(format!("exec:{name}"))
    .with_capabilities(caps)
}

fn config(cases: u32) -> BatteryConfig {
    BatteryConfig {
        cases,
        size_cap: 256 << 10,
        ..BatteryConfig::default()
    }
}

fn passes_the_plan_battery(name: &str) {
    let t = served(name);
    let findings = battery::run_plan_battery(&t, &config(12));
    if let Some(f) = findings.first() {
        panic!(
            "{} finding(s) over {}; the first:\n{f}",
            findings.len(),
            t.name()
        );
    }
}

#[test]
fn the_pipe_passes_the_plan_battery_over_the_protocol() {
    passes_the_plan_battery("pipe");
}

// The ring through the macro, as a user would write it for their own program: one test
// per plan check.
ipcprop::conformance_tests!(
    ring_over_the_protocol,
    exec = served("ring"),
    size_cap = 64 * 1024
);

#[test]
fn the_queue_passes_the_plan_battery_over_the_protocol() {
    passes_the_plan_battery("queue");
}

#[test]
fn faults_land_inside_operations_over_the_protocol() {
    let t = served("pipe");
    let report = battery::faults_campaign(&t, &config(24)).unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert!(
        report.faults_inside * 2 >= report.faults && report.faults >= 24,
        "{} faults, {} inside: the nemesis should land most of them inside a send or a \
         receive through the protocol too",
        report.faults,
        report.faults_inside
    );
}

type Check = fn(&ExecTransport, &BatteryConfig) -> Result<(), battery::Finding>;

/// Each broken transport, served over the protocol, is caught by the plan battery with
/// the kind its defect implies.
#[test]
fn broken_transports_are_caught_over_the_protocol() {
    use ViolationKind::*;
    // A swap holds a message back until the next one: shrunk to a plan where none
    // follows, the held message is lost. Each entry lists every kind its defect implies:
    // which one the minimal plan shows depends on the timing of the run it shrank from.
    let expect: [(&str, &[ViolationKind]); 7] = [
        ("pipe+drop(2)", &[Lost]),
        ("pipe+duplicate(2)", &[Duplicated]),
        ("pipe+swap(2)", &[Reordered, Lost]),
        // The flipped byte is the middle one: in a message under 16 bytes, its identity.
        ("pipe+flipbit(2)", &[Corrupted, Unexpected]),
        ("pipe+hangafter(2)", &[Hung]),
        ("pipe+panicon(2)", &[Crashed]),
        // Ends the stream when one sender dies: the others' messages are lost, or a
        // survivor reports after the end came.
        ("pipe+endonanysenderdeath", &[Lost, EarlyDisconnect]),
    ];
    let cfg = BatteryConfig {
        max_shrink_time: Duration::from_secs(20),
        reproduce_runs: 2,
        ..config(16)
    };
    let mut missed = Vec::new();
    for (name, kind) in expect {
        let t = served(name);
        let checks: [Check; 3] = [
            battery::fifo_and_integrity,
            battery::several_senders,
            battery::faults_inside_operations,
        ];
        let found = checks.iter().find_map(|c| c(&t, &cfg).err());
        match found {
            Some(f) if f.kinds.iter().any(|k| kind.contains(k)) => {}
            Some(f) => missed.push(format!("{name}: found {:?}, not {kind:?}:\n{f}", f.kinds)),
            None => missed.push(format!("{name}: not caught")),
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

/// The processes whose command line holds `token`.
fn processes_with(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(token) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

/// Runs `ipcprop check --exec` over misbehave.py in `mode`; asserts exit 2, a driver error
/// that says each of `says`, no violation report, and nothing left behind.
fn refused(mode: &str, says: &[&str]) {
    refused_saying_one_of(mode, &[says]);
}

/// As [`refused`], when the error may say one of several correct things (depending on
/// which process the harness heard from first): it must say every part of one of them.
fn refused_saying_one_of(mode: &str, alternatives: &[&[&str]]) {
    let token = format!("ipcprop-exec-test-{mode}-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let program = format!("python3 tests/exec/misbehave.py {mode} {token}");
    let out = Command::new(BIN)
        .args([
            "check",
            "--exec",
            &program,
            "--max-len",
            "1000",
            "--senders",
            "1",
        ])
        .args(["--cases", "2", "--start-timeout", "2", "--timeout", "10"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{mode}: want exit 2 (could not run)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("driver protocol error") && stderr.contains(&program),
        "{mode}: the error must say it is the protocol and name the program:\n{stderr}"
    );
    assert!(
        alternatives
            .iter()
            .any(|says| says.iter().all(|s| stderr.contains(s))),
        "{mode}: the error should say all of one of {alternatives:?}:\n{stderr}"
    );
    assert!(
        !stdout.contains("violation"),
        "{mode}: a protocol error is not a violation:\n{stdout}"
    );
    // Nothing left: no process of the program, nothing in its temporary directory.
    let until = Instant::now() + Duration::from_secs(5);
    while !processes_with(&token).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_with(&token), Vec::<String>::new(), "{mode}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{mode}: left behind {left:?}");
}

#[test]
fn a_program_that_crashes_at_start_is_a_driver_error_with_its_output() {
    refused(
        "crash",
        &[
            "exited",
            "before every role connected",
            "receiver",
            "boom: this program fails",
        ],
    );
}

#[test]
fn a_program_that_never_connects_is_a_driver_error() {
    refused(
        "silent",
        &["never connected", "start timeout", "receiver", "sender 0"],
    );
}

#[test]
fn a_role_that_connects_twice_is_a_driver_error() {
    // The second connection is refused by its hello, or, if the sender's hello came
    // first, as soon as it connects (every role had said hello by then).
    refused_saying_one_of(
        "twice",
        &[
            &["receiver", "a second hello for receiver"],
            &["after every role had said hello", "a role connected twice"],
        ],
    );
}

#[test]
fn a_hello_with_another_pid_is_a_driver_error() {
    refused(
        "wrongpid",
        &[
            "receiver",
            "the hello says pid",
            "offending line: {\"hello\"",
        ],
    );
}

#[test]
fn a_sender_index_out_of_range_is_a_driver_error() {
    refused("badindex", &["sender 6", "out of range", "offending line"]);
}

#[test]
fn a_first_line_that_is_not_a_hello_is_a_driver_error() {
    refused(
        "nohello",
        &[
            "\"eos\" where a hello must come first",
            "offending line: {\"ev\": \"eos\"",
        ],
    );
}

#[test]
fn a_malformed_line_is_a_driver_error_naming_the_role_and_the_line() {
    refused(
        "badjson",
        &[
            "receiver",
            "not a JSON object",
            "offending line: {this is not json",
        ],
    );
}

#[test]
fn an_oversized_line_is_a_driver_error() {
    refused(
        "oversized",
        &["receiver", "without a line end", "offending line: xxxx"],
    );
}

#[test]
fn a_message_reported_without_being_asked_for_is_a_driver_error() {
    refused("phantom", &["receiver", "\"received\"", "offending line"]);
}

#[test]
fn a_flood_of_lines_is_a_driver_error_at_the_first() {
    refused(
        "flood",
        &["receiver", "\"bye\" answers no command", "offending line"],
    );
}

#[test]
fn an_extra_connection_is_a_driver_error() {
    refused("extra", &["after every role had said hello"]);
}

#[test]
fn a_time_in_the_future_is_a_driver_error() {
    refused(
        "future",
        &["receiver", "later than the moment the line was read"],
    );
}

#[test]
fn capabilities_come_from_the_file_beside_the_program_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("prog.sh");
    std::fs::write(&prog, "exit 0\n").unwrap();
    // No maximum declared anywhere: refused before anything runs.
    let out = Command::new(BIN)
        .args([
            "check",
            "--exec",
            &format!("sh {}", prog.display()),
            "--cases",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-len"), "{stderr}");
    // A bad file next to it is named.
    std::fs::write(dir.path().join("prog.ipcprop.toml"), "max_len = 3\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "check",
            "--exec",
            &format!("sh {}", prog.display()),
            "--cases",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("prog.ipcprop.toml") && stderr.contains("unknown field"),
        "{stderr}"
    );
    assert!(Path::new(&prog).exists());
    // Flags are checked as a file is, after they are laid over it.
    std::fs::remove_file(dir.path().join("prog.ipcprop.toml")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--exec", &format!("sh {}", prog.display())])
        .args(["--max-len", "10", "--shared-max-len", "11", "--cases", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shared_max_len 11 is larger than max_message_len 10"),
        "{stderr}"
    );
    // A capability flag with no program to apply it to is a mistake, not ignored.
    let out = Command::new(BIN)
        .args(["check", "--max-len", "5", "--cases", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--exec"), "{stderr}");
}

/// Two programs: the receiver's is started first, alone (IPCPROP_ROLE=receiver); once it
/// has said hello, the sender's is started once per sender (IPCPROP_ROLE=sender,
/// IPCPROP_INDEX=i). They meet by a path in IPCPROP_DIR.
#[test]
fn split_programs_meet_by_path_and_pass() {
    let cmd = "python3 examples/python/socket_server.py";
    let caps = ipcprop::check::exec::CapsFile::load(Path::new(
        "examples/python/socket_server.ipcprop.toml",
    ))
    .unwrap();
    let t = caps.apply(ExecTransport::split(cmd, cmd));
    let config = ipcprop::check::CampaignConfig {
        cases: 12,
        seed: 5,
        ..ipcprop::check::CampaignConfig::default()
    };
    let report = ipcprop::check::run(&t, &config).unwrap_or_else(|e| panic!("{e}"));
    if let Some(f) = &report.failure {
        panic!("{}", f.report());
    }
    assert_eq!(report.cases, 12);
    // The same program started without a role refuses: it is a driver error, with its
    // own words, not a violation.
    let one = caps.apply(ExecTransport::new(cmd));
    let e = ipcprop::check::run(&one, &config).unwrap_err().to_string();
    assert!(
        e.contains("driver protocol error") && e.contains("runs as one role"),
        "{e}"
    );
}

/// Over the command line, a program's failure is a violation (exit 1), printed with its
/// minimal plan and the options that reproduce it, capabilities included.
#[test]
fn a_failure_over_the_cli_names_the_options_that_reproduce_it() {
    let program = format!("{BIN} serve-role --transport broken-drop");
    let out = Command::new(BIN)
        .args([
            "check",
            "--exec",
            &program,
            "--caps-of",
            "pipe",
            "--max-len",
            "4096",
        ])
        .args(["--cases", "20", "--seed", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let want =
        format!("(reproduce with --exec '{program}' --caps-of 'pipe' --max-len 4096 --seed 3)");
    assert!(stdout.contains(&want), "no {want} in:\n{stdout}");
    assert!(
        stdout.contains("[lost]") && stdout.contains("timeline"),
        "{stdout}"
    );
}

/// A persistent program (the file queue, served) is started again with IPCPROP_RECOVER=1
/// after each case whose receiver was killed, and its new receiver must find every
/// acknowledged message the first one had not received: the queue does. A program that
/// starts its recovery run from empty storage is caught losing messages.
#[test]
fn a_persistent_program_is_run_again_after_its_receiver_is_killed_and_must_recover() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs");
    let config = ipcprop::check::CampaignConfig {
        cases: 60,
        seed: 9,
        max_shrink_time: Duration::from_secs(20),
        ..ipcprop::check::CampaignConfig::default()
    };
    // Each run of the program notes whether it is a recovery run.
    let prelude = format!("echo \"run $IPCPROP_RECOVER\" >> '{}';", log.display());
    let t = served_after(&prelude, "queue");
    let report = ipcprop::check::run(&t, &config).unwrap_or_else(|e| panic!("{e}"));
    if let Some(f) = &report.failure {
        panic!("{}", f.report());
    }
    let runs = std::fs::read_to_string(&log).unwrap();
    let recoveries = runs.lines().filter(|l| *l == "run 1").count();
    let firsts = runs.lines().filter(|l| *l == "run ").count();
    assert!(
        recoveries >= 1 && firsts >= 60 && recoveries + firsts == runs.lines().count(),
        "{firsts} runs and {recoveries} recovery runs: 60 cases kill their receiver now and \
         then, and each such case must be followed by a recovery run:\n{runs}"
    );
    // The same queue, made afresh in the recovery run: what it held is lost.
    let fresh = "if [ -n \"$IPCPROP_RECOVER\" ]; then rm -f \"$IPCPROP_DIR/queue.q\"; fi;";
    let report = ipcprop::check::run(&served_after(fresh, "queue"), &config)
        .unwrap_or_else(|e| panic!("{e}"));
    let f = report
        .failure
        .unwrap_or_else(|| panic!("a queue emptied by its recovery run passed"));
    let kinds: Vec<ViolationKind> = f.minimal.violations.iter().map(|v| v.kind()).collect();
    let text = f.report();
    assert!(
        kinds.contains(&ViolationKind::Lost) && text.contains("recovery receiver"),
        "{kinds:?}\n{text}"
    );
    // A program whose messages do not outlive it, declared persistent, cannot recover:
    // a driver error in the recovery run, not a violation.
    let mut pipe = served("pipe");
    let mut caps = pipe.capabilities();
    caps.persistent = true;
    pipe = pipe.with_capabilities(caps);
    let e = ipcprop::check::run(&pipe, &config).unwrap_err().to_string();
    assert!(
        e.contains("in the recovery run (IPCPROP_RECOVER=1)")
            && e.contains("do not declare it persistent"),
        "{e}"
    );
}
