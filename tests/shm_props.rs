//! Property tests of the shared-memory ring across real forks: generated plans over a small
//! ring (so it fills and wraps constantly), boundary sizes including sizes that land
//! exactly on the wrap point, slow and fast sides, SIGKILL of either side at a chosen step,
//! a receiver that leaves early, and a peer process that scribbles over the memory.

mod common;

use std::time::Duration;

use ipcprop::check::builtin::RingTransport;
use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::check::plan::{plan_strategy, PlanLimits};
use ipcprop::check::{run_case, Plan, RunConfig, Transport};
use ipcprop::shm::{self, RingConfig};
use ipcprop::{Error, Receiver, Sender};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    common::prop_config(cases, "shm_props")
}

fn small_ring() -> RingTransport {
    RingTransport {
        config: RingConfig::new().with_capacity(4096),
    }
}

/// Every test here (every proptest case) fails, rather than hangs, past this.
const LIMIT: Duration = Duration::from_secs(60);

fn assert_passes(plan: &Plan) -> Result<(), TestCaseError> {
    let plan = plan.clone();
    common::within(LIMIT, move || {
        let outcome = run_case(&small_ring(), &plan, &RunConfig::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(outcome.passed(), "{}", outcome.report());
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn generated_plans_deliver_in_order_intact(plan in plan_strategy(&small_ring().capabilities(), &PlanLimits::default())) {
        assert_passes(&plan)?;
    }

    #[test]
    fn a_killed_sender_leaves_an_intact_prefix(
        plan in plan_strategy(&small_ring().capabilities(), &PlanLimits::default()),
        at in any::<prop::sample::Index>(),
    ) {
        let mut plan = plan;
        let n = plan.senders[0].sizes.len();
        plan.senders[0].kill_after = Some(at.index(n + 1));
        assert_passes(&plan)?;
    }

    #[test]
    fn a_killed_receiver_never_hangs_the_sender(
        plan in plan_strategy(&small_ring().capabilities(), &PlanLimits::default()),
        at in 0usize..12,
    ) {
        let mut plan = plan;
        plan.receiver.kill_after = Some(at);
        plan.receiver.close_after = None;
        assert_passes(&plan)?;
    }

    #[test]
    fn a_receiver_that_leaves_never_hangs_the_sender(
        plan in plan_strategy(&small_ring().capabilities(), &PlanLimits::default()),
        at in 0usize..12,
    ) {
        let mut plan = plan;
        plan.receiver.close_after = Some(at);
        assert_passes(&plan)?;
    }
}

#[test]
fn every_boundary_size_round_trips() {
    common::within(LIMIT, move || {
        let caps = small_ring().capabilities();
        // Each size four times in a row: the ring wraps at every alignment these sizes reach.
        let sizes: Vec<usize> = caps.boundary_sizes.iter().flat_map(|&s| [s; 4]).collect();
        assert!(caps.boundary_sizes.contains(&2040) && caps.boundary_sizes.contains(&1016));
        let outcome = run_case(
            &small_ring(),
            &Plan::simple(9, sizes),
            &RunConfig::default(),
        )
        .unwrap();
        assert!(outcome.passed(), "{}", outcome.report());
    })
}

proptest! {
    #![proptest_config(config(24))]

    /// A third process scribbles random bytes over the header or data while a sender sends
    /// and the receiver receives: the receiver ends (never hangs), with each message either
    /// intact or an error; nothing panics.
    #[test]
    fn a_scribbling_peer_process_causes_errors_not_hangs(
        scribbles in proptest::collection::vec((0usize..8192, proptest::collection::vec(any::<u8>(), 1..16)), 1..20),
        sizes in proptest::collection::vec(0usize..2041, 1..60),
    ) {
        common::within(LIMIT, move || -> Result<(), TestCaseError> {
            let (tx, rx) = shm::channel_with(RingConfig::new().with_capacity(4096)).unwrap();
            let map = memmap2::MmapOptions::new().len(8192).map_raw(&tx.memory_fd()).unwrap();
            let (mut tx, mut rx) = (Some(tx), Some(rx));
            let mut group = ChildGroup::new();
            group.spawn("sender", |_| {
                drop(rx.take());
                let tx = tx.as_mut().ok_or("no sender")?;
                for &s in &sizes {
                    match tx.send_timeout(&vec![0xab; s], Duration::from_millis(50)) {
                        Ok(()) | Err(Error::Timeout(_)) => {}
                        Err(_) => break, // Corrupt or Disconnected: stop, as a real sender would
                    }
                }
                Ok(())
            }).unwrap();
            group.spawn("scribbler", |_| {
                drop(tx.take());
                drop(rx.take());
                for (off, bytes) in &scribbles {
                    let off = (*off).min(8192 - bytes.len());
                    // SAFETY: in bounds of a live shared mapping; being a hostile peer is the point.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr().add(off), bytes.len()) };
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(())
            }).unwrap();
            drop(tx.take());
            let mut rx = rx.take().unwrap();
            let mut outcome = None;
            for _ in 0..10_000 {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(m) => prop_assert!(m.len() <= 2040),
                    Err(e @ (Error::Disconnected | Error::Corrupt(_) | Error::Timeout(_))) => {
                        outcome = Some(e);
                        break;
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e:?}"),
                }
            }
            prop_assert!(outcome.is_some(), "the receiver never ended");
            drop(rx); // the sender then learns it is gone, rather than time out message by message
            let reports = group.wait(Duration::from_secs(20));
            for r in reports {
                prop_assert_eq!(r.end, ChildEnd::Returned, "{}", r.name);
            }
            Ok(())
        })?;
    }
}
