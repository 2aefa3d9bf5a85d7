//! The limit checks of the battery (`forged_length_refused`) can fail: each has a
//! deliberately broken transport that it catches, and that every other check of the
//! battery passes, at default settings. The crate's transports pass them (in
//! tests/conformance.rs and tests/foreign.rs, through `conformance_tests!`).

use std::time::Duration;

use ipcprop::check::battery::{forged_length_refused, run_battery, BatteryConfig, Finding};
use ipcprop::check::broken::{Broken, Defect};
use ipcprop::check::builtin::PipeTransport;
use ipcprop::check::foreign::UnixStreamTransport;
use ipcprop::check::{Transport, ViolationKind};
use ipcprop::Receiver;

mod common;

/// The whole battery over a broken pipe, at default settings, runs in well under this.
const LIMIT: Duration = Duration::from_secs(480);

fn summary(findings: &[Finding]) -> Vec<(&'static str, Vec<ViolationKind>)> {
    findings
        .iter()
        .map(|f| (f.check, f.kinds.clone()))
        .collect()
}

/// Runs the whole battery over `defect` on the pipe and asserts that `check` is the one
/// finding, named as the defect expects.
fn caught_only_by(defect: Defect, check: &'static str) -> Finding {
    common::within(LIMIT, move || {
        let t = Broken::new(PipeTransport::default(), defect);
        let findings = run_battery(&t, &BatteryConfig::default());
        assert_eq!(
            findings.iter().map(|f| f.check).collect::<Vec<_>>(),
            [check],
            "{defect:?}: {:?}\n{}",
            summary(&findings),
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let finding = findings.into_iter().next().expect("one finding");
        assert!(
            finding.kinds.contains(&defect.expected()),
            "{defect:?} not named {}: {finding}",
            defect.expected()
        );
        finding
    })
}

/// A receiver that sets aside what a header claims before checking it dies on a forged
/// 2 GiB claim under the lowered address-space limit: the check reports the abort as a
/// crash. No other check forges a header, so none sees it.
#[test]
fn a_receiver_that_allocates_the_claimed_length_is_caught_only_by_forged_length_refused() {
    let finding = caught_only_by(Defect::AllocatesClaimedLength, "forged_length_refused");
    assert!(finding.report.contains("SIGABRT"), "{finding}");
    eprintln!("{finding}");
}

/// The same defect over the unix-stream adapter (our frames over a socket).
#[test]
fn forged_length_refused_catches_the_allocating_receiver_over_a_socket() {
    common::within(LIMIT, || {
        let finding = forged_length_refused(
            &Broken::new(UnixStreamTransport, Defect::AllocatesClaimedLength),
            &BatteryConfig::default(),
        )
        .expect_err("an allocating receiver over a socket passed");
        assert!(finding.kinds.contains(&ViolationKind::Crashed), "{finding}");
    });
}

/// The hook writes what the pipe's header can say, and nothing else: a claim over
/// `u32::MAX` is not written, and the receiver refuses the claims that are.
#[test]
fn the_pipe_forges_what_its_header_can_say() {
    let t = PipeTransport::default();
    for (claim, written) in [
        (u64::from(u32::MAX) + 1, false),
        (u64::MAX, false),
        (u64::from(u32::MAX), true),
        ((16 << 20) + 1, true),
    ] {
        let (mut tx, mut rx) = t.pair(1).unwrap();
        assert_eq!(t.forge_header(&mut tx, claim).unwrap(), written, "{claim}");
        let got = rx.try_recv();
        if written {
            assert!(
                matches!(got, Err(ipcprop::Error::Frame(ref e)) if e.to_string().contains(&claim.to_string())),
                "{claim}: {got:?}"
            );
        } else {
            assert!(
                matches!(got, Err(ipcprop::Error::Empty)),
                "{claim}: {got:?}"
            );
        }
    }
}
