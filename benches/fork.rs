//! Forked property cases of the smallest plan (one sender, one 8-byte message) against the
//! bare cost of a process, `fork` + `_exit` + `waitpid` (target: >= 0.5x).
//!
//! Run: `cargo bench --bench fork`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ipcprop::bench::{fork, Family};

fn cases(c: &mut Criterion) {
    let mut g = common::throughput(c, "fork", 0);
    g.bench_function("bare_fork_exit_waitpid", |b| {
        b.iter_custom(|n| fork::bare_fork(n).unwrap())
    });
    g.bench_function("tiny_property_case", |b| {
        b.iter_custom(|n| fork::tiny_cases(n).unwrap())
    });
    g.finish();
}

fn table(_c: &mut Criterion) {
    common::table(Family::Fork);
}

criterion_group!(benches, cases, table);
criterion_main!(benches);
