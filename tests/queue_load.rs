//! Many processes on one queue file: 4 producer processes and 2 consumer processes move
//! 200 000 messages of mixed sizes; nothing is lost or duplicated, nothing is corrupt, and
//! each consumer sees each producer's messages in the order they were pushed.
//! (`QUEUE_LOAD_MESSAGES=N` changes the total.)

mod common;
use common::TempDir;

use std::time::Duration;

use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::queue::{FileQueue, QueueConfig};

/// Every test here fails, rather than hangs, past this.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

const PRODUCERS: u32 = 4;
const CONSUMERS: u32 = 2;
const STOP: &[u8] = b"STOP";

fn message(producer: u32, seq: u32) -> Vec<u8> {
    // Mixed sizes: mostly small, some medium, a few of several KiB.
    let len = match seq % 97 {
        0 => 6000,
        1..=10 => 700,
        _ => 8 + (seq as usize * 13) % 120,
    };
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((8..len).map(|i| (producer as usize * 7 + seq as usize + i) as u8));
    v
}

#[test]
fn four_producers_two_consumers_nothing_lost_or_duplicated() {
    common::within(LIMIT, move || {
        let total: u32 = std::env::var("QUEUE_LOAD_MESSAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let per_producer = total / PRODUCERS;
        let dir = TempDir::new("load");
        let path = dir.file("load.q");
        let q = FileQueue::open(&path, QueueConfig::new()).unwrap();

        let mut consumers = ChildGroup::new();
        for c in 0..CONSUMERS {
            let path = &path;
            consumers
                .spawn(format!("consumer {c}"), move |rep| {
                    let q = FileQueue::open(path, QueueConfig::new()).map_err(|e| e.to_string())?;
                    // One bit per (producer, seq): received; and the last seq seen per producer.
                    let mut seen = vec![0u8; (PRODUCERS * per_producer).div_ceil(8) as usize];
                    let mut last: Vec<Option<u32>> = vec![None; PRODUCERS as usize];
                    loop {
                        let mut batch = q.pop_batch(64).map_err(|e| e.to_string())?;
                        if batch.is_empty() {
                            // Nothing queued: sleep until something is (no busy polling).
                            match q
                                .pop_timeout(Duration::from_millis(50))
                                .map_err(|e| e.to_string())?
                            {
                                Some(m) => batch.push(m),
                                None => continue,
                            }
                        }
                        let n = batch.len();
                        for (k, m) in batch.into_iter().enumerate() {
                            if m == STOP {
                                // Everything after a STOP is another consumer's STOP (they are
                                // pushed last): put those back, or that consumer waits forever.
                                for _ in k + 1..n {
                                    q.push(STOP).map_err(|e| e.to_string())?;
                                }
                                rep.record(&seen);
                                return Ok(());
                            }
                            if m.len() < 8 {
                                return Err(format!("a {}-byte message", m.len()));
                            }
                            let p = u32::from_le_bytes(m[..4].try_into().unwrap());
                            let s = u32::from_le_bytes(m[4..8].try_into().unwrap());
                            if p >= PRODUCERS || s >= per_producer || m != message(p, s) {
                                return Err(format!(
                                    "corrupt message claiming producer {p} seq {s}"
                                ));
                            }
                            if last[p as usize].is_some_and(|l| l >= s) {
                                return Err(format!(
                                    "producer {p}: seq {s} after {:?}",
                                    last[p as usize]
                                ));
                            }
                            last[p as usize] = Some(s);
                            let bit = (p * per_producer + s) as usize;
                            if seen[bit / 8] & (1 << (bit % 8)) != 0 {
                                return Err(format!("producer {p} seq {s} delivered twice"));
                            }
                            seen[bit / 8] |= 1 << (bit % 8);
                        }
                    }
                })
                .unwrap();
        }
        let mut producers = ChildGroup::new();
        for p in 0..PRODUCERS {
            let path = &path;
            producers
                .spawn(format!("producer {p}"), move |_| {
                    let q = FileQueue::open(path, QueueConfig::new()).map_err(|e| e.to_string())?;
                    let mut s = 0;
                    while s < per_producer {
                        if s % 5 == 0 && s + 8 <= per_producer {
                            let msgs: Vec<Vec<u8>> = (s..s + 8).map(|k| message(p, k)).collect();
                            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                            q.push_batch(&refs).map_err(|e| e.to_string())?;
                            s += 8;
                        } else {
                            q.push(&message(p, s)).map_err(|e| e.to_string())?;
                            s += 1;
                        }
                    }
                    Ok(())
                })
                .unwrap();
        }
        for r in producers.wait(Duration::from_secs(120)) {
            assert_eq!(r.end, ChildEnd::Returned, "{}", r.name);
        }
        for _ in 0..CONSUMERS {
            q.push(STOP).unwrap();
        }
        let reports = consumers.wait(Duration::from_secs(120));
        let mut union = vec![0u8; (PRODUCERS * per_producer).div_ceil(8) as usize];
        for r in &reports {
            assert_eq!(r.end, ChildEnd::Returned, "{}", r.name);
            let seen = &r.records[0];
            for (u, s) in union.iter_mut().zip(seen) {
                assert_eq!(*u & s, 0, "a message delivered to both consumers");
                *u |= s;
            }
        }
        let received: u32 = union.iter().map(|b| b.count_ones()).sum();
        assert_eq!(received, PRODUCERS * per_producer, "messages lost");
        assert_eq!(q.len().unwrap(), 0);
    })
}
