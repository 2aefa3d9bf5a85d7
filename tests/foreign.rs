//! The battery over transports this crate did not write. What it finds is a result:
//! - a `UnixStream` socketpair carrying our frames passes everything (once the pipe code
//!   it reuses took `ECONNRESET`, which a socket returns where a pipe returns `EPIPE`, for
//!   Disconnected: the battery's first run over it found that);
//! - a `SOCK_SEQPACKET` socketpair read the usual way (`recv` returning 0 means the peer is
//!   gone) loses messages: an empty packet also reads as 0 bytes, so the receiver stops at
//!   the first empty message. The battery finds it and names it: lost.
//! - a pipe whose reader keeps a copy of the write end has no end of stream. Declared, the
//!   battery passes it (the harness ends each case once the senders are gone); undeclared,
//!   it fails in one case with a sender that sends nothing; with `ipcprop::liveness` added,
//!   it has an end of stream and passes every check.

use ipcprop::check::battery::{self, BatteryConfig};
use ipcprop::check::foreign::{
    KeptWriterPipeTransport, LiveKeptWriterPipeTransport, SeqpacketTransport, UnixStreamTransport,
};
use ipcprop::check::{Capabilities, Transport, ViolationKind};

ipcprop::conformance_tests!(unix_stream, UnixStreamTransport);
ipcprop::conformance_tests!(kept_writer, KeptWriterPipeTransport);

/// With `ipcprop::liveness` added, the kept-writer pipe keeps the end-of-stream contract,
/// under kills inside sends too (the checks about the end; the rest is the pipe's code).
#[test]
fn liveness_gives_the_kept_writer_pipe_an_end_of_stream() {
    let cfg = BatteryConfig {
        cases: 16,
        ..BatteryConfig::default()
    };
    let t = LiveKeptWriterPipeTransport;
    battery::fifo_and_integrity(&t, &cfg).unwrap();
    battery::disconnect_on_drop(&t, &cfg).unwrap();
    battery::disconnect_on_sigkill(&t, &cfg).unwrap();
    battery::receiver_gone(&t, &cfg).unwrap();
    battery::sends_fail_after_receiver_gone(&t, &cfg).unwrap();
    battery::faults_inside_operations(&t, &cfg).unwrap();
}

/// The kept-writer pipe, claiming an end of stream it does not have.
struct Claims;

impl Transport for Claims {
    type Sender = <KeptWriterPipeTransport as Transport>::Sender;
    type Receiver = <KeptWriterPipeTransport as Transport>::Receiver;

    fn name(&self) -> String {
        "kept-writer-claiming-an-end".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            end_of_stream: true,
            ..KeptWriterPipeTransport.capabilities()
        }
    }

    fn pair(&self, senders: usize) -> ipcprop::Result<(Self::Sender, Self::Receiver)> {
        KeptWriterPipeTransport.pair(senders)
    }
}

/// A transport that claims an end of stream it lacks fails in one case (a sender that
/// sends nothing and exits), named as the missing end, not after every generated case hangs
/// and shrinking runs each hang again.
#[test]
fn a_missing_end_of_stream_fails_in_one_case() {
    let report = ipcprop::check::run(
        &Claims,
        &ipcprop::check::CampaignConfig {
            cases: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let failure = report.failure.expect("the missing end of stream is found");
    assert_eq!(report.cases, 1);
    assert_eq!(failure.minimal.plan.message_count(), 0);
    let text = failure.minimal.report();
    assert!(text.contains("the end of stream never came"), "{text}");
    assert_eq!(failure.minimal.violations[0].kind(), ViolationKind::Hung);
}

#[test]
fn seqpacket_loses_what_follows_an_empty_packet() {
    let t = SeqpacketTransport;
    let findings = battery::run_battery(&t, &BatteryConfig::default());
    for f in &findings {
        println!("{f}");
    }
    let boundary = findings
        .iter()
        .find(|f| f.check == "boundary_sizes")
        .expect("the zero-length finding");
    assert!(boundary.kinds.contains(&ViolationKind::Lost), "{boundary}");
    // Nothing else: only losses, a receiver told Disconnected while its sender was still
    // sending (the empty packet taken for the end), and senders told Disconnected by it.
    for f in &findings {
        assert!(
            f.kinds.iter().all(|k| matches!(
                k,
                ViolationKind::Lost | ViolationKind::Crashed | ViolationKind::EarlyDisconnect
            )),
            "an unexpected finding: {f}"
        );
        // Each shows the false end itself: messages lost behind it, the sender still alive
        // after it, or a later receive that no longer says Disconnected.
        assert!(
            f.kinds.contains(&ViolationKind::Lost)
                || f.kinds.contains(&ViolationKind::EarlyDisconnect)
                || f.report.contains("after Disconnected"),
            "{f}"
        );
    }
}

/// With no end of stream, the harness still judges what arrived: a kept-writer pipe that
/// drops a message is caught as losing it (the case ends by the harness, not by a hang).
#[test]
fn with_no_end_of_stream_a_lost_message_is_still_found() {
    use ipcprop::check::broken::{Broken, Defect};
    let t = Broken::new(KeptWriterPipeTransport, Defect::Drop(1));
    let cfg = BatteryConfig {
        cases: 8,
        max_shrink_iters: 0,
        reproduce_runs: 0,
        ..BatteryConfig::default()
    };
    let finding = battery::fifo_and_integrity(&t, &cfg).unwrap_err();
    assert_eq!(finding.kinds, vec![ViolationKind::Lost], "{finding}");
}
