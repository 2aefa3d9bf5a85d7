//! [`ipc_channel`] (Servo's channels) between two processes: a blocking receiver, compared
//! with our pipe channel.
//!
//! On Linux an ipc-channel is a `SOCK_SEQPACKET` socketpair: each message is one packet
//! with a small header (larger ones than the socket's send buffer are split, the rest going
//! over a dedicated socketpair whose receiving end travels with the first packet). The
//! channels are made in the parent and inherited by `fork`: a forked child holds the same
//! sockets, and each process closes the ends it does not use, so the receiver sees the
//! sender's close as [`IpcError::Disconnected`] (a zero-length read of the socket), which
//! ends the stream. No [`ipc_channel::ipc::IpcOneShotServer`] is needed: that is for a
//! process started by `exec`, which cannot inherit the Rust values.
//!
//! Two ways users send bytes with it, both measured ([`Payload`]): a typed
//! `IpcSender<Vec<u8>>`, whose every message is serialized with serde (postcard, in 0.23)
//! and whose `send` takes the `Vec` by value (the sender gives up a copy of its message per
//! send), and the untyped [`IpcBytesSender`], which sends a `&[u8]` as it is. Either
//! receiver hands out a fresh `Vec<u8>` per message.

use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcReceiver, IpcSender};
use ipc_channel::IpcError;

use crate::bench::pipe::WARMUP;
use crate::bench::{consume, echo_rounds, expect_count, failed, wait_ok};
use crate::check::fork::ChildGroup;
use crate::{Error, Result};

/// Which of ipc-channel's two channels carries the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    /// `ipc::channel::<Vec<u8>>()`: each message serialized with serde and sent by value.
    Typed,
    /// `ipc::bytes_channel()`: each message a `&[u8]`, not serialized.
    Bytes,
}

/// The sending end of either kind of channel.
enum Tx {
    Typed(IpcSender<Vec<u8>>),
    Bytes(IpcBytesSender),
}

/// The receiving end of either kind of channel.
enum Rx {
    Typed(IpcReceiver<Vec<u8>>),
    Bytes(IpcBytesReceiver),
}

fn channel(kind: Payload) -> Result<(Tx, Rx)> {
    let io = |e| Error::io("ipc-channel socketpair", e);
    Ok(match kind {
        Payload::Typed => {
            let (tx, rx) = ipc::channel::<Vec<u8>>().map_err(io)?;
            (Tx::Typed(tx), Rx::Typed(rx))
        }
        Payload::Bytes => {
            let (tx, rx) = ipc::bytes_channel().map_err(io)?;
            (Tx::Bytes(tx), Rx::Bytes(rx))
        }
    })
}

impl Tx {
    /// Sends `m` the way a user of each kind would: the typed sender needs an owned `Vec`.
    fn send(&self, m: &[u8]) -> std::result::Result<(), IpcError> {
        match self {
            Tx::Typed(tx) => tx.send(m.to_vec()),
            Tx::Bytes(tx) => tx.send(m).map_err(IpcError::Io),
        }
    }

    /// Sends a message this process owns (the echo's), without another copy.
    fn send_owned(&self, m: Vec<u8>) -> std::result::Result<(), IpcError> {
        match self {
            Tx::Typed(tx) => tx.send(m),
            Tx::Bytes(tx) => tx.send(&m).map_err(IpcError::Io),
        }
    }
}

impl Rx {
    /// The next message, or `None` once every sender is gone and nothing is left.
    fn recv(&self) -> std::result::Result<Option<Vec<u8>>, IpcError> {
        let r = match self {
            Rx::Typed(rx) => rx.recv(),
            Rx::Bytes(rx) => rx.recv(),
        };
        match r {
            Ok(m) => Ok(Some(m)),
            Err(IpcError::Disconnected) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An ipc-channel error as ours: I/O errors keep their source.
fn ipc_error(op: &'static str, e: IpcError) -> Error {
    match e {
        IpcError::Io(e) => Error::io(op, e),
        IpcError::Disconnected => failed(format!("{op}: the other process is gone")),
        IpcError::SerializationError(e) => failed(format!("{op}: {e} ({e:?})")),
    }
}

/// The receiver's loop: every message until the senders are gone, each read in full, then
/// the count check (exactly `n` messages of `size` bytes).
fn drain(rx: &Rx, n: u64, size: usize) -> std::result::Result<(), String> {
    let mut got = (0u64, 0u64);
    while let Some(m) = rx.recv().map_err(|e| e.to_string())? {
        consume(&m);
        got = (got.0 + 1, got.1 + m.len() as u64);
    }
    expect_count(got, n, size)
}

/// `n` messages of `size` bytes from this process to a forked child over one ipc-channel of
/// kind `payload`; the child reads every byte and checks the count. The time from the first
/// send until the child has received the last and exited.
pub fn throughput(n: u64, size: usize, payload: Payload) -> Result<Duration> {
    // Taken before the channel exists, so no other thread's fork inherits its sockets.
    let _serial = crate::check::case::lock_cases();
    let (tx, rx) = channel(payload)?;
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    group.spawn("receiver", |_| {
        // This process's copy of the sending end must not keep the channel open.
        drop(tx.take());
        let rx = rx.take().ok_or("no receiver")?;
        drain(&rx, n, size)
    })?;
    drop(rx.take());
    let tx = tx.take().ok_or_else(|| failed("no sender"))?;
    let msg = crate::bench::payload(size);
    let start = Instant::now();
    for _ in 0..n {
        tx.send(&msg)
            .map_err(|e| ipc_error("ipc-channel send", e))?;
    }
    drop(tx);
    wait_ok(group)?;
    Ok(start.elapsed())
}

/// Ping-pong over two ipc-channels of kind `payload`: a forked child echoes each message
/// back (the typed echo sends on the `Vec` it received). The time of each of `n` round
/// trips, after the same warm-up as the other ping-pongs.
pub fn pingpong(n: u64, size: usize, payload: Payload) -> Result<Vec<Duration>> {
    // Taken before the channels exist, so no other thread's fork inherits their sockets.
    let _serial = crate::check::case::lock_cases();
    let (there_tx, there_rx) = channel(payload)?;
    let (back_tx, back_rx) = channel(payload)?;
    echo_rounds(
        ((there_tx, back_rx), (there_rx, back_tx)),
        n,
        size,
        WARMUP,
        |(rx, tx)| {
            while let Some(m) = rx.recv().map_err(|e| e.to_string())? {
                tx.send_owned(m).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        |(tx, rx), msg| {
            tx.send(msg).map_err(|e| ipc_error("ipc-channel send", e))?;
            let m = rx.recv().map_err(|e| ipc_error("ipc-channel recv", e))?;
            Ok(m.map(|m| {
                consume(&m);
                m.len()
            }))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::payload;

    /// Not the warm-up's 200 rounds: a ping-pong that timed the warm-up instead shows.
    const N: u64 = 150;

    #[test]
    fn throughput_moves_every_message_of_both_kinds_at_every_size() {
        for kind in [Payload::Typed, Payload::Bytes] {
            for size in [0, 64, 65536] {
                let t = throughput(N, size, kind);
                assert!(
                    t.as_ref().is_ok_and(|d| !d.is_zero()),
                    "{kind:?} {size}: {t:?}"
                );
            }
        }
    }

    #[test]
    fn pingpong_times_every_round_trip_of_both_kinds_at_every_size() {
        for kind in [Payload::Typed, Payload::Bytes] {
            for size in [0, 64, 65536] {
                let rtts = pingpong(N, size, kind);
                assert_eq!(
                    rtts.map(|r| r.len()).ok(),
                    Some(N as usize),
                    "{kind:?} {size}"
                );
            }
        }
    }

    /// The receiver's loop, fed in one process: exactly `n` passes, one message short (or
    /// one byte short) fails.
    #[test]
    fn the_receiver_fails_unless_it_got_exactly_what_was_sent() {
        for kind in [Payload::Typed, Payload::Bytes] {
            let run = |msgs: &[Vec<u8>]| {
                let (tx, rx) = channel(kind).unwrap();
                for m in msgs {
                    tx.send(m).unwrap();
                }
                drop(tx);
                drain(&rx, 10, 64)
            };
            assert_eq!(run(&vec![payload(64); 10]), Ok(()), "{kind:?}");
            assert!(run(&vec![payload(64); 9]).is_err(), "{kind:?}");
            let mut short = vec![payload(64); 10];
            short[3].pop();
            assert!(run(&short).is_err(), "{kind:?}");
            assert!(run(&vec![payload(64); 11]).is_err(), "{kind:?}");
        }
    }
}
