//! Many generated cases over one transport, shrinking the first failure to a minimal plan;
//! for a duration or a number of cases, in this process or split over forked workers.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde::{Deserialize, Serialize};

use super::case::{lock_cases, run_case, CaseOutcome, RunConfig};
use super::fork::{ChildEnd, ChildGroup, Control, Observer};
use super::interrupt;
use super::plan::{plan_strategy, Plan, PlanLimits};
use super::{Transport, ViolationKind};
use crate::error::{Error, Result};

/// How to run a campaign.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// How many generated cases to run (before any shrinking). With a
    /// [`duration`](CampaignConfig::duration), the size of a round instead: rounds of this
    /// many cases, with successive seeds, run until the time is up.
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
    /// Worker processes to split the cases over (cases run one at a time in a process, so
    /// workers are how a campaign uses several cores). 1 (the default) runs every case in
    /// this process. With more, each worker is a forked child of this process running its
    /// share of the cases (at most one worker per case) with a seed of its own
    /// ([`worker_seed`]); the first failure stops the others at their next case, and the
    /// report adds up theirs.
    pub jobs: usize,
    /// Run for this long instead of for [`cases`](CampaignConfig::cases) cases: rounds of
    /// `cases` cases with successive seeds (`seed`, `seed + 1`, ...), stopping at the first
    /// failure, and at the deadline within one case (a case that started before it
    /// finishes; none starts after it). `None` (the default) runs `cases` cases.
    pub duration: Option<Duration>,
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
            jobs: 1,
            duration: None,
        }
    }
}

/// The seed worker `index` of a campaign split over workers ([`CampaignConfig::jobs`])
/// runs with: worker 0 runs `seed` itself, the others seeds spread far from it. A failure
/// reports its worker's seed, so `--seed` with that seed (and one job) replays it.
pub fn worker_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The first failure of a campaign, shrunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// The minimal failing case proptest shrank to, run once more for its history.
    pub minimal: CaseOutcome,
    /// The campaign seed that reproduces it (with a duration or several workers, the seed
    /// of the round or worker that found it).
    pub seed: u64,
    /// How often the minimal plan failed when run again: `(failed, runs)`. A failure that
    /// depends on timing may not fail every run.
    pub reproduced: (u32, u32),
}

impl Failure {
    /// A readable account: how often the minimal plan failed again, its violations, the
    /// plan and the timeline ([`CaseOutcome::report`]).
    pub fn report(&self) -> String {
        match self.reproduced {
            (_, 0) => format!(
                "not run again (the campaign was stopped, or reproduce_runs is 0): this is the \
                 smallest failing plan found\n{}",
                self.minimal.report()
            ),
            (failed, runs) => format!(
                "the minimal plan fails {failed} of {runs} runs\n{}",
                self.minimal.report()
            ),
        }
    }
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

/// What a campaign found. Its JSON form (serde) is one element of the `transports` list of
/// the `ipcprop check --json` schema ([`super::report::CheckReport`]); durations are
/// seconds as floats, in fields ending `_secs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(rename = "elapsed_secs", with = "super::secs")]
    pub elapsed: Duration,
    /// Wall time spent running the generated cases (not shrinking, not reproducing): the
    /// time [`CampaignReport::cases_per_sec`] divides by. With several workers, the longest
    /// of theirs (they run at once).
    #[serde(rename = "case_secs", with = "super::secs")]
    pub case_time: Duration,
    /// The minimal failing case, if any case failed.
    pub failure: Option<Failure>,
    /// The signal that stopped the campaign early ([`super::interrupt`]), if one did: the
    /// counts are those of the cases that finished before it, the case it cut short is not
    /// among them, and a failure is the smallest failing plan found by then (not run
    /// again). With workers, a failure is the failing case as a worker first ran it.
    #[serde(default)]
    pub interrupted: Option<i32>,
}

/// Faults applied by the nemesis, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// An empty report for `transport`: nothing run yet.
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
            case_time: Duration::ZERO,
            failure: None,
            interrupted: None,
        }
    }

    /// Counts one generated case that ran.
    fn count(&mut self, outcome: &CaseOutcome) {
        self.cases += 1;
        self.messages += outcome.messages as u64;
        self.bytes += outcome.bytes;
        self.faults += outcome.faults.len() as u64;
        for f in &outcome.faults {
            self.fault_kinds.add(&f.fault.kind);
        }
        self.largest = self.largest.max(outcome.largest());
        let landed = outcome.faults.iter().filter(|f| f.landing.is_inside());
        let landed = landed.count() as u64;
        self.faults_inside += landed;
        if !outcome.plan.faults.is_empty() {
            self.cases_with_faults += 1;
        }
        if landed > 0 {
            self.cases_fault_inside += 1;
        }
        self.case_time += outcome.elapsed;
    }

    /// Adds `other`'s counts to this one's, and takes its failure if this one has none.
    /// `parallel`: the two ran at once (workers), so the time spent on cases is the longer
    /// of the two, not the sum.
    fn absorb(&mut self, other: CampaignReport, parallel: bool) {
        self.cases += other.cases;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.cases_with_faults += other.cases_with_faults;
        self.cases_fault_inside += other.cases_fault_inside;
        self.faults += other.faults;
        self.faults_inside += other.faults_inside;
        self.fault_kinds = self.fault_kinds.plus(other.fault_kinds);
        self.largest = self.largest.max(other.largest);
        self.case_time = if parallel {
            self.case_time.max(other.case_time)
        } else {
            self.case_time + other.case_time
        };
        if self.failure.is_none() {
            self.failure = other.failure;
        }
        self.interrupted = self.interrupted.or(other.interrupted);
        self.violations = self
            .failure
            .as_ref()
            .map_or(0, |f| f.minimal.violations.len());
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

    /// Generated cases per second of the time spent running them
    /// ([`CampaignReport::case_time`]): shrinking a failure does not lower it.
    pub fn cases_per_sec(&self) -> f64 {
        f64::from(self.cases) / self.case_time.as_secs_f64().max(1e-9)
    }
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..16].copy_from_slice(b"ipcprop!");
    b
}

/// Runs a campaign over `transport`: `config.cases` generated plans (or rounds of them
/// for `config.duration`), in this process or over `config.jobs` forked workers. `on_case`
/// is called in this process after each generated case (not the shrinking runs), for
/// progress; with workers, as their cases finish. On the first failing case, proptest
/// shrinks the plan; the minimal plan is run once more and returned with its history.
/// `Err` only if a case could not be set up, or a worker died without a report.
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
    if config.jobs > 1 {
        sharded(transport, config, adjust, on_case)
    } else {
        local(transport, config, adjust, on_case, &|| false)
    }
}

/// The campaign in this process: one round of `config.cases`, or rounds until the
/// duration is up; `stop` is asked before each generated case (true: run no more).
fn local<T: Transport>(
    transport: &T,
    config: &CampaignConfig,
    adjust: &dyn Fn(&mut Plan),
    on_case: &mut dyn FnMut(&CaseOutcome),
    stop: &dyn Fn() -> bool,
) -> Result<CampaignReport> {
    let start = Instant::now();
    let deadline = config.duration.map(|d| start + d);
    let halt = || {
        stop() || deadline.is_some_and(|d| Instant::now() >= d) || interrupt::requested().is_some()
    };
    let mut total = CampaignReport::empty(transport.name());
    let mut round = 0u64;
    loop {
        let seed = config.seed.wrapping_add(round);
        let r = one_round(transport, config, seed, round == 0, adjust, on_case, &halt)?;
        let ran = r.cases;
        total.absorb(r, false);
        round += 1;
        if total.failure.is_some() || deadline.is_none() || ran == 0 || halt() {
            break;
        }
    }
    total.elapsed = start.elapsed();
    total.interrupted = interrupt::requested();
    Ok(total)
}

/// One proptest run of `config.cases` plans from `seed`; generated cases after `halt`
/// says so are skipped (generated, not run, not counted). `first`: start with the check
/// of the end of stream.
fn one_round<T: Transport>(
    transport: &T,
    config: &CampaignConfig,
    seed: u64,
    first: bool,
    adjust: &dyn Fn(&mut Plan),
    on_case: &mut dyn FnMut(&CaseOutcome),
    halt: &dyn Fn() -> bool,
) -> Result<CampaignReport> {
    let start = Instant::now();
    let strategy = plan_strategy(&transport.capabilities(), &config.limits);
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: config.cases,
            failure_persistence: None,
            max_shrink_iters: config.max_shrink_iters,
            max_shrink_time: u32::try_from(config.max_shrink_time.as_millis()).unwrap_or(u32::MAX),
            // Plans are never rejected, except to stop: then at once.
            max_global_rejects: 0,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed)),
    );
    let counts = RefCell::new(CampaignReport::empty(transport.name()));
    // A sender that sends nothing and exits, first: a transport that declares an end of
    // stream it lacks fails here in one case (a progress bound), not in every generated
    // case and again at each shrinking step.
    let caps = transport.capabilities();
    if first && caps.end_of_stream && !halt() {
        let empty = Plan::simple(seed, Vec::new());
        let outcome = run_case(transport, &empty, &config.run)?;
        if interrupt::requested().is_some() {
            // Cut short: proves nothing. The caller sees the stop request.
            return Ok(counts.into_inner());
        }
        if !outcome.passed() {
            let mut report = counts.into_inner();
            report.count(&outcome);
            on_case(&outcome);
            report.violations = outcome.violations.len();
            report.elapsed = start.elapsed();
            report.failure = Some(Failure {
                minimal: outcome,
                seed,
                reproduced: (1, 1),
            });
            return Ok(report);
        }
    }
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
        // Out of time (or told to stop): the round ends here, with no more plans
        // generated (a reject, with no reject allowed, aborts the run). A failure being
        // shrunk is shrunk to the end.
        if !failed.get() && halt() {
            return Err(TestCaseError::reject("stopped"));
        }
        // Stopped (Ctrl-C) while shrinking: every candidate passes without running, so the
        // shrinker gives up at once and keeps the smallest failing plan so far.
        if failed.get() && interrupt::requested().is_some() {
            return Ok(());
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
        // A case cut short by a stop request proves nothing either way: not counted, and
        // the run ends (a reject aborts it; while shrinking, the candidate passes).
        if interrupt::requested().is_some() {
            return if failed.get() {
                Ok(())
            } else {
                Err(TestCaseError::reject("stopped"))
            };
        }
        if !failed.get() {
            counts.borrow_mut().count(&outcome);
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
    let failure = match result {
        Ok(()) => None,
        Err(TestError::Fail(..) | TestError::Abort(..)) => {
            last_failure.into_inner().map(|minimal| {
                let reproduced = match interrupt::requested() {
                    Some(_) => (0, 0),
                    None => reproduce(transport, &minimal.plan, &config.run, config.reproduce_runs),
                };
                Failure {
                    minimal,
                    seed,
                    reproduced,
                }
            })
        }
    };
    let mut report = counts.into_inner();
    report.violations = failure.as_ref().map_or(0, |f| f.minimal.violations.len());
    report.failure = failure;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// What a worker sends its parent: a record per generated case, then its report.
const REC_CASE: u8 = b'c';
const REC_REPORT: u8 = b'r';

/// A record: its tag, then the JSON of `value`.
fn record_of<V: Serialize>(tag: u8, value: &V) -> Vec<u8> {
    let mut v = vec![tag];
    // Serializing these types cannot fail (no maps with non-string keys); if it did, the
    // parent would see a worker without a report and say so.
    let _ = serde_json::to_writer(&mut v, value);
    v
}

/// How long the parent waits for its workers: they end by themselves (every case has its
/// own watchdog), so this only bounds a worker that cannot.
const WORKERS_DEADLINE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The campaign split over `config.jobs` forked workers.
///
/// Workers are `fork()`ed children of this process ([`ChildGroup`]), not programs started
/// anew: a library user's test binary has no entry point a re-executed copy could
/// dispatch on, and a forked worker needs none. Each worker dies with this process
/// (`PR_SET_PDEATHSIG`, checked against a parent that died first), runs its share of the
/// cases with its own seed ([`worker_seed`]) and sends each case's outcome, then its
/// report, as JSON over its report pipe. The first failure any worker reports releases
/// the others ([`Control::release`]), which stop at their next case.
fn sharded<T: Transport>(
    transport: &T,
    config: &CampaignConfig,
    adjust: &dyn Fn(&mut Plan),
    on_case: &mut dyn FnMut(&CaseOutcome),
) -> Result<CampaignReport> {
    let start = Instant::now();
    let jobs = match config.duration {
        Some(_) => config.jobs,
        None => config.jobs.min(config.cases as usize),
    }
    .max(1);
    // proptest's default configuration is read from the environment once, lazily: read it
    // here, so no worker touches the environment's lock.
    let _ = Config::default();
    // No case of another thread may be mid-fork while a worker is forked: a worker would
    // inherit the case lock held, and wait on it forever. Each worker drops its copy of
    // the guard before it runs its first case; this process drops its own once every
    // worker is forked.
    let guard = Cell::new(Some(lock_cases()));
    let mut group = ChildGroup::new();
    for i in 0..jobs {
        let share = config.cases / jobs as u32 + u32::from((i as u32) < config.cases % jobs as u32);
        let cfg = CampaignConfig {
            cases: match config.duration {
                Some(_) => config.cases,
                None => share,
            },
            seed: worker_seed(config.seed, i),
            jobs: 1,
            ..config.clone()
        };
        let guard = &guard;
        group.spawn(format!("worker {i}"), move |rep| {
            drop(guard.take());
            let rep = RefCell::new(rep);
            let stopped = Cell::new(false);
            let stop = || {
                if !stopped.get() && rep.borrow_mut().released() {
                    stopped.set(true);
                }
                stopped.get()
            };
            let report = local(
                transport,
                &cfg,
                adjust,
                &mut |o| rep.borrow_mut().record(&record_of(REC_CASE, o)),
                &stop,
            )
            .map_err(|e| e.to_string())?;
            rep.borrow_mut().record(&record_of(REC_REPORT, &report));
            Ok(())
        })?;
    }
    drop(guard.take());
    let mut shards = Shards {
        on_case,
        reports: vec![None; jobs],
        bad: None,
        failed: false,
        released: false,
        seen: CampaignReport::empty(transport.name()),
        first_failure: None,
    };
    let ends = group.wait_observed(WORKERS_DEADLINE, &mut shards);
    if let Some(e) = shards.bad {
        return Err(worker_error(e));
    }
    if let Some(signal) = interrupt::requested() {
        // Stopped: the workers were killed where they stood (their case children die with
        // them), so the report is what they had sent, case by case.
        let mut total = shards.seen;
        total.violations = shards
            .first_failure
            .as_ref()
            .map_or(0, |o| o.violations.len());
        total.failure = shards.first_failure.map(|minimal| Failure {
            minimal,
            seed: config.seed,
            reproduced: (0, 0),
        });
        total.elapsed = start.elapsed();
        total.interrupted = Some(signal);
        return Ok(total);
    }
    let mut total = CampaignReport::empty(transport.name());
    for (report, end) in shards.reports.into_iter().zip(ends) {
        match report {
            Some(r) => total.absorb(r, true),
            None => {
                let why = match end.end {
                    ChildEnd::Returned => "it ended without a report".to_string(),
                    other => other.to_string(),
                };
                return Err(worker_error(format!("{}: {why}", end.name)));
            }
        }
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

fn worker_error(detail: String) -> Error {
    Error::Io {
        op: "run a campaign worker",
        source: std::io::Error::other(detail),
    }
}

/// The parent's side of [`sharded`]: passes each case on, keeps each report, and releases
/// every worker once one has failed.
struct Shards<'a> {
    on_case: &'a mut dyn FnMut(&CaseOutcome),
    reports: Vec<Option<CampaignReport>>,
    /// A record that could not be read.
    bad: Option<String>,
    failed: bool,
    released: bool,
    /// Every case the workers reported, counted as it came (the report if they are
    /// stopped before they send theirs).
    seen: CampaignReport,
    /// The first failing case a worker reported, as it ran (not shrunk).
    first_failure: Option<CaseOutcome>,
}

impl Observer for Shards<'_> {
    fn record(&mut self, child: usize, record: &[u8], _now: Instant) {
        let Some((&tag, json)) = record.split_first() else {
            return;
        };
        match tag {
            REC_CASE => match serde_json::from_slice::<CaseOutcome>(json) {
                Ok(o) => {
                    self.failed |= !o.passed();
                    (self.on_case)(&o);
                    self.seen.count(&o);
                    if !o.passed() && self.first_failure.is_none() {
                        self.first_failure = Some(o);
                    }
                }
                Err(e) => {
                    self.bad
                        .get_or_insert(format!("worker {child} sent an unreadable case: {e}"));
                }
            },
            REC_REPORT => match serde_json::from_slice::<CampaignReport>(json) {
                Ok(r) => {
                    self.failed |= r.failure.is_some();
                    self.reports[child] = Some(r);
                }
                Err(e) => {
                    self.bad
                        .get_or_insert(format!("worker {child} sent an unreadable report: {e}"));
                }
            },
            _ => {}
        }
    }

    fn act(&mut self, _now: Instant, ctl: &mut Control<'_>) {
        if self.failed && !self.released {
            for i in 0..self.reports.len() {
                ctl.release(i);
            }
            self.released = true;
        }
    }
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
