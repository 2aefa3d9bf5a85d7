//! `send_deadlines_all_or_nothing` can fail, and the crate's transports pass it: a send that
//! gives up (`Full`, `Timeout`) sent nothing; one that succeeds sent the whole message.

use std::time::Duration;

use ipcprop::check::battery::{run_battery, send_deadlines_all_or_nothing, BatteryConfig};
use ipcprop::check::broken::{Broken, Defect, NaiveFlaw, NaiveStreamTransport};
use ipcprop::check::builtin::{PipeTransport, QueueTransport, RingTransport};
use ipcprop::check::foreign::{
    KeptWriterPipeTransport, LiveKeptWriterPipeTransport, SeqpacketTransport, UnixStreamTransport,
};
use ipcprop::check::{Transport, ViolationKind};
use ipcprop::pipe::PipeConfig;
use ipcprop::shm::RingConfig;

mod common;

fn passes<T: Transport>(t: &T) {
    if let Err(f) = send_deadlines_all_or_nothing(t, &BatteryConfig::default()) {
        panic!("{}: {f}", t.name());
    }
}

#[test]
fn the_crates_transports_send_all_or_nothing() {
    common::within(Duration::from_secs(120), || {
        passes(&PipeTransport::default());
        passes(&PipeTransport {
            config: PipeConfig::new().with_shared_senders(true),
        });
        passes(&RingTransport {
            config: RingConfig::new().with_capacity(4096),
        });
        passes(&RingTransport::default());
        passes(&QueueTransport::new().unwrap());
    });
}

#[test]
fn foreign_transports_pass_or_have_no_deadlines_to_check() {
    common::within(Duration::from_secs(120), || {
        passes(&UnixStreamTransport);
        passes(&SeqpacketTransport);
        passes(&KeptWriterPipeTransport);
        passes(&LiveKeptWriterPipeTransport);
        passes(&NaiveStreamTransport {
            flaw: NaiveFlaw::WaitsForTheRest,
        });
    });
}

/// A `try_send` that sends and then says `Full` is found sending a message twice; every
/// other check of the battery passes it.
#[test]
fn a_send_that_says_full_after_sending_is_caught_only_by_this_check() {
    common::within(Duration::from_secs(480), || {
        let t = Broken::new(PipeTransport::default(), Defect::SentButFull);
        let findings = run_battery(&t, &BatteryConfig::default());
        let checks: Vec<_> = findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["send_deadlines_all_or_nothing"], "{findings:?}");
        assert_eq!(
            findings[0].kinds,
            [ViolationKind::Duplicated],
            "{}",
            findings[0]
        );
        assert!(
            findings[0].report.contains("arrived again"),
            "{}",
            findings[0]
        );
    });
}

/// A `send_timeout` that gives up at once instead of waiting for room is found early;
/// every other check of the battery passes it.
#[test]
fn a_send_timeout_that_gives_up_at_once_is_caught_only_by_this_check() {
    common::within(Duration::from_secs(480), || {
        let t = Broken::new(PipeTransport::default(), Defect::SendTimeoutEarly);
        let findings = run_battery(&t, &BatteryConfig::default());
        let checks: Vec<_> = findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["send_deadlines_all_or_nothing"], "{findings:?}");
        assert_eq!(findings[0].kinds, [ViolationKind::Hung], "{}", findings[0]);
        assert!(findings[0].report.contains("early"), "{}", findings[0]);
    });
}
