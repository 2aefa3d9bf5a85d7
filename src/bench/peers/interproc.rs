//! [`interprocess`]'s unnamed pipe between two processes, with the framing its users write
//! themselves: a blocking receiver, compared with our pipe channel.
//!
//! The crate moves bytes, not messages, so each message is framed as a careful user would:
//! a 4-byte little-endian length prefix and the payload, copied into one reused buffer and
//! written with one `write_all` (one `write(2)` while the frame fits in the pipe). The
//! receiver `read_exact`s the prefix, then the payload into one reused buffer. No
//! `BufWriter`: it would hold messages back until it fills, which a channel must not do.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use interprocess::unnamed_pipe::{Recver, Sender};

use crate::bench::pipe::WARMUP;
use crate::bench::{consume, echo_rounds, expect_count, failed, payload, wait_ok};
use crate::check::fork::ChildGroup;
use crate::{Error, Result};

/// An unnamed pipe, as interprocess's own `pipe()` makes it, except that its ends are
/// close-on-exec from their creation (`pipe2(O_CLOEXEC)`): a program another thread starts
/// can never hold the pipe open. (The fork of the benchmark inherits them either way.)
fn pipe() -> Result<(Sender, Recver)> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    Ok((Sender::from(w), Recver::from(r)))
}

/// Frames `m` into `out` (cleared first): its length as 4 bytes little-endian, then `m`.
fn frame(out: &mut Vec<u8>, m: &[u8]) -> io::Result<()> {
    let len = u32::try_from(m.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message of {} bytes does not fit a 4-byte length",
                m.len()
            ),
        )
    })?;
    out.clear();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(m);
    Ok(())
}

/// Reads one framed message into `buf` (resized to it). `Ok(false)` at the end of the
/// stream before a prefix is complete (a torn prefix is a missing message, which the count
/// check reports); a payload cut short is an error.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    buf.resize(u32::from_le_bytes(prefix) as usize, 0);
    r.read_exact(buf)?;
    Ok(true)
}

/// The receiver's loop: every message until end of stream, each read in full, then the
/// count check (exactly `n` messages of `size` bytes).
fn drain(mut r: impl Read, n: u64, size: usize) -> std::result::Result<(), String> {
    let mut buf = Vec::with_capacity(size);
    let mut got = (0u64, 0u64);
    while read_frame(&mut r, &mut buf).map_err(|e| e.to_string())? {
        consume(&buf);
        got = (got.0 + 1, got.1 + buf.len() as u64);
    }
    expect_count(got, n, size)
}

/// `n` messages of `size` bytes from this process to a forked child over one unnamed pipe;
/// the child reads every byte and checks the count. The time from the first send until the
/// child has received the last and exited.
pub fn throughput(n: u64, size: usize) -> Result<Duration> {
    // Taken before the pipe exists, so no other thread's fork inherits its ends.
    let _serial = crate::check::case::lock_cases();
    let (tx, rx) = pipe()?;
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    group.spawn("receiver", |_| {
        // This process's copy of the writing end would keep the pipe open forever.
        drop(tx.take());
        let rx = rx.take().ok_or("no receiver")?;
        drain(rx, n, size)
    })?;
    drop(rx.take());
    let mut tx = tx.take().ok_or_else(|| failed("no sender"))?;
    let msg = payload(size);
    let mut out = Vec::with_capacity(4 + size);
    let io = |e| Error::io("interprocess write", e);
    let start = Instant::now();
    for _ in 0..n {
        frame(&mut out, &msg).map_err(io)?;
        tx.write_all(&out).map_err(io)?;
    }
    drop(tx);
    wait_ok(group)?;
    Ok(start.elapsed())
}

/// Ping-pong over two unnamed pipes: a forked child reads each framed message and writes it
/// back framed. The time of each of `n` round trips, after the same warm-up as the other
/// ping-pongs.
pub fn pingpong(n: u64, size: usize) -> Result<Vec<Duration>> {
    // Taken before the pipes exist, so no other thread's fork inherits their ends.
    let _serial = crate::check::case::lock_cases();
    let (there_tx, there_rx) = pipe()?;
    let (back_tx, back_rx) = pipe()?;
    let (mut buf, mut out) = (Vec::with_capacity(size), Vec::with_capacity(4 + size));
    let io = |e| Error::io("interprocess ping-pong", e);
    echo_rounds(
        ((there_tx, back_rx), (there_rx, back_tx)),
        n,
        size,
        WARMUP,
        |(mut rx, mut tx)| {
            let (mut buf, mut out) = (Vec::with_capacity(size), Vec::with_capacity(4 + size));
            while read_frame(&mut rx, &mut buf).map_err(|e| e.to_string())? {
                frame(&mut out, &buf).map_err(|e| e.to_string())?;
                tx.write_all(&out).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        |(tx, rx), msg| {
            frame(&mut out, msg).map_err(io)?;
            tx.write_all(&out).map_err(io)?;
            if !read_frame(rx, &mut buf).map_err(io)? {
                return Ok(None);
            }
            consume(&buf);
            Ok(Some(buf.len()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not the warm-up's 200 rounds: a ping-pong that timed the warm-up instead shows.
    const N: u64 = 150;

    #[test]
    fn both_ends_are_close_on_exec_from_their_creation() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use std::os::fd::AsFd;
        let (tx, rx) = pipe().unwrap();
        for fd in [tx.as_fd(), rx.as_fd()] {
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(flags.contains(FdFlag::FD_CLOEXEC));
        }
    }

    #[test]
    fn throughput_moves_every_message_at_every_size() {
        for size in [0, 64, 65536] {
            let t = throughput(N, size);
            assert!(t.as_ref().is_ok_and(|d| !d.is_zero()), "{size}: {t:?}");
        }
    }

    #[test]
    fn pingpong_times_every_round_trip_at_every_size() {
        for size in [0, 64, 65536] {
            let rtts = pingpong(N, size);
            assert_eq!(rtts.map(|r| r.len()).ok(), Some(N as usize), "{size}");
        }
    }

    fn stream(msgs: &[Vec<u8>]) -> Vec<u8> {
        let (mut all, mut out) = (Vec::new(), Vec::new());
        for m in msgs {
            frame(&mut out, m).unwrap();
            all.extend_from_slice(&out);
        }
        all
    }

    /// The receiver's loop, fed from memory: exactly `n` passes; one message short, one too
    /// many, a shorter message, a payload cut short or a torn prefix fail.
    #[test]
    fn the_receiver_fails_unless_it_got_exactly_what_was_sent() {
        let ten = stream(&vec![payload(64); 10]);
        assert_eq!(drain(&ten[..], 10, 64), Ok(()));
        assert!(drain(&stream(&vec![payload(64); 9])[..], 10, 64).is_err());
        assert!(drain(&stream(&vec![payload(64); 11])[..], 10, 64).is_err());
        let mut short = vec![payload(64); 10];
        short[3].pop();
        assert!(drain(&stream(&short)[..], 10, 64).is_err());
        assert!(drain(&ten[..ten.len() - 1], 10, 64).is_err());
        assert!(drain(&ten[..ten.len() - 66], 10, 64).is_err());
        // Zero-length messages are messages: ten of them are four bytes each.
        let zeros = stream(&vec![Vec::new(); 10]);
        assert_eq!(zeros.len(), 40);
        assert_eq!(drain(&zeros[..], 10, 0), Ok(()));
        assert!(drain(&zeros[..36], 10, 0).is_err());
    }

    /// A read that fails (other than at the end of the stream) fails the receiver: it is
    /// not taken for the end of the stream.
    #[test]
    fn a_failed_read_is_an_error_not_the_end() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("the pipe broke"))
            }
        }
        let e = read_frame(&mut Broken, &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "the pipe broke");
        assert!(drain(Broken, 0, 64).is_err());
    }

    #[test]
    fn a_frame_is_a_little_endian_length_and_the_payload() {
        let mut out = vec![9; 3];
        frame(&mut out, &[1, 2, 3]).unwrap();
        assert_eq!(out, [3, 0, 0, 0, 1, 2, 3]);
    }
}
