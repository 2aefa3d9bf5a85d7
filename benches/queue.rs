//! The file queue against the `queue-file` crate (one process; `queue-file` is a
//! single-process queue), at 0, 64, 4096 and 65536 bytes: push+pop without fsync, one by
//! one and in batches of 64; durable pushes (ours: `Durability::Sync`, one fdatasync per
//! push or batch; theirs: sync writes), one by one and in batches of 64; and our queue
//! between two processes (throughput and ping-pong). The workloads are
//! `ipcprop::bench::queue`, the same as `ipcprop bench`; the ratio table comes last.
//!
//! Queue files go under `$CARGO_TARGET_DIR` or `./target` (a real disk, not a tmpfs).
//! Run: `cargo bench --bench queue`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ipcprop::bench::default_queue_dir;
use ipcprop::bench::queue::{self, BenchDir};
use ipcprop::bench::{Family, BATCH, SIZES};

fn throughput(c: &mut Criterion) {
    let dir = BenchDir::new(&default_queue_dir()).expect("bench directory");
    let dir = &dir;
    for size in SIZES {
        let mut g = common::throughput(c, "queue", size);
        for (name, batch) in [("", 1), ("_batch64", BATCH)] {
            g.bench_function(format!("ipcprop_push_pop{name}"), |b| {
                b.iter_custom(|n| queue::push_pop(dir, n, size, batch).unwrap())
            });
            g.bench_function(format!("queue_file_push_pop{name}"), |b| {
                b.iter_custom(|n| queue::queue_file_push_pop(dir, n, size, batch).unwrap())
            });
            g.bench_function(format!("ipcprop_durable_push{name}"), |b| {
                b.iter_custom(|n| queue::durable_push(dir, n, size, batch).unwrap())
            });
            g.bench_function(format!("queue_file_sync_push{name}"), |b| {
                b.iter_custom(|n| queue::queue_file_durable_push(dir, n, size, batch).unwrap())
            });
        }
        g.bench_function("ipcprop_two_processes", |b| {
            b.iter_custom(|n| queue::channel(dir, n, size).unwrap())
        });
        g.finish();
        let mut g = common::latency(c, "queue", size);
        g.bench_function("ipcprop_two_processes", |b| {
            b.iter_custom(|n| common::total(queue::channel_pingpong(dir, n, size)))
        });
        g.finish();
    }
}

fn table(_c: &mut Criterion) {
    common::table(Family::Queue);
}

criterion_group!(benches, throughput, table);
criterion_main!(benches);
