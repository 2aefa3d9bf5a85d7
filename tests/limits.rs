//! The limit checks of the battery (`forged_length_refused`, `sends_fail_after_receiver_gone`)
//! can fail: each has a deliberately broken transport that it catches, and that every other
//! check of the battery passes, at default settings. The crate's transports pass both (in
//! tests/conformance.rs and tests/foreign.rs, through `conformance_tests!`).

use std::time::Duration;

use ipcprop::check::battery::{
    forged_length_refused, receiver_gone, run_battery, sends_fail_after_receiver_gone,
    BatteryConfig, Finding,
};
use ipcprop::check::broken::{Broken, Defect};
use ipcprop::check::builtin::{PipeTransport, QueueTransport, RingTransport};
use ipcprop::check::foreign::UnixStreamTransport;
use ipcprop::check::{Transport, ViolationKind};
use ipcprop::{Receiver, Sender};

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

/// A sender that swallows Disconnected passes `receiver_gone` (which allows a send to
/// succeed once the receiver has left: the receiver may not have been noticed yet), and is
/// caught by `sends_fail_after_receiver_gone` as messages lost without a word.
#[test]
fn a_send_that_succeeds_silently_forever_is_caught_only_by_sends_fail_after_receiver_gone() {
    let finding = caught_only_by(
        Defect::SilentWhenReceiverGone,
        "sends_fail_after_receiver_gone",
    );
    assert!(
        finding
            .report
            .contains("after the receiver was gone and reaped all returned Ok"),
        "{finding}"
    );
    eprintln!("{finding}");
}

/// The same defects over other transports: the unix-stream adapter (our frames over a
/// socket) and, for the silent sender, the ring, which notices a gone receiver only when it
/// is full or every 1024 sends.
#[test]
fn the_limit_checks_catch_their_defects_over_other_transports() {
    common::within(LIMIT, || {
        let cfg = BatteryConfig::default();
        let finding = forged_length_refused(
            &Broken::new(UnixStreamTransport, Defect::AllocatesClaimedLength),
            &cfg,
        )
        .expect_err("an allocating receiver over a socket passed");
        assert!(finding.kinds.contains(&ViolationKind::Crashed), "{finding}");
        for finding in [
            sends_fail_after_receiver_gone(
                &Broken::new(UnixStreamTransport, Defect::SilentWhenReceiverGone),
                &cfg,
            ),
            sends_fail_after_receiver_gone(
                &Broken::new(RingTransport::default(), Defect::SilentWhenReceiverGone),
                &cfg,
            ),
        ] {
            let finding = finding.expect_err("a silent sender passed");
            assert!(finding.kinds.contains(&ViolationKind::Lost), "{finding}");
        }
    });
}

/// `receiver_gone` alone, over the silent sender, with more cases than the default: it
/// passes (the contract it checks allows a send to succeed after the receiver left).
#[test]
fn receiver_gone_allows_what_the_silent_sender_does() {
    common::within(LIMIT, || {
        let t = Broken::new(PipeTransport::default(), Defect::SilentWhenReceiverGone);
        let cfg = BatteryConfig {
            cases: 64,
            ..BatteryConfig::default()
        };
        receiver_gone(&t, &cfg).expect("receiver_gone allows a silent success");
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

/// Why the persistent file queue is not held to `sends_fail_after_receiver_gone`: its
/// sends with no receiver succeed by design, and a receiver that comes later takes the
/// messages. (The check passes it trivially.)
#[test]
fn the_queue_keeps_what_is_sent_with_no_receiver_for_a_later_one() {
    let t = QueueTransport::new().unwrap();
    let (mut tx, rx) = t.pair(1).unwrap();
    let mut later = t.reattach(&rx).unwrap().expect("the queue re-attaches");
    drop(rx);
    for m in [&b"kept"[..], b"for", b"later"] {
        tx.send(m).expect("a persistent send needs no receiver");
    }
    drop(tx);
    assert_eq!(later.recv().unwrap(), b"kept");
    assert_eq!(later.recv().unwrap(), b"for");
    assert_eq!(later.recv().unwrap(), b"later");
    sends_fail_after_receiver_gone(&t, &BatteryConfig::default()).unwrap();
}
