//! `ipcprop`: run the tutorial scenarios, or a conformance campaign over the built-in
//! transports.
//!
//! ```text
//! ipcprop demo [fork|threads|pipe|shm|file-queue|all]
//! ipcprop check [--transport NAME]... [--cases N] [--seed S] [--timeout SECS] [--time SECS]
//!               [--jobs N] [--json] [--save DIR]
//! ipcprop check --replay FILE [--cases N] [--timeout SECS] [--json]
//! ipcprop check --exec CMD | --exec-sender CMD --exec-receiver CMD
//!               [--caps FILE] [--max-len N] [--senders N] [--shared-max-len N] [--no-eos]
//!               [--persistent] [--boundary N,...] [--start-timeout SECS] [--name NAME] [campaign options]
//! ipcprop serve-role --transport NAME
//! ipcprop bench [--only pipe|ring|queue|fork]... [--sizes 0,64,4096,65536] [--budget-ms MS]
//!               [--plot FILE] [--markdown] [--queue-dir DIR] [--peers]
//! ipcprop queue salvage SRC DST
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{
    HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};

use ipcprop::check::builtin::Builtin;
use ipcprop::check::exec::{CapsFile, ExecTransport};
use ipcprop::check::report::{CheckReport, ReplayReport, SavedCase};
use ipcprop::check::{interrupt, CampaignConfig, CampaignReport, RunConfig};

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
    /// Run the tutorial's scenarios, done right (the same code as `examples/`)
    Demo {
        /// Which scenario.
        #[arg(value_enum, default_value = "all")]
        scenario: Scenario,
    },
    /// Check the transports with generated plans across forked processes
    ///
    /// A conformance campaign: generated plans across real forked processes, checked for
    /// lost, unexpected, duplicated, reordered and corrupted messages and for hangs. Exits
    /// 1 if any violation is found, after printing the minimal failing plan; 2 if the
    /// campaign could not run (bad arguments, a --save directory that cannot be written, a
    /// --replay file that cannot be read).
    Check(Box<CheckArgs>),
    /// Measure every transport against syscalls, peer crates and the physical floor
    ///
    /// Every transport side by side with the raw syscall, the peer crates and the physical
    /// floor, at message sizes 0, 64, 4096 and 65536 bytes (about 40 s): a table with each
    /// figure and its ratio to the baseline, the design targets, and optionally an SVG
    /// chart.
    Bench(BenchArgs),
    /// Work with a queue file (salvage a damaged one)
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Run a built-in transport as a program under test (for `check --exec`)
    ///
    /// Speaks the driver protocol (docs/PROTOCOL.md): makes a pair of the named transport,
    /// forks the receiver and the senders the harness asks for (IPCPROP_SENDERS), and
    /// serves each role. Only meaningful when started by `ipcprop check --exec`.
    ServeRole {
        /// The transport to serve (any name `check --transport` accepts).
        #[arg(long = "transport", value_name = "NAME")]
        transport: Builtin,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Copy what can be read of a damaged queue file into a new one
    ///
    /// Copies every valid, unconsumed message of a damaged queue file, in order, into a new
    /// queue file, and lists what could not be read (the way out of "corrupt"). The source
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { scenario } => demo(scenario),
        Command::Check(args) => check(*args),
        Command::Bench(args) => bench(args),
        Command::Queue(QueueCommand::Salvage { src, dst }) => salvage(&src, &dst),
        Command::ServeRole { transport } => {
            // Temporary files (the queue's) go into the case's directory, which the
            // harness removes even if it has to kill this program. Set before any thread
            // starts.
            if let Some(dir) = std::env::var_os("IPCPROP_DIR") {
                std::env::set_var("TMPDIR", dir);
            }
            serve_role(transport)
        }
    }
}

fn serve_role(transport: Builtin) -> ExitCode {
    match transport.serve_role() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipcprop serve-role: {e}");
            ExitCode::from(2)
        }
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
    /// Also measure the crates users pick instead (iceoryx2, ipc-channel, interprocess,
    /// SQLite, yaque), each against ours in its guarantee class, and print the targets
    /// against them. Needs a build with the `peers` feature.
    #[arg(long)]
    peers: bool,
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
    opts.peers = args.peers;
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
#[command(group(clap::ArgGroup::new("program").args(["exec", "exec_sender"])))]
struct CheckArgs {
    /// Transports to check (repeat the option for several); pipe, pipe-faults, ring and
    /// queue by default. Also accepted: broken-drop (a pipe that drops each sender's third
    /// message, to show a failure) and every name a report prints, such as pipe+drop(2).
    #[arg(long = "transport", value_name = "NAME", conflicts_with_all = ["replay", "exec", "exec_sender"])]
    transports: Vec<Builtin>,
    /// Check a program in any language that speaks the driver protocol
    /// (docs/PROTOCOL.md): CMD is run with `sh -c` for each case and starts every role.
    /// Its capabilities come from CMD's `<program>.ipcprop.toml`, --caps, and the flags
    /// below.
    #[arg(long, value_name = "CMD", conflicts_with = "exec_sender")]
    exec: Option<String>,
    /// With --exec-receiver: the sender's program, run once per sender (IPCPROP_ROLE=sender,
    /// IPCPROP_INDEX=i).
    #[arg(long, value_name = "CMD", requires = "exec_receiver")]
    exec_sender: Option<String>,
    /// With --exec-sender: the receiver's program, run first (IPCPROP_ROLE=receiver).
    #[arg(long, value_name = "CMD", requires = "exec_sender")]
    exec_receiver: Option<String>,
    /// The program's capability file (TOML, docs/PROTOCOL.md section 8) [default:
    /// <program>.ipcprop.toml next to the program, if there is one].
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Program under test",
        requires = "program"
    )]
    caps: Option<std::path::PathBuf>,
    /// Start from the capabilities of built-in transport NAME (for a program that serves
    /// one, such as `ipcprop serve-role`); the file and the other flags then change them.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Program under test",
        requires = "program"
    )]
    caps_of: Option<Builtin>,
    /// The longest message the program takes.
    #[arg(
        long,
        value_name = "BYTES",
        help_heading = "Program under test",
        requires = "program"
    )]
    max_len: Option<usize>,
    /// How many sender processes may share the program's channel (1: one sender).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Program under test", requires = "program")]
    senders: Option<u64>,
    /// The longest message with several senders [default: --max-len].
    #[arg(
        long,
        value_name = "BYTES",
        help_heading = "Program under test",
        requires = "program"
    )]
    shared_max_len: Option<usize>,
    /// The program's receiver is never told that the senders are gone: the harness ends
    /// it once they are, after a quiet period.
    #[arg(long, help_heading = "Program under test", requires = "program")]
    no_eos: bool,
    /// The program's messages outlive its processes: after a case whose receiver was
    /// killed, the program is started again with IPCPROP_RECOVER=1 and its receiver must
    /// find every acknowledged message it had not received (docs/PROTOCOL.md section 9).
    #[arg(long, help_heading = "Program under test", requires = "program")]
    persistent: bool,
    /// Sizes where the program's channel changes behaviour, comma-separated.
    #[arg(
        long,
        value_name = "N,...",
        value_delimiter = ',',
        help_heading = "Program under test"
    )]
    boundary: Vec<usize>,
    /// Seconds the roles may take to connect and say hello [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Program under test", requires = "program")]
    start_timeout: Option<u64>,
    /// The program's name in reports [default: the command].
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Program under test",
        requires = "program"
    )]
    name: Option<String>,
    /// Generated cases per transport [default: 200; with --replay, 1 run of the plan].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cases: Option<u32>,
    /// Seed of the plan generator (the same seed gives the same plans): from i64::MIN to
    /// u64::MAX, a negative seed being its two's complement.
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = parse_seed)]
    seed: u64,
    /// Watchdog: seconds before a case's processes count as hung.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Run each transport for this many seconds (rounds of --cases with successive seeds)
    /// instead of one round; stops at the first failure, and at the deadline within one
    /// case.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    time: Option<u64>,
    /// Print one JSON object (schema ipcprop-check/1, see docs/HARNESS.md) instead of
    /// progress bars and the table.
    #[arg(long)]
    json: bool,
    /// Write each minimal failing case as JSON to DIR/<transport>-seed<seed>.json, for
    /// --replay. DIR is created, and checked to be writable, before the run starts.
    #[arg(long, value_name = "DIR")]
    save: Option<std::path::PathBuf>,
    /// Run the plan saved in FILE (by --save) on the transport it names, --cases times,
    /// and report whether it fails.
    /// With --exec, the plan runs on that program.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seed", "time", "jobs", "save"])]
    replay: Option<std::path::PathBuf>,
    /// Split each transport's cases over this many worker processes (each with its own
    /// seed), to use several cores; at most one per case.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
}

/// What `check` runs campaigns over: a built-in transport, or a program under test.
enum Subject {
    Builtin(Builtin),
    Exec(Box<ExecTransport>),
}

impl Subject {
    fn name(&self) -> String {
        match self {
            Subject::Builtin(b) => b.name(),
            Subject::Exec(e) => ipcprop::check::Transport::name(&**e),
        }
    }

    fn campaign(
        &self,
        config: &CampaignConfig,
        on_case: &mut dyn FnMut(&ipcprop::check::CaseOutcome),
    ) -> ipcprop::Result<CampaignReport> {
        match self {
            Subject::Builtin(b) => b.campaign(config, on_case),
            Subject::Exec(e) => ipcprop::check::campaign(&**e, config, on_case),
        }
    }

    /// How to run it again, for the report: the transport, or the program with the
    /// capability options it was given.
    fn reproduce(&self, args: &CheckArgs) -> String {
        match self {
            Subject::Builtin(b) => format!("--transport '{b}'"),
            Subject::Exec(e) => {
                let mut s = match e.program() {
                    ipcprop::check::exec::Program::One(c) => format!("--exec '{c}'"),
                    ipcprop::check::exec::Program::Split { sender, receiver } => {
                        format!("--exec-sender '{sender}' --exec-receiver '{receiver}'")
                    }
                };
                if let Some(f) = &args.caps {
                    s += &format!(" --caps '{}'", f.display());
                }
                if let Some(b) = &args.caps_of {
                    s += &format!(" --caps-of '{b}'");
                }
                for (flag, v) in [
                    ("--max-len", args.max_len.map(|v| v.to_string())),
                    ("--senders", args.senders.map(|v| v.to_string())),
                    (
                        "--shared-max-len",
                        args.shared_max_len.map(|v| v.to_string()),
                    ),
                    ("--start-timeout", args.start_timeout.map(|v| v.to_string())),
                ] {
                    if let Some(v) = v {
                        s += &format!(" {flag} {v}");
                    }
                }
                if args.no_eos {
                    s += " --no-eos";
                }
                if args.persistent {
                    s += " --persistent";
                }
                if !args.boundary.is_empty() {
                    let b: Vec<String> = args.boundary.iter().map(|v| v.to_string()).collect();
                    s += &format!(" --boundary {}", b.join(","));
                }
                s
            }
        }
    }
}

/// The program under test of `--exec` (or `--exec-sender` and `--exec-receiver`), with its
/// capabilities: the file beside it (or --caps), then the flags. `None` without --exec.
fn exec_subject(args: &CheckArgs) -> Result<Option<ExecTransport>, String> {
    let (mut t, command) = match (&args.exec, &args.exec_sender, &args.exec_receiver) {
        (Some(cmd), _, _) => (ExecTransport::new(cmd.clone()), cmd.clone()),
        (None, Some(s), Some(r)) => (ExecTransport::split(s.clone(), r.clone()), s.clone()),
        _ => return Ok(None),
    };
    let mut declared = false;
    if let Some(b) = args.caps_of {
        let caps = b.capabilities().map_err(|e| e.to_string())?;
        t = t.with_capabilities(caps);
        declared = true;
    }
    let file = match &args.caps {
        Some(path) => Some(path.clone()),
        None => CapsFile::beside(&command),
    };
    let mut caps = match &file {
        Some(path) => CapsFile::load(path).map_err(|e| e.to_string())?,
        None => CapsFile::default(),
    };
    let flags = CapsFile {
        name: args.name.clone(),
        max_message_len: args.max_len,
        senders: args
            .senders
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        shared_max_len: args.shared_max_len,
        end_of_stream: args.no_eos.then_some(false),
        persistent: args.persistent.then_some(true),
        boundary_sizes: (!args.boundary.is_empty()).then(|| args.boundary.clone()),
        start_timeout_ms: args.start_timeout.map(|s| s.saturating_mul(1000)),
        ..CapsFile::default()
    };
    caps = caps.overlay(flags);
    if caps.max_message_len.is_none() && !declared {
        return Err(format!(
            "the program's longest message is not declared: give --max-len BYTES, or \
             max_message_len in a capability file ({}), or --caps-of NAME",
            match &file {
                Some(p) => format!("{} does not set it", p.display()),
                None => "none found beside the program; see --caps".to_string(),
            }
        ));
    }
    caps.validate().map_err(|e| e.to_string())?;
    Ok(Some(caps.apply(t)))
}

/// A seed as an unsigned or a signed 64-bit number (a negative one is taken as its two's
/// complement, which is the seed printed).
fn parse_seed(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .or_else(|_| s.parse::<i64>().map(|v| v as u64))
        .map_err(|_| {
            format!(
                "{s:?} is not a seed: a whole number from {} to {}",
                i64::MIN,
                u64::MAX
            )
        })
}

/// The verdict line: what ran, with the seed and the elapsed time.
fn verdict(passed: bool, what: &str, seed: u64, elapsed: Duration) -> String {
    format!(
        "{}: {what} (seed {seed}, {:.1} s)",
        if passed { "PASS" } else { "FAIL" },
        elapsed.as_secs_f64()
    )
}

fn check(args: CheckArgs) -> ExitCode {
    // Ctrl-C or SIGTERM: cut the running case short, print what was done, remove the
    // temporary directories, exit 130 or 143. A second signal exits at once.
    if let Err(e) = interrupt::install() {
        eprintln!("ipcprop check: {e}");
        return ExitCode::from(2);
    }
    let exec = match exec_subject(&args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ipcprop check: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(file) = &args.replay {
        return replay(file, &args, exec);
    }
    // Each transport once, in the order first named.
    let mut transports: Vec<Subject> = Vec::new();
    if let Some(e) = exec {
        transports.push(Subject::Exec(Box::new(e)));
    } else {
        let mut named: Vec<Builtin> = Vec::new();
        for t in &args.transports {
            if !named.contains(t) {
                named.push(*t);
            }
        }
        if named.is_empty() {
            named = Builtin::DEFAULT.to_vec();
        }
        transports = named.into_iter().map(Subject::Builtin).collect();
    }
    let cases = args.cases.unwrap_or(200);
    let jobs = usize::try_from(args.jobs).unwrap_or(usize::MAX);
    let config = CampaignConfig {
        cases,
        seed: args.seed,
        run: RunConfig {
            timeout: Duration::from_secs(args.timeout),
            ..RunConfig::default()
        },
        // More workers than cases would have nothing to do (with --time, each runs rounds).
        jobs: match args.time {
            Some(_) => jobs,
            None => jobs.min(cases as usize),
        },
        duration: args.time.map(Duration::from_secs),
        ..CampaignConfig::default()
    };
    if let Some(dir) = &args.save {
        if let Err(e) = writable_dir(dir) {
            eprintln!(
                "ipcprop check: cannot save failing cases in {}: {e}",
                dir.display()
            );
            return ExitCode::from(2);
        }
    }
    let start = Instant::now();
    let bars = if args.json {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    } else {
        MultiProgress::new()
    };
    let mut reports = Vec::new();
    for t in &transports {
        let bar = bars.add(match config.duration {
            Some(_) => ProgressBar::new_spinner(),
            None => ProgressBar::new(u64::from(cases)),
        });
        bar.set_style(bar_style(config.duration.is_some()));
        bar.set_prefix(t.name());
        let result = t.campaign(&config, &mut |outcome| {
            bar.inc(1);
            if !outcome.passed() {
                bar.set_message("violation found, shrinking");
            }
        });
        match result {
            Ok(r) => {
                bar.finish_with_message(match (&r.failure, r.interrupted) {
                    (Some(f), _) => {
                        format!("FAIL ({} violation(s))", f.minimal.violations.len())
                    }
                    (None, Some(_)) => "interrupted".to_string(),
                    (None, None) => "pass".to_string(),
                });
                let stopped = r.interrupted.is_some();
                reports.push(r);
                if stopped {
                    break;
                }
            }
            Err(e) => {
                bar.abandon_with_message("could not run");
                eprintln!(
                    "ipcprop check: could not run the campaign over {}: {e}",
                    t.name()
                );
                return ExitCode::from(2);
            }
        }
    }
    let report = CheckReport::new(&config, reports);
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("ipcprop check: cannot write the report as JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print_table(&report.transports);
        for (r, t) in report.transports.iter().zip(&transports) {
            if let Some(f) = &r.failure {
                println!();
                println!(
                    "minimal failing case for {} (reproduce with {} --seed {}):",
                    r.transport,
                    t.reproduce(&args),
                    f.seed
                );
                print!("{}", f.report());
            }
        }
        let failed = report.transports.iter().filter(|r| r.failure.is_some());
        let cases: u32 = report.transports.iter().map(|r| r.cases).sum();
        let what = match failed.count() {
            0 => format!(
                "{} transport(s), {cases} cases, no violation",
                report.transports.len()
            ),
            n => format!(
                "{n} of {} transport(s) failed, {cases} cases",
                report.transports.len()
            ),
        };
        println!();
        match report.interrupted {
            Some(signal) => println!(
                "INTERRUPTED by {}: {what} finished (seed {}, {:.1} s)",
                signal_name(signal),
                config.seed,
                start.elapsed().as_secs_f64()
            ),
            None => println!(
                "{}",
                verdict(report.passed, &what, config.seed, start.elapsed())
            ),
        }
    }
    if let Some(signal) = report.interrupted {
        eprintln!(
            "interrupted by {}: the case that was running was cut short and is not counted; \
             every child process was stopped and temporary files removed",
            signal_name(signal)
        );
    }
    // Saved after the report is printed: a failure to save loses nothing on screen.
    if let Some(dir) = &args.save {
        for r in &report.transports {
            if let Some(f) = &r.failure {
                let saved = SavedCase::of(&r.transport, f);
                let path = dir.join(saved.file_name());
                match std::fs::write(&path, saved.to_json()) {
                    Ok(()) => eprintln!(
                        "saved {} (replay with: ipcprop check --replay '{}')",
                        path.display(),
                        path.display()
                    ),
                    Err(e) => {
                        eprintln!("ipcprop check: cannot save {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                }
            }
        }
    }
    if let Some(signal) = report.interrupted {
        ExitCode::from(interrupt::exit_status(signal))
    } else if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `SIGINT`, `SIGTERM`, or the number.
fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// Creates `dir` if needed and checks that a file can be made in it (and removes it).
fn writable_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".ipcprop-save-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The progress bar of one transport: cases done (of the round, or a spinner with
/// `--time`), the rate of cases, and the outcome once finished.
fn bar_style(spinner: bool) -> ProgressStyle {
    let template = if spinner {
        "{prefix:>14} {spinner} {pos} cases {elapsed} {rate} {msg}"
    } else {
        "{prefix:>14} [{bar:40}] {pos}/{len} cases {elapsed} {rate} {msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", state.per_sec());
            },
        )
        .progress_chars("=> ")
}

/// `--replay FILE`: the saved plan, run `--cases` times on the transport it names.
fn replay(file: &std::path::Path, args: &CheckArgs, exec: Option<ExecTransport>) -> ExitCode {
    let saved = match SavedCase::read(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ipcprop check: {e}");
            return ExitCode::from(2);
        }
    };
    let transport = match exec {
        Some(e) => Subject::Exec(Box::new(e)),
        None => match Builtin::parse(&saved.transport) {
            Ok(t) => Subject::Builtin(t),
            Err(e) => {
                eprintln!(
                    "ipcprop check: {}: {e} (a program under test is replayed with --exec)",
                    file.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let run = RunConfig {
        timeout: Duration::from_secs(args.timeout),
        ..RunConfig::default()
    };
    let start = Instant::now();
    let result = ReplayReport::run(&saved, args.cases.unwrap_or(1), |plan| match &transport {
        Subject::Builtin(b) => b.run_case(plan, &run),
        Subject::Exec(e) => ipcprop::check::run_case(&**e, plan, &run),
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipcprop check: could not replay {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("ipcprop check: cannot write the report as JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        println!(
            "replaying the plan of {} on {} (found with seed {}):",
            file.display(),
            saved.transport,
            saved.seed
        );
        print!("{}", report.outcome.report());
        println!();
        let what = format!(
            "the saved plan failed {} of {} run(s) on {}",
            report.failed, report.runs, saved.transport
        );
        println!(
            "{}",
            verdict(report.passed(), &what, saved.seed, start.elapsed())
        );
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(reports: &[CampaignReport]) {
    println!(
        "{:<16} {:>7} {:>10} {:>12} {:>11} {:>16} {:>10} {:>9}",
        "transport",
        "cases",
        "messages",
        "bytes",
        "largest",
        "faults (inside)",
        "violations",
        "cases/s"
    );
    for r in reports {
        println!(
            "{:<16} {:>7} {:>10} {:>12} {:>11} {:>16} {:>10} {:>9}",
            r.transport,
            r.cases,
            r.messages,
            HumanBytes(r.bytes).to_string(),
            HumanBytes(r.largest).to_string(),
            format!("{} ({})", r.faults, r.faults_inside),
            r.violations,
            format!("{:.1}/s", r.cases_per_sec())
        );
    }
}
