//! SQLite through `rusqlite` as a durable queue, the way applications keep one in a
//! database: a WAL-mode database (`PRAGMA journal_mode=WAL`) with one table,
//! `queue(id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)`.
//!
//! A producer appends with a prepared, cached `INSERT INTO queue(body) VALUES (?1)`; a
//! consumer takes the oldest message with one statement,
//! `DELETE FROM queue WHERE id = (SELECT min(id) FROM queue) RETURNING body`, in
//! autocommit: the delete and the read are one atomic write transaction (as
//! `BEGIN IMMEDIATE; SELECT ... ORDER BY id LIMIT 1; DELETE ...; COMMIT` would be, in one
//! statement instead of four). `AUTOINCREMENT` keeps ids from being reused, so `min(id)`
//! is always the oldest message. SQLite cannot wake a process when another commits: a
//! consumer that finds the table empty sleeps [`POLL`] and looks again. Every connection
//! waits up to [`BUSY_TIMEOUT`] for the other's write lock (`busy_timeout`).
//!
//! `synchronous` ([`Synchronous`]) decides what a commit costs in WAL mode: `FULL` syncs
//! the log at every commit (durable across power loss, the class of the queue's
//! [`Durability::Sync`](crate::queue::Durability::Sync)); `NORMAL` only at checkpoints
//! (a power loss may lose the last commits, never corrupt the database); `OFF` never
//! (both against [`Durability::None`](crate::queue::Durability::None)).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::bench::queue::{expect_none_left, producer_consumer, take_n, BenchDir};
use crate::bench::{consume, expect_count, failed, in_batches, payload};
use crate::Result;

/// How long a connection waits for another's lock before its statement fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a consumer that found the table empty sleeps before it looks again.
pub const POLL: Duration = Duration::from_micros(100);

const INSERT: &str = "INSERT INTO queue(body) VALUES (?1)";
const TAKE: &str = "DELETE FROM queue WHERE id = (SELECT min(id) FROM queue) RETURNING body";

/// `PRAGMA synchronous`: when SQLite syncs its write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Synchronous {
    /// `FULL`: at every commit. A committed transaction survives power loss.
    Full,
    /// `NORMAL`: at checkpoints only. A power loss may roll back the last commits.
    Normal,
    /// `OFF`: never. Survives the death of a process, not of the machine.
    Off,
}

impl Synchronous {
    /// The pragma's value.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

fn sql_err(e: rusqlite::Error) -> String {
    format!("sqlite: {e}")
}

/// The database file in a peer's subdirectory (its `-wal` and `-shm` go next to it).
fn db_path(dir: &Path) -> PathBuf {
    dir.join("queue.db")
}

/// Opens (creating it if needed) the queue database at `path`: WAL mode, the queue table,
/// `synchronous` as asked, the busy timeout.
fn open(path: &Path, sync: Synchronous) -> std::result::Result<Connection, String> {
    let c = Connection::open(path).map_err(sql_err)?;
    c.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
    let mode: String = c
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("sqlite refused WAL mode (journal_mode is {mode})"));
    }
    c.pragma_update(None, "synchronous", sync.pragma())
        .map_err(sql_err)?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS queue(id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)",
    )
    .map_err(sql_err)?;
    Ok(c)
}

/// The body of a row as bytes (an empty message is an empty blob).
fn blob<'a>(v: ValueRef<'a>) -> rusqlite::Result<&'a [u8]> {
    match v {
        ValueRef::Blob(b) => Ok(b),
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            "body".into(),
            other.data_type(),
        )),
    }
}

/// How many rows the queue table holds.
fn rows(c: &Connection) -> std::result::Result<u64, String> {
    let k: i64 = c
        .query_row("SELECT count(*) FROM queue", [], |r| r.get(0))
        .map_err(sql_err)?;
    Ok(k as u64)
}

/// One process inserting `n` messages of `size` bytes with `synchronous = sync`:
/// `per_tx <= 1`, one `INSERT` per message in autocommit (a prepared, cached statement),
/// otherwise `per_tx` of them per transaction (`BEGIN IMMEDIATE` ... `COMMIT`). Only the
/// inserts are timed; afterwards the row count is checked and every body read back
/// ([`consume`]), and the run fails unless exactly `n` messages of `size` bytes are there.
pub fn push(
    dir: &BenchDir,
    n: u64,
    size: usize,
    sync: Synchronous,
    per_tx: usize,
) -> Result<Duration> {
    push_sending(dir, n, n, size, sync, per_tx)
}

/// [`push`], inserting `sent` messages and expecting `n`.
fn push_sending(
    dir: &BenchDir,
    sent: u64,
    n: u64,
    size: usize,
    sync: Synchronous,
    per_tx: usize,
) -> Result<Duration> {
    let scratch = dir.subdir("sqlite")?;
    let mut c = open(&db_path(scratch.path()), sync).map_err(failed)?;
    let msg = payload(size);
    let f = |e: rusqlite::Error| failed(sql_err(e));
    let start = Instant::now();
    in_batches(sent, per_tx, |k| {
        if per_tx <= 1 {
            c.prepare_cached(INSERT)
                .and_then(|mut s| s.execute([&msg[..]]))
                .map_err(f)?;
        } else {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(f)?;
            {
                let mut s = tx.prepare_cached(INSERT).map_err(f)?;
                for _ in 0..k {
                    s.execute([&msg[..]]).map_err(f)?;
                }
            }
            tx.commit().map_err(f)?;
        }
        Ok(())
    })?;
    let t = start.elapsed();
    let held = rows(&c).map_err(failed)?;
    if held != n {
        return Err(failed(format!("the table holds {held} rows, expected {n}")));
    }
    let mut got = (0u64, 0u64);
    let mut s = c.prepare("SELECT body FROM queue ORDER BY id").map_err(f)?;
    let mut all = s.query([]).map_err(f)?;
    while let Some(row) = all.next().map_err(f)? {
        let b = row.get_ref(0).and_then(blob).map_err(f)?;
        consume(b);
        got = (got.0 + 1, got.1 + b.len() as u64);
    }
    expect_count(got, n, size).map_err(failed)?;
    Ok(t)
}

/// Two processes on one database with `synchronous = sync`, each opening its connection
/// after the fork: a producer inserting `n` messages of `size` bytes, one transaction
/// each (autocommit), and a consumer taking them in order with
/// `DELETE ... RETURNING` (one transaction each; see the module's documentation), reading
/// every byte ([`consume`]) and sleeping [`POLL`] whenever the table is empty. Fails
/// unless the consumer got exactly `n` messages of `size` bytes and the table is empty
/// afterwards. The time from the first insert (once both are connected) until the
/// consumer has taken the last message.
///
/// No other thread of this process may be inside SQLite while it forks: SQLite's
/// process-wide mutexes, locked there, would stay locked in the children (the benchmark
/// runs one workload at a time).
pub fn pair(dir: &BenchDir, n: u64, size: usize, sync: Synchronous) -> Result<Duration> {
    pair_sending(dir, n, n, size, sync)
}

/// [`pair`], the producer inserting `sent` messages where the consumer expects `n`.
fn pair_sending(
    dir: &BenchDir,
    sent: u64,
    n: u64,
    size: usize,
    sync: Synchronous,
) -> Result<Duration> {
    let scratch = dir.subdir("sqlite")?;
    let path = db_path(scratch.path());
    // The file, WAL mode and table are made here, so the two processes only connect.
    drop(open(&path, sync).map_err(failed)?);
    let msg = payload(size);
    let t = producer_consumer(
        |marks| {
            let c = open(&path, sync)?;
            let mut insert = c.prepare_cached(INSERT).map_err(sql_err)?;
            marks.start()?;
            for _ in 0..sent {
                insert.execute([&msg[..]]).map_err(sql_err)?;
            }
            Ok(())
        },
        |marks| {
            let c = open(&path, sync)?;
            let mut take = c.prepare_cached(TAKE).map_err(sql_err)?;
            marks.ready()?;
            take_n(marks, n, size, || {
                let len = take
                    .query_row([], |r| {
                        let b = blob(r.get_ref(0)?)?;
                        consume(b);
                        Ok(b.len())
                    })
                    .optional()
                    .map_err(sql_err)?;
                if len.is_none() {
                    std::thread::sleep(POLL);
                }
                Ok(len)
            })
        },
    )?;
    let left = open(&path, sync).and_then(|c| rows(&c)).map_err(failed)?;
    expect_none_left(left, "table", n)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::peers::testing::{bench_dir, serial};

    /// FULL syncs at every commit: fewer messages.
    fn n_for(sync: Synchronous) -> u64 {
        if sync == Synchronous::Full {
            20
        } else {
            100
        }
    }

    #[test]
    fn push_checks_out_at_every_sync_size_and_transaction_size() {
        let _serial = serial();
        let dir = bench_dir();
        for sync in [Synchronous::Full, Synchronous::Normal, Synchronous::Off] {
            for size in [0, 64, 4096] {
                for per_tx in [1, 64] {
                    let took = push(&dir, n_for(sync), size, sync, per_tx)
                        .unwrap_or_else(|e| panic!("{sync:?} size {size} per_tx {per_tx}: {e}"));
                    assert!(took > Duration::ZERO, "{sync:?} size {size}: nothing timed");
                }
            }
        }
    }

    #[test]
    fn pair_moves_every_message_between_two_processes() {
        let _serial = serial();
        let dir = bench_dir();
        for sync in [Synchronous::Full, Synchronous::Normal, Synchronous::Off] {
            for size in [0, 64, 4096] {
                let took = pair(&dir, n_for(sync), size, sync)
                    .unwrap_or_else(|e| panic!("{sync:?} size {size}: {e}"));
                assert!(took > Duration::ZERO, "{sync:?} size {size}: nothing timed");
            }
        }
    }

    #[test]
    fn a_count_that_is_off_fails_the_run() {
        let _serial = serial();
        let dir = bench_dir();
        let off = Synchronous::Off;
        assert!(push_sending(&dir, 10, 10, 64, off, 1).is_ok());
        let e = push_sending(&dir, 9, 10, 64, off, 1).unwrap_err();
        assert!(e.to_string().contains("holds 9 rows"), "{e}");
        assert!(push_sending(&dir, 11, 10, 64, off, 64).is_err());
        assert!(pair_sending(&dir, 10, 10, 64, off).is_ok());
        let e = pair_sending(&dir, 11, 10, 64, off).unwrap_err();
        assert!(e.to_string().contains("1 messages left"), "{e}");
    }

    #[test]
    fn the_database_is_in_wal_mode_with_the_pragma_asked_for() {
        let _serial = serial();
        let dir = bench_dir();
        let sub = dir.subdir("sqlite").expect("subdir");
        // SQLite numbers them OFF 0, NORMAL 1, FULL 2; each is asked for in turn (NORMAL
        // alone would pass with the pragma not set: the bundled build's WAL default).
        for (want, number) in [
            (Synchronous::Full, 2),
            (Synchronous::Normal, 1),
            (Synchronous::Off, 0),
        ] {
            let c = open(&db_path(sub.path()), want).expect("open");
            let mode: String = c
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .expect("journal_mode");
            assert_eq!(mode, "wal");
            let sync: i64 = c
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .expect("synchronous");
            assert_eq!(sync, number, "{want:?}");
        }
    }

    #[test]
    fn a_database_that_cannot_be_opened_is_an_error_naming_sqlite() {
        let dir = bench_dir();
        let missing = dir.path().join("no such directory").join("queue.db");
        let e = open(&missing, Synchronous::Full).expect_err("opened in a missing directory");
        assert!(e.starts_with("sqlite: "), "{e}");
        assert!(e.contains("unable to open"), "{e}");
    }
}
