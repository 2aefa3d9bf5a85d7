//! At-least-once delivery: messages taken under a lease stay until acknowledged, are hidden
//! from other consumers meanwhile, and come back when their holder dies (even by SIGKILL).

mod common;

use std::time::Duration;

use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::queue::{FileQueue, QueueConfig};
use ipcprop::Error;

use common::TempDir;

/// Every test here fails, rather than hangs, past this.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

fn open(dir: &TempDir) -> FileQueue {
    FileQueue::open(dir.0.join("q"), QueueConfig::new()).unwrap()
}

#[test]
fn leased_messages_are_hidden_until_acknowledged_and_then_gone() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("lease");
        let a = open(&dir);
        let b = open(&dir); // another consumer (its own handle, its own holder id)
        a.push_batch(&[b"1", b"2", b"3", b"4"]).unwrap();
        let one = a.take().unwrap().unwrap();
        let two = b.take().unwrap().unwrap();
        assert_eq!((one.message(), two.message()), (&b"1"[..], &b"2"[..]));
        assert_eq!(
            a.len().unwrap(),
            4,
            "leased messages still count until acknowledged"
        );
        assert_eq!(
            a.peek().unwrap().as_deref(),
            Some(&b"3"[..]),
            "peek skips leased ones"
        );
        assert_eq!(
            b.pop().unwrap().as_deref(),
            Some(&b"3"[..]),
            "pop skips leased ones"
        );
        // Acknowledging out of order, and across handles, is refused or accepted as it should.
        assert!(
            matches!(b.ack(&one).unwrap_err(), Error::LeaseLost { seq: 0 }),
            "b does not hold 1"
        );
        b.ack(&two).unwrap();
        assert!(
            matches!(b.ack(&two).unwrap_err(), Error::LeaseLost { .. }),
            "acknowledged twice"
        );
        assert_eq!(a.len().unwrap(), 2);
        a.ack(&one).unwrap();
        assert_eq!(a.len().unwrap(), 1);
        assert_eq!(a.pop().unwrap().as_deref(), Some(&b"4"[..]));
        assert_eq!(a.pop().unwrap(), None);
        assert!(a.take().unwrap().is_none());
    })
}

#[test]
fn a_lease_whose_holder_is_killed_is_delivered_again_and_an_acknowledged_one_never() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("lease-kill");
        let q = open(&dir);
        q.push_batch(&[b"acked", b"orphaned", b"later"]).unwrap();
        let path = dir.0.join("q");
        let mut group = ChildGroup::new();
        group
            .spawn("worker", |rep| {
                let q = FileQueue::open(&path, QueueConfig::new()).map_err(|e| e.to_string())?;
                let first = q.take().map_err(|e| e.to_string())?.ok_or("empty")?;
                q.ack(&first).map_err(|e| e.to_string())?;
                let second = q.take().map_err(|e| e.to_string())?.ok_or("empty")?;
                rep.record(second.message());
                // Dies holding the lease on "orphaned".
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                Ok(())
            })
            .unwrap();
        let reports = group.wait(Duration::from_secs(30));
        assert_eq!(reports[0].end, ChildEnd::Signaled("SIGKILL".into()));
        assert_eq!(reports[0].records, vec![b"orphaned".to_vec()]);
        // The dead worker's lease has expired: the message is delivered again, in its place.
        let again = q.take().unwrap().unwrap();
        assert_eq!(again.message(), b"orphaned");
        q.ack(&again).unwrap();
        assert_eq!(q.pop_batch(10).unwrap(), vec![b"later".to_vec()]);
    })
}

#[test]
fn a_live_holder_in_another_process_keeps_its_lease() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("lease-live");
        let q = open(&dir);
        q.push_batch(&[b"busy", b"free"]).unwrap();
        let path = dir.0.join("q");
        let (go_r, go_w) = nix::unistd::pipe().unwrap();
        let mut go_w = Some(go_w);
        let mut group = ChildGroup::new();
        group
            .spawn("slow worker", |rep| {
                drop(go_w.take());
                let q = FileQueue::open(&path, QueueConfig::new()).map_err(|e| e.to_string())?;
                let job = q.take().map_err(|e| e.to_string())?.ok_or("empty")?;
                rep.record(job.message());
                // Wait for the parent's go (EOF on the pipe), still holding the lease.
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(&go_r, &mut b);
                q.ack(&job).map_err(|e| e.to_string())
            })
            .unwrap();
        drop(go_r);
        // Let the worker take its job first.
        let mut waited = 0;
        while q.len().unwrap() == 2
            && q.peek().unwrap().as_deref() == Some(&b"busy"[..])
            && waited < 3000
        {
            std::thread::sleep(Duration::from_millis(1));
            waited += 1;
        }
        assert_eq!(
            q.pop().unwrap().as_deref(),
            Some(&b"free"[..]),
            "the leased job is not ours to take"
        );
        assert_eq!(q.take().unwrap(), None);
        drop(go_w.take());
        let reports = group.wait(Duration::from_secs(30));
        assert_eq!(reports[0].end, ChildEnd::Returned);
        assert_eq!(q.len().unwrap(), 0);
    })
}
