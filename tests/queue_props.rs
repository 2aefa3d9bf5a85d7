//! The file queue as a channel under the fork harness: generated plans across real
//! processes (several senders, batches, pacing, a sender or the receiver SIGKILLed at a
//! chosen step, a receiver that leaves early), checked for loss, duplication, reordering,
//! corruption and hangs. Failures shrink and are kept in proptest-regressions/queue_props.txt.

mod common;

use ipcprop::check::builtin::QueueTransport;
use ipcprop::check::plan::{plan_strategy, PlanLimits};
use ipcprop::check::{run_case, Plan, RunConfig, Transport};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    common::prop_config(cases, "queue_props")
}

fn limits() -> PlanLimits {
    PlanLimits {
        size_cap: 128 * 1024,
        ..PlanLimits::default()
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn generated_plans_deliver_everything_once_in_order(plan in plan_strategy(&QueueTransport::new().unwrap().capabilities(), &limits())) {
        let t = QueueTransport::new().unwrap();
        let outcome = run_case(&t, &plan, &RunConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(outcome.passed(), "{}", outcome.report());
    }
}

#[test]
fn every_boundary_size_round_trips() {
    let t = QueueTransport::new().unwrap();
    let sizes: Vec<usize> = t
        .capabilities()
        .boundary_sizes
        .iter()
        .flat_map(|&s| [s, s])
        .collect();
    let outcome = run_case(&t, &Plan::simple(4, sizes), &RunConfig::default()).unwrap();
    assert!(outcome.passed(), "{}", outcome.report());
}
