//! `stopped_sender_mid_message`: a sender frozen (SIGSTOP) inside the send of a message
//! larger than any kernel buffer, while the receiver probes with `try_recv` and
//! `recv_timeout`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{BatteryConfig, CheckResult, Finding};
use crate::check::fork::{ChildEnd, ChildGroup, Control, Observer};
use crate::check::history::{fill_message, MsgId};
use crate::check::nemesis::stop_where;
use crate::check::{Transport, ViolationKind};
use crate::error::Error;
use crate::transport::{Receiver, Sender, Wait};

const CHECK: &str = "stopped_sender_mid_message";

/// How long the sender runs in its send before it is stopped, one round each: first long
/// enough to fill every buffer and block with part of the message written, then at
/// moments through a quick send, to catch it holding whatever a send holds (a lock).
const FILL_TIMES: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::ZERO,
    Duration::from_micros(300),
    Duration::from_millis(2),
];

/// How late a probe may return. A receive that waits for the stopped sender waits until
/// the harness lets it go on (the progress bound, seconds), so half a second tells the two
/// apart even on a loaded machine, without judging the precision of the transport's timer
/// (which `timeouts_honoured` judges, with the stated slack).
const SLACK: Duration = Duration::from_millis(500);

/// The receive with a timeout the receiver tries while the sender is stopped.
const PROBE_WAIT: Duration = Duration::from_millis(30);

/// The records the two processes send the parent.
const READY: &[u8] = b"ready";
const SENDING: &[u8] = b"sending";
const PROBE: &[u8] = b"probe";
const PROBED: &[u8] = b"probed";

/// The parent's part: lets the sender start its send, stops it inside (stepping it 20 us
/// at a time, as the nemesis does, until it is inside or done), lets the receiver probe,
/// then lets the sender go on.
struct Freezer {
    delay: Duration,
    ready: bool,
    stopped: bool,
    inside: bool,
    released: bool,
    done: bool,
}

impl Observer for Freezer {
    fn record(&mut self, child: usize, record: &[u8], _now: Instant) {
        match (child, record) {
            (0, READY) => self.ready = true,
            (1, PROBED) => self.done = true,
            _ => {}
        }
    }

    fn act(&mut self, _now: Instant, ctl: &mut Control<'_>) {
        if self.ready && !self.released {
            self.released = true;
            // Stepped on while it has not started its send. A sender that already finished
            // cannot be stopped inside it: the receiver then probes a transport holding
            // whole messages, still a test.
            let last = stop_where(ctl, 0, true, self.delay, |last| last == READY);
            self.stopped = last.is_some();
            self.inside = last.as_deref() == Some(SENDING);
            ctl.release(1);
        }
        if self.done {
            if self.stopped {
                ctl.signal(0, Signal::SIGCONT);
                self.stopped = false;
            }
            ctl.release(1);
            self.done = false;
        }
    }
}

/// A sender is stopped (SIGSTOP) inside the send of a message as large as the transport
/// takes (within the size cap: larger than a pipe or socket buffer), after it has had time
/// to write what fits. Meanwhile the receiver's `try_recv` returns at once, with Empty or a
/// whole message, and its `recv_timeout` of 30 ms returns on time (within half a second of
/// it), never a part
/// of a message; once the sender goes on, both its messages arrive whole, then the end of
/// stream. A receiver that, having seen part of a message, waits for the rest in a blocking
/// read fails here.
///
/// Four rounds: the first stops the sender 100 ms into its send (blocked on a full buffer,
/// with part of the message written), the others at moments through a quick send (holding
/// whatever it holds, such as a lock).
pub fn stopped_sender_mid_message<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    FILL_TIMES
        .iter()
        .try_for_each(|&delay| stopped_round(t, cfg, delay))
}

/// How a report of a receive that returned late, rather than never, starts.
const LATE: &str = "late: ";

fn stopped_round<T: Transport>(t: &T, cfg: &BatteryConfig, delay: Duration) -> CheckResult {
    let _serial = crate::check::case::lock_cases();
    let caps = t.capabilities();
    let fail = |report: String, kind| Finding {
        check: CHECK,
        report,
        kinds: vec![kind],
    };
    let len = caps.max_message_len.min(cfg.size_cap);
    let mut big = Vec::new();
    fill_message(cfg.seed, MsgId { sender: 0, seq: 0 }, len, &mut big);
    let mut after = Vec::new();
    fill_message(cfg.seed, MsgId { sender: 0, seq: 1 }, 16, &mut after);
    let expected = [&big[..], &after[..]];
    let slack = SLACK;
    let (tx, rx) = t
        .pair(1)
        .map_err(|e| fail(format!("pair: {e}"), ViolationKind::Crashed))?;
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    let spawned = group
        .spawn("sender", |rep| {
            drop(rx.take());
            let mut tx = tx.take().ok_or("no sender")?;
            t.in_child_sender(&mut tx).map_err(|e| e.to_string())?;
            if !rep.rendezvous(READY, Duration::from_secs(30)) {
                return Err("the harness never let the sender go".into());
            }
            rep.record(SENDING);
            tx.send(&big)
                .map_err(|e| format!("send of {len} bytes: {e}"))?;
            rep.record(b"sent");
            tx.send(&after)
                .map_err(|e| format!("send of 16 bytes: {e}"))?;
            Ok(())
        })
        .and_then(|()| {
            group.spawn("receiver", |rep| {
                drop(tx.take());
                let mut rx = rx.take().ok_or("no receiver")?;
                t.in_child_receiver(&mut rx).map_err(|e| e.to_string())?;
                if !rep.rendezvous(PROBE, Duration::from_secs(30)) {
                    return Err("the harness never stopped the sender".into());
                }
                let mut next = 0usize;
                for (wait, how) in [
                    (Wait::Never, "try_recv"),
                    (Wait::For(PROBE_WAIT), "recv_timeout(30 ms)"),
                ] {
                    let start = Instant::now();
                    let got = rx.recv_with(wait, |m| expected.get(next).is_some_and(|e| *e == m));
                    let took = start.elapsed();
                    let limit = match wait {
                        Wait::For(d) => d + slack,
                        _ => slack,
                    };
                    let whole = matches!(got, Ok(true));
                    match got {
                        Ok(true) => next += 1,
                        Ok(false) => {
                            return Err(format!(
                                "partial: {how} returned a message other than message {next} \
                                 whole (a part of one?) while the sender was stopped"
                            ))
                        }
                        Err(e) if e.is_not_ready() => {
                            if let Wait::For(d) = wait {
                                if took < d {
                                    return Err(format!("late: {how} gave up after {took:?}"));
                                }
                            }
                        }
                        Err(e) => {
                            return Err(format!(
                                "{how} returned {e:?} while the sender was stopped"
                            ))
                        }
                    }
                    // A whole message may take its time to copy; only waiting is bounded.
                    if took > limit && !whole {
                        return Err(format!(
                            "late: {how} took {took:?} while the sender was stopped inside its \
                             send (at most {limit:?})"
                        ));
                    }
                }
                rep.rendezvous(PROBED, Duration::from_secs(30));
                while next < expected.len() {
                    match rx.recv_with(Wait::Forever, |m| expected[next] == m) {
                        Ok(true) => next += 1,
                        Ok(false) => {
                            return Err(format!(
                                "partial: message {next} arrived damaged after the sender went on"
                            ))
                        }
                        Err(e) => return Err(format!("receive of message {next}: {e:?}")),
                    }
                }
                if caps.end_of_stream {
                    match rx.recv_with(Wait::Forever, |m| m.len()) {
                        Err(Error::Disconnected) => {}
                        other => {
                            return Err(format!("after both messages: {other:?}, not Disconnected"))
                        }
                    }
                }
                Ok(())
            })
        });
    drop(tx);
    drop(rx);
    spawned.map_err(|e| fail(format!("fork: {e}"), ViolationKind::Crashed))?;
    let mut freezer = Freezer {
        delay,
        ready: false,
        stopped: false,
        inside: false,
        released: false,
        done: false,
    };
    let reports = group.wait_observed(caps.progress_bound, &mut freezer);
    let whence = if freezer.inside {
        format!(
            "the sender was stopped inside the send of a {len}-byte message, {} ms after it \
             started",
            delay.as_millis()
        )
    } else {
        format!(
            "the sender of a {len}-byte message had finished its send before the stop, {} ms \
             after it started",
            delay.as_millis()
        )
    };
    for r in reports.iter().rev() {
        let (report, kind) = match &r.end {
            ChildEnd::Returned => continue,
            ChildEnd::Failed(m) if m.starts_with(LATE) => (m.clone(), ViolationKind::Hung),
            ChildEnd::Failed(m) if m.starts_with("partial: ") => {
                (m["partial: ".len()..].to_string(), ViolationKind::Corrupted)
            }
            ChildEnd::Hung => (
                format!(
                    "the {} made no progress for {:?} (a receive that waits, whatever its \
                     timeout, for the rest of a message or for a lock the stopped sender \
                     holds?)",
                    r.name, caps.progress_bound
                ),
                ViolationKind::Hung,
            ),
            other => (format!("the {} {other}", r.name), ViolationKind::Crashed),
        };
        return Err(fail(format!("{report} ({whence})"), kind));
    }
    Ok(())
}
