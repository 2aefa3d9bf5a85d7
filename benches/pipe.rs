//! The pipe channel against the raw syscall and a `UnixStream`, one sender process to one
//! receiver process (DESIGN section 7: 64 B messages >= 1.0x raw `write` per message, >= 5x
//! with batching; 64 KiB messages >= 0.9x raw bytes/s):
//! - ours: `send` per message, and `send_batch` of 64;
//! - raw: one `write(2)` per message on a pipe, the reader `read`ing the byte count;
//! - a `UnixStream` socketpair, one `write` per message.
//!
//! After the criterion groups, `ratios` prints messages/s and the ratios. Run:
//! `cargo bench --bench pipe`

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::{pipe, Receiver, Sender, Wait};

fn wait_ok(group: ChildGroup) {
    for r in group.wait(Duration::from_secs(300)) {
        assert_eq!(r.end, ChildEnd::Returned, "{}", r.name);
    }
}

/// Our channel: `iters` messages of `size` bytes, in batches of `batch` (1: `send`).
fn ours(iters: u64, size: usize, batch: usize) -> Duration {
    let (tx, rx) = pipe::channel().expect("pipe");
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    group
        .spawn("receiver", |_| {
            drop(tx.take());
            let rx = rx.as_mut().ok_or("no receiver")?;
            for _ in 0..iters {
                rx.recv_with(Wait::Forever, |m| black_box(m.len()))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .expect("fork");
    drop(rx.take());
    let mut tx = tx.take().expect("sender");
    let msg = vec![0x5a; size];
    let msgs: Vec<&[u8]> = vec![&msg[..]; batch];
    let start = Instant::now();
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(batch);
        if batch == 1 {
            tx.send(&msg).expect("send");
        } else {
            tx.send_batch(&msgs[..n]).expect("send_batch");
        }
        left -= n;
    }
    drop(tx);
    wait_ok(group);
    start.elapsed()
}

/// One `write` of `size` bytes per message on `w`, the child reading `iters * size` bytes.
fn raw<W: Write, R: Read>(iters: u64, size: usize, mut w: W, r: R) -> Duration {
    let mut r = Some(r);
    let total = iters as usize * size;
    let mut group = ChildGroup::new();
    group
        .spawn("reader", |_| {
            let mut r = r.take().ok_or("no reader")?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < total {
                let n = r.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("early end of stream".into());
                }
                got += n;
            }
            Ok(())
        })
        .expect("fork");
    drop(r.take());
    let msg = vec![0x5a; size];
    let start = Instant::now();
    for _ in 0..iters {
        w.write_all(&msg).expect("write");
    }
    drop(w);
    wait_ok(group);
    start.elapsed()
}

fn raw_pipe(iters: u64, size: usize) -> Duration {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2");
    raw(iters, size, std::fs::File::from(w), std::fs::File::from(r))
}

fn unix_stream(iters: u64, size: usize) -> Duration {
    let (a, b) = UnixStream::pair().expect("socketpair");
    raw(iters, size, a, b)
}

fn throughput(c: &mut Criterion) {
    for size in [0usize, 64, 4096, 65536] {
        let mut g = c.benchmark_group(format!("pipe_{size}B"));
        g.measurement_time(Duration::from_secs(3));
        g.sample_size(10);
        g.throughput(Throughput::Elements(1));
        g.bench_function("ipcprop_send", |b| b.iter_custom(|n| ours(n, size, 1)));
        g.bench_function("ipcprop_batch64", |b| b.iter_custom(|n| ours(n, size, 64)));
        if size > 0 {
            g.bench_function("raw_write", |b| b.iter_custom(|n| raw_pipe(n, size)));
            g.bench_function("unix_stream", |b| b.iter_custom(|n| unix_stream(n, size)));
        }
        g.finish();
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn ratios(_c: &mut Criterion) {
    println!("pipe channel vs raw write(2), one sender process to one receiver process:");
    for (size, n) in [(64usize, 300_000u64), (65536, 20_000)] {
        let a = rate(n, ours(n, size, 1));
        let b = rate(n, ours(n, size, 64));
        let r = rate(n, raw_pipe(n, size));
        let u = rate(n, unix_stream(n, size));
        println!(
            "  {size:>5} B: send {:.0}/s, batch64 {:.0}/s, raw write {:.0}/s, UnixStream {:.0}/s; send/raw {:.2}, batch/raw {:.2}",
            a,
            b,
            r,
            u,
            a / r,
            b / r
        );
    }
}

criterion_group!(benches, throughput, ratios);
criterion_main!(benches);
