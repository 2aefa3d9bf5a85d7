//! A persistent FIFO in one file, shared by any number of producer and consumer processes,
//! guarded by `flock(2)`, crash-safe.
//!
//! ```
//! use ipcprop::queue::{FileQueue, QueueConfig};
//! # let dir = std::env::temp_dir().join(format!("ipcprop-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("jobs.q");
//! let q = FileQueue::open(&path, QueueConfig::new())?;
//! q.push(b"first")?;
//! q.push_batch(&[b"second", b"third"])?;
//! assert_eq!(q.len()?, 3);
//! assert_eq!(q.pop()?.as_deref(), Some(&b"first"[..]));
//! assert_eq!(q.pop_batch(10)?, vec![b"second".to_vec(), b"third".to_vec()]);
//! assert_eq!(q.pop()?, None);
//! # drop(q); std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What it promises
//! - **Exactly once, in order**: a push that returned `Ok` is in the file (in the page cache
//!   with [`Durability::None`], on disk with [`Durability::Sync`]); a message `pop` returned
//!   is never returned again. Every process sees one FIFO.
//! - **At least once, if you prefer**: [`FileQueue::take`] hands out a message under a
//!   lease; [`FileQueue::ack`] removes it. Until then other consumers skip it; if the taker
//!   dies (even by SIGKILL) the lease expires and the message is delivered again, in its
//!   place. A lease lives exactly as long as the taker's open file description: an
//!   `F_OFD_SETLK` lock on a byte far past the end of the file names its holder.
//! - **Crash-safe**: a process killed at any instant (SIGKILL) loses no committed message and
//!   leaves nothing that is delivered corrupt or twice: each record carries its length,
//!   sequence number and CRC-32C, so a torn record is simply not there (the next handle to
//!   take the lock cuts its remains off); the consumer's position lives in two checksummed
//!   header slots on different pages, written alternately, so a torn header write falls
//!   back to the other slot. With [`Durability::Sync`] the same holds across power loss:
//!   one `fdatasync` per push, batch or pop.
//! - **Damage is an error, not a silent loss**: a damaged record followed by records of a
//!   later write (so the damaged ones were committed) makes every operation fail with
//!   [`Error::Corrupt`] naming the offset and sequence numbers, and nothing is written;
//!   [`FileQueue::salvage`] (or `ipcprop queue salvage`) copies every valid record to a new
//!   file and lists what was lost. A lost header slot is rewritten and reported
//!   ([`FileQueue::recoveries`], [`Recovery`]), with how many messages may be delivered
//!   again. Exactly which damage cannot be told from a crash, and what it costs, is in
//!   `docs/FORMAT.md` section 3.
//! - **A handle's limits are its own**: [`QueueConfig::with_max_message_len`] bounds what a
//!   handle pushes and reads back; a longer message another handle pushed is refused by this
//!   one with [`Error::MessageTooLarge`] and stays queued, never taken for the end of the
//!   queue.
//! - **Paths that cannot be redirected**: the queue file is opened with `O_NOFOLLOW` and
//!   must be a regular file, created mode 0600; an empty file is initialized as a new queue.
//! - **Locking done right**: `flock` is held exclusively across each
//!   operation's read-validate-write(-sync); every acquisition re-reads and validates the
//!   on-disk state, because the last holder may have died mid-update; a handle notices it is
//!   in a new process after `fork` and reopens its own open file description (a shared one
//!   would make flock exclude nothing); threads sharing a handle are serialized by a mutex
//!   as well. Locks are never converted shared-to-exclusive (that is not atomic).
//! - **One owner, when that is all there is**: [`QueueConfig::with_exclusive`] holds the lock
//!   for the handle's life and skips the per-operation locking and re-reading (a push is one
//!   `pwrite`); other handles wait until it is dropped. Same format, same crash safety.
//! - **Space comes back**: a drained queue resets to the start of its data area and
//!   truncates the file; a queue whose consumed prefix dwarfs its live records compacts them
//!   to the front. Layout: `docs/FORMAT.md` section 3.
//! - **Failures poison the handle**: after any write or sync error (the kernel may have
//!   dropped the dirty pages, PostgreSQL 2018) the handle refuses further use; reopen to
//!   re-derive the state from the file. An error from `pop` means the message may or may not
//!   have been consumed.
//!
//! Waiting ([`FileQueue::pop_timeout`]) uses inotify: an idle waiter sleeps in `poll` until
//! the file is written, and uses no CPU.

mod channel;
mod core;
mod exclusive;
mod format;
/// The bytes a record with a payload of `len` bytes takes in the file (for the benchmarks'
/// raw-write floor).
#[cfg(feature = "bench")]
pub(crate) use format::record_size;
mod salvage;
pub mod storage;

pub use channel::{channel, QueueReceiver, QueueSender};
pub use salvage::{SalvageReport, Skipped};

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use self::core::{Consume, Core};
use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME_LEN;
use storage::FileStorage;
#[cfg(feature = "testing")]
use storage::Storage;

/// When a push or pop counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Done once written to the file (the page cache): survives the death of any process,
    /// not power loss. No fsync.
    #[default]
    None,
    /// Done once on disk: one `fdatasync` per push, batch or pop. Survives power loss.
    Sync,
}

/// How to open a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    max_message_len: usize,
    durability: Durability,
    reclaim_over: u64,
    exclusive: bool,
    erase_consumed: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_message_len: DEFAULT_MAX_FRAME_LEN,
            durability: Durability::None,
            reclaim_over: 256 * 1024,
            exclusive: false,
            erase_consumed: false,
        }
    }
}

impl QueueConfig {
    /// Messages up to 16 MiB, [`Durability::None`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest message this handle pushes, and the longest it reads back (so the most
    /// it allocates for one message).
    ///
    /// It is this handle's setting, not the file's: other handles on the same file may
    /// have other maximums, and a record longer than this handle's maximum is still a
    /// committed message. Such a message at the head makes this handle's `pop`, `peek` and
    /// `take` fail with [`Error::MessageTooLarge`] and consume nothing; it stays queued for
    /// a handle that accepts it (a batch pop ends before it). Push refuses a longer message
    /// with the same error, before anything is written.
    pub fn with_max_message_len(mut self, max: usize) -> Self {
        self.max_message_len = max.min(u32::MAX as usize);
        self
    }

    /// The longest message a handle pushes and reads back
    /// ([`QueueConfig::with_max_message_len`]).
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// When a push or pop counts as done.
    pub fn with_durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// When a push or pop counts as done ([`QueueConfig::with_durability`]).
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Space reclamation threshold (default 256 KiB): a drained queue whose records took
    /// more than this resets to the start of the file and truncates it; a queue whose
    /// consumed prefix exceeds this and twice its live records compacts them to the front.
    /// Lower means a smaller file and more copying.
    pub fn with_reclaim_over(mut self, bytes: u64) -> Self {
        self.reclaim_over = bytes;
        self
    }

    /// The space reclamation threshold in bytes ([`QueueConfig::with_reclaim_over`]).
    pub fn reclaim_over(&self) -> u64 {
        self.reclaim_over
    }

    /// One handle owns the queue while it is open: [`FileQueue::open`] takes the file's
    /// `flock` (waiting for whoever holds it) and keeps it until the handle is dropped.
    /// Every other handle, in this or any process, waits in its next operation until then.
    ///
    /// In exchange an operation skips what makes a shared queue safe: taking and releasing
    /// the lock, and re-reading the header and the tail (nobody else can have changed them).
    /// A push is then one `pwrite`, a pop one `pread` and one `pwrite` (plus `fdatasync`
    /// with [`Durability::Sync`]). The file format, and so crash safety, are the same: a
    /// SIGKILL at any instant loses no acknowledged operation, and the kernel releases the
    /// lock with the dead process.
    ///
    /// The handle is for the process that opened it: used in a forked child it returns an
    /// error (the child shares the parent's lock; open the queue again there). A second
    /// handle from [`FileQueue::open_again`] or a [`channel`](fn@channel) (two handles) are
    /// refused.
    ///
    /// ```
    /// use ipcprop::queue::{FileQueue, QueueConfig};
    /// # let dir = std::env::temp_dir().join(format!("ipcprop-excl-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("jobs.queue");
    /// let q = FileQueue::open(&path, QueueConfig::new().with_exclusive(true))?;
    /// q.push(b"job 1")?;
    /// assert_eq!(q.pop()?.as_deref(), Some(&b"job 1"[..]));
    /// drop(q); // releases the lock: shared handles may use the queue again
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Whether handles opened with this configuration own the queue while open
    /// ([`QueueConfig::with_exclusive`]).
    pub fn exclusive(&self) -> bool {
        self.exclusive
    }

    /// Erase consumed messages from the file as the head passes them (default: off).
    ///
    /// Without it, a popped (or acknowledged) message's bytes stay in the file until a
    /// drained queue resets or a lagging one compacts, both of which truncate the file:
    /// anyone who can read the file can read recently consumed messages. With it, every
    /// operation that moves the head also zeroes the records it passed, after the header
    /// that consumed them is written (and synced, with [`Durability::Sync`]): one
    /// `fallocate(FALLOC_FL_PUNCH_HOLE)` (zeros written where the file system cannot
    /// punch holes). Messages consumed ahead of an older leased one are erased when the
    /// head passes them.
    ///
    /// This erases them from the file, not from the device: the file system may keep old
    /// copies of the blocks (journals, copy-on-write, SSD wear levelling) until they are
    /// reused. Encrypt the file system if that matters. A side effect: if a header slot is
    /// later lost to media damage, the records the older slot points to are gone, so the
    /// queue reports [`Error::Corrupt`] instead of delivering those messages again.
    pub fn with_erase_consumed(mut self, erase: bool) -> Self {
        self.erase_consumed = erase;
        self
    }

    /// Whether consumed messages are erased as the head passes them
    /// ([`QueueConfig::with_erase_consumed`]).
    pub fn erase_consumed(&self) -> bool {
        self.erase_consumed
    }
}

/// One of the queue file's two header slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotName {
    /// The slot at offset 0.
    A,
    /// The slot at offset 4096.
    B,
}

impl SlotName {
    /// The slot's offset in the file.
    pub fn offset(self) -> u64 {
        match self {
            SlotName::A => 0,
            SlotName::B => format::PAGE,
        }
    }
}

/// Something a handle found in the file and repaired when it took the lock: what a crash
/// (or media damage) left behind. [`FileQueue::recoveries`] lists them.
///
/// The handle that first takes the lock after the event repairs it, and only that handle
/// reports it: check [`FileQueue::recoveries`] after [`FileQueue::open`] if you need to
/// know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// One header slot was unusable (torn by a crash during a pop, or damaged since), so
    /// the other one was used and the lost one rewritten.
    ///
    /// If the lost slot held the newer header, the messages its last write consumed (one
    /// pop, batch pop or acknowledgement: the last consuming operation before the loss)
    /// may be delivered again, except as far as the records prove: every record carries
    /// how far the head was when it was written, so pushes made after that operation
    /// prove where it had moved the head, and the head is moved there (`advanced`).
    HeaderFallback {
        /// The slot that was unusable.
        damaged: SlotName,
        /// Why it was unusable.
        reason: String,
        /// Generation of the slot used.
        used_generation: u64,
        /// The records proved the lost slot was the newer one (it had moved the head).
        proven_newer: bool,
        /// Messages past the used slot's head that the records proved consumed, and that
        /// stay consumed.
        advanced: u64,
        /// At most this many messages may be delivered again (the messages queued after
        /// the recovered head; the true number is what the lost operation consumed).
        may_repeat_at_most: u64,
    },
    /// The header recorded leases on (or consumption of) messages past the end of the
    /// records: a crash or damage took records that a consumer had already seen. The
    /// entries were removed (else the next messages pushed would take their sequence
    /// numbers and count as leased or consumed). Leased ones are messages lost.
    LeasesPastTail {
        /// The sequence number the next message gets.
        next_seq: u64,
        /// Entries of messages taken under a lease and never acknowledged: lost.
        leased: u64,
        /// Entries of messages already consumed.
        consumed: u64,
    },
    /// Bytes after the last valid record that were not records (the torn remains of a
    /// write that a crash cut short, whose push was never acknowledged; or, if the media
    /// damaged the last records of the last write, those records) were cut off.
    TornTail {
        /// Where the valid records end and the cut bytes began.
        offset: u64,
        /// How many bytes were cut off.
        bytes: u64,
        /// The sequence number the next message gets.
        next_seq: u64,
    },
}

/// The parts of a handle that belong to one process.
#[derive(Debug)]
struct Inner {
    core: Core<FileStorage>,
    /// The process generation ([`crate::forkgen`]) this handle's descriptor was opened in.
    gen: u64,
    inotify: Option<Inotify>,
    /// This handle's lease-holder id: an OFD lock on byte `HOLDER_BASE + id` of the file,
    /// held while this open file description lives (taken at the first `take`).
    holder: Option<u32>,
    /// For an exclusive handle: its slot in the list of descriptors that forked children
    /// drop ([`exclusive`]).
    exclusive_slot: Option<usize>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Before the descriptor closes (the fields drop after this).
        if let Some(slot) = self.exclusive_slot.take() {
            exclusive::unregister(slot);
        }
    }
}

/// A handle on a queue file. Cheap to share between threads (`&self` methods, serialized);
/// usable after `fork` in both processes (except an exclusive handle: see
/// [`QueueConfig::with_exclusive`]).
#[derive(Debug)]
pub struct FileQueue {
    path: PathBuf,
    config: QueueConfig,
    inner: Mutex<Inner>,
}

fn io(op: &'static str, e: std::io::Error) -> Error {
    Error::Io { op, source: e }
}

/// A use of an exclusive handle ([`QueueConfig::with_exclusive`]) that its configuration
/// rules out.
pub(crate) fn exclusive_misuse(why: &str) -> Error {
    Error::config("QueueConfig::with_exclusive", why)
}

/// Opens the queue file at `path`, creating it (empty, mode 0600) if nothing is there.
/// Returns the file and whether this call created it.
///
/// The last component of `path` is not followed if it is a symbolic link (`O_NOFOLLOW`),
/// and the file must be a regular file: a link or a FIFO planted by someone who can write
/// into the directory cannot redirect the queue's writes.
fn open_or_create(path: &Path) -> Result<(File, bool)> {
    let nofollow = nix::libc::O_NOFOLLOW;
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow)
        .open(path);
    let (file, created) = match created {
        Ok(f) => (f, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nofollow)
                .open(path)
                .map_err(|e| {
                    if e.raw_os_error() == Some(nix::libc::ELOOP) {
                        not_a_queue_file(
                            path,
                            "is a symbolic link (queue files are opened with O_NOFOLLOW)",
                        )
                    } else {
                        io("open queue file", e)
                    }
                })?;
            (f, false)
        }
        Err(e) => return Err(io("create queue file", e)),
    };
    check_regular(&file, path)?;
    Ok((file, created))
}

fn not_a_queue_file(path: &Path, what: &str) -> Error {
    Error::Io {
        op: "open queue file",
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} {what}", path.display()),
        ),
    }
}

fn check_regular(file: &File, path: &Path) -> Result<()> {
    let kind = file
        .metadata()
        .map_err(|e| io("stat queue file", e))?
        .file_type();
    if !kind.is_file() {
        return Err(not_a_queue_file(
            path,
            &format!("is not a regular file ({kind:?})"),
        ));
    }
    Ok(())
}

/// Makes a new directory entry durable.
fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync queue directory", e))
}

impl Inner {
    fn new(file: File, config: &QueueConfig) -> Inner {
        Inner {
            core: Core::new(FileStorage::new(file), config),
            gen: crate::forkgen::current(),
            inotify: None,
            holder: None,
            exclusive_slot: None,
        }
    }
}

impl FileQueue {
    /// Opens the queue at `path`.
    ///
    /// If nothing is at `path`, a new queue file is created there (mode 0600); an existing
    /// file of 0 bytes (a temporary file just made, say) is initialized as an empty queue.
    /// Any other file must be a queue file: one that is not (or is damaged beyond what a
    /// crash leaves) is refused with [`Error::Corrupt`], one of another format version with
    /// [`Error::UnsupportedVersion`]. `path` must name a regular file and is not followed
    /// if it is a symbolic link.
    ///
    /// Opening validates the file and repairs what a crash left behind (see
    /// [`FileQueue::recoveries`]).
    pub fn open(path: impl AsRef<Path>, config: QueueConfig) -> Result<FileQueue> {
        let path = path.as_ref().to_path_buf();
        let (inner, created) = if config.exclusive {
            // Listed for the fork handler before the lock is taken (and before any fork
            // could copy the descriptor), so no child ever shares the lock.
            let ((file, created), slot) =
                exclusive::open_registered(|| open_or_create(&path), |(f, _)| f.as_raw_fd())?;
            let mut inner = Inner::new(file, &config);
            inner.exclusive_slot = Some(slot);
            (inner, created)
        } else {
            let (file, created) = open_or_create(&path)?;
            (Inner::new(file, &config), created)
        };
        let q = FileQueue {
            path,
            config,
            inner: Mutex::new(inner),
        };
        {
            let mut inner = q.inner.lock().unwrap_or_else(|e| e.into_inner());
            let file = inner.core.storage.file();
            lock_file(file)?;
            let result = inner
                .core
                .init_if_empty()
                .and_then(|_| inner.core.refresh());
            if !config.exclusive {
                let unlock = inner.core.storage.file().unlock();
                result?;
                unlock.map_err(|e| io("flock(LOCK_UN)", e))?;
            } else {
                // Taken once, for the handle's life.
                result?;
            }
        }
        if created {
            sync_parent_dir(&q.path)?;
        }
        Ok(q)
    }

    /// Copies every valid, unconsumed message of the queue file at `src`, in order, into a
    /// new queue file at `dst`, and reports what it could not read. `src` is only read
    /// (under its lock, so no other handle changes it meanwhile); `dst` must not exist.
    ///
    /// This is the way out of [`Error::Corrupt`]: a damaged queue is refused rather than
    /// read around, and salvage makes the choice explicit. It starts at the head of the
    /// usable header slot (skipping messages it records as consumed) and walks the
    /// records; where one is damaged it looks further (at every multiple of 8) for the next
    /// valid record with a higher sequence number, and lists the stretch it skipped and
    /// the sequence numbers lost there ([`SalvageReport::skipped`]). Messages taken under a
    /// lease and not acknowledged are copied. If neither header slot is usable, every
    /// valid record from the start of the data area is copied, and consumed ones may be
    /// among them (`header` is `None`). The new file's messages are numbered afresh.
    ///
    /// ```
    /// use ipcprop::queue::{FileQueue, QueueConfig};
    /// use std::os::unix::fs::FileExt;
    /// # let dir = std::env::temp_dir().join(format!("ipcprop-salvage-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let (path, saved) = (dir.join("jobs.q"), dir.join("jobs.saved.q"));
    /// let q = FileQueue::open(&path, QueueConfig::new())?;
    /// for job in [b"job 1", b"job 2", b"job 3"] {
    ///     q.push(job)?;
    /// }
    /// drop(q);
    /// // The media damages job 2 (a record is 24 header bytes and the payload, padded to 8).
    /// let f = std::fs::OpenOptions::new().write(true).open(&path)?;
    /// f.write_all_at(b"X", 8192 + 32 + 24)?;
    /// assert!(FileQueue::open(&path, QueueConfig::new()).is_err()); // Corrupt
    /// let report = FileQueue::salvage(&path, &saved)?;
    /// assert_eq!((report.copied, report.skipped.len()), (2, 1));
    /// assert_eq!(report.skipped[0].resumed_at_seq, Some(2)); // message 1 lost
    /// let q = FileQueue::open(&saved, QueueConfig::new())?;
    /// assert_eq!(q.pop_batch(10)?, vec![b"job 1".to_vec(), b"job 3".to_vec()]);
    /// # drop(q); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn salvage(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<SalvageReport> {
        let (src, dst) = (src.as_ref(), dst.as_ref());
        if std::fs::symlink_metadata(dst).is_ok() {
            return Err(Error::Io {
                op: "salvage queue",
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists: salvage writes a new file", dst.display()),
                ),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(src)
            .map_err(|e| io("open queue file", e))?;
        check_regular(&file, src)?;
        lock_file(&file)?;
        let mut storage = FileStorage::new(file);
        let out = FileQueue::open(
            dst,
            QueueConfig::new()
                .with_max_message_len(u32::MAX as usize)
                .with_durability(Durability::Sync),
        )?;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        let flush = |batch: &mut Vec<Vec<u8>>, bytes: &mut usize| {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let r = out.push_batch(&refs);
            batch.clear();
            *bytes = 0;
            r
        };
        let result = salvage::salvage(&mut storage, |m| {
            batch.push(m.to_vec());
            bytes += m.len();
            if bytes >= 1 << 20 || batch.len() >= 4096 {
                flush(&mut batch, &mut bytes)?;
            }
            Ok(())
        })
        .and_then(|report| {
            if !batch.is_empty() {
                flush(&mut batch, &mut bytes)?;
            }
            Ok(report)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(dst);
        }
        result
    }

    /// Reopens the file this handle's descriptor names, through `/proc/self/fd` (so it
    /// works even if the path was renamed or unlinked; that path is a link by design).
    fn reopen_own(fd: std::os::fd::RawFd, config: &QueueConfig) -> Result<Inner> {
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .map_err(|e| io("reopen queue file", e))?;
        Ok(Inner::new(file, config))
    }

    /// The file's path (as opened; it may since have been renamed or unlinked).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this handle found and repaired in the file since it was opened, oldest first
    /// (the latest 16): a header slot it fell back from, the torn remains of a write it
    /// cut off. Empty when every look found the file as a clean shutdown leaves it.
    ///
    /// Only the handle that first takes the lock after a crash (or after damage) sees it,
    /// since it repairs it; when that matters, check this right after [`FileQueue::open`].
    ///
    /// ```
    /// use ipcprop::queue::{FileQueue, QueueConfig, Recovery};
    /// use std::os::unix::fs::FileExt;
    /// # let dir = std::env::temp_dir().join(format!("ipcprop-rec-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("jobs.q");
    /// let q = FileQueue::open(&path, QueueConfig::new())?;
    /// q.push(b"job")?;
    /// drop(q);
    /// // A writer killed mid-write leaves a record header with no payload behind.
    /// let len = std::fs::metadata(&path)?.len();
    /// std::fs::OpenOptions::new().write(true).open(&path)?.write_all_at(&[1; 24], len)?;
    /// let q = FileQueue::open(&path, QueueConfig::new())?;
    /// assert!(matches!(q.recoveries()[..], [Recovery::TornTail { bytes: 24, .. }]));
    /// assert_eq!(q.pop()?.as_deref(), Some(&b"job"[..]));
    /// # drop(q); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recoveries(&self) -> Vec<Recovery> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.core.recoveries().to_vec()
    }

    /// Another handle on the same queue file, with its own open file description (as a
    /// second process would have), found through this handle's descriptor, so it works
    /// even if the path was renamed or unlinked.
    pub fn open_again(&self) -> Result<FileQueue> {
        if self.config.exclusive {
            return Err(exclusive_misuse(
                "an exclusive handle owns the queue: a second handle would wait for it forever",
            ));
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = Self::reopen_own(inner.core.storage.file().as_raw_fd(), &self.config)?;
        drop(inner);
        let q = FileQueue {
            path: self.path.clone(),
            config: self.config,
            inner: Mutex::new(fresh),
        };
        q.with_lock(|_| Ok(()))?;
        Ok(q)
    }

    /// Runs `f` with the exclusive lock held and the state re-validated.
    fn with_lock<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        self.locked(false, f)
    }

    /// [`FileQueue::with_lock`] for an operation that reads messages from the head: the
    /// state is re-validated with [`Core::refresh_reading`].
    fn with_lock_reading<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        self.locked(true, f)
    }

    fn locked<T>(&self, reading: bool, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        match self.with_lock_until(None, reading, f)? {
            Some(v) => Ok(v),
            // Without a deadline the wait for the lock only ends with the lock.
            None => Err(Error::Empty),
        }
    }

    /// [`FileQueue::with_lock`], giving up (`Ok(None)`, `f` not run) if the lock is still
    /// held by someone else at `deadline`: a process stopped (SIGSTOP) or slow inside a
    /// push must not hold a receive with a timeout past it.
    fn with_lock_until<T>(
        &self,
        deadline: Option<Instant>,
        reading: bool,
        f: impl FnOnce(&mut Inner) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.config.exclusive {
            if inner.gen != crate::forkgen::current() {
                return Err(exclusive_misuse(
                    "an exclusive handle inherited across fork belongs to the parent, which \
                     holds its lock: open the queue again in this process",
                ));
            }
            // The lock is held for the handle's life: nobody else has changed the file since
            // this handle's last operation, so its view needs no re-reading.
            inner.core.check_poison()?;
            return f(&mut inner).map(Some);
        }
        if inner.gen != crate::forkgen::current() {
            // A child after fork: the inherited descriptor shares the parent's open file
            // description, and with it the parent's flock (and lease-holder lock). Get our
            // own, of the same file (through /proc/self/fd, so it works even if the path
            // was renamed or unlinked).
            *inner = Self::reopen_own(inner.core.storage.file().as_raw_fd(), &self.config)?;
        }
        let file = inner.core.storage.file();
        let locked = match deadline {
            None => lock_file(file).map(|()| true)?,
            Some(d) => lock_file_until(file, d)?,
        };
        if !locked {
            return Ok(None);
        }
        let refreshed = if reading {
            inner.core.refresh_reading()
        } else {
            inner.core.refresh()
        };
        let result = refreshed.and_then(|()| f(&mut inner));
        let unlock = inner.core.storage.file().unlock();
        let value = result?;
        unlock.map_err(|e| io("flock(LOCK_UN)", e))?;
        Ok(Some(value))
    }

    /// Appends one message.
    pub fn push(&self, msg: &[u8]) -> Result<()> {
        self.with_lock(|i| i.core.push(&[msg]))
    }

    /// Appends several messages with one write (and one fdatasync in sync mode).
    pub fn push_batch(&self, msgs: &[&[u8]]) -> Result<()> {
        self.with_lock(|i| i.core.push(msgs))
    }

    /// [`FileQueue::push`], giving up if another handle holds the queue's lock until
    /// `deadline`: `Ok(false)` then, and nothing was written.
    pub(crate) fn push_before(&self, msg: &[u8], deadline: Instant) -> Result<bool> {
        Ok(self
            .with_lock_until(Some(deadline), false, |i| i.core.push(&[msg]))?
            .is_some())
    }

    /// Removes and returns the oldest message, or `None` if the queue is empty.
    ///
    /// "Nothing there" is `Ok(None)` here, and not [`Error::Empty`] as on the channel
    /// ([`QueueReceiver`]): a queue has no end of stream, so
    /// no message is its one outcome besides a message, and an `Option` says it without
    /// an error to match. The channel layer has a third outcome (every sender is gone) and
    /// follows `std::sync::mpsc` in spelling all but the message as errors.
    pub fn pop(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.pop_batch(1)?.pop())
    }

    /// [`FileQueue::pop`], giving up if another process holds the queue's lock until
    /// `deadline`: `Ok(None)` then, as for an empty queue (the caller's deadline has
    /// passed either way).
    pub(crate) fn pop_before(&self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        let popped = self.with_lock_until(Some(deadline), true, |i| pop_locked(i, 1))?;
        Ok(popped.and_then(|mut v| v.pop()))
    }

    /// Removes and returns up to `max` of the oldest messages, in order.
    pub fn pop_batch(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        self.with_lock_reading(|i| pop_locked(i, max))
    }

    /// Returns the oldest message without removing it.
    pub fn peek(&self) -> Result<Option<Vec<u8>>> {
        self.with_lock_reading(|i| {
            let (fd, me) = (i.core.storage.file().as_raw_fd(), i.holder);
            let alive = |h| holder_alive(fd, me, h);
            Ok(i.core
                .consume(1, Consume::Peek, &alive)?
                .pop()
                .map(|(_, m)| m))
        })
    }

    /// How many messages are queued.
    pub fn len(&self) -> Result<u64> {
        self.with_lock(|i| i.core.len())
    }

    /// True if no message is queued.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes and returns the oldest message, waiting up to `timeout` for one to be pushed
    /// (by any process). `None` on timeout. The wait sleeps on inotify: no busy spin.
    pub fn pop_timeout(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // Watch before looking, so a push between the look and the wait is not missed.
            self.ensure_watch()?;
            let popped = match deadline {
                Some(d) => self.pop_before(d)?,
                None => self.pop()?,
            };
            if let Some(m) = popped {
                return Ok(Some(m));
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Ok(None);
            }
            self.wait_for_write(left)?;
        }
    }

    /// Takes the oldest available message under a lease (at-least-once delivery): it stays
    /// in the queue, invisible to other consumers, until [`FileQueue::ack`] removes it. If
    /// this handle's process dies (or the handle is dropped) before acknowledging, the
    /// message becomes available again and is delivered to the next consumer. `None` if no
    /// message is available.
    ///
    /// ```
    /// use ipcprop::queue::{FileQueue, QueueConfig};
    /// # let dir = std::env::temp_dir().join(format!("ipcprop-lease-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let q = FileQueue::open(dir.join("jobs.q"), QueueConfig::new())?;
    /// q.push_batch(&[b"job 1", b"job 2"])?;
    /// let job = q.take()?.expect("a job");
    /// assert_eq!(job.message(), b"job 1");
    /// assert_eq!(q.pop()?.as_deref(), Some(&b"job 2"[..])); // job 1 is leased: skipped
    /// q.ack(&job)?; // done: job 1 is gone for good
    /// assert!(q.is_empty()?);
    /// # drop(q); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take(&self) -> Result<Option<Leased>> {
        self.with_lock_reading(|i| {
            let me = match i.holder {
                Some(h) => h,
                None => {
                    let h = acquire_holder(i.core.storage.file())?;
                    i.holder = Some(h);
                    // Leases still recorded under this id are an earlier holder's, now gone.
                    i.core.expire_holder(h)?;
                    h
                }
            };
            let fd = i.core.storage.file().as_raw_fd();
            let alive = |h| holder_alive(fd, Some(me), h);
            let mut got = i.core.consume(1, Consume::Take(me), &alive)?;
            Ok(got.pop().map(|(seq, msg)| Leased { seq, msg }))
        })
    }

    /// Like [`FileQueue::take`], waiting up to `timeout` for a message (on inotify).
    pub fn take_timeout(&self, timeout: Duration) -> Result<Option<Leased>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.ensure_watch()?;
            if let Some(m) = self.take()? {
                return Ok(Some(m));
            }
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Ok(None);
            }
            self.wait_for_write(left)?;
        }
    }

    /// Acknowledges a message taken with [`FileQueue::take`]: it is removed for good (and
    /// on disk before this returns, in sync mode). [`Error::LeaseLost`] if this handle does
    /// not hold that lease (already acknowledged, or taken by another handle).
    pub fn ack(&self, leased: &Leased) -> Result<()> {
        self.with_lock(|i| match i.holder {
            Some(h) => i.core.ack(leased.seq, h),
            None => Err(Error::LeaseLost { seq: leased.seq }),
        })
    }

    /// Sets the watch up if needed and forgets the writes it saw so far: a write after
    /// this wakes [`FileQueue::wait_for_write_or`]. Look for messages after it, then wait.
    pub(crate) fn arm_watch(&self) -> Result<()> {
        self.ensure_watch()?;
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ino) = inner.inotify.as_ref() {
            // One non-blocking read takes what is queued: the events are all alike (one
            // watch, one kind), and the kernel folds each into the one before it. One left
            // over would only wake a wait early, to a look that finds nothing.
            let _ = ino.read_events();
        }
        Ok(())
    }

    fn ensure_watch(&self) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.inotify.is_none() || inner.gen != crate::forkgen::current() {
            let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                .map_err(|e| Error::sys("inotify_init1", e))?;
            // Watch the file we have open, whatever its path is now.
            let fd = inner.core.storage.file().as_raw_fd();
            ino.add_watch(
                Path::new(&format!("/proc/self/fd/{fd}")),
                AddWatchFlags::IN_MODIFY,
            )
            .map_err(|e| Error::sys("inotify_add_watch", e))?;
            inner.inotify = Some(ino);
        }
        Ok(())
    }

    fn wait_for_write(&self, timeout: Duration) -> Result<()> {
        self.wait_for_write_or(timeout, None)
    }

    /// Sleeps until the file is written (by any process), `also` reports an event (any
    /// of `POLLERR`, `POLLHUP`, `POLLNVAL`: a peer's liveness pipe closing), or `timeout`
    /// passes; then forgets the writes seen. Watch first ([`FileQueue::pop_timeout`] shows
    /// the order that misses nothing).
    pub(crate) fn wait_for_write_or(
        &self,
        timeout: Duration,
        also: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ino) = inner.inotify.as_ref() else {
            return Ok(());
        };
        let ms = timeout.as_micros().div_ceil(1000);
        let mut fds = [
            PollFd::new(ino.as_fd(), PollFlags::POLLIN),
            PollFd::new(also.unwrap_or(ino.as_fd()), PollFlags::empty()),
        ];
        let fds = &mut fds[..if also.is_some() { 2 } else { 1 }];
        match nix::poll::poll(fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll(inotify)", e)),
        }
        // Drain the events; what changed is re-read under the lock anyway.
        while ino.read_events().is_ok_and(|ev| !ev.is_empty()) {}
        Ok(())
    }
}

/// The queue's logic over any [`Storage`], without locking or waiting: one process, one
/// handle. [`FileQueue`] is this plus `flock`, fork-awareness, a mutex and inotify. Here it
/// serves the crash simulations ([`storage::SimDisk`]), and anyone who keeps a queue in a
/// file of their own without sharing it.
///
/// ```
/// use ipcprop::queue::{storage::SimDisk, QueueConfig, StorageQueue};
///
/// let disk = SimDisk::new();
/// let mut q = StorageQueue::open(disk.clone(), QueueConfig::new())?;
/// q.push(b"survives a process crash")?;
/// let mut q = StorageQueue::open(disk.after_process_crash(), QueueConfig::new())?;
/// assert_eq!(q.pop()?.as_deref(), Some(&b"survives a process crash"[..]));
/// # Ok::<(), ipcprop::Error>(())
/// ```
#[derive(Debug)]
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub struct StorageQueue<S: Storage> {
    core: Core<S>,
    /// This handle's lease-holder id. With no locking there is no other live handle: every
    /// other id belongs to a handle that is gone.
    holder: u32,
}

#[cfg(feature = "testing")]
impl<S: Storage> StorageQueue<S> {
    /// Opens the queue kept in `storage`; an empty storage (0 bytes) is initialized as an
    /// empty queue, as [`FileQueue::open`] does with an empty file.
    pub fn open(storage: S, config: QueueConfig) -> Result<StorageQueue<S>> {
        let mut core = Core::new(storage, &config);
        core.init_if_empty()?;
        static NEXT_HOLDER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let mut q = StorageQueue {
            core,
            // Ids are 0..HOLDERS in the file; reusing one is harmless here (the leases
            // recorded under it are given back just below).
            holder: NEXT_HOLDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % HOLDERS,
        };
        q.core.refresh()?;
        // Leases recorded under this id belong to an earlier handle (ids restart with the
        // process): give them back.
        q.core.expire_holder(q.holder)?;
        Ok(q)
    }

    /// Appends one message.
    pub fn push(&mut self, msg: &[u8]) -> Result<()> {
        self.push_batch(&[msg])
    }

    /// Appends several messages with one write (and one fdatasync in sync mode).
    pub fn push_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        self.core.refresh()?;
        self.core.push(msgs)
    }

    /// Removes and returns the oldest message.
    pub fn pop(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(self.pop_batch(1)?.pop())
    }

    /// Removes and returns up to `max` of the oldest messages.
    pub fn pop_batch(&mut self, max: usize) -> Result<Vec<Vec<u8>>> {
        self.core.refresh_reading()?;
        let me = self.holder;
        let got = self.core.consume(max, Consume::Pop, &|h| h == me)?;
        Ok(got.into_iter().map(|(_, m)| m).collect())
    }

    /// Takes the oldest available message under a lease (see [`FileQueue::take`]). Leases
    /// of any other handle (an earlier one, now gone) count as expired.
    pub fn take(&mut self) -> Result<Option<Leased>> {
        self.core.refresh_reading()?;
        let me = self.holder;
        let mut got = self.core.consume(1, Consume::Take(me), &|h| h == me)?;
        Ok(got.pop().map(|(seq, msg)| Leased { seq, msg }))
    }

    /// Acknowledges a message taken with [`StorageQueue::take`].
    pub fn ack(&mut self, leased: &Leased) -> Result<()> {
        self.core.refresh()?;
        self.core.ack(leased.seq, self.holder)
    }

    /// Returns the oldest message without removing it.
    pub fn peek(&mut self) -> Result<Option<Vec<u8>>> {
        self.core.refresh_reading()?;
        let me = self.holder;
        Ok(self
            .core
            .consume(1, Consume::Peek, &|h| h == me)?
            .pop()
            .map(|(_, m)| m))
    }

    /// How many messages are queued.
    pub fn len(&mut self) -> Result<u64> {
        self.core.refresh()?;
        self.core.len()
    }

    /// True if no message is queued.
    pub fn is_empty(&mut self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// What this handle repaired when it took the state from the storage (see
    /// [`FileQueue::recoveries`]).
    pub fn recoveries(&self) -> Vec<Recovery> {
        self.core.recoveries().to_vec()
    }

    /// Gives the storage back.
    pub fn into_storage(self) -> S {
        self.core.storage
    }
}

/// A message taken under a lease ([`FileQueue::take`]), to acknowledge with
/// [`FileQueue::ack`] once processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    seq: u64,
    msg: Vec<u8>,
}

impl Leased {
    /// The message.
    pub fn message(&self) -> &[u8] {
        &self.msg
    }

    /// The message's sequence number in the queue.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The message, owned.
    pub fn into_message(self) -> Vec<u8> {
        self.msg
    }
}

/// Lease-holder locks live on bytes far past any real file size (locks may lie beyond the
/// end of a file), one byte per holder id.
const HOLDER_BASE: i64 = 1 << 40;
/// How many holder ids exist (concurrent taking handles per queue).
const HOLDERS: u32 = format::HOLDERS;

fn holder_flock(kind: i32, id: u32) -> nix::libc::flock {
    nix::libc::flock {
        l_type: kind as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: HOLDER_BASE + i64::from(id),
        l_len: 1,
        l_pid: 0, // required for OFD locks
    }
}

/// `flock(LOCK_EX)` on `file`, waiting for whoever holds it. A signal that interrupts the
/// wait (`EINTR`, from a handler installed without `SA_RESTART`) is not an error: the wait
/// goes on.
fn lock_file(file: &File) -> Result<()> {
    loop {
        match file.lock() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("flock(LOCK_EX)", e)),
        }
    }
}

/// Pops up to `max` messages, the lock held.
fn pop_locked(i: &mut Inner, max: usize) -> Result<Vec<Vec<u8>>> {
    let (fd, me) = (i.core.storage.file().as_raw_fd(), i.holder);
    let alive = |h| holder_alive(fd, me, h);
    Ok(i.core
        .consume(max, Consume::Pop, &alive)?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

/// `flock(LOCK_EX)` on `file`, trying without blocking until `deadline`: `Ok(false)` if
/// someone else still holds it then. Waits between tries grow from 50 us to 2 ms.
fn lock_file_until(file: &File, deadline: Instant) -> Result<bool> {
    let mut pause = Duration::from_micros(50);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("flock(LOCK_EX|LOCK_NB)", e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// Takes the first free holder id: a non-blocking OFD write lock on its byte. OFD locks
/// belong to this handle's open file description, are released when it closes (or its
/// process dies), and are independent of flock.
fn acquire_holder(file: &File) -> Result<u32> {
    for id in 0..HOLDERS {
        let fl = holder_flock(nix::libc::F_WRLCK, id);
        match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => return Ok(id),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => continue,
            Err(e) => return Err(Error::sys("fcntl(F_OFD_SETLK)", e)),
        }
    }
    Err(Error::Io {
        op: "acquire a lease-holder id",
        source: std::io::Error::other(format!("all {HOLDERS} holder ids are in use")),
    })
}

/// Whether lease holder `id` still exists: ours, or someone holds its lock byte. `fd` is
/// the queue file's descriptor, open for the duration of the call.
fn holder_alive(fd: std::os::fd::RawFd, me: Option<u32>, id: u32) -> bool {
    if me == Some(id) {
        return true;
    }
    // SAFETY: callers pass the descriptor of the file their handle owns and keeps open
    // across this call (it is only borrowed for one fcntl).
    let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fl = holder_flock(nix::libc::F_WRLCK, id);
    match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) => i32::from(fl.l_type) != nix::libc::F_UNLCK,
        // Cannot tell: assume alive, so nothing is delivered twice.
        Err(_) => true,
    }
}
