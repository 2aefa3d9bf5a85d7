//! Real SIGKILL of queue users at proptest-chosen moments: a producer process and a
//! consumer process work on one queue file and are killed from outside after chosen delays
//! (so a kill can land inside a write); afterwards the queue is reopened and drained. Every
//! acknowledged push not acknowledged popped must be there exactly once and in order
//! (except what a pop cut short may have taken), no acknowledged pop comes back, and
//! nothing corrupt or unsent appears.

mod common;
use common::TempDir;

use std::collections::HashSet;
use std::time::Duration;

use ipcprop::check::fork::ChildGroup;
use ipcprop::queue::{FileQueue, QueueConfig};
use proptest::prelude::*;

fn body(id: u32, len: usize) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    v.extend((4..len.max(4)).map(|i| (id as usize * 17 + i) as u8));
    v
}

fn len_of(id: u32) -> usize {
    match id % 11 {
        0 => 20_000, // large enough that a kill can land mid-write
        1..=3 => 900,
        _ => 4 + (id as usize * 7) % 60,
    }
}

fn id_of(m: &[u8]) -> Result<u32, String> {
    let id = u32::from_le_bytes(m.get(..4).ok_or("short message")?.try_into().unwrap());
    if body(id, len_of(id)) != m {
        return Err(format!("message {id} is corrupt"));
    }
    Ok(id)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sigkill_at_any_moment_loses_nothing_acknowledged(
        producer_ms in 0u64..40,
        consumer_ms in 0u64..40,
        batch in 1u32..6,
    ) {
        let dir = TempDir::new("kill");
        let path = dir.0.join("q");
        FileQueue::open(&path, QueueConfig::new()).unwrap();
        let mut group = ChildGroup::new();
        let p = &path;
        group.spawn("producer", move |rep| {
            let q = FileQueue::open(p, QueueConfig::new()).map_err(|e| e.to_string())?;
            let mut id = 0u32;
            loop {
                let msgs: Vec<Vec<u8>> = (id..id + batch).map(|i| body(i, len_of(i))).collect();
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                // Announce, push, acknowledge: the parent learns what was in flight.
                rep.record(&[b'T', batch as u8].iter().chain(&id.to_le_bytes()).copied().collect::<Vec<u8>>());
                q.push_batch(&refs).map_err(|e| e.to_string())?;
                rep.record(&[b'P'].iter().chain(&id.to_le_bytes()).copied().collect::<Vec<u8>>());
                id += batch;
            }
        }).unwrap();
        group.spawn("consumer", move |rep| {
            let q = FileQueue::open(p, QueueConfig::new()).map_err(|e| e.to_string())?;
            loop {
                rep.record(b"t");
                if let Some(m) = q.pop_timeout(Duration::from_millis(5)).map_err(|e| e.to_string())? {
                    rep.record(&[b'C'].iter().chain(&m[..4]).copied().collect::<Vec<u8>>());
                }
            }
        }).unwrap();
        let pids = group.pids();
        std::thread::sleep(Duration::from_millis(producer_ms.min(consumer_ms)));
        let (first, second, gap) = if producer_ms <= consumer_ms {
            (pids[0], pids[1], consumer_ms - producer_ms)
        } else {
            (pids[1], pids[0], producer_ms - consumer_ms)
        };
        let kill = |pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        kill(first);
        std::thread::sleep(Duration::from_millis(gap));
        kill(second);
        let reports = group.wait(Duration::from_secs(30));
        let (prod, cons) = (&reports[0], &reports[1]);
        let mut acked_pushes = Vec::new();
        let mut in_flight = Vec::new();
        for r in &prod.records {
            match r[0] {
                b'T' => {
                    let first = u32::from_le_bytes(r[2..6].try_into().unwrap());
                    in_flight = (first..first + r[1] as u32).collect();
                }
                b'P' => acked_pushes.append(&mut in_flight),
                _ => {}
            }
        }
        let mut acked_pops = HashSet::new();
        let mut pop_in_flight = false;
        for r in &cons.records {
            match r[0] {
                b't' => pop_in_flight = true,
                b'C' => {
                    acked_pops.insert(u32::from_le_bytes(r[1..5].try_into().unwrap()));
                    pop_in_flight = false;
                }
                _ => {}
            }
        }
        let q = FileQueue::open(&path, QueueConfig::new()).unwrap();
        let left = q.pop_batch(usize::MAX).unwrap();
        let left: Vec<u32> = left.iter().map(|m| id_of(m)).collect::<Result<_, _>>().map_err(TestCaseError::fail)?;
        prop_assert!(left.windows(2).all(|w| w[0] < w[1]), "order or duplicates: {:?}", left);
        let sent: HashSet<u32> = acked_pushes.iter().chain(&in_flight).copied().collect();
        for id in &left {
            prop_assert!(!acked_pops.contains(id), "message {} came back after its pop", id);
            prop_assert!(sent.contains(id), "message {} was never pushed", id);
        }
        let present: HashSet<u32> = left.iter().copied().collect();
        let pending: Vec<u32> = acked_pushes.iter().copied().filter(|id| !acked_pops.contains(id)).collect();
        // A pop cut short by the kill may have committed its message without telling us.
        let skip = usize::from(pop_in_flight);
        for id in pending.iter().skip(skip) {
            prop_assert!(present.contains(id), "acknowledged message {} was lost", id);
        }
    }
}
