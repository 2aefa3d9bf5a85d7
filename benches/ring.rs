//! The shared-memory ring against what a user would pick instead and against the floor.
//!
//! - Throughput, 64-byte messages: our ring between two *processes* (one `send` and one
//!   receive per message; and batches of 64 on both sides: `send_batch`, `recv_many`)
//!   against `rtrb` between two *threads* of one process.
//! - Latency: ping-pong round trips of 64-byte messages over two rings between two
//!   processes, against a bare shared-memory spin ping-pong (two atomic words in a
//!   `MAP_SHARED` memfd mapping, both sides spinning): the physical floor.
//!
//! After the criterion groups, `latency_percentiles` prints p50 and p99 one-way latency
//! (half a round trip) from 20 000 individually timed round trips of each, and the ratios
//! the design targets name (DESIGN section 7).
//!
//! Run: `cargo bench --bench ring`

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::shm::{self, RingConfig, RingReceiver, RingSender};
use ipcprop::{Receiver, Sender, Wait};
use memmap2::{MmapOptions, MmapRaw};

const MSG: [u8; 64] = [0x5a; 64];
/// 256 KiB of data: 3276 records of 64 bytes (72 with the header, 80 aligned... see layout).
const RING_BYTES: usize = 256 * 1024;

fn ring() -> (RingSender, RingReceiver) {
    shm::channel_with(RingConfig::new().capacity(RING_BYTES)).expect("ring")
}

fn wait_ok(group: ChildGroup) {
    for r in group.wait(Duration::from_secs(120)) {
        assert_eq!(r.end, ChildEnd::Returned, "{}", r.name);
    }
}

/// Sends `iters` 64-byte messages to a child process that receives them; the time from the
/// first send until the child has received the last. With `batch > 1` the sender uses
/// `send_batch` and the receiver `recv_many`, each with batches of that size.
fn ring_throughput(iters: u64, batch: usize) -> Duration {
    let (tx, rx) = ring();
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    group
        .spawn("receiver", |_| {
            drop(tx.take());
            let rx = rx.as_mut().ok_or("no receiver")?;
            let mut got = 0;
            while got < iters {
                if batch == 1 {
                    rx.recv_with(Wait::Forever, |m| black_box(m.len()))
                        .map_err(|e| e.to_string())?;
                    got += 1;
                } else {
                    let n = rx
                        .recv_many(batch, Wait::Forever, |m| {
                            black_box(m.len());
                        })
                        .map_err(|e| e.to_string())?;
                    got += n as u64;
                }
            }
            Ok(())
        })
        .expect("fork");
    drop(rx.take());
    let mut tx = tx.take().expect("sender");
    let batch_msgs: Vec<&[u8]> = vec![&MSG[..]; batch];
    let start = Instant::now();
    let mut left = iters as usize;
    while left > 0 {
        if batch == 1 {
            tx.send(&MSG).expect("send");
            left -= 1;
        } else {
            let n = left.min(batch);
            tx.send_batch(&batch_msgs[..n]).expect("send_batch");
            left -= n;
        }
    }
    drop(tx);
    wait_ok(group);
    start.elapsed()
}

/// The same with `rtrb` between two threads, both sides spinning when full or empty.
fn rtrb_throughput(iters: u64) -> Duration {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u8; 64]>::new(RING_BYTES / 64);
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < iters {
            match consumer.pop() {
                Ok(v) => {
                    black_box(v);
                    got += 1;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
    });
    for _ in 0..iters {
        while producer.push(MSG).is_err() {
            std::hint::spin_loop();
        }
    }
    reader.join().expect("reader");
    start.elapsed()
}

/// A child that echoes every message from `a` back on `b` until `a` disconnects.
fn spawn_echo(
    group: &mut ChildGroup,
    a: &mut Option<(RingSender, RingReceiver)>,
    b: &mut Option<(RingSender, RingReceiver)>,
) {
    group
        .spawn("echo", |_| {
            let (a_tx, mut a_rx) = a.take().ok_or("no ring a")?;
            let (mut b_tx, b_rx) = b.take().ok_or("no ring b")?;
            drop((a_tx, b_rx));
            loop {
                let mut buf = [0u8; 64];
                match a_rx.recv_with(Wait::Forever, |m| buf[..m.len()].copy_from_slice(m)) {
                    Ok(()) => b_tx.send(&buf).map_err(|e| e.to_string())?,
                    Err(e) if e.is_disconnected() => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .expect("fork");
}

/// Round trips over two rings to an echoing child; `each(rtt)` sees every one.
fn ring_pingpong(iters: u64, mut each: impl FnMut(Duration)) -> Duration {
    let mut a = Some(ring());
    let mut b = Some(ring());
    let mut group = ChildGroup::new();
    spawn_echo(&mut group, &mut a, &mut b);
    let (mut a_tx, a_rx) = a.take().expect("a");
    let (b_tx, mut b_rx) = b.take().expect("b");
    drop((a_rx, b_tx));
    // Warm up: both sides awake and spinning.
    for _ in 0..1000 {
        a_tx.send(&MSG).expect("send");
        b_rx.recv_with(Wait::Forever, |m| black_box(m.len()))
            .expect("recv");
    }
    let start = Instant::now();
    for _ in 0..iters {
        let t = Instant::now();
        a_tx.send(&MSG).expect("send");
        b_rx.recv_with(Wait::Forever, |m| black_box(m.len()))
            .expect("recv");
        each(t.elapsed());
    }
    let total = start.elapsed();
    drop(a_tx);
    wait_ok(group);
    total
}

/// Two atomic words in a shared memfd mapping: the bare floor of a cross-process round trip.
struct SpinPair {
    map: MmapRaw,
    _fd: OwnedFd,
}

impl SpinPair {
    fn new() -> SpinPair {
        let fd = nix::sys::memfd::memfd_create(c"spin", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd");
        nix::unistd::ftruncate(&fd, 4096).expect("ftruncate");
        let map = MmapOptions::new().len(4096).map_raw(&fd).expect("mmap");
        SpinPair { map, _fd: fd }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: offsets 0 and 128 are 8-aligned and inside the live 4096-byte mapping,
        // which is zero-filled, and these words are only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(i * 128).cast()) }
    }
}

fn spin_until(word: &AtomicU64, value: u64) {
    while word.load(Ordering::Acquire) != value {
        std::hint::spin_loop();
    }
}

fn spin_pingpong(iters: u64, mut each: impl FnMut(Duration)) -> Duration {
    let pair = SpinPair::new();
    let warmup = 1000;
    let total_rounds = warmup + iters;
    let mut group = ChildGroup::new();
    group
        .spawn("spin echo", |_| {
            for seq in 1..=total_rounds {
                spin_until(pair.word(0), seq);
                pair.word(1).store(seq, Ordering::Release);
            }
            Ok(())
        })
        .expect("fork");
    for seq in 1..=warmup {
        pair.word(0).store(seq, Ordering::Release);
        spin_until(pair.word(1), seq);
    }
    let start = Instant::now();
    for seq in warmup + 1..=total_rounds {
        let t = Instant::now();
        pair.word(0).store(seq, Ordering::Release);
        spin_until(pair.word(1), seq);
        each(t.elapsed());
    }
    let total = start.elapsed();
    wait_ok(group);
    total
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("throughput_64B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);
    g.bench_function("ring_cross_process_send", |b| {
        b.iter_custom(|n| ring_throughput(n, 1))
    });
    g.bench_function("ring_cross_process_batch64", |b| {
        b.iter_custom(|n| ring_throughput(n, 64))
    });
    g.bench_function("rtrb_two_threads", |b| b.iter_custom(rtrb_throughput));
    g.finish();
}

fn latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip_64B");
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);
    g.bench_function("ring_cross_process", |b| {
        b.iter_custom(|n| ring_pingpong(n, |_| {}))
    });
    g.bench_function("bare_shm_spin", |b| {
        b.iter_custom(|n| spin_pingpong(n, |_| {}))
    });
    g.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50/p99 of one-way latency (half of each round trip), and the ratios against targets.
fn latency_percentiles(_c: &mut Criterion) {
    let n = 20_000;
    let mut ring_rtts = Vec::with_capacity(n);
    ring_pingpong(n as u64, |d| ring_rtts.push(d));
    let mut spin_rtts = Vec::with_capacity(n);
    spin_pingpong(n as u64, |d| spin_rtts.push(d));
    ring_rtts.sort_unstable();
    spin_rtts.sort_unstable();
    let half = |d: Duration| d / 2;
    let (r50, r99) = (
        half(percentile(&ring_rtts, 0.5)),
        half(percentile(&ring_rtts, 0.99)),
    );
    let (s50, s99) = (
        half(percentile(&spin_rtts, 0.5)),
        half(percentile(&spin_rtts, 0.99)),
    );
    println!("one-way latency, 64-byte messages, {n} round trips each:");
    println!("  ring (two rings, two processes): p50 {r50:?}, p99 {r99:?}");
    println!("  bare shared-memory spin:         p50 {s50:?}, p99 {s99:?}");
    println!(
        "  ratio ring/spin at p50: {:.2} (target <= 1.5)",
        r50.as_secs_f64() / s50.as_secs_f64()
    );
    let msgs = 2_000_000;
    let ring_rate = msgs as f64 / ring_throughput(msgs, 1).as_secs_f64();
    let batch_rate = msgs as f64 / ring_throughput(msgs, 64).as_secs_f64();
    let rtrb_rate = msgs as f64 / rtrb_throughput(msgs).as_secs_f64();
    println!("throughput, 64-byte messages, {msgs} each:");
    println!(
        "  ring, two processes, send:       {:.2} M msg/s",
        ring_rate / 1e6
    );
    println!(
        "  ring, two processes, batch 64:   {:.2} M msg/s",
        batch_rate / 1e6
    );
    println!(
        "  rtrb, two threads:               {:.2} M msg/s",
        rtrb_rate / 1e6
    );
    println!(
        "  ratio ring/rtrb: send {:.2}, batch {:.2} (target >= 1.0)",
        ring_rate / rtrb_rate,
        batch_rate / rtrb_rate
    );
}

/// How long after a sender is SIGKILLed its receiver, asleep on the futex, reports
/// Disconnected (the promise is within 100 ms; the liveness period is 20 ms).
fn death_detection(_c: &mut Criterion) {
    let mut delays = Vec::new();
    for _ in 0..20 {
        let (tx, rx) = ring();
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
    latency_percentiles,
    death_detection
);
criterion_main!(benches);
