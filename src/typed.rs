//! Typed messages: any `serde` type over any transport (feature `serde`).
//!
//! [`TypedSender`] wraps a [`Sender`] and sends values of one type `T`; [`TypedReceiver`]
//! wraps a [`Receiver`] and gives them back. Each value travels as one message of the
//! transport, encoded with [postcard](https://docs.rs/postcard) (compact, no schema: both
//! ends must agree on `T`). The transport's promises hold unchanged: in order, exactly once,
//! [`Error::Disconnected`] at the end.
//!
//! ```
//! use ipcprop::typed::{TypedReceiver, TypedSender};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum Job {
//!     Resize { path: String, width: u32 },
//!     Stop,
//! }
//!
//! let (tx, rx) = ipcprop::pipe::channel()?;
//! let mut tx = TypedSender::<Job, _>::new(tx);
//! let mut rx = TypedReceiver::<Job, _>::new(rx);
//! tx.send(&Job::Resize { path: "a.png".into(), width: 640 })?;
//! tx.send(&Job::Stop)?;
//! drop(tx);
//! assert_eq!(rx.recv()?, Job::Resize { path: "a.png".into(), width: 640 });
//! assert_eq!(rx.recv()?, Job::Stop);
//! assert!(rx.recv().unwrap_err().is_disconnected());
//! # Ok::<(), ipcprop::typed::TypedError>(())
//! ```
//!
//! A value whose encoding is longer than the transport accepts is refused with
//! [`Error::MessageTooLarge`] before anything is sent. A message that does not decode as a
//! `T` (a peer with another type, or bytes that are not postcard at all) gives
//! [`TypedError::Decode`], naming its length; that message is consumed and the next
//! receive goes on with the next one.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::transport::{Receiver, Sender, Wait};

/// What can go wrong with a typed message: the transport's error, or a value that does not
/// encode or decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// The transport's own error or outcome ([`Error::Disconnected`], [`Error::Timeout`],
    /// [`Error::MessageTooLarge`], ...).
    #[error(transparent)]
    Transport(#[from] Error),
    /// A message arrived that is not a valid encoding of the receiver's type. It was
    /// consumed; the transport is intact and the next receive returns the next message.
    #[error("a message of {len} bytes does not decode as {type_name}: {reason}")]
    Decode {
        /// Length of the offending message, in bytes.
        len: usize,
        /// The type it was decoded as.
        type_name: &'static str,
        /// What the decoder found wrong.
        reason: String,
    },
    /// The value cannot be encoded (for example a sequence whose serializer does not know
    /// its length). Nothing was sent.
    #[error("a value of {type_name} does not encode: {reason}")]
    Encode {
        /// The type of the value.
        type_name: &'static str,
        /// What the encoder found wrong.
        reason: String,
    },
}

impl TypedError {
    /// True for the transport's [`Error::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TypedError::Transport(e) if e.is_disconnected())
    }

    /// True for the transport's [`Error::Empty`], [`Error::Full`] and [`Error::Timeout`].
    pub fn is_not_ready(&self) -> bool {
        matches!(self, TypedError::Transport(e) if e.is_not_ready())
    }

    /// The transport's error, if that is what this is.
    pub fn transport(&self) -> Option<&Error> {
        match self {
            TypedError::Transport(e) => Some(e),
            _ => None,
        }
    }
}

/// A [`Sender`] of values of type `T`, each encoded as one message.
pub struct TypedSender<T, S> {
    inner: S,
    /// The last encoding, kept for its capacity.
    buf: Vec<u8>,
    _values: PhantomData<fn(&T)>,
}

impl<T, S> fmt::Debug for TypedSender<T, S>
where
    S: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedSender")
            .field("type", &std::any::type_name::<T>())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T: Serialize, S: Sender> TypedSender<T, S> {
    /// Wraps a sender.
    pub fn new(inner: S) -> Self {
        TypedSender {
            inner,
            buf: Vec::new(),
            _values: PhantomData,
        }
    }

    /// Encodes `value` and sends it as one message, blocking while the transport is full.
    ///
    /// An encoding longer than the transport's [`Sender::max_message_len`] is refused with
    /// [`Error::MessageTooLarge`] (its encoded length and the maximum) and nothing is sent.
    pub fn send(&mut self, value: &T) -> Result<(), TypedError> {
        self.send_wait(value, Wait::Forever)
    }

    /// Sends `value` if the transport has room now, else [`Error::Full`] (nothing sent).
    pub fn try_send(&mut self, value: &T) -> Result<(), TypedError> {
        self.send_wait(value, Wait::Never)
    }

    /// Sends `value`, waiting at most `timeout` for room, else [`Error::Timeout`] (nothing
    /// sent).
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<(), TypedError> {
        self.send_wait(value, Wait::For(timeout))
    }

    /// Encodes `value` and sends it as one message, waiting for room as `wait` says
    /// ([`Sender::send_wait`]: what a deadline bounds depends on the transport).
    pub fn send_wait(&mut self, value: &T, wait: Wait) -> Result<(), TypedError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let buf = postcard::to_extend(value, buf).map_err(|e| TypedError::Encode {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })?;
        let max = self.inner.max_message_len();
        let result = if buf.len() > max {
            Err(Error::MessageTooLarge {
                len: buf.len(),
                max,
                why: "the transport's maximum, for the encoded value",
            })
        } else {
            self.inner.send_wait(&buf, wait)
        };
        self.buf = buf;
        Ok(result?)
    }

    /// The longest encoding the transport accepts.
    pub fn max_message_len(&self) -> usize {
        self.inner.max_message_len()
    }

    /// The wrapped sender.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped sender, mutably (to send raw bytes, the receiver must expect them).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the sender.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A [`Receiver`] of values of type `T`, each decoded from one message.
pub struct TypedReceiver<T, R> {
    inner: R,
    _values: PhantomData<fn() -> T>,
}

impl<T, R> fmt::Debug for TypedReceiver<T, R>
where
    R: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedReceiver")
            .field("type", &std::any::type_name::<T>())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T: DeserializeOwned, R: Receiver> TypedReceiver<T, R> {
    /// Wraps a receiver.
    pub fn new(inner: R) -> Self {
        TypedReceiver {
            inner,
            _values: PhantomData,
        }
    }

    /// Waits as `wait` says for the next message and decodes it, straight from the
    /// transport's buffer (no copy of the message).
    ///
    /// Errors: the transport's ([`Error::Disconnected`] at the end, [`Error::Empty`] or
    /// [`Error::Timeout`] when nothing came in time, ...), or [`TypedError::Decode`] for a
    /// message that is not exactly one encoded `T` (trailing bytes included).
    pub fn recv_wait(&mut self, wait: Wait) -> Result<T, TypedError> {
        self.inner.recv_with(wait, decode::<T>)?
    }

    /// Blocks until the next value arrives.
    pub fn recv(&mut self) -> Result<T, TypedError> {
        self.recv_wait(Wait::Forever)
    }

    /// Returns the next value if a message is ready, else [`Error::Empty`].
    pub fn try_recv(&mut self) -> Result<T, TypedError> {
        self.recv_wait(Wait::Never)
    }

    /// Waits at most `timeout` for the next value, else [`Error::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, TypedError> {
        self.recv_wait(Wait::For(timeout))
    }

    /// The values as they arrive, ending once every sender is gone
    /// ([`Error::Disconnected`]). A message that does not decode is yielded as
    /// [`TypedError::Decode`] and the iteration goes on (the transport is intact); any other
    /// error of the transport is yielded once, then the iteration ends, so a broken channel
    /// never looks like a clean end.
    ///
    /// ```
    /// use ipcprop::typed::{TypedReceiver, TypedSender};
    ///
    /// let (tx, rx) = ipcprop::pipe::channel()?;
    /// let mut tx = TypedSender::<(u32, String), _>::new(tx);
    /// tx.send(&(1, "one".into()))?;
    /// tx.send(&(2, "two".into()))?;
    /// drop(tx);
    /// let mut rx = TypedReceiver::<(u32, String), _>::new(rx);
    /// let got: Result<Vec<_>, _> = rx.iter().collect();
    /// assert_eq!(got?, [(1, "one".to_string()), (2, "two".to_string())]);
    /// # Ok::<(), ipcprop::typed::TypedError>(())
    /// ```
    pub fn iter(&mut self) -> TypedIter<'_, T, R> {
        TypedIter {
            rx: self,
            done: false,
        }
    }

    /// The wrapped receiver.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped receiver, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the receiver.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The iterator of [`TypedReceiver::iter`].
pub struct TypedIter<'a, T, R> {
    rx: &'a mut TypedReceiver<T, R>,
    done: bool,
}

impl<T: DeserializeOwned, R: Receiver> Iterator for TypedIter<'_, T, R> {
    type Item = Result<T, TypedError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.rx.recv() {
            Ok(v) => Some(Ok(v)),
            Err(e @ TypedError::Decode { .. }) => Some(Err(e)),
            Err(e) if e.is_disconnected() => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Decodes one whole message as a `T`: bytes left over are an error too (a peer that sent
/// another type whose encoding happens to start like a `T`).
fn decode<T: DeserializeOwned>(msg: &[u8]) -> Result<T, TypedError> {
    let fail = |reason: String| TypedError::Decode {
        len: msg.len(),
        type_name: std::any::type_name::<T>(),
        reason,
    };
    match postcard::take_from_bytes::<T>(msg) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(fail(format!(
            "{} bytes left over after the value",
            rest.len()
        ))),
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pipe, shm};
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        label: String,
    }

    #[test]
    fn values_round_trip_over_the_pipe_and_the_ring() {
        let points: Vec<Point> = (0..50)
            .map(|i| Point {
                x: i * 1000 - 7,
                label: "p".repeat(i as usize),
            })
            .collect();
        let (tx, rx) = pipe::channel().unwrap();
        let (mut tx, mut rx) = (
            TypedSender::<Point, _>::new(tx),
            TypedReceiver::<Point, _>::new(rx),
        );
        for p in &points {
            tx.send(p).unwrap();
        }
        drop(tx);
        for p in &points {
            assert_eq!(&rx.recv().unwrap(), p);
        }
        assert!(rx.recv().unwrap_err().is_disconnected());

        let (tx, rx) = shm::channel().unwrap();
        let (mut tx, mut rx) = (
            TypedSender::<Point, _>::new(tx),
            TypedReceiver::<Point, _>::new(rx),
        );
        assert!(rx.try_recv().unwrap_err().is_not_ready());
        tx.send(&points[3]).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), points[3]);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(TypedError::Transport(Error::Timeout(_)))
        ));
    }

    #[test]
    fn a_message_that_is_not_a_value_is_a_decode_error_naming_its_length_and_the_next_one_arrives()
    {
        let (tx, rx) = pipe::channel().unwrap();
        let mut tx = TypedSender::<Point, _>::new(tx);
        let mut rx = TypedReceiver::<Point, _>::new(rx);
        // A length prefix of 200 bytes for the label, and 3 bytes of it.
        tx.get_mut()
            .send(&[0x02, 0xc8, 0x01, b'a', b'b', b'c'])
            .unwrap();
        // A whole Point followed by a stray byte.
        let mut trailing = postcard::to_extend(
            &Point {
                x: 1,
                label: "ok".into(),
            },
            Vec::new(),
        )
        .unwrap();
        trailing.push(0);
        tx.get_mut().send(&trailing).unwrap();
        // Not UTF-8 in the label.
        tx.get_mut().send(&[0x00, 0x01, 0xff]).unwrap();
        let good = Point {
            x: -3,
            label: "after".into(),
        };
        tx.send(&good).unwrap();
        for len in [6, trailing.len(), 3] {
            match rx.recv() {
                Err(TypedError::Decode {
                    len: got,
                    type_name,
                    reason,
                }) => {
                    assert_eq!(got, len);
                    assert!(type_name.ends_with("Point"), "{type_name}");
                    assert!(!reason.is_empty());
                }
                other => panic!("a {len}-byte bad message gave {other:?}"),
            }
        }
        assert_eq!(rx.recv().unwrap(), good);
        let err = TypedError::Decode {
            len: 6,
            type_name: "Point",
            reason: "x".into(),
        };
        assert!(err.to_string().contains("6 bytes"), "{err}");
    }

    #[test]
    fn iteration_goes_past_a_bad_message_and_ends_at_the_end_of_the_stream() {
        let (tx, rx) = pipe::channel().unwrap();
        let mut tx = TypedSender::<u32, _>::new(tx);
        tx.send(&7).unwrap();
        tx.get_mut()
            .send(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap(); // not a u32
        tx.send(&9).unwrap();
        drop(tx);
        let mut rx = TypedReceiver::<u32, _>::new(rx);
        let got: Vec<_> = rx.iter().collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap(), &7);
        assert!(matches!(got[1], Err(TypedError::Decode { len: 6, .. })));
        assert_eq!(got[2].as_ref().unwrap(), &9);
        assert!(rx.iter().next().is_none(), "the end, again");
    }

    #[test]
    fn a_broken_stream_ends_the_iteration_with_its_error() {
        use std::io::Write;
        // A frame header claiming more than the receiver accepts: the stream is broken.
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(&u32::MAX.to_le_bytes()).unwrap();
        w.write_all(&[0; 4]).unwrap();
        drop(w);
        let rx = pipe::PipeReceiver::from_fd(r, pipe::PipeConfig::new()).unwrap();
        let mut rx = TypedReceiver::<u32, _>::new(rx);
        let got: Vec<_> = rx.iter().collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(&got[0], Err(TypedError::Transport(Error::Frame(_)))),
            "{got:?}"
        );
    }

    #[test]
    fn try_send_and_send_timeout_reach_the_transport() {
        let (tx, rx) = shm::channel_with(shm::RingConfig::new().with_capacity(4096)).unwrap();
        let mut tx = TypedSender::<Vec<u8>, _>::new(tx);
        let mut rx = TypedReceiver::<Vec<u8>, _>::new(rx);
        let value = vec![5u8; 1000];
        let mut sent = 0;
        while tx.try_send(&value).is_ok() {
            sent += 1;
            assert!(sent < 100, "a 4 KiB ring never filled");
        }
        assert!(sent > 0);
        let full = tx.try_send(&value).unwrap_err();
        assert!(
            matches!(full, TypedError::Transport(Error::Full)),
            "{full:?}"
        );
        let late = tx
            .send_timeout(&value, Duration::from_millis(20))
            .unwrap_err();
        assert!(
            matches!(late, TypedError::Transport(Error::Timeout(_))),
            "{late:?}"
        );
        for _ in 0..sent {
            assert_eq!(rx.try_recv().unwrap(), value);
        }
        assert!(rx.try_recv().unwrap_err().is_not_ready());
    }

    #[test]
    fn errors_say_what_they_are_and_ends_show_their_type() {
        let empty = TypedError::from(Error::Empty);
        assert!(empty.is_not_ready() && !empty.is_disconnected());
        assert!(matches!(empty.transport(), Some(Error::Empty)));
        let gone = TypedError::from(Error::Disconnected);
        assert!(gone.is_disconnected() && !gone.is_not_ready());
        let bad = TypedError::Decode {
            len: 3,
            type_name: "u32",
            reason: "x".into(),
        };
        assert!(!bad.is_not_ready() && !bad.is_disconnected());
        assert!(bad.transport().is_none());

        let (tx, rx) = pipe::channel().unwrap();
        let tx = TypedSender::<Point, _>::new(tx);
        let rx = TypedReceiver::<Point, _>::new(rx);
        for shown in [format!("{tx:?}"), format!("{rx:?}")] {
            assert!(
                shown.contains("Point") && shown.contains("inner"),
                "{shown}"
            );
        }
    }

    /// A sender that accepts anything and keeps it, whatever `max_message_len` says: only
    /// the typed sender's own check can refuse a value.
    struct Recording {
        sent: Vec<Vec<u8>>,
        max: usize,
    }

    impl Sender for Recording {
        fn send(&mut self, msg: &[u8]) -> crate::Result<()> {
            self.sent.push(msg.to_vec());
            Ok(())
        }

        fn max_message_len(&self) -> usize {
            self.max
        }
    }

    #[test]
    fn an_encoding_over_the_transport_maximum_is_refused_before_anything_is_sent() {
        let max = 1000;
        let mut tx = TypedSender::<Vec<u8>, _>::new(Recording {
            sent: Vec::new(),
            max,
        });
        // A Vec<u8> of n bytes encodes as a varint length then the bytes: n + 2 bytes for
        // 128 <= n < 16384.
        match tx.send(&vec![9u8; max - 1]) {
            Err(TypedError::Transport(Error::MessageTooLarge { len, max: m, .. })) => {
                assert_eq!((len, m), (max + 1, max));
            }
            other => panic!("an encoding of {} bytes gave {other:?}", max + 1),
        }
        assert!(tx.get_ref().sent.is_empty(), "nothing was sent");
        tx.send(&vec![7u8; max - 2]).unwrap();
        assert_eq!(tx.get_ref().sent.len(), 1);
        assert_eq!(tx.get_ref().sent[0].len(), max);

        // And over a real transport: a 4 KiB ring.
        let (tx, rx) = shm::channel_with(shm::RingConfig::new().with_capacity(4096)).unwrap();
        let mut tx = TypedSender::<Vec<u8>, _>::new(tx);
        let mut rx = TypedReceiver::<Vec<u8>, _>::new(rx);
        let max = tx.max_message_len();
        assert!((130..16384).contains(&max), "{max}");
        assert!(matches!(
            tx.send(&vec![9u8; max - 1]),
            Err(TypedError::Transport(Error::MessageTooLarge { .. }))
        ));
        assert!(
            rx.try_recv().unwrap_err().is_not_ready(),
            "nothing was sent"
        );
        let fits = vec![7u8; max - 2];
        tx.send(&fits).unwrap();
        assert_eq!(rx.recv().unwrap(), fits);
    }
}
