//! Typed messages across a fork: values sent by a forked child arrive whole and in order in
//! the parent, and the end of the child's sender is seen as `Disconnected`, over the pipe
//! channel and over the shared-memory ring.

use std::collections::BTreeMap;
use std::time::Duration;

use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::typed::{TypedReceiver, TypedSender};
use ipcprop::{pipe, shm, Receiver, Sender};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Started { pid: u32, args: Vec<String> },
    Progress(f64),
    Counts(BTreeMap<String, u64>),
    Blob(#[serde(with = "bytes")] Vec<u8>),
    Done,
}

/// `Vec<u8>` as one byte string (postcard writes it as a length and the bytes either way;
/// this checks a custom `with` module goes through too).
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        <&[u8]>::deserialize(d).map(<[u8]>::to_vec)
    }
}

fn events() -> Vec<Event> {
    let mut counts = BTreeMap::new();
    counts.insert("ok".to_string(), 41);
    counts.insert("failed".to_string(), 1);
    vec![
        Event::Started {
            pid: 7,
            args: vec!["--jobs".into(), "2".into()],
        },
        Event::Progress(0.25),
        Event::Counts(counts),
        Event::Blob((0..=255).cycle().take(100_000).collect()),
        Event::Blob(Vec::new()),
        Event::Progress(1.0),
        Event::Done,
    ]
}

/// Sends `events()` from a forked child through `tx`; receives them in the parent.
fn across_a_fork<S: Sender, R: Receiver>(tx: S, rx: R) {
    let mut tx = Some(TypedSender::<Event, _>::new(tx));
    let mut group = ChildGroup::new();
    group
        .spawn("sender", |_| {
            let mut tx = tx.take().ok_or("no sender")?;
            for e in events() {
                tx.send(&e).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .unwrap();
    drop(tx.take()); // the parent's copy must not keep the channel open
    let mut rx = TypedReceiver::<Event, _>::new(rx);
    let mut got = Vec::new();
    let end = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(e) => got.push(e),
            Err(e) => break e,
        }
    };
    let reports = group.wait(Duration::from_secs(30));
    assert_eq!(reports[0].end, ChildEnd::Returned);
    assert!(end.is_disconnected(), "ended with {end}");
    assert_eq!(got, events());
}

#[test]
fn values_cross_a_fork_over_the_pipe() {
    let (tx, rx) = pipe::channel().unwrap();
    across_a_fork(tx, rx);
}

#[test]
fn values_cross_a_fork_over_the_ring() {
    let (tx, rx) = shm::channel().unwrap();
    across_a_fork(tx, rx);
}
