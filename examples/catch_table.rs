//! The catch table: every deliberately broken transport the crate ships, run through the
//! public battery at default settings (`IPCPROP_CASES`, `IPCPROP_SEED` and
//! `IPCPROP_SIZE_CAP` apply), with the checks that caught each and what they named.
//! Findings are not shrunk or recounted (the question here is whether a check catches the
//! defect, not how small its plan gets; a hang costs a progress bound per shrink step).
//!
//! ```sh
//! cargo run --release --example catch_table            # every broken transport
//! cargo run --release --example catch_table -- naive   # those whose name contains "naive"
//! ```
//!
//! Prints one Markdown row per transport as it finishes, then the count caught; exits 1 if
//! any escaped.

use std::time::Instant;

use ipcprop::check::battery::{run_battery, BatteryConfig, Finding};
use ipcprop::check::broken::{Broken, Defect, NaiveFlaw, NaiveStreamTransport};
use ipcprop::check::builtin::PipeTransport;
use ipcprop::check::Transport;

fn row<T: Transport>(t: &T, filter: &str, cfg: &BatteryConfig, caught: &mut (u32, u32)) {
    let name = t.name();
    if !name.contains(filter) {
        return;
    }
    let start = Instant::now();
    let findings: Vec<Finding> = run_battery(t, cfg);
    let checks: Vec<String> = findings
        .iter()
        .map(|f| {
            let mut kinds: Vec<String> = f.kinds.iter().map(|k| k.to_string()).collect();
            kinds.dedup();
            format!("{} ({})", f.check, kinds.join(", "))
        })
        .collect();
    caught.1 += 1;
    if !findings.is_empty() {
        caught.0 += 1;
    }
    println!(
        "| {name} | {} | {:.0} s |",
        if checks.is_empty() {
            "**escaped**".to_string()
        } else {
            checks.join("; ")
        },
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let cfg = BatteryConfig {
        max_shrink_iters: 0,
        reproduce_runs: 0,
        ..BatteryConfig::default()
    };
    println!(
        "catch table: {} cases per generated check, seed {}, size cap {}",
        cfg.cases, cfg.seed, cfg.size_cap
    );
    println!("| broken transport | caught by (violation kinds) | time |");
    println!("| --- | --- | --- |");
    let mut caught = (0, 0);
    for defect in Defect::ALL {
        row(
            &Broken::new(PipeTransport::default(), defect),
            &filter,
            &cfg,
            &mut caught,
        );
    }
    for flaw in NaiveFlaw::ALL {
        row(&NaiveStreamTransport { flaw }, &filter, &cfg, &mut caught);
    }
    println!("caught {} of {}", caught.0, caught.1);
    if caught.0 < caught.1 {
        std::process::exit(1);
    }
}
