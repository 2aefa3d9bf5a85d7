//! Ctrl-C and SIGTERM: a campaign stops at once, kills and reaps its children, removes its
//! temporary directories, prints what it did, and exits 130 or 143.
//!
//! The CLI tests run the real binary with its own `TMPDIR` (so every temporary directory it
//! makes is visible) and a marker in its environment (inherited by every process it forks,
//! so a survivor can be found in `/proc`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Processes whose environment carries `marker`.
fn marked(marker: &str) -> Vec<u32> {
    let needle = format!("IPCPROP_TEST_MARK={marker}");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(env) = std::fs::read(entry.path().join("environ")) {
            if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

/// Kills what is left (so a failing test leaves nothing behind either).
struct Cleanup {
    marker: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in marked(&self.marker) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Starts `ipcprop check ARGS` in its own process group, like a job a shell started.
fn start(args: &[&str], tmp: &Path, marker: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ipcprop"))
        .arg("check")
        .args(args)
        .env("TMPDIR", tmp)
        .env("IPCPROP_TEST_MARK", marker)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ipcprop")
}

/// Waits until the queue transport's temporary directory exists and a case or two ran.
fn wait_until_running(tmp: &Path) {
    let start = Instant::now();
    while std::fs::read_dir(tmp).map_or(0, |d| d.count()) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the campaign never made its temporary directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
}

/// Waits for `child` to exit, at most `limit` (then kills it and fails).
fn finish(mut child: Child, limit: Duration) -> (i32, String, String) {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ipcprop did not stop within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn marker(name: &str) -> String {
    format!("{name}-{}-{:?}", std::process::id(), Instant::now())
}

/// Asserts that nothing the run made is left: no process, no temporary directory.
fn assert_nothing_left(marker: &str, tmp: &Path) {
    // Every child was killed and reaped before the program exited; allow a moment anyway
    // for the kernel to tear a process down.
    let start = Instant::now();
    while !marked(marker).is_empty() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(marked(marker), Vec::<u32>::new(), "processes left behind");
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn ctrl_c_stops_the_campaign_prints_what_it_did_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = marker("ctrl-c");
    let _cleanup = Cleanup {
        marker: marker.clone(),
    };
    let child = start(
        &[
            "--transport",
            "queue",
            "--transport",
            "pipe",
            "--cases",
            "100000",
        ],
        tmp.path(),
        &marker,
    );
    let pid = Pid::from_raw(child.id() as i32);
    wait_until_running(tmp.path());
    // A terminal's Ctrl-C: SIGINT to the whole process group, the case's children too.
    killpg(pid, Signal::SIGINT).unwrap();
    let (code, stdout, stderr) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 130, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The partial summary: the queue's row, with the cases that finished, and no row for
    // the pipe, which never started.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("queue"))
        .unwrap_or_else(|| panic!("no summary row for the queue:\n{stdout}"));
    let cases: u32 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(cases < 100_000, "{row}");
    assert!(!stdout.lines().any(|l| l.starts_with("pipe ")), "{stdout}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert_nothing_left(&marker, tmp.path());
}

#[test]
fn sigterm_to_the_program_alone_kills_its_children_too() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = marker("sigterm");
    let _cleanup = Cleanup {
        marker: marker.clone(),
    };
    let child = start(
        &["--transport", "queue", "--cases", "100000"],
        tmp.path(),
        &marker,
    );
    let pid = Pid::from_raw(child.id() as i32);
    wait_until_running(tmp.path());
    // Only the program is told: the children of the running case must be killed by it.
    kill(pid, Signal::SIGTERM).unwrap();
    let (code, stdout, stderr) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 143, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("queue")), "{stdout}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert_nothing_left(&marker, tmp.path());
}

#[test]
fn sigterm_stops_a_campaign_over_workers_and_kills_them_all() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = marker("workers");
    let _cleanup = Cleanup {
        marker: marker.clone(),
    };
    let child = start(
        &["--transport", "queue", "--cases", "100000", "--jobs", "2"],
        tmp.path(),
        &marker,
    );
    let pid = Pid::from_raw(child.id() as i32);
    wait_until_running(tmp.path());
    // The program and its two workers at least (and their cases' children, when a case
    // is running).
    assert!(marked(&marker).len() >= 3, "{:?}", marked(&marker));
    kill(pid, Signal::SIGTERM).unwrap();
    let (code, stdout, stderr) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 143, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // What the workers had finished, case by case.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("queue"))
        .unwrap_or_else(|| panic!("no summary row for the queue:\n{stdout}"));
    let cases: u32 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(cases > 0 && cases < 100_000, "{row}");
    assert!(stdout.contains("INTERRUPTED by SIGTERM"), "{stdout}");
    assert_nothing_left(&marker, tmp.path());
}

/// The handlers themselves, in a forked child (signals raised to itself arrive at once,
/// so nothing here depends on timing): the first `SIGINT` only asks for a stop, the second
/// ends the process with status 130 there and then.
#[test]
fn the_first_signal_asks_the_second_ends_the_process() {
    use ipcprop::check::fork::{ChildEnd, ChildGroup};
    use ipcprop::check::interrupt;

    for (first, second, status) in [
        (Signal::SIGINT, Signal::SIGINT, 130),
        (Signal::SIGTERM, Signal::SIGINT, 130),
        (Signal::SIGINT, Signal::SIGTERM, 143),
    ] {
        let mut group = ChildGroup::new();
        group
            .spawn("signalled", move |_| {
                interrupt::install().map_err(|e| e.to_string())?;
                if interrupt::requested().is_some() {
                    return Err("a stop was asked for before any signal".into());
                }
                nix::sys::signal::raise(first).map_err(|e| e.to_string())?;
                match interrupt::requested() {
                    Some(s) if s == first as i32 => {}
                    other => return Err(format!("after {first:?}, requested() = {other:?}")),
                }
                nix::sys::signal::raise(second).map_err(|e| e.to_string())?;
                Err(format!("still running after {first:?} then {second:?}"))
            })
            .unwrap();
        let end = group.wait(Duration::from_secs(20)).remove(0).end;
        assert_eq!(end, ChildEnd::Exited(status), "{first:?} then {second:?}");
    }
}

/// The library's side: [`interrupt::request_stop`] from another thread stops a running
/// campaign, which returns a partial report; a stop asked for while a failure is being
/// shrunk keeps the failure found so far. One test, as the stop flag is per process.
#[test]
fn a_stop_request_ends_a_campaign_with_a_partial_report() {
    use ipcprop::check::broken::{Broken, Defect};
    use ipcprop::check::builtin::PipeTransport;
    use ipcprop::check::{campaign, interrupt, CampaignConfig};

    let config = CampaignConfig {
        cases: 100_000,
        ..CampaignConfig::default()
    };
    let asker = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(1500));
        interrupt::request_stop(15);
    });
    let start = Instant::now();
    let report = campaign(&PipeTransport::default(), &config, &mut |_| {}).unwrap();
    asker.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(report.interrupted, Some(15));
    assert!(
        report.cases > 0 && report.cases < 100_000,
        "{}",
        report.cases
    );
    assert!(
        report.failure.is_none(),
        "a case cut short was reported as a failure"
    );

    // Once stopped, a campaign runs nothing until the request is forgotten.
    let again = campaign(&PipeTransport::default(), &config, &mut |_| {}).unwrap();
    assert_eq!((again.cases, again.interrupted), (0, Some(15)));
    interrupt::reset();
    assert_eq!(interrupt::requested(), None);

    // Stopped as soon as the first failure is seen: shrinking gives up, the failure stays.
    let broken = Broken::new(PipeTransport::default(), Defect::Drop(2));
    let report = campaign(&broken, &config, &mut |outcome| {
        if !outcome.passed() {
            interrupt::request_stop(2);
        }
    })
    .unwrap();
    interrupt::reset();
    assert_eq!(report.interrupted, Some(2));
    let failure = report.failure.expect("the failure found before the stop");
    assert!(!failure.minimal.passed());
    assert_eq!(failure.reproduced, (0, 0), "not run again after a stop");

    // A case that hangs is cut short at once: its children are killed when the stop comes,
    // not when the progress bound (5 s) runs out.
    let hangs = Broken::new(PipeTransport::default(), Defect::IgnoreClose);
    let asker = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(500));
        interrupt::request_stop(2);
    });
    let start = Instant::now();
    let report = campaign(&hangs, &config, &mut |_| {}).unwrap();
    asker.join().unwrap();
    interrupt::reset();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "the hanging case ran on for {:?}",
        start.elapsed()
    );
    assert_eq!(report.interrupted, Some(2));
    assert!(report.failure.is_none(), "the hang cut short was reported");
}
