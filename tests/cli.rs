//! `ipcprop check` run as a user runs it: its input (arguments refused or accepted), its
//! output (the table, the verdict, the JSON schema as documented), `--save`, `--replay`,
//! `--jobs` and `--time`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ipcprop"))
}

/// A seed whose first failing plan over `broken-drop` is small: it shrinks in a second.
const QUICK_FAILURE_SEED: &str = "5";

fn run(args: &[&str]) -> (String, String, Output) {
    let out = cli().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (stdout, stderr, out)
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The field paths of the JSON schema's table in docs/HARNESS.md.
fn documented_fields() -> Vec<String> {
    let doc = include_str!("../docs/HARNESS.md");
    let start = doc
        .find("### `ipcprop check --json`")
        .expect("the schema section of docs/HARNESS.md");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    let fields: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    assert!(fields.len() > 40, "{fields:?}");
    fields
}

/// The value at `path` (`a.b[].c`: a list's first element for `[]`), if the key exists.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        let (key, list) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        cur = cur.as_object()?.get(key)?;
        if list {
            cur = cur.as_array()?.first()?;
        }
    }
    Some(cur)
}

/// Every key of `v` down to `depth` levels, as documented paths.
fn keys(v: &Value, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Some(map) = v.as_object() else { return };
    for (k, child) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push(path.clone());
        if depth > 1 {
            match child {
                Value::Array(items) => {
                    if let Some(first) = items.first() {
                        keys(first, &format!("{path}[]"), depth - 1, out);
                    }
                }
                _ => keys(child, &path, depth - 1, out),
            }
        }
    }
}

/// The JSON the binary prints has every field the documentation lists, and the
/// documentation lists every field of it down to the plan's parts: neither can drift
/// from the other silently.
#[test]
fn the_json_report_matches_its_documented_schema() {
    let (stdout, stderr, out) = run(&[
        "check",
        "--transport",
        "broken-drop",
        "--cases",
        "4",
        "--seed",
        QUICK_FAILURE_SEED,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let v = json(&stdout);
    assert_eq!(v["schema"], "ipcprop-check/1");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["passed"], false);
    assert_eq!(v["settings"]["cases"], 4);
    assert_eq!(v["transports"][0]["transport"], "pipe+drop(2)");
    assert_eq!(
        v["transports"][0]["failure"]["minimal"]["violations"][0]["kind"],
        "lost"
    );
    let documented = documented_fields();
    for field in &documented {
        assert!(
            at(&v, field).is_some(),
            "documented {field} missing: {stdout}"
        );
    }
    let mut found = Vec::new();
    keys(&v, "", 7, &mut found);
    // A field documented as a whole (a violation, an event) covers what is inside it.
    let leaf = |d: &String| {
        !documented
            .iter()
            .any(|e| e.starts_with(&format!("{d}.")) || e.starts_with(&format!("{d}[].")))
    };
    for field in found {
        let covered = documented.iter().any(|d| {
            (field.starts_with(&format!("{d}.")) || field.starts_with(&format!("{d}[].")))
                && leaf(d)
        });
        assert!(
            documented.contains(&field) || covered,
            "{field} is in the JSON but not documented in docs/HARNESS.md"
        );
    }
}

#[test]
fn the_table_shows_readable_bytes_and_rates_and_one_verdict_line() {
    let (stdout, stderr, out) = run(&[
        "check",
        "--cases",
        "3",
        "--seed",
        "7",
        "--transport",
        "ring",
    ]);
    assert!(out.status.success(), "{stdout}{stderr}");
    let header = stdout.lines().next().unwrap();
    for col in [
        "transport",
        "cases",
        "messages",
        "bytes",
        "violations",
        "cases/s",
    ] {
        assert!(header.contains(col), "{stdout}");
    }
    let row = stdout
        .lines()
        .find(|l| l.starts_with("ring "))
        .expect(&stdout);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "3", "{stdout}");
    // Bytes as 17.11 KiB, not 17520; a rate as 28.1/s.
    assert!(
        cells[4].ends_with("B") && cells[4].chars().any(|c| c.is_ascii_alphabetic()),
        "{row}"
    );
    let rate = cells.last().unwrap();
    let number = rate.strip_suffix("/s").expect(row);
    assert!(
        number.parse::<f64>().is_ok() && number.contains('.'),
        "{row}"
    );
    let verdicts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .collect();
    assert_eq!(verdicts.len(), 1, "{stdout}");
    assert!(
        verdicts[0].starts_with("PASS:")
            && verdicts[0].contains("(seed 7, ")
            && verdicts[0].ends_with(" s)"),
        "{stdout}"
    );
}

#[test]
fn the_top_level_help_has_one_line_per_command() {
    let (stdout, _, out) = run(&["--help"]);
    assert!(out.status.success());
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    for name in ["demo", "check", "bench", "queue"] {
        let line = commands
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {stdout}"));
        assert!(line.len() <= 100, "{line}");
    }
    // No continuation lines: every line names a command.
    assert!(
        commands
            .iter()
            .all(|l| l.starts_with("  ") && !l.starts_with("   ")),
        "{stdout}"
    );
}

#[test]
fn arguments_that_would_test_nothing_are_refused() {
    for (option, value) in [
        ("--cases", "0"),
        ("--jobs", "0"),
        ("--timeout", "0"),
        ("--time", "0"),
        ("--seed", "x1"),
    ] {
        let (stdout, stderr, out) = run(&["check", "--transport", "ring", option, value]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{option} {value}: {stdout}{stderr}"
        );
        assert!(stderr.contains(option), "{option}: {stderr}");
        assert!(stdout.is_empty(), "{option} {value} ran: {stdout}");
    }
    let (_, stderr, out) = run(&["check", "--transport", "pipe+nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("pipe+drop(2)"),
        "the known names are listed: {stderr}"
    );
}

#[test]
fn a_negative_seed_runs_as_its_twos_complement() {
    let (stdout, stderr, out) = run(&[
        "check",
        "--transport",
        "ring",
        "--cases",
        "1",
        "--seed",
        "-5",
        "--json",
    ]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        json(&stdout)["settings"]["seed"].as_u64(),
        Some(u64::MAX - 4)
    );
    let (stdout, _, out) = run(&[
        "check",
        "--transport",
        "ring",
        "--cases",
        "1",
        "--seed",
        "18446744073709551611",
    ]);
    assert!(out.status.success());
    assert!(stdout.contains("(seed 18446744073709551611, "), "{stdout}");
}

#[test]
fn a_transport_named_twice_runs_once_and_jobs_are_capped_at_the_cases() {
    let (stdout, stderr, out) = run(&[
        "check",
        "--cases",
        "2",
        "--jobs",
        "8",
        "--json",
        "--transport",
        "ring",
        "--transport",
        "pipe",
        "--transport",
        "ring",
    ]);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v = json(&stdout);
    let names: Vec<&str> = v["transports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ring", "pipe"]);
    assert_eq!(v["settings"]["jobs"], 2);
    for t in v["transports"].as_array().unwrap() {
        assert_eq!(t["cases"], 2, "{stdout}");
    }
}

#[test]
fn jobs_split_the_cases_over_workers_and_keep_the_failure() {
    let (stdout, stderr, out) = run(&[
        "check",
        "--cases",
        "9",
        "--jobs",
        "3",
        "--seed",
        QUICK_FAILURE_SEED,
        "--transport",
        "ring",
        "--transport",
        "broken-drop",
    ]);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let ring = stdout
        .lines()
        .find(|l| l.starts_with("ring "))
        .expect(&stdout);
    assert_eq!(ring.split_whitespace().nth(1), Some("9"), "{stdout}");
    assert!(
        stdout.contains("minimal failing case for pipe+drop(2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[lost]") && stdout.contains("timeline ("),
        "{stdout}"
    );
}

/// `--time` stops at the deadline within one case, not at the end of a round of
/// `--cases` (a round of 100000 cases would take hours).
#[test]
fn time_stops_at_the_deadline_not_at_the_end_of_a_round() {
    let start = Instant::now();
    let (stdout, stderr, out) = run(&[
        "check",
        "--transport",
        "ring",
        "--cases",
        "100000",
        "--time",
        "1",
        "--json",
    ]);
    let took = start.elapsed();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let v = json(&stdout);
    let cases = v["transports"][0]["cases"].as_u64().unwrap();
    assert!((1..100_000).contains(&cases), "{cases}");
    assert_eq!(v["settings"]["time_secs"], 1.0);
}

fn saved_file(dir: &Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn kinds(violations: &Value) -> Vec<String> {
    let mut k: Vec<String> = violations
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn a_saved_failure_replays_and_fails_again_with_the_same_violations() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("found");
    let (stdout, stderr, out) = cli()
        .args([
            "check",
            "--transport",
            "broken-drop",
            "--cases",
            "4",
            "--seed",
            QUICK_FAILURE_SEED,
            "--save",
        ])
        .arg(&save)
        .output()
        .map(|o| {
            (
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
                o,
            )
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let file = saved_file(&save);
    assert_eq!(
        file.file_name().unwrap().to_str().unwrap(),
        format!("pipe+drop(2)-seed{QUICK_FAILURE_SEED}.json")
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["schema"], "ipcprop-case/1");
    assert_eq!(saved["transport"], "pipe+drop(2)");
    assert!(saved["report"].as_str().unwrap().contains("timeline ("));

    // Replayed: the same plan fails again, with the same kinds of violation.
    let out = cli()
        .args(["check", "--json", "--cases", "2", "--replay"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let replay = json(&stdout);
    assert_eq!(replay["schema"], "ipcprop-replay/1");
    assert_eq!(replay["runs"], 2);
    assert_eq!(replay["failed"], 2);
    assert_eq!(replay["outcome"]["plan"], saved["plan"]);
    assert_eq!(
        kinds(&replay["outcome"]["violations"]),
        kinds(&saved["violations"])
    );
    // The readable form names the transport and shows the timeline.
    let out = cli()
        .arg("check")
        .arg("--replay")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("[lost]") && stdout.contains("timeline ("),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().starts_with("FAIL: "),
        "{stdout}"
    );

    // The same plan on the correct pipe passes.
    let mut passing = saved.clone();
    passing["transport"] = "pipe".into();
    let good = dir.path().join("good.json");
    std::fs::write(&good, passing.to_string()).unwrap();
    let out = cli()
        .arg("check")
        .arg("--replay")
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().last().unwrap().starts_with("PASS: "),
        "{stdout}"
    );
}

#[test]
fn a_replay_file_that_cannot_be_read_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.json");
    let garbled = dir.path().join("garbled.json");
    std::fs::write(&garbled, "{\"schema\": \"ipcprop-case/1\", \"plan\": 3").unwrap();
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"schema\": \"ipcprop-case/9\"}").unwrap();
    for (file, says) in [
        (&absent, "cannot read"),
        (&garbled, "is not a saved case"),
        (&other, "ipcprop-case/9"),
    ] {
        let out = cli()
            .arg("check")
            .arg("--replay")
            .arg(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains(file.to_str().unwrap()),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// `--save` is checked before the campaign runs: a path that cannot be a directory stops
/// it at once, with nothing run.
#[test]
fn save_is_checked_before_the_run() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let (stdout, stderr, out) = cli()
        .args([
            "check",
            "--transport",
            "ring",
            "--cases",
            "100000",
            "--save",
        ])
        .arg(file.path())
        .output()
        .map(|o| {
            (
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
                o,
            )
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "it ran: {stdout}");
    assert!(stderr.contains("cannot save"), "{stderr}");
}

/// A failure to save loses nothing: the report is printed first.
#[test]
fn the_failure_report_is_printed_even_when_saving_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file would go: the directory itself is writable.
    std::fs::create_dir(
        dir.path()
            .join(format!("pipe+drop(2)-seed{QUICK_FAILURE_SEED}.json")),
    )
    .unwrap();
    let out = cli()
        .args([
            "check",
            "--transport",
            "broken-drop",
            "--cases",
            "4",
            "--seed",
            QUICK_FAILURE_SEED,
            "--save",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("cannot save"), "{stderr}");
    assert!(
        stdout.contains("minimal failing case for pipe+drop(2)") && stdout.contains("[lost]"),
        "{stdout}"
    );
}

#[test]
fn with_no_transport_named_the_four_correct_ones_run_also_over_workers() {
    let (stdout, stderr, out) = run(&["check", "--cases", "4", "--jobs", "2", "--json"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v = json(&stdout);
    let names: Vec<&str> = v["transports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pipe", "pipe-faults", "ring", "queue"]);
    for t in v["transports"].as_array().unwrap() {
        assert_eq!(t["cases"], 4, "{stdout}");
    }
}

/// The command a failure report prints to reproduce it is accepted as printed (the
/// transport's name as the report gives it, `pipe+drop(2)`), and finds the failure again.
#[test]
fn the_printed_reproduce_command_finds_the_failure_again() {
    let (stdout, stderr, out) = run(&[
        "check",
        "--transport",
        "broken-drop",
        "--cases",
        "4",
        "--seed",
        QUICK_FAILURE_SEED,
    ]);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let hint = stdout
        .lines()
        .find_map(|l| l.split_once("(reproduce with ")?.1.strip_suffix("):"))
        .expect(&stdout);
    // As a shell would split it: the transport is quoted.
    let args: Vec<String> = hint
        .split_whitespace()
        .map(|a| a.trim_matches('\'').to_string())
        .collect();
    assert_eq!(args[..2], ["--transport", "pipe+drop(2)"], "{hint}");
    let out = cli()
        .args(["check", "--cases", "4", "--json"])
        .args(&args)
        .output()
        .unwrap();
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["transports"][0]["transport"], "pipe+drop(2)");
    assert_eq!(
        v["transports"][0]["failure"]["minimal"]["violations"][0]["kind"],
        "lost"
    );
}
