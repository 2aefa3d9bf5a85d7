//! The pipe channel against one `write(2)` per message on a raw pipe and a `UnixStream`,
//! one sender process to one receiver process, and ping-pong round trips, at 0, 64, 4096
//! and 65536 bytes. The workloads are `ipcprop::bench::pipe`, the same
//! as `ipcprop bench`; after the criterion groups the ratio table is printed.
//!
//! Run: `cargo bench --bench pipe`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ipcprop::bench::{pipe, Family, BATCH, SIZES};
use ipcprop::pipe::PipeConfig;

fn throughput(c: &mut Criterion) {
    for size in SIZES {
        let mut g = common::throughput(c, "pipe", size);
        g.bench_function("ipcprop_send", |b| {
            b.iter_custom(|n| pipe::channel(n, size, 1, PipeConfig::new()).unwrap())
        });
        g.bench_function("ipcprop_send_tuned", |b| {
            b.iter_custom(|n| pipe::channel(n, size, 1, pipe::tuned()).unwrap())
        });
        g.bench_function("ipcprop_send_batch64", |b| {
            b.iter_custom(|n| pipe::channel(n, size, BATCH, PipeConfig::new()).unwrap())
        });
        if size > 0 {
            g.bench_function("raw_write", |b| {
                b.iter_custom(|n| pipe::raw_write(n, size).unwrap())
            });
            g.bench_function("unix_stream", |b| {
                b.iter_custom(|n| pipe::unix_stream(n, size).unwrap())
            });
        }
        g.finish();
    }
}

fn latency(c: &mut Criterion) {
    for size in SIZES {
        let mut g = common::latency(c, "pipe", size);
        g.bench_function("ipcprop", |b| {
            b.iter_custom(|n| common::total(pipe::channel_pingpong(n, size, PipeConfig::new())))
        });
        g.bench_function("ipcprop_tuned", |b| {
            b.iter_custom(|n| common::total(pipe::channel_pingpong(n, size, pipe::tuned())))
        });
        if size > 0 {
            g.bench_function("raw_pipe", |b| {
                b.iter_custom(|n| common::total(pipe::raw_pingpong(n, size)))
            });
            g.bench_function("unix_stream", |b| {
                b.iter_custom(|n| common::total(pipe::unix_stream_pingpong(n, size)))
            });
        }
        g.finish();
    }
}

fn table(_c: &mut Criterion) {
    common::table(Family::Pipe);
}

criterion_group!(benches, throughput, latency, table);
criterion_main!(benches);
