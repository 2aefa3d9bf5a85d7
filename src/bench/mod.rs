//! Side-by-side benchmarks: every transport against the raw syscall, the peer crates and
//! the physical floor, measured in one run on one machine (DESIGN section 7).
//!
//! The same workloads serve the criterion benches (`cargo bench`) and the quick run of
//! `ipcprop bench` ([`run`]), which returns a [`Report`]: a table ([`Report::table`]) and
//! an SVG chart ([`svg::render`]).
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

use std::time::Duration;

use crate::check::fork::{ChildEnd, ChildGroup};
use crate::{Error, Result};

pub mod fork;
pub mod pipe;
pub mod queue;
pub mod report;
pub mod ring;
mod run;
pub mod svg;

pub use report::{Bound, Family, Kind, Machine, Report, Row, TargetStatus};
pub use run::{default_queue_dir, machine, run, Options};

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
