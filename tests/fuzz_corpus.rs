//! Replays every committed fuzz input (the seed corpus in `fuzz/corpus/<target>/` and every
//! crash ever found, in `fuzz/regressions/<target>/`) through the same library functions
//! the fuzz targets call, so `cargo test` on stable keeps them passing.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("frame_decode", ipcprop::fuzz::frame_decode),
    ("frame_roundtrip", ipcprop::fuzz::frame_roundtrip),
    ("ring_hostile", ipcprop::fuzz::ring_hostile),
    ("queue_recover", ipcprop::fuzz::queue_recover),
    ("queue_ops", ipcprop::fuzz::queue_ops),
];

fn replay(dir: &str) -> usize {
    let mut n = 0;
    for (name, target) in TARGETS {
        let d = Path::new(dir).join(name);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(result.is_ok(), "{name}: {} fails", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn the_seed_corpus_passes() {
    let n = replay("fuzz/corpus");
    assert!(
        n >= TARGETS.len(),
        "only {n} corpus inputs found: is fuzz/corpus there?"
    );
}

#[test]
fn every_regression_input_passes() {
    replay("fuzz/regressions");
}

#[test]
fn every_target_survives_arbitrary_bytes() {
    // A little in-process fuzzing on stable, deterministic: inputs from a simple generator.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200 {
        let len = (next() % 600) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        for (name, target) in TARGETS {
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(
                result.is_ok(),
                "{name} failed on generated input {round}: {data:?}"
            );
        }
    }
}
