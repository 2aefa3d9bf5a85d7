//! Ours against the crates users pick instead, between two processes, each in its
//! guarantee class: the ring against iceoryx2 (busy-polling receivers; blocking ones), the
//! pipe channel against interprocess and ipc-channel, the file queue against SQLite (WAL)
//! and yaque. The workloads are `ipcprop::bench` and `ipcprop::bench::peers`, the same as
//! `ipcprop bench --peers`; after the criterion groups, that table and its targets.
//!
//! Run: `cargo bench --features peers --bench peers`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ipcprop::bench::peers::ipc_chan::Payload;
use ipcprop::bench::peers::sqlite::Synchronous;
use ipcprop::bench::peers::{iceoryx, interproc, ipc_chan, sqlite, yaq, Wake};
use ipcprop::bench::queue::BenchDir;
use ipcprop::bench::{self, pipe, queue, ring, Options, BATCH};
use ipcprop::pipe::PipeConfig;
use ipcprop::queue::{Durability, QueueConfig};

fn shm(c: &mut Criterion) {
    for size in [64, 65536] {
        let mut g = common::throughput(c, "shm_peers", size);
        g.bench_function("ipcprop_ring_blocking", |b| {
            b.iter_custom(|n| ring::channel(n, size, 1, false).unwrap())
        });
        g.bench_function("ipcprop_ring_polling", |b| {
            b.iter_custom(|n| ring::channel_polling(n, size, false).unwrap())
        });
        g.bench_function("iceoryx2_busy_poll", |b| {
            b.iter_custom(|n| iceoryx::throughput(n, size, Wake::Poll).unwrap())
        });
        g.bench_function("iceoryx2_event", |b| {
            b.iter_custom(|n| iceoryx::throughput(n, size, Wake::Block).unwrap())
        });
        g.finish();
        let mut g = common::latency(c, "shm_peers", size);
        g.bench_function("ipcprop_ring_blocking", |b| {
            b.iter_custom(|n| common::total(ring::channel_pingpong(n, size, false)))
        });
        g.bench_function("ipcprop_ring_polling", |b| {
            b.iter_custom(|n| common::total(ring::pingpong_polling(n, size, false)))
        });
        g.bench_function("iceoryx2_busy_poll", |b| {
            b.iter_custom(|n| common::total(iceoryx::pingpong(n, size, Wake::Poll)))
        });
        g.bench_function("iceoryx2_event", |b| {
            b.iter_custom(|n| common::total(iceoryx::pingpong(n, size, Wake::Block)))
        });
        g.finish();
    }
}

fn pipes(c: &mut Criterion) {
    for size in [64, 4096, 65536] {
        let mut g = common::throughput(c, "pipe_peers", size);
        g.bench_function("ipcprop_send", |b| {
            b.iter_custom(|n| pipe::channel(n, size, 1, PipeConfig::new()).unwrap())
        });
        g.bench_function("interprocess", |b| {
            b.iter_custom(|n| interproc::throughput(n, size).unwrap())
        });
        g.bench_function("ipc_channel_vec", |b| {
            b.iter_custom(|n| ipc_chan::throughput(n, size, Payload::Typed).unwrap())
        });
        g.bench_function("ipc_channel_bytes", |b| {
            b.iter_custom(|n| ipc_chan::throughput(n, size, Payload::Bytes).unwrap())
        });
        g.finish();
        let mut g = common::latency(c, "pipe_peers", size);
        g.bench_function("ipcprop", |b| {
            b.iter_custom(|n| common::total(pipe::channel_pingpong(n, size, PipeConfig::new())))
        });
        g.bench_function("interprocess", |b| {
            b.iter_custom(|n| common::total(interproc::pingpong(n, size)))
        });
        g.bench_function("ipc_channel_bytes", |b| {
            b.iter_custom(|n| common::total(ipc_chan::pingpong(n, size, Payload::Bytes)))
        });
        g.finish();
    }
}

fn queues(c: &mut Criterion) {
    let dir = BenchDir::new(&bench::default_queue_dir()).expect("bench directory");
    let dir = &dir;
    let sync = QueueConfig::new().with_durability(Durability::Sync);
    for size in [64, 4096] {
        let mut g = common::throughput(c, "queue_peers_fsync", size);
        g.bench_function("ipcprop_durable_push", |b| {
            b.iter_custom(|n| queue::durable_push(dir, n, size, 1).unwrap())
        });
        g.bench_function("sqlite_full", |b| {
            b.iter_custom(|n| sqlite::push(dir, n, size, Synchronous::Full, 1).unwrap())
        });
        g.bench_function("ipcprop_durable_batch64", |b| {
            b.iter_custom(|n| queue::durable_push(dir, n, size, BATCH).unwrap())
        });
        g.bench_function("sqlite_full_tx64", |b| {
            b.iter_custom(|n| sqlite::push(dir, n, size, Synchronous::Full, BATCH).unwrap())
        });
        g.bench_function("ipcprop_pair", |b| {
            b.iter_custom(|n| queue::pair_with(dir, n, size, sync).unwrap())
        });
        g.bench_function("sqlite_full_pair", |b| {
            b.iter_custom(|n| sqlite::pair(dir, n, size, Synchronous::Full).unwrap())
        });
        g.finish();
        let mut g = common::throughput(c, "queue_peers_no_fsync", size);
        g.bench_function("ipcprop_push", |b| {
            b.iter_custom(|n| queue::push_with(dir, n, size, 1, QueueConfig::new()).unwrap())
        });
        g.bench_function("ipcprop_push_exclusive", |b| {
            let config = QueueConfig::new().with_exclusive(true);
            b.iter_custom(|n| queue::push_with(dir, n, size, 1, config).unwrap())
        });
        g.bench_function("sqlite_normal", |b| {
            b.iter_custom(|n| sqlite::push(dir, n, size, Synchronous::Normal, 1).unwrap())
        });
        g.bench_function("yaque", |b| {
            b.iter_custom(|n| yaq::push(dir, n, size).unwrap())
        });
        g.bench_function("ipcprop_pair", |b| {
            b.iter_custom(|n| queue::channel(dir, n, size).unwrap())
        });
        g.bench_function("sqlite_normal_pair", |b| {
            b.iter_custom(|n| sqlite::pair(dir, n, size, Synchronous::Normal).unwrap())
        });
        g.bench_function("yaque_pair", |b| {
            b.iter_custom(|n| yaq::pair(dir, n, size).unwrap())
        });
        g.finish();
    }
}

fn table(_c: &mut Criterion) {
    let opts = Options {
        peers: true,
        ..Options::quick()
    };
    let report = bench::run(&opts, &mut |_, _, _| {}).expect("benchmark run");
    println!("{}", report.table());
}

criterion_group!(benches, shm, pipes, queues, table);
criterion_main!(benches);
