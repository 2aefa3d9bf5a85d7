//! The file queue against the `queue-file` crate (Tape's QueueFile ported to Rust), one
//! process, 64-byte messages (DESIGN section 7):
//! - push+pop without fsync, one by one and in batches of 64;
//! - durable pushes (ours: `Durability::Sync`, one fdatasync per push or batch; theirs:
//!   `set_sync_writes(true)`), one by one and in batches of 64.
//!
//! After the criterion groups, `ratios` prints per-message figures and the ratios the
//! targets name. Run: `cargo bench --bench queue`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipcprop::queue::{Durability, FileQueue, QueueConfig};
use queue_file::QueueFile;

const MSG: [u8; 64] = [0x42; 64];

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        // Next to the build (on the same disk as the project), not in a tmpfs.
        let base = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"));
        let d = base.join(format!("bench-queue-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ours(path: &Path, durability: Durability) -> FileQueue {
    FileQueue::open(path, QueueConfig::new().durability(durability)).unwrap()
}

fn theirs(path: &Path, sync: bool) -> QueueFile {
    let mut q = QueueFile::open(path).unwrap();
    q.set_sync_writes(sync);
    q
}

/// `iters` push+pop pairs (batch 1) or batches of `batch` pushed then popped.
fn ours_push_pop(q: &FileQueue, iters: u64, batch: usize) -> Duration {
    let msgs = vec![&MSG[..]; batch];
    let start = Instant::now();
    for _ in 0..iters {
        if batch == 1 {
            q.push(&MSG).unwrap();
            black_box(q.pop().unwrap());
        } else {
            q.push_batch(&msgs).unwrap();
            black_box(q.pop_batch(batch).unwrap());
        }
    }
    start.elapsed()
}

fn theirs_push_pop(q: &mut QueueFile, iters: u64, batch: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        if batch == 1 {
            q.add(&MSG).unwrap();
            black_box(q.peek().unwrap());
            q.remove().unwrap();
        } else {
            q.add_n(std::iter::repeat_n(&MSG[..], batch)).unwrap();
            for m in q.iter().take(batch) {
                black_box(m);
            }
            q.remove_n(batch).unwrap();
        }
    }
    start.elapsed()
}

fn ours_durable_push(q: &FileQueue, iters: u64, batch: usize) -> Duration {
    let msgs = vec![&MSG[..]; batch];
    let start = Instant::now();
    for _ in 0..iters {
        q.push_batch(&msgs).unwrap();
    }
    let t = start.elapsed();
    while !q.pop_batch(4096).unwrap().is_empty() {}
    t
}

fn theirs_durable_push(q: &mut QueueFile, iters: u64, batch: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        if batch == 1 {
            q.add(&MSG).unwrap();
        } else {
            q.add_n(std::iter::repeat_n(&MSG[..], batch)).unwrap();
        }
    }
    let t = start.elapsed();
    q.clear().unwrap();
    t
}

fn push_pop(c: &mut Criterion) {
    let dir = Dir::new();
    let mut g = c.benchmark_group("push_pop_64B_no_sync");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        let q = ours(&dir.file(&format!("ours-{batch}")), Durability::None);
        g.bench_function(format!("ipcprop_batch{batch}"), |b| {
            b.iter_custom(|n| ours_push_pop(&q, n, batch))
        });
        let mut t = theirs(&dir.file(&format!("theirs-{batch}")), false);
        g.bench_function(format!("queue_file_batch{batch}"), |b| {
            b.iter_custom(|n| theirs_push_pop(&mut t, n, batch))
        });
    }
    g.finish();
}

fn durable(c: &mut Criterion) {
    let dir = Dir::new();
    let mut g = c.benchmark_group("durable_push_64B");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(10);
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        let q = ours(&dir.file(&format!("ours-{batch}")), Durability::Sync);
        g.bench_function(format!("ipcprop_batch{batch}"), |b| {
            b.iter_custom(|n| ours_durable_push(&q, n, batch))
        });
        let mut t = theirs(&dir.file(&format!("theirs-{batch}")), true);
        g.bench_function(format!("queue_file_batch{batch}"), |b| {
            b.iter_custom(|n| theirs_durable_push(&mut t, n, batch))
        });
    }
    g.finish();
}

/// Per-message time of `f(iters)` where each iteration moves `batch` messages.
fn per_msg(iters: u64, batch: usize, f: impl FnOnce(u64) -> Duration) -> Duration {
    f(iters) / (iters as u32 * batch as u32)
}

fn ratios(_c: &mut Criterion) {
    let dir = Dir::new();
    println!("file queue vs queue-file, 64-byte messages, per message (lower is better):");
    for batch in [1usize, 64] {
        let iters = if batch == 1 { 20_000 } else { 1_000 };
        let q = ours(&dir.file(&format!("r-ours-{batch}")), Durability::None);
        let a = per_msg(iters, batch, |n| ours_push_pop(&q, n, batch));
        let mut t = theirs(&dir.file(&format!("r-theirs-{batch}")), false);
        let b = per_msg(iters, batch, |n| theirs_push_pop(&mut t, n, batch));
        let target = if batch == 1 { 2.0 } else { 10.0 };
        println!(
            "  push+pop, no sync, batch {batch:>2}: ipcprop {a:?}, queue-file {b:?}: {:.2}x (target >= {target}x)",
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
    for batch in [1usize, 64] {
        let iters = if batch == 1 { 300 } else { 100 };
        let q = ours(&dir.file(&format!("d-ours-{batch}")), Durability::Sync);
        let a = per_msg(iters, batch, |n| ours_durable_push(&q, n, batch));
        let mut t = theirs(&dir.file(&format!("d-theirs-{batch}")), true);
        let b = per_msg(iters, batch, |n| theirs_durable_push(&mut t, n, batch));
        let target = if batch == 1 { 1.3 } else { 50.0 };
        println!(
            "  durable push, batch {batch:>2}: ipcprop {a:?}, queue-file {b:?}: {:.2}x (target >= {target}x)",
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}

criterion_group!(benches, push_pop, durable, ratios);
criterion_main!(benches);
