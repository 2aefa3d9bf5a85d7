//! Property tests of the pipe channel across real forks: generated plans (sizes weighted to
//! the boundaries, several senders, pacing, batches, a sender SIGKILLed at a chosen step, a
//! receiver that leaves early), with and without injected short reads, short writes,
//! `EINTR` and `EAGAIN`. A failure shrinks to a minimal plan and is persisted in
//! `proptest-regressions/pipe_props.txt`.

mod common;

use ipcprop::check::builtin::{FaultyPipeTransport, PipeTransport};
use ipcprop::check::plan::{plan_strategy, Capabilities, PlanLimits};
use ipcprop::check::{run_case, Plan, RunConfig, Transport};
use ipcprop::pipe::fault::FaultSchedule;
use ipcprop::pipe::PipeConfig;
use proptest::prelude::*;
use rstest::rstest;

fn config(cases: u32) -> ProptestConfig {
    common::prop_config(cases, "pipe_props")
}

/// Limits that keep a case to a few milliseconds; the maximum size has its own test below.
fn limits() -> PlanLimits {
    PlanLimits {
        size_cap: 300 * 1024,
        ..PlanLimits::default()
    }
}

fn single_sender_caps() -> Capabilities {
    Capabilities {
        multi_sender: None,
        ..PipeTransport::default().capabilities()
    }
}

fn several_senders_caps() -> Capabilities {
    PipeTransport::default().capabilities()
}

fn assert_passes<T: Transport>(t: &T, plan: &Plan) -> Result<(), TestCaseError> {
    let outcome =
        run_case(t, plan, &RunConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(outcome.passed(), "{}", outcome.report());
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn one_sender_delivers_everything_in_order(plan in plan_strategy(&single_sender_caps(), &limits())) {
        assert_passes(&PipeTransport::default(), &plan)?;
    }

    #[test]
    fn several_senders_never_interleave(
        plan in plan_strategy(&several_senders_caps(), &PlanLimits { max_senders: 4, ..limits() })
            .prop_filter("several senders", |p| p.senders.len() > 1)
    ) {
        assert_passes(&PipeTransport::default(), &plan)?;
    }

    #[test]
    fn short_reads_short_writes_eintr_eagain_change_nothing(
        schedule in FaultSchedule::strategy(),
        plan in plan_strategy(&several_senders_caps(), &limits()),
    ) {
        assert_passes(&FaultyPipeTransport::new(schedule), &plan)?;
    }

    #[test]
    fn a_killed_sender_leaves_an_intact_prefix_then_disconnected(
        plan in plan_strategy(&several_senders_caps(), &limits()),
        at in any::<prop::sample::Index>(),
    ) {
        let mut plan = plan;
        let victim = at.index(plan.senders.len());
        let n = plan.senders[victim].sizes.len();
        plan.senders[victim].kill_after = Some(at.index(n + 1));
        assert_passes(&PipeTransport::default(), &plan)?;
    }

    #[test]
    fn a_receiver_gone_gives_senders_an_error_not_a_hang(
        plan in plan_strategy(&several_senders_caps(), &limits()),
        after in 0usize..10,
    ) {
        let mut plan = plan;
        plan.receiver.close_after = Some(after);
        assert_passes(&PipeTransport::default(), &plan)?;
    }
}

/// Every boundary size of the pipe, including the 16 MiB maximum, twice in a row.
#[rstest]
fn every_boundary_size_round_trips(#[values(false, true)] faults: bool) {
    let caps = PipeTransport::default().capabilities();
    let mut sizes = caps.boundary_sizes.clone();
    sizes.extend([0, 1]);
    sizes.sort_unstable();
    sizes.dedup();
    let doubled: Vec<usize> = sizes.iter().flat_map(|&s| [s, s]).collect();
    let plan = Plan::simple(0xb0da_c1e5, doubled);
    let outcome = if faults {
        let schedule = FaultSchedule::new(vec![
            ipcprop::pipe::fault::Fault::Short(3),
            ipcprop::pipe::fault::Fault::Interrupted,
            ipcprop::pipe::fault::Fault::Pass,
        ]);
        run_case(
            &FaultyPipeTransport::new(schedule),
            &plan,
            &RunConfig::default(),
        )
    } else {
        run_case(&PipeTransport::default(), &plan, &RunConfig::default())
    }
    .unwrap();
    assert!(outcome.passed(), "{}", outcome.report());
    assert_eq!(outcome.messages, plan.message_count());
    assert!(sizes.contains(&(16 * 1024 * 1024)));
}

#[test]
fn a_smaller_configured_maximum_is_respected_end_to_end() {
    let t = PipeTransport {
        config: PipeConfig::new().with_max_message_len(5000),
    };
    let plan = Plan::simple(3, vec![4999, 5000, 0, 5000]);
    let outcome = run_case(&t, &plan, &RunConfig::default()).unwrap();
    assert!(outcome.passed(), "{}", outcome.report());
}
