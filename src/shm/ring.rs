//! The ring's algorithm: single producer, single consumer, variable-length records, blocking
//! by futex. Generic over [`Memory`] (where the header and data live, and how to sleep) and
//! [`Peer`] (whether the other end still exists), so that the very same code runs over a
//! shared mapping in production and over heap-allocated loom cells in the model checks.
//!
//! Protocol (one writer per word, see `layout`):
//! - The producer writes a record's bytes into free space, then publishes it with a
//!   `Release` store of `tail`; the consumer `Acquire`-loads `tail` before reading records.
//! - The consumer reads a record (through [`Memory::read`]: a private copy, or in place
//!   when the peer is trusted), then frees it with a `Release` store of `head`; the
//!   producer `Acquire`-loads `head` before reusing space.
//! - Sleeping (no lost wake-up): a side that finds nothing to do reads its futex word,
//!   sets its `waiting` flag, issues a `SeqCst` fence and checks again before sleeping on
//!   the word it read. The other side, after publishing, issues a `SeqCst` fence and reads
//!   the flag; if set, it bumps the word and wakes. Either the sleeper's re-check sees the
//!   new index, or the waker sees the flag (and the bumped word makes the sleep return).
//! - Everything read from shared memory is read once into a local and validated before it
//!   is used: `head <= tail <= head + capacity`, record headers carry a check word, lengths
//!   are bounded by the maximum and by what was published. Violations are
//!   [`Error::Corrupt`], never a panic or an out-of-bounds access.

use std::time::{Duration, Instant};

use super::layout::{
    decode_record_header, encode_record_header, max_message, record_size, Header, PAD,
    RECORD_ALIGN, RECORD_HEADER,
};
use crate::error::{Error, Result};
use crate::sync::{fence, spin_hint, AtomicU32, Ordering};

/// How long a sleeper sleeps before re-checking that its peer is alive. A peer killed by
/// SIGKILL cannot wake anyone; this bounds how long that goes unnoticed.
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

/// How long a waiting side spins before it sleeps on the futex. A futex sleep and wake
/// cost tens of microseconds end to end, so spinning for about as long catches a peer
/// that is busy copying a large message (a 64 KiB record takes microseconds to write);
/// an idle peer costs this much CPU once per wait, then nothing. Measured by the
/// `ring latency` rows of `ipcprop bench` (README): with a fixed 200 pauses the 64 KiB
/// ping-pong slept on every hop.
#[cfg(not(ipcprop_loom))]
const SPIN_TIME: Duration = Duration::from_micros(50);

/// Spins until `ready()` or [`SPIN_TIME`] has passed; the clock is read every 64 checks.
/// Under loom, which explores the sleeping path exhaustively, it checks once.
fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    #[cfg(not(ipcprop_loom))]
    {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if ready() {
                    return true;
                }
                spin_hint();
            }
            if start.elapsed() >= SPIN_TIME {
                return false;
            }
        }
    }
    #[cfg(ipcprop_loom)]
    {
        spin_hint();
        ready()
    }
}

/// A sender checks its receiver's liveness at least every this many sends (and whenever
/// the ring is full).
const LIVENESS_EVERY: u32 = 1024;

/// Where the ring lives.
pub(crate) trait Memory {
    /// The shared header.
    fn header(&self) -> &Header;
    /// Data capacity in bytes: a power of two, validated when the memory was attached,
    /// never re-read from shared memory.
    fn capacity(&self) -> usize;
    /// Copies `src` into the data area at `off` (a multiple of 8, `off + src.len() <=
    /// capacity`).
    fn write(&self, off: usize, src: &[u8]);
    /// Has `f` write `len` bytes that end up in the data area at `off` (a multiple of 8):
    /// in place, or through a private buffer copied in afterwards.
    fn fill<R>(&self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R;
    /// Lends the `len` bytes of the data area at `off` (a multiple of 8) to `f` for
    /// reading: a private copy of them, or the bytes in place.
    fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R;
    /// Reads a record header (8 bytes at `off`) once.
    fn read_header(&self, off: usize) -> [u8; RECORD_HEADER];
    /// Sleeps while `word == expected`, at most `timeout` (may return early).
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration);
    /// Wakes the sleeper on `word`.
    fn wake(&self, word: &AtomicU32);
}

/// Whether the other end of the ring still exists somewhere.
pub(crate) trait Peer {
    /// False once every copy of the other end is gone (dropped, or its process exited).
    fn alive(&self) -> bool;
}

#[cfg(not(ipcprop_loom))]
impl Peer for crate::liveness::Liveness {
    fn alive(&self) -> bool {
        crate::liveness::Liveness::alive(self)
    }
}

fn corrupt(what: String) -> Error {
    Error::Corrupt(what)
}

/// Checks `head <= tail <= head + capacity`, both at record boundaries (multiples of 8:
/// the memory is read and written in aligned 8-byte words).
fn check_indices(head: u64, tail: u64, capacity: usize) -> Result<()> {
    if tail < head
        || tail - head > capacity as u64
        || !head.is_multiple_of(RECORD_ALIGN)
        || !tail.is_multiple_of(RECORD_ALIGN)
    {
        return Err(corrupt(format!(
            "ring indices out of range or off a record boundary: head {head}, tail {tail}, capacity {capacity}"
        )));
    }
    Ok(())
}

fn deadline_passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// How long to sleep: until the deadline, but never past the next liveness check.
fn nap(deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .min(LIVENESS_PERIOD),
        None => LIVENESS_PERIOD,
    }
}

/// The producer's side of the algorithm, with its private state.
#[derive(Debug)]
pub(crate) struct Producer {
    /// Position after our last written record (published or not).
    tail: u64,
    /// Position after our last published record.
    published: u64,
    /// Last `head` we read (validated): the space before it is free.
    cached_head: u64,
    /// Sends since the last liveness check.
    since_check: u32,
    /// Set when shared memory was found corrupt: the ring is unusable.
    poisoned: bool,
    /// The ordering of the publishing store. Always `Release`, except in the loom check
    /// that proves the model catches a weakened ordering.
    publish: Ordering,
}

/// Outcome of trying to place one record.
enum Place {
    /// Written at this position (not yet published).
    Done,
    /// No room now.
    Full,
}

impl Producer {
    pub(crate) fn new<M: Memory>(mem: &M) -> Result<Producer> {
        let tail = mem.header().tail.0.load(Ordering::Acquire);
        let head = mem.header().head.0.load(Ordering::Acquire);
        check_indices(head, tail, mem.capacity())?;
        Ok(Producer {
            tail,
            published: tail,
            cached_head: head,
            since_check: 0,
            poisoned: false,
            publish: Ordering::Release,
        })
    }

    /// Weakens the publishing store to `Relaxed`, for the loom check that must fail.
    #[cfg(ipcprop_loom)]
    pub(crate) fn weaken_publish(&mut self) {
        self.publish = Ordering::Relaxed;
    }

    /// The longest message this ring carries.
    pub(crate) fn max_message<M: Memory>(&self, mem: &M) -> usize {
        max_message(mem.capacity())
    }

    /// Writes one record of `len` bytes, filled by `fill`, without publishing it.
    fn place<M: Memory>(
        &mut self,
        mem: &M,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Place> {
        let cap = mem.capacity();
        let rec = record_size(len);
        let off = (self.tail % cap as u64) as usize;
        let contig = cap - off;
        let need = if rec <= contig { rec } else { contig + rec };
        if (cap as u64) - (self.tail - self.cached_head) < need as u64 {
            let head = mem.header().head.0.load(Ordering::Acquire);
            // The receiver may only move head forward, up to what we published.
            if head < self.cached_head || head > self.published {
                self.poisoned = true;
                return Err(corrupt(format!(
                    "ring head {head} outside [{}, {}]: the receiver's index was overwritten",
                    self.cached_head, self.published
                )));
            }
            self.cached_head = head;
            if (cap as u64) - (self.tail - head) < need as u64 {
                return Ok(Place::Full);
            }
        }
        let at = if rec <= contig {
            off
        } else {
            mem.write(off, &encode_record_header(PAD));
            0
        };
        mem.write(at, &encode_record_header(len as u32));
        mem.fill(at + RECORD_HEADER, len, |buf| fill(buf));
        self.tail += need as u64;
        Ok(Place::Done)
    }

    /// Publishes everything written so far and wakes the consumer if it sleeps.
    fn publish<M: Memory>(&mut self, mem: &M) {
        if self.published == self.tail {
            return;
        }
        // Publishes the records written before this store.
        mem.header().tail.0.store(self.tail, self.publish);
        self.published = self.tail;
        // Orders the tail store before the read of the consumer's waiting flag (see the
        // module docs: no lost wake-up).
        fence(Ordering::SeqCst);
        let rx = &mem.header().rx_sleep.0;
        if rx.waiting.load(Ordering::Relaxed) != 0 {
            rx.seq.fetch_add(1, Ordering::Release);
            mem.wake(&rx.seq);
        }
    }

    fn check_peer<P: Peer>(&mut self, peer: &P) -> Result<()> {
        self.since_check = 0;
        if peer.alive() {
            Ok(())
        } else {
            Err(Error::Disconnected)
        }
    }

    /// Sends messages, each `lens[i]` bytes filled by `fill(i, buf)`, publishing once at the
    /// end (and whenever the ring fills). Waits for room until `deadline` (None: forever).
    /// Checks that the consumer still exists first if `check_peer` (batches do), else at
    /// least every [`LIVENESS_EVERY`] sends, and whenever the ring is full. Returns how many
    /// were sent; an error after some were sent still leaves those sent.
    pub(crate) fn send<M: Memory, P: Peer>(
        &mut self,
        mem: &M,
        peer: &P,
        lens: &[usize],
        fill: &mut dyn FnMut(usize, &mut [u8]),
        deadline: Option<Instant>,
        check_peer: bool,
    ) -> Result<usize> {
        if self.poisoned {
            return Err(corrupt("the ring was found corrupt earlier".into()));
        }
        let max = self.max_message(mem);
        if let Some(&len) = lens.iter().find(|&&l| l > max) {
            return Err(Error::MessageTooLarge {
                len,
                max,
                why: "half the ring's capacity",
            });
        }
        self.since_check += 1;
        if self.since_check >= LIVENESS_EVERY || check_peer {
            self.check_peer(peer)?;
        }
        let mut i = 0;
        while i < lens.len() {
            match self.place(mem, lens[i], &mut |buf| fill(i, buf))? {
                Place::Done => {
                    i += 1;
                    // A batch of large messages is published a quarter ring at a time, so
                    // the consumer starts on it while the rest is still being written.
                    if self.tail - self.published >= (mem.capacity() / 4) as u64 {
                        self.publish(mem);
                    }
                }
                Place::Full => {
                    self.publish(mem);
                    self.wait_for_room(mem, peer, deadline)?;
                }
            }
        }
        self.publish(mem);
        Ok(i)
    }

    /// Sleeps until the consumer frees space (or the deadline passes, or it is gone).
    fn wait_for_room<M: Memory, P: Peer>(
        &mut self,
        mem: &M,
        peer: &P,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let head = &mem.header().head.0;
        let me = &mem.header().tx_sleep.0;
        // Any progress of the consumer is worth another try at placing the record.
        let known = self.cached_head;
        let moved = |head: u64| head != known;
        if deadline_passed(deadline) {
            self.check_peer(peer)?;
            return Err(Error::Empty);
        }
        if spin_until(|| moved(head.load(Ordering::Acquire))) {
            return Ok(());
        }
        loop {
            let seq = me.seq.load(Ordering::Acquire);
            me.waiting.store(1, Ordering::Relaxed);
            // Orders the flag before the re-check of head (pairs with the consumer's fence).
            fence(Ordering::SeqCst);
            if moved(head.load(Ordering::Acquire)) {
                me.waiting.store(0, Ordering::Relaxed);
                return Ok(());
            }
            if let Err(e) = self.check_peer(peer) {
                me.waiting.store(0, Ordering::Relaxed);
                return Err(e);
            }
            if deadline_passed(deadline) {
                me.waiting.store(0, Ordering::Relaxed);
                return Err(Error::Empty);
            }
            mem.wait(&me.seq, seq, nap(deadline));
            me.waiting.store(0, Ordering::Relaxed);
        }
    }

    /// Marks the end going away: wakes a sleeping consumer so it re-checks liveness now
    /// rather than at its next period.
    pub(crate) fn wake_peer<M: Memory>(&self, mem: &M) {
        let rx = &mem.header().rx_sleep.0;
        rx.seq.fetch_add(1, Ordering::Release);
        mem.wake(&rx.seq);
    }
}

/// The consumer's side of the algorithm, with its private state.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// Position of the next record to read.
    head: u64,
    /// Last `tail` we read (validated).
    cached_tail: u64,
    poisoned: Option<String>,
}

impl Consumer {
    pub(crate) fn new<M: Memory>(mem: &M) -> Result<Consumer> {
        let head = mem.header().head.0.load(Ordering::Acquire);
        let tail = mem.header().tail.0.load(Ordering::Acquire);
        check_indices(head, tail, mem.capacity())?;
        Ok(Consumer {
            head,
            cached_tail: head,
            poisoned: None,
        })
    }

    fn fail(&mut self, what: String) -> Error {
        self.poisoned = Some(what.clone());
        corrupt(what)
    }

    /// Reads and validates the sender's tail.
    fn load_tail<M: Memory>(&mut self, mem: &M) -> Result<u64> {
        let tail = mem.header().tail.0.load(Ordering::Acquire);
        if tail < self.cached_tail || tail - self.head > mem.capacity() as u64 {
            return Err(self.fail(format!(
                "ring tail {tail} outside [{}, {}]: the sender's index was overwritten",
                self.cached_tail,
                self.head + mem.capacity() as u64
            )));
        }
        self.cached_tail = tail;
        Ok(tail)
    }

    /// Takes the next record if one is published: lends it to `f`, then frees it.
    pub(crate) fn try_take<M: Memory, R>(
        &mut self,
        mem: &M,
        f: &mut Option<impl FnOnce(&[u8]) -> R>,
    ) -> Result<Option<R>> {
        let out = self.take(mem, f)?;
        if out.is_some() {
            self.release(mem);
        }
        Ok(out)
    }

    /// Takes the next published record, if any, without freeing it (see `release`).
    fn take<M: Memory, R>(
        &mut self,
        mem: &M,
        f: &mut Option<impl FnOnce(&[u8]) -> R>,
    ) -> Result<Option<R>> {
        if let Some(what) = &self.poisoned {
            return Err(corrupt(what.clone()));
        }
        if self.head == self.cached_tail && self.load_tail(mem)? == self.head {
            return Ok(None);
        }
        let cap = mem.capacity();
        let mut head = self.head;
        let mut off = (head % cap as u64) as usize;
        let mut len = match decode_record_header(mem.read_header(off)) {
            Some(l) => l,
            None => {
                return Err(self.fail(format!(
                    "record header at ring offset {off} fails its check word"
                )))
            }
        };
        if len == PAD {
            if off == 0 {
                return Err(self.fail("padding record at the start of the ring".into()));
            }
            head += (cap - off) as u64;
            if head >= self.cached_tail {
                return Err(self.fail(format!(
                    "padding at ring offset {off} runs past the published tail"
                )));
            }
            off = 0;
            len = match decode_record_header(mem.read_header(0)) {
                Some(l) if l != PAD => l,
                _ => {
                    return Err(
                        self.fail("record header at ring offset 0 fails its check word".into())
                    )
                }
            };
        }
        let len = len as usize;
        if len > max_message(cap) {
            return Err(self.fail(format!(
                "record at ring offset {off} claims {len} bytes, over the maximum of {}",
                max_message(cap)
            )));
        }
        let rec = record_size(len);
        if off + rec > cap || head + rec as u64 > self.cached_tail {
            return Err(self.fail(format!(
                "record at ring offset {off} ({len} bytes) runs past the published data"
            )));
        }
        let Some(f) = f.take() else {
            return Ok(None);
        };
        let out = mem.read(off + RECORD_HEADER, len, f);
        self.head = head + rec as u64;
        Ok(Some(out))
    }

    /// Frees everything taken so far and wakes the producer if it sleeps for space.
    fn release<M: Memory>(&mut self, mem: &M) {
        // Frees the records: the producer may now overwrite them.
        mem.header().head.0.store(self.head, Ordering::Release);
        // Orders the head store before the read of the producer's waiting flag.
        fence(Ordering::SeqCst);
        let tx = &mem.header().tx_sleep.0;
        if tx.waiting.load(Ordering::Relaxed) != 0 {
            tx.seq.fetch_add(1, Ordering::Release);
            mem.wake(&tx.seq);
        }
    }

    /// Receives at least one message (waiting as `recv` does), then every message already
    /// published, up to `max` in all, lending each to `f`; frees them with one index store.
    /// Returns how many were received.
    pub(crate) fn drain<M: Memory, P: Peer>(
        &mut self,
        mem: &M,
        peer: &P,
        max: usize,
        f: &mut dyn FnMut(&[u8]),
        deadline: Option<Instant>,
    ) -> Result<Option<usize>> {
        if max == 0 {
            return Ok(Some(0));
        }
        if self.recv(mem, peer, |m| f(m), deadline)?.is_none() {
            return Ok(None);
        }
        let mut n = 1;
        let mut released = self.head;
        while n < max {
            match self.take(mem, &mut Some(|m: &[u8]| f(m))) {
                Ok(Some(())) => {
                    n += 1;
                    // Large records are freed a quarter ring at a time, so a producer
                    // waiting for room goes on while this batch is still being read.
                    if self.head - released >= (mem.capacity() / 4) as u64 {
                        self.release(mem);
                        released = self.head;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.release(mem);
                    return Err(e);
                }
            }
        }
        self.release(mem);
        Ok(Some(n))
    }

    /// Receives one message, waiting until `deadline` (None: forever). `Ok(None)` when the
    /// deadline passed; `Err(Disconnected)` once the producer is gone and all is drained.
    pub(crate) fn recv<M: Memory, P: Peer, R>(
        &mut self,
        mem: &M,
        peer: &P,
        f: impl FnOnce(&[u8]) -> R,
        deadline: Option<Instant>,
    ) -> Result<Option<R>> {
        let mut f = Some(f);
        let tail = &mem.header().tail.0;
        let me = &mem.header().rx_sleep.0;
        loop {
            if let Some(r) = self.try_take(mem, &mut f)? {
                return Ok(Some(r));
            }
            if deadline_passed(deadline) {
                if !peer.alive() && self.load_tail(mem)? == self.head {
                    return Err(Error::Disconnected);
                }
                if tail.load(Ordering::Acquire) == self.head {
                    return Ok(None);
                }
                continue;
            }
            if spin_until(|| tail.load(Ordering::Acquire) != self.head) {
                continue;
            }
            let seq = me.seq.load(Ordering::Acquire);
            me.waiting.store(1, Ordering::Relaxed);
            // Orders the flag before the re-check of tail (pairs with the producer's fence).
            fence(Ordering::SeqCst);
            if tail.load(Ordering::Acquire) != self.head {
                me.waiting.store(0, Ordering::Relaxed);
                continue;
            }
            if !peer.alive() {
                me.waiting.store(0, Ordering::Relaxed);
                // Whatever the producer published before it went is still ours to drain.
                if self.load_tail(mem)? != self.head {
                    continue;
                }
                return Err(Error::Disconnected);
            }
            if deadline_passed(deadline) {
                me.waiting.store(0, Ordering::Relaxed);
                return Ok(None);
            }
            mem.wait(&me.seq, seq, nap(deadline));
            me.waiting.store(0, Ordering::Relaxed);
        }
    }

    /// Wakes a sleeping producer so it re-checks liveness now.
    pub(crate) fn wake_peer<M: Memory>(&self, mem: &M) {
        let tx = &mem.header().tx_sleep.0;
        tx.seq.fetch_add(1, Ordering::Release);
        mem.wake(&tx.seq);
    }
}
