//! The fork runner: children forked from a busy multi-threaded test binary run, report,
//! and are reaped; panics, signals and hangs are reported; nothing is left behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipcprop::check::fork::{ChildEnd, ChildGroup};

fn alive(pid: i32) -> bool {
    // Signal 0 only checks for existence; a reaped child is gone (ESRCH).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn forks_from_eight_threads_while_others_print_never_deadlock() {
    let stop = Arc::new(AtomicBool::new(false));
    // Threads that hold the stdout lock (and the test harness's capture lock) much of the
    // time: a child that touched either would hang.
    let printers: Vec<_> = (0..2)
        .map(|p| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    println!("printer {p} line {n}");
                    eprintln!("printer {p} err {n}");
                    n += 1;
                    // Often, not always: the captured output must not grow so large that
                    // every fork copies hundreds of megabytes of page tables.
                    if n.is_multiple_of(64) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    let forkers: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    let mut group = ChildGroup::new();
                    let panics = i % 10 == 9;
                    group
                        .spawn(format!("t{t} c{i}"), |rep| {
                            let v: Vec<u32> = (0..1000).collect(); // allocation in the child
                            rep.record(&(v.iter().sum::<u32>() + i).to_le_bytes());
                            if panics {
                                panic!("boom {i}");
                            }
                            Ok(())
                        })
                        .expect("fork");
                    let pid = group.pids()[0];
                    let reports = group.wait(Duration::from_secs(60));
                    let r = &reports[0];
                    assert_eq!(r.records, vec![(499_500 + i).to_le_bytes().to_vec()]);
                    if panics {
                        assert!(
                            matches!(&r.end, ChildEnd::Panicked(m) if m.contains(&format!("boom {i}"))),
                            "{:?}",
                            r.end
                        );
                    } else {
                        assert_eq!(r.end, ChildEnd::Returned);
                    }
                    assert!(!alive(pid), "child {pid} was not reaped");
                }
            })
        })
        .collect();
    let mut result = Ok(());
    for f in forkers {
        if let Err(e) = f.join() {
            result = Err(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in printers {
        p.join().unwrap();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn watchdog_kills_a_hung_child_and_keeps_what_it_reported() {
    let mut group = ChildGroup::new();
    group
        .spawn("sleeper", |rep| {
            rep.record(b"about to sleep");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .unwrap();
    group.spawn("quick", |_| Ok(())).unwrap();
    let pids = group.pids();
    let start = Instant::now();
    // Long enough for the quick child even on a loaded machine; the sleeper never ends.
    let reports = group.wait(Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(reports[0].end, ChildEnd::Hung);
    assert_eq!(reports[0].records, vec![b"about to sleep".to_vec()]);
    assert_eq!(reports[1].end, ChildEnd::Returned);
    assert!(pids.iter().all(|&p| !alive(p)));
}

#[test]
fn failures_and_signals_are_reported() {
    let mut group = ChildGroup::new();
    group.spawn("fails", |_| Err("nope".into())).unwrap();
    group
        .spawn("killed", |_| {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            Ok(())
        })
        .unwrap();
    group
        .spawn("exits", |_| ipcprop::check::fork::exit_now(7))
        .unwrap();
    group
        .spawn("string panic", |_| {
            std::panic::panic_any(String::from("owned"))
        })
        .unwrap();
    let reports = group.wait(Duration::from_secs(30));
    assert_eq!(reports[0].end, ChildEnd::Failed("nope".into()));
    assert_eq!(reports[1].end, ChildEnd::Signaled("SIGKILL".into()));
    assert_eq!(reports[2].end, ChildEnd::Exited(7));
    assert!(matches!(&reports[3].end, ChildEnd::Panicked(m) if m.contains("owned")));
}

#[test]
fn dropping_the_group_kills_and_reaps_children() {
    let mut group = ChildGroup::new();
    group
        .spawn("forever", |_| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .unwrap();
    let pid = group.pids()[0];
    assert!(alive(pid));
    drop(group);
    assert!(!alive(pid), "child {pid} survived the group");
}

#[test]
fn a_panicking_parent_leaves_no_child() {
    let pid = std::sync::Mutex::new(0);
    let result = std::panic::catch_unwind(|| {
        let mut group = ChildGroup::new();
        group
            .spawn("orphan-to-be", |_| loop {
                std::thread::sleep(Duration::from_secs(1));
            })
            .unwrap();
        *pid.lock().unwrap() = group.pids()[0];
        panic!("the parent's test failed");
    });
    assert!(result.is_err());
    let pid = *pid.lock().unwrap();
    assert!(pid > 0 && !alive(pid));
}
