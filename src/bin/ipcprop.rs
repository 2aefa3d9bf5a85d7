//! `ipcprop`: run the tutorial scenarios, or a conformance campaign over the built-in
//! transports.
//!
//! ```text
//! ipcprop demo [fork|threads|pipe|shm|file-queue|all]
//! ipcprop check [--transport NAME]... [--cases N] [--seed S] [--timeout SECS]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use ipcprop::check::broken::{Broken, Defect};
use ipcprop::check::builtin::{FaultyPipeTransport, PipeTransport, QueueTransport, RingTransport};
use ipcprop::check::{campaign, CampaignConfig, CampaignReport, RunConfig, Transport};
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
    Check {
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
        Command::Check {
            transports,
            cases,
            seed,
            timeout,
        } => check(transports, cases, seed, timeout),
    }
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

fn check(mut transports: Vec<TransportName>, cases: u32, seed: u64, timeout: u64) -> ExitCode {
    if transports.is_empty() {
        transports = vec![
            TransportName::Pipe,
            TransportName::PipeFaults,
            TransportName::Ring,
        ];
    }
    transports.dedup();
    let config = CampaignConfig {
        cases,
        seed,
        run: RunConfig {
            timeout: Duration::from_secs(timeout.max(1)),
        },
        ..CampaignConfig::default()
    };
    let mut reports = Vec::new();
    for t in transports {
        let result = match t {
            TransportName::Pipe => run_one(&PipeTransport::default(), &config),
            TransportName::PipeFaults => {
                let schedule = FaultSchedule::new(vec![
                    Fault::Short(1),
                    Fault::Pass,
                    Fault::Interrupted,
                    Fault::Short(7),
                    Fault::WouldBlock,
                    Fault::Short(4093),
                ]);
                run_one(&FaultyPipeTransport::new(schedule), &config)
            }
            TransportName::Ring => run_one(
                &RingTransport {
                    config: RingConfig::new().capacity(4096),
                },
                &config,
            ),
            TransportName::Queue => match QueueTransport::new() {
                Ok(t) => run_one(&t, &config),
                Err(e) => Err(e),
            },
            TransportName::BrokenDrop => run_one(
                &Broken::new(PipeTransport::default(), Defect::Drop(2)),
                &config,
            ),
        };
        match result {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("error: could not run the campaign: {e}");
                return ExitCode::from(2);
            }
        }
    }
    print_table(&reports);
    let mut failed = false;
    for r in &reports {
        if let Some(f) = &r.failure {
            failed = true;
            println!();
            println!(
                "minimal failing case for {} (reproduce with --seed {}):",
                r.transport, f.seed
            );
            print!("{}", f.minimal.report());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_one<T: Transport>(
    transport: &T,
    config: &CampaignConfig,
) -> ipcprop::Result<CampaignReport> {
    let bar = ProgressBar::new(u64::from(config.cases));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} cases {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(transport.name());
    let result = campaign(transport, config, &mut |outcome| {
        bar.inc(1);
        if !outcome.passed() {
            bar.set_message("violation found, shrinking");
        }
    });
    bar.finish_and_clear();
    result
}

fn print_table(reports: &[CampaignReport]) {
    println!(
        "{:<14} {:>7} {:>10} {:>14} {:>10} {:>9}",
        "transport", "cases", "messages", "bytes", "violations", "cases/s"
    );
    for r in reports {
        println!(
            "{:<14} {:>7} {:>10} {:>14} {:>10} {:>9.1}",
            r.transport,
            r.cases,
            r.messages,
            r.bytes,
            r.violations,
            r.cases_per_sec()
        );
    }
}
