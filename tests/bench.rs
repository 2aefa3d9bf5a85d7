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
