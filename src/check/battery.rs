//! The conformance battery: every property the harness checks, as functions over any
//! [`Transport`], each returning what it found. [`crate::conformance_tests!`] turns them
//! into ordinary `#[test]`s; [`run_battery`] runs them all and reports.
//!
//! | check | what it proves |
//! | --- | --- |
//! | `fifo_and_integrity` | generated plans across real forks: in order, once, intact |
//! | `boundary_sizes` | every size the transport declares as a boundary, twice in a row; powers of two and kernel buffer sizes with their neighbours; a large message at every offset after 0..=64 bytes |
//! | `backlog` | the receiver held back while hundreds of odd-sized messages pile up, then drained |
//! | `disconnect_on_drop` | the receiver drains, then gets Disconnected, when senders exit |
//! | `disconnect_on_sigkill` | the same when a sender is SIGKILLed at a chosen step |
//! | `receiver_gone` | senders get an error or succeed, never hang or die, when the receiver leaves or is killed |
//! | `timeouts_honoured` | `try_recv` is Empty; `recv_timeout` of 500 us, 1.5 ms and 30 ms waits at least its timeout and at most the stated slack more |
//! | `several_senders` | where declared: each sender's order kept, nothing mixed |
//! | `hostile_sizes_refused` | a message over the declared maximum is refused, nothing sent |
//! | `crash_recovery` | where persistent: after SIGKILL of both sides, a re-attached receiver finds every acknowledged message not received, once, in order |
//! | `descriptors_cloexec` | every descriptor a pair creates carries `FD_CLOEXEC` |
//! | `stopped_sender_mid_message` | with the sender stopped inside a message larger than any buffer, `try_recv` and `recv_timeout` return on time, never a part of it |
//! | `faults_inside_operations` | the harness kills, pauses and signals processes from outside, inside their sends and receives: acknowledged messages arrive, cut ones at most once and whole, survivors keep going, EINTR is no error, nothing stalls past the progress bound |
//! | `forged_length_refused` | where the transport can forge a frame header ([`Transport::forge_header`]): a receiver under a lowered `RLIMIT_AS` refuses a header claiming a huge length with a typed error, before allocating; it neither crashes, hangs nor delivers |
//! | `sends_fail_after_receiver_gone` | where not persistent: once the receiver's process has exited and been reaped, a send returns Disconnected within 4096 sends and 64 MiB; never an endless silent success, never a block |
//!
//! The number of generated cases per check is `IPCPROP_CASES` (default 32); the seed is
//! `IPCPROP_SEED` (default 0), printed with every failure so it can be replayed; with
//! `IPCPROP_SAVE=dir`, each failure is also written to a file there. No generated message
//! is longer than `IPCPROP_SIZE_CAP` bytes (default 1 MiB + 1, past the 1 MiB pipe and
//! socket buffers; the `size_cap = N` form of [`conformance_tests!`](crate::conformance_tests)
//! sets it per transport); the nemesis check aims its faults at messages near 64 KiB, 208
//! KiB (a default socket buffer), 1 MiB and the maximum, within that cap.

use std::fmt;
use std::time::{Duration, Instant};

use super::case::{run_case, RunConfig};
use super::plan::{Fault, FaultKind, Pace, PlanLimits, Victim};
use super::{campaign, CampaignConfig, Plan, Transport};
use crate::error::Error;
use crate::transport::{Receiver, Sender};

mod stopped;
pub use stopped::stopped_sender_mid_message;
mod deadlines;
pub use deadlines::{
    send_deadlines_all_or_nothing, DEADLINE_FILL_MAX_BYTES, DEADLINE_SEND_TIMEOUT,
};
mod limits;
pub use limits::{
    forged_length_refused, sends_fail_after_receiver_gone, FORGED_LENGTH_HEADROOM,
    GONE_RECEIVER_MAX_BYTES, GONE_RECEIVER_MAX_SENDS,
};

/// A check that found a problem: what it was, readable.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The check's name.
    pub check: &'static str,
    /// What went wrong: the minimal failing plan, its violations and timeline, or a
    /// description.
    pub report: String,
    /// The violation kinds found, for tests that assert what was caught.
    pub kinds: Vec<super::ViolationKind>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance check `{}` failed:\n{}",
            self.check, self.report
        )
    }
}

/// How the battery runs.
#[derive(Debug, Clone)]
pub struct BatteryConfig {
    /// Generated cases per generated check.
    pub cases: u32,
    /// Seed of the plan generator.
    pub seed: u64,
    /// How each case runs (the watchdog).
    pub run: RunConfig,
    /// No generated message longer than this.
    pub size_cap: usize,
    /// Most shrinking steps per failure (a failure that hangs costs a watchdog per step).
    pub max_shrink_iters: u32,
    /// Most time spent shrinking one failure.
    pub max_shrink_time: Duration,
    /// How many times a minimal failing plan is run again to count how often it fails.
    pub reproduce_runs: u32,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
        BatteryConfig {
            cases: env("IPCPROP_CASES").map_or(32, |v: u64| v as u32),
            seed: env("IPCPROP_SEED").unwrap_or(0),
            run: RunConfig {
                timeout: Duration::from_secs(20),
                ..RunConfig::default()
            },
            size_cap: env("IPCPROP_SIZE_CAP").map_or(DEFAULT_SIZE_CAP, |v: u64| v as usize),
            max_shrink_iters: 64,
            max_shrink_time: Duration::from_secs(60),
            reproduce_runs: 10,
        }
    }
}

/// The default of [`BatteryConfig::size_cap`]: one byte over 1 MiB.
pub const DEFAULT_SIZE_CAP: usize = (1 << 20) + 1;

type CheckResult = Result<(), Finding>;

fn generated<T: Transport>(
    check: &'static str,
    t: &T,
    cfg: &BatteryConfig,
    limits: PlanLimits,
    adjust: impl Fn(&mut Plan),
) -> CheckResult {
    verdict(check, generated_report(check, t, cfg, limits, adjust)?)
}

fn verdict(check: &'static str, report: super::CampaignReport) -> CheckResult {
    match report.failure {
        None => {
            // A passing check says what it covered (shown by `cargo test -- --nocapture`,
            // and on failure of a later assertion).
            eprintln!(
                "{check} over {}: passed, {}",
                report.transport,
                report.coverage()
            );
            Ok(())
        }
        Some(f) => Err(Finding {
            check,
            kinds: f.minimal.violations.iter().map(|v| v.kind()).collect(),
            report: format!(
                "seed {} (IPCPROP_SEED to replay); {}\n{}",
                f.seed,
                match f.reproduced {
                    (_, 0) => "the minimal plan was not run again".to_string(),
                    (k, n) => format!("the minimal plan fails {k} of {n} runs"),
                },
                f.minimal.report()
            ),
        }),
    }
}

fn generated_report<T: Transport>(
    check: &'static str,
    t: &T,
    cfg: &BatteryConfig,
    limits: PlanLimits,
    adjust: impl Fn(&mut Plan),
) -> Result<super::CampaignReport, Finding> {
    let config = CampaignConfig {
        cases: cfg.cases,
        seed: cfg.seed,
        limits,
        run: cfg.run.clone(),
        max_shrink_iters: cfg.max_shrink_iters,
        max_shrink_time: cfg.max_shrink_time,
        reproduce_runs: cfg.reproduce_runs,
        jobs: 1,
        duration: None,
    };
    campaign::campaign_with(t, &config, &adjust, &mut |_| {}).map_err(|e| Finding {
        check,
        report: format!("could not run: {e}"),
        kinds: Vec::new(),
    })
}

fn base_limits(cfg: &BatteryConfig) -> PlanLimits {
    PlanLimits {
        size_cap: cfg.size_cap,
        kills: false,
        early_close: false,
        nemesis: false,
        ..PlanLimits::default()
    }
}

/// Generated plans (one or several senders as declared, pacing, batches) across real forks.
pub fn fifo_and_integrity<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    generated("fifo_and_integrity", t, cfg, base_limits(cfg), |_| {})
}

/// Every declared boundary size (and 0, 1 and the maximum), each twice, one sender; then
/// every [suspect size](super::plan::suspect_sizes) (powers of two and their neighbours,
/// kernel buffer sizes) up to the maximum, within the size cap; then a position walk: a
/// message of 0, 1, ..., 64 bytes, each followed by a large one (the maximum, at most
/// 256 KiB), so that a large record starts at every offset a ring's wrap point can fall
/// on, with 0 to 64 bytes left before it.
pub fn boundary_sizes<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let caps = t.capabilities();
    let max = caps.max_message_len.min(cfg.size_cap);
    let mut sizes: Vec<usize> = caps.boundary_sizes.clone();
    sizes.extend([0, 1, max]);
    sizes.retain(|&s| s <= max);
    sizes.sort_unstable();
    sizes.dedup();
    let plan = Plan::simple(cfg.seed, sizes.iter().flat_map(|&s| [s, s]).collect());
    one_plan("boundary_sizes", t, cfg, &plan)?;
    let suspects = super::plan::suspect_sizes(max);
    one_plan(
        "boundary_sizes",
        t,
        cfg,
        &Plan::simple(cfg.seed ^ 3, suspects),
    )?;
    let big = max.min(256 << 10);
    let walk = (0..=64usize.min(max)).flat_map(|j| [j, big]).collect();
    one_plan("boundary_sizes", t, cfg, &Plan::simple(cfg.seed ^ 4, walk))
}

/// A backlog: the receiver is held back (paused 50 ms by the harness before its first
/// receive) while the senders send hundreds of mid-size messages whose sizes divide no
/// common buffer size (1021, 3001, 4093 and 12289 bytes, within the maximum), then it
/// drains them all.
pub fn backlog<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let caps = t.capabilities();
    let senders = if caps.multi_sender.is_some() { 2 } else { 1 };
    let max = match caps.multi_sender {
        Some(m) => m,
        None => caps.max_message_len,
    }
    .min(cfg.size_cap);
    let odd = [1021, 3001, 4093, 12289];
    let mut plan = Plan::simple(cfg.seed ^ 5, Vec::new());
    let sender = plan.senders[0].clone();
    plan.senders = (0..senders)
        .map(|n| super::plan::SenderPlan {
            sizes: (0..300)
                .map(|k| odd[(k + n) % odd.len()].min(max))
                .collect(),
            ..sender.clone()
        })
        .collect();
    plan.faults.push(Fault {
        victim: Victim::Receiver,
        kind: FaultKind::Pause { micros: 50_000 },
        op: 0,
        delay_micros: 0,
    });
    one_plan("backlog", t, cfg, &plan)
}

fn one_plan<T: Transport>(
    check: &'static str,
    t: &T,
    cfg: &BatteryConfig,
    plan: &Plan,
) -> CheckResult {
    let outcome = run_case(t, plan, &cfg.run).map_err(|e| Finding {
        check,
        report: format!("could not run: {e}"),
        kinds: Vec::new(),
    })?;
    if outcome.passed() {
        Ok(())
    } else {
        Err(Finding {
            check,
            kinds: outcome.violations.iter().map(|v| v.kind()).collect(),
            report: outcome.report(),
        })
    }
}

/// Senders exit normally (dropping their ends): the receiver drains, then Disconnected.
pub fn disconnect_on_drop<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let plan = Plan::simple(cfg.seed ^ 1, vec![10, 0, 100, 1, 33]);
    one_plan("disconnect_on_drop", t, cfg, &plan)?;
    one_plan(
        "disconnect_on_drop",
        t,
        cfg,
        &Plan::simple(cfg.seed ^ 2, Vec::new()),
    )
}

/// A sender SIGKILLed at a generated step: an intact prefix, then Disconnected.
pub fn disconnect_on_sigkill<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    generated("disconnect_on_sigkill", t, cfg, base_limits(cfg), |p| {
        let n = p.senders[0].sizes.len();
        p.senders[0].kill_after = Some((p.seed as usize) % (n + 1));
    })
}

/// The nemesis: every generated plan (several senders where declared, sizes up to the cap)
/// carries at least one fault the harness injects from outside at a moment inside the
/// victim's operations: SIGKILL of a sender or of the receiver, a SIGSTOP/SIGCONT pause,
/// or a storm of signals whose handler has no `SA_RESTART`. Acknowledged messages must
/// arrive, in order and intact; a message whose send was cut short by a kill may arrive or
/// not, but at most once and whole; the survivors keep going (Disconnected only after the
/// last live sender is gone); EINTR is never an error; and no process stays without
/// progress for longer than the transport's declared progress bound.
pub fn faults_inside_operations<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    verdict("faults_inside_operations", faults_campaign(t, cfg)?)
}

/// The campaign of [`faults_inside_operations`], with its counts: how many faults were
/// applied ([`CampaignReport::faults`](super::CampaignReport::faults)) and how many landed
/// inside an operation.
pub fn faults_campaign<T: Transport>(
    t: &T,
    cfg: &BatteryConfig,
) -> Result<super::CampaignReport, Finding> {
    let limits = PlanLimits {
        nemesis: true,
        ..base_limits(cfg)
    };
    let caps = t.capabilities();
    let senders = caps.multi_sender.map_or(1, |_| limits.max_senders);
    let cap = cfg.size_cap;
    generated_report("faults_inside_operations", t, cfg, limits, move |p| {
        if p.faults.is_empty() {
            // One fault at least, derived from the seed so a shrunk plan keeps it.
            let s = p.seed;
            let victim = match s % 4 {
                0 => Victim::Receiver,
                k => Victim::Sender((k as usize - 1) % senders.max(1)),
            };
            let kind = match (s >> 8) % 3 {
                0 => FaultKind::Kill,
                1 => FaultKind::Pause { micros: 20_000 },
                _ => FaultKind::Storm {
                    signals: 32,
                    gap_micros: 20,
                },
            };
            p.faults.push(Fault {
                victim,
                kind,
                op: ((s >> 16) % 4) as usize,
                delay_micros: ((s >> 24) % 40) as u32,
            });
        }
        p.aim_faults();
        aim_into_long_operations(p, &caps, cap);
    })
}

/// Makes the operation each fault aims at a long one, so the fault lands inside it: the
/// sender's message at that point becomes a large one (around 64 KiB, the pipe and socket
/// buffer sizes, 1 MiB, or the maximum, within the cap), and, chosen by the seed, the other
/// side slows down so the victim blocks (a sender on a full buffer, a receiver waiting).
fn aim_into_long_operations(p: &mut Plan, caps: &super::Capabilities, cap: usize) {
    let several = p.senders.len() > 1;
    let max = match caps.multi_sender {
        Some(m) if several => m,
        _ => caps.max_message_len,
    }
    .min(cap);
    let bigs = [
        max,
        (64 << 10) - 1,
        64 << 10,
        (64 << 10) + 1,
        208 << 10,
        (1 << 20) + 1,
        max.saturating_sub(1),
    ];
    let seed = p.seed;
    for (k, f) in p.faults.clone().iter().enumerate() {
        let pick = (seed >> (k * 8)) as usize;
        // Half the kills of a sender, where messages can be larger than a socket buffer,
        // land well into the send of one (1 to 8 ms in, the sender blocked with part of it
        // written): a message cut in the middle is what a receiver must never deliver a
        // part of. The rest land at the start of an operation, where a lock is taken.
        let deep = matches!((f.kind, f.victim), (FaultKind::Kill, Victim::Sender(_)))
            && max > (208 << 10)
            && (pick >> 4) % 2 == 1;
        if deep {
            p.faults[k].delay_micros = 1_000 + (pick >> 6) as u32 % 7_000;
        }
        let slow = Pace::Sleep {
            every: 1,
            micros: 200 + (pick % 5) as u32 * 200,
        };
        match f.victim {
            Victim::Sender(n) => {
                // With several senders, aim early in the victim's work, while the others
                // still have most of theirs to send: they must not be disturbed.
                if several {
                    let len = p.senders.get(n).map_or(0, |s| s.sizes.len());
                    p.faults[k].op = f.op.min(len / 2);
                }
                let op = p.faults[k].op;
                // A deep kill gets a message larger than a socket buffer, so that it cuts
                // one the sender is blocked in.
                let size_of = if deep {
                    [max, (1 << 20) + 1, 208 << 10][pick % 3]
                } else {
                    bigs[pick % bigs.len()]
                };
                if let Some(size) = p.senders.get_mut(n).and_then(|s| s.sizes.get_mut(op)) {
                    *size = size_of.min(max);
                }
                if !pick.is_multiple_of(3) {
                    p.receiver.pace = slow;
                }
                // The others keep sending, at a steady pace, well after the fault: they are
                // the survivors whose messages must keep arriving.
                if several {
                    for (j, s) in p.senders.iter_mut().enumerate() {
                        if j != n {
                            s.pace = Pace::Sleep {
                                every: 1,
                                micros: 300,
                            };
                        }
                    }
                }
            }
            Victim::Receiver => {
                if !pick.is_multiple_of(3) {
                    for s in &mut p.senders {
                        s.pace = slow;
                    }
                }
            }
        }
    }
}

/// The receiver leaves early, or is SIGKILLed: senders get an error or succeed, and never
/// hang or die. The messages a sender sends once the receiver has gone include one of the
/// largest sizes (the maximum, 1 MiB + 1 or 208 KiB, within the cap): a send that is still
/// writing a large message when the receiver goes must not wait forever.
pub fn receiver_gone<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let caps = t.capabilities();
    let cap = cfg.size_cap;
    generated("receiver_gone", t, cfg, base_limits(cfg), move |p| {
        let k = (p.seed as usize) % 6;
        if p.seed % 2 == 0 {
            p.receiver.close_after = Some(k);
        } else {
            p.receiver.kill_after = Some(k);
        }
        let max = match caps.multi_sender {
            Some(m) if p.senders.len() > 1 => m,
            _ => caps.max_message_len,
        }
        .min(cap);
        let big = [max, (1 << 20) + 1, 208 << 10][(p.seed >> 8) as usize % 3].min(max);
        // After the receiver's last message, whichever sender's it was.
        for s in &mut p.senders {
            if let Some(size) = s.sizes.get_mut(k) {
                *size = big;
            }
        }
    })
}

/// In one process: `try_recv` on an empty transport is Empty, and takes a message whose
/// send has returned at once; `recv_timeout` of 500 us,
/// 1.5 ms and 30 ms each waits at least its timeout and returns within
/// [`Capabilities::timeout_slack`](super::Capabilities::timeout_slack) after it; and a
/// message sent is then received.
pub fn timeouts_honoured<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    // One case at a time (this forks), and the probes run in a child under the watchdog: a
    // receive that blocks for good must fail the check, not hang the process running it.
    let _serial = super::case::lock_cases();
    let fail = |report: String| Finding {
        check: "timeouts_honoured",
        report,
        kinds: vec![super::ViolationKind::Hung],
    };
    let mut group = super::fork::ChildGroup::new();
    group
        .spawn("timeouts", |_| timeouts_probe(t))
        .map_err(|e| fail(format!("fork: {e}")))?;
    match group.wait(cfg.run.timeout).remove(0).end {
        super::fork::ChildEnd::Returned => Ok(()),
        super::fork::ChildEnd::Failed(m) => Err(fail(m)),
        super::fork::ChildEnd::Hung => Err(fail(format!(
            "a receive (try_recv, or recv_timeout of 500 us to 30 ms) was still blocked after {:?}",
            cfg.run.timeout
        ))),
        other => Err(fail(format!("the probing process {other}"))),
    }
}

/// The probes of [`timeouts_honoured`], in its child.
fn timeouts_probe<T: Transport>(t: &T) -> std::result::Result<(), String> {
    let fail = |report: String| report;
    let (mut tx, mut rx) = t.pair(1).map_err(|e| fail(format!("pair: {e}")))?;
    match rx.try_recv() {
        Err(Error::Empty) => {}
        other => {
            return Err(fail(format!(
                "try_recv on an empty transport returned {other:?}, not Empty"
            )))
        }
    }
    // Whole milliseconds and fractions of one (a transport that rounds 500 us down to 0,
    // or up to a whole tick, shows here), each within the stated slack.
    let slack = t.capabilities().timeout_slack;
    for wait in [
        Duration::from_micros(500),
        Duration::from_micros(1_500),
        Duration::from_millis(30),
    ] {
        let start = Instant::now();
        let got = rx.recv_timeout(wait);
        let took = start.elapsed();
        match got {
            Err(Error::Timeout(_)) if took >= wait && took <= wait + slack => {}
            Err(Error::Timeout(_)) if took < wait => {
                return Err(fail(format!(
                    "recv_timeout({wait:?}) gave up after {took:?}"
                )))
            }
            Err(Error::Timeout(_)) => {
                return Err(fail(format!(
                    "recv_timeout({wait:?}) returned after {took:?}, more than the timeout plus the stated slack of {slack:?}"
                )))
            }
            other => {
                return Err(fail(format!(
                    "recv_timeout on an empty transport returned {other:?}"
                )))
            }
        }
    }
    tx.send(b"after the timeout")
        .map_err(|e| fail(format!("send: {e}")))?;
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(m) if m == b"after the timeout" => {}
        other => {
            return Err(fail(format!(
                "a message sent after a timeout came back as {other:?}"
            )))
        }
    }
    // A message whose send has returned, from a sender that is still there and idle, is
    // whole at the receiver: try_recv takes it at once.
    tx.send(b"already here")
        .map_err(|e| fail(format!("send: {e}")))?;
    match rx.try_recv() {
        Ok(m) if m == b"already here" => Ok(()),
        other => Err(fail(format!(
            "try_recv of a message whose send had returned (its sender alive and idle) \
             returned {other:?}"
        ))),
    }
}

/// Where several senders are declared: generated plans with 2 to 4 sender processes.
pub fn several_senders<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    if t.capabilities().multi_sender.is_none() {
        return Ok(());
    }
    let limits = PlanLimits {
        max_senders: 4,
        ..base_limits(cfg)
    };
    let strategy_has_several = |p: &mut Plan| {
        // Generated plans may have one sender; give those a second one with the same script.
        if p.senders.len() == 1 {
            let mut second = p.senders[0].clone();
            let max = t.capabilities().multi_sender.unwrap_or(0);
            for s in &mut second.sizes {
                *s = (*s).min(max);
            }
            for s in &mut p.senders[0].sizes {
                *s = (*s).min(max);
            }
            p.senders.push(second);
        }
    };
    generated("several_senders", t, cfg, limits, strategy_has_several)
}

/// Every descriptor a pair creates carries `FD_CLOEXEC`, so a program exec'd by either
/// process (or by another thread meanwhile) does not inherit the channel. The pair is made
/// in a forked child, where no other thread opens descriptors, and the child's descriptor
/// table is compared before and after.
pub fn descriptors_cloexec<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    let _serial = super::case::lock_cases();
    let fail = |report: String, kind| Finding {
        check: "descriptors_cloexec",
        report,
        kinds: vec![kind],
    };
    let mut group = super::fork::ChildGroup::new();
    group
        .spawn("pair maker", |rep| {
            let before = open_descriptors()?;
            let pair = t.pair(1).map_err(|e| format!("pair: {e}"))?;
            for fd in open_descriptors()? {
                if before.contains(&fd) {
                    continue;
                }
                // SAFETY: `fd` is a number listed in this process's descriptor table; it is
                // only borrowed for one fcntl, which fails with EBADF if it was closed
                // meanwhile (the listing's own descriptor). No object owning it is used.
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let flags = match nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD) {
                    Ok(f) => f,
                    // The listing's own directory descriptor, closed since.
                    Err(nix::errno::Errno::EBADF) => continue,
                    Err(e) => return Err(format!("fcntl(F_GETFD) on {fd}: {e}")),
                };
                if flags & nix::libc::FD_CLOEXEC == 0 {
                    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                        .map_or_else(|_| "?".to_string(), |p| p.display().to_string());
                    rep.record(format!("descriptor {fd} ({target})").as_bytes());
                }
            }
            drop(pair);
            Ok(())
        })
        .map_err(|e| fail(format!("fork: {e}"), super::ViolationKind::Crashed))?;
    let report = group.wait(cfg.run.timeout).remove(0);
    if report.end != super::fork::ChildEnd::Returned {
        return Err(fail(
            format!("making a pair: {}", report.end),
            super::ViolationKind::Crashed,
        ));
    }
    let leaked: Vec<String> = report
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    if leaked.is_empty() {
        return Ok(());
    }
    let violations: Vec<super::Violation> = leaked
        .iter()
        .map(|d| super::Violation::Leaked { detail: d.clone() })
        .collect();
    Err(Finding {
        check: "descriptors_cloexec",
        kinds: violations.iter().map(|v| v.kind()).collect(),
        report: violations
            .iter()
            .map(|v| format!("  [{}] {v}\n", v.kind()))
            .collect(),
    })
}

/// The descriptors open in this process.
fn open_descriptors() -> std::result::Result<Vec<i32>, String> {
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| format!("/proc/self/fd: {e}"))?;
    let mut fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

/// A message one byte over the declared maximum is refused with an error, and nothing of it
/// is delivered.
pub fn hostile_sizes_refused<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    // A pair open in this process while another thread forks a case would leak into that
    // case's children (and keep this pair open): one case at a time.
    let _serial = super::case::lock_cases();
    let fail = |report: String| Finding {
        check: "hostile_sizes_refused",
        report,
        kinds: vec![super::ViolationKind::Unexpected],
    };
    let caps = t.capabilities();
    if caps.unbounded() {
        // No maximum: no message is too large to send.
        return Ok(());
    }
    let max = caps.max_message_len;
    let (tx, rx) = t.pair(1).map_err(|e| fail(format!("pair: {e}")))?;
    let mut tx = Some(tx);
    // The send happens in a child: a transport that wrongly accepts the message may block
    // in it (nobody reads yet), and the watchdog must be able to stop that.
    let mut group = super::fork::ChildGroup::new();
    group
        .spawn("sender", |_| {
            let tx = tx.as_mut().ok_or("no sender")?;
            t.in_child_sender(tx).map_err(|e| e.to_string())?;
            let too_big = vec![0x5a; max.saturating_add(1)];
            match tx.send(&too_big) {
                Err(Error::MessageTooLarge { .. }) => Ok(()),
                other => Err(format!(
                    "send of {} bytes (max {max}) returned {other:?}",
                    too_big.len()
                )),
            }
        })
        .map_err(|e| fail(format!("fork: {e}")))?;
    drop(tx.take());
    let reports = group.wait(cfg.run.timeout);
    match &reports[0].end {
        super::fork::ChildEnd::Returned => {}
        super::fork::ChildEnd::Hung => {
            return Err(fail(format!(
                "a send of {} bytes (max {max}) was not refused: it blocked until the watchdog",
                max.saturating_add(1)
            )))
        }
        other => return Err(fail(other.to_string())),
    }
    // The receiving side runs in a child too, under the watchdog: a receive that blocks for
    // good must fail the check, not hang the process running it.
    let end_of_stream = t.capabilities().end_of_stream;
    let mut rx = Some(rx);
    let mut group = super::fork::ChildGroup::new();
    group
        .spawn("receiver", |_| {
            let rx = rx.as_mut().ok_or("no receiver")?;
            t.in_child_receiver(rx).map_err(|e| e.to_string())?;
            if !end_of_stream {
                // No end of stream to wait for: nothing of the refused message may be there.
                return match rx.recv_timeout(Duration::from_millis(100)) {
                    Err(e) if e.is_not_ready() => Ok(()),
                    other => Err(format!(
                        "after a refused send, the receiver got {other:?} instead of nothing"
                    )),
                };
            }
            match rx.recv_timeout(Duration::from_secs(10)) {
                Err(Error::Disconnected) => Ok(()),
                // Nothing arrived, but the end never came: a missing disconnection.
                Err(e) if e.is_not_ready() => Err(format!(
                    "{MISSING_END}after a refused send and its sender's exit, the receiver got \
                     {e:?} instead of Disconnected: the end of the stream never came"
                )),
                other => Err(format!(
                    "after a refused send, the receiver got {other:?} instead of Disconnected"
                )),
            }
        })
        .map_err(|e| fail(format!("fork: {e}")))?;
    drop(rx.take());
    let missing = |report: String| Finding {
        kinds: vec![super::ViolationKind::Hung],
        ..fail(report)
    };
    match group.wait(cfg.run.timeout).remove(0).end {
        super::fork::ChildEnd::Returned => Ok(()),
        super::fork::ChildEnd::Failed(m) => match m.strip_prefix(MISSING_END) {
            Some(m) => Err(missing(m.to_string())),
            None => Err(fail(m)),
        },
        super::fork::ChildEnd::Hung => Err(missing(format!(
            "after a refused send and its sender's exit, the receiver's recv_timeout(10 s) was \
             still blocked after {:?}: the end of the stream never came",
            cfg.run.timeout
        ))),
        other => Err(fail(format!("the receiver {other}"))),
    }
}

/// How a receiver's report of a missing end of stream starts.
const MISSING_END: &str = "missing end: ";

/// If `IPCPROP_SAVE` names a directory, writes `finding` there as
/// `<transport>-<check>.txt` (the seed, minimal plan and timeline, to keep and replay with
/// `IPCPROP_SEED`), and says so on stderr.
pub fn save_finding(transport: &str, finding: &Finding) {
    let Some(dir) = std::env::var_os("IPCPROP_SAVE") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let path = dir.join(format!("{transport}-{}.txt", finding.check));
    let written =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, finding.to_string()));
    match written {
        Ok(()) => eprintln!("saved {}", path.display()),
        Err(e) => eprintln!("could not save {}: {e}", path.display()),
    }
}

/// Every check's name, in order.
pub const CHECKS: [&str; 16] = [
    "fifo_and_integrity",
    "boundary_sizes",
    "disconnect_on_drop",
    "disconnect_on_sigkill",
    "receiver_gone",
    "timeouts_honoured",
    "several_senders",
    "hostile_sizes_refused",
    "crash_recovery",
    "faults_inside_operations",
    "descriptors_cloexec",
    "stopped_sender_mid_message",
    "backlog",
    "forged_length_refused",
    "sends_fail_after_receiver_gone",
    "send_deadlines_all_or_nothing",
];

/// Runs every check over `t`; returns what each found (empty: all passed).
pub fn run_battery<T: Transport>(t: &T, cfg: &BatteryConfig) -> Vec<Finding> {
    let checks: [fn(&T, &BatteryConfig) -> CheckResult; 16] = [
        fifo_and_integrity,
        boundary_sizes,
        disconnect_on_drop,
        disconnect_on_sigkill,
        receiver_gone,
        timeouts_honoured,
        several_senders,
        hostile_sizes_refused,
        crash_recovery,
        faults_inside_operations,
        descriptors_cloexec,
        stopped_sender_mid_message,
        backlog,
        forged_length_refused,
        sends_fail_after_receiver_gone,
        send_deadlines_all_or_nothing,
    ];
    checks.iter().filter_map(|c| c(t, cfg).err()).collect()
}

/// The checks that need nothing of a transport but [`run_case`]: every case runs a
/// [`Plan`]. They are the battery of a program under test ([`super::exec`]), whose ends
/// are not in this process; the others make a pair here.
pub const PLAN_CHECKS: [&str; 8] = [
    "fifo_and_integrity",
    "boundary_sizes",
    "disconnect_on_drop",
    "disconnect_on_sigkill",
    "receiver_gone",
    "several_senders",
    "faults_inside_operations",
    "backlog",
];

/// Runs the [`PLAN_CHECKS`] over `t`; returns what each found (empty: all passed).
///
/// ```no_run
/// use ipcprop::check::battery::{run_plan_battery, BatteryConfig};
/// use ipcprop::check::exec::ExecTransport;
/// use ipcprop::check::Capabilities;
///
/// let program = ExecTransport::new("python3 examples/python/pipe_fixed.py")
///     .with_capabilities(Capabilities::new(65_536));
/// let findings = run_plan_battery(&program, &BatteryConfig::default());
/// assert!(findings.is_empty(), "{}", findings[0]);
/// ```
pub fn run_plan_battery<T: Transport>(t: &T, cfg: &BatteryConfig) -> Vec<Finding> {
    let checks: [fn(&T, &BatteryConfig) -> CheckResult; 8] = [
        fifo_and_integrity,
        boundary_sizes,
        disconnect_on_drop,
        disconnect_on_sigkill,
        receiver_gone,
        several_senders,
        faults_inside_operations,
        backlog,
    ];
    checks.iter().filter_map(|c| c(t, cfg).err()).collect()
}

/// Generates the conformance battery for a transport as ordinary `#[test]`s, one per check
/// (see [`check::battery`](crate::check::battery)). The expression is evaluated afresh in
/// each test and must give a value implementing [`Transport`].
///
/// In `tests/conformance.rs` of your crate, with `MyTransport` implementing
/// [`Transport`]:
///
/// ```
/// # use ipcprop::check::builtin::PipeTransport as MyTransport;
/// ipcprop::conformance_tests!(my_transport, MyTransport::default());
/// # fn main() {}
/// ```
///
/// gives `my_transport::fifo_and_integrity`, `my_transport::boundary_sizes`, ... as tests.
/// A third argument caps the generated message sizes for this transport (otherwise
/// `IPCPROP_SIZE_CAP`, or [`DEFAULT_SIZE_CAP`]):
///
/// ```
/// # use ipcprop::check::builtin::PipeTransport as MyTransport;
/// ipcprop::conformance_tests!(my_small_transport, MyTransport::default(), size_cap = 64 * 1024);
/// # fn main() {}
/// ```
///
/// A program under test in any language ([`ExecTransport`](crate::check::exec::ExecTransport),
/// speaking the driver protocol) gets the [`PLAN_CHECKS`]
/// (its channel is not in this process, so the checks that make a pair here do not apply):
///
/// ```
/// use ipcprop::check::exec::ExecTransport;
/// use ipcprop::check::Capabilities;
/// ipcprop::conformance_tests!(
///     my_program,
///     exec = ExecTransport::new("python3 my_program.py").with_capabilities(Capabilities::new(4096))
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, exec = $make:expr) => {
        $crate::conformance_tests!(
            $module,
            exec = $make,
            size_cap = $crate::check::battery::BatteryConfig::default().size_cap
        );
    };
    ($module:ident, exec = $make:expr, size_cap = $cap:expr) => {
        $crate::conformance_tests!(@tests $module, $make, $cap, [
            fifo_and_integrity, boundary_sizes, disconnect_on_drop, disconnect_on_sigkill,
            receiver_gone, several_senders, faults_inside_operations, backlog,
        ]);
    };
    ($module:ident, $make:expr) => {
        $crate::conformance_tests!(
            $module,
            $make,
            size_cap = $crate::check::battery::BatteryConfig::default().size_cap
        );
    };
    ($module:ident, $make:expr, size_cap = $cap:expr) => {
        $crate::conformance_tests!(@tests $module, $make, $cap, [
            fifo_and_integrity, boundary_sizes, disconnect_on_drop, disconnect_on_sigkill,
            receiver_gone, timeouts_honoured, several_senders, hostile_sizes_refused,
            crash_recovery, faults_inside_operations, descriptors_cloexec,
            stopped_sender_mid_message, backlog, forged_length_refused,
            sends_fail_after_receiver_gone, send_deadlines_all_or_nothing,
        ]);
    };
    // One `#[test]` per named check, each over a fresh `$make`.
    (@tests $module:ident, $make:expr, $cap:expr, [$($check:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            use $crate::check::battery as b;

            fn run<T: $crate::check::Transport>(
                check: fn(&T, &b::BatteryConfig) -> ::std::result::Result<(), b::Finding>,
                t: T,
            ) {
                let cfg = b::BatteryConfig {
                    size_cap: $cap,
                    ..b::BatteryConfig::default()
                };
                if let Err(finding) = check(&t, &cfg) {
                    b::save_finding(&t.name(), &finding);
                    panic!("{finding}");
                }
            }

            $(
                #[test]
                fn $check() {
                    run(b::$check, $make)
                }
            )*
        }
    };
}

/// The records of `crash_recovery`'s sender that the harness's killer reads.
const KILL_HERE: &[u8] = b"R";
const SENDING: &[u8] = b"S";

/// `crash_recovery`'s killer: lets the sender go from its rendezvous, then stops it in
/// short steps until it is inside its send (as the nemesis does), and SIGKILLs it there.
struct KillInside {
    armed: bool,
    done: bool,
    delay: Duration,
    /// The kill landed inside the send.
    inside: bool,
}

impl super::fork::Observer for KillInside {
    fn record(&mut self, child: usize, record: &[u8], _now: Instant) {
        if child == 0 && record == KILL_HERE {
            self.armed = true;
        }
    }

    fn act(&mut self, _now: Instant, ctl: &mut super::fork::Control<'_>) {
        if !self.armed || self.done {
            return;
        }
        self.done = true;
        // Stepped on while it has not started its send; then killed where it stands
        // (inside the send, or past it).
        let last = super::nemesis::stop_where(ctl, 0, true, self.delay, |l| l == KILL_HERE);
        self.inside = last.as_deref() == Some(SENDING);
        ctl.signal(0, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Where declared persistent: a sender and a receiver process are SIGKILLed at generated
/// steps (the receiver between receives; the sender, in every other round, by the harness
/// from outside, inside the send of a large message, so a write to the storage is cut in
/// the middle); afterwards a receiver re-attached to the same
/// storage must find every acknowledged message not received, once and in order, and
/// nothing received before, corrupt or never sent. One round per generated case
/// ([`BatteryConfig::cases`], `IPCPROP_CASES`), each with its own kill points.
pub fn crash_recovery<T: Transport>(t: &T, cfg: &BatteryConfig) -> CheckResult {
    use super::fork::ChildGroup;
    use super::history::{fill_message, Delivery, MsgId};
    use crate::transport::Wait;

    if !t.capabilities().persistent {
        return Ok(());
    }
    let fail = |report: String, kind| Finding {
        check: "crash_recovery",
        report,
        kinds: vec![kind],
    };
    let max = t.capabilities().max_message_len.clamp(8, 4096);
    let n = 24usize;
    for round in 0..u64::from(cfg.cases.max(1)) {
        // One case at a time per process (see `run_case`): this one forks too.
        let _serial = super::case::lock_cases();
        let seed = cfg.seed.wrapping_add(round);
        let kill_sender = (seed.wrapping_mul(7) % (n as u64 + 1)) as usize;
        let kill_receiver = (seed.wrapping_mul(13) % (n as u64 + 1)) as usize;
        // Odd rounds: the harness kills the sender from outside, inside the send of a large
        // message (a write to storage cut in the middle); even rounds: it kills itself
        // between two sends.
        let inside = seed % 2 == 1 && kill_sender < n;
        let big = t.capabilities().max_message_len.clamp(8, 256 << 10);
        let len = |q: usize| {
            if inside && q == kill_sender {
                big
            } else {
                8 + (q * 37 + seed as usize) % (max - 7)
            }
        };
        let (s, r) = t
            .pair(1)
            .map_err(|e| fail(format!("pair: {e}"), super::ViolationKind::Crashed))?;
        let (mut s, mut r) = (Some(s), Some(r));
        let mut group = ChildGroup::new();
        let spawned = group.spawn("sender", |rep| {
            drop(r.take());
            let tx = s.as_mut().ok_or("no sender")?;
            t.in_child_sender(tx).map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            for q in 0..n {
                if q == kill_sender && inside {
                    // The harness kills it inside the next send.
                    rep.rendezvous(KILL_HERE, Duration::from_secs(30));
                } else if q == kill_sender {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                }
                fill_message(
                    seed,
                    MsgId {
                        sender: 0,
                        seq: q as u32,
                    },
                    len(q),
                    &mut buf,
                );
                rep.record(SENDING);
                tx.send(&buf).map_err(|e| e.to_string())?;
                rep.record(&(q as u32).to_le_bytes());
            }
            Ok(())
        });
        spawned.map_err(|e| fail(format!("fork: {e}"), super::ViolationKind::Crashed))?;
        // The receiver is forked from the parent's copy of `r`, which the parent keeps to
        // re-attach later.
        let spawned = group.spawn("receiver", |rep| {
            drop(s.take());
            let rx = r.as_mut().ok_or("no receiver")?;
            t.in_child_receiver(rx).map_err(|e| e.to_string())?;
            let mut got = 0usize;
            loop {
                if got == kill_receiver {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                }
                match rx.recv_with(Wait::For(Duration::from_millis(50)), Delivery::of) {
                    Ok(d) => {
                        let id = d.label().map_or(u32::MAX, |l| l.seq);
                        rep.record(&id.to_le_bytes());
                        got += 1;
                    }
                    Err(Error::Timeout(_)) => {}
                    Err(_) => return Ok(()),
                }
            }
        });
        spawned.map_err(|e| fail(format!("fork: {e}"), super::ViolationKind::Crashed))?;
        drop(s.take());
        let mut killer = KillInside {
            armed: false,
            done: false,
            delay: Duration::from_micros(seed % 50),
            inside: false,
        };
        let reports = group.wait_observed(cfg.run.timeout, &mut killer);
        let ids = |i: usize| -> Vec<u32> {
            reports[i]
                .records
                .iter()
                .filter_map(|b| Some(u32::from_le_bytes(b.as_slice().try_into().ok()?)))
                .collect()
        };
        let (acked, received) = (ids(0), ids(1));
        let keep = r.take().ok_or_else(|| {
            fail(
                "the receiver vanished".into(),
                super::ViolationKind::Crashed,
            )
        })?;
        let mut again = match t.reattach(&keep) {
            Ok(Some(rx)) => rx,
            Ok(None) => {
                return Err(fail(
                    "declared persistent, but reattach gave nothing".into(),
                    super::ViolationKind::Lost,
                ))
            }
            Err(e) => {
                return Err(fail(
                    format!("reattach: {e}"),
                    super::ViolationKind::Crashed,
                ))
            }
        };
        drop(keep);
        let mut recovered = Vec::new();
        loop {
            match again.recv_with(Wait::For(Duration::from_millis(200)), |m| m.to_vec()) {
                Ok(m) => recovered.push(m),
                Err(Error::Disconnected | Error::Timeout(_)) => break,
                Err(e) => {
                    return Err(fail(
                        format!("receive after reattach: {e}"),
                        super::ViolationKind::Crashed,
                    ))
                }
            }
        }
        let how = if killer.inside {
            "killed by the harness inside the send of message"
        } else if inside {
            "killed by the harness (not inside a send) at message"
        } else {
            "killed before message"
        };
        let context = format!(
            "round {round} (seed {seed}): sender {how} {kill_sender}, receiver after {kill_receiver}; acknowledged sent {acked:?}, received {received:?}"
        );
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for m in &recovered {
            let id = Delivery::of(m).label().map(|l| l.seq);
            let ok = id.is_some_and(|q| {
                let q = q as usize;
                q < n && {
                    fill_message(
                        seed,
                        MsgId {
                            sender: 0,
                            seq: q as u32,
                        },
                        len(q),
                        &mut buf,
                    );
                    buf == *m
                }
            });
            let Some(q) = id.filter(|_| ok) else {
                return Err(fail(
                    format!("{context}: a corrupt or unknown message was recovered"),
                    super::ViolationKind::Corrupted,
                ));
            };
            if received.contains(&q) {
                return Err(fail(
                    format!("{context}: message {q} came back after it was received"),
                    super::ViolationKind::Duplicated,
                ));
            }
            if seen.last().is_some_and(|&l| l >= q) {
                return Err(fail(
                    format!("{context}: recovered out of order: {q} after {seen:?}"),
                    super::ViolationKind::Reordered,
                ));
            }
            seen.push(q);
        }
        // The receiver kills itself between receives, never inside one: nothing may miss.
        let missing: Vec<u32> = acked
            .iter()
            .copied()
            .filter(|q| !received.contains(q) && !seen.contains(q))
            .collect();
        if !missing.is_empty() {
            return Err(fail(
                format!("{context}: acknowledged messages lost: {missing:?}"),
                super::ViolationKind::Lost,
            ));
        }
    }
    Ok(())
}
