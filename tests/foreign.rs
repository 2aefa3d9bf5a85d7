//! The battery over transports this crate did not write. What it finds is a result:
//! - a `UnixStream` socketpair carrying our frames passes everything (once the pipe code
//!   it reuses took `ECONNRESET`, which a socket returns where a pipe returns `EPIPE`, for
//!   Disconnected: the battery's first run over it found that);
//! - a `SOCK_SEQPACKET` socketpair read the usual way (`recv` returning 0 means the peer is
//!   gone) loses messages: an empty packet also reads as 0 bytes, so the receiver stops at
//!   the first empty message. The battery finds it and names it: lost.

use ipcprop::check::battery::{self, BatteryConfig};
use ipcprop::check::foreign::{SeqpacketTransport, UnixStreamTransport};
use ipcprop::check::ViolationKind;

ipcprop::conformance_tests!(unix_stream, UnixStreamTransport);

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
