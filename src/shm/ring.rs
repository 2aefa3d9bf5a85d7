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
use crate::transport::Wait;

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

/// How often a [`Spin`] policy reads how long its thread has waited for a CPU.
#[cfg(not(ipcprop_loom))]
const CONTENTION_LOOK_EVERY: Duration = Duration::from_millis(5);

/// How long a [`Spin`] policy sleeps at once after it saw its thread wait for a CPU.
#[cfg(not(ipcprop_loom))]
const CONTENDED_HOLD: Duration = Duration::from_millis(100);

/// The longest hold: a hold doubles, up to this, each time the contention is seen again
/// within one hold's length of the last hold's end (it is still there).
#[cfg(not(ipcprop_loom))]
const CONTENDED_HOLD_MAX: Duration = Duration::from_millis(3200);

/// Contention: the thread waited this long on a run queue within [`CONTENTION_WINDOW`]
/// (a fifth of the time). Measured on 2 cores, 50 ms windows of a thread spinning without
/// pause: with one spinning thread per core, 0 to 23 us waited in most windows and 3.8 ms
/// in the worst of 116; with one more spinning thread than cores, 20 to 24 ms in most.
#[cfg(not(ipcprop_loom))]
const CONTENDED_WAIT: Duration = Duration::from_millis(10);

/// See [`CONTENDED_WAIT`].
#[cfg(not(ipcprop_loom))]
const CONTENTION_WINDOW: Duration = Duration::from_millis(50);

/// Whether a waiting side spins before it sleeps: it does, unless its thread has been
/// waiting for a CPU a good part of the time lately.
///
/// Spinning pays only while the peer runs on another core. When there are more runnable
/// threads than cores (a busy neighbour on a 2-core machine), a spinning waiter keeps the
/// core its peer could have been moved to, and the peer waits for the neighbour's time
/// slice instead: measured on 2 cores, a 64 B ping-pong's p50 went from 6 us (sleeping at
/// once) to 108 us (spinning 50 us). A thread cannot see whether its peer is on a core,
/// but it can see that the cores are oversubscribed: it then spends time runnable but
/// waiting for a CPU, which the kernel counts (`run_delay` in
/// `/proc/thread-self/schedstat`). The policy reads that at most every
/// [`CONTENTION_LOOK_EVERY`] and, once its thread waited [`CONTENDED_WAIT`] within
/// [`CONTENTION_WINDOW`], sleeps at once for [`CONTENDED_HOLD`] before it tries spinning
/// again; twice as long each time the contention is seen again soon after a hold, up to
/// [`CONTENDED_HOLD_MAX`].
///
/// How long, not how often: the kernel's own work (a memory-monitoring thread every few
/// milliseconds, say) preempts a spinning thread many times a second for microseconds
/// each. An earlier policy counted preemptions (`getrusage`'s involuntary context
/// switches, three within 50 ms meant contention): on a 2-core machine with such
/// housekeeping it held both ends of an uncontended 64 B ping-pong off the spin, which
/// then woke the other through the futex on most hops (p50 500 to 700 ns instead of 115 to
/// 400, and 20 us when a side slept). A busy neighbour takes whole time slices.
///
/// Only speed depends on it: every wait re-checks its condition before it sleeps, spinning
/// or not. Where the wait cannot be read (no `/proc`, a kernel without
/// `CONFIG_SCHED_INFO`) the policy keeps spinning. An end moved to another thread compares
/// two threads' waits: a total that went down starts afresh.
#[derive(Debug, Default)]
pub(crate) struct Spin {
    /// When the wait was last read or tried (a failed read is not tried again sooner).
    #[cfg(not(ipcprop_loom))]
    tried: Option<Instant>,
    /// When the wait was last read, and the total read then.
    #[cfg(not(ipcprop_loom))]
    looked: Option<(Instant, Duration)>,
    /// The window the waits are summed over: when it began, and the wait seen in it.
    #[cfg(not(ipcprop_loom))]
    window: Option<(Instant, Duration)>,
    /// No spinning before this.
    #[cfg(not(ipcprop_loom))]
    hold_until: Option<Instant>,
    /// The length of the latest hold.
    #[cfg(not(ipcprop_loom))]
    hold: Duration,
}

impl Spin {
    /// Whether to spin now, at `now`; `waited` reads how long the thread has waited for a
    /// CPU in all (`None` if that failed: the policy then keeps what it knew).
    #[cfg(not(ipcprop_loom))]
    fn allowed(&mut self, now: Instant, waited: impl FnOnce() -> Option<Duration>) -> bool {
        let due = self
            .tried
            .is_none_or(|t| now.saturating_duration_since(t) >= CONTENTION_LOOK_EVERY);
        if due {
            self.tried = Some(now);
            if let Some(total) = waited() {
                match self.looked {
                    Some((then, before)) if total >= before => {
                        // The wait since the last look belongs to the window that holds
                        // that look; a window over makes way for one from that look on.
                        let window = match self.window {
                            Some((start, sum))
                                if now.saturating_duration_since(start) <= CONTENTION_WINDOW =>
                            {
                                (start, sum + (total - before))
                            }
                            _ => (then, total - before),
                        };
                        self.window = Some(window);
                        if window.1 >= CONTENDED_WAIT {
                            self.contended(now);
                        }
                    }
                    // The first look, or a total that went down (another thread's): start
                    // afresh.
                    _ => self.window = None,
                }
                self.looked = Some((now, total));
            }
        }
        self.hold_until.is_none_or(|h| now >= h)
    }

    /// Contention seen at `now`: hold off spinning. Still there soon after the last hold
    /// ended: hold twice as long (each spell of spinning beside a busy neighbour costs slow
    /// hops until the contention is seen again). Otherwise start over.
    #[cfg(not(ipcprop_loom))]
    fn contended(&mut self, now: Instant) {
        let again = self
            .hold_until
            .is_some_and(|end| now.saturating_duration_since(end) < self.hold);
        self.hold = if again {
            (self.hold * 2).min(CONTENDED_HOLD_MAX)
        } else {
            CONTENDED_HOLD
        };
        self.hold_until = Some(now + self.hold);
        self.window = None;
    }

    /// Spins until `ready()` or [`SPIN_TIME`] has passed, if the policy allows spinning now;
    /// the clock is read every 64 checks. Otherwise checks `ready()` once. Under loom, which
    /// explores the sleeping path exhaustively, it checks once.
    fn until(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        #[cfg(not(ipcprop_loom))]
        {
            let now = Instant::now();
            if !self.allowed(now, own_run_queue_wait) {
                return ready();
            }
            // The spin's time counts from here: a look at the thread's wait (microseconds,
            // at most every CONTENTION_LOOK_EVERY) is not spinning.
            let start = if self.tried == Some(now) {
                Instant::now()
            } else {
                now
            };
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
}

/// How long the calling thread has waited on a run queue for a CPU since it started
/// (`run_delay`, the second field of `/proc/thread-self/schedstat`, in nanoseconds), or
/// `None` if that cannot be read. About 5 us (open, read, close), at most every
/// [`CONTENTION_LOOK_EVERY`] of spinning.
#[cfg(not(ipcprop_loom))]
pub(crate) fn own_run_queue_wait() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
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
    /// Copies a message from this process's own memory into the data area at `off` (a
    /// multiple of 8), with the accesses [`Memory::fill`] would make: what `fill` does with
    /// `|buf| buf.copy_from_slice(src)`, without going through a private buffer.
    fn copy_in(&self, off: usize, src: &[u8]) {
        self.fill(off, src.len(), |buf| buf.copy_from_slice(src));
    }
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

/// How long a ring operation may wait for a message or for room: a [`Wait`] with the
/// deadline of a timed wait fixed once.
///
/// [`Until::Now`] is kept apart from a deadline that is already due so that a look which
/// does not wait reads no clock: a clock read costs about 25 ns, and an empty look of a
/// polling receiver made three of them (84 ns in all, 72 of them the clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Do not wait: [`Wait::Never`].
    Now,
    /// Wait until this instant: [`Wait::For`].
    At(Instant),
    /// Wait as long as it takes: [`Wait::Forever`].
    Forever,
}

impl Until {
    /// The wait `wait` asks for: its [`Wait::deadline`] (which reads the clock only for
    /// [`Wait::For`]), except that not waiting is [`Until::Now`], with no clock read.
    pub(crate) fn of(wait: Wait) -> Until {
        match wait {
            Wait::Never => Until::Now,
            other => other.deadline().map_or(Until::Forever, Until::At),
        }
    }

    /// Whether the time to wait is over.
    fn passed(self) -> bool {
        match self {
            Until::Now => true,
            Until::At(d) => Instant::now() >= d,
            Until::Forever => false,
        }
    }

    /// How long to sleep: until the deadline, but never past the next liveness check.
    fn nap(self) -> Duration {
        match self {
            Until::Now => Duration::ZERO,
            Until::At(d) => d
                .saturating_duration_since(Instant::now())
                .min(LIVENESS_PERIOD),
            Until::Forever => LIVENESS_PERIOD,
        }
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
    /// Whether a wait for room spins first.
    spin: Spin,
    /// Set when shared memory was found corrupt: the ring is unusable.
    poisoned: bool,
    /// The ordering of the publishing store. Always `Release`, except in the loom check
    /// that proves the model catches a weakened ordering.
    publish: Ordering,
}

/// The messages a send writes.
pub(crate) enum Messages<'a> {
    /// Copied from these slices (the caller's own memory) straight into the ring with
    /// [`Memory::copy_in`]: one copy.
    Copy(&'a [&'a [u8]]),
    /// `lens[i]` bytes each, written by `fill(i, buf)` into the buffer [`Memory::fill`]
    /// lends (a private buffer copied in afterwards, or the ring itself when trusted).
    Fill {
        lens: &'a [usize],
        fill: &'a mut dyn FnMut(usize, &mut [u8]),
    },
}

impl Messages<'_> {
    fn count(&self) -> usize {
        match self {
            Messages::Copy(m) => m.len(),
            Messages::Fill { lens, .. } => lens.len(),
        }
    }

    fn len(&self, i: usize) -> usize {
        match self {
            Messages::Copy(m) => m[i].len(),
            Messages::Fill { lens, .. } => lens[i],
        }
    }

    /// Writes message `i` (`self.len(i)` bytes) into the data area at `off`.
    fn write<M: Memory>(&mut self, mem: &M, off: usize, i: usize) {
        match self {
            Messages::Copy(m) => mem.copy_in(off, m[i]),
            Messages::Fill { lens, fill } => mem.fill(off, lens[i], |buf| fill(i, buf)),
        }
    }
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
            spin: Spin::default(),
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

    /// Writes message `i` of `msgs` as one record, without publishing it.
    fn place<M: Memory>(&mut self, mem: &M, msgs: &mut Messages<'_>, i: usize) -> Result<Place> {
        let len = msgs.len(i);
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
        msgs.write(mem, at + RECORD_HEADER, i);
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

    /// Sends `msgs`, publishing once at the end (and whenever the ring fills). Waits for room until `deadline`.
    /// Checks that the consumer still exists first if `check_peer` (batches do), else at
    /// least every [`LIVENESS_EVERY`] sends, and whenever the ring is full. Returns how many
    /// were sent; an error after some were sent still leaves those sent.
    pub(crate) fn send<M: Memory, P: Peer>(
        &mut self,
        mem: &M,
        peer: &P,
        mut msgs: Messages<'_>,
        deadline: Until,
        check_peer: bool,
    ) -> Result<usize> {
        if self.poisoned {
            return Err(corrupt("the ring was found corrupt earlier".into()));
        }
        let max = self.max_message(mem);
        if let Some(len) = (0..msgs.count()).map(|i| msgs.len(i)).find(|&l| l > max) {
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
        while i < msgs.count() {
            match self.place(mem, &mut msgs, i)? {
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
        deadline: Until,
    ) -> Result<()> {
        let head = &mem.header().head.0;
        let me = &mem.header().tx_sleep.0;
        // Any progress of the consumer is worth another try at placing the record.
        let known = self.cached_head;
        let moved = |head: u64| head != known;
        if deadline.passed() {
            self.check_peer(peer)?;
            return Err(Error::Empty);
        }
        if self.spin.until(|| moved(head.load(Ordering::Acquire))) {
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
            if deadline.passed() {
                me.waiting.store(0, Ordering::Relaxed);
                return Err(Error::Empty);
            }
            mem.wait(&me.seq, seq, deadline.nap());
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
    /// Whether a wait for a message spins first.
    spin: Spin,
    /// The producer's wake-up count (`rx_sleep.seq`) and the time when an empty look
    /// without waiting last asked whether the producer exists.
    #[cfg(not(ipcprop_loom))]
    peer_checked: Option<(u32, Instant)>,
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
            spin: Spin::default(),
            #[cfg(not(ipcprop_loom))]
            peer_checked: None,
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

    /// Whether an empty look that does not wait (a receive with no time left) should ask
    /// whether the producer still exists: one `poll(2)`, too dear for every look of a
    /// receiver that polls. It asks when the producer's wake-up count changed since it last
    /// asked (a dropped producer closes its liveness descriptor, then bumps the count, so
    /// an orderly end is seen at the next look), and at least every [`LIVENESS_PERIOD`]
    /// (a producer killed by SIGKILL bumps nothing: seen within that period, as a sleeping
    /// receiver sees it). Under loom every look asks.
    fn peer_check_due<M: Memory>(&mut self, mem: &M) -> bool {
        #[cfg(not(ipcprop_loom))]
        {
            let seq = mem.header().rx_sleep.0.seq.load(Ordering::Acquire);
            let now = Instant::now();
            let due = self.peer_checked.is_none_or(|(seen, at)| {
                seen != seq || now.saturating_duration_since(at) >= LIVENESS_PERIOD
            });
            if due {
                self.peer_checked = Some((seq, now));
            }
            due
        }
        #[cfg(ipcprop_loom)]
        {
            let _ = mem;
            true
        }
    }

    /// Whether the producer still exists. Once it is gone, every later empty look asks
    /// again (and says [`Error::Disconnected`]): an end that said it never goes back to
    /// saying [`Error::Empty`].
    fn peer_alive<P: Peer>(&mut self, peer: &P) -> bool {
        let alive = peer.alive();
        #[cfg(not(ipcprop_loom))]
        if !alive {
            self.peer_checked = None;
        }
        alive
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
        deadline: Until,
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

    /// Receives one message, waiting until `deadline`. `Ok(None)` when the
    /// deadline passed; `Err(Disconnected)` once the producer is gone and all is drained.
    pub(crate) fn recv<M: Memory, P: Peer, R>(
        &mut self,
        mem: &M,
        peer: &P,
        f: impl FnOnce(&[u8]) -> R,
        deadline: Until,
    ) -> Result<Option<R>> {
        let mut f = Some(f);
        let tail = &mem.header().tail.0;
        let me = &mem.header().rx_sleep.0;
        loop {
            if let Some(r) = self.try_take(mem, &mut f)? {
                return Ok(Some(r));
            }
            if deadline.passed() {
                if tail.load(Ordering::Acquire) != self.head {
                    continue;
                }
                if self.peer_check_due(mem)
                    && !self.peer_alive(peer)
                    && self.load_tail(mem)? == self.head
                {
                    return Err(Error::Disconnected);
                }
                if tail.load(Ordering::Acquire) == self.head {
                    return Ok(None);
                }
                continue;
            }
            let head = self.head;
            if self.spin.until(|| tail.load(Ordering::Acquire) != head) {
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
            if !self.peer_alive(peer) {
                me.waiting.store(0, Ordering::Relaxed);
                // Whatever the producer published before it went is still ours to drain.
                if self.load_tail(mem)? != self.head {
                    continue;
                }
                return Err(Error::Disconnected);
            }
            if deadline.passed() {
                me.waiting.store(0, Ordering::Relaxed);
                return Ok(None);
            }
            mem.wait(&me.seq, seq, deadline.nap());
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

#[cfg(all(test, not(ipcprop_loom)))]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::shm::region::Region;

    /// A producer whose existence the test decides, counting how often it is asked.
    struct CountingPeer {
        alive: Cell<bool>,
        asked: Cell<u32>,
    }

    impl Peer for CountingPeer {
        fn alive(&self) -> bool {
            self.asked.set(self.asked.get() + 1);
            self.alive.get()
        }
    }

    fn empty_look(cons: &mut Consumer, mem: &Region, peer: &CountingPeer) -> Result<Option<()>> {
        cons.recv(mem, peer, |_| (), Until::Now)
    }

    #[test]
    fn a_polling_receiver_asks_for_the_producer_once_per_period_or_wake_up_not_every_look() {
        let mem = Region::create(4096).unwrap();
        let mut cons = Consumer::new(&mem).unwrap();
        let peer = CountingPeer {
            alive: Cell::new(true),
            asked: Cell::new(0),
        };
        for _ in 0..1000 {
            assert!(empty_look(&mut cons, &mem, &peer).unwrap().is_none());
        }
        // The first look asks; the next ones within the period do not (1000 looks take far
        // less than 20 ms... unless the machine stalls, which may add a few).
        let asked = peer.asked.get();
        assert!(
            (1..=20).contains(&asked),
            "asked {asked} times in 1000 looks"
        );

        // An orderly end: the producer's liveness goes, then it bumps its wake-up count.
        // The very next look sees it, however soon.
        peer.alive.set(false);
        Producer::new(&mem).unwrap().wake_peer(&mem);
        for _ in 0..3 {
            // And says so at every later look: an end that said Disconnected never goes
            // back to Empty.
            assert!(matches!(
                empty_look(&mut cons, &mem, &peer),
                Err(Error::Disconnected)
            ));
        }
    }

    #[test]
    fn a_receiver_that_said_disconnected_while_waiting_says_it_again_without_waiting() {
        let mem = Region::create(4096).unwrap();
        let mut cons = Consumer::new(&mem).unwrap();
        let peer = CountingPeer {
            alive: Cell::new(true),
            asked: Cell::new(0),
        };
        assert!(empty_look(&mut cons, &mem, &peer).unwrap().is_none());
        peer.alive.set(false);
        // A wait sees it gone (before it would sleep) ...
        let waited = cons.recv(
            &mem,
            &peer,
            |_| (),
            Until::At(Instant::now() + Duration::from_secs(5)),
        );
        assert!(matches!(waited, Err(Error::Disconnected)), "{waited:?}");
        // ... and a look without waiting, right after, within the period, says so too.
        assert!(matches!(
            empty_look(&mut cons, &mem, &peer),
            Err(Error::Disconnected)
        ));
    }

    #[test]
    fn a_polling_receiver_sees_a_producer_killed_without_a_word_within_the_period() {
        let mem = Region::create(4096).unwrap();
        let mut cons = Consumer::new(&mem).unwrap();
        let peer = CountingPeer {
            alive: Cell::new(true),
            asked: Cell::new(0),
        };
        assert!(empty_look(&mut cons, &mem, &peer).unwrap().is_none());
        // Killed: gone, and nothing bumped.
        peer.alive.set(false);
        let start = Instant::now();
        loop {
            match empty_look(&mut cons, &mem, &peer) {
                Ok(None) => assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "a vanished producer not seen after 5 s"
                ),
                Err(Error::Disconnected) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        // Not before the period: the looks in between did not ask.
        assert!(start.elapsed() >= LIVENESS_PERIOD - Duration::from_millis(1));
    }

    #[test]
    fn a_polling_receiver_drains_what_a_gone_producer_published_before_it_says_disconnected() {
        let mem = Region::create(4096).unwrap();
        let mut cons = Consumer::new(&mem).unwrap();
        let gone = CountingPeer {
            alive: Cell::new(false),
            asked: Cell::new(0),
        };
        let mut prod = Producer::new(&mem).unwrap();
        let msgs: [&[u8]; 2] = [&[7; 3], &[7; 5]];
        prod.send(&mem, &gone, Messages::Copy(&msgs), Until::Forever, false)
            .unwrap();
        let mut got = Vec::new();
        let end = loop {
            match cons.recv(&mem, &gone, |m| m.len(), Until::Now) {
                Ok(Some(n)) => got.push(n),
                other => break other,
            }
        };
        assert_eq!(got, [3, 5]);
        assert!(matches!(end, Err(Error::Disconnected)), "{end:?}");
    }

    /// A reader of the thread's total wait for a CPU that gives `values` (in ms) in turn,
    /// then `None`.
    fn waits(values: &[Option<u64>]) -> impl FnMut() -> Option<Duration> + '_ {
        let mut i = 0;
        move || {
            let v = values.get(i).copied().flatten();
            i += 1;
            v.map(Duration::from_millis)
        }
    }

    #[test]
    fn the_spin_policy_sleeps_at_once_for_a_while_after_its_thread_waits_for_a_cpu() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let every = CONTENTION_LOOK_EVERY.as_millis() as u64;
        let mut spin = Spin::default();
        // Totals in ms: 40 before the first look (a long-lived thread), then 3 and 6 more.
        let mut read = waits(&[Some(40), Some(43), Some(49), Some(50), Some(50)]);
        assert!(spin.allowed(ms(0), &mut read), "first look: 40 ms so far");
        assert!(spin.allowed(ms(every), &mut read), "3 ms is not contention");
        // Within a look's period of the last look: not read again.
        assert!(spin.allowed(ms(2 * every - 1), &mut read));
        assert!(spin.allowed(ms(2 * every), &mut read), "nor 9 ms in all");
        assert!(
            !spin.allowed(ms(3 * every), &mut read),
            "10 ms within the window: held"
        );
        let hold = CONTENDED_HOLD.as_millis() as u64;
        assert!(
            !spin.allowed(ms(3 * every + hold / 2), &mut read),
            "within the hold"
        );
        assert!(
            spin.allowed(ms(3 * every + hold), &mut read),
            "after the hold, with no new wait"
        );
        assert_eq!(read(), None, "exactly five reads: {spin:?}");
    }

    #[test]
    fn many_short_waits_are_not_contention() {
        // The kernel's own work: a preemption of 0.2 ms every look, for 2 s.
        let t0 = Instant::now();
        let every = CONTENTION_LOOK_EVERY.as_millis() as u64;
        let mut spin = Spin::default();
        let mut total = Duration::ZERO;
        for k in 0..(2000 / every) {
            total += Duration::from_micros(200);
            let now = t0 + Duration::from_millis(k * every);
            assert!(spin.allowed(now, || Some(total)), "look {k}: {spin:?}");
        }
    }

    #[test]
    fn waits_in_windows_apart_are_not_added_up() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let window = CONTENTION_WINDOW.as_millis() as u64;
        let mut spin = Spin::default();
        let mut read = waits(&[Some(0), Some(6), Some(12), Some(16)]);
        assert!(spin.allowed(ms(0), &mut read));
        assert!(spin.allowed(ms(10), &mut read), "6 ms");
        // The window (from the look at 0) is over: its 6 ms are not added to these 6.
        assert!(
            spin.allowed(ms(window + 5), &mut read),
            "6 ms in a new window"
        );
        // The new window began at the look at 10; this look is within it: 10 ms.
        assert!(!spin.allowed(ms(window + 10), &mut read), "10 ms: held");
    }

    #[test]
    fn a_window_ends_exactly_a_window_after_the_look_it_starts_at() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let window = CONTENTION_WINDOW.as_millis() as u64;
        let mut spin = Spin::default();
        let mut read = waits(&[Some(0), Some(5), Some(10), Some(12), Some(17)]);
        assert!(spin.allowed(ms(0), &mut read));
        assert!(spin.allowed(ms(5), &mut read), "5 ms, window from 0");
        // The window still holds a look exactly its length after its start...
        assert!(
            !spin.allowed(ms(window), &mut read),
            "10 ms at its last instant"
        );
        let mut spin = Spin::default();
        let mut read = waits(&[Some(0), Some(5), Some(10)]);
        assert!(spin.allowed(ms(0), &mut read));
        assert!(spin.allowed(ms(5), &mut read));
        // ... but not one a millisecond later: a new window from the last look (at 5).
        assert!(
            spin.allowed(ms(window + 1), &mut read),
            "5 ms in a new window"
        );
    }

    #[test]
    fn a_hold_doubles_while_the_contention_lasts_and_starts_over_once_it_is_gone() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let base = CONTENDED_HOLD.as_millis() as u64;
        let contended = CONTENDED_WAIT.as_millis() as u64;
        let mut spin = Spin::default();
        let mut total = 0;
        let mut read_at = |spin: &mut Spin, at: u64, waited: u64| {
            total += waited;
            spin.allowed(ms(at), || Some(Duration::from_millis(total)))
        };
        // Contended from the start: a window's worth of waiting seen at once holds for
        // the base.
        assert!(read_at(&mut spin, 0, 0));
        assert!(!read_at(&mut spin, 5, contended));
        assert!(!read_at(&mut spin, 4 + base, 0), "held for {base} ms");
        // Seen again right after the hold ended: twice as long, then four times.
        let mut end = 5 + base;
        let mut hold = base;
        for _ in 0..2 {
            assert!(read_at(&mut spin, end, 0), "spins once the hold is over");
            assert!(!read_at(&mut spin, end + 5, contended));
            hold *= 2;
            assert!(!read_at(&mut spin, end + 5 + hold - 1, 0), "held {hold} ms");
            end += 5 + hold;
        }
        // The hold is capped.
        for _ in 0..10 {
            assert!(read_at(&mut spin, end, 0));
            assert!(!read_at(&mut spin, end + 5, contended));
            hold = (hold * 2).min(CONTENDED_HOLD_MAX.as_millis() as u64);
            end += 5 + hold;
        }
        assert_eq!(hold, CONTENDED_HOLD_MAX.as_millis() as u64);
        assert!(read_at(&mut spin, end, 0), "the capped hold ended");
        // Gone for exactly a hold's length: that is not "soon after", the base again.
        let mut exact = Spin::default();
        let at = |spin: &mut Spin, t: u64, total: u64| {
            spin.allowed(ms(t), || Some(Duration::from_millis(total)))
        };
        assert!(at(&mut exact, 0, 0));
        assert!(!at(&mut exact, 5, contended), "held from 5 to {}", 5 + base);
        assert!(
            at(&mut exact, 5 + base + base - 5, contended),
            "spins again"
        );
        assert!(!at(&mut exact, 5 + 2 * base, 2 * contended), "held again");
        assert!(
            at(&mut exact, 5 + 3 * base, 2 * contended),
            "for the base: it began a hold's length after the last hold ended"
        );
        // Gone for longer than a hold: the next contention holds for the base again.
        let later = end + hold + 1;
        assert!(read_at(&mut spin, later, 0));
        assert!(!read_at(&mut spin, later + 5, contended));
        assert!(
            read_at(&mut spin, later + 5 + base, 0),
            "the base hold, not double"
        );
    }

    #[test]
    fn a_total_that_goes_down_starts_afresh() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut spin = Spin::default();
        // Moved to a thread that waited less: not a wait, and not a hold; then 9 ms more
        // of waiting is still under the mark, counted from the new thread's total.
        let mut read = waits(&[Some(500), Some(2), Some(6), Some(11)]);
        for k in 0..4 {
            assert!(spin.allowed(ms(5 * k), &mut read), "look {k}: {spin:?}");
        }
    }

    #[test]
    fn a_wait_spins_unless_the_policy_holds_then_it_looks_once() {
        // More than one round of 64 looks within the spin's 50 us; a thread preempted for
        // that long during its first round (a loaded machine) may make only 64, so a few
        // tries are allowed. A spin that ends after its first round fails them all.
        let most = (0..20)
            .map(|_| {
                let mut looks = 0;
                let mut spin = Spin::default();
                assert!(!spin.until(|| {
                    looks += 1;
                    false
                }));
                looks
            })
            .max();
        assert!(most > Some(64), "spun: at most {most:?} looks");

        let mut spin = Spin {
            hold_until: Some(Instant::now() + Duration::from_secs(3600)),
            ..Spin::default()
        };
        let mut looks = 0;
        assert!(!spin.until(|| {
            looks += 1;
            false
        }));
        assert_eq!(looks, 1, "held: one look, no spinning");
        assert!(spin.until(|| true));
    }

    #[test]
    fn the_spin_policy_keeps_what_it_knew_when_the_wait_cannot_be_read() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut spin = Spin::default();
        let mut read = waits(&[None, Some(5), None, Some(5), Some(15)]);
        assert!(spin.allowed(ms(0), &mut read));
        assert!(spin.allowed(ms(5), &mut read), "5 is the first total read");
        assert!(spin.allowed(ms(10), &mut read));
        assert!(spin.allowed(ms(15), &mut read), "still 5");
        assert!(!spin.allowed(ms(20), &mut read), "15: waited 10 ms");
    }

    #[test]
    fn a_wait_that_cannot_be_read_is_not_tried_again_before_the_look_period() {
        let t0 = Instant::now();
        let every = CONTENTION_LOOK_EVERY.as_millis() as u64;
        let mut spin = Spin::default();
        let mut tries = 0;
        for k in 0..(10 * every) {
            assert!(spin.allowed(t0 + Duration::from_millis(k), || {
                tries += 1;
                None
            }));
        }
        assert_eq!(tries, 10, "one try per {every} ms");
    }

    #[test]
    fn a_thread_sharing_its_core_with_a_spinning_one_is_seen_waiting_for_it() {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;

        let before = sched_getaffinity(Pid::from_raw(0)).unwrap();
        let Some(cpu) = (0..CpuSet::count()).find(|&c| before.is_set(c).unwrap_or(false)) else {
            panic!("this thread may run on no CPU");
        };
        let mut one = CpuSet::new();
        one.set(cpu).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                sched_setaffinity(Pid::from_raw(0), &one).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        sched_setaffinity(Pid::from_raw(0), &one).unwrap();
        let first = own_run_queue_wait().expect("/proc/thread-self/schedstat");
        let start = Instant::now();
        let mut now = first;
        // A whole contended window's worth, as a busy neighbour's time slices give.
        while now < first + CONTENDED_WAIT && start.elapsed() < Duration::from_secs(10) {
            std::hint::spin_loop();
            now = own_run_queue_wait().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        sched_setaffinity(Pid::from_raw(0), &before).unwrap();
        spinner.join().unwrap();
        assert!(
            now >= first + CONTENDED_WAIT,
            "waited {:?} for the CPU in 10 s beside a spinner on it",
            now - first
        );
    }
}
