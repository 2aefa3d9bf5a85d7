//! `ipcprop`: run the tutorial scenarios, or a conformance campaign over the built-in
//! transports.
//!
//! ```text
//! ipcprop demo [fork|threads|pipe|shm|file-queue|all]
//! ipcprop check [--transport NAME]... [--cases N] [--seed S] [--timeout SECS] [--time SECS]
//!               [--jobs N] [--json] [--save DIR]
//! ipcprop bench [--only pipe|ring|queue|fork]... [--sizes 0,64,4096,65536] [--budget-ms MS]
//!               [--plot FILE] [--markdown] [--queue-dir DIR]
//! ipcprop queue salvage SRC DST
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use ipcprop::check::broken::{Broken, Defect};
use ipcprop::check::builtin::{FaultyPipeTransport, PipeTransport, QueueTransport, RingTransport};
use ipcprop::check::{
    campaign, interrupt, CampaignConfig, CampaignReport, FaultCounts, RunConfig, Transport,
};
use ipcprop::pipe::fault::{Fault, FaultSchedule};
use ipcprop::shm::RingConfig;

#[allow(dead_code)]
#[path = "../../examples/file_queue.rs"]
mod file_queue_example;
#[allow(dead_code)]
#[path = "../../examples/fork.rs"]
mod fork_example;
#[allow(dead_code)]
#[path = "../../examples/pipe.rs"]
mod pipe_example;
#[allow(dead_code)]
#[path = "../../examples/shm.rs"]
mod shm_example;
#[allow(dead_code)]
#[path = "../../examples/threads.rs"]
mod threads_example;

#[derive(Parser)]
#[command(
    name = "ipcprop",
    version,
    about = "IPC you can trust on Linux, and the harness that proves it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tutorial's scenarios, done right (the same code as `examples/`).
    Demo {
        /// Which scenario.
        #[arg(value_enum, default_value = "all")]
        scenario: Scenario,
    },
    /// Run a conformance campaign: generated plans across real forked processes, checked
    /// for lost, unexpected, duplicated, reordered and corrupted messages and for hangs.
    /// Exits 1 if any violation is found, after printing the minimal failing plan.
    Check(CheckArgs),
    /// Measure every transport side by side with the raw syscall, the peer crates and the
    /// physical floor, at message sizes 0, 64, 4096 and 65536 bytes (about 40 s): a table
    /// with each figure and its ratio to the baseline, the design targets, and optionally
    /// an SVG chart.
    Bench(BenchArgs),
    /// Work with a queue file.
    #[command(subcommand)]
    Queue(QueueCommand),
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Copy every valid, unconsumed message of a damaged queue file, in order, into a new
    /// queue file, and list what could not be read (the way out of "corrupt"). The source
    /// is only read; the destination must not exist. Exits 1 if anything was skipped.
    Salvage {
        /// The damaged queue file.
        src: std::path::PathBuf,
        /// Where to write the new queue file.
        dst: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Fork,
    Threads,
    Pipe,
    Shm,
    FileQueue,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportName {
    /// The framed pipe channel.
    Pipe,
    /// The pipe channel with short reads and writes, EINTR and EAGAIN injected.
    PipeFaults,
    /// The shared-memory ring (a 4 KiB ring, so it fills and wraps constantly).
    Ring,
    /// The file queue as a channel (a fresh, unlinked queue file per case).
    Queue,
    /// A pipe that silently drops each sender's third message: shows what a failure
    /// report looks like. Not part of the default set.
    BrokenDrop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { scenario } => demo(scenario),
        Command::Check(args) => check(args),
        Command::Bench(args) => bench(args),
        Command::Queue(QueueCommand::Salvage { src, dst }) => salvage(&src, &dst),
    }
}

fn salvage(src: &std::path::Path, dst: &std::path::Path) -> ExitCode {
    let report = match ipcprop::queue::FileQueue::salvage(src, dst) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipcprop queue salvage: {e}");
            return ExitCode::from(2);
        }
    };
    match report.header {
        Some(slot) => println!(
            "header: slot {slot:?} (offset {}); started at its head",
            slot.offset()
        ),
        None => println!(
            "header: neither slot usable; copied every valid record from the start of the data \
             area (consumed messages may be among them)"
        ),
    }
    println!(
        "copied {} message(s), {} byte(s), to {}{}",
        report.copied,
        report.copied_bytes,
        dst.display(),
        report
            .first_seq
            .map_or(String::new(), |s| format!(" (from message {s} on)"))
    );
    if report.consumed_skipped > 0 {
        println!(
            "left out {} message(s) the header records as consumed",
            report.consumed_skipped
        );
    }
    for s in &report.skipped {
        let from = s.first_seq.map_or("?".to_string(), |q| q.to_string());
        match s.resumed_at_seq {
            Some(to) => println!(
                "skipped {} byte(s) at offset {}: messages {from}..{} lost",
                s.bytes,
                s.offset,
                to.saturating_sub(1)
            ),
            None => println!(
                "skipped {} byte(s) at offset {} to the end of the file (from message {from}): \
                 the torn remains of an unfinished write, or damaged last records",
                s.bytes, s.offset
            ),
        }
    }
    if report.skipped.is_empty() {
        println!("nothing skipped");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FamilyName {
    /// The pipe channel vs raw write/read and a UnixStream.
    Pipe,
    /// The shared-memory ring vs rtrb, crossbeam-channel and a bare spin.
    Ring,
    /// The file queue vs the queue-file crate.
    Queue,
    /// Forked property cases vs bare fork + _exit + waitpid.
    Fork,
}

/// The options of `ipcprop bench`.
#[derive(Args)]
struct BenchArgs {
    /// Families to measure (repeat for several); all by default.
    #[arg(long = "only", value_enum)]
    families: Vec<FamilyName>,
    /// Message sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ipcprop::bench::SIZES)]
    sizes: Vec<usize>,
    /// Milliseconds each measurement runs once calibrated.
    #[arg(long, default_value_t = 250, value_name = "MS")]
    budget_ms: u64,
    /// Write the results as an SVG chart to FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<std::path::PathBuf>,
    /// Also print the table as Markdown (what the README shows).
    #[arg(long)]
    markdown: bool,
    /// Directory for the queue files (default: $CARGO_TARGET_DIR, else ./target if it
    /// exists, else the temporary directory). Use a real disk: fsync on a tmpfs is free.
    #[arg(long, value_name = "DIR")]
    queue_dir: Option<std::path::PathBuf>,
}

fn bench(args: BenchArgs) -> ExitCode {
    use ipcprop::bench::{self, Family, Options};
    if args.sizes.iter().any(|&s| s > 1 << 20) {
        eprintln!("ipcprop bench: sizes above 1 MiB are not supported (the rings hold 256 KiB)");
        return ExitCode::from(2);
    }
    let mut opts = Options::quick();
    if !args.families.is_empty() {
        opts.families = args
            .families
            .iter()
            .map(|f| match f {
                FamilyName::Pipe => Family::Pipe,
                FamilyName::Ring => Family::Ring,
                FamilyName::Queue => Family::Queue,
                FamilyName::Fork => Family::Fork,
            })
            .collect();
    }
    opts.sizes = args.sizes.clone();
    opts.budget = Duration::from_millis(args.budget_ms.max(1));
    if let Some(d) = &args.queue_dir {
        opts.queue_dir = d.clone();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = bench::run(&opts, &mut |done, total, label| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(label.to_string());
    });
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipcprop bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if args.markdown {
        println!();
        print!("{}", report.markdown());
    }
    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, bench::svg::render(&report)) {
            eprintln!("ipcprop bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("chart written to {}", path.display());
    }
    ExitCode::SUCCESS
}

fn demo(scenario: Scenario) -> ExitCode {
    type Run = fn() -> Result<(), Box<dyn std::error::Error>>;
    let all: [(Scenario, &str, Run); 5] = [
        (Scenario::Fork, "fork", fork_example::run),
        (Scenario::Threads, "threads", threads_example::run),
        (Scenario::Pipe, "pipe", pipe_example::run),
        (Scenario::Shm, "shm", shm_example::run),
        (Scenario::FileQueue, "file-queue", file_queue_example::run),
    ];
    for (which, name, run) in all {
        if scenario != Scenario::All && scenario != which {
            continue;
        }
        println!("== {name}");
        if let Err(e) = run() {
            eprintln!("demo {name} failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// The options of `ipcprop check`.
#[derive(Args)]
struct CheckArgs {
    /// Transports to check (repeat the option for several); all by default.
    #[arg(long = "transport", value_enum)]
    transports: Vec<TransportName>,
    /// Generated cases per transport.
    #[arg(long, default_value_t = 200)]
    cases: u32,
    /// Seed of the plan generator (the same seed gives the same plans).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Watchdog: seconds before a case's processes count as hung.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Run each transport for this many seconds (rounds of --cases with successive
    /// seeds) instead of one round; stops at the first failure.
    #[arg(long, value_name = "SECS")]
    time: Option<u64>,
    /// Print one JSON object instead of progress bars and the table.
    #[arg(long)]
    json: bool,
    /// Write each minimal failing case (replay command, plan, violations, timeline) to
    /// DIR/<transport>-seed<seed>.txt.
    #[arg(long, value_name = "DIR")]
    save: Option<std::path::PathBuf>,
    /// Split each transport's cases over this many worker processes (each with its own
    /// seed), to use several cores.
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Internal: run as a worker of --jobs and print results for the parent.
    #[arg(long, hide = true)]
    worker: bool,
}

/// One transport's results, however they were obtained (here or from worker processes).
struct Row {
    transport: String,
    cases: u32,
    messages: u64,
    bytes: u64,
    /// Faults injected by the nemesis, and how many landed inside an operation.
    faults: u64,
    faults_inside: u64,
    /// The faults by kind.
    kinds: FaultCounts,
    /// The longest message delivered.
    largest: u64,
    seconds: f64,
    failure: Option<RowFailure>,
}

struct RowFailure {
    seed: u64,
    /// (kind, text) of each violation of the minimal failing case.
    violations: Vec<(String, String)>,
    /// The readable report: plan, violations, timeline.
    report: String,
    /// The plan, as data.
    plan: String,
}

impl Row {
    fn from_report(r: &CampaignReport) -> Row {
        Row {
            transport: r.transport.clone(),
            cases: r.cases,
            messages: r.messages,
            bytes: r.bytes,
            faults: r.faults,
            faults_inside: r.faults_inside,
            kinds: r.fault_kinds,
            largest: r.largest,
            seconds: r.elapsed.as_secs_f64(),
            failure: r.failure.as_ref().map(|f| RowFailure {
                seed: f.seed,
                violations: f
                    .minimal
                    .violations
                    .iter()
                    .map(|v| (v.kind().to_string(), v.to_string()))
                    .collect(),
                report: match f.reproduced {
                    (_, 0) => format!(
                        "shrinking was cut short: the smallest failing plan found so far, not \
                         run again\n{}",
                        f.minimal.report()
                    ),
                    (failed, runs) => format!(
                        "the minimal plan fails {failed} of {runs} runs\n{}",
                        f.minimal.report()
                    ),
                },
                plan: format!("{:?}", f.minimal.plan),
            }),
        }
    }

    fn cases_per_sec(&self) -> f64 {
        f64::from(self.cases) / self.seconds.max(1e-9)
    }

    /// The line protocol a worker process prints for its parent (`--jobs`).
    fn to_worker_output(&self) -> String {
        let one_line = |s: &str| s.replace(['\t', '\n'], " ");
        let mut out = format!(
            "IPCPROP-ROW\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            one_line(&self.transport),
            self.cases,
            self.messages,
            self.bytes,
            self.faults,
            self.faults_inside,
            self.seconds,
            self.largest,
            self.kinds.kills,
            self.kinds.pauses,
            self.kinds.storms
        );
        if let Some(f) = &self.failure {
            out.push_str(&format!(
                "IPCPROP-FAIL\t{}\t{}\n",
                f.seed,
                one_line(&f.plan)
            ));
            for (k, t) in &f.violations {
                out.push_str(&format!("IPCPROP-V\t{}\t{}\n", one_line(k), one_line(t)));
            }
            out.push_str("IPCPROP-REPORT\n");
            out.push_str(&f.report);
        }
        out
    }

    fn from_worker_output(text: &str) -> Option<Row> {
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next()?.split('\t').collect();
        if head.first() != Some(&"IPCPROP-ROW") || head.len() != 12 {
            return None;
        }
        let mut row = Row {
            transport: head[1].to_string(),
            cases: head[2].parse().ok()?,
            messages: head[3].parse().ok()?,
            bytes: head[4].parse().ok()?,
            faults: head[5].parse().ok()?,
            faults_inside: head[6].parse().ok()?,
            seconds: head[7].parse().ok()?,
            largest: head[8].parse().ok()?,
            kinds: FaultCounts {
                kills: head[9].parse().ok()?,
                pauses: head[10].parse().ok()?,
                storms: head[11].parse().ok()?,
            },
            failure: None,
        };
        let mut report = None::<String>;
        for line in lines {
            if let Some(r) = report.as_mut() {
                r.push_str(line);
                r.push('\n');
                continue;
            }
            let parts: Vec<&str> = line.splitn(3, '\t').collect();
            match parts.as_slice() {
                ["IPCPROP-FAIL", seed, plan] => {
                    row.failure = Some(RowFailure {
                        seed: seed.parse().ok()?,
                        violations: Vec::new(),
                        report: String::new(),
                        plan: plan.to_string(),
                    })
                }
                ["IPCPROP-V", kind, text] => row
                    .failure
                    .as_mut()?
                    .violations
                    .push((kind.to_string(), text.to_string())),
                ["IPCPROP-REPORT"] => report = Some(String::new()),
                _ => return None,
            }
        }
        if let (Some(f), Some(r)) = (row.failure.as_mut(), report) {
            f.report = r;
        }
        Some(row)
    }
}

fn check(args: CheckArgs) -> ExitCode {
    // Ctrl-C or SIGTERM: finish the case in hand (cut short), print what was done, remove
    // the temporary directories, exit 130 or 143. A second signal exits at once.
    if let Err(e) = interrupt::install() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mut transports = args.transports.clone();
    if transports.is_empty() {
        transports = vec![
            TransportName::Pipe,
            TransportName::PipeFaults,
            TransportName::Ring,
            TransportName::Queue,
        ];
    }
    transports.dedup();
    let config = CampaignConfig {
        cases: args.cases,
        seed: args.seed,
        run: RunConfig {
            timeout: Duration::from_secs(args.timeout.max(1)),
            ..RunConfig::default()
        },
        ..CampaignConfig::default()
    };
    let mut rows = Vec::new();
    for t in transports {
        let result = if args.jobs > 1 && !args.worker {
            run_sharded(t, &args)
        } else {
            run_named(t, &config, &args).map(|r| Row::from_report(&r))
        };
        match result {
            Ok(r) => rows.push(r),
            Err(e) => {
                eprintln!("error: could not run the campaign: {e}");
                return ExitCode::from(2);
            }
        }
        if interrupt::requested().is_some() {
            break;
        }
    }
    let interrupted = interrupt::requested();
    if args.worker {
        for r in &rows {
            print!("{}", r.to_worker_output());
        }
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &args.save {
        if let Err(e) = save_failures(dir, &rows) {
            eprintln!(
                "error: could not save the failing cases in {}: {e}",
                dir.display()
            );
            return ExitCode::from(2);
        }
    }
    let failed = rows.iter().any(|r| r.failure.is_some());
    if args.json {
        println!("{}", to_json(&rows));
    } else {
        print_table(&rows);
        for r in &rows {
            if let Some(f) = &r.failure {
                println!();
                println!(
                    "minimal failing case for {} (reproduce with --seed {}):",
                    r.transport, f.seed
                );
                print!("{}", f.report);
            }
        }
    }
    if let Some(signal) = interrupted {
        let name = match signal {
            2 => "SIGINT",
            15 => "SIGTERM",
            _ => "a signal",
        };
        let cases: u64 = rows.iter().map(|r| u64::from(r.cases)).sum();
        eprintln!(
            "interrupted by {name}: stopped after {cases} finished case(s){}; the case that was \
             running was cut short and is not counted",
            if failed {
                ", a violation had been found"
            } else {
                ", no violation found so far"
            }
        );
        return ExitCode::from(interrupt::exit_status(signal));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_named(
    t: TransportName,
    config: &CampaignConfig,
    args: &CheckArgs,
) -> ipcprop::Result<CampaignReport> {
    match t {
        TransportName::Pipe => run_one(&PipeTransport::default(), config, args),
        TransportName::PipeFaults => {
            let schedule = FaultSchedule::new(vec![
                Fault::Short(1),
                Fault::Pass,
                Fault::Interrupted,
                Fault::Short(7),
                Fault::WouldBlock,
                Fault::Short(4093),
            ]);
            run_one(&FaultyPipeTransport::new(schedule), config, args)
        }
        TransportName::Ring => run_one(
            &RingTransport {
                config: RingConfig::new().with_capacity(4096),
            },
            config,
            args,
        ),
        TransportName::Queue => run_one(&QueueTransport::new()?, config, args),
        TransportName::BrokenDrop => run_one(
            &Broken::new(PipeTransport::default(), Defect::Drop(2)),
            config,
            args,
        ),
    }
}

/// `--jobs N`: the cases of one transport split over N worker processes (this program
/// again, `--worker`), each with its own seed; cases are serialized within a process, so
/// processes are how a campaign uses several cores.
fn run_sharded(t: TransportName, args: &CheckArgs) -> ipcprop::Result<Row> {
    let name = t
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let exe = std::env::current_exe().map_err(|e| ipcprop::Error::Io {
        op: "find this program",
        source: e,
    })?;
    let jobs = args.jobs.max(1);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(jobs as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} workers {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name.clone());
    let start = std::time::Instant::now();
    let mut children = Vec::new();
    for i in 0..jobs {
        let cases = args.cases / jobs as u32 + u32::from((i as u32) < args.cases % jobs as u32);
        let seed = args
            .seed
            .wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["check", "--worker", "--transport", &name])
            .args(["--cases", &cases.to_string(), "--seed", &seed.to_string()])
            .args(["--timeout", &args.timeout.to_string()])
            .stdout(std::process::Stdio::piped());
        if let Some(t) = args.time {
            cmd.args(["--time", &t.to_string()]);
        }
        children.push(cmd.spawn().map_err(|e| ipcprop::Error::Io {
            op: "start a worker",
            source: e,
        })?);
    }
    let mut rows = Vec::new();
    for child in children {
        let out = child.wait_with_output().map_err(|e| ipcprop::Error::Io {
            op: "wait for a worker",
            source: e,
        })?;
        bar.inc(1);
        let text = String::from_utf8_lossy(&out.stdout);
        rows.push(
            Row::from_worker_output(&text).ok_or_else(|| ipcprop::Error::Io {
                op: "read a worker's results",
                source: std::io::Error::other(format!("unexpected output: {text}")),
            })?,
        );
    }
    bar.finish_and_clear();
    let failure = rows.iter_mut().find_map(|r| r.failure.take());
    Ok(Row {
        transport: rows.first().map_or(name, |r| r.transport.clone()),
        cases: rows.iter().map(|r| r.cases).sum(),
        messages: rows.iter().map(|r| r.messages).sum(),
        bytes: rows.iter().map(|r| r.bytes).sum(),
        faults: rows.iter().map(|r| r.faults).sum(),
        faults_inside: rows.iter().map(|r| r.faults_inside).sum(),
        kinds: rows
            .iter()
            .fold(FaultCounts::default(), |a, r| a.plus(r.kinds)),
        largest: rows.iter().map(|r| r.largest).max().unwrap_or(0),
        seconds: start.elapsed().as_secs_f64(),
        failure,
    })
}

/// One transport's campaign: one round of `--cases`, or rounds with successive seeds for
/// `--time` seconds (stopping at the first failure), with a progress bar unless `--json`.
fn run_one<T: Transport>(
    transport: &T,
    config: &CampaignConfig,
    args: &CheckArgs,
) -> ipcprop::Result<CampaignReport> {
    let bar = if args.json || args.worker {
        ProgressBar::hidden()
    } else if args.time.is_some() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::new(u64::from(config.cases))
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} cases {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(transport.name());
    let until = args
        .time
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let mut total: Option<CampaignReport> = None;
    let mut round = 0u64;
    loop {
        let cfg = CampaignConfig {
            seed: config.seed.wrapping_add(round),
            ..config.clone()
        };
        let r = campaign(transport, &cfg, &mut |outcome| {
            bar.inc(1);
            if !outcome.passed() {
                bar.set_message("violation found, shrinking");
            }
        })?;
        round += 1;
        let done = r.failure.is_some()
            || r.interrupted.is_some()
            || until.is_none_or(|u| std::time::Instant::now() >= u);
        total = Some(match total {
            None => r,
            Some(t) => CampaignReport {
                transport: t.transport,
                cases: t.cases + r.cases,
                messages: t.messages + r.messages,
                bytes: t.bytes + r.bytes,
                cases_with_faults: t.cases_with_faults + r.cases_with_faults,
                cases_fault_inside: t.cases_fault_inside + r.cases_fault_inside,
                faults: t.faults + r.faults,
                faults_inside: t.faults_inside + r.faults_inside,
                fault_kinds: t.fault_kinds.plus(r.fault_kinds),
                largest: t.largest.max(r.largest),
                violations: r.violations,
                elapsed: t.elapsed + r.elapsed,
                failure: r.failure,
                interrupted: r.interrupted,
            },
        });
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    total.ok_or_else(|| ipcprop::Error::Corrupt("no campaign round ran".into()))
}

/// Writes each minimal failing case to `dir`, with the command that replays it.
fn save_failures(dir: &std::path::Path, rows: &[Row]) -> std::io::Result<()> {
    for r in rows {
        if let Some(f) = &r.failure {
            std::fs::create_dir_all(dir)?;
            let path = dir.join(format!("{}-seed{}.txt", r.transport, f.seed));
            let text = format!(
                "replay: ipcprop check --transport {} --seed {}\n\n{}\nplan as data: {}\n",
                r.transport, f.seed, f.report, f.plan
            );
            std::fs::write(&path, text)?;
            eprintln!("saved {}", path.display());
        }
    }
    Ok(())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The results as one JSON object.
fn to_json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let failure = match &r.failure {
                None => "null".to_string(),
                Some(f) => {
                    let violations: Vec<String> = f
                        .violations
                        .iter()
                        .map(|(k, t)| format!("{{\"kind\":{},\"text\":{}}}", json_str(k), json_str(t)))
                        .collect();
                    format!(
                        "{{\"seed\":{},\"violations\":[{}],\"report\":{}}}",
                        f.seed,
                        violations.join(","),
                        json_str(&f.report)
                    )
                }
            };
            format!(
                "{{\"transport\":{},\"cases\":{},\"messages\":{},\"bytes\":{},\"faults\":{},\"faults_inside\":{},\"faults_by_kind\":{{\"kill\":{},\"pause\":{},\"storm\":{}}},\"largest\":{},\"violations\":{},\"cases_per_sec\":{:.1},\"seconds\":{:.3},\"failure\":{}}}",
                json_str(&r.transport),
                r.cases,
                r.messages,
                r.bytes,
                r.faults,
                r.faults_inside,
                r.kinds.kills,
                r.kinds.pauses,
                r.kinds.storms,
                r.largest,
                r.failure.as_ref().map_or(0, |f| f.violations.len()),
                r.cases_per_sec(),
                r.seconds,
                failure
            )
        })
        .collect();
    let passed = rows.iter().all(|r| r.failure.is_none());
    format!(
        "{{\"passed\":{passed},\"transports\":[{}]}}",
        items.join(",")
    )
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<14} {:>7} {:>10} {:>14} {:>9} {:>16} {:>10} {:>9}",
        "transport",
        "cases",
        "messages",
        "bytes",
        "largest",
        "faults (inside)",
        "violations",
        "cases/s"
    );
    for r in rows {
        println!(
            "{:<14} {:>7} {:>10} {:>14} {:>9} {:>16} {:>10} {:>9.1}",
            r.transport,
            r.cases,
            r.messages,
            r.bytes,
            r.largest,
            format!("{} ({})", r.faults, r.faults_inside),
            r.failure.as_ref().map_or(0, |f| f.violations.len()),
            r.cases_per_sec()
        );
    }
}
