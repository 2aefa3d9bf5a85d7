//! Campaign results as versioned JSON: the report `ipcprop check --json` prints
//! ([`CheckReport`], schema [`SCHEMA`]) and the failing case `--save` keeps for
//! `--replay` ([`SavedCase`], schema [`SAVED_SCHEMA`]).
//!
//! Both carry a `schema` tag that changes whenever a field changes meaning or goes away
//! (new fields may appear without a change), and the crate's version. Durations are
//! seconds as floats, in fields ending `_secs`. `docs/HARNESS.md` describes every field.
//!
//! ```
//! use ipcprop::check::{self, builtin::PipeTransport, report::CheckReport, CampaignConfig};
//!
//! let config = CampaignConfig { cases: 2, ..CampaignConfig::default() };
//! let report = check::run(&PipeTransport::default(), &config)?;
//! let json = serde_json::to_string(&CheckReport::new(&config, vec![report]))?;
//! let back: CheckReport = serde_json::from_str(&json)?;
//! assert!(back.passed && back.schema == "ipcprop-check/1");
//! assert_eq!(back.transports[0].cases, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use super::{CampaignConfig, CampaignReport, Failure, Violation};

/// The schema tag of [`CheckReport`].
pub const SCHEMA: &str = "ipcprop-check/1";

/// The schema tag of [`SavedCase`].
pub const SAVED_SCHEMA: &str = "ipcprop-case/1";

/// The settings a campaign ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The seed of the plan generator.
    pub seed: u64,
    /// Generated cases per transport (with `time_secs`, per round).
    pub cases: u32,
    /// The watchdog of each case, in seconds.
    pub timeout_secs: f64,
    /// Worker processes per transport.
    pub jobs: usize,
    /// How long each transport ran, if for a time rather than a number of cases.
    pub time_secs: Option<f64>,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &CampaignConfig) -> Settings {
        Settings {
            seed: config.seed,
            cases: config.cases,
            timeout_secs: config.run.timeout.as_secs_f64(),
            jobs: config.jobs,
            time_secs: config.duration.map(|d| d.as_secs_f64()),
        }
    }
}

/// Campaigns over one or more transports, as `ipcprop check --json` prints them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The version of the crate that ran the campaigns.
    pub version: String,
    /// What they ran with.
    pub settings: Settings,
    /// True if every campaign ran to the end and no transport failed (an interrupted run
    /// did not pass, whatever it had found).
    pub passed: bool,
    /// The signal that stopped the run early (2 for `SIGINT`, 15 for `SIGTERM`), if one
    /// did: the transports listed are those that had started, with what they finished.
    #[serde(default)]
    pub interrupted: Option<i32>,
    /// One report per transport, in the order they ran.
    pub transports: Vec<CampaignReport>,
}

impl CheckReport {
    /// The report of `transports`, run with `config`.
    pub fn new(config: &CampaignConfig, transports: Vec<CampaignReport>) -> CheckReport {
        CheckReport {
            schema: SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            settings: Settings::of(config),
            passed: transports
                .iter()
                .all(|t| t.failure.is_none() && t.interrupted.is_none()),
            interrupted: transports.iter().find_map(|t| t.interrupted),
            transports,
        }
    }
}

/// A minimal failing case kept in a file, to run again (`ipcprop check --replay FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedCase {
    /// [`SAVED_SCHEMA`].
    pub schema: String,
    /// The version of the crate that found it.
    pub version: String,
    /// The transport's name, as its report printed it (`pipe+drop(2)`).
    pub transport: String,
    /// The campaign seed that found it.
    pub seed: u64,
    /// The plan that failed: what a replay runs.
    pub plan: Plan,
    /// What was wrong.
    pub violations: Vec<Violation>,
    /// The readable report: how often it failed again, the violations, the plan, the
    /// timeline.
    pub report: String,
}

/// Why a saved case could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SavedCaseError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a saved case's JSON.
    #[error("{} is not a saved case ({SAVED_SCHEMA} JSON): {source}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// The file is a saved case of another schema.
    #[error("{} has schema {found:?}; this build reads {SAVED_SCHEMA}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// The schema it names.
        found: String,
    },
}

impl SavedCase {
    /// The case to save for `failure` of the transport named `transport`.
    pub fn of(transport: &str, failure: &Failure) -> SavedCase {
        SavedCase {
            schema: SAVED_SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            transport: transport.into(),
            seed: failure.seed,
            plan: failure.minimal.plan.clone(),
            violations: failure.minimal.violations.clone(),
            report: failure.report(),
        }
    }

    /// The file name it is saved under in a directory: `<transport>-seed<seed>.json`.
    pub fn file_name(&self) -> String {
        format!("{}-seed{}.json", self.transport, self.seed)
    }

    /// The case as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a saved case from `path`.
    pub fn read(path: &Path) -> Result<SavedCase, SavedCaseError> {
        let text = std::fs::read_to_string(path).map_err(|source| SavedCaseError::Read {
            path: path.into(),
            source,
        })?;
        // The schema first: a file of another schema says so, not which field it lacks.
        #[derive(Deserialize)]
        struct Tag {
            schema: String,
        }
        if let Ok(Tag { schema }) = serde_json::from_str::<Tag>(&text) {
            if schema != SAVED_SCHEMA {
                return Err(SavedCaseError::Schema {
                    path: path.into(),
                    found: schema,
                });
            }
        }
        serde_json::from_str(&text).map_err(|source| SavedCaseError::Malformed {
            path: path.into(),
            source,
        })
    }
}

/// The schema tag of [`ReplayReport`].
pub const REPLAY_SCHEMA: &str = "ipcprop-replay/1";

/// A saved case run again (`ipcprop check --replay FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayReport {
    /// [`REPLAY_SCHEMA`].
    pub schema: String,
    /// The version of the crate that ran it.
    pub version: String,
    /// The transport it ran on.
    pub transport: String,
    /// The seed of the campaign that found it.
    pub seed: u64,
    /// How many times the plan ran.
    pub runs: u32,
    /// How many of those runs failed.
    pub failed: u32,
    /// The first failing run, or the last run if none failed.
    pub outcome: super::CaseOutcome,
}

impl ReplayReport {
    /// Runs `saved.plan` `runs` times (at least once) with `run_case` and counts the
    /// failures.
    pub fn run(
        saved: &SavedCase,
        runs: u32,
        mut run_case: impl FnMut(&Plan) -> crate::Result<super::CaseOutcome>,
    ) -> crate::Result<ReplayReport> {
        let mut failed = 0;
        let mut kept: Option<super::CaseOutcome> = None;
        let runs = runs.max(1);
        for _ in 0..runs {
            let outcome = run_case(&saved.plan)?;
            if !outcome.passed() {
                failed += 1;
            }
            if kept.as_ref().is_none_or(|k| k.passed()) {
                kept = Some(outcome);
            }
        }
        Ok(ReplayReport {
            schema: REPLAY_SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            transport: saved.transport.clone(),
            seed: saved.seed,
            runs,
            failed,
            // At least one run happened.
            outcome: kept.ok_or(crate::Error::Corrupt("no replay run happened".into()))?,
        })
    }

    /// True if no run failed.
    pub fn passed(&self) -> bool {
        self.failed == 0
    }
}
