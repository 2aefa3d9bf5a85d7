//! The tutorial this crate grew from, checked: `examples/python/tutorial_*.py` re-create the
//! mistakes of its pipe, shared-memory and flock-queue examples under the driver protocol,
//! and `examples/python/*_fixed.py` correct them. The harness must catch each tutorial
//! program with the violation kinds its bugs imply, and pass each fixed one, with the
//! capabilities each declares in the `.ipcprop.toml` beside it.

use std::time::Duration;

use ipcprop::check::exec::{CapsFile, ExecTransport};
use ipcprop::check::{self, CampaignConfig, CampaignReport, ViolationKind};

fn program(name: &str) -> ExecTransport {
    let cmd = format!("python3 examples/python/{name}.py");
    let caps = CapsFile::beside(&cmd).unwrap_or_else(|| panic!("no capability file for {name}"));
    CapsFile::load(&caps)
        .unwrap()
        .apply(ExecTransport::new(cmd))
}

fn campaign(t: &ExecTransport, cases: u32) -> CampaignReport {
    let config = CampaignConfig {
        cases,
        seed: 11,
        // Python programs start in tens of milliseconds: shrinking is bounded.
        max_shrink_time: Duration::from_secs(20),
        reproduce_runs: 2,
        ..CampaignConfig::default()
    };
    // A program that breaks the driver protocol is an error here, never a pass or a catch.
    check::run(t, &config).unwrap_or_else(|e| panic!("{e}"))
}

/// The violation kinds of the minimal failing case (panics, with the report, on a pass).
fn caught(name: &str) -> Vec<ViolationKind> {
    let report = campaign(&program(name), 24);
    let f = report
        .failure
        .unwrap_or_else(|| panic!("{name} passed {} cases: its bugs went unseen", report.cases));
    let report_text = f.report();
    eprintln!("{name}:\n{report_text}");
    assert!(report_text.contains("timeline"), "{report_text}");
    f.minimal.violations.iter().map(|v| v.kind()).collect()
}

fn passes(name: &str) {
    let report = campaign(&program(name), 16);
    if let Some(f) = &report.failure {
        panic!("{name} failed:\n{}", f.report());
    }
    assert_eq!(report.cases, 16);
    assert!(report.faults > 0, "{name}: no fault was injected");
}

#[test]
fn the_tutorial_pipe_hangs_with_its_unused_ends_open() {
    // The receiver keeps a write end open: it never sees the end of the stream.
    assert!(caught("tutorial_pipe").contains(&ViolationKind::Hung));
}

#[test]
fn the_tutorial_pipe_reads_arbitrary_chunks_as_messages() {
    // Without its hang (no end of stream declared), what remains is the framing: reads of
    // 1024 bytes glue messages together and split long ones.
    let t = program("tutorial_pipe").with_capabilities(ipcprop::check::Capabilities {
        end_of_stream: false,
        ..ipcprop::check::Transport::capabilities(&program("tutorial_pipe"))
    });
    let kinds = campaign(&t, 24)
        .failure
        .expect("the chunked reads went unseen")
        .minimal
        .violations
        .iter()
        .map(|v| v.kind())
        .collect::<Vec<_>>();
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            ViolationKind::Corrupted | ViolationKind::Unexpected | ViolationKind::Lost
        )),
        "{kinds:?}"
    );
}

#[test]
fn the_tutorial_shared_memory_overwrites_and_tears_messages() {
    let kinds = caught("tutorial_shm");
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            ViolationKind::Corrupted | ViolationKind::Unexpected | ViolationKind::Lost
        )),
        "{kinds:?}"
    );
}

#[test]
fn the_tutorial_queue_loses_messages() {
    let kinds = caught("tutorial_queue");
    assert!(kinds.contains(&ViolationKind::Lost), "{kinds:?}");
}

#[test]
fn the_fixed_pipe_passes() {
    passes("pipe_fixed");
}

#[test]
fn the_fixed_shared_memory_ring_passes() {
    passes("shm_fixed");
}

#[test]
fn the_fixed_queue_passes() {
    passes("queue_fixed");
}

/// The fixed queue is persistent (`persistent = true` beside it): the recovery run after
/// a killed receiver, with its broken variants (`tests/exec/queue_broken.py`), on fixed
/// plans so each outcome is certain.
mod persistence {
    use super::*;
    use ipcprop::check::plan::{Fault, FaultKind, Plan, Victim};
    use ipcprop::check::{run_case, RunConfig};

    fn queue(mode: Option<&str>) -> ExecTransport {
        let cmd = match mode {
            None => "python3 examples/python/queue_fixed.py".to_string(),
            Some(m) => format!("python3 tests/exec/queue_broken.py {m}"),
        };
        CapsFile::load(std::path::Path::new(
            "examples/python/queue_fixed.ipcprop.toml",
        ))
        .unwrap()
        .apply(ExecTransport::new(cmd))
    }

    /// Six messages of 16 bytes; the receiver is SIGKILLed after its second: between
    /// two receives (`inside` false) or by the harness inside the third. Its plan would
    /// close it after the third: a recovery receiver drains everything all the same.
    fn plan(inside: bool) -> Plan {
        let mut plan = Plan::simple(5, vec![16; 6]);
        plan.receiver.close_after = Some(3);
        if inside {
            plan.faults.push(Fault {
                victim: Victim::Receiver,
                kind: FaultKind::Kill,
                op: 2,
                delay_micros: 0,
            });
        } else {
            plan.receiver.kill_after = Some(2);
        }
        plan
    }

    fn kinds(mode: Option<&str>, inside: bool) -> Vec<ViolationKind> {
        outcome(mode, inside)
            .violations
            .iter()
            .map(|v| v.kind())
            .collect()
    }

    fn outcome(mode: Option<&str>, inside: bool) -> ipcprop::check::CaseOutcome {
        let out = run_case(&queue(mode), &plan(inside), &RunConfig::default())
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let report = out.report();
        assert!(
            report.contains("recovery receiver"),
            "{mode:?}: no recovery run:\n{report}"
        );
        eprintln!("{mode:?}, inside {inside}:\n{report}");
        out
    }

    #[test]
    fn the_fixed_queue_recovers_what_its_killed_receiver_left() {
        let out = outcome(None, false);
        assert!(out.passed(), "{}", out.report());
        // All six, across the two runs.
        assert_eq!(out.messages, 6, "{}", out.report());
        assert_eq!(kinds(None, true), []);
    }

    /// A recovery receiver that never reports the end, but waits (as a receiver with no
    /// end of stream does), is ended by the harness once quiet, whatever the program
    /// declared about its end of stream.
    #[test]
    fn a_recovery_receiver_that_waits_is_ended_once_quiet() {
        let out = outcome(Some("wait-in-recovery"), false);
        assert!(out.passed(), "{}", out.report());
        assert_eq!(out.messages, 6, "{}", out.report());
    }

    #[test]
    fn a_position_not_stored_brings_messages_back() {
        assert!(kinds(Some("forget-position"), false).contains(&ViolationKind::Duplicated));
    }

    #[test]
    fn a_position_stored_after_the_report_brings_one_back() {
        let k = kinds(Some("report-then-commit"), false);
        assert!(k.contains(&ViolationKind::Duplicated), "{k:?}");
    }

    #[test]
    fn a_recovery_run_that_starts_afresh_loses_messages() {
        let k = kinds(Some("fresh-start"), false);
        assert!(k.contains(&ViolationKind::Lost), "{k:?}");
    }
}
