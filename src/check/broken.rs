//! Deliberately broken transports: a correct transport wrapped so that it misbehaves in one
//! precise way. The harness must catch each one and name it with the right
//! [`ViolationKind`](super::ViolationKind); a battery that passes a broken transport is a
//! bug in the battery.
//!
//! ```
//! use ipcprop::check::broken::{Broken, Defect};
//! use ipcprop::check::builtin::PipeTransport;
//! use ipcprop::check::{run_case, Plan, RunConfig, ViolationKind};
//!
//! let t = Broken::new(PipeTransport::default(), Defect::Drop(1));
//! let outcome = run_case(&t, &Plan::simple(1, vec![10, 20, 30]), &RunConfig::default())?;
//! assert_eq!(outcome.violations[0].kind(), ViolationKind::Lost);
//! # Ok::<(), ipcprop::Error>(())
//! ```

use std::time::Duration;

mod naive;
mod side;
pub use naive::{NaiveFlaw, NaiveReceiver, NaiveSender, NaiveStreamTransport};

use super::plan::Capabilities;
use super::Transport;
use crate::error::{Error, Result};
use crate::frame::FrameError;
use crate::transport::{Receiver, Sender, Wait};

/// One way to be wrong. `n` counts the messages each sending (or receiving) process has
/// handled, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Acknowledges message `n` but never sends it.
    Drop(usize),
    /// Sends message `n` twice.
    Duplicate(usize),
    /// Sends message `n` after message `n + 1`.
    Swap(usize),
    /// Flips one bit of message `n` (appends a byte to an empty one).
    FlipBit(usize),
    /// Sends only the first half of message `n`.
    Truncate(usize),
    /// The receiver blocks forever after `n` messages.
    HangAfter(usize),
    /// The receiver never reports Disconnected: it waits forever instead.
    IgnoreClose,
    /// The receiver reports Disconnected once; later receives say Empty (or time out, or
    /// block forever) as if the channel could still carry something.
    ForgetsDisconnect,
    /// The sender panics on message `n`.
    PanicOn(usize),
    /// The sender acknowledges messages at once but writes them only in groups of 4; what
    /// it holds is lost when its process dies (SIGKILL, or an exit without a flush).
    LoseUnflushed,
    /// A receive with a timeout gives up at once instead of waiting.
    EarlyTimeout,
    /// A receive with a timeout rounds it down to whole milliseconds (500 us becomes 0:
    /// it gives up at once).
    TimeoutRoundedDown,
    /// A receive with a timeout waits a whole second longer than asked.
    LateTimeout,
    /// `try_recv` never sees a message: only a receive that waits does.
    BlindTryRecv,
    /// The transport declares a maximum one byte below what its sender really accepts,
    /// so a message over the declared maximum is sent instead of refused.
    WrongLimit,
    /// A sender whose receiver is gone blocks forever instead of returning Disconnected.
    HangWhenReceiverGone,
    /// The same, but only for a message over 128 KiB (one that cannot sit in a pipe's
    /// buffer whole): the bug real crates had, which plans of small messages never show.
    HangOnLargeSendWhenReceiverGone,
    /// The senders share a lock in shared memory and hold it across every send (a
    /// spin lock with no owner recovery): a sender killed inside a send leaves it held, and
    /// every other sender waits forever.
    LockAcrossSend,
    /// The sending end keeps a descriptor made without `FD_CLOEXEC` (a programme it execs
    /// inherits it).
    LeakyDescriptor,
    /// The receiver reports Disconnected a second late (an end of stream found by a slow
    /// periodic check): a receiver waiting on a SIGKILLed sender waits that long.
    SlowDisconnect,
    /// The receiver sets aside as many bytes as a frame header claims before it checks the
    /// claim against its maximum (`vec![0; claimed]`, then the check): a forged header
    /// claiming gigabytes makes it fail to allocate, which aborts the process. Emulated over
    /// the correct receiver: when that refuses a length as too large, this one first
    /// allocates that length, as the buggy order would have. (The pages are never touched,
    /// so without a memory limit the allocation costs address space only.)
    AllocatesClaimedLength,
    /// Once the receiver is gone, every send returns `Ok` and the message goes nowhere: an
    /// endless silent success instead of Disconnected.
    SilentWhenReceiverGone,
    /// End of stream taken from a side channel: each sender process has a pipe on which it
    /// says goodbye when it ends cleanly, and the receiver, once it has drained what is
    /// there, says Disconnected as soon as any pipe hangs up without a goodbye. So the death
    /// of one sender (killed in the middle of a message, say) ends the stream for all,
    /// while the others are still sending.
    EndOnAnySenderDeath,
    /// The sender drops the last byte of a message whose length plus a 4-byte header is a
    /// power of two of at least 4 KiB (an encoder that mishandles a buffer filled exactly):
    /// only sizes such as 4092 or 65532 show it.
    PowerOfTwoMinusHeader,
    /// A `send_batch` that comes right after a single `send` loses its first message
    /// (acknowledged, never written: state the single send left behind): only a sender that
    /// mixes the two shows it.
    BatchAfterSend,
    /// A `try_send` of message 1 sends it and then reports [`Error::Full`] anyway (the room
    /// checked after the write instead of before): a caller that retries, as `Full`
    /// invites, sends it twice. Only a send with a deadline shows it.
    SentButFull,
    /// A `send_timeout` that finds no room gives up at once with [`Error::Timeout`] instead
    /// of waiting for room until its deadline (the deadline taken as already passed).
    SendTimeoutEarly,
}

impl Defect {
    /// The violation the harness must report for this defect.
    pub fn expected(&self) -> super::ViolationKind {
        use super::ViolationKind as K;
        match self {
            Defect::Drop(_) => K::Lost,
            Defect::Duplicate(_) => K::Duplicated,
            Defect::Swap(_) => K::Reordered,
            Defect::FlipBit(_) | Defect::Truncate(_) => K::Corrupted,
            Defect::HangAfter(_) | Defect::IgnoreClose => K::Hung,
            Defect::PanicOn(_) | Defect::ForgetsDisconnect => K::Crashed,
            Defect::LoseUnflushed => K::Lost,
            Defect::EarlyTimeout
            | Defect::TimeoutRoundedDown
            | Defect::LateTimeout
            | Defect::BlindTryRecv
            | Defect::HangWhenReceiverGone
            | Defect::HangOnLargeSendWhenReceiverGone
            | Defect::LockAcrossSend
            | Defect::SlowDisconnect => K::Hung,
            Defect::WrongLimit => K::Unexpected,
            Defect::LeakyDescriptor => K::Leaked,
            Defect::AllocatesClaimedLength => K::Crashed,
            Defect::SilentWhenReceiverGone => K::Lost,
            Defect::EndOnAnySenderDeath => K::EarlyDisconnect,
            Defect::PowerOfTwoMinusHeader => K::Corrupted,
            Defect::BatchAfterSend => K::Lost,
            Defect::SentButFull => K::Duplicated,
            Defect::SendTimeoutEarly => K::Hung,
        }
    }

    /// True for defects a plain plan (one sender, a blocking receiver that stays) shows;
    /// the others break a contract only a specific battery check exercises (timeouts,
    /// size limits, a receiver that leaves).
    pub fn shows_in_a_plain_plan(&self) -> bool {
        !matches!(
            self,
            Defect::EarlyTimeout
                | Defect::TimeoutRoundedDown
                | Defect::LateTimeout
                | Defect::BlindTryRecv
                | Defect::WrongLimit
                | Defect::HangWhenReceiverGone
                | Defect::HangOnLargeSendWhenReceiverGone
                | Defect::LockAcrossSend
                | Defect::LeakyDescriptor
                | Defect::SlowDisconnect
                | Defect::AllocatesClaimedLength
                | Defect::SilentWhenReceiverGone
                | Defect::EndOnAnySenderDeath
                | Defect::PowerOfTwoMinusHeader
                | Defect::BatchAfterSend
                | Defect::SentButFull
                | Defect::SendTimeoutEarly
        )
    }

    /// One of each defect, for tests and self-checks.
    pub const ALL: [Defect; 27] = [
        Defect::Drop(2),
        Defect::Duplicate(2),
        Defect::Swap(2),
        Defect::FlipBit(2),
        Defect::Truncate(2),
        Defect::HangAfter(2),
        Defect::IgnoreClose,
        Defect::ForgetsDisconnect,
        Defect::PanicOn(2),
        Defect::LoseUnflushed,
        Defect::EarlyTimeout,
        Defect::TimeoutRoundedDown,
        Defect::LateTimeout,
        Defect::BlindTryRecv,
        Defect::WrongLimit,
        Defect::HangWhenReceiverGone,
        Defect::HangOnLargeSendWhenReceiverGone,
        Defect::LockAcrossSend,
        Defect::LeakyDescriptor,
        Defect::SlowDisconnect,
        Defect::AllocatesClaimedLength,
        Defect::SilentWhenReceiverGone,
        Defect::EndOnAnySenderDeath,
        Defect::PowerOfTwoMinusHeader,
        Defect::BatchAfterSend,
        Defect::SentButFull,
        Defect::SendTimeoutEarly,
    ];
}

/// A transport with a [`Defect`].
#[derive(Debug, Clone)]
pub struct Broken<T> {
    inner: T,
    defect: Defect,
}

impl<T: Transport> Broken<T> {
    /// Wraps `inner` so that it has `defect`.
    pub fn new(inner: T, defect: Defect) -> Self {
        Broken { inner, defect }
    }
}

impl<T: Transport> Transport for Broken<T> {
    type Sender = BrokenSender<T::Sender>;
    type Receiver = BrokenReceiver<T::Receiver>;

    fn name(&self) -> String {
        format!("{}+{:?}", self.inner.name(), self.defect).to_lowercase()
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        if self.defect == Defect::WrongLimit {
            caps.max_message_len = caps.max_message_len.saturating_sub(1);
            let max = caps.max_message_len;
            caps.boundary_sizes.retain(|&s| s <= max);
        }
        caps
    }

    fn in_child_sender(&self, tx: &mut Self::Sender) -> Result<()> {
        if let Some(side) = tx.side.as_mut() {
            side.claim();
        }
        self.inner.in_child_sender(&mut tx.inner)
    }

    fn in_child_receiver(&self, rx: &mut Self::Receiver) -> Result<()> {
        self.inner.in_child_receiver(&mut rx.inner)
    }

    fn reattach(&self, rx: &Self::Receiver) -> Result<Option<Self::Receiver>> {
        Ok(self.inner.reattach(&rx.inner)?.map(|inner| BrokenReceiver {
            inner,
            defect: self.defect,
            count: 0,
            ended: false,
            side: None,
        }))
    }

    fn forge_header(&self, tx: &mut Self::Sender, claimed_len: u64) -> Result<bool> {
        self.inner.forge_header(&mut tx.inner, claimed_len)
    }

    fn pair(&self, senders: usize) -> Result<(Self::Sender, Self::Receiver)> {
        let (s, r) = self.inner.pair(senders)?;
        let lock = match self.defect {
            Defect::LockAcrossSend => Some(SharedLock::new()?),
            _ => None,
        };
        let leak = match self.defect {
            // A plain dup(2): the copy never has FD_CLOEXEC.
            Defect::LeakyDescriptor => {
                Some(nix::unistd::dup(std::io::stderr()).map_err(|e| Error::sys("dup", e))?)
            }
            _ => None,
        };
        let (side_tx, side_rx) = match self.defect {
            Defect::EndOnAnySenderDeath => {
                let (a, b) = side::side_channels(senders)?;
                (Some(a), Some(b))
            }
            _ => (None, None),
        };
        Ok((
            BrokenSender {
                side: side_tx,
                after_single: false,
                inner: s,
                defect: self.defect,
                count: 0,
                held: None,
                unflushed: Vec::new(),
                lock,
                _leak: leak,
            },
            BrokenReceiver {
                inner: r,
                defect: self.defect,
                count: 0,
                ended: false,
                side: side_rx,
            },
        ))
    }
}

/// The sending end of a [`Broken`] transport.
#[derive(Debug)]
pub struct BrokenSender<S> {
    inner: S,
    defect: Defect,
    count: usize,
    /// A message held back to be sent after the next one ([`Defect::Swap`]).
    held: Option<Vec<u8>>,
    /// Acknowledged messages not yet written ([`Defect::LoseUnflushed`]).
    unflushed: Vec<Vec<u8>>,
    /// The lock every sender holds across a send ([`Defect::LockAcrossSend`]).
    lock: Option<SharedLock>,
    /// A descriptor without `FD_CLOEXEC` ([`Defect::LeakyDescriptor`]).
    _leak: Option<std::os::fd::OwnedFd>,
    /// The goodbye pipes ([`Defect::EndOnAnySenderDeath`]).
    side: Option<side::SideSender>,
    /// The last call was a single send ([`Defect::BatchAfterSend`]).
    after_single: bool,
}

impl<S> Drop for BrokenSender<S> {
    fn drop(&mut self) {
        if let Some(side) = self.side.as_mut() {
            side.goodbye();
        }
    }
}

/// A spin lock in a page shared by every process forked after it was made, with no owner
/// recovery: the lock of [`Defect::LockAcrossSend`].
#[derive(Debug)]
struct SharedLock {
    page: std::ptr::NonNull<std::ffi::c_void>,
}

impl SharedLock {
    fn new() -> Result<SharedLock> {
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        let len = std::num::NonZeroUsize::new(4096).ok_or(Error::Disconnected)?;
        // SAFETY: a fresh anonymous mapping aliases no Rust object; it is unmapped only in
        // `drop`, after the last use through `word`.
        let page = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| Error::sys("mmap", e))?;
        Ok(SharedLock { page })
    }

    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the page is mapped, zero-filled, page-aligned and 4096 bytes long for the
        // life of `self`, so its first 4 bytes are a valid, aligned `AtomicU32`; every
        // process sharing the page touches those bytes only through atomics.
        unsafe { &*self.page.as_ptr().cast::<std::sync::atomic::AtomicU32>() }
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering;
        while self
            .word()
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::sleep(Duration::from_micros(20));
        }
        let out = f();
        self.word().store(0, Ordering::Release);
        out
    }
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length and is not used after this.
        let _ = unsafe { nix::sys::mman::munmap(self.page, 4096) };
    }
}

/// One message to the inner sender, waiting as `wait` says.
fn put<S: Sender>(inner: &mut S, msg: &[u8], wait: Wait) -> Result<()> {
    match wait {
        Wait::Forever => inner.send(msg),
        w => inner.send_wait(msg, w),
    }
}

impl<S: Sender> BrokenSender<S> {
    /// A send with the defect, waiting as `wait` says. A message the inner sender found no
    /// room for in time does not count as sent (the caller may send it again).
    fn send_defective(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        let (n, after_single) = (self.count, self.after_single);
        let result = self.send_counted(msg, wait, n);
        if matches!(&result, Err(e) if e.is_full() || e.is_timeout()) {
            (self.count, self.after_single) = (n, after_single);
        }
        result
    }

    fn send_counted(&mut self, msg: &[u8], wait: Wait, n: usize) -> Result<()> {
        self.count += 1;
        self.after_single = true;
        match self.defect {
            Defect::PowerOfTwoMinusHeader
                if msg.len() >= 4092 && (msg.len() + 4).is_power_of_two() =>
            {
                put(&mut self.inner, &msg[..msg.len() - 1], wait)
            }
            Defect::Drop(k) if k == n => Ok(()),
            Defect::SendTimeoutEarly if matches!(wait, Wait::For(_)) => {
                match put(&mut self.inner, msg, Wait::Never) {
                    Err(e) if e.is_full() => Err(wait.expired_send()),
                    other => other,
                }
            }
            Defect::SentButFull if n == 1 && wait == Wait::Never => {
                put(&mut self.inner, msg, wait)?;
                Err(Error::Full)
            }
            Defect::Duplicate(k) if k == n => {
                put(&mut self.inner, msg, wait)?;
                put(&mut self.inner, msg, wait)
            }
            Defect::Swap(k) if k == n => {
                self.held = Some(msg.to_vec());
                Ok(())
            }
            Defect::Swap(k) if k + 1 == n => {
                put(&mut self.inner, msg, wait)?;
                match self.held.take() {
                    Some(h) => put(&mut self.inner, &h, wait),
                    None => Ok(()),
                }
            }
            Defect::FlipBit(k) if k == n => {
                let mut m = msg.to_vec();
                match m.get_mut(msg.len() / 2) {
                    Some(b) => *b ^= 0x20,
                    None => m.push(0),
                }
                put(&mut self.inner, &m, wait)
            }
            Defect::Truncate(k) if k == n => put(&mut self.inner, &msg[..msg.len() / 2], wait),
            Defect::PanicOn(k) if k == n => panic!("deliberate panic on message {n}"),
            Defect::LoseUnflushed => {
                self.unflushed.push(msg.to_vec());
                if self.unflushed.len() == 4 {
                    for m in std::mem::take(&mut self.unflushed) {
                        put(&mut self.inner, &m, wait)?;
                    }
                }
                Ok(())
            }
            Defect::LockAcrossSend => match self.lock.as_ref() {
                Some(lock) => lock.with(|| put(&mut self.inner, msg, wait)),
                None => put(&mut self.inner, msg, wait),
            },
            Defect::HangWhenReceiverGone => match put(&mut self.inner, msg, wait) {
                Err(Error::Disconnected) => block_forever(),
                other => other,
            },
            Defect::HangOnLargeSendWhenReceiverGone => match put(&mut self.inner, msg, wait) {
                Err(Error::Disconnected) if msg.len() > 128 << 10 => block_forever(),
                other => other,
            },
            Defect::SilentWhenReceiverGone => match put(&mut self.inner, msg, wait) {
                Err(Error::Disconnected) => Ok(()),
                other => other,
            },
            _ => put(&mut self.inner, msg, wait),
        }
    }
}

impl<S: Sender> Sender for BrokenSender<S> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_defective(msg, Wait::Forever)
    }

    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        self.send_defective(msg, wait)
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        if self.defect == Defect::BatchAfterSend {
            let skip = usize::from(self.after_single && !msgs.is_empty());
            self.after_single = false;
            self.count += msgs.len();
            return self.inner.send_batch(&msgs[skip..]);
        }
        // Every other defect works message by message.
        msgs.iter().try_for_each(|m| self.send(m))
    }

    fn max_message_len(&self) -> usize {
        let max = self.inner.max_message_len();
        if self.defect == Defect::WrongLimit {
            max.saturating_sub(1)
        } else {
            max
        }
    }
}

/// The receiving end of a [`Broken`] transport.
#[derive(Debug)]
pub struct BrokenReceiver<R> {
    inner: R,
    defect: Defect,
    count: usize,
    /// Disconnected was reported once ([`Defect::ForgetsDisconnect`]).
    ended: bool,
    /// The goodbye pipes ([`Defect::EndOnAnySenderDeath`]).
    side: Option<side::SideWatch>,
}

/// [`Defect::EndOnAnySenderDeath`]'s receive: waits in slices of 10 ms, and between them,
/// once a sender's side pipe hung up without a goodbye, drains what is there and then says
/// Disconnected, whoever else is still sending.
fn recv_watching<R: Receiver, T>(
    inner: &mut R,
    side: &mut side::SideWatch,
    wait: Wait,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    let deadline = wait.deadline();
    let mut f = Some(f);
    loop {
        let slice = match deadline {
            _ if side.any_died() || wait == Wait::Never => Wait::Never,
            None => Wait::For(Duration::from_millis(10)),
            Some(d) => Wait::For(
                d.saturating_duration_since(std::time::Instant::now())
                    .min(Duration::from_millis(10)),
            ),
        };
        match inner.recv_with(slice, |m| f.take().map(|g| g(m))) {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => return Err(Error::Empty),
            Err(e) if e.is_not_ready() => {}
            Err(e) => return Err(e),
        }
        if side.any_died() {
            return Err(Error::Disconnected);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(wait.expired());
        }
    }
}

fn block_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

impl<R: Receiver> Receiver for BrokenReceiver<R> {
    fn recv_with<T>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        if self.defect == Defect::HangAfter(self.count) {
            block_forever();
        }
        let wait = match (self.defect, wait) {
            (Defect::TimeoutRoundedDown, Wait::For(d)) => {
                Wait::For(Duration::from_millis(d.as_millis() as u64))
            }
            (Defect::LateTimeout, Wait::For(d)) => Wait::For(d + Duration::from_secs(1)),
            (_, w) => w,
        };
        if let (Defect::BlindTryRecv, Wait::Never) = (self.defect, wait) {
            return Err(Error::Empty);
        }
        if let Some(side) = self.side.as_mut() {
            return recv_watching(&mut self.inner, side, wait, f);
        }
        if let (Defect::EarlyTimeout, Wait::For(d)) = (self.defect, wait) {
            return match self.inner.recv_with(Wait::Never, f) {
                Err(Error::Empty) => Err(Error::Timeout(d)),
                other => other,
            };
        }
        match self.inner.recv_with(wait, f) {
            Ok(v) => {
                self.count += 1;
                Ok(v)
            }
            Err(Error::Disconnected) if self.defect == Defect::IgnoreClose => block_forever(),
            Err(Error::Disconnected) if self.defect == Defect::SlowDisconnect && !self.ended => {
                self.ended = true;
                std::thread::sleep(Duration::from_secs(1));
                Err(Error::Disconnected)
            }
            Err(Error::Disconnected) if self.defect == Defect::ForgetsDisconnect => {
                if !self.ended {
                    self.ended = true;
                    return Err(Error::Disconnected);
                }
                match wait {
                    Wait::Forever => block_forever(),
                    w => Err(w.expired()),
                }
            }
            Err(e) => {
                if self.defect == Defect::AllocatesClaimedLength {
                    allocate_claimed(&e);
                }
                Err(e)
            }
        }
    }

    fn max_message_len(&self) -> usize {
        self.inner.max_message_len()
    }
}

/// [`Defect::AllocatesClaimedLength`]: if `refusal` refuses a claimed length as too large,
/// sets aside that many bytes first, as a receiver that allocates before it checks would (a
/// failure to allocate aborts the process; a claim over `isize::MAX` panics).
fn allocate_claimed(refusal: &Error) {
    let claimed = match refusal {
        Error::Frame(FrameError::TooLarge { len, .. }) => *len,
        Error::MessageTooLarge { len, .. } => *len as u64,
        _ => return,
    };
    let payload = vec![0u8; usize::try_from(claimed).unwrap_or(usize::MAX)];
    // Used, so the compiler cannot leave the allocation out.
    std::hint::black_box(&payload);
}
