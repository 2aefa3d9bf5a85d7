//! The queue's storage layer: every byte the persistent queue reads or writes goes through
//! the [`Storage`] trait.
//!
//! Two implementations:
//!
//! * [`FileStorage`], the real one, over a [`File`] with positioned I/O (`pread`/`pwrite`)
//!   and `fdatasync`.
//! * [`SimDisk`], an in-memory disk that models what survives a power loss and injects
//!   faults ([`Fault`]), so that crash safety can be tested by walking a crash point over
//!   every I/O call of a workload.
//!
//! # The disk model of [`SimDisk`]
//!
//! The disk keeps a *durable* image (what survives power loss), the list of *pending*
//! operations (`write_at` and `set_len` calls since the last successful `sync_data`, in
//! order), and the *current* image (durable with every pending operation applied in order),
//! which is what reads see. [`SimDisk::after_power_loss`] builds the image a reboot could
//! find: durable plus a random subset of the pending operations, applied in order, each
//! write whole or torn. [`SimDisk::after_process_crash`] builds the image a restarted
//! process finds when only the process died (the page cache survives): current.
//!
//! # Walking a crash point over a workload
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use ipcprop::queue::storage::{SimDisk, Storage};
//!
//! /// Appends a record, then flips a one-byte commit flag: the flag must never be durable
//! /// without the record.
//! fn workload(disk: &mut impl Storage) -> std::io::Result<()> {
//!     disk.write_at(b"record", 1)?;
//!     disk.sync_data()?;
//!     disk.write_at(&[1], 0)?;
//!     disk.sync_data()
//! }
//!
//! for crash_at in 0.. {
//!     let disk = SimDisk::from_bytes(vec![0]);
//!     disk.crash_after(crash_at);
//!     let result = workload(&mut disk.clone());
//!     if !disk.is_crashed() {
//!         result?; // the whole workload ran: every crash point has been tried
//!         break;
//!     }
//!     assert!(result.is_err());
//!     for seed in 0..64 {
//!         let image = disk.after_power_loss(seed).snapshot();
//!         if image.first() == Some(&1) {
//!             assert_eq!(image.get(1..7), Some(&b"record"[..]));
//!         }
//!     }
//! }
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

#[cfg(feature = "testing")]
use std::collections::BTreeMap;
#[cfg(feature = "testing")]
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
#[cfg(feature = "testing")]
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// `EIO`, the error of an injected I/O fault.
#[cfg(feature = "testing")]
const EIO: i32 = 5;
/// `ENOSPC`, the error of [`Fault::NoSpace`].
#[cfg(feature = "testing")]
const ENOSPC: i32 = 28;

/// The largest file a [`SimDisk`] holds: 1 GiB. A write ending past it, a `set_len` to more,
/// or a read starting past it fails with [`io::ErrorKind::InvalidInput`].
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub const SIM_MAX_LEN: u64 = 1 << 30;

/// All I/O the queue performs on its file.
///
/// Implemented by [`FileStorage`] (a real file) and [`SimDisk`] (a simulated disk with
/// power loss and fault injection), and forwarded through `&mut S` and `Box<S>`.
///
/// # Example
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use ipcprop::queue::storage::{SimDisk, Storage};
///
/// fn append(storage: &mut impl Storage, record: &[u8]) -> std::io::Result<u64> {
///     let at = storage.len()?;
///     storage.write_at(record, at)?;
///     storage.sync_data()?;
///     Ok(at)
/// }
///
/// let mut disk = SimDisk::new();
/// assert_eq!(append(&mut disk, b"one")?, 0);
/// assert_eq!(append(&mut disk, b"two")?, 3);
/// assert_eq!(disk.durable_snapshot(), b"onetwo");
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Storage {
    /// Reads up to `buf.len()` bytes at `off`; fewer only at end of file. Retries EINTR and
    /// short reads.
    ///
    /// Returns the number of bytes read: `buf.len()` unless the file ends first, `0` at or
    /// past the end.
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `off` (retrying short writes and EINTR); an error may leave
    /// any prefix written.
    ///
    /// Writing past the end extends the file, and the gap reads as zeros. An empty `buf`
    /// changes nothing.
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()>;

    /// Makes every write so far durable (fdatasync).
    ///
    /// After an error nothing can be assumed about the writes since the last successful
    /// sync: like Linux, an implementation may have dropped them (see [`Fault::SyncFails`]).
    fn sync_data(&mut self) -> io::Result<()>;

    /// Current length in bytes.
    fn len(&mut self) -> io::Result<u64>;

    /// Truncates or extends (zero-filled) to `len`.
    fn set_len(&mut self, len: u64) -> io::Result<()>;

    /// Whether the length is 0. Provided: one call to [`len`](Storage::len).
    fn is_empty(&mut self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Makes the `len` bytes at `off`, which lie within the file, read as zeros (the queue
    /// erases consumed records with it, [`QueueConfig::with_erase_consumed`]). Provided: writes
    /// zeros with [`write_at`](Storage::write_at), 64 KiB at a time; [`FileStorage`]
    /// punches a hole instead where the file system can, which also frees the space.
    ///
    /// [`QueueConfig::with_erase_consumed`]: super::QueueConfig::with_erase_consumed
    fn zero_range(&mut self, off: u64, len: u64) -> io::Result<()> {
        write_zeros(self, off, len)
    }
}

impl<S: Storage + ?Sized> Storage for &mut S {
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        (**self).read_at(buf, off)
    }

    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        (**self).write_at(buf, off)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        (**self).sync_data()
    }

    fn len(&mut self) -> io::Result<u64> {
        (**self).len()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }

    fn zero_range(&mut self, off: u64, len: u64) -> io::Result<()> {
        (**self).zero_range(off, len)
    }
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        (**self).read_at(buf, off)
    }

    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        (**self).write_at(buf, off)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        (**self).sync_data()
    }

    fn len(&mut self) -> io::Result<u64> {
        (**self).len()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }

    fn zero_range(&mut self, off: u64, len: u64) -> io::Result<()> {
        (**self).zero_range(off, len)
    }
}

/// Writes `len` zeros at `off`, 64 KiB at a time.
fn write_zeros<S: Storage + ?Sized>(s: &mut S, off: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(64 * 1024) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        let at = off
            .checked_add(done)
            .ok_or_else(|| invalid_input("offset out of range"))?;
        s.write_at(&zeros[..n as usize], at)?;
        done += n;
    }
    Ok(())
}

fn invalid_input(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

// ---------------------------------------------------------------------------------------
// FileStorage
// ---------------------------------------------------------------------------------------

/// [`Storage`] over a real file, with positioned reads and writes (`pread`/`pwrite`, so the
/// file offset is never used or moved) and `fdatasync`.
///
/// A file opened in append mode (`O_APPEND`) is refused at every `write_at` with
/// [`io::ErrorKind::InvalidInput`]: Linux's `pwrite` ignores the offset of such a file and
/// appends, which would silently put bytes in the wrong place.
///
/// # Example
///
/// ```
/// use ipcprop::queue::storage::{FileStorage, Storage};
/// use nix::sys::memfd::{memfd_create, MFdFlags};
/// use std::fs::File;
///
/// let file = File::from(memfd_create(c"queue", MFdFlags::empty())?);
/// let mut storage = FileStorage::new(file);
/// storage.write_at(b"hello", 0)?;
/// storage.sync_data()?;
/// let mut buf = [0; 8];
/// assert_eq!(storage.read_at(&mut buf, 0)?, 5);
/// assert_eq!(&buf[..5], b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    append: bool,
}

impl FileStorage {
    /// Wraps `file`, which must be open for reading (and for writing, for the writing
    /// calls).
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{FileStorage, Storage};
    /// use nix::sys::memfd::{memfd_create, MFdFlags};
    /// use std::fs::File;
    ///
    /// let mut storage = FileStorage::new(File::from(memfd_create(c"q", MFdFlags::empty())?));
    /// assert_eq!(storage.len()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(file: File) -> Self {
        // If the flags cannot be read, the kernel does not know this descriptor either and
        // every call will fail on its own.
        let append = fcntl(&file, FcntlArg::F_GETFL)
            .map(|flags| OFlag::from_bits_truncate(flags).contains(OFlag::O_APPEND))
            .unwrap_or(false);
        Self { file, append }
    }

    /// The file, e.g. for `flock` on its descriptor.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::FileStorage;
    /// use nix::sys::memfd::{memfd_create, MFdFlags};
    /// use std::fs::File;
    ///
    /// let storage = FileStorage::new(File::from(memfd_create(c"q", MFdFlags::empty())?));
    /// assert_eq!(storage.file().metadata()?.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the file back.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{FileStorage, Storage};
    /// use nix::sys::memfd::{memfd_create, MFdFlags};
    /// use std::fs::File;
    ///
    /// let mut storage = FileStorage::new(File::from(memfd_create(c"q", MFdFlags::empty())?));
    /// storage.write_at(b"abc", 0)?;
    /// let file: File = storage.into_file();
    /// assert_eq!(file.metadata()?.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_file(self) -> File {
        self.file
    }
}

/// Checks that `len` bytes at `off` stay within the offsets a file can have (`off_t`).
fn check_file_range(off: u64, len: usize) -> io::Result<()> {
    let len = u64::try_from(len).map_err(|_| invalid_input("buffer too large"))?;
    match off.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(invalid_input("offset out of range")),
    }
}

impl Storage for FileStorage {
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        check_file_range(off, buf.len())?;
        let mut done = 0;
        while let Some(rest) = buf.get_mut(done..) {
            if rest.is_empty() {
                break;
            }
            // `done <= buf.len()`, and `off + buf.len()` was checked not to overflow.
            match self.file.read_at(rest, off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        check_file_range(off, buf.len())?;
        if self.append {
            return Err(invalid_input(
                "file is in append mode: positioned writes would append",
            ));
        }
        let mut done = 0;
        while let Some(rest) = buf.get(done..) {
            if rest.is_empty() {
                break;
            }
            match self.file.write_at(rest, off + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "pwrite wrote nothing",
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if len > i64::MAX as u64 {
            return Err(invalid_input("length out of range"));
        }
        self.file.set_len(len)
    }

    /// Punches a hole (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`): the bytes
    /// read as zeros and their blocks go back to the file system. Where the file system
    /// cannot punch holes, writes zeros.
    fn zero_range(&mut self, off: u64, len: u64) -> io::Result<()> {
        let (Ok(o), Ok(l)) = (i64::try_from(off), i64::try_from(len)) else {
            return Err(invalid_input("range out of range"));
        };
        if len == 0 {
            return Ok(());
        }
        use nix::fcntl::FallocateFlags;
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        loop {
            match nix::fcntl::fallocate(&self.file, flags, o, l) {
                Ok(()) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS) => break,
                Err(e) => return Err(e.into()),
            }
        }
        write_zeros(self, off, len)
    }
}

// ---------------------------------------------------------------------------------------
// SimDisk
// ---------------------------------------------------------------------------------------

/// A fault [`SimDisk::inject`] makes one I/O call suffer.
///
/// | fault | `write_at` | `sync_data` | any other call |
/// | --- | --- | --- | --- |
/// | [`ShortWriteThenError`](Fault::ShortWriteThenError) | writes a nonempty proper prefix, then `EIO` | `EIO` | `EIO` |
/// | [`NoSpace`](Fault::NoSpace) | `ENOSPC`, nothing written | `EIO` | `EIO` |
/// | [`Io`](Fault::Io) | `EIO`, nothing written | `EIO`, nothing synced or dropped | `EIO`, nothing done |
/// | [`SyncFails`](Fault::SyncFails) | `EIO` | `EIO`, unsynced writes dropped | `EIO` |
///
/// A fault at a call of a kind it does not apply to behaves as [`Fault::Io`].
///
/// # Example
///
/// ```
/// use ipcprop::queue::storage::{Fault, SimDisk, Storage};
///
/// let mut disk = SimDisk::new();
/// disk.inject(0, Fault::NoSpace);
/// let err = disk.write_at(b"x", 0).unwrap_err();
/// assert_eq!(err.raw_os_error(), Some(28)); // ENOSPC
/// assert_eq!(disk.snapshot(), b"");
/// ```
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// On `write_at`: writes a nonempty proper prefix of the buffer (its length chosen
    /// pseudo-randomly from the call's number), then fails with `EIO`. A buffer of 0 or 1
    /// bytes has no nonempty proper prefix: nothing is written.
    ShortWriteThenError,
    /// On `write_at`: fails with `ENOSPC` (raw OS error 28), nothing written.
    NoSpace,
    /// On any call: fails with `EIO` having done nothing (a `sync_data` neither syncs nor
    /// drops anything: the pending writes stay pending).
    Io,
    /// On `sync_data`: fails with `EIO` and, like Linux after a failed `fsync` (PostgreSQL's
    /// "fsyncgate"), drops the dirty data: every write since the last successful sync is
    /// gone, from what reads see too (the current image is reset to the durable one).
    SyncFails,
}

/// An operation not yet durable. Offsets and lengths were checked against [`SIM_MAX_LEN`].
#[cfg(feature = "testing")]
#[derive(Debug, Clone)]
enum Pending {
    Write { off: usize, data: Vec<u8> },
    SetLen(usize),
}

#[cfg(feature = "testing")]
impl Pending {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Pending::Write { off, data } => write_into(image, *off, data),
            Pending::SetLen(len) => image.resize(*len, 0),
        }
    }
}

/// Writes `data` at `off`, zero-filling any gap; an empty `data` changes nothing.
#[cfg(feature = "testing")]
fn write_into(image: &mut Vec<u8>, off: usize, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let end = off.saturating_add(data.len());
    if image.len() < end {
        image.resize(end, 0);
    }
    if let Some(dst) = image.get_mut(off..end) {
        dst.copy_from_slice(data);
    }
}

#[cfg(feature = "testing")]
#[derive(Debug, Default)]
struct State {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    faults: BTreeMap<u64, Fault>,
}

#[cfg(feature = "testing")]
impl State {
    /// Counts a call and decides its fate: `Err` if the process is dead, else the fault (if
    /// any) injected at it, with the call's number.
    fn begin(&mut self) -> io::Result<(u64, Option<Fault>)> {
        let index = self.ops;
        self.ops = self.ops.saturating_add(1);
        let fault = self.faults.remove(&index);
        if self.crashed || self.crash_at.is_some_and(|n| index >= n) {
            self.crashed = true;
            return Err(io::Error::other("simulated power loss"));
        }
        Ok((index, fault))
    }

    fn push(&mut self, op: Pending) {
        op.apply(&mut self.current);
        self.pending.push(op);
    }
}

/// Checks that `len` bytes at `off` end within [`SIM_MAX_LEN`]; returns them as `usize`.
#[cfg(feature = "testing")]
fn sim_range(off: u64, len: usize) -> io::Result<(usize, usize)> {
    let len64 = u64::try_from(len).map_err(|_| invalid_input("buffer too large"))?;
    match off.checked_add(len64) {
        Some(end) if end <= SIM_MAX_LEN => {
            let off = usize::try_from(off).map_err(|_| invalid_input("offset out of range"))?;
            Ok((off, len))
        }
        _ => Err(invalid_input("offset out of range for the simulated disk")),
    }
}

#[cfg(feature = "testing")]
fn eio() -> io::Error {
    io::Error::from_raw_os_error(EIO)
}

/// SplitMix64: a tiny deterministic generator, enough for choosing what a crash keeps.
#[cfg(feature = "testing")]
#[derive(Debug, Clone)]
struct SplitMix64(u64);

#[cfg(feature = "testing")]
impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, or 0 if `n == 0`.
    fn below(&mut self, n: usize) -> usize {
        match u64::try_from(n) {
            // The remainder is below `n`, so it fits in `usize`.
            Ok(n) if n > 0 => (self.next_u64() % n) as usize,
            _ => 0,
        }
    }

    /// `true` with probability 1/`n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// An in-memory disk that models power loss and injects faults; each clone is a handle to
/// the same disk, and implements [`Storage`].
///
/// See the [module documentation](self) for the model and for walking a crash point over a
/// workload. Every I/O call through any handle is numbered from 0 in the order served: these
/// numbers are what [`ops`](SimDisk::ops) counts, and what [`crash_after`](SimDisk::crash_after)
/// and [`inject`](SimDisk::inject) refer to. The inspection and construction methods
/// (`snapshot`, `after_power_loss`, ...) are not I/O calls.
///
/// Files are limited to [`SIM_MAX_LEN`] bytes.
///
/// # Example
///
/// ```
/// use ipcprop::queue::storage::{SimDisk, Storage};
///
/// let disk = SimDisk::new();
/// let mut handle = disk.clone();
/// handle.write_at(b"durable", 0)?;
/// handle.sync_data()?;
/// handle.write_at(b"pending", 7)?;
/// assert_eq!(disk.snapshot(), b"durablepending");
/// assert_eq!(disk.durable_snapshot(), b"durable");
/// assert_eq!(disk.after_process_crash().snapshot(), b"durablepending");
/// assert_eq!(disk.ops(), 3);
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

#[cfg(feature = "testing")]
impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimDisk")
            .field("durable_len", &s.durable.len())
            .field("current_len", &s.current.len())
            .field("pending", &s.pending.len())
            .field("ops", &s.ops)
            .field("crash_at", &s.crash_at)
            .field("crashed", &s.crashed)
            .field("faults", &s.faults)
            .finish()
    }
}

#[cfg(feature = "testing")]
impl SimDisk {
    /// An empty disk: no bytes, nothing pending, no crash point, no faults.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// assert_eq!(disk.len()?, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk whose durable (and current) image is `bytes`.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::from_bytes(b"abc".to_vec());
    /// let mut buf = [0; 3];
    /// assert_eq!(disk.read_at(&mut buf, 0)?, 3);
    /// assert_eq!(&buf, b"abc");
    /// assert_eq!(disk.durable_snapshot(), b"abc");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let state = State {
            current: bytes.clone(),
            durable: bytes,
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; should a caller's panic poison it anyway,
        // the state is still consistent (every mutation completes before unlocking).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current image: what reads see (durable plus every pending operation).
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.write_at(b"x", 2)?;
    /// assert_eq!(disk.snapshot(), [0, 0, b'x']);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().current.clone()
    }

    /// The durable image: what is certain to survive a power loss.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.write_at(b"x", 0)?;
    /// assert_eq!(disk.durable_snapshot(), b"");
    /// disk.sync_data()?;
    /// assert_eq!(disk.durable_snapshot(), b"x");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn durable_snapshot(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    /// How many operations (`write_at` and `set_len` calls) are pending: made since the
    /// last successful `sync_data`, so not yet durable.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.write_at(b"x", 0)?;
    /// disk.set_len(4)?;
    /// assert_eq!(disk.pending(), 2);
    /// disk.sync_data()?;
    /// assert_eq!(disk.pending(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// The number of I/O calls made so far through any handle (`read_at`, `write_at`,
    /// `sync_data`, `len` and `set_len` count one each), including calls that failed.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.write_at(b"x", 0)?;
    /// disk.len()?;
    /// assert_eq!(disk.ops(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Sets the crash point: the process dies after the disk has served `n` I/O calls in
    /// total, so the call numbered `n` (0-based) and every later one fail with
    /// [`io::ErrorKind::Other`], "simulated power loss", doing nothing.
    ///
    /// The count includes calls already made: if `n <= ops()`, the next call fails. Once a
    /// call has failed this way the disk stays dead, whatever crash point is set later; to
    /// go on, take [`after_power_loss`](Self::after_power_loss) or
    /// [`after_process_crash`](Self::after_process_crash).
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.crash_after(1);
    /// disk.write_at(b"a", 0)?; // call 0 is served
    /// assert!(disk.write_at(b"b", 1).is_err()); // call 1 is not
    /// assert!(disk.is_crashed());
    /// assert_eq!(disk.snapshot(), b"a");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn crash_after(&self, n: u64) {
        self.lock().crash_at = Some(n);
    }

    /// Whether the crash point has been hit: some call has failed with "simulated power
    /// loss". `false` if the workload ended before reaching it.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.crash_after(0);
    /// assert!(!disk.is_crashed()); // no call refused yet
    /// assert!(disk.len().is_err());
    /// assert!(disk.is_crashed());
    /// ```
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Makes the I/O call numbered `at_op` (0-based, counting every call as
    /// [`ops`](Self::ops) does) suffer `fault`; see [`Fault`] for what each does to each
    /// kind of call.
    ///
    /// A fault fires once. Injecting at a number already called does nothing; injecting
    /// twice at one number keeps the later fault. The crash point takes precedence: a call
    /// refused by it, or refused for an invalid argument, does nothing and its fault is
    /// discarded.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{Fault, SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.inject(1, Fault::SyncFails);
    /// disk.write_at(b"lost", 0)?; // call 0
    /// assert!(disk.sync_data().is_err()); // call 1: the write is dropped
    /// assert_eq!(disk.snapshot(), b"");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn inject(&self, at_op: u64, fault: Fault) {
        let mut s = self.lock();
        if at_op >= s.ops {
            s.faults.insert(at_op, fault);
        }
    }

    /// The disk a reboot after a power loss now could find: a new, independent disk (no
    /// crash point, no faults, call count 0) whose durable and current image is this
    /// disk's durable image with a pseudo-random subset of the pending operations applied
    /// in order, each write either whole or torn (a prefix of any length shorter than the
    /// whole, 0 included), each `set_len` either applied or not.
    ///
    /// `seed` picks the subset deterministically. The choices are spread so that every
    /// shape is tried often: about 1 seed in 8 keeps nothing, 1 in 8 keeps everything, 1 in
    /// 4 keeps an in-order prefix of the operations (the one after it torn), and the rest
    /// decide operation by operation (writes dropped, whole or torn with equal odds).
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.write_at(b"synced", 0)?;
    /// disk.sync_data()?;
    /// disk.write_at(b"SYNCED", 0)?;
    /// for seed in 0..100 {
    ///     let image = disk.after_power_loss(seed).snapshot();
    ///     assert_eq!(image.len(), 6);
    ///     // Each byte is old or new, and the new ones form a prefix.
    ///     let new = image.iter().zip(b"SYNCED").take_while(|(a, b)| a == b).count();
    ///     assert_eq!(&image[new..], &b"synced"[new..]);
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn after_power_loss(&self, seed: u64) -> SimDisk {
        let s = self.lock();
        let mut rng = SplitMix64(seed);
        let mut image = s.durable.clone();
        let n = s.pending.len();
        match rng.below(8) {
            // Nothing reached the disk.
            0 => {}
            // Everything did.
            1 => image.clone_from(&s.current),
            // In order: the first `k` whole, the next one torn.
            2 | 3 => {
                let k = rng.below(n + 1);
                for op in s.pending.iter().take(k) {
                    op.apply(&mut image);
                }
                if let Some(op) = s.pending.get(k) {
                    apply_torn(op, &mut image, &mut rng);
                }
            }
            // Operation by operation.
            _ => {
                for op in &s.pending {
                    match op {
                        Pending::Write { .. } => match rng.below(3) {
                            0 => {}
                            1 => op.apply(&mut image),
                            _ => apply_torn(op, &mut image, &mut rng),
                        },
                        Pending::SetLen(_) => {
                            if rng.one_in(2) {
                                op.apply(&mut image);
                            }
                        }
                    }
                }
            }
        }
        SimDisk::from_bytes(image)
    }

    /// Like [`after_power_loss`](SimDisk::after_power_loss), but as a disk that writes
    /// back in any order: each pending write lands as an arbitrary subset of its 512-byte
    /// sectors (aligned to file offsets), so a later part of a write may reach the disk
    /// while an earlier part does not, and each `set_len` lands or not. Pending operations
    /// are applied in order, each partly or not at all. A new, independent disk.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.write_at(&[0u8; 2048], 0)?;
    /// disk.sync_data()?;
    /// disk.write_at(&[1u8; 2048], 0)?;
    /// let images: Vec<Vec<u8>> = (0..64).map(|s| disk.after_power_loss_sectors(s).snapshot()).collect();
    /// for image in &images {
    ///     // Each sector is all old or all new.
    ///     assert!(image.chunks(512).all(|c| c.iter().all(|&b| b == c[0])));
    /// }
    /// // Some image keeps a later sector and loses an earlier one.
    /// assert!(images.iter().any(|i| i[0] == 0 && i[2047] == 1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn after_power_loss_sectors(&self, seed: u64) -> SimDisk {
        const SECTOR: usize = 512;
        let s = self.lock();
        let mut rng = SplitMix64(seed);
        let mut image = s.durable.clone();
        for op in &s.pending {
            match op {
                Pending::Write { off, data } => {
                    // Sector boundaries at multiples of 512 of the file offset.
                    let mut at = 0usize;
                    while at < data.len() {
                        let sector_end = ((off + at) / SECTOR + 1) * SECTOR - off;
                        let end = sector_end.min(data.len());
                        if rng.one_in(2) {
                            write_into(&mut image, off + at, &data[at..end]);
                        }
                        at = end;
                    }
                }
                Pending::SetLen(_) => {
                    if rng.one_in(2) {
                        op.apply(&mut image);
                    }
                }
            }
        }
        SimDisk::from_bytes(image)
    }

    /// The disk a restarted process finds after only the process crashed (the machine
    /// and its page cache survive): a new, independent disk whose durable and current image
    /// is this disk's current image.
    ///
    /// # Example
    ///
    /// ```
    /// use ipcprop::queue::storage::{SimDisk, Storage};
    ///
    /// let mut disk = SimDisk::new();
    /// disk.write_at(b"unsynced", 0)?;
    /// disk.crash_after(0);
    /// assert!(disk.len().is_err());
    /// let restarted = disk.after_process_crash();
    /// assert_eq!(restarted.durable_snapshot(), b"unsynced");
    /// assert!(!restarted.is_crashed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn after_process_crash(&self) -> SimDisk {
        SimDisk::from_bytes(self.snapshot())
    }
}

/// Applies a torn version of `op`: for a write, a prefix shorter than the whole (possibly
/// empty); a `set_len` cannot tear and is applied or not.
#[cfg(feature = "testing")]
fn apply_torn(op: &Pending, image: &mut Vec<u8>, rng: &mut SplitMix64) {
    match op {
        Pending::Write { off, data } => {
            let cut = rng.below(data.len());
            if let Some(prefix) = data.get(..cut) {
                write_into(image, *off, prefix);
            }
        }
        Pending::SetLen(_) => {
            if rng.one_in(2) {
                op.apply(image);
            }
        }
    }
}

#[cfg(feature = "testing")]
impl Storage for SimDisk {
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let mut s = self.lock();
        let (_, fault) = s.begin()?;
        let len64 = u64::try_from(buf.len()).map_err(|_| invalid_input("buffer too large"))?;
        if off > SIM_MAX_LEN || off.checked_add(len64).is_none() {
            return Err(invalid_input("offset out of range for the simulated disk"));
        }
        if fault.is_some() {
            return Err(eio());
        }
        let src = usize::try_from(off)
            .ok()
            .and_then(|off| s.current.get(off..))
            .unwrap_or(&[]);
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut s = self.lock();
        let (index, fault) = s.begin()?;
        let (off, len) = sim_range(off, buf.len())?;
        match fault {
            None => {
                if len > 0 {
                    s.push(Pending::Write {
                        off,
                        data: buf.to_vec(),
                    });
                }
                Ok(())
            }
            Some(Fault::ShortWriteThenError) => {
                if len >= 2 {
                    let cut = 1 + SplitMix64(index).below(len - 1);
                    if let Some(prefix) = buf.get(..cut) {
                        s.push(Pending::Write {
                            off,
                            data: prefix.to_vec(),
                        });
                    }
                }
                Err(eio())
            }
            Some(Fault::NoSpace) => Err(io::Error::from_raw_os_error(ENOSPC)),
            Some(Fault::Io | Fault::SyncFails) => Err(eio()),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.lock();
        let (_, fault) = s.begin()?;
        match fault {
            None => {
                let pending = std::mem::take(&mut s.pending);
                for op in &pending {
                    op.apply(&mut s.durable);
                }
                Ok(())
            }
            Some(Fault::SyncFails) => {
                s.pending.clear();
                let State {
                    durable, current, ..
                } = &mut *s;
                current.clone_from(durable);
                Err(eio())
            }
            Some(_) => Err(eio()),
        }
    }

    fn len(&mut self) -> io::Result<u64> {
        let mut s = self.lock();
        let (_, fault) = s.begin()?;
        if fault.is_some() {
            return Err(eio());
        }
        u64::try_from(s.current.len()).map_err(|_| invalid_input("length out of range"))
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        let (_, fault) = s.begin()?;
        let (len, _) = sim_range(len, 0)?;
        if fault.is_some() {
            return Err(eio());
        }
        s.push(Pending::SetLen(len));
        Ok(())
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;
    use std::fs::OpenOptions;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A fresh directory under the system temp dir, removed (with its contents) on drop,
    /// also when the test fails.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let unique = format!(
                "ipcprop-storage-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(unique);
            std::fs::create_dir(&path).expect("create temp dir");
            Self(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open_rw(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("open file")
    }

    fn read_all(storage: &mut impl Storage) -> Vec<u8> {
        let len = storage.len().expect("len");
        let mut buf = vec![0; usize::try_from(len).expect("small")];
        let n = storage.read_at(&mut buf, 0).expect("read");
        assert_eq!(n, buf.len());
        buf
    }

    fn is_power_loss(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Other && e.to_string() == "simulated power loss"
    }

    // ----- FileStorage --------------------------------------------------------------

    #[test]
    fn file_round_trip_in_temp_dir() {
        let dir_path;
        {
            let dir = TempDir::new("round-trip");
            dir_path = dir.path().to_path_buf();
            let path = dir.path().join("queue");
            let mut storage = FileStorage::new(open_rw(&path));
            assert_eq!(storage.len().unwrap(), 0);

            storage.write_at(b"hello", 0).unwrap();
            storage.write_at(b"world", 10).unwrap(); // gap of zeros
            storage.sync_data().unwrap();
            assert_eq!(storage.len().unwrap(), 15);
            assert_eq!(read_all(&mut storage), b"hello\0\0\0\0\0world");

            // Read past EOF is short; at or beyond EOF it reads nothing.
            let mut buf = [0xAA; 8];
            assert_eq!(storage.read_at(&mut buf, 12).unwrap(), 3);
            assert_eq!(&buf[..3], b"rld");
            assert_eq!(storage.read_at(&mut buf, 15).unwrap(), 0);
            assert_eq!(storage.read_at(&mut buf, 1000).unwrap(), 0);

            storage.set_len(3).unwrap();
            assert_eq!(read_all(&mut storage), b"hel");
            storage.set_len(6).unwrap();
            assert_eq!(read_all(&mut storage), b"hel\0\0\0");
            storage.sync_data().unwrap();

            // A large buffer round-trips whole.
            let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
            storage.write_at(&big, 7).unwrap();
            let mut back = vec![0; big.len()];
            assert_eq!(storage.read_at(&mut back, 7).unwrap(), big.len());
            assert_eq!(back, big);

            // The data is in the file, seen through another descriptor.
            drop(storage);
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk.len(), 7 + big.len());
            assert_eq!(&on_disk[..3], b"hel");
            assert!(dir_path.exists());
        }
        assert!(!dir_path.exists(), "temp dir left behind");
    }

    #[test]
    fn file_accessors_give_the_same_file() {
        let dir = TempDir::new("accessors");
        let mut storage = FileStorage::new(open_rw(&dir.path().join("f")));
        storage.write_at(b"abc", 0).unwrap();
        assert_eq!(storage.file().metadata().unwrap().len(), 3);
        let file = storage.into_file();
        let mut storage = FileStorage::new(file);
        assert_eq!(read_all(&mut storage), b"abc");
    }

    #[test]
    fn file_out_of_range_is_invalid_input() {
        let dir = TempDir::new("range");
        let mut storage = FileStorage::new(open_rw(&dir.path().join("f")));
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            kind(storage.write_at(b"x", u64::MAX)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(storage.write_at(b"xy", i64::MAX as u64)),
            io::ErrorKind::InvalidInput
        );
        let mut buf = [0; 4];
        assert_eq!(
            storage.read_at(&mut buf, u64::MAX).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(kind(storage.set_len(u64::MAX)), io::ErrorKind::InvalidInput);
        assert_eq!(storage.len().unwrap(), 0);
    }

    #[test]
    fn file_in_append_mode_refuses_writes() {
        let dir = TempDir::new("append");
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123").unwrap();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut storage = FileStorage::new(file);
        let err = storage.write_at(b"x", 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::read(&path).unwrap(), b"0123");
    }

    #[test]
    fn file_write_on_read_only_file_is_an_error() {
        let dir = TempDir::new("read-only");
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").unwrap();
        let mut storage = FileStorage::new(File::open(&path).unwrap());
        assert!(storage.write_at(b"x", 0).is_err());
        assert!(storage.set_len(0).is_err());
        assert_eq!(read_all(&mut storage), b"data");
    }

    // ----- SimDisk: basic model -----------------------------------------------------

    #[test]
    fn reads_see_pending_writes_and_sync_makes_them_durable() {
        let disk = SimDisk::from_bytes(b"0123456789".to_vec());
        let mut h = disk.clone();
        h.write_at(b"ab", 2).unwrap();
        h.write_at(b"XYZ", 3).unwrap(); // overlaps, applied in order
        assert_eq!(read_all(&mut h), b"01aXYZ6789");
        assert_eq!(disk.durable_snapshot(), b"0123456789");
        assert_eq!(disk.pending(), 2);

        h.sync_data().unwrap();
        assert_eq!(disk.durable_snapshot(), b"01aXYZ6789");
        assert_eq!(disk.snapshot(), b"01aXYZ6789");
        assert_eq!(disk.pending(), 0);
    }

    #[test]
    fn writes_past_end_zero_fill_and_reads_past_end_are_short() {
        let mut disk = SimDisk::new();
        disk.write_at(b"z", 4).unwrap();
        assert_eq!(disk.snapshot(), b"\0\0\0\0z");
        disk.write_at(b"", 100).unwrap(); // empty write changes nothing
        assert_eq!(disk.len().unwrap(), 5);
        assert_eq!(disk.pending(), 1);

        let mut buf = [7u8; 4];
        assert_eq!(disk.read_at(&mut buf, 3).unwrap(), 2);
        assert_eq!(&buf[..2], b"\0z");
        assert_eq!(buf[2..], [7, 7]); // untouched beyond what was read
        assert_eq!(disk.read_at(&mut buf, 5).unwrap(), 0);
        assert_eq!(disk.read_at(&mut buf, 1 << 20).unwrap(), 0);
        assert_eq!(disk.read_at(&mut [], 0).unwrap(), 0);
    }

    #[test]
    fn set_len_truncates_and_extends_with_zeros() {
        let mut disk = SimDisk::from_bytes(b"abcdef".to_vec());
        disk.set_len(2).unwrap();
        assert_eq!(disk.snapshot(), b"ab");
        disk.set_len(4).unwrap();
        assert_eq!(disk.snapshot(), b"ab\0\0");
        assert_eq!(disk.durable_snapshot(), b"abcdef");
        disk.sync_data().unwrap();
        assert_eq!(disk.durable_snapshot(), b"ab\0\0");
    }

    #[test]
    fn clones_share_one_disk() {
        let disk = SimDisk::new();
        let mut a = disk.clone();
        let mut b = disk.clone();
        a.write_at(b"a", 0).unwrap();
        b.write_at(b"b", 1).unwrap();
        let mut buf = [0; 2];
        a.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"ab");
        assert!(!b.is_empty().unwrap());
        assert!(SimDisk::new().is_empty().unwrap());
        assert_eq!(disk.ops(), 4);
    }

    #[test]
    fn storage_is_forwarded_through_references_and_boxes() {
        let disk = SimDisk::new();
        let mut boxed: Box<dyn Storage> = Box::new(disk.clone());
        boxed.write_at(b"x", 0).unwrap();
        let mut handle = disk.clone();
        let by_ref = &mut handle;
        assert_eq!(Storage::len(&mut &mut *by_ref).unwrap(), 1);
        assert_eq!(disk.ops(), 2);
    }

    // ----- SimDisk: power loss and process crash ------------------------------------

    #[test]
    fn power_loss_with_everything_synced_is_the_durable_image() {
        let mut disk = SimDisk::from_bytes(b"base".to_vec());
        disk.write_at(b"more data", 2).unwrap();
        disk.set_len(20).unwrap();
        disk.sync_data().unwrap();
        let durable = disk.durable_snapshot();
        for seed in 0..200 {
            let image = disk.after_power_loss(seed);
            assert_eq!(image.snapshot(), durable, "seed {seed}");
            assert_eq!(image.durable_snapshot(), durable, "seed {seed}");
        }
    }

    #[test]
    fn power_loss_keeps_untouched_bytes_and_reaches_both_extremes() {
        let durable: Vec<u8> = (0..64).collect();
        let mut disk = SimDisk::from_bytes(durable.clone());
        let writes: [(usize, &[u8]); 3] = [(4, b"AAAA"), (20, b"BBBBBBBB"), (40, b"CC")];
        for (off, data) in writes {
            disk.write_at(data, off as u64).unwrap();
        }
        let touched = |i: usize| writes.iter().any(|(o, d)| (*o..o + d.len()).contains(&i));
        let current = disk.snapshot();
        let (mut saw_all, mut saw_none) = (false, false);
        for seed in 0..200 {
            let image = disk.after_power_loss(seed).snapshot();
            assert_eq!(image.len(), durable.len(), "seed {seed}");
            for (i, byte) in image.iter().enumerate() {
                if !touched(i) {
                    assert_eq!(*byte, durable[i], "seed {seed}, byte {i}");
                } else {
                    assert!(*byte == durable[i] || *byte == current[i], "seed {seed}");
                }
            }
            saw_all |= image == current;
            saw_none |= image == durable;
        }
        assert!(saw_all, "no seed kept every pending write");
        assert!(saw_none, "no seed dropped every pending write");
    }

    #[test]
    fn power_loss_tears_writes_into_prefixes() {
        let mut disk = SimDisk::new();
        disk.write_at(b"0123456789", 0).unwrap();
        let mut lengths = std::collections::BTreeSet::new();
        for seed in 0..500 {
            let image = disk.after_power_loss(seed).snapshot();
            assert_eq!(image[..], b"0123456789"[..image.len()], "seed {seed}");
            lengths.insert(image.len());
        }
        // Every prefix length, whole and empty included, shows up.
        assert_eq!(lengths.len(), 11, "{lengths:?}");
    }

    #[test]
    fn power_loss_applies_set_len_or_not() {
        let mut disk = SimDisk::from_bytes(vec![1; 10]);
        disk.set_len(3).unwrap();
        let mut lengths = std::collections::BTreeSet::new();
        for seed in 0..200 {
            lengths.insert(disk.after_power_loss(seed).snapshot().len());
        }
        assert_eq!(lengths.into_iter().collect::<Vec<_>>(), [3, 10]);
    }

    #[test]
    fn power_loss_image_is_a_fresh_independent_disk() {
        let disk = SimDisk::new();
        disk.inject(5, Fault::Io);
        let mut h = disk.clone();
        h.write_at(b"abc", 0).unwrap();
        h.sync_data().unwrap();
        disk.crash_after(2);
        assert!(h.write_at(b"x", 0).is_err());

        let mut image = disk.after_power_loss(3);
        assert_eq!(image.ops(), 0);
        assert!(!image.is_crashed());
        assert_eq!(image.pending(), 0);
        for _ in 0..8 {
            image.write_at(b"zz", 0).unwrap(); // no crash point, no fault inherited
        }
        assert_eq!(disk.snapshot(), b"abc");
        assert_eq!(image.snapshot(), b"zzc");
    }

    #[test]
    fn process_crash_keeps_every_pending_write() {
        let mut disk = SimDisk::from_bytes(b"durable".to_vec());
        disk.write_at(b"D", 0).unwrap();
        disk.set_len(5).unwrap();
        disk.write_at(b"!", 9).unwrap();
        let restarted = disk.after_process_crash();
        assert_eq!(restarted.snapshot(), disk.snapshot());
        assert_eq!(restarted.durable_snapshot(), disk.snapshot());
        assert_eq!(restarted.ops(), 0);
    }

    // ----- SimDisk: crash point ------------------------------------------------------

    #[test]
    fn crash_after_fails_every_call_from_number_n_on() {
        let disk = SimDisk::new();
        let mut h = disk.clone();
        disk.crash_after(3);
        h.write_at(b"a", 0).unwrap(); // 0
        h.sync_data().unwrap(); // 1
        h.write_at(b"b", 1).unwrap(); // 2
        assert_eq!(disk.ops(), 3);
        assert!(!disk.is_crashed());

        let mut buf = [0; 2];
        assert!(is_power_loss(&h.write_at(b"c", 2).unwrap_err()));
        assert!(disk.is_crashed());
        assert!(is_power_loss(&h.read_at(&mut buf, 0).unwrap_err()));
        assert!(is_power_loss(&h.sync_data().unwrap_err()));
        assert!(is_power_loss(&h.len().unwrap_err()));
        assert!(is_power_loss(&h.set_len(0).unwrap_err()));
        assert_eq!(disk.ops(), 8, "refused calls are counted too");
        assert_eq!(disk.snapshot(), b"ab");
        assert_eq!(disk.durable_snapshot(), b"a");

        // Dead stays dead.
        disk.crash_after(1000);
        assert!(is_power_loss(&h.len().unwrap_err()));
    }

    #[test]
    fn crash_after_zero_refuses_the_first_call() {
        let mut disk = SimDisk::new();
        disk.crash_after(0);
        assert!(is_power_loss(&disk.write_at(b"x", 0).unwrap_err()));
        assert_eq!(disk.snapshot(), b"");
        assert_eq!(disk.ops(), 1);
    }

    #[test]
    fn crash_point_walk_over_a_workload_visits_every_call() {
        fn workload(s: &mut impl Storage) -> io::Result<()> {
            s.write_at(b"hdr", 0)?;
            s.sync_data()?;
            let at = s.len()?;
            s.write_at(b"rec", at)?;
            s.sync_data()
        }
        let total = {
            let mut disk = SimDisk::new();
            workload(&mut disk).unwrap();
            disk.ops()
        };
        assert_eq!(total, 5);
        let mut crashed_at = Vec::new();
        for n in 0..=total {
            let disk = SimDisk::new();
            disk.crash_after(n);
            let result = workload(&mut disk.clone());
            assert_eq!(result.is_err(), disk.is_crashed());
            if disk.is_crashed() {
                crashed_at.push(n);
                assert_eq!(disk.ops(), n + 1);
            }
        }
        assert_eq!(crashed_at, [0, 1, 2, 3, 4]);
    }

    // ----- SimDisk: faults ------------------------------------------------------------

    #[test]
    fn short_write_then_error_writes_a_nonempty_proper_prefix() {
        let data: Vec<u8> = (1..=50).collect();
        let mut cuts = std::collections::BTreeSet::new();
        for at in 0..100u64 {
            let disk = SimDisk::new();
            let mut h = disk.clone();
            for _ in 0..at {
                h.len().unwrap();
            }
            disk.inject(at, Fault::ShortWriteThenError);
            let err = h.write_at(&data, 3).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(EIO));
            let image = disk.snapshot();
            let written = image.len() - 3;
            assert!((1..data.len()).contains(&written), "wrote {written}");
            assert_eq!(image[3..], data[..written]);
            assert_eq!(disk.pending(), 1, "the prefix is a pending write");
            cuts.insert(written);
        }
        assert!(cuts.len() > 10, "prefix lengths do not vary: {cuts:?}");
    }

    #[test]
    fn short_write_of_one_byte_writes_nothing() {
        let mut disk = SimDisk::new();
        disk.inject(0, Fault::ShortWriteThenError);
        assert_eq!(
            disk.write_at(b"x", 0).unwrap_err().raw_os_error(),
            Some(EIO)
        );
        assert_eq!(disk.snapshot(), b"");
    }

    #[test]
    fn no_space_is_enospc_and_writes_nothing() {
        let mut disk = SimDisk::from_bytes(b"keep".to_vec());
        disk.inject(0, Fault::NoSpace);
        let err = disk.write_at(b"lost", 2).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(disk.snapshot(), b"keep");
        assert_eq!(disk.pending(), 0);
        // The fault fired once: the retry succeeds.
        disk.write_at(b"ok", 2).unwrap();
        assert_eq!(disk.snapshot(), b"keok");
    }

    #[test]
    fn sync_fails_drops_dirty_data_and_errors() {
        let mut disk = SimDisk::from_bytes(b"old".to_vec());
        disk.write_at(b"new data", 0).unwrap();
        disk.set_len(2).unwrap();
        disk.inject(2, Fault::SyncFails);
        let err = disk.sync_data().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO));
        assert_eq!(disk.snapshot(), b"old");
        assert_eq!(disk.durable_snapshot(), b"old");
        assert_eq!(disk.pending(), 0);
        // A later sync succeeds and makes nothing of the dropped writes durable.
        disk.sync_data().unwrap();
        assert_eq!(disk.durable_snapshot(), b"old");
    }

    #[test]
    fn io_fault_on_sync_keeps_the_pending_writes_pending() {
        let mut disk = SimDisk::new();
        disk.write_at(b"w", 0).unwrap();
        disk.inject(1, Fault::Io);
        assert_eq!(disk.sync_data().unwrap_err().raw_os_error(), Some(EIO));
        assert_eq!(disk.snapshot(), b"w");
        assert_eq!(disk.durable_snapshot(), b"");
        assert_eq!(disk.pending(), 1);
        disk.sync_data().unwrap();
        assert_eq!(disk.durable_snapshot(), b"w");
    }

    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Read,
        Write,
        Sync,
        Len,
        SetLen,
    }

    fn call(disk: &mut SimDisk, kind: Kind) -> io::Result<()> {
        match kind {
            Kind::Read => disk.read_at(&mut [0; 4], 0).map(drop),
            Kind::Write => disk.write_at(b"WXYZ", 1),
            Kind::Sync => disk.sync_data(),
            Kind::Len => disk.len().map(drop),
            Kind::SetLen => disk.set_len(1),
        }
    }

    /// Every fault at every kind of call: the combinations that are not special behave
    /// as `Io`: `EIO`, with nothing done.
    #[rstest]
    fn faults_at_other_calls_behave_as_io(
        #[values(
            Fault::ShortWriteThenError,
            Fault::NoSpace,
            Fault::Io,
            Fault::SyncFails
        )]
        fault: Fault,
        #[values(Kind::Read, Kind::Write, Kind::Sync, Kind::Len, Kind::SetLen)] kind: Kind,
    ) {
        let special = matches!(
            (fault, kind),
            (Fault::ShortWriteThenError | Fault::NoSpace, Kind::Write)
                | (Fault::SyncFails, Kind::Sync)
        );
        let mut disk = SimDisk::from_bytes(b"abc".to_vec());
        disk.write_at(b"d", 3).unwrap(); // call 0: one pending write
        disk.inject(1, fault);
        let err = call(&mut disk, kind).unwrap_err();
        if !special {
            assert_eq!(err.raw_os_error(), Some(EIO));
            assert_eq!(disk.snapshot(), b"abcd");
            assert_eq!(disk.durable_snapshot(), b"abc");
            assert_eq!(disk.pending(), 1);
        }
        // Fired once: the same call now succeeds.
        call(&mut disk, kind).unwrap();
        assert_eq!(disk.ops(), 3);
    }

    #[test]
    fn inject_at_a_past_call_does_nothing() {
        let mut disk = SimDisk::new();
        disk.len().unwrap();
        disk.inject(0, Fault::Io);
        disk.len().unwrap();
        disk.inject(2, Fault::Io);
        disk.inject(2, Fault::NoSpace); // the later one wins
        assert_eq!(disk.write_at(b"x", 0).unwrap_err().raw_os_error(), Some(28));
    }

    #[test]
    fn crash_point_takes_precedence_over_faults() {
        let mut disk = SimDisk::new();
        disk.inject(0, Fault::NoSpace);
        disk.crash_after(0);
        assert!(is_power_loss(&disk.write_at(b"x", 0).unwrap_err()));
    }

    // ----- SimDisk: bad arguments -----------------------------------------------------

    #[test]
    fn out_of_range_offsets_are_invalid_input() {
        let mut disk = SimDisk::from_bytes(b"abc".to_vec());
        let invalid = |r: io::Result<()>| {
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        };
        invalid(disk.write_at(b"x", u64::MAX));
        invalid(disk.write_at(b"xy", u64::MAX - 1));
        invalid(disk.write_at(b"x", SIM_MAX_LEN));
        invalid(disk.write_at(b"", SIM_MAX_LEN + 1));
        invalid(disk.set_len(SIM_MAX_LEN + 1));
        invalid(disk.set_len(u64::MAX));
        invalid(disk.read_at(&mut [0; 4], u64::MAX).map(drop));
        invalid(disk.read_at(&mut [0; 4], u64::MAX - 2).map(drop));
        invalid(disk.read_at(&mut [0; 4], SIM_MAX_LEN + 1).map(drop));
        assert_eq!(disk.snapshot(), b"abc");
        assert_eq!(disk.pending(), 0);
        assert_eq!(disk.ops(), 9);
        // A read that starts within the cap but would end past it is merely short.
        assert_eq!(disk.read_at(&mut [0; 4], SIM_MAX_LEN - 1).unwrap(), 0);
        // The disk still works.
        disk.write_at(b"d", 3).unwrap();
        assert_eq!(disk.snapshot(), b"abcd");
    }

    // ----- SimDisk: against a model -----------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Read(u64, usize),
        Sync,
        SetLen(u64),
        Len,
    }

    fn op() -> impl Strategy<Value = Op> {
        const MAX: u64 = 64 * 1024;
        prop_oneof![
            4 => (0..MAX, prop::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(off, data)| Op::Write(off, data)),
            4 => (0..MAX + 512, 0..2048usize).prop_map(|(off, len)| Op::Read(off, len)),
            1 => Just(Op::Sync),
            1 => (0..MAX).prop_map(Op::SetLen),
            1 => Just(Op::Len),
        ]
    }

    fn model_write(model: &mut Vec<u8>, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let off = off as usize;
        if model.len() < off + data.len() {
            model.resize(off + data.len(), 0);
        }
        model[off..off + data.len()].copy_from_slice(data);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn sim_disk_matches_a_vec_model(ops in prop::collection::vec(op(), 1..60)) {
            let mut disk = SimDisk::new();
            let mut model: Vec<u8> = Vec::new();
            let mut durable: Vec<u8> = Vec::new();
            for op in &ops {
                match op {
                    Op::Write(off, data) => {
                        disk.write_at(data, *off).unwrap();
                        model_write(&mut model, *off, data);
                    }
                    Op::Read(off, len) => {
                        let mut buf = vec![0xEE; *len];
                        let n = disk.read_at(&mut buf, *off).unwrap();
                        let start = (*off as usize).min(model.len());
                        let end = (start + len).min(model.len());
                        prop_assert_eq!(&buf[..n], &model[start..end]);
                    }
                    Op::Sync => {
                        disk.sync_data().unwrap();
                        durable.clone_from(&model);
                    }
                    Op::SetLen(len) => {
                        disk.set_len(*len).unwrap();
                        model.resize(*len as usize, 0);
                    }
                    Op::Len => prop_assert_eq!(disk.len().unwrap(), model.len() as u64),
                }
                prop_assert_eq!(disk.durable_snapshot(), durable.clone());
            }
            prop_assert_eq!(disk.snapshot(), model.clone());
            prop_assert_eq!(disk.after_process_crash().snapshot(), model);
            prop_assert_eq!(disk.ops(), ops.len() as u64);
        }

        /// Each byte of a power-loss image is the durable byte (zero past the durable end)
        /// or the byte of some pending write covering it.
        #[test]
        fn power_loss_bytes_come_from_durable_or_pending_writes(
            base in prop::collection::vec(any::<u8>(), 0..200),
            writes in prop::collection::vec(
                (0..300u64, prop::collection::vec(any::<u8>(), 0..64)), 0..8),
            seed in any::<u64>(),
        ) {
            let mut disk = SimDisk::from_bytes(base.clone());
            for (off, data) in &writes {
                disk.write_at(data, *off).unwrap();
            }
            let image = disk.after_power_loss(seed).snapshot();
            prop_assert!(image.len() >= base.len());
            prop_assert!(image.len() <= disk.snapshot().len());
            for (i, byte) in image.iter().enumerate() {
                let old = base.get(i).copied().unwrap_or(0);
                let from_write = writes.iter().any(|(off, data)| {
                    (i as u64).checked_sub(*off)
                        .and_then(|k| data.get(k as usize))
                        == Some(byte)
                });
                prop_assert!(*byte == old || from_write, "byte {} = {}", i, byte);
            }
        }
    }
}
