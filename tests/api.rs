//! The transport API as users of `std::sync::mpsc` and `crossbeam-channel` expect it:
//! object-safe traits, iterators, `try_send` / `send_timeout` on every transport (never half
//! a message, nothing sent on `Full` / `Timeout`), `try_clone` where several senders are
//! allowed, and the error helpers.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::TempDir;
use ipcprop::check::foreign::SeqpacketTransport;
use ipcprop::check::Transport;
use ipcprop::frame::{self, FrameError};
use ipcprop::pipe::{self, PipeConfig, PipeReceiver, MAX_SHARED_PAYLOAD, PIPE_BUF};
use ipcprop::queue::{self, QueueConfig};
use ipcprop::shm::{self, RingConfig};
use ipcprop::transport::{Iter, TryIter};
use ipcprop::{liveness, Error, Receiver, Result, Sender, Wait};

/// Every test here fails, rather than hangs, past this.
const LIMIT: Duration = Duration::from_secs(120);

/// Generous: a loaded 2-core machine may be slow, but a wait that should end at once does
/// not take this long.
const SLACK: Duration = Duration::from_secs(10);

type DynPair = (String, Box<dyn Sender + Send>, Box<dyn Receiver + Send>);

/// One pair of every built-in transport (and a wrapped one), as trait objects.
fn dyn_pairs(dir: &TempDir) -> Vec<DynPair> {
    let mut out: Vec<DynPair> = Vec::new();
    let (tx, rx) = pipe::channel().unwrap();
    out.push(("pipe".into(), Box::new(tx), Box::new(rx)));
    let (tx, rx) = pipe::channel_with(PipeConfig::new().with_shared_senders(true)).unwrap();
    out.push(("pipe-shared".into(), Box::new(tx), Box::new(rx)));
    let (tx, rx) = shm::channel_with(RingConfig::new().with_capacity(1 << 16)).unwrap();
    out.push(("ring".into(), Box::new(tx), Box::new(rx)));
    let (tx, rx) = queue::channel(dir.file("dyn.q"), QueueConfig::new()).unwrap();
    out.push(("queue".into(), Box::new(tx), Box::new(rx)));
    let (tx, rx) = pipe::channel().unwrap();
    let (tx, rx) = liveness::with_end_of_stream(tx, rx).unwrap();
    out.push(("live-pipe".into(), Box::new(tx), Box::new(rx)));
    out
}

#[test]
fn boxed_senders_and_receivers_work_over_every_builtin_transport() {
    common::within(LIMIT, || {
        let dir = TempDir::new("api-dyn");
        for (name, mut tx, mut rx) in dyn_pairs(&dir) {
            assert!(tx.max_message_len() > 0, "{name}");
            assert!(rx.max_message_len() > 0, "{name}");
            tx.send(b"one").unwrap();
            tx.send_batch(&[b"two", b""]).unwrap();
            tx.try_send(b"three").unwrap();
            tx.send_timeout(b"four", Duration::from_secs(5)).unwrap();
            tx.send_wait(b"five", Wait::Forever).unwrap();

            // recv_into: cleared, then filled, reusing the buffer.
            let mut buf = Vec::with_capacity(4096);
            buf.extend_from_slice(b"old contents");
            let ptr = buf.as_ptr();
            assert_eq!(rx.recv_into(&mut buf, Wait::Forever).unwrap(), 3, "{name}");
            assert_eq!(buf, b"one", "{name}");
            assert_eq!(buf.as_ptr(), ptr, "{name}: the buffer was reallocated");
            // The box is a receiver itself: recv_with lends through it.
            assert_eq!(rx.recv_with(Wait::Forever, |m| m.to_vec()).unwrap(), b"two");
            assert_eq!(rx.recv_into(&mut buf, Wait::Never).unwrap(), 0, "{name}");
            assert!(buf.is_empty(), "{name}");
            // A `&mut dyn Receiver` iterates with Iter::new / TryIter::new.
            let rx_ref: &mut dyn Receiver = &mut *rx;
            let ready: Vec<Vec<u8>> = TryIter::new(rx_ref).collect::<Result<_>>().unwrap();
            assert_eq!(
                ready,
                [b"three".to_vec(), b"four".to_vec(), b"five".to_vec()]
            );

            // Nothing there: Empty, and the buffer is left as it was.
            buf.extend_from_slice(b"kept");
            let err = rx.recv_into(&mut buf, Wait::Never).unwrap_err();
            assert!(err.is_empty(), "{name}: {err:?}");
            assert_eq!(buf, b"kept", "{name}");
            let err = rx
                .recv_into(&mut buf, Wait::For(Duration::from_millis(20)))
                .unwrap_err();
            assert!(err.is_timeout(), "{name}: {err:?}");

            tx.send(b"last").unwrap();
            drop(tx);
            let rest: Vec<Vec<u8>> = Iter::new(&mut *rx).collect::<Result<_>>().unwrap();
            assert_eq!(rest, [b"last".to_vec()], "{name}");
            assert!(rx.recv().unwrap_err().is_disconnected(), "{name}");
        }
    })
}

#[test]
fn boxed_ends_pass_where_a_generic_end_is_expected() {
    fn roundtrip<S: Sender, R: Receiver>(mut tx: S, mut rx: R) -> Vec<Vec<u8>> {
        tx.send(b"generic").unwrap();
        drop(tx);
        rx.iter().collect::<Result<_>>().unwrap()
    }
    common::within(LIMIT, || {
        let dir = TempDir::new("api-generic");
        for (name, tx, rx) in dyn_pairs(&dir) {
            assert_eq!(roundtrip(tx, rx), [b"generic".to_vec()], "{name}");
        }
    })
}

/// A pipe receiver over a pipe whose write end the test writes raw bytes to.
fn raw_pipe() -> (PipeReceiver, File) {
    let (r, w) = std::io::pipe().unwrap();
    let rx = PipeReceiver::from_fd(OwnedFd::from(r), PipeConfig::new()).unwrap();
    (rx, File::from(OwnedFd::from(w)))
}

fn frame_of(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_into(msg, &mut out).unwrap();
    out
}

#[test]
fn iter_yields_a_malformed_stream_as_an_error_once_then_ends() {
    let (mut rx, mut w) = raw_pipe();
    w.write_all(&frame_of(b"fine")).unwrap();
    // A header claiming 4 GiB: over the maximum.
    w.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap();
    drop(w);
    let mut it = rx.iter();
    assert_eq!(it.next().unwrap().unwrap(), b"fine");
    match it.next() {
        Some(Err(Error::Frame(FrameError::TooLarge { .. }))) => {}
        other => panic!("expected the framing error, got {other:?}"),
    }
    assert!(it.next().is_none(), "the iteration ends after the error");
    assert!(it.next().is_none());
}

#[test]
fn iter_yields_a_stream_cut_inside_a_message_as_an_error_not_an_end() {
    let (rx, mut w) = raw_pipe();
    let whole = frame_of(b"whole");
    let cut = frame_of(b"this one is cut short");
    w.write_all(&whole).unwrap();
    w.write_all(&cut[..cut.len() - 3]).unwrap();
    drop(w);
    // By value: `for msg in rx`.
    let items: Vec<Result<Vec<u8>>> = rx.into_iter().collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), b"whole");
    assert!(items[1].as_ref().unwrap_err().is_cut_off(), "{items:?}");
}

#[test]
fn try_iter_takes_what_is_ready_without_waiting_and_ends_at_empty_or_disconnected() {
    common::within(LIMIT, || {
        let (mut tx, mut rx) = pipe::channel().unwrap();
        tx.send_batch(&[b"a", b"b", b"c"]).unwrap();
        let start = Instant::now();
        let got: Vec<Vec<u8>> = rx.try_iter().collect::<Result<_>>().unwrap();
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        // The sender lives: nothing more now, and no waiting for it.
        assert_eq!(rx.try_iter().count(), 0);
        assert!(start.elapsed() < SLACK);
        tx.send(b"d").unwrap();
        drop(tx);
        let got: Vec<Vec<u8>> = rx.try_iter().collect::<Result<_>>().unwrap();
        assert_eq!(got, [b"d".to_vec()]);
        // Disconnected ends it too, with no error.
        assert_eq!(rx.try_iter().count(), 0);
    })
}

#[test]
fn try_iter_yields_a_real_error_once() {
    let (mut rx, mut w) = raw_pipe();
    w.write_all(&frame_of(b"ok")).unwrap();
    let mut bad = frame_of(b"flipped");
    let last = bad.len() - 1;
    bad[last] ^= 1; // checksum mismatch
    w.write_all(&bad).unwrap();
    let items: Vec<Result<Vec<u8>>> = rx.try_iter().collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(matches!(
        items[1],
        Err(Error::Frame(FrameError::ChecksumMismatch { .. }))
    ));
    drop(w);
}

/// Iterates `rx` by `&mut` (taking two messages) and then by value (the rest).
fn iterate_both_ways<R>(mut tx: impl Sender, mut rx: R) -> (Vec<Vec<u8>>, Vec<Vec<u8>>)
where
    R: Receiver + IntoIterator<Item = Result<Vec<u8>>>,
    for<'a> &'a mut R: IntoIterator<Item = Result<Vec<u8>>>,
{
    tx.send_batch(&[b"1", b"2", b"3", b"4"]).unwrap();
    drop(tx);
    let mut first = Vec::new();
    for msg in &mut rx {
        first.push(msg.unwrap());
        if first.len() == 2 {
            break;
        }
    }
    let rest = rx.into_iter().collect::<Result<Vec<_>>>().unwrap();
    (first, rest)
}

#[test]
fn every_builtin_receiver_is_into_iterator_by_value_and_by_mut() {
    common::within(LIMIT, || {
        let want = (
            vec![b"1".to_vec(), b"2".to_vec()],
            vec![b"3".to_vec(), b"4".to_vec()],
        );
        let (tx, rx) = pipe::channel().unwrap();
        assert_eq!(iterate_both_ways(tx, rx), want, "pipe");
        let (tx, rx) = shm::channel().unwrap();
        assert_eq!(iterate_both_ways(tx, rx), want, "ring");
        let dir = TempDir::new("api-into-iter");
        let (tx, rx) = queue::channel(dir.file("q"), QueueConfig::new()).unwrap();
        assert_eq!(iterate_both_ways(tx, rx), want, "queue");
        let (tx, rx) = pipe::channel().unwrap();
        let (tx, rx) = liveness::with_end_of_stream(tx, rx).unwrap();
        assert_eq!(iterate_both_ways(tx, rx), want, "live pipe");
    })
}

#[test]
fn the_error_helpers_name_one_outcome_each() {
    let timeout = Error::Timeout(Duration::from_millis(5));
    assert!(timeout.is_timeout() && !timeout.is_empty() && !timeout.is_full());
    assert!(Error::Empty.is_empty() && !Error::Empty.is_timeout() && !Error::Empty.is_full());
    assert!(Error::Full.is_full() && !Error::Full.is_empty() && !Error::Full.is_timeout());
    for e in [timeout, Error::Empty, Error::Full] {
        assert!(e.is_not_ready());
        assert!(!e.is_disconnected());
    }
    assert!(!Error::Disconnected.is_timeout() && !Error::Disconnected.is_empty());
}

/// Message `i` of a run: its index and a pattern that a cut or a shift would break.
fn numbered(i: usize, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len).map(|k| (k * 31 + i * 7) as u8).collect();
    if len >= 4 {
        m[..4].copy_from_slice(&(i as u32).to_le_bytes());
    }
    m
}

/// Sends with `try_send`, cycling through `sizes`, on a pipe nobody reads, until a whole
/// round of sizes is refused with Full. Returns what was accepted, in order.
fn fill_with_try_send(tx: &mut impl Sender, sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let mut refused_in_a_row = 0;
    let start = Instant::now();
    let mut i = 0;
    while refused_in_a_row < sizes.len() {
        assert!(start.elapsed() < SLACK * 3, "try_send never reported Full");
        let msg = numbered(sent.len(), sizes[i % sizes.len()]);
        i += 1;
        let t = Instant::now();
        match tx.try_send(&msg) {
            Ok(()) => {
                sent.push(msg);
                refused_in_a_row = 0;
            }
            Err(Error::Full) => refused_in_a_row += 1,
            Err(e) => panic!("try_send of {} bytes: {e:?}", msg.len()),
        }
        assert!(t.elapsed() < SLACK, "a try_send waited {:?}", t.elapsed());
    }
    sent
}

/// Drains `rx` after its senders are gone: every message must be whole and in order, and
/// the stream must end cleanly (no half frame left behind).
fn drain_exactly(rx: &mut impl Receiver, want: &[Vec<u8>]) {
    let got: Vec<Vec<u8>> = rx.iter().collect::<Result<_>>().unwrap_or_else(|e| {
        panic!("the stream is damaged (a partial frame was left in it?): {e:?}")
    });
    assert_eq!(got.len(), want.len(), "message count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "message {i} differs ({} vs {} bytes)",
            g.len(),
            w.len()
        );
    }
}

#[test]
fn a_pipe_nobody_reads_fills_then_try_send_is_full_and_nothing_partial_was_written() {
    common::within(LIMIT, || {
        // Sizes across PIPE_BUF: the small ones go in one all-or-nothing write, the large
        // ones only into an empty pipe.
        let sizes = [1, 100, 1000, 3000, PIPE_BUF - 8, PIPE_BUF - 7, 9000, 30_000];
        let config = PipeConfig::new().with_capacity(1 << 16);
        let (mut tx, mut rx) = pipe::channel_with(config).unwrap();
        let sent = fill_with_try_send(&mut tx, &sizes);
        assert!(
            sent.iter().map(Vec::len).sum::<usize>() > 30_000,
            "only {} messages went in",
            sent.len()
        );
        // A frame larger than the pipe cannot be sent whole without the reader: refused.
        match tx.try_send(&vec![1; 1 << 17]) {
            Err(Error::MessageTooLarge { .. }) => {}
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        drop(tx);
        drain_exactly(&mut rx, &sent);
    })
}

#[test]
fn a_large_frame_with_a_deadline_waits_for_an_empty_pipe_then_goes_whole() {
    common::within(LIMIT, || {
        let (mut tx, mut rx) =
            pipe::channel_with(PipeConfig::new().with_capacity(1 << 16)).unwrap();
        tx.send(b"unread").unwrap();
        let big = numbered(1, 40_000);
        // The pipe is not empty: the large frame does not start.
        assert!(matches!(tx.try_send(&big), Err(Error::Full)));
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let first = rx.recv().unwrap();
            (first, rx)
        });
        // Once the reader empties the pipe, it goes in whole.
        tx.send_timeout(&big, SLACK).unwrap();
        let (first, mut rx) = reader.join().unwrap();
        assert_eq!(first, b"unread");
        drop(tx);
        drain_exactly(&mut rx, &[big]);
    })
}

#[test]
fn a_pipe_send_timeout_times_out_on_a_stuck_reader_and_the_stream_stays_intact() {
    common::within(LIMIT, || {
        for shared in [false, true] {
            let config = PipeConfig::new()
                .with_capacity(1 << 16)
                .with_shared_senders(shared);
            let (mut tx, mut rx) = pipe::channel_with(config).unwrap();
            // Filled with every size tried below, so no size fits any more (a small frame may
            // still fit in a part-full page the larger ones did not).
            let mut sent = fill_with_try_send(&mut tx, &[10, 700, 2000, MAX_SHARED_PAYLOAD]);
            let wait = Duration::from_millis(200);
            for len in [10, MAX_SHARED_PAYLOAD] {
                let start = Instant::now();
                match tx.send_timeout(&numbered(99, len), wait) {
                    Err(Error::Timeout(d)) => assert_eq!(d, wait),
                    other => panic!("shared {shared}: expected Timeout, got {other:?}"),
                }
                let took = start.elapsed();
                assert!(took >= wait, "shared {shared}: gave up after {took:?}");
                assert!(took < SLACK, "shared {shared}: took {took:?}");
            }
            // A reader that makes room lets a waiting send through.
            let reader = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let first = rx.recv().unwrap();
                (first, rx)
            });
            let late = numbered(sent.len(), 10);
            tx.send_timeout(&late, SLACK).unwrap();
            let (first, mut rx) = reader.join().unwrap();
            assert_eq!(first, sent.remove(0));
            sent.push(late);
            drop(tx);
            drain_exactly(&mut rx, &sent);
        }
    })
}

#[test]
fn shared_pipe_clones_try_send_concurrently_and_every_frame_stays_whole() {
    common::within(LIMIT, || {
        let config = PipeConfig::new()
            .with_shared_senders(true)
            .with_capacity(1 << 16);
        let (tx, mut rx) = pipe::channel_with(config).unwrap();
        let senders: Vec<_> = (0..2u8)
            .map(|who| {
                let mut tx = tx.try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut sent = Vec::new();
                    let mut full = 0;
                    let mut i = 0usize;
                    while full < 50 {
                        let mut m = numbered(i, [500, 1500, MAX_SHARED_PAYLOAD][i % 3]);
                        m[0] = who;
                        i += 1;
                        match tx.try_send(&m) {
                            Ok(()) => sent.push(m),
                            Err(Error::Full) => full += 1,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    sent
                })
            })
            .collect();
        drop(tx);
        let sent: Vec<Vec<Vec<u8>>> = senders.into_iter().map(|t| t.join().unwrap()).collect();
        let got: Vec<Vec<u8>> = rx.iter().collect::<Result<_>>().unwrap();
        for who in 0..2u8 {
            let mine: Vec<&Vec<u8>> = got.iter().filter(|m| m[0] == who).collect();
            let want: Vec<&Vec<u8>> = sent[who as usize].iter().collect();
            assert_eq!(mine, want, "sender {who}: its messages, whole and in order");
        }
    })
}

#[test]
fn pipe_try_clone_is_refused_in_single_sender_mode_and_counts_as_a_sender_in_shared_mode() {
    let (tx, _rx) = pipe::channel().unwrap();
    match tx.try_clone() {
        Err(Error::InvalidConfig { what, .. }) => assert!(what.contains("shared_senders")),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let (tx, mut rx) = pipe::channel_with(PipeConfig::new().with_shared_senders(true)).unwrap();
    let mut clone = tx.try_clone().unwrap();
    drop(tx);
    // The clone keeps the stream open.
    assert!(rx.try_recv().unwrap_err().is_empty());
    clone.send(b"from the clone").unwrap();
    drop(clone);
    assert_eq!(rx.recv().unwrap(), b"from the clone");
    assert!(rx.recv().unwrap_err().is_disconnected());
}

#[test]
fn ring_try_send_and_send_timeout_through_the_trait() {
    common::within(LIMIT, || {
        let (tx, mut rx) = shm::channel_with(RingConfig::new().with_capacity(4096)).unwrap();
        let mut tx: Box<dyn Sender> = Box::new(tx);
        let sent = fill_with_try_send(&mut tx, &[4, 100, 500, 2000]);
        assert!(!sent.is_empty());
        let wait = Duration::from_millis(200);
        let start = Instant::now();
        assert!(matches!(tx.send_timeout(b"late", wait), Err(Error::Timeout(d)) if d == wait));
        assert!(start.elapsed() >= wait && start.elapsed() < SLACK);
        drop(tx);
        drain_exactly(&mut rx, &sent);
    })
}

#[test]
fn queue_send_deadlines_bound_the_wait_for_the_lock_and_write_nothing_on_expiry() {
    common::within(LIMIT, || {
        let dir = TempDir::new("api-queue-lock");
        let path = dir.file("q");
        let (mut tx, mut rx) = queue::channel(&path, QueueConfig::new()).unwrap();
        tx.send(b"before").unwrap();
        // Another open file description holds the queue's flock, as a handle stopped inside
        // an operation would.
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        let start = Instant::now();
        assert!(matches!(tx.try_send(b"refused"), Err(Error::Full)));
        assert!(start.elapsed() < SLACK);
        let wait = Duration::from_millis(200);
        let start = Instant::now();
        match tx.send_timeout(b"timed out", wait) {
            Err(Error::Timeout(d)) => assert_eq!(d, wait),
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(start.elapsed() >= wait && start.elapsed() < SLACK);
        // Released while a send waits: the send goes through.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            holder.unlock().unwrap();
        });
        tx.send_timeout(b"after", SLACK).unwrap();
        releaser.join().unwrap();
        tx.try_send(b"free").unwrap();
        drop(tx);
        drain_exactly(
            &mut rx,
            &[b"before".to_vec(), b"after".to_vec(), b"free".to_vec()],
        );
    })
}

#[test]
fn a_queue_sender_clone_sends_and_keeps_the_channel_open_until_every_copy_is_gone() {
    common::within(LIMIT, || {
        let dir = TempDir::new("api-queue-clone");
        let (tx, mut rx) = queue::channel(dir.file("q"), QueueConfig::new()).unwrap();
        let mut clone = tx.try_clone().unwrap();
        drop(tx);
        assert!(rx.try_recv().unwrap_err().is_empty(), "a clone still lives");
        let t = std::thread::spawn(move || clone.send(b"from the clone"));
        t.join().unwrap().unwrap();
        drain_exactly(&mut rx, &[b"from the clone".to_vec()]);
    })
}

#[test]
fn seqpacket_try_send_is_full_then_send_timeout_times_out() {
    common::within(LIMIT, || {
        let (mut tx, mut rx) = SeqpacketTransport.pair(1).unwrap();
        let sent = fill_with_try_send(&mut tx, &[4, 100, 5000]);
        let wait = Duration::from_millis(200);
        let start = Instant::now();
        assert!(tx.send_timeout(b"late", wait).unwrap_err().is_timeout());
        assert!(start.elapsed() >= wait && start.elapsed() < SLACK);
        drop(tx);
        drain_exactly(&mut rx, &sent);
    })
}

/// A third-party sender that implements only `send`.
struct OnlySend(Vec<Vec<u8>>);

impl Sender for OnlySend {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.0.push(msg.to_vec());
        Ok(())
    }

    fn max_message_len(&self) -> usize {
        usize::MAX
    }
}

#[test]
fn a_sender_without_send_wait_says_unsupported_and_sends_nothing() {
    let mut tx = OnlySend(Vec::new());
    assert!(matches!(tx.try_send(b"x"), Err(Error::Unsupported(_))));
    assert!(matches!(
        tx.send_timeout(b"y", Duration::from_millis(1)),
        Err(Error::Unsupported(_))
    ));
    tx.send_wait(b"z", Wait::Forever).unwrap();
    assert_eq!(tx.0, [b"z".to_vec()]);
}
