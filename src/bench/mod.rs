//! Side-by-side benchmarks: every transport against the raw syscall, the peer crates and
//! the physical floor, measured in one run on one machine.
//!
//! The same workloads serve the criterion benches (`cargo bench`) and the quick run of
//! `ipcprop bench` ([`run`](fn@run)), which returns a [`Report`]: a table
//! ([`Report::table`]) and an SVG chart ([`svg::render`]).
//!
//! Every workload moves `n` messages of `size` bytes between two processes (the peer
//! crates, which cannot cross a process boundary, between two threads) and returns the
//! wall time, or, for ping-pong latency, the time of every round trip. Receivers count what
//! arrives and fail the run if it is not exactly what was sent, so a benchmark that
//! silently loses messages cannot report a speed.
//!
//! ```no_run
//! use ipcprop::bench::{self, Family, Options};
//!
//! let report = bench::run(&Options { families: vec![Family::Pipe], ..Options::quick() }, &mut |_, _, _| {})?;
//! println!("{}", report.table());
//! std::fs::write("bench.svg", bench::svg::render(&report))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Peer crates (`rtrb`, `crossbeam-channel`, `queue-file`) come with the `bench` feature,
//! which the default `cli` feature turns on; nothing outside this module uses them.

use std::time::{Duration, Instant};

use crate::check::fork::{ChildEnd, ChildGroup};
use crate::{Error, Receiver, Result, Sender, Wait};

pub mod fork;
#[cfg(feature = "peers")]
#[cfg_attr(docsrs, doc(cfg(feature = "peers")))]
pub mod peers;
pub mod pipe;
pub mod queue;
pub mod report;
pub mod ring;
mod run;
pub mod svg;

pub use report::{Bound, CpuUse, Family, Kind, Machine, Report, Row, TargetStatus};
pub use run::{beside_busy_neighbour, default_queue_dir, machine, run, BusyNeighbour, Options};

/// The message sizes every comparison is run at.
pub const SIZES: [usize; 4] = [0, 64, 4096, 65536];

/// Messages per batch in the batched variants.
pub const BATCH: usize = 64;

/// A message of `size` bytes with a recognisable pattern.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// Reads every byte of a received message, as a real consumer would, and returns a cheap
/// sum of them. Every receiver in these benchmarks calls it: a receiver that only looks at
/// lengths would leave the payload in the sender's cache and measure a copy that never
/// crosses between cores.
#[inline]
pub fn consume(m: &[u8]) -> u64 {
    let (words, rest) = m.as_chunks::<8>();
    let mut acc = 0u64;
    for w in words {
        acc = acc.wrapping_add(u64::from_ne_bytes(*w));
    }
    for &b in rest {
        acc = acc.wrapping_add(u64::from(b));
    }
    std::hint::black_box(acc)
}

/// A failed benchmark run (a child that did not finish cleanly, a count that is off).
pub(crate) fn failed(what: impl Into<String>) -> Error {
    Error::Io {
        op: "benchmark",
        source: std::io::Error::other(what.into()),
    }
}

/// Waits for every child and fails unless each returned `Ok`.
pub(crate) fn wait_ok(group: ChildGroup) -> Result<()> {
    for r in group.wait(Duration::from_secs(120)) {
        if r.end != ChildEnd::Returned {
            return Err(failed(format!("child {:?} ended: {:?}", r.name, r.end)));
        }
    }
    Ok(())
}

/// One sender to one receiver: this process sends `n` messages of `size` bytes on the
/// sending end of `ends` (`send`, or `send_batch` of `batch` when `batch > 1`), a child
/// receives on the receiving end with `receive` (which lends one or more messages to its
/// callback, and returns [`Error::Disconnected`] at the end), reads every byte and checks
/// the count. The time from the first send until the child has received the last and
/// exited.
pub(crate) fn one_way<S: Sender, R: Receiver>(
    ends: (S, R),
    n: u64,
    size: usize,
    batch: usize,
    mut receive: impl FnMut(&mut R, &mut dyn FnMut(&[u8])) -> Result<()>,
) -> Result<Duration> {
    let (mut tx, mut rx) = (Some(ends.0), Some(ends.1));
    // A property case running in another thread must not have its descriptors inherited
    // by this fork (its receiver would wait for an end of stream this child holds up).
    let _serial = crate::check::case::lock_cases();
    let mut group = ChildGroup::new();
    group.spawn("receiver", |_| {
        // This process's copy of the sending end must not keep the channel open.
        drop(tx.take());
        let rx = rx.as_mut().ok_or("no receiver")?;
        let mut got = (0u64, 0u64);
        loop {
            let mut each = |m: &[u8]| {
                consume(m);
                got = (got.0 + 1, got.1 + m.len() as u64);
            };
            match receive(rx, &mut each) {
                Ok(()) => {}
                Err(e) if e.is_disconnected() => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        expect_count(got, n, size)
    })?;
    drop(rx.take());
    let mut tx = tx.take().ok_or_else(|| failed("no sender"))?;
    let msg = payload(size);
    let msgs: Vec<&[u8]> = vec![&msg[..]; batch.max(1)];
    let start = Instant::now();
    in_batches(n, batch, |k| {
        if batch <= 1 {
            tx.send(&msg)
        } else {
            tx.send_batch(&msgs[..k])
        }
    })?;
    drop(tx);
    wait_ok(group)?;
    Ok(start.elapsed())
}

/// Calls `step(k)` for consecutive chunks of `n` messages, each `batch` long (the last one
/// shorter); `batch <= 1` means one at a time.
pub(crate) fn in_batches(
    n: u64,
    batch: usize,
    mut step: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(batch.max(1));
        step(k)?;
        left -= k;
    }
    Ok(())
}

/// Receives one message with [`Receiver::recv_with`], for [`one_way`].
pub(crate) fn recv_one<R: Receiver>(rx: &mut R, f: &mut dyn FnMut(&[u8])) -> Result<()> {
    rx.recv_with(Wait::Forever, |m| f(m))
}

/// Ping-pong between this process and a child over two channels of one kind: `there`
/// carries each message to the child, which copies it out and sends it back on `back`.
/// `ours` are this process's ends (sender of `there`, receiver of `back`), `theirs` the
/// child's; both sides receive with `receive` (as in [`one_way`]: it lends the message to
/// its callback, and returns [`Error::Disconnected`] once the other side is gone). Returns
/// the time of each of `n` round trips, after `warmup` untimed ones.
pub(crate) fn ping_pong<S: Sender, R: Receiver>(
    ours: (S, R),
    theirs: (R, S),
    n: u64,
    size: usize,
    warmup: u64,
    receive: impl Fn(&mut R, &mut dyn FnMut(&[u8])) -> Result<()>,
) -> Result<Vec<Duration>> {
    // A property case running in another thread must not have its descriptors inherited
    // by this fork (its receiver would wait for an end of stream this child holds up).
    let _serial = crate::check::case::lock_cases();
    echo_rounds(
        (ours, theirs),
        n,
        size,
        warmup,
        |(mut rx, mut tx)| {
            let mut buf = Vec::with_capacity(size);
            loop {
                let mut keep = |m: &[u8]| {
                    buf.clear();
                    buf.extend_from_slice(m)
                };
                match receive(&mut rx, &mut keep) {
                    Ok(()) => tx.send(&buf).map_err(|e| e.to_string())?,
                    Err(e) if e.is_disconnected() => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        },
        |(tx, rx), msg| {
            tx.send(msg)?;
            let mut len = 0;
            let mut read = |m: &[u8]| {
                consume(m);
                len = m.len();
            };
            match receive(rx, &mut read) {
                Ok(()) => Ok(Some(len)),
                Err(Error::Disconnected) => Ok(None),
                Err(e) => Err(e),
            }
        },
    )
}

/// The frame of every ping-pong between this process and a forked echo child, whatever
/// its ends are. The child takes `theirs` of `ends` and runs `echo` on them: it sends back
/// every message it receives, until this process's ends are gone. This process keeps
/// `ours` and runs `warmup + n` rounds of `round`, which sends the message it is given,
/// receives the echo, reads every byte of it ([`consume`]) and returns its length, or
/// `None` once the child is gone. A round whose echo is not `size` bytes, or finds the
/// child gone, fails the run; so does a child that does not end cleanly after this
/// process has dropped its ends. Returns the time of each of the last `n` rounds.
///
/// The caller holds [`lock_cases`](crate::check::case::lock_cases) from before the ends
/// exist, so that no other thread's fork inherits them.
pub(crate) fn echo_rounds<O, T>(
    ends: (O, T),
    n: u64,
    size: usize,
    warmup: u64,
    echo: impl FnOnce(T) -> std::result::Result<(), String>,
    mut round: impl FnMut(&mut O, &[u8]) -> Result<Option<usize>>,
) -> Result<Vec<Duration>> {
    let (mut ours, mut theirs) = (Some(ends.0), Some(ends.1));
    let mut group = ChildGroup::new();
    group.spawn("echo", |_| {
        // Our copies of the parent's ends would keep it from ever seeing a disconnect.
        drop(ours.take());
        echo(theirs.take().ok_or("no ends")?)
    })?;
    drop(theirs.take());
    let mut ours = ours.take().ok_or_else(|| failed("no ends"))?;
    let msg = payload(size);
    let mut rtts = Vec::with_capacity(n as usize);
    for i in 0..warmup + n {
        let t = Instant::now();
        let len = round(&mut ours, &msg)?.ok_or_else(|| failed("the echo child is gone"))?;
        if len != size {
            return Err(failed(format!("echo of {size} bytes came back as {len}")));
        }
        if i >= warmup {
            rtts.push(t.elapsed());
        }
    }
    // The child sees our ends close and returns.
    drop(ours);
    wait_ok(group)?;
    Ok(rtts)
}

/// Fails unless a receiver saw exactly `n` messages and `n * size` bytes.
pub(crate) fn expect_count(
    got: (u64, u64),
    n: u64,
    size: usize,
) -> std::result::Result<(), String> {
    if got != (n, n * size as u64) {
        return Err(format!(
            "received {} messages / {} bytes, expected {n} / {}",
            got.0,
            got.1,
            n * size as u64
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_off_by_one_message_or_byte_fails() {
        assert!(expect_count((10, 640), 10, 64).is_ok());
        assert!(expect_count((9, 576), 10, 64).is_err());
        assert!(expect_count((10, 639), 10, 64).is_err());
        assert!(expect_count((11, 704), 10, 64).is_err());
    }

    /// Every ping-pong's rounds run through `echo_rounds`: `warmup + n` rounds, `n` timed;
    /// an echo of another length, a child gone, or a child that fails, fails the run.
    #[test]
    fn echo_rounds_times_n_rounds_and_fails_on_a_wrong_or_missing_echo() {
        let _serial = crate::check::case::lock_cases();
        let fine = |(): ()| Ok(());
        let mut rounds = 0;
        let rtts = echo_rounds(((), ()), 5, 64, 2, fine, |_, m| {
            rounds += 1;
            Ok(Some(m.len()))
        });
        assert_eq!(rtts.map(|r| r.len()).ok(), Some(5));
        assert_eq!(rounds, 7);
        let e = echo_rounds(((), ()), 5, 64, 2, fine, |_, _| Ok(Some(63))).unwrap_err();
        assert!(e.to_string().contains("64 bytes came back as 63"), "{e}");
        let e = echo_rounds(((), ()), 5, 64, 2, fine, |_, _| Ok(None)).unwrap_err();
        assert!(e.to_string().contains("the echo child is gone"), "{e}");
        let broken = |(): ()| Err("broken".to_string());
        let e = echo_rounds(((), ()), 5, 0, 2, broken, |_, m| Ok(Some(m.len()))).unwrap_err();
        assert!(e.to_string().contains("echo"), "{e}");
    }

    #[test]
    fn consume_reads_every_byte() {
        let m = payload(1001);
        let mut flipped = m.clone();
        flipped[1000] ^= 1;
        assert_ne!(consume(&m), consume(&flipped));
        flipped = m.clone();
        flipped[3] ^= 0x10;
        assert_ne!(consume(&m), consume(&flipped));
    }
}
