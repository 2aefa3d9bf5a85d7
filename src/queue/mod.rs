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
//!   sequence number and CRC-32C, so a torn record is simply not there; the consumer's
//!   position lives in two checksummed header slots on different pages, written
//!   alternately, so a torn header write falls back to the other slot. With
//!   [`Durability::Sync`] the same holds across power loss: one `fdatasync` per push, batch
//!   or pop.
//! - **Locking done right** (DESIGN section 4): `flock` is held exclusively across each
//!   operation's read-validate-write(-sync); every acquisition re-reads and validates the
//!   on-disk state, because the last holder may have died mid-update; a handle notices it is
//!   in a new process after `fork` and reopens its own open file description (a shared one
//!   would make flock exclude nothing); threads sharing a handle are serialized by a mutex
//!   as well. Locks are never converted shared-to-exclusive (that is not atomic).
//! - **One owner, when that is all there is**: [`QueueConfig::exclusive`] holds the lock
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
pub mod storage;

pub use channel::{channel, QueueReceiver, QueueSender};

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use self::core::{initial_image, Consume, Core};
use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME_LEN;
use storage::{FileStorage, Storage};

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
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_message_len: DEFAULT_MAX_FRAME_LEN,
            durability: Durability::None,
            reclaim_over: 256 * 1024,
            exclusive: false,
        }
    }
}

impl QueueConfig {
    /// Messages up to 16 MiB, [`Durability::None`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest message accepted (and believed when read back).
    pub fn max_message_len(mut self, max: usize) -> Self {
        self.max_message_len = max.min(u32::MAX as usize);
        self
    }

    /// The configured maximum message length.
    pub fn get_max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// When a push or pop counts as done.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Space reclamation threshold (default 256 KiB): a drained queue whose records took
    /// more than this resets to the start of the file and truncates it; a queue whose
    /// consumed prefix exceeds this and twice its live records compacts them to the front.
    /// Lower means a smaller file and more copying.
    pub fn reclaim_over(mut self, bytes: u64) -> Self {
        self.reclaim_over = bytes;
        self
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
    /// handle from [`FileQueue::open_again`] or a [`channel`] (two handles) are refused.
    ///
    /// ```
    /// use ipcprop::queue::{FileQueue, QueueConfig};
    /// # let dir = std::env::temp_dir().join(format!("ipcprop-excl-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("jobs.queue");
    /// let q = FileQueue::open(&path, QueueConfig::new().exclusive(true))?;
    /// q.push(b"job 1")?;
    /// assert_eq!(q.pop()?.as_deref(), Some(&b"job 1"[..]));
    /// drop(q); // releases the lock: shared handles may use the queue again
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Whether handles opened with this configuration own the queue while open.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
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
/// [`QueueConfig::exclusive`]).
#[derive(Debug)]
pub struct FileQueue {
    path: PathBuf,
    config: QueueConfig,
    inner: Mutex<Inner>,
}

fn io(op: &'static str, e: std::io::Error) -> Error {
    Error::Io { op, source: e }
}

/// A use of an exclusive handle ([`QueueConfig::exclusive`]) that cannot work.
pub(crate) fn exclusive_misuse(why: &str) -> Error {
    Error::Io {
        op: "exclusive queue handle",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string()),
    }
}

/// Creates the queue file at `path` if it does not exist: written in full under a temporary
/// name, synced, then linked into place (so the file at `path` is always initialized, and
/// of two racing creators one wins), then the directory is synced.
fn create_if_missing(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("create queue file", e))?;
        std::os::unix::fs::FileExt::write_all_at(&f, &initial_image(), 0)
            .map_err(|e| io("write queue header", e))?;
        f.sync_all().map_err(|e| io("fsync queue file", e))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {} // another creator won
            Err(e) => return Err(io("link queue file into place", e)),
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync queue directory", e))
}

impl FileQueue {
    /// Opens the queue at `path`, creating it (mode 0600) if it does not exist.
    pub fn open(path: impl AsRef<Path>, config: QueueConfig) -> Result<FileQueue> {
        let path = path.as_ref().to_path_buf();
        create_if_missing(&path)?;
        let inner = Self::open_inner(&path, &config)?;
        let q = FileQueue {
            path,
            config,
            inner: Mutex::new(inner),
        };
        if config.exclusive {
            // Taken once, for the handle's life; validate under it.
            let mut inner = q.inner.lock().unwrap_or_else(|e| e.into_inner());
            let file = inner.core.storage.file();
            file.lock().map_err(|e| io("flock(LOCK_EX)", e))?;
            let fd = file.as_raw_fd();
            inner.exclusive_slot = Some(exclusive::register(fd)?);
            inner.core.refresh()?;
            drop(inner);
            return Ok(q);
        }
        // Validate now, so a file that is not a queue is refused at open.
        q.with_lock(|_| Ok(()))?;
        Ok(q)
    }

    fn open_inner(path: &Path, config: &QueueConfig) -> Result<Inner> {
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io("open queue file", e))?;
        Ok(Inner {
            core: Core::new(FileStorage::new(file), config),
            gen: crate::forkgen::current(),
            inotify: None,
            holder: None,
            exclusive_slot: None,
        })
    }

    /// The file's path (as opened; it may since have been renamed or unlinked).
    pub fn path(&self) -> &Path {
        &self.path
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
        let fd = inner.core.storage.file().as_raw_fd();
        let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
        let fresh = Self::open_inner(&path, &self.config)?;
        drop(inner);
        let q = FileQueue {
            path,
            config: self.config,
            inner: Mutex::new(fresh),
        };
        q.with_lock(|_| Ok(()))?;
        // Keep the original path for messages; the descriptor path served to open it.
        Ok(FileQueue {
            path: self.path.clone(),
            ..q
        })
    }

    /// Runs `f` with the exclusive lock held and the state re-validated.
    fn with_lock<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
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
            return f(&mut inner);
        }
        if inner.gen != crate::forkgen::current() {
            // A child after fork: the inherited descriptor shares the parent's open file
            // description, and with it the parent's flock (and lease-holder lock). Get our
            // own, of the same file (through /proc/self/fd, so it works even if the path
            // was renamed or unlinked).
            let fd = inner.core.storage.file().as_raw_fd();
            *inner = Self::open_inner(Path::new(&format!("/proc/self/fd/{fd}")), &self.config)?;
        }
        let file = inner.core.storage.file();
        file.lock().map_err(|e| io("flock(LOCK_EX)", e))?;
        let result = inner.core.refresh().and_then(|()| f(&mut inner));
        let unlock = inner.core.storage.file().unlock();
        let value = result?;
        unlock.map_err(|e| io("flock(LOCK_UN)", e))?;
        Ok(value)
    }

    /// Appends one message.
    pub fn push(&self, msg: &[u8]) -> Result<()> {
        self.with_lock(|i| i.core.push(&[msg]))
    }

    /// Appends several messages with one write (and one fdatasync in sync mode).
    pub fn push_batch(&self, msgs: &[&[u8]]) -> Result<()> {
        self.with_lock(|i| i.core.push(msgs))
    }

    /// Removes and returns the oldest message, or `None` if the queue is empty.
    pub fn pop(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.pop_batch(1)?.pop())
    }

    /// Removes and returns up to `max` of the oldest messages, in order.
    pub fn pop_batch(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        self.with_lock(|i| {
            let (fd, me) = (i.core.storage.file().as_raw_fd(), i.holder);
            let alive = |h| holder_alive(fd, me, h);
            Ok(i.core
                .consume(max, Consume::Pop, &alive)?
                .into_iter()
                .map(|(_, m)| m)
                .collect())
        })
    }

    /// Returns the oldest message without removing it.
    pub fn peek(&self) -> Result<Option<Vec<u8>>> {
        self.with_lock(|i| {
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
            if let Some(m) = self.pop()? {
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
        self.with_lock(|i| {
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

    /// Sleeps until the file is written (by any process) or `timeout` passes. Watch first
    /// ([`FileQueue::pop_timeout`] shows the order that misses nothing).
    pub(crate) fn wait_for_push(&self, timeout: Duration) -> Result<()> {
        self.ensure_watch()?;
        self.wait_for_write(timeout)
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
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ino) = inner.inotify.as_ref() else {
            return Ok(());
        };
        let ms = timeout.as_micros().div_ceil(1000);
        let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
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
pub struct StorageQueue<S: Storage> {
    core: Core<S>,
    /// This handle's lease-holder id. With no locking there is no other live handle: every
    /// other id belongs to a handle that is gone.
    holder: u32,
}

impl<S: Storage> StorageQueue<S> {
    /// Opens the queue kept in `storage`, initializing an empty storage.
    pub fn open(mut storage: S, config: QueueConfig) -> Result<StorageQueue<S>> {
        if storage.len().map_err(|e| io("stat queue storage", e))? == 0 {
            storage
                .write_at(&initial_image(), 0)
                .map_err(|e| io("write queue header", e))?;
            storage.sync_data().map_err(|e| io("fdatasync", e))?;
        }
        static NEXT_HOLDER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let mut q = StorageQueue {
            core: Core::new(storage, &config),
            holder: NEXT_HOLDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
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
        self.core.refresh()?;
        let me = self.holder;
        let got = self.core.consume(max, Consume::Pop, &|h| h == me)?;
        Ok(got.into_iter().map(|(_, m)| m).collect())
    }

    /// Takes the oldest available message under a lease (see [`FileQueue::take`]). Leases
    /// of any other handle (an earlier one, now gone) count as expired.
    pub fn take(&mut self) -> Result<Option<Leased>> {
        self.core.refresh()?;
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
        self.core.refresh()?;
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
const HOLDERS: u32 = 4096;

fn holder_flock(kind: i32, id: u32) -> nix::libc::flock {
    nix::libc::flock {
        l_type: kind as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: HOLDER_BASE + i64::from(id),
        l_len: 1,
        l_pid: 0, // required for OFD locks
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
