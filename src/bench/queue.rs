//! The file queue against the `queue-file` crate (a port of Square's Tape `QueueFile`):
//! push+pop without fsync, durable pushes, each one by one and in batches, in one process
//! (`queue-file` is a single-process queue); and our queue between two processes, as a
//! channel ([`channel`]) and as a producer and a consumer process that each open the
//! queue file themselves ([`pair_with`]), the shape of the durable peers' runs
//! (`bench::peers`, feature `peers`).
//!
//! Queue files go in a fresh directory under the base given (see [`BenchDir`]): put it on
//! the disk you care about, not on a tmpfs, where `fdatasync` costs nothing.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use queue_file::QueueFile;

use super::{consume, expect_count, failed, in_batches, one_way, payload, ping_pong, recv_one};
use crate::check::fork::{ChildEnd, ChildGroup, Reporter};
use crate::queue::{self, Durability, FileQueue, QueueConfig};
use crate::{Error, Result};

/// A directory for queue files, removed with everything in it when dropped.
#[derive(Debug)]
pub struct BenchDir {
    path: PathBuf,
    next: std::cell::Cell<u32>,
}

impl BenchDir {
    /// Creates `base/ipcprop-bench-<pid>-<nanos>`.
    pub fn new(base: &Path) -> Result<BenchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = base.join(format!("ipcprop-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| Error::io("create bench directory", e))?;
        Ok(BenchDir {
            path,
            next: std::cell::Cell::new(0),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path for a new file in the directory, never handed out before.
    pub fn file(&self, what: &str) -> PathBuf {
        let i = self.next.get();
        self.next.set(i + 1);
        self.path.join(format!("{what}-{i}"))
    }

    /// A new, empty subdirectory (at a path from [`BenchDir::file`]), removed with all in
    /// it when the returned guard is dropped: for the peers that keep several files (a
    /// database and its write-ahead log, a queue of segment files).
    pub fn subdir(&self, what: &str) -> Result<ScratchDir> {
        let path = self.file(what);
        std::fs::create_dir(&path).map_err(|e| Error::io("create bench subdirectory", e))?;
        Ok(ScratchDir(path))
    }
}

/// A directory from [`BenchDir::subdir`], removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes a queue file (and nothing else) when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Our queue in a new file of `dir`, opened with `config`, and the guard that removes it.
fn ours(dir: &BenchDir, config: QueueConfig) -> Result<(FileQueue, Scratch)> {
    let path = dir.file("ipcprop");
    let q = FileQueue::open(&path, config)?;
    Ok((q, Scratch(path)))
}

fn theirs(dir: &BenchDir, sync: bool) -> Result<(QueueFile, Scratch)> {
    let path = dir.file("queue-file");
    let mut q = QueueFile::open(&path).map_err(|e| failed(format!("queue-file open: {e}")))?;
    q.set_sync_writes(sync);
    Ok((q, Scratch(path)))
}

fn qf_err(e: queue_file::Error) -> Error {
    failed(format!("queue-file: {e}"))
}

/// Ours, no fsync: `n` messages pushed and popped, one by one (`batch == 1`: `push`, `pop`)
/// or `batch` at a time (`push_batch`, `pop_batch`).
pub fn push_pop(dir: &BenchDir, n: u64, size: usize, batch: usize) -> Result<Duration> {
    push_pop_with(dir, n, size, batch, QueueConfig::new())
}

/// [`push_pop`] with a queue opened with `config` (its durability is set to none).
pub fn push_pop_with(
    dir: &BenchDir,
    n: u64,
    size: usize,
    batch: usize,
    config: QueueConfig,
) -> Result<Duration> {
    let (q, _scratch) = ours(dir, config.with_durability(Durability::None))?;
    let msg = payload(size);
    let msgs = vec![&msg[..]; batch.max(1)];
    let mut got = (0u64, 0u64);
    let start = Instant::now();
    in_batches(n, batch, |k| {
        if batch <= 1 {
            q.push(&msg)?;
        } else {
            q.push_batch(&msgs[..k])?;
        }
        for m in q.pop_batch(k)? {
            got = (got.0 + 1, got.1 + m.len() as u64);
            consume(&m);
        }
        Ok(())
    })?;
    let t = start.elapsed();
    expect_count(got, n, size).map_err(failed)?;
    Ok(t)
}

/// `queue-file`, no sync: `add`, `peek`, `remove` per message, or `add_n`, `iter`,
/// `remove_n` per batch.
pub fn queue_file_push_pop(dir: &BenchDir, n: u64, size: usize, batch: usize) -> Result<Duration> {
    let (mut q, _scratch) = theirs(dir, false)?;
    let msg = payload(size);
    let mut got = (0u64, 0u64);
    let start = Instant::now();
    in_batches(n, batch, |k| {
        if batch <= 1 {
            q.add(&msg).map_err(qf_err)?;
            if let Some(m) = q.peek().map_err(qf_err)? {
                got = (got.0 + 1, got.1 + m.len() as u64);
                consume(&m);
            }
            q.remove().map_err(qf_err)?;
        } else {
            q.add_n(std::iter::repeat_n(&msg[..], k)).map_err(qf_err)?;
            for m in q.iter().take(k) {
                got = (got.0 + 1, got.1 + m.len() as u64);
                consume(&m);
            }
            q.remove_n(k).map_err(qf_err)?;
        }
        Ok(())
    })?;
    let t = start.elapsed();
    expect_count(got, n, size).map_err(failed)?;
    Ok(t)
}

/// Ours, [`Durability::Sync`]: `n` durable pushes (one `fdatasync` per push or per batch of
/// `batch`). Only the pushes are timed; the queue is drained and checked afterwards.
pub fn durable_push(dir: &BenchDir, n: u64, size: usize, batch: usize) -> Result<Duration> {
    push_with(
        dir,
        n,
        size,
        batch,
        QueueConfig::new().with_durability(Durability::Sync),
    )
}

/// The floor under a durable push, with no queue around it: `n` writes of the bytes one
/// record of `size` bytes takes in our file (its 24-byte header and the payload, padded to
/// 8), each followed by `fdatasync`. Either appended at the end of the file (each sync then
/// also commits the file's new size to the filesystem's journal, as a push to our queue
/// does), or, with `overwrite`, over blocks written and synced before (the sync writes the
/// data alone, as SQLite's write-ahead log does once it starts over). Only the writes and
/// syncs are timed; the file must then hold exactly what was written.
pub fn raw_sync_writes(dir: &BenchDir, n: u64, size: usize, overwrite: bool) -> Result<Duration> {
    use std::os::unix::fs::FileExt;
    let path = dir.file("raw-sync");
    let _scratch = Scratch(path.clone());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("create raw sync file", e))?;
    let record = usize::try_from(queue::record_size(size))
        .map_err(|_| failed(format!("a record of {size} bytes does not fit in memory")))?;
    let total = n * record as u64;
    let sync = |f: &std::fs::File| f.sync_data().map_err(|e| Error::io("fdatasync", e));
    if overwrite {
        // Written and synced beforehand, untimed: the timed writes land on blocks the file
        // already has.
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < total {
            let k = (total - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..k], at)
                .map_err(|e| Error::io("pre-write raw sync file", e))?;
            at += k as u64;
        }
        sync(&file)?;
    }
    let pre_written = file_len(&file)?;
    let bytes = payload(record);
    let start = Instant::now();
    for i in 0..n {
        file.write_all_at(&bytes, i * record as u64)
            .map_err(|e| Error::io("write raw sync file", e))?;
        sync(&file)?;
    }
    let t = start.elapsed();
    check_raw_file(&file, n, &bytes)?;
    // Over synced blocks means the timed writes did not grow the file: it held before them
    // what it holds now (checked above).
    let written = n * bytes.len() as u64;
    if overwrite && pre_written != written {
        return Err(failed(format!(
            "the raw sync file was pre-written to {pre_written} bytes, not the {written} the \
             timed writes went over"
        )));
    }
    Ok(t)
}

fn file_len(file: &std::fs::File) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| Error::io("stat raw sync file", e))?
        .len())
}

/// Fails unless `file` holds exactly `n` records and the last is `record`.
fn check_raw_file(file: &std::fs::File, n: u64, record: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let total = n * record.len() as u64;
    let len = file_len(file)?;
    if len != total {
        return Err(failed(format!(
            "the raw sync file holds {len} bytes, not the {total} written"
        )));
    }
    if n > 0 {
        let mut last = vec![0u8; record.len()];
        file.read_exact_at(&mut last, total - record.len() as u64)
            .map_err(|e| Error::io("read raw sync file", e))?;
        if last != record {
            return Err(failed(
                "the raw sync file's last record is not what was written",
            ));
        }
    }
    Ok(())
}

/// `queue-file` with sync writes: `add` per message or `add_n` per batch.
pub fn queue_file_durable_push(
    dir: &BenchDir,
    n: u64,
    size: usize,
    batch: usize,
) -> Result<Duration> {
    let (mut q, _scratch) = theirs(dir, true)?;
    let msg = payload(size);
    let start = Instant::now();
    in_batches(n, batch, |k| {
        if batch <= 1 {
            q.add(&msg).map_err(qf_err)
        } else {
            q.add_n(std::iter::repeat_n(&msg[..], k)).map_err(qf_err)
        }
    })?;
    let t = start.elapsed();
    if q.size() != n as usize {
        return Err(failed(format!("queue-file holds {} of {n}", q.size())));
    }
    Ok(t)
}

/// Our queue between two processes, no fsync: this process pushes `n` messages, a child
/// receives them (woken by inotify when it finds the queue empty).
pub fn channel(dir: &BenchDir, n: u64, size: usize) -> Result<Duration> {
    let path = dir.file("channel");
    let _scratch = Scratch(path.clone());
    one_way(
        queue::channel(&path, QueueConfig::new())?,
        n,
        size,
        1,
        recv_one,
    )
}

/// Ping-pong over two of our queues between two processes, no fsync.
pub fn channel_pingpong(dir: &BenchDir, n: u64, size: usize) -> Result<Vec<Duration>> {
    let (pa, pb) = (dir.file("ping"), dir.file("pong"));
    let _scratch = (Scratch(pa.clone()), Scratch(pb.clone()));
    let (a_tx, a_rx) = queue::channel(&pa, QueueConfig::new())?;
    let (b_tx, b_rx) = queue::channel(&pb, QueueConfig::new())?;
    // Round trips take tens of microseconds here: fewer warm-up rounds.
    ping_pong((a_tx, b_rx), (a_rx, b_tx), n, size, 20, recv_one)
}

/// Ours, pushes only, with the queue opened with `config`: `n` messages of `size` bytes,
/// one by one (`batch <= 1`: `push`) or `batch` at a time (`push_batch`). Covers the
/// shared handle and an exclusive one ([`QueueConfig::with_exclusive`]), with
/// [`Durability::None`] or [`Durability::Sync`] (one `fdatasync` per push or batch). Only
/// the pushes are timed; afterwards every message is popped, read ([`consume`]) and
/// counted, and the run fails unless exactly `n` messages of `size` bytes were there.
pub fn push_with(
    dir: &BenchDir,
    n: u64,
    size: usize,
    batch: usize,
    config: QueueConfig,
) -> Result<Duration> {
    push_sending(dir, n, n, size, batch, config)
}

/// [`push_with`], pushing `sent` messages and expecting `n`: the tests' way to show that
/// the check afterwards catches a count that is off.
fn push_sending(
    dir: &BenchDir,
    sent: u64,
    n: u64,
    size: usize,
    batch: usize,
    config: QueueConfig,
) -> Result<Duration> {
    let (q, _scratch) = ours(dir, config)?;
    let msg = payload(size);
    let msgs = vec![&msg[..]; batch.max(1)];
    let start = Instant::now();
    in_batches(sent, batch, |k| {
        if batch <= 1 {
            q.push(&msg)
        } else {
            q.push_batch(&msgs[..k])
        }
    })?;
    let t = start.elapsed();
    let mut got = (0u64, 0u64);
    loop {
        let ms = q.pop_batch(4096)?;
        if ms.is_empty() {
            break;
        }
        for m in ms {
            consume(&m);
            got = (got.0 + 1, got.1 + m.len() as u64);
        }
    }
    expect_count(got, n, size).map_err(failed)?;
    Ok(t)
}

/// Ours between two processes, the way two programs share a queue file: a producer
/// process pushes `n` messages of `size` bytes (one `push` each), a consumer process pops
/// them in order, each process opening the queue with `config` itself, after the fork.
/// The consumer sleeps on inotify when it finds the queue empty
/// ([`FileQueue::pop_timeout`]); with [`Durability::Sync`] every push and every pop is on
/// disk before it returns. The consumer reads every byte ([`consume`]) and fails unless it
/// got exactly `n` messages of `size` bytes, and the queue must be empty afterwards.
///
/// The time from the producer's first push (once both have opened the queue) until the
/// consumer has popped the last message. An exclusive configuration is refused
/// ([`Error::InvalidConfig`]): it lets one handle own the queue.
pub fn pair_with(dir: &BenchDir, n: u64, size: usize, config: QueueConfig) -> Result<Duration> {
    pair_sending(dir, n, n, size, config)
}

/// [`pair_with`], the producer pushing `sent` messages where the consumer expects `n`.
fn pair_sending(
    dir: &BenchDir,
    sent: u64,
    n: u64,
    size: usize,
    config: QueueConfig,
) -> Result<Duration> {
    if config.exclusive() {
        return Err(Error::config(
            "QueueConfig::with_exclusive",
            "pair_with opens the queue in two processes; an exclusive handle owns it",
        ));
    }
    let path = dir.file("pair");
    let _scratch = Scratch(path.clone());
    // Created here, so the two processes only open an existing queue.
    drop(FileQueue::open(&path, config)?);
    let msg = payload(size);
    let t = producer_consumer(
        |marks| {
            let q = FileQueue::open(&path, config).map_err(|e| e.to_string())?;
            marks.start()?;
            for _ in 0..sent {
                q.push(&msg).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        |marks| {
            let q = FileQueue::open(&path, config).map_err(|e| e.to_string())?;
            marks.ready()?;
            take_n(marks, n, size, || {
                let m = q.pop_timeout(STALL_POLL).map_err(|e| e.to_string())?;
                Ok(m.map(|m| {
                    consume(&m);
                    m.len()
                }))
            })
        },
    )?;
    let left = FileQueue::open(&path, config)?.len()?;
    expect_none_left(left, "queue", n)?;
    Ok(t)
}

/// The consumer's loop of a pair ([`producer_consumer`]): `take` until `n` messages are
/// taken, then [`Marks::done`] and the count check (exactly `n` messages of `size` bytes).
/// `take` returns the length of the next message, having read every byte of it
/// ([`consume`]), or `None` when there is none yet (after waiting for one as long as its
/// queue lets it); after [`STALL`] with none, the run fails.
pub(crate) fn take_n(
    marks: &mut Marks<'_>,
    n: u64,
    size: usize,
    mut take: impl FnMut() -> std::result::Result<Option<usize>, String>,
) -> std::result::Result<(), String> {
    let mut got = (0u64, 0u64);
    let mut idle = Stall::new(n);
    while got.0 < n {
        match take()? {
            Some(len) => {
                got = (got.0 + 1, got.1 + len as u64);
                idle.reset();
            }
            None => idle.check(got.0)?,
        }
    }
    marks.done();
    expect_count(got, n, size)
}

/// Fails unless `left`, the messages still in the pair's `queue` (the queue, the table...)
/// after its consumer took the `n` it expected, is zero: the producer sent too many.
pub(crate) fn expect_none_left(left: u64, queue: &str, n: u64) -> Result<()> {
    if left != 0 {
        return Err(failed(format!(
            "{left} messages left in the {queue} after the consumer took {n}"
        )));
    }
    Ok(())
}

/// How long a consumer of [`producer_consumer`] waits without a message before it fails
/// the run (a producer that died or sent too few).
pub(crate) const STALL: Duration = Duration::from_secs(30);

/// How long a consumer waits for one message before it looks at the [`STALL`] clock.
const STALL_POLL: Duration = Duration::from_millis(200);

/// A consumer's [`STALL`] clock: running while it finds nothing, reset by a message.
#[derive(Debug)]
struct Stall {
    n: u64,
    since: Option<Instant>,
    /// How long nothing may arrive: [`STALL`] in a run.
    limit: Duration,
}

impl Stall {
    /// The clock of a consumer that expects `n` messages.
    fn new(n: u64) -> Stall {
        Stall::with_limit(n, STALL)
    }

    /// [`Stall::new`], failing after `limit` without a message.
    fn with_limit(n: u64, limit: Duration) -> Stall {
        Stall {
            n,
            since: None,
            limit,
        }
    }

    /// A message arrived.
    fn reset(&mut self) {
        self.since = None;
    }

    /// Nothing arrived, `got` messages so far: fails once nothing has arrived for its
    /// limit.
    fn check(&mut self, got: u64) -> std::result::Result<(), String> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() > self.limit {
            return Err(format!(
                "nothing arrived for {:?} after {got} of {} messages",
                self.limit, self.n
            ));
        }
        Ok(())
    }
}

/// What the two processes of [`producer_consumer`] tell it: the consumer that it is
/// ready, the producer when it starts, the consumer when it is done.
#[derive(Debug)]
pub(crate) struct Marks<'a> {
    reporter: &'a mut Reporter,
    /// The consumer's write end, or the producer's read end, of the "ready" pipe.
    ready: Option<OwnedFd>,
}

/// The record the producer sends as it starts, and the consumer's when it has the last.
const START: &[u8] = b"start";
const DONE: &[u8] = b"done";

impl Marks<'_> {
    /// The consumer: its end is open, the producer may start.
    pub(crate) fn ready(&mut self) -> std::result::Result<(), String> {
        let fd = self.ready.take().ok_or("ready() called twice")?;
        loop {
            match nix::unistd::write(&fd, &[1]) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("signalling the producer: {e}")),
            }
        }
    }

    /// The producer, its end open: waits until the consumer is ready, then records the
    /// instant the timing starts from. Call it just before the first message.
    pub(crate) fn start(&mut self) -> std::result::Result<(), String> {
        let fd = self.ready.take().ok_or("start() called twice")?;
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&fd, &mut byte) {
                Ok(1) => break,
                Ok(_) => return Err("the consumer ended before it was ready".into()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("waiting for the consumer: {e}")),
            }
        }
        self.reporter.record(START);
        Ok(())
    }

    /// The consumer has taken the last message: the instant the timing ends at.
    pub(crate) fn done(&mut self) {
        self.reporter.record(DONE);
    }
}

/// Forks one process of [`producer_consumer`], `name`, running `body` with `mine`, its end
/// of the "ready" pipe; it closes its copy of `other`, the other process's end, first.
fn spawn_role(
    group: &mut ChildGroup,
    name: &str,
    body: impl FnOnce(&mut Marks<'_>) -> std::result::Result<(), String>,
    mine: &mut Option<OwnedFd>,
    other: &mut Option<OwnedFd>,
) -> Result<()> {
    group.spawn(name, |reporter| {
        drop(other.take());
        body(&mut Marks {
            reporter,
            ready: mine.take(),
        })
    })
}

/// Two processes forked from this one: `producer` and `consumer`, each opening its own
/// end of whatever they share after the fork (nothing is open across it but a pipe). The
/// consumer calls [`Marks::ready`] once its end is open, the producer [`Marks::start`]
/// once its end is open (which waits for the consumer), the consumer [`Marks::done`] when
/// it has taken the last message. Fails unless both return `Ok` within two minutes;
/// returns the time from start to done (one `CLOCK_MONOTONIC` across the processes), so
/// neither the forks, the opens, nor the closes and exits count.
pub(crate) fn producer_consumer(
    producer: impl FnOnce(&mut Marks<'_>) -> std::result::Result<(), String>,
    consumer: impl FnOnce(&mut Marks<'_>) -> std::result::Result<(), String>,
) -> Result<Duration> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    let (mut r, mut w) = (Some(r), Some(w));
    // A property case running in another thread must not have its descriptors inherited
    // by these forks.
    let _serial = crate::check::case::lock_cases();
    let mut group = ChildGroup::new();
    spawn_role(&mut group, "consumer", consumer, &mut w, &mut r)?;
    // Without its copy of the write end, a consumer that dies early ends the producer's wait.
    spawn_role(&mut group, "producer", producer, &mut r, &mut w)?;
    drop((r, w));
    let reports = group.wait(Duration::from_secs(120));
    for r in &reports {
        if r.end != ChildEnd::Returned {
            return Err(failed(format!("the {} {}", r.name, r.end)));
        }
    }
    let at = |name: &str, mark: &[u8]| {
        reports
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| {
                r.records
                    .iter()
                    .position(|m| m == mark)
                    .map(|i| r.record_times[i])
            })
            .ok_or_else(|| {
                failed(format!(
                    "the {name} did not report {:?}",
                    String::from_utf8_lossy(mark)
                ))
            })
    };
    let (start, done) = (at("producer", START)?, at("consumer", DONE)?);
    Ok(Duration::from_nanos(done.saturating_sub(start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the system's temporary directory: these tests check what the runs deliver,
    /// not their speed, so the disk does not matter.
    fn bench_dir() -> BenchDir {
        BenchDir::new(&std::env::temp_dir()).expect("bench dir")
    }

    #[test]
    fn push_with_every_configuration_and_batch_checks_out() {
        let dir = bench_dir();
        let shared = QueueConfig::new();
        for size in [0, 64, 4096] {
            for (config, n) in [
                (shared, 100),
                (shared.with_exclusive(true), 100),
                (shared.with_durability(Durability::Sync), 20),
            ] {
                for batch in [1, 64] {
                    push_with(&dir, n, size, batch, config)
                        .unwrap_or_else(|e| panic!("{config:?} size {size} batch {batch}: {e}"));
                }
            }
        }
        drop(dir);
    }

    #[test]
    fn pair_with_moves_every_message_between_two_processes() {
        let dir = bench_dir();
        for size in [0, 64, 4096] {
            for (config, n) in [
                (QueueConfig::new(), 100),
                (QueueConfig::new().with_durability(Durability::Sync), 20),
            ] {
                let t = pair_with(&dir, n, size, config)
                    .unwrap_or_else(|e| panic!("{config:?} size {size}: {e}"));
                assert!(t > Duration::ZERO);
            }
        }
    }

    #[test]
    fn pair_with_refuses_an_exclusive_queue() {
        let dir = bench_dir();
        let config = QueueConfig::new().with_exclusive(true);
        assert!(matches!(
            pair_with(&dir, 10, 8, config),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn raw_sync_writes_write_and_sync_every_record_and_leave_nothing() {
        let dir = bench_dir();
        for overwrite in [false, true] {
            // 300 000 bytes: five records pre-written in two 1 MiB chunks, the second short.
            for size in [0, 64, 4096, 300_000] {
                let t = raw_sync_writes(&dir, 5, size, overwrite).unwrap();
                assert!(
                    t > Duration::ZERO,
                    "{size} bytes, overwrite {overwrite}: {t:?}"
                );
            }
            assert!(raw_sync_writes(&dir, 0, 64, overwrite).is_ok());
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "left behind {left:?}");
    }

    #[test]
    fn the_raw_sync_file_check_fails_on_a_short_file_or_a_wrong_last_record() {
        use std::io::Write;
        let record = [7u8; 16];
        let file = |bytes: &[u8]| {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(bytes).unwrap();
            f
        };
        let good = [record, record].concat();
        assert!(check_raw_file(&file(&good), 2, &record).is_ok());
        assert!(check_raw_file(&file(&[]), 0, &record).is_ok());
        let e = check_raw_file(&file(&good[..31]), 2, &record).unwrap_err();
        assert!(e.to_string().contains("holds 31 bytes, not the 32"), "{e}");
        let mut wrong = good.clone();
        wrong[31] = 8;
        let e = check_raw_file(&file(&wrong), 2, &record).unwrap_err();
        assert!(e.to_string().contains("last record"), "{e}");
        assert!(
            check_raw_file(&file(&good), 1, &record).is_err(),
            "one record too many"
        );
    }

    #[test]
    fn a_count_that_is_off_fails_the_run() {
        let dir = bench_dir();
        let config = QueueConfig::new();
        assert!(push_sending(&dir, 10, 10, 64, 1, config).is_ok());
        assert!(push_sending(&dir, 9, 10, 64, 1, config).is_err());
        assert!(push_sending(&dir, 11, 10, 64, 64, config).is_err());
        assert!(pair_sending(&dir, 10, 10, 64, config).is_ok());
        // One too many: the consumer stops at ten and the eleventh is found left over.
        let e = pair_sending(&dir, 11, 10, 64, config).unwrap_err();
        assert!(e.to_string().contains("left in the queue"), "{e}");
    }

    /// The consumer's loop every pair shares: it takes exactly `n`, then fails unless they
    /// were `n * size` bytes, or as soon as `take` fails.
    #[test]
    fn take_n_checks_what_it_took() {
        let consumer = |lens: Vec<std::result::Result<Option<usize>, String>>| {
            let mut lens = lens.into_iter();
            producer_consumer(
                |marks| marks.start(),
                |marks| {
                    marks.ready()?;
                    take_n(marks, 3, 64, || lens.next().ok_or("took a fourth")?)
                },
            )
        };
        // An empty look in between is waited out.
        assert!(consumer(vec![Ok(Some(64)), Ok(None), Ok(Some(64)), Ok(Some(64))]).is_ok());
        let e = consumer(vec![Ok(Some(64)), Ok(Some(63)), Ok(Some(64))]).unwrap_err();
        assert!(e.to_string().contains("3 messages / 191 bytes"), "{e}");
        let e = consumer(vec![Ok(Some(64)), Err("gone".into())]).unwrap_err();
        assert!(e.to_string().contains("consumer failed: gone"), "{e}");
        assert!(expect_none_left(0, "queue", 3).is_ok());
        let e = expect_none_left(2, "table", 3).unwrap_err();
        assert!(
            e.to_string().contains("2 messages left in the table"),
            "{e}"
        );
    }

    #[test]
    fn every_single_process_workload_moves_every_message_and_times_it() {
        let dir = bench_dir();
        let exclusive = QueueConfig::new().with_exclusive(true);
        let timed = |what: &str, t: Result<Duration>| match t {
            Ok(t) => assert!(t > Duration::ZERO, "{what}: {t:?}"),
            Err(e) => panic!("{what}: {e}"),
        };
        for size in [0, 64] {
            for batch in [1, 8] {
                let at = format!("size {size} batch {batch}");
                timed(&at, push_pop(&dir, 20, size, batch));
                timed(&at, push_pop_with(&dir, 20, size, batch, exclusive));
                timed(&at, queue_file_push_pop(&dir, 20, size, batch));
                timed(&at, durable_push(&dir, 5, size, batch));
                timed(&at, queue_file_durable_push(&dir, 5, size, batch));
            }
        }
    }

    #[test]
    fn the_queue_channel_runs_one_way_and_both_ways() {
        let dir = bench_dir();
        assert!(channel(&dir, 50, 64).expect("one way") > Duration::ZERO);
        // 30 rounds timed, not the 20 of the warm-up.
        assert_eq!(channel_pingpong(&dir, 30, 64).expect("ping-pong").len(), 30);
    }

    #[test]
    fn a_stall_fails_after_its_limit_without_a_message_and_a_message_restarts_it() {
        let limit = Duration::from_millis(60);
        let mut stall = Stall::with_limit(10, limit);
        assert_eq!(stall.check(3), Ok(()), "the clock starts");
        std::thread::sleep(limit * 2 / 3);
        stall.reset();
        std::thread::sleep(limit * 2 / 3);
        // 80 ms since the first empty look, 40 ms since the message.
        assert_eq!(stall.check(4), Ok(()), "the message restarted the clock");
        std::thread::sleep(limit + Duration::from_millis(10));
        assert_eq!(
            stall.check(4),
            Err(format!(
                "nothing arrived for {limit:?} after 4 of 10 messages"
            ))
        );
    }

    #[test]
    fn a_bench_directory_never_hands_out_a_path_twice() {
        let dir = bench_dir();
        let (a, b) = (dir.file("q"), dir.file("q"));
        assert_ne!(a, b);
        assert!(a.starts_with(dir.path()) && b.starts_with(dir.path()));
    }

    #[test]
    fn bench_dirs_and_subdirs_leave_nothing_behind() {
        let dir = bench_dir();
        let path = dir.path().to_path_buf();
        let sub = dir.subdir("peer").expect("subdir");
        std::fs::write(sub.path().join("x"), b"x").expect("write");
        let sub_path = sub.path().to_path_buf();
        drop(sub);
        assert!(!sub_path.exists());
        push_with(&dir, 5, 8, 1, QueueConfig::new()).expect("push");
        drop(dir);
        assert!(!path.exists());
    }
}
