//! The frame codec: how a message travels as bytes.
//!
//! Every message sent over a byte stream (a pipe, a socket) is wrapped in one *frame*: an
//! 8-byte header followed by the payload. The receiver reassembles frames from whatever
//! chunks the stream delivers and hands back whole payloads, or says precisely what is wrong
//! with the stream.
//!
//! # Wire format
//!
//! A frame is [`HEADER_LEN`] (8) bytes of header followed by `len` bytes of payload:
//!
//! | bytes          | field     | encoding                                                       |
//! |----------------|-----------|----------------------------------------------------------------|
//! | `0..4`         | `len`     | payload length in bytes, `u32`, little-endian                  |
//! | `4..8`         | `crc`     | CRC-32C (Castagnoli) of bytes `0..4` then of the payload, `u32`, little-endian |
//! | `8..8 + len`   | `payload` | the message, byte for byte                                     |
//!
//! - Byte 0 is the least significant byte of `len`, byte 3 the most significant; likewise
//!   byte 4 is the least significant byte of `crc` and byte 7 the most significant.
//! - The checksum covers the four length bytes as well as the payload, so a corrupted length
//!   is caught as a checksum mismatch instead of silently splitting the stream at the wrong
//!   place (a length corrupted upwards past the receiver's maximum is caught even earlier, as
//!   [`FrameError::TooLarge`], before any memory is set aside for it).
//! - A zero-length payload is valid: its frame is the 8 header bytes alone.
//! - Frames follow one another with nothing in between; there is no stream header, padding or
//!   trailer. A stream that ends cleanly ends exactly at a frame boundary.
//! - The payload length is limited to `u32::MAX` by the format, and by each decoder to its
//!   own maximum ([`DEFAULT_MAX_FRAME_LEN`], 16 MiB, unless configured otherwise).
//!
//! For example the two-byte message `b"hi"` is the 10-byte frame
//! `02 00 00 00 | 59 72 5a 88 | 68 69`: length 2, checksum `0x885a7259`, then `h`, `i`.
//!
//! ```
//! use ipcprop::frame;
//!
//! let bytes = frame::encode(b"hi")?;
//! assert_eq!(bytes, [0x02, 0, 0, 0, 0x59, 0x72, 0x5a, 0x88, b'h', b'i']);
//! # Ok::<(), ipcprop::frame::FrameError>(())
//! ```
//!
//! # Decoding
//!
//! [`FrameDecoder`] is fed arbitrary chunks (with [`FrameDecoder::feed`], or without a copy by
//! reading straight into [`FrameDecoder::spare`] and calling [`FrameDecoder::commit`]) and
//! yields whole payloads from [`FrameDecoder::next_frame`]. At the end of the stream,
//! [`FrameDecoder::finish`] tells a clean end from one inside a frame.
//!
//! Any error means the stream has lost sync: the decoder is *poisoned* and keeps returning the
//! same error, so no byte that follows a bad frame is ever handed to the caller as a message.
//!
//! Memory is bounded: a length prefix is checked against the maximum as soon as the header is
//! complete, before anything is allocated for the payload, and the buffer never grows beyond
//! about `HEADER_LEN + max_message_len` or the largest read the caller asks room for, plus one chunk.
//!
//! ```
//! use std::io::{ErrorKind, Read};
//!
//! use ipcprop::frame::{self, FrameDecoder};
//!
//! /// Reads every message from `src` until a clean end of stream.
//! fn read_all(mut src: impl Read) -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
//!     let mut decoder = FrameDecoder::new();
//!     let mut messages = Vec::new();
//!     loop {
//!         while let Some(msg) = decoder.next_frame()? {
//!             messages.push(msg.to_vec());
//!         }
//!         let buf = decoder.spare(decoder.read_hint().max(64 * 1024));
//!         match src.read(buf) {
//!             Ok(0) => {
//!                 decoder.finish()?;
//!                 return Ok(messages);
//!             }
//!             Ok(n) => decoder.commit(n),
//!             Err(e) if e.kind() == ErrorKind::Interrupted => {}
//!             Err(e) => return Err(e.into()),
//!         }
//!     }
//! }
//!
//! let mut stream = Vec::new();
//! frame::encode_into(b"first", &mut stream)?;
//! frame::encode_into(b"", &mut stream)?;
//! frame::encode_into(b"third", &mut stream)?;
//! let messages = read_all(&stream[..])?;
//! assert_eq!(messages, [&b"first"[..], b"", b"third"]);
//!
//! // The same stream cut short inside its last frame is reported, with the numbers.
//! let err = read_all(&stream[..stream.len() - 2]).unwrap_err();
//! assert_eq!(err.to_string(), "stream ended inside a frame: 11 of 13 bytes received");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

/// Length of a frame header in bytes: a 4-byte length and a 4-byte checksum.
pub const HEADER_LEN: usize = 8;

/// The largest payload a [`FrameDecoder`] accepts unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The largest payload the wire format can carry: the length field is a `u32`.
const FORMAT_MAX_LEN: usize = u32::MAX as usize;

/// What is wrong with a frame or a stream of frames.
///
/// ```
/// use ipcprop::frame::{FrameDecoder, FrameError};
///
/// let mut decoder = FrameDecoder::with_max_message_len(1000);
/// decoder.feed(&[0xe9, 0x03, 0, 0, 0, 0, 0, 0]); // a header announcing 1001 bytes
/// let err = decoder.next_frame().unwrap_err();
/// assert_eq!(err, FrameError::TooLarge { len: 1001, max: 1000 });
/// assert_eq!(err.to_string(), "frame length 1001 exceeds the maximum of 1000 bytes");
/// ```
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix, or a message to encode, exceeds the maximum. When decoding, this is
    /// detected as soon as the header is complete, before any memory is set aside for the
    /// payload.
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The length announced by the header, or the length of the message to encode.
        len: u64,
        /// The largest payload length accepted: the decoder's maximum, or `u32::MAX` (the
        /// limit of the wire format) when encoding.
        max: usize,
    },
    /// The checksum in a frame's header does not match the frame's length and payload bytes.
    #[error(
        "frame checksum mismatch: header says {expected:#010x}, \
         payload of {len} bytes hashes to {actual:#010x}"
    )]
    ChecksumMismatch {
        /// The payload length announced by the header.
        len: u32,
        /// The checksum stored in the header.
        expected: u32,
        /// The checksum computed over the received length bytes and payload.
        actual: u32,
    },
    /// The stream ended inside a frame: part of a frame was received, then nothing more.
    #[error("stream ended inside a frame: {buffered} of {needed} bytes received")]
    Truncated {
        /// Bytes of the incomplete frame that were received (header included).
        buffered: usize,
        /// Total bytes of the incomplete frame ([`HEADER_LEN`] plus its payload length), or
        /// [`HEADER_LEN`] when not even the header was complete.
        needed: usize,
    },
}

/// The total length of the frame carrying a payload of `payload_len` bytes:
/// [`HEADER_LEN`]` + payload_len` (saturating at `usize::MAX`, which no frame reaches).
///
/// ```
/// use ipcprop::frame;
///
/// assert_eq!(frame::encoded_len(0), 8);
/// assert_eq!(frame::encoded_len(100), 108);
/// ```
#[must_use]
pub fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN.saturating_add(payload_len)
}

/// The header of the frame carrying `payload`.
///
/// Together with the payload itself it makes the whole frame, so a writer can send both with
/// one vectored write (`writev`) without copying the payload.
///
/// # Errors
///
/// [`FrameError::TooLarge`] if `payload` is longer than `u32::MAX` bytes, which the length
/// field cannot express.
///
/// ```
/// use ipcprop::frame;
///
/// let payload = b"hello";
/// let header = frame::header(payload)?;
/// assert_eq!(header[..4], 5u32.to_le_bytes());
/// assert_eq!([&header[..], payload].concat(), frame::encode(payload)?);
/// # Ok::<(), ipcprop::frame::FrameError>(())
/// ```
pub fn header(payload: &[u8]) -> Result<[u8; HEADER_LEN], FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len() as u64,
        max: FORMAT_MAX_LEN,
    })?;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload);
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&len_bytes);
    header[4..].copy_from_slice(&crc.to_le_bytes());
    Ok(header)
}

/// Appends the frame carrying `payload` (header, then payload) to `out`.
///
/// # Errors
///
/// [`FrameError::TooLarge`] if `payload` is longer than `u32::MAX` bytes; `out` is then left
/// unchanged. A decoder's maximum is not checked here: that is the receiver's setting.
///
/// ```
/// use ipcprop::frame;
///
/// let mut stream = Vec::new();
/// frame::encode_into(b"one", &mut stream)?;
/// frame::encode_into(b"two", &mut stream)?;
/// assert_eq!(stream.len(), 2 * frame::encoded_len(3));
/// # Ok::<(), ipcprop::frame::FrameError>(())
/// ```
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let header = header(payload)?;
    out.reserve(encoded_len(payload.len()));
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// The frame carrying `payload`, as a new vector.
///
/// # Errors
///
/// [`FrameError::TooLarge`] if `payload` is longer than `u32::MAX` bytes.
///
/// ```
/// use ipcprop::frame::{self, FrameDecoder};
///
/// let bytes = frame::encode(b"ping")?;
/// let mut decoder = FrameDecoder::new();
/// decoder.feed(&bytes);
/// assert_eq!(decoder.next_frame()?, Some(&b"ping"[..]));
/// # Ok::<(), ipcprop::frame::FrameError>(())
/// ```
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = header(payload)?;
    let mut out = Vec::with_capacity(encoded_len(payload.len()));
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(out)
}

/// The header-level view of the frame that starts at some offset of the buffer.
enum Head {
    /// Fewer than [`HEADER_LEN`] bytes are buffered from there.
    Partial,
    /// The header is complete and announces a frame of this many bytes in total.
    Frame(usize),
    /// The header is complete and announces a payload over the maximum.
    TooLarge(FrameError),
}

/// An incremental frame decoder: fed arbitrary chunks of a stream, it yields whole payloads.
///
/// Bytes go in with [`feed`](Self::feed) (a copy), or straight from a read into
/// [`spare`](Self::spare) followed by [`commit`](Self::commit) (no copy). Payloads come out of
/// [`next_frame`](Self::next_frame), borrowed from the decoder's buffer. At end of stream,
/// [`finish`](Self::finish) says whether the stream ended cleanly at a frame boundary.
///
/// The decoder checks each frame's length against its maximum as soon as the header is
/// complete, and its checksum once the frame is complete. The first error *poisons* it: the
/// stream has lost sync, so every later call to `next_frame` or `finish` returns that same
/// error, bytes fed afterwards are discarded, and the buffer is released.
///
/// ```
/// use ipcprop::frame::{self, FrameDecoder};
///
/// let stream = [frame::encode(b"ab")?, frame::encode(b"cde")?].concat();
/// let mut decoder = FrameDecoder::new();
/// let mut got = Vec::new();
/// for chunk in stream.chunks(3) {
///     decoder.feed(chunk);
///     while let Some(msg) = decoder.next_frame()? {
///         got.push(msg.to_vec());
///     }
/// }
/// decoder.finish()?;
/// assert_eq!(got, [&b"ab"[..], b"cde"]);
/// # Ok::<(), ipcprop::frame::FrameError>(())
/// ```
pub struct FrameDecoder {
    /// The buffer. Its length is the initialized, writable capacity; the bytes in
    /// `start..end` are received and not yet returned, those in `end..` are free space.
    buf: Vec<u8>,
    /// Offset of the first byte not yet returned as (part of) a frame.
    start: usize,
    /// Offset one past the last received byte.
    end: usize,
    /// The largest payload accepted.
    max_len: usize,
    /// The error that poisoned the decoder, if any.
    poison: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that accepts payloads of up to [`DEFAULT_MAX_FRAME_LEN`] bytes.
    ///
    /// ```
    /// use ipcprop::frame::{FrameDecoder, DEFAULT_MAX_FRAME_LEN};
    ///
    /// assert_eq!(FrameDecoder::new().max_message_len(), DEFAULT_MAX_FRAME_LEN);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::with_max_message_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A decoder that accepts payloads of up to `max` bytes: a frame announcing exactly `max`
    /// bytes is accepted, one announcing `max + 1` is [`FrameError::TooLarge`].
    ///
    /// Nothing is allocated until bytes arrive.
    ///
    /// ```
    /// use ipcprop::frame::{self, FrameDecoder, FrameError};
    ///
    /// let mut decoder = FrameDecoder::with_max_message_len(4);
    /// decoder.feed(&frame::encode(b"four")?);
    /// assert_eq!(decoder.next_frame()?, Some(&b"four"[..]));
    /// decoder.feed(&frame::encode(b"fiver")?);
    /// assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: 5, max: 4 }));
    /// # Ok::<(), ipcprop::frame::FrameError>(())
    /// ```
    #[must_use]
    pub fn with_max_message_len(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_len: max,
            poison: None,
        }
    }

    /// The largest payload length this decoder accepts.
    #[must_use]
    pub fn max_message_len(&self) -> usize {
        self.max_len
    }

    /// Bytes received and not yet returned as frames (after an error: none, as the decoder
    /// discards what it holds).
    ///
    /// ```
    /// use ipcprop::frame::FrameDecoder;
    ///
    /// let mut decoder = FrameDecoder::new();
    /// decoder.feed(&[1, 2, 3]);
    /// assert_eq!(decoder.buffered(), 3);
    /// ```
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes of memory the decoder holds for its buffer, used or not.
    ///
    /// It stays below about `HEADER_LEN + max_message_len` or the largest `want` passed to
    /// [`spare`](Self::spare), plus one chunk, for a caller that drains complete frames after
    /// each chunk; a length prefix over the maximum never makes it grow.
    ///
    /// ```
    /// use ipcprop::frame::FrameDecoder;
    ///
    /// let mut decoder = FrameDecoder::new();
    /// decoder.feed(&u32::MAX.to_le_bytes()); // announces a 4 GiB payload...
    /// decoder.feed(&[0; 4]);
    /// assert!(decoder.next_frame().is_err()); // ...refused,
    /// assert!(decoder.capacity() < 64); // and nothing was set aside for it.
    /// ```
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends `bytes`, the next chunk of the stream, to the buffer.
    ///
    /// Any chunk size works, from one byte to many frames; call
    /// [`next_frame`](Self::next_frame) until it returns `Ok(None)` after each chunk to keep
    /// the buffer small. Once the decoder is poisoned, bytes fed are discarded.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.poison.is_some() {
            return;
        }
        let n = bytes.len();
        let spare = self.spare(n);
        spare[..n].copy_from_slice(bytes);
        self.commit(n);
    }

    /// A writable slice of at least `want` bytes (at least one) right after the buffered
    /// bytes, to read into directly; then call [`commit`](Self::commit) with the number of
    /// bytes written.
    ///
    /// When the free space is short, consumed bytes are moved out of the way first, and only
    /// then does the buffer grow. The slice may be longer than `want`; it holds stale bytes,
    /// not zeroes. A good `want` is `read_hint().max(chunk)` for a chunk size such as 64 KiB.
    ///
    /// # Panics
    ///
    /// Only where any vector growth would: if `want` exceeds `isize::MAX` bytes.
    ///
    /// ```
    /// use std::io::Read;
    ///
    /// use ipcprop::frame::{self, FrameDecoder};
    ///
    /// let stream = frame::encode(b"zero copy")?;
    /// let mut src = &stream[..];
    /// let mut decoder = FrameDecoder::new();
    /// let n = src.read(decoder.spare(decoder.read_hint().max(4096)))?;
    /// decoder.commit(n);
    /// assert_eq!(decoder.next_frame()?, Some(&b"zero copy"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        let want = want.max(1);
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let needed = self.end.saturating_add(want);
            if self.buf.len() < needed {
                self.grow(needed);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Grows the buffer to at least `needed` bytes, geometrically up to one maximal frame.
    fn grow(&mut self, needed: usize) {
        let frame_cap = encoded_len(self.max_len);
        // Doubling amortizes small chunks but never goes past one maximal frame, so a caller
        // that drains frames after each chunk holds at most a frame plus a chunk. Past that
        // point the buffer holds whole frames the caller has not taken yet; keep doubling then
        // too, so such a caller pays amortized, not quadratic, copying.
        let limit = if self.end >= frame_cap {
            self.end.saturating_mul(2)
        } else {
            frame_cap
        };
        let target = needed.max(self.buf.len().saturating_mul(2).min(limit));
        self.buf.reserve_exact(target - self.buf.len());
        self.buf.resize(target, 0);
    }

    /// Marks `n` bytes of the slice last returned by [`spare`](Self::spare) as received.
    ///
    /// `n` is clamped to the free space, so a count larger than the slice never panics; it
    /// only loses the excess. Once the decoder is poisoned, committed bytes are discarded.
    pub fn commit(&mut self, n: usize) {
        if self.poison.is_some() {
            return;
        }
        self.end += n.min(self.buf.len() - self.end);
    }

    /// How many more bytes would complete the frame being assembled: the rest of its header
    /// if the header is incomplete, else the rest of its payload. Always at least 1.
    ///
    /// Whole frames still buffered are skipped over (they are waiting for
    /// [`next_frame`](Self::next_frame)). After an error, or when the header announces a
    /// payload over the maximum, the hint is 1: no room is worth reserving for such a frame.
    ///
    /// ```
    /// use ipcprop::frame::{self, FrameDecoder};
    ///
    /// let bytes = frame::encode(&[7; 100])?;
    /// let mut decoder = FrameDecoder::new();
    /// assert_eq!(decoder.read_hint(), 8);
    /// decoder.feed(&bytes[..3]);
    /// assert_eq!(decoder.read_hint(), 5);
    /// decoder.feed(&bytes[3..10]);
    /// assert_eq!(decoder.read_hint(), 98);
    /// # Ok::<(), ipcprop::frame::FrameError>(())
    /// ```
    #[must_use]
    pub fn read_hint(&self) -> usize {
        if self.poison.is_some() {
            return 1;
        }
        let mut at = self.start;
        loop {
            let have = self.end - at;
            match self.head_at(at) {
                Head::Partial => return HEADER_LEN - have,
                Head::TooLarge(_) => return 1,
                Head::Frame(total) if have < total => return total - have,
                Head::Frame(total) => at += total,
            }
        }
    }

    /// The payload of the next frame, if a whole frame is buffered; `Ok(None)` if more bytes
    /// are needed.
    ///
    /// The frame is consumed; its payload is borrowed from the decoder's buffer, without a
    /// copy, until the next call that changes the decoder.
    ///
    /// # Errors
    ///
    /// - [`FrameError::TooLarge`] as soon as a complete header announces a payload over
    ///   [`max_message_len`](Self::max_message_len), before any of that payload is buffered;
    /// - [`FrameError::ChecksumMismatch`] once a complete frame's checksum does not match;
    /// - after either, the same error again on every call: the decoder is poisoned.
    ///
    /// ```
    /// use ipcprop::frame::{self, FrameDecoder, FrameError};
    ///
    /// let mut bytes = frame::encode(b"payload")?;
    /// bytes[9] ^= 0x01; // corrupt one bit of the payload
    /// let mut decoder = FrameDecoder::new();
    /// decoder.feed(&bytes[..9]);
    /// assert_eq!(decoder.next_frame()?, None);
    /// decoder.feed(&bytes[9..]);
    /// let err = decoder.next_frame().unwrap_err();
    /// assert!(matches!(err, FrameError::ChecksumMismatch { len: 7, .. }));
    /// assert_eq!(decoder.next_frame(), Err(err)); // poisoned
    /// # Ok::<(), ipcprop::frame::FrameError>(())
    /// ```
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(err) = &self.poison {
            return Err(err.clone());
        }
        let start = self.start;
        let total = match self.head_at(start) {
            Head::Partial => return Ok(None),
            Head::TooLarge(err) => return Err(self.poison(err)),
            Head::Frame(total) if self.end - start < total => return Ok(None),
            Head::Frame(total) => total,
        };
        if let Err(err) = self.verify(start, total) {
            return Err(self.poison(err));
        }
        self.start += total;
        if self.start == self.end {
            // Nothing left: the next bytes go to the front, no compaction needed.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[start + HEADER_LEN..start + total]))
    }

    /// Checks, at end of stream, that the stream ended cleanly at a frame boundary.
    ///
    /// Meant to be called once [`next_frame`](Self::next_frame) returns `Ok(None)` and the
    /// source reports end of stream. It does not consume anything: whole frames still
    /// buffered are checked, and remain available from `next_frame`.
    ///
    /// # Errors
    ///
    /// - [`FrameError::Truncated`] if the stream ended inside a frame, with the bytes of
    ///   that frame received and the total it needed ([`HEADER_LEN`] if its header was
    ///   incomplete);
    /// - the error that poisoned the decoder, if any;
    /// - [`FrameError::TooLarge`] or [`FrameError::ChecksumMismatch`] for a bad frame still
    ///   buffered.
    ///
    /// ```
    /// use ipcprop::frame::{self, FrameDecoder, FrameError};
    ///
    /// let bytes = frame::encode(b"hello")?;
    /// let mut decoder = FrameDecoder::new();
    /// decoder.feed(&bytes[..11]);
    /// assert_eq!(decoder.next_frame()?, None);
    /// assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: 11, needed: 13 }));
    /// decoder.feed(&bytes[11..]);
    /// assert_eq!(decoder.next_frame()?, Some(&b"hello"[..]));
    /// assert_eq!(decoder.finish(), Ok(()));
    /// # Ok::<(), ipcprop::frame::FrameError>(())
    /// ```
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(err) = &self.poison {
            return Err(err.clone());
        }
        let mut at = self.start;
        while at < self.end {
            let have = self.end - at;
            match self.head_at(at) {
                Head::Partial => {
                    return Err(FrameError::Truncated {
                        buffered: have,
                        needed: HEADER_LEN,
                    })
                }
                Head::TooLarge(err) => return Err(err),
                Head::Frame(total) if have < total => {
                    return Err(FrameError::Truncated {
                        buffered: have,
                        needed: total,
                    })
                }
                Head::Frame(total) => {
                    self.verify(at, total)?;
                    at += total;
                }
            }
        }
        Ok(())
    }

    /// Reads the header of the frame starting at buffer offset `at` (`start <= at <= end`).
    fn head_at(&self, at: usize) -> Head {
        let Some(header) = self.buf[at..self.end].get(..HEADER_LEN) else {
            return Head::Partial;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let too_large = Head::TooLarge(FrameError::TooLarge {
            len: u64::from(len),
            max: self.max_len,
        });
        match usize::try_from(len) {
            Ok(len) if len <= self.max_len => match len.checked_add(HEADER_LEN) {
                Some(total) => Head::Frame(total),
                None => too_large,
            },
            _ => too_large,
        }
    }

    /// Checks the checksum of the complete frame of `total` bytes at buffer offset `at`.
    fn verify(&self, at: usize, total: usize) -> Result<(), FrameError> {
        let frame = &self.buf[at..at + total];
        let (header, payload) = frame.split_at(HEADER_LEN);
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let actual = crc32c::crc32c_append(crc32c::crc32c(&header[..4]), payload);
        if actual == expected {
            Ok(())
        } else {
            Err(FrameError::ChecksumMismatch {
                len,
                expected,
                actual,
            })
        }
    }

    /// Poisons the decoder with `err`, releases its buffer, and returns `err`.
    fn poison(&mut self, err: FrameError) -> FrameError {
        self.poison = Some(err.clone());
        self.buf = Vec::new();
        self.start = 0;
        self.end = 0;
        err
    }
}

impl Default for FrameDecoder {
    /// Same as [`FrameDecoder::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FrameDecoder {
    /// Shows the decoder's state, not the bytes it holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("max_len", &self.max_len)
            .field("buffered", &self.buffered())
            .field("capacity", &self.capacity())
            .field("poison", &self.poison)
            .finish_non_exhaustive()
    }
}
