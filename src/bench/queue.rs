//! The file queue against the `queue-file` crate (a port of Square's Tape `QueueFile`):
//! push+pop without fsync, durable pushes, each one by one and in batches, in one process
//! (`queue-file` is a single-process queue); and our queue between two processes.
//!
//! Queue files go in a fresh directory under the base given (see [`BenchDir`]): put it on
//! the disk you care about, not on a tmpfs, where `fdatasync` costs nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use queue_file::QueueFile;

use super::{consume, expect_count, failed, in_batches, one_way, payload, ping_pong, recv_one};
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

fn ours(dir: &BenchDir, durability: Durability) -> Result<(FileQueue, Scratch)> {
    let path = dir.file("ipcprop");
    let q = FileQueue::open(&path, QueueConfig::new().with_durability(durability))?;
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
    let path = dir.file("ipcprop");
    let q = FileQueue::open(&path, config.with_durability(Durability::None))?;
    let _scratch = Scratch(path);
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
    let (q, _scratch) = ours(dir, Durability::Sync)?;
    let msg = payload(size);
    let msgs = vec![&msg[..]; batch.max(1)];
    let start = Instant::now();
    in_batches(n, batch, |k| {
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
            got = (got.0 + 1, got.1 + m.len() as u64);
        }
    }
    expect_count(got, n, size).map_err(failed)?;
    Ok(t)
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
    ping_pong((a_tx, b_rx), (a_rx, b_tx), n, size, 20)
}
