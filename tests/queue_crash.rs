//! The file queue's crash safety, proven on a simulated disk (`queue::storage::SimDisk`):
//! a crash point walked over every I/O of generated workloads, with the machine losing
//! power (sync mode: everything acknowledged survives; the unsynced rest survives in a
//! random subset, possibly torn) or only the process dying (the page cache survives);
//! faults injected (short writes, ENOSPC, EIO, failed fsync); and a model test against a
//! `VecDeque` with reopens and crashes in the sequence.

use std::collections::{HashSet, VecDeque};

use ipcprop::queue::storage::{Fault, SimDisk};
use ipcprop::queue::{Durability, QueueConfig, StorageQueue};
use proptest::prelude::*;

/// Message `id` of `len` bytes (at least 4): the id, then a pattern derived from it.
fn body(id: u32, len: usize) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    v.extend((4..len.max(4)).map(|i| (id as usize * 31 + i) as u8));
    v
}

/// The id of a delivered message, checking that its bytes are exactly what was sent.
fn identify(m: &[u8], lens: &[usize]) -> Result<u32, String> {
    if m.len() < 4 {
        return Err(format!("a {}-byte message cannot be ours", m.len()));
    }
    let id = u32::from_le_bytes(m[..4].try_into().unwrap());
    match lens.get(id as usize) {
        Some(&len) if body(id, len) == m => Ok(id),
        _ => Err(format!(
            "message {id} delivered corrupt ({} bytes)",
            m.len()
        )),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Push a batch of messages with these lengths (one message: a plain push).
    Push(Vec<usize>),
    /// Pop up to this many.
    Pop(usize),
    /// Take one under a lease.
    Take,
    /// Acknowledge the oldest outstanding lease.
    Ack,
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![4usize..40, 4usize..400, Just(5000)];
    prop_oneof![
        3 => proptest::collection::vec(len, 1..4).prop_map(Op::Push),
        2 => (1usize..4).prop_map(Op::Pop),
        1 => Just(Op::Take),
        1 => Just(Op::Ack),
    ]
}

/// What the workload managed before it stopped (on the first error).
#[derive(Debug, Default)]
struct Run {
    lens: Vec<usize>,
    acked_pushes: Vec<u32>,
    /// Popped, or acknowledged after a take: gone for good.
    acked_pops: Vec<u32>,
    in_flight_pushes: Vec<u32>,
    /// How many messages a pop cut short may have consumed.
    in_flight_pop: usize,
    /// A message whose acknowledgement was cut short: it may or may not be gone.
    in_flight_ack: Option<u32>,
}

/// Reclaim space eagerly, so resets and compactions (and crashes inside them) happen
/// within these small workloads.
fn config(durability: Durability) -> QueueConfig {
    QueueConfig::new()
        .with_max_message_len(10_000)
        .with_durability(durability)
        .with_reclaim_over(64)
}

/// Runs `ops` on `disk` until the first error.
fn run(disk: &SimDisk, ops: &[Op], durability: Durability) -> Result<Run, String> {
    let mut r = Run::default();
    for op in ops {
        if let Op::Push(lens) = op {
            r.lens.extend(lens); // ids are assigned in order, even if the push fails
        }
    }
    let Ok(mut q) = StorageQueue::open(disk.clone(), config(durability)) else {
        return Ok(r);
    };
    let mut next = 0u32;
    let mut leases = std::collections::VecDeque::new();
    for op in ops {
        match op {
            Op::Take => match q.take() {
                Ok(Some(l)) => {
                    identify(l.message(), &r.lens)?;
                    leases.push_back(l);
                }
                Ok(None) => {}
                Err(_) => return Ok(r), // a take changes nothing that was promised
            },
            Op::Ack => {
                if let Some(l) = leases.pop_front() {
                    let id = identify(l.message(), &r.lens)?;
                    match q.ack(&l) {
                        Ok(()) => r.acked_pops.push(id),
                        Err(_) => {
                            r.in_flight_ack = Some(id);
                            return Ok(r);
                        }
                    }
                }
            }
            Op::Push(lens) => {
                let ids: Vec<u32> = (next..next + lens.len() as u32).collect();
                next += lens.len() as u32;
                let msgs: Vec<Vec<u8>> = ids
                    .iter()
                    .map(|&id| body(id, r.lens[id as usize]))
                    .collect();
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                match q.push_batch(&refs) {
                    Ok(()) => r.acked_pushes.extend(ids),
                    Err(_) => {
                        r.in_flight_pushes = ids;
                        return Ok(r);
                    }
                }
            }
            Op::Pop(n) => match q.pop_batch(*n) {
                Ok(msgs) => {
                    for m in msgs {
                        r.acked_pops.push(identify(&m, &r.lens)?);
                    }
                }
                Err(_) => {
                    r.in_flight_pop = *n;
                    return Ok(r);
                }
            },
        }
    }
    Ok(r)
}

/// After recovery on `image`: every acknowledged push not acknowledged popped is there once,
/// in order (but for what an in-flight pop may have taken); nothing popped comes back;
/// nothing corrupt or never pushed is delivered.
fn check_recovery(image: SimDisk, r: &Run, durability: Durability) -> Result<(), String> {
    let mut q = match StorageQueue::open(image, config(durability)) {
        Ok(q) => q,
        Err(e) if r.acked_pushes.is_empty() => {
            let _ = e; // crashed while creating the queue: nothing was promised
            return Ok(());
        }
        Err(e) => return Err(format!("recovery failed after acknowledged pushes: {e}")),
    };
    let got = q
        .pop_batch(usize::MAX)
        .map_err(|e| format!("draining after recovery: {e}"))?;
    let got: Vec<u32> = got
        .iter()
        .map(|m| identify(m, &r.lens))
        .collect::<Result<_, _>>()?;
    let popped: HashSet<u32> = r.acked_pops.iter().copied().collect();
    let sent: HashSet<u32> = r
        .acked_pushes
        .iter()
        .chain(&r.in_flight_pushes)
        .copied()
        .collect();
    if let Some(w) = got.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!(
            "out of order or duplicated after recovery: {} then {}",
            w[0], w[1]
        ));
    }
    if let Some(id) = got.iter().find(|id| popped.contains(id)) {
        return Err(format!(
            "message {id} came back after its pop was acknowledged"
        ));
    }
    if let Some(id) = got.iter().find(|id| !sent.contains(id)) {
        return Err(format!("message {id} was never pushed"));
    }
    // Every acknowledged push not gone for good must be there (leases of the crashed
    // process expire), but for what an interrupted pop or acknowledgement may have taken.
    let present: HashSet<u32> = got.iter().copied().collect();
    let missing: Vec<u32> = r
        .acked_pushes
        .iter()
        .copied()
        .filter(|id| !popped.contains(id) && !present.contains(id) && Some(*id) != r.in_flight_ack)
        .collect();
    if missing.len() > r.in_flight_pop {
        return Err(format!("acknowledged messages lost: {missing:?}"));
    }
    Ok(())
}

fn total_ops(ops: &[Op], durability: Durability) -> u64 {
    let disk = SimDisk::new();
    run(&disk, ops, durability).expect("a run without faults");
    disk.ops()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Power loss at every I/O of the workload, in sync mode, with two random images each.
    #[test]
    fn power_loss_at_any_io_loses_nothing_acknowledged(ops in proptest::collection::vec(op(), 1..14), seed in any::<u64>()) {
        let n = total_ops(&ops, Durability::Sync);
        for k in 0..=n {
            let disk = SimDisk::new();
            disk.crash_after(k);
            let r = run(&disk, &ops, Durability::Sync).map_err(TestCaseError::fail)?;
            for s in 0..2 {
                let image = disk.after_power_loss(seed.wrapping_add(k * 2 + s));
                check_recovery(image, &r, Durability::Sync).map_err(|e| TestCaseError::fail(format!("crash after I/O {k}, image {s}: {e}")))?;
            }
            // A disk that writes back in any order: a later sector of the last write may
            // land while an earlier one does not (a hole followed by records of the same
            // write, which is a torn tail, not damage).
            for s in 0..2 {
                let image = disk.after_power_loss_sectors(seed.wrapping_add(k * 2 + s));
                check_recovery(image, &r, Durability::Sync).map_err(|e| TestCaseError::fail(format!("crash after I/O {k}, sector image {s}: {e}")))?;
            }
        }
    }

    /// A process killed at any I/O, without fsync: the page cache keeps everything written.
    #[test]
    fn a_process_killed_at_any_io_loses_nothing_acknowledged(ops in proptest::collection::vec(op(), 1..14)) {
        let n = total_ops(&ops, Durability::None);
        for k in 0..=n {
            let disk = SimDisk::new();
            disk.crash_after(k);
            let r = run(&disk, &ops, Durability::None).map_err(TestCaseError::fail)?;
            check_recovery(disk.after_process_crash(), &r, Durability::None)
                .map_err(|e| TestCaseError::fail(format!("crash after I/O {k}: {e}")))?;
        }
    }

    /// Short writes, ENOSPC, EIO and failed fsyncs at any I/O: the operation fails, the
    /// handle is poisoned, and a reopened queue keeps every acknowledged message.
    #[test]
    fn faults_at_any_io_poison_the_handle_and_lose_nothing(
        ops in proptest::collection::vec(op(), 1..12),
        fault in prop_oneof![Just(Fault::ShortWriteThenError), Just(Fault::NoSpace), Just(Fault::Io), Just(Fault::SyncFails)],
    ) {
        let n = total_ops(&ops, Durability::Sync);
        for k in 0..n {
            let disk = SimDisk::new();
            disk.inject(k, fault);
            let r = run(&disk, &ops, Durability::Sync).map_err(TestCaseError::fail)?;
            check_recovery(disk.after_process_crash(), &r, Durability::Sync)
                .map_err(|e| TestCaseError::fail(format!("{fault:?} at I/O {k}: {e}")))?;
        }
    }
}

#[test]
fn a_failed_write_poisons_the_handle() {
    let disk = SimDisk::new();
    let mut q = StorageQueue::open(disk.clone(), config(Durability::Sync)).unwrap();
    q.push(b"kept").unwrap();
    disk.inject(disk.ops() + 3, Fault::SyncFails); // len, slot A, slot B, then the write's sync
    let mut failed = None;
    for _ in 0..3 {
        if let Err(e) = q.push(b"lost") {
            failed = Some(e);
            break;
        }
    }
    assert!(failed.is_some(), "the injected fault never hit");
    let err = q.push(b"refused").unwrap_err();
    assert!(err.to_string().contains("poisoned"), "{err}");
    let mut q = StorageQueue::open(disk.after_process_crash(), config(Durability::Sync)).unwrap();
    assert_eq!(q.pop().unwrap(), Some(b"kept".to_vec()));
}

#[derive(Debug, Clone)]
enum ModelOp {
    Push(usize),
    PushBatch(Vec<usize>),
    Pop,
    PopBatch(usize),
    Peek,
    Take,
    Ack(usize),
    Reopen,
    ProcessCrash,
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    let len = prop_oneof![4usize..30, 4usize..2000, Just(9000)];
    prop_oneof![
        4 => len.clone().prop_map(ModelOp::Push),
        2 => proptest::collection::vec(len, 0..5).prop_map(ModelOp::PushBatch),
        3 => Just(ModelOp::Pop),
        2 => (0usize..6).prop_map(ModelOp::PopBatch),
        1 => Just(ModelOp::Peek),
        2 => Just(ModelOp::Take),
        2 => any::<usize>().prop_map(ModelOp::Ack),
        1 => Just(ModelOp::Reopen),
        1 => Just(ModelOp::ProcessCrash),
    ]
}

proptest! {
    /// Any sequence of operations (pushes, pops, peeks, takes under lease and their
    /// acknowledgements), reopens and process crashes behaves like a `VecDeque` in which
    /// leased entries are hidden, and return to their place when their handle goes away.
    #[test]
    fn the_queue_behaves_like_a_vecdeque(ops in proptest::collection::vec(model_op(), 1..120)) {
        let mut disk = SimDisk::new();
        let mut q = StorageQueue::open(disk.clone(), config(Durability::None)).unwrap();
        // (message, leased by the current handle?)
        let mut model: VecDeque<(Vec<u8>, bool)> = VecDeque::new();
        let mut leases = Vec::new();
        let mut stale = Vec::new();
        let mut next = 0u32;
        let mut make = |len: usize| { next += 1; body(next, len) };
        let first_free = |m: &VecDeque<(Vec<u8>, bool)>| m.iter().position(|(_, leased)| !leased);
        for op in ops {
            match op {
                ModelOp::Push(len) => {
                    let m = make(len);
                    q.push(&m).unwrap();
                    model.push_back((m, false));
                }
                ModelOp::PushBatch(lens) => {
                    let msgs: Vec<Vec<u8>> = lens.into_iter().map(&mut make).collect();
                    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                    q.push_batch(&refs).unwrap();
                    model.extend(msgs.into_iter().map(|m| (m, false)));
                }
                ModelOp::Pop => {
                    let want = first_free(&model).and_then(|i| model.remove(i)).map(|(m, _)| m);
                    prop_assert_eq!(q.pop().unwrap(), want);
                }
                ModelOp::PopBatch(n) => {
                    let want: Vec<Vec<u8>> = (0..n)
                        .map_while(|_| first_free(&model).and_then(|i| model.remove(i)).map(|(m, _)| m))
                        .collect();
                    prop_assert_eq!(q.pop_batch(n).unwrap(), want);
                }
                ModelOp::Peek => {
                    let want = first_free(&model).map(|i| model[i].0.clone());
                    prop_assert_eq!(q.peek().unwrap(), want);
                }
                ModelOp::Take => {
                    let got = q.take().unwrap();
                    match first_free(&model) {
                        Some(i) => {
                            model[i].1 = true;
                            let got = got.expect("a free message to take");
                            prop_assert_eq!(got.message(), &model[i].0[..]);
                            leases.push(got);
                        }
                        None => prop_assert!(got.is_none()),
                    }
                }
                ModelOp::Ack(k) => {
                    if !leases.is_empty() {
                        let l = leases.remove(k % leases.len());
                        q.ack(&l).unwrap();
                        let i = model.iter().position(|(m, leased)| *leased && m[..] == *l.message()).unwrap();
                        model.remove(i);
                    } else if let Some(l) = stale.pop() {
                        // A lease from a handle that is gone is not ours to acknowledge.
                        let l: ipcprop::queue::Leased = l;
                        let lost = matches!(q.ack(&l), Err(ipcprop::Error::LeaseLost { .. }));
                        prop_assert!(lost, "a stale lease was acknowledged");
                    }
                }
                ModelOp::Reopen | ModelOp::ProcessCrash => {
                    if matches!(op, ModelOp::ProcessCrash) {
                        disk = disk.after_process_crash();
                    }
                    q = StorageQueue::open(disk.clone(), config(Durability::None)).unwrap();
                    // The old handle's leases expire: their messages are free again, in place.
                    for e in model.iter_mut() {
                        e.1 = false;
                    }
                    stale.append(&mut leases);
                }
            }
            prop_assert_eq!(q.len().unwrap(), model.len() as u64);
        }
    }
}
