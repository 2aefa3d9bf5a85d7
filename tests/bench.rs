//! `ipcprop::bench`: every workload runs, counts what it moved, and the report holds
//! together (rows, ratios, targets, table, Markdown, SVG). Tiny budgets: this checks the
//! instrument, never a speed.

use std::time::Duration;

use ipcprop::bench::{self, Family, Kind, Options};

mod common;
use common::TempDir;

fn tiny(families: Vec<Family>, dir: &TempDir) -> Options {
    Options {
        families,
        sizes: vec![0, 64, 65536],
        budget: Duration::from_millis(1),
        queue_dir: dir.0.clone(),
        peers: false,
    }
}

#[test]
fn every_family_runs_and_reports_ratios_and_targets() {
    let dir = TempDir::new("bench");
    let mut seen = Vec::new();
    let report = bench::run(
        &tiny(Family::ALL.to_vec(), &dir),
        &mut |done, total, label| {
            assert!(done <= total);
            seen.push(label.to_string());
        },
    )
    .unwrap();
    assert_eq!(seen.last().map(String::as_str), Some("done"));
    for family in Family::ALL {
        assert!(
            report.rows.iter().any(|r| r.family == family),
            "{family:?} missing"
        );
    }
    for r in &report.rows {
        assert!(r.count > 0 && r.elapsed > Duration::ZERO, "{r:?}");
        // Every run used some CPU, in this process or its children. (No upper bound here:
        // a test running beside this one reaps its own children into the same count.)
        let cpu = r.cpu.unwrap_or_else(|| panic!("no CPU use: {r:?}"));
        assert!(
            cpu.cpu > Duration::ZERO && cpu.wall > Duration::ZERO,
            "{r:?}"
        );
        if r.kind == Kind::Latency {
            let (p50, p99) = r.latency.unwrap();
            assert!(p50 <= p99, "{r:?}");
        }
        if let Some(vs) = r.vs {
            let group = report.group(r.family, r.kind, r.size);
            match group.iter().find(|b| b.name == vs) {
                Some(b) => {
                    assert!(b.is_baseline);
                    assert!(r.ratio.unwrap() > 0.0, "{r:?}");
                }
                // Only at size 0, where raw byte streams are not run: no ratio then.
                None => assert!(r.size == 0 && r.ratio.is_none(), "{r:?}"),
            }
        }
    }
    // Raw byte streams cannot carry an empty message: not run at size 0.
    assert!(!report
        .rows
        .iter()
        .any(|r| r.size == 0 && ["raw write", "raw pipe", "UnixStream"].contains(&r.name)));
    // Every design target was measured.
    assert!(
        report.targets.iter().all(|t| t.measured.is_some()),
        "{:?}",
        report.targets
    );
    let table = report.table();
    assert!(table.contains("ipcprop ring send") && table.contains("targets"));
    let md = report.markdown();
    assert!(md.contains("| 64 KiB | ipcprop send |"), "{md}");
    let svg = bench::svg::render(&report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // The queue files are gone.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn targets_follow_the_families_run() {
    let dir = TempDir::new("bench-one");
    let report = bench::run(&tiny(vec![Family::Fork], &dir), &mut |_, _, _| {}).unwrap();
    assert_eq!(report.targets.len(), 1, "{:?}", report.targets);
    assert!(report.targets[0].what.starts_with("fork"));
}

/// Without the `peers` feature, `--peers` is refused, saying how to get them.
#[cfg(not(feature = "peers"))]
#[test]
fn peers_need_the_feature() {
    let dir = TempDir::new("bench-peers");
    let mut opts = tiny(vec![Family::Fork], &dir);
    opts.peers = true;
    let e = bench::run(&opts, &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("--features peers"), "{e}");
}

/// Every peer workload runs beside ours, and every target against them is measured.
#[cfg(feature = "peers")]
#[test]
fn the_peers_run_and_every_target_against_them_is_measured() {
    let dir = TempDir::new("bench-peers");
    let mut opts = tiny(vec![Family::Pipe, Family::Ring, Family::Queue], &dir);
    opts.sizes = vec![64, 4096, 65536];
    opts.peers = true;
    let report = bench::run(&opts, &mut |_, _, _| {}).unwrap();
    for peer in [
        "iceoryx2, busy-poll",
        "iceoryx2 + event",
        "iceoryx2 + event, busy neighbour",
        "interprocess + length prefix",
        "ipc-channel Vec<u8>",
        "ipc-channel bytes",
        "SQLite WAL FULL",
        "SQLite WAL FULL, 64 per transaction",
        "SQLite WAL FULL, 2 processes",
        "SQLite WAL NORMAL",
        "SQLite WAL OFF",
        "SQLite WAL NORMAL, 2 processes",
        "yaque",
        "yaque, 2 processes",
    ] {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.name == peer).collect();
        assert!(!rows.is_empty(), "{peer} not measured");
        for r in rows {
            assert!(r.ratio.is_some_and(|x| x > 0.0), "{r:?}");
        }
    }
    // A run beside a busy neighbour does not claim its CPU use.
    assert!(report
        .rows
        .iter()
        .filter(|r| r.name.ends_with("busy neighbour"))
        .all(|r| r.cpu.is_none()));
    let unmeasured: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.measured.is_none())
        .collect();
    assert!(unmeasured.is_empty(), "{unmeasured:?}");
    assert!(report.table().contains("SQLite WAL FULL, 2 processes"));
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

/// The busy neighbour spins while the work runs, and is gone afterwards.
#[test]
fn a_busy_neighbour_spins_until_dropped_and_is_reaped() {
    let stat = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let neighbour = bench::BusyNeighbour::start().unwrap();
    let pid = neighbour.pid();
    let t = std::time::Instant::now();
    // Its state is R (running, or ready to run) once it spins.
    while !stat(pid).is_some_and(|s| s.contains(") R ")) {
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", stat(pid));
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(neighbour);
    assert_eq!(stat(pid), None, "left behind");
    // The same around a closure, which returns what the closure does.
    assert_eq!(bench::beside_busy_neighbour(|| Ok(7)).unwrap(), 7);
}
