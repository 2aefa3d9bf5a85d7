//! The harness proves itself: every deliberately broken transport is caught, and named with
//! the right violation kind; failures shrink to a minimal plan; the CLI exits non-zero.

use std::process::Command;
use std::time::Duration;

use ipcprop::check::broken::{Broken, Defect};
use ipcprop::check::builtin::{PipeTransport, RingTransport};
use ipcprop::check::{
    campaign, run_case, CampaignConfig, Capabilities, Plan, PlanLimits, RunConfig, Transport,
    ViolationKind,
};
use rstest::rstest;

fn quick() -> RunConfig {
    // Long enough for any healthy case here; short enough that the hang cases are quick.
    RunConfig {
        timeout: Duration::from_secs(2),
        ..RunConfig::default()
    }
}

#[rstest]
fn each_broken_transport_is_caught_and_named(
    // Long messages, and short ones without room for an identity. (A defect that turns one
    // message into exactly another one of the plan, such as truncating a 1-byte message to
    // an empty one among other empty ones, cannot be told apart by content: it shows as a
    // reorder or a duplicate instead.)
    #[values(vec![16, 40, 3, 100, 5000, 20, 33], vec![0, 0, 2, 0, 9, 0, 1])] sizes: Vec<usize>,
) {
    // Every defect a plain plan can show, taken from `Defect::ALL` (no second list to keep
    // in step); the others are in `each_contract_check_catches_its_defect`.
    for defect in Defect::ALL
        .into_iter()
        .filter(Defect::shows_in_a_plain_plan)
    {
        let sizes = sizes.clone();
        let plan = Plan::simple(11, sizes);
        let outcome = run_case(
            &Broken::new(PipeTransport::default(), defect),
            &plan,
            &quick(),
        )
        .unwrap();
        let kinds: Vec<ViolationKind> = outcome.violations.iter().map(|v| v.kind()).collect();
        assert!(
            kinds.contains(&defect.expected()),
            "{defect:?} not caught as {}:\n{}",
            defect.expected(),
            outcome.report()
        );
        // The defect is named, not buried: for message defects nothing else is reported.
        if !matches!(defect, Defect::HangAfter(_) | Defect::IgnoreClose) {
            assert!(
                kinds.iter().all(|k| *k == defect.expected()),
                "{}",
                outcome.report()
            );
        }
    }
}

#[test]
fn a_crash_report_carries_the_panic_message() {
    let plan = Plan::simple(5, vec![10, 10, 10, 10]);
    let outcome = run_case(
        &Broken::new(PipeTransport::default(), Defect::PanicOn(1)),
        &plan,
        &quick(),
    )
    .unwrap();
    let report = outcome.report();
    assert!(report.contains("[crashed] sender 0 panicked"), "{report}");
    assert!(report.contains("deliberate panic on message 1"), "{report}");
    assert!(
        report.contains("src/check/broken.rs"),
        "the location is reported: {report}"
    );
}

#[test]
fn the_correct_transport_passes_the_same_plans() {
    for sizes in [
        vec![16, 40, 3, 100, 5000, 20, 33],
        vec![0, 0, 2, 0, 9, 0, 1],
    ] {
        let outcome = run_case(
            &PipeTransport::default(),
            &Plan::simple(11, sizes),
            &quick(),
        )
        .unwrap();
        assert!(outcome.passed(), "{}", outcome.report());
    }
}

#[test]
fn a_hang_report_says_what_each_process_was_doing() {
    let plan = Plan::simple(5, vec![10, 10, 10, 10]);
    let outcome = run_case(
        &Broken::new(PipeTransport::default(), Defect::HangAfter(2)),
        &plan,
        &quick(),
    )
    .unwrap();
    let report = outcome.report();
    assert!(
        report.contains("receiver hung while waiting to receive after 2 messages"),
        "{report}"
    );
    assert!(
        report.contains("timeline (") && report.contains("sent s0#3"),
        "{report}"
    );
}

#[test]
fn a_campaign_shrinks_a_failure_to_the_minimal_plan() {
    let config = CampaignConfig {
        cases: 64,
        seed: 1,
        limits: PlanLimits {
            size_cap: 64 * 1024,
            ..PlanLimits::default()
        },
        run: quick(),
        ..CampaignConfig::default()
    };
    let report = campaign(
        &Broken::new(PipeTransport::default(), Defect::Drop(2)),
        &config,
        &mut |_| {},
    )
    .unwrap();
    let failure = report
        .failure
        .expect("a transport that drops a message passed the campaign");
    let minimal = &failure.minimal;
    // Dropping the third message needs exactly three messages from one sender, no faults.
    assert_eq!(minimal.plan.senders.len(), 1, "{}", minimal.report());
    assert_eq!(minimal.plan.message_count(), 3, "{}", minimal.report());
    // Each message shrinks to 0 bytes, or to the 8 that carry its identity if it was
    // generated at least that long.
    assert!(
        minimal.plan.senders[0]
            .sizes
            .iter()
            .all(|&s| s == 0 || s == ipcprop::check::history::ID_LEN),
        "{}",
        minimal.report()
    );
    assert_eq!(minimal.violations.len(), 1, "{}", minimal.report());
    assert_eq!(minimal.violations[0].kind(), ViolationKind::Lost);
    // Cases per second count the generated cases' time, not the shrinking's.
    assert!(
        report.case_time > Duration::ZERO && report.case_time < report.elapsed,
        "{:?} of {:?}",
        report.case_time,
        report.elapsed
    );
}

/// A transport correct in every process but the first to make a pair, where it drops
/// each sender's third message: with workers, one of them fails and the other does not.
struct OneWorkerDrops {
    marker: std::path::PathBuf,
}

impl OneWorkerDrops {
    /// True in the process that claimed the marker first.
    fn mine(&self) -> bool {
        let me = std::process::id().to_string();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.marker)
        {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, me.as_bytes()).unwrap();
                true
            }
            Err(_) => std::fs::read_to_string(&self.marker).unwrap_or_default() == me,
        }
    }

    fn with(defect: Defect) -> Broken<PipeTransport> {
        Broken::new(PipeTransport::default(), defect)
    }
}

impl Transport for OneWorkerDrops {
    type Sender = <Broken<PipeTransport> as Transport>::Sender;
    type Receiver = <Broken<PipeTransport> as Transport>::Receiver;

    fn name(&self) -> String {
        "one-worker-drops".into()
    }

    fn capabilities(&self) -> Capabilities {
        Self::with(Defect::Drop(2)).capabilities()
    }

    fn pair(&self, senders: usize) -> ipcprop::Result<(Self::Sender, Self::Receiver)> {
        // Dropping message usize::MAX drops nothing: the correct pipe, of the same type.
        let defect = if self.mine() {
            Defect::Drop(2)
        } else {
            Defect::Drop(usize::MAX)
        };
        Self::with(defect).pair(senders)
    }
}

/// With several workers, the first failure stops the others at their next case: the
/// worker that never fails does not run its whole share.
#[test]
fn a_failing_worker_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let transport = OneWorkerDrops {
        marker: dir.path().join("claimed"),
    };
    let config = CampaignConfig {
        cases: 600,
        jobs: 2,
        seed: 3,
        limits: PlanLimits {
            size_cap: 64 * 1024,
            ..PlanLimits::default()
        },
        run: quick(),
        reproduce_runs: 2,
        ..CampaignConfig::default()
    };
    let mut seen = 0;
    let report = campaign(&transport, &config, &mut |_| seen += 1).unwrap();
    let failure = report.failure.expect("the dropping worker failed");
    assert_eq!(
        failure.minimal.violations[0].kind(),
        ViolationKind::Lost,
        "{}",
        failure.report()
    );
    assert_eq!(seen, report.cases, "every worker's case was passed on");
    // The correct worker's share alone is 300 cases.
    assert!(report.cases < 200, "{} cases ran", report.cases);
}

/// Cases split over workers add up, and each worker's seed is its own.
#[test]
fn a_campaign_over_workers_runs_every_case_once() {
    let config = CampaignConfig {
        cases: 7,
        jobs: 3,
        run: quick(),
        ..CampaignConfig::default()
    };
    let mut seen = 0;
    let report = campaign(&RingTransport::default(), &config, &mut |_| seen += 1).unwrap();
    assert!(report.failure.is_none());
    assert_eq!((report.cases, seen), (7, 7));
    assert!(report.messages > 0 && report.case_time <= report.elapsed);
}

#[test]
fn the_cli_exits_non_zero_and_prints_the_minimal_plan() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipcprop"))
        .args([
            "check",
            "--transport",
            "broken-drop",
            "--cases",
            "30",
            "--seed",
            "2",
            "--timeout",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("minimal failing case"), "{stdout}");
    assert!(stdout.contains("[lost]"), "{stdout}");
    assert!(stdout.contains("--seed 2"), "{stdout}");
}

/// The battery (what `conformance_tests!` runs) catches each broken transport, and names
/// the defect with the right violation kind.
#[test]
fn the_battery_catches_each_broken_transport() {
    use ipcprop::check::battery::{run_battery, BatteryConfig};
    // What is asked is whether each defect is caught and named, not how small its plan
    // shrinks or how often it fails again: no shrinking, no recount.
    let cfg = BatteryConfig {
        cases: 4,
        run: quick(),
        max_shrink_iters: 0,
        reproduce_runs: 0,
        ..BatteryConfig::default()
    };
    // Hangs cost a watchdog per generated case and shrinking step: they have their own
    // fixed-plan test below.
    let hangs = |d: &Defect| matches!(d, Defect::HangAfter(_) | Defect::IgnoreClose);
    for defect in Defect::ALL
        .into_iter()
        .filter(|d| d.shows_in_a_plain_plan() && !hangs(d))
    {
        let findings = run_battery(&Broken::new(PipeTransport::default(), defect), &cfg);
        assert!(!findings.is_empty(), "{defect:?} passed the battery");
        assert!(
            findings
                .iter()
                .any(|f| f.kinds.contains(&defect.expected())),
            "{defect:?} not named {}: {:?}",
            defect.expected(),
            findings
                .iter()
                .map(|f| (f.check, f.kinds.clone()))
                .collect::<Vec<_>>()
        );
    }
}

/// Defects against one contract each (timeouts, declared limits, a receiver that leaves,
/// descriptors) are caught by the battery check for that contract: every check has a
/// broken transport that fails it. (`LockAcrossSend` is caught by the nemesis check, in
/// tests/nemesis.rs.)
#[test]
fn each_contract_check_catches_its_defect() {
    use ipcprop::check::battery::{
        boundary_sizes, descriptors_cloexec, disconnect_on_sigkill, fifo_and_integrity,
        hostile_sizes_refused, receiver_gone, timeouts_honoured, BatteryConfig,
    };
    let cfg = BatteryConfig {
        cases: 8,
        run: quick(),
        max_shrink_iters: 0,
        reproduce_runs: 0,
        ..BatteryConfig::default()
    };
    let broken = |d| Broken::new(PipeTransport::default(), d);
    let cases = [
        (
            Defect::EarlyTimeout,
            timeouts_honoured(&broken(Defect::EarlyTimeout), &cfg),
        ),
        (
            Defect::TimeoutRoundedDown,
            timeouts_honoured(&broken(Defect::TimeoutRoundedDown), &cfg),
        ),
        (
            Defect::LateTimeout,
            timeouts_honoured(&broken(Defect::LateTimeout), &cfg),
        ),
        (
            Defect::BlindTryRecv,
            timeouts_honoured(&broken(Defect::BlindTryRecv), &cfg),
        ),
        (
            Defect::WrongLimit,
            hostile_sizes_refused(&broken(Defect::WrongLimit), &cfg),
        ),
        (
            Defect::HangWhenReceiverGone,
            receiver_gone(&broken(Defect::HangWhenReceiverGone), &cfg),
        ),
        (
            Defect::HangOnLargeSendWhenReceiverGone,
            receiver_gone(&broken(Defect::HangOnLargeSendWhenReceiverGone), &cfg),
        ),
        (
            Defect::LeakyDescriptor,
            descriptors_cloexec(&broken(Defect::LeakyDescriptor), &cfg),
        ),
        (
            Defect::SlowDisconnect,
            disconnect_on_sigkill(&broken(Defect::SlowDisconnect), &cfg),
        ),
        (
            Defect::PowerOfTwoMinusHeader,
            boundary_sizes(&broken(Defect::PowerOfTwoMinusHeader), &cfg),
        ),
        (
            Defect::BatchAfterSend,
            fifo_and_integrity(&broken(Defect::BatchAfterSend), &cfg),
        ),
    ];
    for (defect, result) in cases {
        let finding = result.expect_err("a broken contract passed its check");
        assert!(
            finding.kinds.contains(&defect.expected()),
            "{defect:?}: {finding}"
        );
    }
    // And the list above is every defect a plain plan does not show.
    let contract: Vec<Defect> = Defect::ALL
        .into_iter()
        .filter(|d| !d.shows_in_a_plain_plan())
        .collect();
    assert_eq!(
        contract,
        [
            Defect::EarlyTimeout,
            Defect::TimeoutRoundedDown,
            Defect::LateTimeout,
            Defect::BlindTryRecv,
            Defect::WrongLimit,
            Defect::HangWhenReceiverGone,
            Defect::HangOnLargeSendWhenReceiverGone,
            Defect::LockAcrossSend,
            Defect::LeakyDescriptor,
            Defect::SlowDisconnect,
            // Caught by forged_length_refused and sends_fail_after_receiver_gone, in
            // tests/limits.rs.
            Defect::AllocatesClaimedLength,
            Defect::SilentWhenReceiverGone,
            // Caught by faults_inside_operations, in tests/nemesis.rs.
            Defect::EndOnAnySenderDeath,
            Defect::PowerOfTwoMinusHeader,
            Defect::BatchAfterSend,
            // Caught by send_deadlines_all_or_nothing, in tests/deadlines.rs.
            Defect::SentButFull,
            Defect::SendTimeoutEarly,
        ]
    );
}

/// Hangs are caught too (by a fixed-plan check: a generated one would shrink through many
/// watchdog timeouts).
#[rstest]
fn the_battery_catches_hangs(#[values(Defect::HangAfter(2), Defect::IgnoreClose)] defect: Defect) {
    use ipcprop::check::battery::{disconnect_on_drop, BatteryConfig};
    let cfg = BatteryConfig {
        run: quick(),
        ..BatteryConfig::default()
    };
    let finding =
        disconnect_on_drop(&Broken::new(PipeTransport::default(), defect), &cfg).unwrap_err();
    assert!(finding.kinds.contains(&ViolationKind::Hung), "{finding}");
    // The checks that receive outside a case do it in a child under the watchdog: a
    // receiver that blocks for good fails them, and never hangs the process running them.
    use ipcprop::check::battery::{hostile_sizes_refused, timeouts_honoured};
    let t = Broken::new(PipeTransport::default(), defect);
    if defect == Defect::IgnoreClose {
        let finding = hostile_sizes_refused(&t, &cfg).unwrap_err();
        assert!(finding.kinds.contains(&ViolationKind::Hung), "{finding}");
        assert!(finding.report.contains("never came"), "{finding}");
    }
    let _ = timeouts_honoured(
        &Broken::new(PipeTransport::default(), Defect::HangAfter(0)),
        &cfg,
    )
    .unwrap_err();
}

/// The crash-recovery check of persistent transports can fail: a queue that drops a
/// message, or acknowledges before writing, loses acknowledged messages across the kills.
#[rstest]
fn crash_recovery_catches_losses_in_a_persistent_transport(
    #[values(Defect::Drop(2), Defect::LoseUnflushed)] defect: Defect,
) {
    use ipcprop::check::battery::{crash_recovery, BatteryConfig};
    use ipcprop::check::builtin::QueueTransport;
    let t = Broken::new(QueueTransport::new().unwrap(), defect);
    let finding = crash_recovery(&t, &BatteryConfig::default())
        .expect_err("a lossy queue passed crash recovery");
    assert!(finding.kinds.contains(&ViolationKind::Lost), "{finding}");
}

/// `IPCPROP_SAVE` keeps a failure's report in a file, for the record and for replay.
#[test]
fn a_finding_can_be_saved_for_replay() {
    use ipcprop::check::battery::{disconnect_on_drop, save_finding, BatteryConfig};
    let finding = disconnect_on_drop(
        &Broken::new(PipeTransport::default(), Defect::Drop(2)),
        &BatteryConfig::default(),
    )
    .expect_err("a dropped message is a finding");
    let dir = std::env::temp_dir().join(format!("ipcprop-save-finding-{}", std::process::id()));
    // No other test in this binary reads IPCPROP_SAVE.
    std::env::set_var("IPCPROP_SAVE", &dir);
    save_finding("broken pipe", &finding);
    std::env::remove_var("IPCPROP_SAVE");
    let text = std::fs::read_to_string(dir.join("broken pipe-disconnect_on_drop.txt")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        text.contains("[lost]") && text.contains("timeline ("),
        "{text}"
    );
}

/// `ipcprop check --json` carries what the campaign covered: faults by kind (summing to the
/// faults applied, of which those inside an operation are a part) and the largest message.
#[test]
fn the_cli_reports_faults_by_kind_and_the_largest_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipcprop"))
        .args(["check", "--transport", "pipe", "--cases", "16", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pipe = &json["transports"][0];
    let num = |key: &str| {
        pipe[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {text}"))
    };
    let kinds = &pipe["fault_kinds"];
    let kind = |key: &str| {
        kinds[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {text}"))
    };
    let faults = num("faults");
    assert_eq!(
        kind("kills") + kind("pauses") + kind("storms"),
        faults,
        "{text}"
    );
    assert!(num("faults_inside") <= faults, "{text}");
    assert!(
        faults > 0,
        "16 cases with the nemesis applied no fault: {text}"
    );
    assert!(
        num("largest") > 0 && num("largest") <= num("bytes"),
        "{text}"
    );
}

/// A report lists at most five violations of a kind and counts the rest, so a hundred
/// messages lost after one fault do not bury the one line that matters.
#[test]
fn a_report_lists_five_violations_of_a_kind_and_counts_the_rest() {
    use ipcprop::check::history::MsgId;
    use ipcprop::check::Violation;
    let mut outcome = run_case(
        &PipeTransport::default(),
        &Plan::simple(1, vec![1]),
        &quick(),
    )
    .unwrap();
    outcome.violations = (0..8)
        .map(|seq| Violation::Lost {
            id: MsgId { sender: 0, seq },
        })
        .chain([Violation::Crashed {
            process: "receiver".into(),
            detail: "the one that matters".into(),
        }])
        .collect();
    let lines = outcome.violation_lines();
    assert_eq!(lines.matches("[lost] message").count(), 5, "{lines}");
    assert!(
        lines.contains("[lost] ... and 3 more like these"),
        "{lines}"
    );
    assert!(lines.contains("the one that matters"), "{lines}");
    assert!(outcome.report().contains("and 3 more like these"));
}

/// A transport that declares no maximum (`Capabilities::UNBOUNDED`) is planned up to the
/// size cap: its largest messages are the cap, and the oversize check does not apply.
#[test]
fn an_unbounded_transport_is_planned_up_to_the_size_cap() {
    use ipcprop::check::battery::{boundary_sizes, hostile_sizes_refused, BatteryConfig};
    use ipcprop::check::{Capabilities, Transport};
    struct Unbounded;
    impl Transport for Unbounded {
        type Sender = <PipeTransport as Transport>::Sender;
        type Receiver = <PipeTransport as Transport>::Receiver;
        fn name(&self) -> String {
            "unbounded".into()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::new(Capabilities::UNBOUNDED)
        }
        fn pair(&self, senders: usize) -> ipcprop::Result<(Self::Sender, Self::Receiver)> {
            PipeTransport::default().pair(senders)
        }
    }
    assert!(Unbounded.capabilities().unbounded());
    let cfg = BatteryConfig {
        size_cap: 300 * 1024,
        run: quick(),
        ..BatteryConfig::default()
    };
    boundary_sizes(&Unbounded, &cfg).unwrap();
    hostile_sizes_refused(&Unbounded, &cfg).unwrap();
    let report = ipcprop::check::run(
        &Unbounded,
        &CampaignConfig {
            cases: 16,
            limits: PlanLimits {
                size_cap: cfg.size_cap,
                ..PlanLimits::default()
            },
            ..CampaignConfig::default()
        },
    )
    .unwrap();
    assert!(report.failure.is_none());
    assert!(
        report.largest <= cfg.size_cap as u64,
        "{}",
        report.coverage()
    );
}
