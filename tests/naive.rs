//! Mistakes real framed-stream code makes (`ipcprop::check::broken::NaiveStreamTransport`),
//! each passed by the checks that run operations to completion and caught by the one that
//! puts a fault or a backlog where the mistake lives: a receiver waiting for the rest of a
//! message (a sender stopped inside it), a resend or an error after `EINTR` (a signal
//! storm inside a send), a part message delivered at the end (a kill inside a send), one
//! message kept per read (a backlog).

use ipcprop::check::battery::{self, BatteryConfig};
use ipcprop::check::broken::{NaiveFlaw, NaiveStreamTransport};
use ipcprop::check::ViolationKind;

fn t(flaw: NaiveFlaw) -> NaiveStreamTransport {
    NaiveStreamTransport { flaw }
}

/// A receiver that, once part of a message is there, reads the rest with blocking reads
/// passes plain plans and the timeout check (an empty stream times out on time), and is
/// caught by `stopped_sender_mid_message`: its `try_recv` waits for the stopped sender.
#[test]
fn waiting_for_the_rest_of_a_message_is_caught_with_the_sender_stopped_inside_it() {
    let cfg = BatteryConfig::default();
    let naive = t(NaiveFlaw::WaitsForTheRest);
    battery::fifo_and_integrity(&naive, &cfg).unwrap();
    battery::timeouts_honoured(&naive, &cfg).unwrap();
    battery::disconnect_on_sigkill(&naive, &cfg).unwrap();
    let finding = battery::stopped_sender_mid_message(&naive, &cfg).unwrap_err();
    assert_eq!(finding.kinds, vec![ViolationKind::Hung], "{finding}");
    assert!(
        finding.report.contains("stopped inside the send"),
        "{finding}"
    );
}

/// A sender that retries a whole message after `EINTR` passes plain plans (no signal
/// ever interrupts a write there) and is caught by the nemesis's signal storms inside its
/// sends: the receiver reads the resent prefix as part of the stream.
#[test]
fn resending_a_message_after_eintr_is_caught_by_a_storm_inside_the_send() {
    let cfg = BatteryConfig::default();
    let naive = t(NaiveFlaw::ResendsAfterEintr);
    battery::fifo_and_integrity(&naive, &cfg).unwrap();
    battery::stopped_sender_mid_message(&naive, &cfg).unwrap();
    let finding = battery::faults_inside_operations(&naive, &cfg).unwrap_err();
    assert!(
        finding.kinds.contains(&ViolationKind::Corrupted),
        "{finding}"
    );
    assert!(finding.report.contains("SIGURG"), "{finding}");
    // The sender told Disconnected after the receiver died of the corruption is a
    // consequence, not reported as a second crash.
    assert!(!finding.report.contains("[crashed] sender"), "{finding}");
}

/// Without its flaw's fault, each is a working transport: the checks above pass on the
/// other flaw, so each finding is about the flaw, not the framing.
#[test]
fn waiting_for_the_rest_survives_storms_and_kills() {
    let cfg = BatteryConfig {
        cases: 12,
        ..BatteryConfig::default()
    };
    battery::faults_inside_operations(&t(NaiveFlaw::WaitsForTheRest), &cfg).unwrap();
}

/// A sender that reports `EINTR` as an error passes plans no signal interrupts, and is
/// caught by the nemesis's storms: a send fails with it.
#[test]
fn eintr_reported_as_an_error_is_caught_by_a_storm() {
    let cfg = BatteryConfig::default();
    let naive = t(NaiveFlaw::EintrIsAnError);
    battery::fifo_and_integrity(&naive, &cfg).unwrap();
    let finding = battery::faults_inside_operations(&naive, &cfg).unwrap_err();
    assert!(finding.kinds.contains(&ViolationKind::Crashed), "{finding}");
    assert!(
        finding.report.contains("Interrupted system call"),
        "{finding}"
    );
}

/// A receiver that delivers the part of a message it holds when the stream ends passes
/// every plan in which senders end cleanly, and is caught when the nemesis kills a sender
/// inside a large message: a short, wrong message arrives.
#[test]
fn a_part_message_delivered_at_the_end_is_caught_by_a_kill_inside_the_send() {
    let cfg = BatteryConfig::default();
    let naive = t(NaiveFlaw::DeliversAPart);
    battery::fifo_and_integrity(&naive, &cfg).unwrap();
    battery::disconnect_on_sigkill(&naive, &cfg).unwrap();
    let finding = battery::faults_inside_operations(&naive, &cfg).unwrap_err();
    assert!(
        finding
            .kinds
            .iter()
            .any(|k| matches!(k, ViolationKind::Corrupted | ViolationKind::Unexpected)),
        "{finding}"
    );
}

/// A receiver that keeps only the current message of each 64 KiB read is caught by the
/// backlog check, where the receiver starts late and every read brings several messages.
#[test]
fn keeping_one_message_per_read_is_caught_by_a_backlog() {
    let cfg = BatteryConfig::default();
    let naive = t(NaiveFlaw::KeepsOneMessagePerRead);
    battery::timeouts_honoured(&naive, &cfg).unwrap();
    let finding = battery::backlog(&naive, &cfg).unwrap_err();
    assert!(!finding.kinds.is_empty(), "{finding}");
}
