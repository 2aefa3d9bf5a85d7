//! Helpers shared by the integration tests (each test file includes this module; not
//! every file uses every helper).
#![allow(dead_code)]

use std::path::PathBuf;

use proptest::test_runner::{Config, FileFailurePersistence};

/// A directory under the system temp dir, removed when dropped (pass or fail).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `tag`, this process and the time.
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("ipcprop-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Proptest config: `cases` unless `PROPTEST_CASES` says otherwise; failures persisted in
/// `proptest-regressions/<name>.txt`.
pub fn prop_config(cases: u32, name: &'static str) -> Config {
    let file: &'static str = Box::leak(format!("proptest-regressions/{name}.txt").into_boxed_str());
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    }
}
