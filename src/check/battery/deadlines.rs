//! The battery check of sends with a deadline ([`send_deadlines_all_or_nothing`]): a send
//! that gives up ([`Error::Full`], [`Error::Timeout`]) sent nothing, and one that succeeds
//! sent the whole message.

use std::time::{Duration, Instant};

use super::{BatteryConfig, CheckResult, Finding};
use crate::check::fork::{ChildEnd, ChildGroup};
use crate::check::history::{fill_message, MsgId};
use crate::check::{Transport, ViolationKind};
use crate::error::Error;
use crate::transport::{Receiver, Sender, Wait};

/// The most bytes [`send_deadlines_all_or_nothing`] offers with `try_send` before it stops
/// looking for [`Error::Full`] (a transport with room for more, such as the file queue, is
/// unbounded as far as this check can tell).
pub const DEADLINE_FILL_MAX_BYTES: usize = 2 << 20;

/// The deadline of each `send_timeout` of [`send_deadlines_all_or_nothing`].
pub const DEADLINE_SEND_TIMEOUT: Duration = Duration::from_millis(50);

/// How late past [`DEADLINE_SEND_TIMEOUT`] a `send_timeout` may return: generous, as this
/// check is about what was sent, not timer precision (a send that waits for the reader
/// waits until the watchdog).
const LATE_SLACK: Duration = Duration::from_millis(500);

/// The sizes the sender offers, in turn: small, around a page (`PIPE_BUF`), and large.
fn offered_size(seq: usize, max: usize) -> usize {
    [100, 3000, 4097, 70_000][seq % 4].min(max)
}

/// A send with a deadline sends all or nothing: `Ok` means the whole message is committed,
/// [`Error::Full`] (from `try_send`) or [`Error::Timeout`] (from `send_timeout`) means none
/// of it was sent, so a caller may retry without a duplicate and a stream never holds half
/// a message.
///
/// On a fresh pair whose receiver does not read yet, a sender in a forked child offers
/// messages of 100, 3000, 4097 and 70,000 bytes (within the declared maximum) with
/// `try_send` until one is refused with [`Error::Full`] (or [`DEADLINE_FILL_MAX_BYTES`]
/// have gone), then three more with `send_timeout(`[`DEADLINE_SEND_TIMEOUT`]`)`, each of
/// which must succeed or return [`Error::Timeout`] after the deadline (not before it, and
/// not more than half a second after). A refused message is offered again next, so a
/// transport that sent it anyway shows it twice. Then a receiver in a second child drains
/// the channel: it must get exactly the accepted messages, in order, whole and byte-exact,
/// then [`Error::Disconnected`].
///
/// A transport with no end of stream ([`Capabilities::end_of_stream`](
/// crate::check::Capabilities::end_of_stream) false) must deliver nothing more within its
/// quiet period instead.
///
/// A transport whose sender does not support deadlines ([`Error::Unsupported`] from the
/// first `try_send`, the default of [`Sender::send_wait`]) passes trivially.
pub fn send_deadlines_all_or_nothing<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let caps = t.capabilities();
    let max = caps.max_message_len;
    let seed = cfg.seed ^ 0x5e4d_dead_11e5;
    let _serial = crate::check::case::lock_cases();
    let fail = |report: String, kind| Finding {
        check: "send_deadlines_all_or_nothing",
        report,
        kinds: vec![kind],
    };
    let (tx, rx) = t
        .pair(1)
        .map_err(|e| fail(format!("pair: {e}"), ViolationKind::Crashed))?;
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    group
        .spawn("sender", |rep| {
            drop(rx.take());
            let tx = tx.as_mut().ok_or("no sender")?;
            t.in_child_sender(tx).map_err(|e| e.to_string())?;
            let mut msg = Vec::new();
            let (mut accepted, mut bytes) = (0usize, 0usize);
            let mut full = false;
            // try_send until the transport is full.
            while bytes < DEADLINE_FILL_MAX_BYTES {
                let len = offered_size(accepted, max);
                fill_message(seed, id(accepted), len, &mut msg);
                match tx.try_send(&msg) {
                    Ok(()) => {
                        accepted += 1;
                        bytes += len;
                    }
                    Err(Error::Full) => {
                        full = true;
                        break;
                    }
                    Err(Error::Unsupported(_)) if accepted == 0 => {
                        rep.record(b"unsupported");
                        return Ok(());
                    }
                    Err(e) => {
                        return Err(format!(
                            "try_send of message {accepted} ({len} bytes) returned {e:?}, \
                             not Ok or Full"
                        ))
                    }
                }
            }
            rep.record(format!("try_send: {accepted} accepted, full: {full}").as_bytes());
            // send_timeout, three times, the refused message first.
            for _ in 0..3 {
                let len = offered_size(accepted, max);
                fill_message(seed, id(accepted), len, &mut msg);
                let start = Instant::now();
                let result = tx.send_timeout(&msg, DEADLINE_SEND_TIMEOUT);
                let took = start.elapsed();
                match result {
                    Ok(()) => accepted += 1,
                    Err(Error::Timeout(_)) if took < DEADLINE_SEND_TIMEOUT => {
                        return Err(format!(
                            "early: send_timeout({DEADLINE_SEND_TIMEOUT:?}) of message \
                             {accepted} ({len} bytes) timed out after {took:?}"
                        ))
                    }
                    Err(Error::Timeout(_)) if took > DEADLINE_SEND_TIMEOUT + LATE_SLACK => {
                        return Err(format!(
                            "late: send_timeout({DEADLINE_SEND_TIMEOUT:?}) of message \
                             {accepted} ({len} bytes) timed out after {took:?}"
                        ))
                    }
                    Err(Error::Timeout(_)) => {}
                    Err(e) => {
                        return Err(format!(
                            "send_timeout of message {accepted} ({len} bytes) returned {e:?}, \
                             not Ok or Timeout"
                        ))
                    }
                }
            }
            rep.record(format!("accepted {accepted}").as_bytes());
            Ok(())
        })
        .map_err(|e| fail(format!("fork: {e}"), ViolationKind::Crashed))?;
    // The parent's copy of the sending end goes once the sender is done, so the receiver
    // sees the end of the stream after what was accepted.
    let sender = group.wait(cfg.run.timeout).remove(0);
    drop(tx.take());
    let records: Vec<String> = sender
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    let context = records.join("; ");
    match sender.end {
        ChildEnd::Returned => {}
        ChildEnd::Hung => {
            return Err(fail(
                format!(
                    "a send with a deadline blocked until the watchdog, with nobody reading \
                     ({context})"
                ),
                ViolationKind::Hung,
            ))
        }
        ChildEnd::Failed(m) if m.starts_with("early") || m.starts_with("late") => {
            return Err(fail(format!("{m} ({context})"), ViolationKind::Hung))
        }
        other => {
            return Err(fail(
                format!("the sender {other} ({context})"),
                ViolationKind::Crashed,
            ))
        }
    }
    if records.iter().any(|r| r == "unsupported") {
        return Ok(());
    }
    let accepted: usize = records
        .iter()
        .find_map(|r| r.strip_prefix("accepted ")?.parse().ok())
        .ok_or_else(|| {
            fail(
                format!("no count from the sender ({context})"),
                ViolationKind::Crashed,
            )
        })?;
    let mut group = ChildGroup::new();
    group
        .spawn("receiver", |rep| {
            let rx = rx.as_mut().ok_or("no receiver")?;
            t.in_child_receiver(rx).map_err(|e| e.to_string())?;
            let mut want = Vec::new();
            for n in 0.. {
                let wait = if n == accepted && !caps.end_of_stream {
                    caps.quiet_period
                } else {
                    cfg.run.timeout / 2
                };
                let mut again = None;
                let got = rx.recv_with(Wait::For(wait), |m| {
                    let len = offered_size(n, max);
                    fill_message(seed, id(n), len, &mut want);
                    if m != want.as_slice() {
                        // An earlier message, whole, again?
                        again = (0..n).find(|&s| {
                            fill_message(seed, id(s), offered_size(s, max), &mut want);
                            m == want.as_slice()
                        });
                    }
                    (m == want.as_slice() || again.is_some(), m.len(), len)
                });
                let got = got.map(|(ok, got, len)| (ok && again.is_none(), got, len));
                match got {
                    Ok((true, _, _)) if n < accepted => {}
                    // No end of stream to wait for: once the accepted messages are in,
                    // nothing more may come within the quiet period.
                    Err(e) if n == accepted && !caps.end_of_stream && e.is_not_ready() => {
                        rep.record(format!("received {n}").as_bytes());
                        return Ok(());
                    }
                    Ok(_) if again.is_some() => {
                        return Err(format!(
                            "duplicated: message {} arrived again in place of message {n}: a \
                             send that gave up had sent it",
                            again.unwrap_or_default()
                        ))
                    }
                    Ok((_, len, _)) if n >= accepted => {
                        return Err(format!(
                            "unexpected: message {n} arrived ({len} bytes), but only {accepted} \
                             sends succeeded: a send that gave up had sent its message"
                        ))
                    }
                    Ok((_, got, expected)) => {
                        return Err(format!(
                            "corrupted: message {n} is not what was sent ({got} bytes, \
                             {expected} sent)"
                        ))
                    }
                    Err(Error::Disconnected) if n == accepted => {
                        rep.record(format!("received {n}").as_bytes());
                        return Ok(());
                    }
                    Err(e) => {
                        return Err(format!(
                            "lost: after {n} of the {accepted} accepted messages, the receive \
                             returned {e:?}"
                        ))
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| fail(format!("fork: {e}"), ViolationKind::Crashed))?;
    drop(rx.take());
    let receiver = group.wait(cfg.run.timeout).remove(0);
    let kind_of = |m: &str| match m.split(':').next() {
        Some("unexpected") => ViolationKind::Unexpected,
        Some("corrupted") => ViolationKind::Corrupted,
        Some("duplicated") => ViolationKind::Duplicated,
        Some("lost") => ViolationKind::Lost,
        _ => ViolationKind::Crashed,
    };
    match receiver.end {
        ChildEnd::Returned => Ok(()),
        ChildEnd::Failed(m) => Err(fail(format!("{m} ({context})"), kind_of(&m))),
        ChildEnd::Hung => Err(fail(
            format!("the receiver blocked until the watchdog ({context})"),
            ViolationKind::Hung,
        )),
        other => Err(fail(
            format!("the receiver {other} ({context})"),
            ViolationKind::Crashed,
        )),
    }
}

fn id(seq: usize) -> MsgId {
    MsgId {
        sender: 0,
        seq: u32::try_from(seq).unwrap_or(u32::MAX),
    }
}
