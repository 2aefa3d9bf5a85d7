//! Shared by the criterion benches: group settings and the closing table.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput};
use ipcprop::bench::{self, Family, Options};

/// A throughput group for one message size: messages/s and bytes/s.
pub fn throughput<'a>(
    c: &'a mut Criterion,
    name: &str,
    size: usize,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(format!("{name}_{size}B"));
    configure(&mut g);
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: size as u64,
    });
    g
}

/// A latency group for one message size (time per round trip).
pub fn latency<'a>(
    c: &'a mut Criterion,
    name: &str,
    size: usize,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(format!("{name}_round_trip_{size}B"));
    configure(&mut g);
    g
}

fn configure(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(10);
}

/// The sum of the round trips, for `iter_custom`.
pub fn total(rtts: ipcprop::Result<Vec<Duration>>) -> Duration {
    rtts.expect("ping-pong").iter().sum()
}

/// After the criterion groups: the same comparisons as `ipcprop bench --only <family>`,
/// with p50/p99, ratios and the design targets.
pub fn table(family: Family) {
    let opts = Options {
        families: vec![family],
        ..Options::quick()
    };
    let report = bench::run(&opts, &mut |_, _, _| {}).expect("benchmark run");
    println!("{}", report.table());
}
