//! The shared-memory ring between two processes against `rtrb` and `crossbeam-channel`
//! between two threads, and against a bare shared-memory spin ping-pong (the floor), at 0,
//! 64, 4096 and 65536 bytes: throughput (one `send`/receive per message, and batches of 64:
//! `send_batch`/`recv_many`; the default ends, which copy each payload, and trusted zero-copy
//! ends) and ping-pong round trips, and what one look at an empty ring costs a polling
//! receiver (`try_recv` against `rtrb`'s `pop`). The workloads
//! are `ipcprop::bench::ring`, the same as `ipcprop bench`. After the criterion groups: the
//! ratio table with p50/p99, and how fast a sleeping receiver notices its sender's SIGKILL.
//!
//! Run: `cargo bench --bench ring`

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ipcprop::bench::{ring, Family, BATCH, SIZES};
use ipcprop::check::fork::ChildGroup;
use ipcprop::shm::{self, RingConfig, RingReceiver, RingSender};
use ipcprop::Receiver;

fn throughput(c: &mut Criterion) {
    for size in SIZES {
        let mut g = common::throughput(c, "ring", size);
        g.bench_function("ipcprop_send", |b| {
            b.iter_custom(|n| ring::channel(n, size, 1, false).unwrap())
        });
        g.bench_function("ipcprop_send_trusted", |b| {
            b.iter_custom(|n| ring::channel(n, size, 1, true).unwrap())
        });
        g.bench_function("ipcprop_batch64", |b| {
            b.iter_custom(|n| ring::channel(n, size, BATCH, false).unwrap())
        });
        g.bench_function("rtrb_threads", |b| {
            b.iter_custom(|n| ring::rtrb_threads(n, size).unwrap())
        });
        g.bench_function("crossbeam_threads", |b| {
            b.iter_custom(|n| ring::crossbeam_threads(n, size).unwrap())
        });
        g.finish();
    }
}

fn latency(c: &mut Criterion) {
    for size in SIZES {
        let mut g = common::latency(c, "ring", size);
        g.bench_function("ipcprop", |b| {
            b.iter_custom(|n| common::total(ring::channel_pingpong(n, size, false)))
        });
        g.bench_function("ipcprop_trusted", |b| {
            b.iter_custom(|n| common::total(ring::channel_pingpong(n, size, true)))
        });
        g.bench_function("bare_shm_spin", |b| {
            b.iter_custom(|n| common::total(ring::spin_pingpong(n, size)))
        });
        g.bench_function("rtrb_threads", |b| {
            b.iter_custom(|n| common::total(ring::rtrb_pingpong(n, size)))
        });
        g.bench_function("crossbeam_threads", |b| {
            b.iter_custom(|n| common::total(ring::crossbeam_pingpong(n, size)))
        });
        g.finish();
    }
}

/// One look at an empty ring, as a polling receiver makes in a loop: `try_recv`
/// (`Wait::Never`) on ours, `pop` on `rtrb`'s.
fn empty_look(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/empty_look");
    g.bench_function("ipcprop_try_recv", |b| {
        b.iter_custom(|n| ring::empty_looks(n).unwrap())
    });
    g.bench_function("rtrb_pop", |b| {
        b.iter_custom(|n| ring::rtrb_empty_looks(n).unwrap())
    });
    g.finish();
}

fn table(_c: &mut Criterion) {
    common::table(Family::Ring);
}

fn ring_pair() -> (RingSender, RingReceiver) {
    shm::channel_with(RingConfig::new().with_capacity(ring::RING_BYTES)).expect("ring")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// How long after a sender is SIGKILLed its receiver, asleep on the futex, reports
/// Disconnected (the promise is within 100 ms; the liveness period is 20 ms).
fn death_detection(_c: &mut Criterion) {
    let mut delays = Vec::new();
    for _ in 0..20 {
        let (tx, rx) = ring_pair();
        let (mut tx, mut rx) = (Some(tx), Some(rx));
        let mut group = ChildGroup::new();
        group
            .spawn("victim", |_| {
                drop(rx.take());
                let _keep = tx.take();
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .expect("fork");
        drop(tx.take());
        let mut rx = rx.take().expect("receiver");
        let pid = nix::unistd::Pid::from_raw(group.pids()[0]);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
            Instant::now()
        });
        let err = rx.recv().expect_err("the sender sent nothing");
        let seen = Instant::now();
        assert!(err.is_disconnected());
        delays.push(seen.duration_since(killer.join().expect("killer")));
        drop(group.wait(Duration::from_secs(10)));
    }
    delays.sort_unstable();
    println!(
        "SIGKILL of the sender to Disconnected at the sleeping receiver, 20 runs: median {:?}, max {:?} (promise: within 100 ms)",
        percentile(&delays, 0.5),
        delays[delays.len() - 1]
    );
}

criterion_group!(
    benches,
    throughput,
    latency,
    empty_look,
    table,
    death_detection
);
criterion_main!(benches);
