//! The battery checks of limits a peer may push against: a forged length in a frame header
//! ([`forged_length_refused`]) and a receiver that is gone for good
//! ([`sends_fail_after_receiver_gone`]). Each runs its ends in forked children, under the
//! watchdog.

use std::time::Duration;

use super::{BatteryConfig, CheckResult, Finding};
use crate::check::fork::{ChildEnd, ChildGroup, ChildReport};
use crate::check::{Transport, ViolationKind};
use crate::error::Error;
use crate::transport::{Receiver, Sender, Wait};

/// How much address space the receiver of [`forged_length_refused`] may take beyond what it
/// has mapped when it starts: ample for any receive of a message within the maximum the
/// check's transports declare, far below the gigabytes a forged header claims.
pub const FORGED_LENGTH_HEADROOM: u64 = 256 << 20;

/// A receiver fed a forged frame header claiming a huge length refuses it before setting
/// memory aside for it. For each claim over the declared maximum (the maximum + 1, 2 GiB,
/// `u32::MAX`, 1 TiB and `u64::MAX`; those the header can express), on a fresh pair: a
/// forked child writes the header with [`Transport::forge_header`] (then at most a few
/// payload bytes); the parent keeps the sending end open, so no end of stream comes; a
/// second child lowers its `RLIMIT_AS` to what it has mapped plus
/// [`FORGED_LENGTH_HEADROOM`] and receives. The receive must fail at once with a typed
/// error ([`Error::Frame`], [`Error::MessageTooLarge`] or [`Error::Corrupt`]), deliver
/// nothing (a second receive is no message either), and the child must not crash: an
/// allocation that fails under the limit aborts the process. Waiting for the claimed bytes
/// (a timeout) or blocking past the watchdog fails too.
///
/// A transport without the hook (the default [`Transport::forge_header`] says it has no raw
/// stream: the ring, the file queue, a packet socket) passes trivially, as does one whose
/// maximum is as large as its header can express.
pub fn forged_length_refused<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let max = t.capabilities().max_message_len as u64;
    let mut claims: Vec<u64> = [max.saturating_add(1), 1 << 31, u32::MAX.into(), 1 << 40]
        .into_iter()
        .chain([u64::MAX])
        .filter(|&c| c > max)
        .collect();
    claims.sort_unstable();
    claims.dedup();
    // A correct receiver refuses a header it already holds at once; this is only how long
    // one that waits for the claimed bytes instead is given to show it.
    let patience = (cfg.run.timeout / 2).min(Duration::from_secs(5));
    for claim in claims {
        forged_claim(t, cfg, claim, patience)?;
    }
    Ok(())
}

/// One claim of [`forged_length_refused`], on a fresh pair.
fn forged_claim<T: Transport>(
    t: &T,
    cfg: &BatteryConfig,
    claim: u64,
    patience: Duration,
) -> CheckResult {
    // A pair open in this process while another thread forks a case would leak into that
    // case's children: one case at a time.
    let _serial = crate::check::case::lock_cases();
    let fail = |report: String, kind| Finding {
        check: "forged_length_refused",
        report: format!("a forged header claiming {claim} bytes: {report}"),
        kinds: vec![kind],
    };
    let (tx, rx) = t
        .pair(1)
        .map_err(|e| fail(format!("pair: {e}"), ViolationKind::Crashed))?;
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    // The forger writes in a child: a transport whose raw write blocks must not stop the
    // battery. The parent keeps its copy of the sending end open until the receiver is done.
    let mut group = ChildGroup::new();
    group
        .spawn("forger", |rep| {
            drop(rx.take());
            let tx = tx.as_mut().ok_or("no sender")?;
            t.in_child_sender(tx).map_err(|e| e.to_string())?;
            let forged = t
                .forge_header(tx, claim)
                .map_err(|e| format!("forge_header: {e}"))?;
            rep.record(&[u8::from(forged)]);
            Ok(())
        })
        .map_err(|e| fail(format!("fork: {e}"), ViolationKind::Crashed))?;
    let forger = group.wait(cfg.run.timeout).remove(0);
    match forger.end {
        ChildEnd::Returned => {}
        ChildEnd::Hung => {
            return Err(fail(
                "writing it blocked until the watchdog".into(),
                ViolationKind::Hung,
            ))
        }
        other => return Err(fail(format!("the forger {other}"), ViolationKind::Crashed)),
    }
    if forger.records.first().map(Vec::as_slice) != Some(&[1]) {
        // No raw stream, or a header that cannot say this much: nothing to refuse.
        return Ok(());
    }
    let mut group = ChildGroup::new();
    group
        .spawn("receiver", |rep| {
            drop(tx.take());
            let rx = rx.as_mut().ok_or("no receiver")?;
            t.in_child_receiver(rx).map_err(|e| e.to_string())?;
            let limit = limit_address_space(FORGED_LENGTH_HEADROOM)?;
            rep.record(format!("receiving under RLIMIT_AS = {limit} bytes").as_bytes());
            match rx.recv_with(Wait::For(patience), |m| m.len()) {
                Err(Error::Frame(_) | Error::MessageTooLarge { .. } | Error::Corrupt(_)) => {}
                Ok(n) => return Err(format!("delivered a message of {n} bytes")),
                Err(e) if e.is_not_ready() => {
                    return Err(format!(
                        "the receive waited for the claimed bytes instead of refusing the \
                         header: {e}"
                    ))
                }
                Err(e) => return Err(format!("the receive returned {e:?}, not a refusal")),
            }
            match rx.recv_with(Wait::Never, |m| m.len()) {
                Ok(n) => Err(format!(
                    "after refusing the header, delivered a message of {n} bytes"
                )),
                Err(_) => Ok(()),
            }
        })
        .map_err(|e| fail(format!("fork: {e}"), ViolationKind::Crashed))?;
    drop(rx.take());
    let receiver = group.wait(cfg.run.timeout).remove(0);
    drop(tx.take());
    let context = last_record(&receiver);
    match receiver.end {
        ChildEnd::Returned => Ok(()),
        ChildEnd::Hung => Err(fail(
            format!("the receiver blocked until the watchdog ({context})"),
            ViolationKind::Hung,
        )),
        ChildEnd::Failed(m) if m.contains("delivered") => {
            Err(fail(format!("{m} ({context})"), ViolationKind::Unexpected))
        }
        ChildEnd::Failed(m) if m.contains("waited") => {
            Err(fail(format!("{m} ({context})"), ViolationKind::Hung))
        }
        other => Err(fail(
            format!(
                "the receiver {other} ({context}); a failed allocation of the claimed length \
                 aborts the process"
            ),
            ViolationKind::Crashed,
        )),
    }
}

/// Lowers this process's soft `RLIMIT_AS` to the address space mapped now (`VmSize`) plus
/// `headroom` (never raising it); returns the limit set.
fn limit_address_space(headroom: u64) -> std::result::Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let mapped_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no VmSize in /proc/self/status")?;
    let (soft, hard) = getrlimit(Resource::RLIMIT_AS).map_err(|e| format!("getrlimit: {e}"))?;
    let limit = mapped_kib
        .saturating_mul(1024)
        .saturating_add(headroom)
        .min(soft)
        .min(hard);
    setrlimit(Resource::RLIMIT_AS, limit, hard).map_err(|e| format!("setrlimit: {e}"))?;
    Ok(limit)
}

/// The most sends [`sends_fail_after_receiver_gone`] allows before one must fail.
pub const GONE_RECEIVER_MAX_SENDS: usize = 4096;

/// The most bytes [`sends_fail_after_receiver_gone`] sends before one must fail: 64 MiB.
pub const GONE_RECEIVER_MAX_BYTES: usize = 64 << 20;

/// Once the receiver is gone, a send fails within a bounded number of sends: never an
/// endless silent success. The receiving end goes to a forked child that exits at once
/// (and is reaped), and the parent drops its own copy; then a sender, in a forked child
/// under the watchdog, sends messages of 0 bytes to 64 KiB (within the declared maximum)
/// until a send fails. One must return [`Error::Disconnected`] within
/// [`GONE_RECEIVER_MAX_SENDS`] sends and [`GONE_RECEIVER_MAX_BYTES`] bytes; a send that
/// blocks, another error, or a signal death fails the check. (Sends may succeed for a
/// while: a transport may notice the receiver only when its buffer fills, or every so many
/// sends, as the ring does.)
///
/// Persistent transports ([`Capabilities::persistent`](crate::check::Capabilities::persistent))
/// pass trivially: their messages outlive the processes, and a receiver that starts later
/// (or re-attaches) is still to take them, so a send with no receiver is a success, not a
/// silent loss. The file queue is one: its sender never watches the receiver's liveness,
/// only the receiver the senders' (`src/queue/channel.rs`).
pub fn sends_fail_after_receiver_gone<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let caps = t.capabilities();
    if caps.persistent {
        return Ok(());
    }
    let _serial = crate::check::case::lock_cases();
    let fail = |report: String, kind| Finding {
        check: "sends_fail_after_receiver_gone",
        report,
        kinds: vec![kind],
    };
    let (tx, rx) = t
        .pair(1)
        .map_err(|e| fail(format!("pair: {e}"), ViolationKind::Crashed))?;
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    group
        .spawn("receiver", |_| {
            drop(tx.take());
            let mut end = rx.take().ok_or("no receiver")?;
            t.in_child_receiver(&mut end).map_err(|e| e.to_string())?;
            drop(end);
            Ok(())
        })
        .map_err(|e| fail(format!("fork: {e}"), ViolationKind::Crashed))?;
    drop(rx.take());
    let receiver = group.wait(cfg.run.timeout).remove(0);
    if receiver.end != ChildEnd::Returned {
        return Err(fail(
            format!("the receiver, which only had to leave, {}", receiver.end),
            ViolationKind::Crashed,
        ));
    }
    let max = caps.max_message_len;
    let sizes = [16, 64 << 10, 1, 4000, 32 << 10, 0, 1500, (64 << 10) - 1].map(|s| s.min(max));
    let mut group = ChildGroup::new();
    group
        .spawn("sender", |rep| {
            let tx = tx.as_mut().ok_or("no sender")?;
            t.in_child_sender(tx).map_err(|e| e.to_string())?;
            let payload = vec![0x6b_u8; sizes.iter().copied().max().unwrap_or(0)];
            let mut bytes = 0usize;
            for (n, &size) in sizes.iter().cycle().enumerate() {
                if n == GONE_RECEIVER_MAX_SENDS || bytes + size > GONE_RECEIVER_MAX_BYTES {
                    return Err(format!(
                        "silent: {n} sends ({bytes} bytes) after the receiver was gone and \
                         reaped all returned Ok"
                    ));
                }
                rep.record(format!("send {n} ({size} bytes)").as_bytes());
                match tx.send(&payload[..size]) {
                    Ok(()) => bytes += size,
                    Err(Error::Disconnected) => return Ok(()),
                    Err(e) => {
                        return Err(format!(
                            "send {n} ({size} bytes) returned {e:?}, not Disconnected"
                        ))
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| fail(format!("fork: {e}"), ViolationKind::Crashed))?;
    drop(tx.take());
    let sender = group.wait(cfg.run.timeout).remove(0);
    let context = last_record(&sender);
    match sender.end {
        ChildEnd::Returned => Ok(()),
        ChildEnd::Hung => Err(fail(
            format!("with the receiver gone, a send blocked until the watchdog ({context})"),
            ViolationKind::Hung,
        )),
        ChildEnd::Failed(m) if m.starts_with("silent") => Err(fail(
            format!("{m}: the messages went nowhere and nobody was told"),
            ViolationKind::Lost,
        )),
        ChildEnd::Failed(m) => Err(fail(m, ViolationKind::Crashed)),
        other => Err(fail(
            format!("with the receiver gone, the sender {other} ({context})"),
            ViolationKind::Crashed,
        )),
    }
}

/// The last record `report` holds, readable ("no record" if none).
fn last_record(report: &ChildReport) -> String {
    report.records.last().map_or_else(
        || "no record".to_string(),
        |r| String::from_utf8_lossy(r).into_owned(),
    )
}
