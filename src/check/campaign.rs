//! Many generated cases over one transport, shrinking the first failure to a minimal plan.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use super::case::{run_case, CaseOutcome, RunConfig};
use super::interrupt;
use super::plan::{plan_strategy, Plan, PlanLimits};
use super::{Transport, ViolationKind};
use crate::error::Result;

/// How to run a campaign.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// How many generated cases to run (before any shrinking).
    pub cases: u32,
    /// The seed of the plan generator: the same seed gives the same plans.
    pub seed: u64,
    /// Bounds on generated plans.
    pub limits: PlanLimits,
    /// How each case runs.
    pub run: RunConfig,
    /// Most shrinking steps to spend on a failure.
    pub max_shrink_iters: u32,
    /// Most time to spend shrinking a failure: shrinking stops at the smallest failing plan
    /// found by then (a failure that hangs costs a progress bound per step).
    pub max_shrink_time: Duration,
    /// How many times the minimal failing plan is run again to count how often it fails
    /// ([`Failure::reproduced`]), within 20 seconds; 0 skips the count.
    pub reproduce_runs: u32,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            cases: 64,
            seed: 0,
            limits: PlanLimits::default(),
            run: RunConfig::default(),
            max_shrink_iters: 256,
            max_shrink_time: Duration::from_secs(90),
            reproduce_runs: 10,
        }
    }
}

/// The first failure of a campaign, shrunk.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The minimal failing case proptest shrank to, run once more for its history.
    pub minimal: CaseOutcome,
    /// The campaign seed that reproduces it.
    pub seed: u64,
    /// How often the minimal plan failed when run again: `(failed, runs)`. A failure that
    /// depends on timing may not fail every run.
    pub reproduced: (u32, u32),
}

/// The progress bound while shrinking a hang: a fifth of the transport's, at least a second.
fn shrink_stall(bound: Duration) -> Duration {
    (bound / 5).max(Duration::from_secs(1)).min(bound)
}

/// Extra runs of a shrink candidate that passed, before it counts as passing.
const SHRINK_RETRIES: u32 = 2;

/// Runs `plan` again up to `most` times, within 20 seconds (a hang costs a progress bound
/// per run; two runs at least), and counts the failures.
fn reproduce<T: Transport>(transport: &T, plan: &Plan, run: &RunConfig, most: u32) -> (u32, u32) {
    let start = Instant::now();
    let (mut failed, mut runs) = (0, 0);
    while runs < most && (runs < 2 || start.elapsed() < Duration::from_secs(20)) {
        match run_case(transport, plan, run) {
            // A run cut short by a stop request is not counted.
            Ok(_) if interrupt::requested().is_some() => break,
            Ok(o) => {
                runs += 1;
                failed += u32::from(!o.passed());
            }
            Err(_) => break,
        }
    }
    (failed, runs)
}

/// What a case returns to proptest once a stop was asked for, so that the run ends
/// without running anything more. While shrinking a real failure, every candidate passes:
/// the shrinker gives up and keeps the smallest failing plan so far. Before any failure,
/// a "passing" case would only make proptest generate the next plan, up to the whole
/// campaign's count (minutes for a large `--cases`), so the case fails instead: the
/// shrinking that follows is bounded by `max_shrink_iters` candidates that each fail at
/// once, and no failure is recorded, so none is reported.
fn stop_now(failed: bool) -> std::result::Result<(), TestCaseError> {
    if failed {
        Ok(())
    } else {
        Err(TestCaseError::fail("stopped: a stop was asked for"))
    }
}

/// What a campaign found.
#[derive(Debug, Clone)]
pub struct CampaignReport {
    /// The transport's name.
    pub transport: String,
    /// Generated cases run (shrinking runs not counted).
    pub cases: u32,
    /// Messages delivered in those cases.
    pub messages: u64,
    /// Bytes delivered in those cases.
    pub bytes: u64,
    /// Cases whose plan carried at least one fault of the nemesis.
    pub cases_with_faults: u32,
    /// Cases in which at least one fault landed inside an operation (a send, a batch, a
    /// receive).
    pub cases_fault_inside: u32,
    /// Faults the nemesis applied in those cases (a fault whose victim ended first is not).
    pub faults: u64,
    /// Of those, the faults that landed inside an operation.
    pub faults_inside: u64,
    /// The faults applied, by kind.
    pub fault_kinds: FaultCounts,
    /// The longest message delivered, in bytes.
    pub largest: u64,
    /// Violations in the minimal failing case (0 when every case passed).
    pub violations: usize,
    /// Wall time, shrinking included.
    pub elapsed: Duration,
    /// The minimal failing case, if any case failed.
    pub failure: Option<Failure>,
    /// The signal that stopped the campaign early ([`super::interrupt`]), if one did: the
    /// counts are those of the cases that finished before it, the case it cut short is not
    /// among them, and a failure is the smallest failing plan found by then (not run again).
    pub interrupted: Option<i32>,
}

/// Faults applied by the nemesis, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// SIGKILLs.
    pub kills: u64,
    /// SIGSTOP/SIGCONT pauses.
    pub pauses: u64,
    /// Signal storms.
    pub storms: u64,
}

impl FaultCounts {
    /// Counts one applied fault of `kind`.
    pub fn add(&mut self, kind: &super::plan::FaultKind) {
        use super::plan::FaultKind;
        match kind {
            FaultKind::Kill => self.kills += 1,
            FaultKind::Pause { .. } => self.pauses += 1,
            FaultKind::Storm { .. } => self.storms += 1,
        }
    }

    /// The sum of two counts.
    pub fn plus(self, other: FaultCounts) -> FaultCounts {
        FaultCounts {
            kills: self.kills + other.kills,
            pauses: self.pauses + other.pauses,
            storms: self.storms + other.storms,
        }
    }
}

impl CampaignReport {
    /// A report of no case yet.
    fn empty(transport: String) -> CampaignReport {
        CampaignReport {
            transport,
            cases: 0,
            messages: 0,
            bytes: 0,
            cases_with_faults: 0,
            cases_fault_inside: 0,
            faults: 0,
            faults_inside: 0,
            fault_kinds: FaultCounts::default(),
            largest: 0,
            violations: 0,
            elapsed: Duration::ZERO,
            failure: None,
            interrupted: None,
        }
    }

    /// What the campaign covered, in one line: cases, messages, bytes, the largest
    /// message, and the faults applied by kind with how many landed inside an operation.
    pub fn coverage(&self) -> String {
        format!(
            "{} cases, {} messages, {} bytes (largest {}), faults {} ({} kill, {} pause, {} \
             storm), {} inside an operation",
            self.cases,
            self.messages,
            self.bytes,
            self.largest,
            self.faults,
            self.fault_kinds.kills,
            self.fault_kinds.pauses,
            self.fault_kinds.storms,
            self.faults_inside
        )
    }

    /// Generated cases per second.
    pub fn cases_per_sec(&self) -> f64 {
        f64::from(self.cases) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..16].copy_from_slice(b"ipcprop!");
    b
}

/// Runs `config.cases` generated plans over `transport`. `on_case` is called after each
/// generated case (not the shrinking runs), for progress. On the first failing case,
/// proptest shrinks the plan; the minimal plan is run once more and returned with its
/// history. `Err` only if a case could not be set up.
pub fn campaign<T: Transport>(
    transport: &T,
    config: &CampaignConfig,
    on_case: &mut dyn FnMut(&CaseOutcome),
) -> Result<CampaignReport> {
    campaign_with(transport, config, &|_| {}, on_case)
}

/// [`campaign`], with every generated plan passed through `adjust` before it runs (to force
/// a fault into every case, say). Shrinking works on the generated plan; the failure
/// reported is the adjusted one that ran.
pub(crate) fn campaign_with<T: Transport>(
    transport: &T,
    config: &CampaignConfig,
    adjust: &dyn Fn(&mut Plan),
    on_case: &mut dyn FnMut(&CaseOutcome),
) -> Result<CampaignReport> {
    let start = Instant::now();
    let strategy = plan_strategy(&transport.capabilities(), &config.limits);
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: config.cases,
            failure_persistence: None,
            max_shrink_iters: config.max_shrink_iters,
            max_shrink_time: u32::try_from(config.max_shrink_time.as_millis()).unwrap_or(u32::MAX),
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(config.seed)),
    );
    // A sender that sends nothing and exits, first: a transport that declares an end of
    // stream it lacks fails here in one case (a progress bound), not in every generated
    // case and again at each shrinking step.
    let caps = transport.capabilities();
    if caps.end_of_stream {
        let empty = Plan::simple(config.seed, Vec::new());
        let outcome = run_case(transport, &empty, &config.run)?;
        if let Some(signal) = interrupt::requested() {
            return Ok(CampaignReport {
                elapsed: start.elapsed(),
                interrupted: Some(signal),
                ..CampaignReport::empty(transport.name())
            });
        }
        if !outcome.passed() {
            return Ok(CampaignReport {
                transport: transport.name(),
                cases: 1,
                messages: 0,
                bytes: 0,
                cases_with_faults: 0,
                cases_fault_inside: 0,
                faults: 0,
                faults_inside: 0,
                fault_kinds: FaultCounts::default(),
                largest: 0,
                violations: outcome.violations.len(),
                elapsed: start.elapsed(),
                failure: Some(Failure {
                    minimal: outcome,
                    seed: config.seed,
                    reproduced: (1, 1),
                }),
                interrupted: None,
            });
        }
    }
    let cases = Cell::new(0u32);
    let messages = Cell::new(0u64);
    let bytes = Cell::new(0u64);
    let faults = Cell::new(0u64);
    let inside = Cell::new(0u64);
    let kinds = Cell::new(FaultCounts::default());
    let largest = Cell::new(0u64);
    let cases_with_faults = Cell::new(0u32);
    let cases_fault_inside = Cell::new(0u32);
    let failed = Cell::new(false);
    // Once the failure is known to be a hang, each shrinking candidate gets a shorter
    // progress bound: a hanging candidate then costs a second, not the full bound. The
    // minimal plan is run again with the full bound ([`reproduce`]).
    let shrink_run = RunConfig {
        stall: Some(shrink_stall(caps.progress_bound)),
        ..config.run.clone()
    };
    let hung = Cell::new(false);
    // proptest's minimal case is the last one that failed.
    let last_failure: RefCell<Option<CaseOutcome>> = RefCell::new(None);
    let setup_error = RefCell::new(None);
    let on_case = RefCell::new(on_case);
    let result = runner.run(&strategy, |mut plan: Plan| {
        // Asked to stop: run nothing more, and make proptest end quickly.
        if interrupt::requested().is_some() {
            return stop_now(failed.get());
        }
        adjust(&mut plan);
        let run = if hung.get() { &shrink_run } else { &config.run };
        let mut outcome = match run_case(transport, &plan, run) {
            Ok(o) => o,
            Err(e) => {
                let msg = e.to_string();
                setup_error.borrow_mut().get_or_insert(e);
                return Err(TestCaseError::fail(msg));
            }
        };
        // While shrinking, a candidate that passes once may still fail (a failure that
        // depends on timing): it counts as passing only if it passes every retry.
        if failed.get() {
            for _ in 0..SHRINK_RETRIES {
                if !outcome.passed() {
                    break;
                }
                match run_case(transport, &plan, run) {
                    Ok(o) => outcome = o,
                    Err(_) => break,
                }
            }
        }
        // A case cut short by a stop request proves nothing either way.
        if interrupt::requested().is_some() {
            return stop_now(failed.get());
        }
        if !failed.get() {
            cases.set(cases.get() + 1);
            messages.set(messages.get() + outcome.messages as u64);
            bytes.set(bytes.get() + outcome.bytes);
            faults.set(faults.get() + outcome.faults.len() as u64);
            let mut k = kinds.get();
            for f in &outcome.faults {
                k.add(&f.fault.kind);
            }
            kinds.set(k);
            largest.set(largest.get().max(outcome.largest()));
            let landed = outcome.faults.iter().filter(|f| f.landing.is_inside());
            let landed = landed.count() as u64;
            inside.set(inside.get() + landed);
            if !outcome.plan.faults.is_empty() {
                cases_with_faults.set(cases_with_faults.get() + 1);
            }
            if landed > 0 {
                cases_fault_inside.set(cases_fault_inside.get() + 1);
            }
            (on_case.borrow_mut())(&outcome);
        }
        if outcome.passed() {
            Ok(())
        } else {
            if !failed.get() {
                hung.set(
                    outcome
                        .violations
                        .iter()
                        .any(|v| v.kind() == ViolationKind::Hung),
                );
            }
            failed.set(true);
            let report = outcome.report();
            *last_failure.borrow_mut() = Some(outcome);
            Err(TestCaseError::fail(report))
        }
    });
    if let Some(e) = setup_error.into_inner() {
        return Err(e);
    }
    let interrupted = interrupt::requested();
    let failure = match result {
        Ok(()) => None,
        Err(TestError::Fail(..) | TestError::Abort(..)) => {
            last_failure.into_inner().map(|minimal| {
                let reproduced = match interrupted {
                    Some(_) => (0, 0),
                    None => reproduce(transport, &minimal.plan, &config.run, config.reproduce_runs),
                };
                Failure {
                    minimal,
                    seed: config.seed,
                    reproduced,
                }
            })
        }
    };
    Ok(CampaignReport {
        transport: transport.name(),
        cases: cases.get(),
        messages: messages.get(),
        bytes: bytes.get(),
        cases_with_faults: cases_with_faults.get(),
        cases_fault_inside: cases_fault_inside.get(),
        faults: faults.get(),
        faults_inside: inside.get(),
        fault_kinds: kinds.get(),
        largest: largest.get(),
        violations: failure.as_ref().map_or(0, |f| f.minimal.violations.len()),
        elapsed: start.elapsed(),
        failure,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hang_shrinks_with_a_fifth_of_the_progress_bound_but_at_least_a_second() {
        assert_eq!(shrink_stall(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(
            shrink_stall(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(shrink_stall(Duration::from_secs(3)), Duration::from_secs(1));
        // Never longer than the bound itself.
        assert_eq!(
            shrink_stall(Duration::from_millis(500)),
            Duration::from_millis(500)
        );
    }
}
