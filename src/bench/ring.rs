//! The shared-memory ring between two processes against `rtrb` and `crossbeam-channel`
//! between two threads, and against a bare shared-memory spin ping-pong (the floor).
//!
//! `rtrb` is used the way a user moving variable-length byte messages would: a ring of
//! bytes, each message a 4-byte length then the payload, written and read as one chunk.
//! `crossbeam-channel` moves a `Vec<u8>` per message (throughput: one allocation per
//! message, as a user with borrowed data must; ping-pong: the same buffer bounced back).

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use super::pipe::WARMUP;
use super::{consume, expect_count, failed, one_way, payload, ping_pong, recv_one, wait_ok};
use crate::check::fork::ChildGroup;
use crate::shm::{self, RingConfig, RingReceiver, RingSender};
use crate::{Error, Receiver, Result, Wait};

/// Bytes of data in every ring of these benchmarks (ours and `rtrb`'s).
pub const RING_BYTES: usize = 256 * 1024;

/// Our ring. `trusted`: both ends zero-copy (`trust_peer`); otherwise the default ends,
/// which copy every payload between shared memory and a private buffer.
fn ring_with(trusted: bool) -> Result<(RingSender, RingReceiver)> {
    let (tx, rx) = shm::channel_with(RingConfig::new().with_capacity(RING_BYTES))?;
    if trusted {
        // SAFETY: both ends stay in this benchmark's two processes, which run the crate's
        // own code and write the ring only through it (the protocol); nothing else holds
        // the memory descriptor.
        Ok(unsafe { (tx.trust_peer(), rx.trust_peer()) })
    } else {
        Ok((tx, rx))
    }
}

/// Our ring: `n` messages of `size` bytes to a child process; `batch == 1` uses `send` and
/// `recv_with`, larger batches `send_batch` and `recv_many`. The time from the first send
/// until the child has received the last and exited. `trusted`: both ends zero-copy.
pub fn channel(n: u64, size: usize, batch: usize, trusted: bool) -> Result<Duration> {
    if batch <= 1 {
        one_way(ring_with(trusted)?, n, size, 1, recv_one)
    } else {
        one_way(ring_with(trusted)?, n, size, batch, |rx, f| {
            rx.recv_many(batch, Wait::Forever, |m| f(m)).map(drop)
        })
    }
}

/// Receives one message by polling: [`Wait::Never`] in a loop until one is there (each
/// empty look also asks whether the sender still exists, so the loop ends with
/// [`Error::Disconnected`] once it is gone and the ring is empty).
fn poll_one<T>(rx: &mut RingReceiver, mut f: impl FnMut(&[u8]) -> T) -> Result<T> {
    loop {
        match rx.recv_with(Wait::Never, |m| f(m)) {
            Err(Error::Empty) => std::hint::spin_loop(),
            r => return r,
        }
    }
}

/// Our ring with a polling receiver: as [`channel`] with `batch == 1`, but the child
/// receives with [`Wait::Never`] in a loop, keeping its core busy, instead of
/// [`Wait::Forever`] (which spins briefly, then sleeps until the sender wakes it).
pub fn channel_polling(n: u64, size: usize, trusted: bool) -> Result<Duration> {
    one_way(ring_with(trusted)?, n, size, 1, |rx, f| poll_one(rx, f))
}

/// Copies `src` into the two halves of a chunk, seen as one run of slots, at offset `at`.
fn put(dst: &mut (&mut [MaybeUninit<u8>], &mut [MaybeUninit<u8>]), at: usize, src: &[u8]) {
    let first = dst.0.len().saturating_sub(at).min(src.len());
    let (to_a, to_b) = src.split_at(first);
    if first > 0 {
        let a = &mut dst.0[at..at + first];
        // SAFETY: `a` is exactly `to_a.len()` writable slots of `u8` (MaybeUninit<u8> has
        // u8's layout), and `to_a` is borrowed from a different allocation than the ring.
        unsafe { std::ptr::copy_nonoverlapping(to_a.as_ptr(), a.as_mut_ptr().cast(), first) };
    }
    if !to_b.is_empty() {
        let b_at = (at + first) - dst.0.len();
        let b = &mut dst.1[b_at..b_at + to_b.len()];
        // SAFETY: as above, for the second half.
        unsafe { std::ptr::copy_nonoverlapping(to_b.as_ptr(), b.as_mut_ptr().cast(), to_b.len()) };
    }
}

/// Pushes one length-prefixed message into an `rtrb` byte ring, spinning while it is full.
fn rtrb_push(p: &mut rtrb::Producer<u8>, msg: &[u8]) {
    let len = (msg.len() as u32).to_le_bytes();
    loop {
        match p.write_chunk_uninit(4 + msg.len()) {
            Ok(mut chunk) => {
                let mut halves = chunk.as_mut_slices();
                put(&mut halves, 0, &len);
                put(&mut halves, 4, msg);
                // SAFETY: the two `put`s wrote slots 0..4 and 4..4 + len: every one of the
                // chunk's 4 + len slots (its two halves together are exactly that long).
                unsafe { chunk.commit_all() };
                return;
            }
            Err(_) => std::hint::spin_loop(),
        }
    }
}

/// Pops one length-prefixed message from an `rtrb` byte ring, spinning while it is empty;
/// `f` sees the payload (in up to two pieces).
fn rtrb_pop<T>(c: &mut rtrb::Consumer<u8>, f: impl FnOnce(&[u8], &[u8]) -> T) -> T {
    let len = loop {
        if let Ok(chunk) = c.read_chunk(4) {
            let (a, b) = chunk.as_slices();
            let mut bytes = [0u8; 4];
            for (d, s) in bytes.iter_mut().zip(a.iter().chain(b)) {
                *d = *s;
            }
            // Dropped without commit: nothing is consumed yet.
            break u32::from_le_bytes(bytes) as usize;
        }
        std::hint::spin_loop();
    };
    // The producer committed the length and the payload together.
    let chunk = loop {
        if let Ok(chunk) = c.read_chunk(4 + len) {
            break chunk;
        }
        std::hint::spin_loop();
    };
    let (a, b) = chunk.as_slices();
    let (a, b) = if a.len() >= 4 {
        (&a[4..], b)
    } else {
        (&[][..], &b[4 - a.len()..])
    };
    let r = f(a, b);
    chunk.commit_all();
    r
}

/// `rtrb` between two threads: `n` messages of `size` bytes.
pub fn rtrb_threads(n: u64, size: usize) -> Result<Duration> {
    let (mut p, mut c) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let msg = payload(size);
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = (0u64, 0u64);
        for _ in 0..n {
            let len = rtrb_pop(&mut c, |a, b| {
                consume(a);
                consume(b);
                a.len() + b.len()
            });
            got = (got.0 + 1, got.1 + len as u64);
        }
        expect_count(got, n, size)
    });
    for _ in 0..n {
        rtrb_push(&mut p, &msg);
    }
    reader
        .join()
        .map_err(|_| failed("rtrb reader panicked"))?
        .map_err(failed)?;
    Ok(start.elapsed())
}

/// `crossbeam-channel` (bounded, as many slots as our ring holds messages of this size)
/// between two threads: `n` messages of `size` bytes, each a new `Vec<u8>`.
pub fn crossbeam_threads(n: u64, size: usize) -> Result<Duration> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>((RING_BYTES / (size + 8)).max(2));
    let msg = payload(size);
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = (0u64, 0u64);
        while let Ok(m) = rx.recv() {
            got = (got.0 + 1, got.1 + m.len() as u64);
            consume(&m);
        }
        expect_count(got, n, size)
    });
    for _ in 0..n {
        tx.send(msg.clone())
            .map_err(|_| failed("crossbeam receiver gone"))?;
    }
    drop(tx);
    reader
        .join()
        .map_err(|_| failed("crossbeam reader panicked"))?
        .map_err(failed)?;
    Ok(start.elapsed())
}

/// Ping-pong over two of our rings to an echoing child process (`trusted`: all four ends
/// zero-copy).
pub fn channel_pingpong(n: u64, size: usize, trusted: bool) -> Result<Vec<Duration>> {
    let (a_tx, a_rx) = ring_with(trusted)?;
    let (b_tx, b_rx) = ring_with(trusted)?;
    ping_pong((a_tx, b_rx), (a_rx, b_tx), n, size, WARMUP, recv_one)
}

/// Ping-pong over two of our rings to an echoing child process, both sides polling
/// ([`Wait::Never`] in a loop) instead of sleeping while they wait (`trusted`: all four
/// ends zero-copy).
pub fn pingpong_polling(n: u64, size: usize, trusted: bool) -> Result<Vec<Duration>> {
    let (a_tx, a_rx) = ring_with(trusted)?;
    let (b_tx, b_rx) = ring_with(trusted)?;
    ping_pong((a_tx, b_rx), (a_rx, b_tx), n, size, WARMUP, |rx, f| {
        poll_one(rx, f)
    })
}

/// `rtrb` ping-pong between two threads over two byte rings.
pub fn rtrb_pingpong(n: u64, size: usize) -> Result<Vec<Duration>> {
    let (mut a_p, mut a_c) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let (mut b_p, mut b_c) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let rounds = WARMUP + n;
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(size);
        for _ in 0..rounds {
            rtrb_pop(&mut a_c, |a, b| {
                buf.clear();
                buf.extend_from_slice(a);
                buf.extend_from_slice(b);
            });
            rtrb_push(&mut b_p, &buf);
        }
    });
    let msg = payload(size);
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(n as usize);
    for i in 0..rounds {
        let t = Instant::now();
        rtrb_push(&mut a_p, &msg);
        rtrb_pop(&mut b_c, |a, b| {
            back[..a.len()].copy_from_slice(a);
            back[a.len()..].copy_from_slice(b);
        });
        if i >= WARMUP {
            rtts.push(t.elapsed());
        }
    }
    echo.join().map_err(|_| failed("rtrb echo panicked"))?;
    Ok(rtts)
}

/// `crossbeam-channel` ping-pong between two threads: one buffer bounced back and forth.
pub fn crossbeam_pingpong(n: u64, size: usize) -> Result<Vec<Duration>> {
    let (a_tx, a_rx) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let (b_tx, b_rx) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(m) = a_rx.recv() {
            if b_tx.send(m).is_err() {
                break;
            }
        }
    });
    let mut msg = payload(size);
    let mut rtts = Vec::with_capacity(n as usize);
    let gone = |_| failed("crossbeam echo gone");
    for i in 0..WARMUP + n {
        let t = Instant::now();
        a_tx.send(msg).map_err(|_| failed("crossbeam echo gone"))?;
        msg = b_rx.recv().map_err(gone)?;
        if i >= WARMUP {
            rtts.push(t.elapsed());
        }
    }
    drop(a_tx);
    echo.join().map_err(|_| failed("crossbeam echo panicked"))?;
    Ok(rtts)
}

/// The floor: two sequence words and two message buffers in a `MAP_SHARED` memfd mapping,
/// both processes spinning. Each round the parent copies the message into buffer A and
/// publishes it, the child copies A into B and publishes that, the parent copies B out.
struct Spin {
    map: MmapRaw,
    _fd: OwnedFd,
}

/// Offset of the two message buffers (after the two sequence words, a page).
const SPIN_BUF: usize = 4096;

impl Spin {
    fn new(size: usize) -> Result<Spin> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"ipcprop-bench-spin", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| Error::sys("memfd_create", e))?;
        let len = SPIN_BUF + 2 * size.max(1);
        nix::unistd::ftruncate(&fd, len as i64).map_err(|e| Error::sys("ftruncate", e))?;
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&fd)
            .map_err(|e| Error::io("mmap", e))?;
        Ok(Spin { map, _fd: fd })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: offsets 0 and 128 are 8-aligned and inside the live mapping (at least
        // SPIN_BUF long), which starts zero-filled and whose first page is only ever
        // accessed through these atomics.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(i * 128).cast()) }
    }

    fn buf(&self, i: usize, size: usize) -> *mut u8 {
        // SAFETY: SPIN_BUF + i * size + size <= SPIN_BUF + 2 * size, inside the mapping.
        unsafe { self.map.as_mut_ptr().add(SPIN_BUF + i * size) }
    }

    fn wait(&self, i: usize, seq: u64) {
        while self.word(i).load(Ordering::Acquire) != seq {
            std::hint::spin_loop();
        }
    }
}

/// The bare shared-memory spin ping-pong of `size` bytes between two processes.
pub fn spin_pingpong(n: u64, size: usize) -> Result<Vec<Duration>> {
    let spin = Spin::new(size)?;
    let rounds = WARMUP + n;
    // A property case running in another thread must not have its descriptors inherited
    // by this fork (its receiver would wait for an end of stream this child holds up).
    let _serial = crate::check::case::lock_cases();
    let mut group = ChildGroup::new();
    group.spawn("spin echo", |_| {
        for seq in 1..=rounds {
            spin.wait(0, seq);
            // SAFETY: buffers A and B are `size` bytes inside the mapping and do not
            // overlap. The parent wrote A before publishing `seq` on word 0 (Release, seen
            // by the Acquire in `wait`) and touches neither A nor B again until this
            // process publishes `seq` on word 1, so nothing else accesses them meanwhile.
            unsafe { std::ptr::copy_nonoverlapping(spin.buf(0, size), spin.buf(1, size), size) };
            spin.word(1).store(seq, Ordering::Release);
        }
        Ok(())
    })?;
    let msg = payload(size);
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(n as usize);
    for seq in 1..=rounds {
        let t = Instant::now();
        // SAFETY: the child reads A only between our publishing `seq` and its publishing
        // `seq` on word 1, which we have waited for in the previous round (or it has not
        // started), so nothing reads A while we write it; `msg` is `size` bytes.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), spin.buf(0, size), size) };
        spin.word(0).store(seq, Ordering::Release);
        spin.wait(1, seq);
        // SAFETY: the child wrote B before publishing `seq` on word 1 (Acquire in `wait`)
        // and does not touch it again before we publish `seq + 1`; `back` is `size` bytes.
        unsafe { std::ptr::copy_nonoverlapping(spin.buf(1, size), back.as_mut_ptr(), size) };
        if seq > WARMUP {
            rtts.push(t.elapsed());
        }
    }
    wait_ok(group)?;
    if back != msg {
        return Err(failed("spin ping-pong returned different bytes"));
    }
    Ok(rtts)
}

/// What one look at an empty ring costs a polling receiver: `n` receives with
/// [`Wait::Never`] on our empty ring (default ends, the sender alive in this process), each
/// answering [`Error::Empty`]. A receiver polling in a loop notices a message half a look
/// late on average, so this is part of its latency. Fails if a look answers anything else.
pub fn empty_looks(n: u64) -> Result<Duration> {
    let (_tx, mut rx) = ring_with(false)?;
    let start = Instant::now();
    for _ in 0..n {
        match rx.recv_with(Wait::Never, |m| m.len()) {
            Err(Error::Empty) => {}
            other => return Err(failed(format!("a look at an empty ring: {other:?}"))),
        }
    }
    Ok(start.elapsed())
}

/// The same look at an empty `rtrb` ring buffer of [`RING_BYTES`]: `n` calls of `pop`.
pub fn rtrb_empty_looks(n: u64) -> Result<Duration> {
    let (_p, mut c) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let start = Instant::now();
    for _ in 0..n {
        if std::hint::black_box(c.pop()).is_ok() {
            return Err(failed("an empty rtrb ring gave a byte"));
        }
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sender;

    /// Not the warm-up's 200 rounds: a ping-pong that timed the warm-up instead shows.
    const N: u64 = 150;

    #[test]
    fn empty_looks_answer_empty_on_both_rings() {
        assert!(empty_looks(1000).is_ok_and(|d| !d.is_zero()));
        assert!(rtrb_empty_looks(1000).is_ok_and(|d| !d.is_zero()));
    }

    #[test]
    fn channel_polling_delivers_every_message_at_every_size() {
        for trusted in [false, true] {
            for size in [0, 64, 65536] {
                let took = channel_polling(N, size, trusted);
                assert!(
                    took.as_ref().is_ok_and(|d| !d.is_zero()),
                    "{size} trusted {trusted}: {took:?}"
                );
            }
        }
    }

    #[test]
    fn pingpong_polling_times_every_round_trip_at_every_size() {
        for trusted in [false, true] {
            for size in [0, 64, 65536] {
                let rtts = pingpong_polling(N, size, trusted);
                assert_eq!(
                    rtts.map(|r| r.len()).ok(),
                    Some(N as usize),
                    "{size} trusted {trusted}"
                );
            }
        }
    }

    #[test]
    fn poll_one_waits_for_a_message_and_ends_at_disconnect() {
        let (mut tx, mut rx) = ring_with(false).expect("ring");
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(b"late").expect("send");
        });
        assert_eq!(poll_one(&mut rx, |m| m.to_vec()).expect("poll"), b"late");
        sender.join().expect("sender thread");
        assert!(matches!(
            poll_one(&mut rx, |m| m.len()),
            Err(Error::Disconnected)
        ));
    }
}
