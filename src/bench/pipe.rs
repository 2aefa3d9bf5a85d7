//! The pipe channel against one `write(2)` per message on a raw pipe and against a
//! `UnixStream` socketpair, between two processes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use super::{consume, failed, one_way, payload, ping_pong, recv_one, wait_ok};
use crate::check::fork::ChildGroup;
use crate::pipe::{self, PipeConfig};
use crate::{Error, Result};

fn raw_pair() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    Ok((r.into(), w.into()))
}

/// The tuned configuration the benchmarks also measure: `SIGPIPE` promised ignored (no
/// signal mask per write) and a 1 MiB pipe buffer.
pub fn tuned() -> PipeConfig {
    PipeConfig::new()
        .with_sigpipe_ignored(true)
        .with_capacity(1 << 20)
}

/// Our channel: `n` messages of `size` bytes from this process to a child, with `send`
/// (`batch == 1`) or `send_batch` of `batch`. The time from the first send until the child
/// has received the last and exited.
pub fn channel(n: u64, size: usize, batch: usize, config: PipeConfig) -> Result<Duration> {
    one_way(pipe::channel_with(config)?, n, size, batch, recv_one)
}

/// How the child of [`stream`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Drains the stream with 64 KiB reads (it sleeps whenever the stream is empty).
    Drain,
    /// Each message as interprocess's reader takes it: `read` until 4 bytes (a length
    /// prefix), then until the rest; the messages written are then 4 bytes longer.
    PrefixThenPayload,
}

/// One `write` of `size` bytes per message on `w`; a child reads until end of stream and
/// checks it got `n * size` bytes.
fn stream<W: Write, R: Read>(n: u64, size: usize, w: W, r: R) -> Result<Duration> {
    stream_check(n, n, size, w, r, Reading::Drain)
}

/// [`stream`] with the reader `reading`, writing `sent` messages where the reader expects
/// `n` (a test shows the count check fails when they differ).
fn stream_check<W: Write, R: Read>(
    sent: u64,
    n: u64,
    size: usize,
    w: W,
    r: R,
    reading: Reading,
) -> Result<Duration> {
    let size = match reading {
        Reading::Drain => size,
        Reading::PrefixThenPayload => size + 4,
    };
    let (mut w, mut r) = (Some(w), Some(r));
    let total = n * size as u64;
    // A property case running in another thread must not have its descriptors inherited
    // by this fork (its receiver would wait for an end of stream this child holds up).
    let _serial = crate::check::case::lock_cases();
    let mut group = ChildGroup::new();
    group.spawn("reader", |_| {
        // This process's copy of the writing end would keep the stream open forever.
        drop(w.take());
        let mut r = r.take().ok_or("no reader")?;
        let mut buf = vec![0u8; size.max(64 * 1024)];
        let mut got = 0u64;
        if reading == Reading::PrefixThenPayload {
            let (prefix, rest) = buf[..size].split_at_mut(4);
            loop {
                match r.read_exact(prefix) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.to_string()),
                }
                r.read_exact(rest).map_err(|e| e.to_string())?;
                consume(rest);
                got += size as u64;
            }
        } else {
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        consume(&buf[..k]);
                        got += k as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        if got != total {
            return Err(format!("read {got} bytes, expected {total}"));
        }
        Ok(())
    })?;
    drop(r.take());
    let mut w = w.take().ok_or_else(|| failed("no writer"))?;
    let msg = payload(size);
    let start = Instant::now();
    for _ in 0..sent {
        w.write_all(&msg)
            .map_err(|e| Error::io("benchmark write", e))?;
    }
    drop(w);
    wait_ok(group)?;
    Ok(start.elapsed())
}

/// The floor: one `write(2)` of `size` bytes per message on a pipe (`size > 0`).
pub fn raw_write(n: u64, size: usize) -> Result<Duration> {
    let (r, w) = raw_pair()?;
    stream(n, size, w, r)
}

/// [`raw_write`] of `size + 4` bytes per message, to a reader that takes each message as
/// interprocess's reader does: a `read` until the 4-byte prefix, then until the payload
/// (two or more `read`s per message, where the draining reader of [`raw_write`] takes many
/// messages per `read` and sleeps whenever the pipe is empty). Same writer, other reader:
/// what the reader's pattern alone does to the writer's speed.
pub fn raw_write_prefix_reader(n: u64, size: usize) -> Result<Duration> {
    let (r, w) = raw_pair()?;
    stream_check(n, n, size, w, r, Reading::PrefixThenPayload)
}

/// One `write(2)` per message on a `UnixStream` socketpair (`size > 0`).
pub fn unix_stream(n: u64, size: usize) -> Result<Duration> {
    let (a, b) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
    stream(n, size, a, b)
}

/// Warm-up round trips before timing starts.
pub(crate) const WARMUP: u64 = 200;

/// Ping-pong over two of our channels: a child echoes each message back. The time of each
/// of `n` round trips.
pub fn channel_pingpong(n: u64, size: usize, config: PipeConfig) -> Result<Vec<Duration>> {
    let (a_tx, a_rx) = pipe::channel_with(config)?;
    let (b_tx, b_rx) = pipe::channel_with(config)?;
    ping_pong((a_tx, b_rx), (a_rx, b_tx), n, size, WARMUP, recv_one)
}

/// Ping-pong of `size` bytes (`size > 0`) with plain `write`/`read_exact`: the parent
/// writes on `out` and reads on `back`; the child echoes from `c_in` to `c_out`.
fn stream_pingpong<W: Write, R: Read, CR: Read, CW: Write>(
    n: u64,
    size: usize,
    parent_ends: (W, R),
    child_ends: (CR, CW),
) -> Result<Vec<Duration>> {
    let mut child_ends = Some(child_ends);
    let mut parent_ends = Some(parent_ends);
    // A property case running in another thread must not have its descriptors inherited
    // by this fork (its receiver would wait for an end of stream this child holds up).
    let _serial = crate::check::case::lock_cases();
    let mut group = ChildGroup::new();
    group.spawn("echo", |_| {
        // This process's copies of the parent's ends would keep the streams open forever.
        drop(parent_ends.take());
        let (mut c_in, mut c_out) = child_ends.take().ok_or("no ends")?;
        let mut buf = vec![0u8; size];
        loop {
            match c_in.read_exact(&mut buf) {
                Ok(()) => c_out.write_all(&buf).map_err(|e| e.to_string())?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })?;
    drop(child_ends.take());
    let (mut out, mut back) = parent_ends.take().ok_or_else(|| failed("no ends"))?;
    let msg = payload(size);
    let mut buf = vec![0u8; size];
    let mut rtts = Vec::with_capacity(n as usize);
    let io = |e| Error::io("benchmark ping-pong", e);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        out.write_all(&msg).map_err(io)?;
        back.read_exact(&mut buf).map_err(io)?;
        if i >= WARMUP {
            rtts.push(t.elapsed());
        }
    }
    // Both: over a socketpair they are the same socket.
    drop((out, back));
    wait_ok(group)?;
    Ok(rtts)
}

/// Raw pipe ping-pong: two pipes, one `write` and `read`s of exactly `size` bytes
/// (`size > 0`).
pub fn raw_pingpong(n: u64, size: usize) -> Result<Vec<Duration>> {
    let (a_r, a_w) = raw_pair()?;
    let (b_r, b_w) = raw_pair()?;
    stream_pingpong(n, size, (a_w, b_r), (a_r, b_w))
}

/// `UnixStream` ping-pong over one socketpair (`size > 0`).
pub fn unix_stream_pingpong(n: u64, size: usize) -> Result<Vec<Duration>> {
    let (a, b) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
    let io = |e| Error::io("socket clone", e);
    let (a2, b2) = (a.try_clone().map_err(io)?, b.try_clone().map_err(io)?);
    stream_pingpong(n, size, (a, a2), (b, b2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_readers_take_every_message_whole_at_every_size() {
        for size in [0, 64, 4096, 65536] {
            let t = raw_write_prefix_reader(50, size).unwrap();
            assert!(t > Duration::ZERO, "{size} bytes");
            if size > 0 {
                // The draining reader (a raw stream cannot carry an empty message).
                let t = raw_write(50, size).unwrap();
                assert!(t > Duration::ZERO, "{size} bytes");
            }
        }
    }

    #[test]
    fn every_pipe_workload_runs_and_times_what_it_says() {
        let config = tuned();
        assert!(config.sigpipe_ignored());
        assert_eq!(config.capacity(), Some(1 << 20));
        for config in [PipeConfig::new(), tuned()] {
            assert!(channel(50, 64, 1, config).unwrap() > Duration::ZERO);
            assert!(channel(50, 64, 8, config).unwrap() > Duration::ZERO);
            // 150 rounds timed, not the warm-up's.
            assert_eq!(channel_pingpong(150, 64, config).unwrap().len(), 150);
        }
        assert!(unix_stream(50, 64).unwrap() > Duration::ZERO);
        assert_eq!(raw_pingpong(150, 64).unwrap().len(), 150);
        assert_eq!(unix_stream_pingpong(150, 64).unwrap().len(), 150);
    }

    /// A read end that refuses reads of more than `max` bytes at once, with `interrupt`
    /// has its first read interrupted (`EINTR`, as by a signal), and with `fail_at_end`
    /// reports an error where the stream ends.
    struct Picky {
        inner: std::fs::File,
        max: usize,
        interrupt: bool,
        fail_at_end: bool,
    }

    impl Picky {
        /// Takes reads of any size, uninterrupted, ending as the stream does.
        fn new(inner: std::fs::File) -> Picky {
            Picky {
                inner,
                max: usize::MAX,
                interrupt: false,
                fail_at_end: false,
            }
        }
    }

    impl Read for Picky {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if std::mem::take(&mut self.interrupt) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            if buf.len() > self.max {
                return Err(std::io::Error::other(format!(
                    "a read of {} bytes",
                    buf.len()
                )));
            }
            match self.inner.read(buf)? {
                0 if self.fail_at_end => Err(std::io::Error::other("broken at the end")),
                n => Ok(n),
            }
        }
    }

    /// Ten 64-byte messages through a raw pipe whose read end `picky` wraps, read as
    /// `reading` says.
    fn ten_through(picky: impl Fn(std::fs::File) -> Picky, reading: Reading) -> Result<Duration> {
        let (r, w) = raw_pair().unwrap();
        stream_check(10, 10, 64, w, picky(r), reading)
    }

    #[test]
    fn the_prefix_reader_reads_a_prefix_then_the_payload_and_the_other_drains() {
        let picky = |inner| Picky {
            max: 64 + 4,
            ..Picky::new(inner)
        };
        let prefix = ten_through(picky, Reading::PrefixThenPayload);
        assert!(prefix.is_ok(), "{prefix:?}");
        // Refused its 64 KiB read, the child fails (and the write may then find no reader:
        // either error fails the run).
        let drain = ten_through(picky, Reading::Drain);
        assert!(drain.is_err());
    }

    #[test]
    fn an_interrupted_read_is_tried_again_whatever_the_reader() {
        for reading in [Reading::Drain, Reading::PrefixThenPayload] {
            let interrupted = |r| Picky {
                interrupt: true,
                ..Picky::new(r)
            };
            let took = ten_through(interrupted, reading);
            assert!(took.is_ok(), "{reading:?}: {took:?}");
        }
    }

    #[test]
    fn a_read_error_fails_the_run_even_where_the_stream_would_end() {
        for reading in [Reading::Drain, Reading::PrefixThenPayload] {
            let failing = |r| Picky {
                fail_at_end: true,
                ..Picky::new(r)
            };
            let broken = ten_through(failing, reading);
            assert!(
                broken
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("broken at the end")),
                "{reading:?}: {broken:?}"
            );
        }
    }

    #[test]
    fn a_read_error_in_the_echo_child_fails_the_ping_pong() {
        let (a_r, a_w) = raw_pair().unwrap();
        let (b_r, b_w) = raw_pair().unwrap();
        let a_r = Picky {
            fail_at_end: true,
            ..Picky::new(a_r)
        };
        // Once the parent is done and closes its end, the child's next read fails.
        let rtts = stream_pingpong(10, 64, (a_w, b_r), (a_r, b_w));
        assert!(
            rtts.as_ref()
                .is_err_and(|e| e.to_string().contains("broken at the end")),
            "{rtts:?}"
        );
    }

    #[test]
    fn a_stream_cut_short_fails_the_run_whatever_the_reader() {
        for reading in [Reading::Drain, Reading::PrefixThenPayload] {
            // The writer sends 10 messages where the reader is told to expect 11.
            let (r, w) = raw_pair().unwrap();
            let short = stream_check(10, 11, 64, w, r, reading);
            assert!(short.is_err(), "{reading:?}");
        }
    }
}
