//! Tests of the frame codec: the wire format against an independent reference, the decoder's
//! edge cases one by one, and properties over arbitrary messages, chunkings and corruptions.

use ipcprop::frame::{self, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use rstest::rstest;

/// A 12-byte message used by the edge cases; its frame is 20 bytes.
const TWELVE: &[u8] = b"twelve bytes";

/// CRC-32C computed bit by bit from the polynomial, independent of the `crc32c` crate.
fn reference_crc32c(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for &byte in parts.iter().flat_map(|part| part.iter()) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The frame of `payload` built from the documented layout with the reference CRC.
fn reference_frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let crc = reference_crc32c(&[&len, payload]).to_le_bytes();
    [&len[..], &crc, payload].concat()
}

/// A header announcing `len` payload bytes (with the checksum of the length bytes alone).
fn header_announcing(len: u32) -> [u8; HEADER_LEN] {
    let len = len.to_le_bytes();
    let crc = reference_crc32c(&[&len]).to_le_bytes();
    [
        len[0], len[1], len[2], len[3], crc[0], crc[1], crc[2], crc[3],
    ]
}

/// Encodes `messages` one after another into one stream.
fn encode_all(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for msg in messages {
        frame::encode_into(msg, &mut stream).unwrap();
    }
    stream
}

/// Takes every whole frame buffered in `decoder`.
fn drain(decoder: &mut FrameDecoder, out: &mut Vec<Vec<u8>>) -> Result<(), FrameError> {
    while let Some(msg) = decoder.next_frame()? {
        out.push(msg.to_vec());
    }
    Ok(())
}

/// Feeds `stream` in one go, drains, and finishes.
fn decode_whole(
    decoder: &mut FrameDecoder,
    stream: &[u8],
) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let mut out = Vec::new();
    decoder.feed(stream);
    let end = drain(decoder, &mut out).and_then(|()| decoder.finish());
    (out, end)
}

/// Upper bound on a draining decoder's memory: one maximal frame plus one chunk.
fn memory_bound(max: usize, largest_chunk: usize) -> usize {
    HEADER_LEN + max + largest_chunk
}

// ---------------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_crc_is_castagnoli() {
    // The standard check value of CRC-32C.
    assert_eq!(reference_crc32c(&[b"123456789"]), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn golden_frames() {
    assert_eq!(
        frame::encode(b"hi").unwrap(),
        [0x02, 0, 0, 0, 0x59, 0x72, 0x5a, 0x88, b'h', b'i']
    );
    assert_eq!(
        frame::encode(b"").unwrap(),
        [0, 0, 0, 0, 0xc7, 0x4b, 0x67, 0x48]
    );
}

#[rstest]
#[case::empty(0)]
#[case::one(1)]
#[case::small(12)]
#[case::several_blocks(1000)]
#[case::needs_two_length_bytes(300)]
fn encoding_matches_the_documented_layout(#[case] len: usize) {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let encoded = frame::encode(&payload).unwrap();
    assert_eq!(encoded, reference_frame(&payload));
    assert_eq!(encoded.len(), frame::encoded_len(len));
    assert_eq!(encoded.len(), HEADER_LEN + len);
    let header = frame::header(&payload).unwrap();
    assert_eq!(encoded[..HEADER_LEN], header);
    assert_eq!(encoded[HEADER_LEN..], payload[..]);
}

#[test]
fn encode_into_appends() {
    let mut out = b"existing".to_vec();
    frame::encode_into(b"abc", &mut out).unwrap();
    frame::encode_into(b"", &mut out).unwrap();
    let expected = [
        &b"existing"[..],
        &reference_frame(b"abc"),
        &reference_frame(b""),
    ]
    .concat();
    assert_eq!(out, expected);
}

#[test]
fn encoded_len_saturates_instead_of_overflowing() {
    assert_eq!(frame::encoded_len(0), HEADER_LEN);
    assert_eq!(frame::encoded_len(usize::MAX), usize::MAX);
}

/// A payload over `u32::MAX` bytes cannot be framed. The 4 GiB buffer is zero-allocated and
/// never touched, so it costs address space, not memory.
#[cfg(target_pointer_width = "64")]
#[test]
fn payload_over_u32_max_is_refused_by_the_encoder() {
    let len = u32::MAX as usize + 1;
    let huge = vec![0u8; len];
    let too_large = FrameError::TooLarge {
        len: len as u64,
        max: u32::MAX as usize,
    };
    assert_eq!(frame::header(&huge), Err(too_large.clone()));
    assert_eq!(frame::encode(&huge), Err(too_large.clone()));
    let mut out = b"untouched".to_vec();
    assert_eq!(frame::encode_into(&huge, &mut out), Err(too_large));
    assert_eq!(out, b"untouched");
}

// ---------------------------------------------------------------------------------------------
// Decoder edge cases
// ---------------------------------------------------------------------------------------------

#[rstest]
#[case::zero_length(0)]
#[case::one_byte(1)]
#[case::small(12)]
#[case::exactly_max(1000)]
fn decodes_edge_sizes(#[case] len: usize) {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let encoded = frame::encode(&payload).unwrap();

    // All at once.
    let mut decoder = FrameDecoder::with_max_message_len(1000);
    let (frames, end) = decode_whole(&mut decoder, &encoded);
    assert_eq!(frames, std::slice::from_ref(&payload));
    assert_eq!(end, Ok(()));
    assert_eq!(decoder.buffered(), 0);

    // One byte at a time: nothing before the last byte, the payload on it.
    let mut decoder = FrameDecoder::with_max_message_len(1000);
    let (last, init) = encoded.split_last().unwrap();
    for byte in init {
        decoder.feed(std::slice::from_ref(byte));
        assert_eq!(decoder.next_frame(), Ok(None));
    }
    decoder.feed(std::slice::from_ref(last));
    assert_eq!(decoder.next_frame(), Ok(Some(&payload[..])));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.finish(), Ok(()));
}

#[rstest]
#[case::max_plus_one(1000, 1001)]
#[case::zero_max(0, 1)]
#[case::default_max_plus_one(DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_FRAME_LEN as u32 + 1)]
#[case::u32_max_with_default_max(DEFAULT_MAX_FRAME_LEN, u32::MAX)]
fn oversized_length_is_refused_from_the_header_alone(#[case] max: usize, #[case] len: u32) {
    let mut decoder = FrameDecoder::with_max_message_len(max);
    let header = header_announcing(len);
    decoder.feed(&header[..HEADER_LEN - 1]);
    assert_eq!(decoder.next_frame(), Ok(None));
    decoder.feed(&header[HEADER_LEN - 1..]);

    // Before the check, nothing has been reserved for the payload, nor would a reader be
    // told to reserve room for it.
    assert!(decoder.capacity() <= 64, "capacity {}", decoder.capacity());
    assert_eq!(decoder.read_hint(), 1);
    let expected = FrameError::TooLarge {
        len: u64::from(len),
        max,
    };
    assert_eq!(decoder.finish(), Err(expected.clone()));

    assert_eq!(decoder.next_frame(), Err(expected.clone()));
    assert_eq!(
        decoder.capacity(),
        0,
        "a poisoned decoder releases its buffer"
    );
    // The payload arriving afterwards changes nothing.
    decoder.feed(&[0xab; 4096]);
    assert_eq!(
        decoder.capacity(),
        0,
        "a poisoned decoder discards what it is fed"
    );
    assert_eq!(decoder.next_frame(), Err(expected.clone()));
    assert_eq!(decoder.finish(), Err(expected));
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn exactly_max_is_accepted_and_one_more_refused() {
    let mut decoder = FrameDecoder::with_max_message_len(1000);
    decoder.feed(&header_announcing(1000));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.read_hint(), 1000);

    let mut decoder = FrameDecoder::with_max_message_len(1000);
    decoder.feed(&header_announcing(1001));
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::TooLarge {
            len: 1001,
            max: 1000
        })
    ));
}

#[cfg(target_pointer_width = "64")]
#[test]
fn a_maximum_above_the_format_limit_accepts_any_length() {
    let mut decoder = FrameDecoder::with_max_message_len(usize::MAX);
    decoder.feed(&header_announcing(u32::MAX));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.read_hint(), u32::MAX as usize);
    assert_eq!(
        decoder.finish(),
        Err(FrameError::Truncated {
            buffered: HEADER_LEN,
            needed: HEADER_LEN + u32::MAX as usize,
        })
    );
}

/// Flips one bit of the frame of [`TWELVE`]; the error names the header's length and checksum
/// (after the flip) and the checksum of what was received.
#[rstest]
#[case::payload_first_byte(8, 0, 12)]
#[case::payload_middle(13, 4, 12)]
#[case::payload_last_byte(19, 7, 12)]
#[case::length_shrunk_to_4(0, 3, 4)]
#[case::length_shrunk_to_8(0, 2, 8)]
#[case::crc_lowest_bit(4, 0, 12)]
#[case::crc_highest_bit(7, 7, 12)]
fn a_flipped_bit_is_a_checksum_mismatch(
    #[case] byte: usize,
    #[case] bit: u8,
    #[case] header_len: u32,
) {
    let mut bytes = frame::encode(TWELVE).unwrap();
    bytes[byte] ^= 1 << bit;
    let announced = header_len as usize;
    let expected = FrameError::ChecksumMismatch {
        len: header_len,
        expected: u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
        actual: reference_crc32c(&[&bytes[..4], &bytes[HEADER_LEN..HEADER_LEN + announced]]),
    };
    let mut decoder = FrameDecoder::new();
    decoder.feed(&bytes);
    assert_eq!(decoder.next_frame(), Err(expected.clone()));
    assert_eq!(decoder.next_frame(), Err(expected.clone()));
    assert_eq!(decoder.finish(), Err(expected));
}

#[rstest]
#[case::nothing(0, Ok(()))]
#[case::cut_after_one_byte(1, Err(FrameError::Truncated { buffered: 1, needed: 8 }))]
#[case::cut_in_header(5, Err(FrameError::Truncated { buffered: 5, needed: 8 }))]
#[case::header_only(8, Err(FrameError::Truncated { buffered: 8, needed: 20 }))]
#[case::cut_in_payload(15, Err(FrameError::Truncated { buffered: 15, needed: 20 }))]
#[case::one_byte_short(19, Err(FrameError::Truncated { buffered: 19, needed: 20 }))]
#[case::whole(20, Ok(()))]
fn a_cut_stream_is_reported_by_finish(
    #[case] cut: usize,
    #[case] expected: Result<(), FrameError>,
) {
    let first = frame::encode(b"first").unwrap();
    let second = frame::encode(TWELVE).unwrap();
    let stream = [&first[..], &second[..cut]].concat();

    let mut decoder = FrameDecoder::new();
    let (frames, end) = decode_whole(&mut decoder, &stream);
    let mut expected_frames = vec![b"first".to_vec()];
    if cut == second.len() {
        expected_frames.push(TWELVE.to_vec());
    }
    assert_eq!(frames, expected_frames);
    assert_eq!(end, expected);
    if let Err(FrameError::Truncated { buffered, .. }) = expected {
        assert_eq!(decoder.buffered(), buffered);
        // Not poisoned: the rest of the frame may still come.
        decoder.feed(&second[cut..]);
        assert_eq!(decoder.next_frame(), Ok(Some(TWELVE)));
        assert_eq!(decoder.finish(), Ok(()));
    }
}

#[rstest]
#[case::by_checksum_mismatch(false)]
#[case::by_oversized_length(true)]
fn a_poisoned_decoder_keeps_returning_its_error(#[case] oversized: bool) {
    let mut bytes = frame::encode(TWELVE).unwrap();
    if oversized {
        bytes[3] = 0x80;
    } else {
        bytes[10] ^= 0x10;
    }
    let good = frame::encode(b"good").unwrap();
    let mut decoder = FrameDecoder::with_max_message_len(1000);
    decoder.feed(&good);
    decoder.feed(&bytes);
    decoder.feed(&good);
    assert_eq!(decoder.next_frame(), Ok(Some(&b"good"[..])));
    let err = decoder.next_frame().unwrap_err();
    assert_eq!(
        matches!(err, FrameError::TooLarge { .. }),
        oversized,
        "{err:?}"
    );
    assert_eq!(decoder.buffered(), 0);
    for _ in 0..3 {
        decoder.feed(&good);
        decoder.spare(good.len())[..good.len()].copy_from_slice(&good);
        decoder.commit(good.len());
        assert_eq!(decoder.next_frame(), Err(err.clone()));
        assert_eq!(decoder.finish(), Err(err.clone()));
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.read_hint(), 1);
    }
}

#[rstest]
#[case::too_large(
    FrameError::TooLarge { len: 20_000_000, max: 16_777_216 },
    "frame length 20000000 exceeds the maximum of 16777216 bytes"
)]
#[case::checksum_mismatch(
    FrameError::ChecksumMismatch { len: 12, expected: 0xdead_beef, actual: 0x00c0_ffee },
    "frame checksum mismatch: header says 0xdeadbeef, payload of 12 bytes hashes to 0x00c0ffee"
)]
#[case::truncated(
    FrameError::Truncated { buffered: 5, needed: 13 },
    "stream ended inside a frame: 5 of 13 bytes received"
)]
fn errors_display_their_numbers(#[case] err: FrameError, #[case] expected: &str) {
    assert_eq!(err.to_string(), expected);
}

#[test]
fn constructors_and_configuration() {
    assert_eq!(FrameDecoder::new().max_message_len(), DEFAULT_MAX_FRAME_LEN);
    assert_eq!(
        FrameDecoder::default().max_message_len(),
        DEFAULT_MAX_FRAME_LEN
    );
    assert_eq!(FrameDecoder::with_max_message_len(7).max_message_len(), 7);
    let decoder = FrameDecoder::new();
    assert_eq!(decoder.buffered(), 0);
    assert_eq!(decoder.capacity(), 0);
    assert_eq!(decoder.finish(), Ok(()));
    assert_eq!(HEADER_LEN, 8);
    assert_eq!(DEFAULT_MAX_FRAME_LEN, 16 << 20);
}

#[test]
fn read_hint_tracks_the_frame_being_assembled() {
    let first = frame::encode(&[1; 100]).unwrap();
    let second = frame::encode(&[2; 30]).unwrap();
    let stream = [&first[..], &second[..]].concat();
    let mut decoder = FrameDecoder::new();
    let mut fed = 0;
    let mut feed_to = |decoder: &mut FrameDecoder, to: usize| {
        decoder.feed(&stream[fed..to]);
        fed = to;
    };
    assert_eq!(decoder.read_hint(), 8);
    feed_to(&mut decoder, 3);
    assert_eq!(decoder.read_hint(), 5);
    feed_to(&mut decoder, 8);
    assert_eq!(decoder.read_hint(), 100);
    feed_to(&mut decoder, 50);
    assert_eq!(decoder.read_hint(), 58);
    feed_to(&mut decoder, 108);
    // The first frame is whole but not taken yet: the hint is about the second.
    assert_eq!(decoder.read_hint(), 8);
    feed_to(&mut decoder, 112);
    assert_eq!(decoder.read_hint(), 4);
    feed_to(&mut decoder, 120);
    assert_eq!(decoder.read_hint(), 26);
    feed_to(&mut decoder, 146);
    assert_eq!(decoder.read_hint(), 8);
    assert_eq!(decoder.next_frame(), Ok(Some(&[1; 100][..])));
    assert_eq!(decoder.next_frame(), Ok(Some(&[2; 30][..])));
    assert_eq!(decoder.read_hint(), 8);
}

#[test]
fn commit_beyond_the_spare_slice_is_clamped() {
    let mut decoder = FrameDecoder::new();
    let spare_len = decoder.spare(4).len();
    assert!(spare_len >= 4);
    decoder.commit(usize::MAX);
    assert_eq!(decoder.buffered(), spare_len);
    decoder.commit(1);
    assert_eq!(decoder.buffered(), spare_len);
}

#[test]
fn spare_with_zero_want_still_gives_room() {
    let mut decoder = FrameDecoder::new();
    assert!(!decoder.spare(0).is_empty());
}

#[test]
fn capacity_is_the_memory_held() {
    let mut decoder = FrameDecoder::new();
    assert_eq!(decoder.capacity(), 0);
    decoder.feed(&[1, 2, 3]);
    assert!(decoder.capacity() >= 3, "capacity {}", decoder.capacity());
    let free = decoder.spare(100).len();
    assert!(free >= 100);
    assert!(decoder.capacity() >= decoder.buffered() + free);
}

/// While the free space after the buffered bytes suffices, `spare` moves nothing; when it does
/// not, the bytes already taken are moved out of the way before the buffer grows.
#[test]
fn spare_compacts_only_when_needed_and_before_growing() {
    let stream = [
        frame::encode(b"hi").unwrap(),
        frame::encode(b"next").unwrap(),
    ]
    .concat();
    let mut decoder = FrameDecoder::new();
    let room = decoder.spare(100).len();
    let capacity = decoder.capacity();
    // The first frame (10 bytes) and 5 bytes of the second; the first is taken.
    decoder.spare(15)[..15].copy_from_slice(&stream[..15]);
    decoder.commit(15);
    assert_eq!(decoder.next_frame(), Ok(Some(&b"hi"[..])));
    assert_eq!(decoder.buffered(), 5);
    let free = room - 15;
    // Exactly the free space: it is handed out as it is, the taken frame still before it.
    assert_eq!(decoder.spare(free).len(), free);
    assert_eq!(decoder.spare(1).len(), free);
    // More than that, but no more than compaction frees: the taken 10 bytes are reused.
    assert_eq!(decoder.spare(free + 10).len(), free + 10);
    assert_eq!(
        decoder.capacity(),
        capacity,
        "grew though compaction sufficed"
    );
    assert_eq!(decoder.buffered(), 5);
    // The buffered bytes moved intact; the rest of the second frame completes it.
    decoder.spare(7)[..7].copy_from_slice(&stream[15..]);
    decoder.commit(7);
    assert_eq!(decoder.next_frame(), Ok(Some(&b"next"[..])));
    assert_eq!(decoder.finish(), Ok(()));
}

/// A caller that feeds one byte at a time and takes no frame: the buffer grows geometrically,
/// at most doubling each time, below one maximal frame and past it, so the copying stays
/// amortized. Then every frame is still there.
#[test]
fn growth_is_geometric_even_without_draining() {
    let messages: Vec<Vec<u8>> = (0..400u32).map(|i| vec![i as u8; 16]).collect();
    let stream = encode_all(&messages);
    let mut decoder = FrameDecoder::with_max_message_len(16);
    let mut capacities = vec![decoder.capacity()];
    for byte in &stream {
        decoder.feed(std::slice::from_ref(byte));
        if capacities.last() != Some(&decoder.capacity()) {
            capacities.push(decoder.capacity());
        }
    }
    assert!(capacities.len() <= 20, "{capacities:?}");
    for pair in capacities.windows(2).skip(1) {
        assert!(pair[1] <= 2 * pair[0], "{capacities:?}");
    }
    assert!(*capacities.last().unwrap() <= 2 * stream.len());
    let mut frames = Vec::new();
    drain(&mut decoder, &mut frames).unwrap();
    assert_eq!(frames, messages);
    assert_eq!(decoder.finish(), Ok(()));
}

#[test]
fn finish_checks_whole_frames_left_buffered() {
    let good = frame::encode(b"left").unwrap();
    let mut bad = frame::encode(b"bad").unwrap();
    bad[9] ^= 1;

    let mut decoder = FrameDecoder::new();
    decoder.feed(&good);
    decoder.feed(&good);
    assert_eq!(decoder.finish(), Ok(()));
    assert_eq!(decoder.next_frame(), Ok(Some(&b"left"[..])));
    assert_eq!(decoder.next_frame(), Ok(Some(&b"left"[..])));

    decoder.feed(&good);
    decoder.feed(&bad);
    assert!(matches!(
        decoder.finish(),
        Err(FrameError::ChecksumMismatch { len: 3, .. })
    ));
    // `finish` consumed nothing.
    assert_eq!(decoder.next_frame(), Ok(Some(&b"left"[..])));
    assert!(decoder.next_frame().is_err());
}

#[test]
fn reading_through_spare_reuses_the_buffer() {
    let message = [0x5a; 50];
    let stream = frame::encode(&message).unwrap();
    let mut decoder = FrameDecoder::with_max_message_len(100);
    let mut received = 0;
    // Reads of 37 bytes never line up with the 58-byte frames.
    for step in 0..10_000 {
        let offset = (step * 37) % stream.len();
        let chunk = [&stream[offset..], &stream[..]].concat();
        let spare = decoder.spare(64);
        spare[..37].copy_from_slice(&chunk[..37]);
        decoder.commit(37);
        while let Some(msg) = decoder.next_frame().unwrap() {
            assert_eq!(msg, message);
            received += 1;
        }
        assert!(decoder.capacity() <= memory_bound(100, 64));
    }
    assert_eq!(received, 10_000 * 37 / stream.len());
}

#[test]
fn debug_shows_state_not_bytes() {
    let mut decoder = FrameDecoder::with_max_message_len(10);
    decoder.feed(&[0xee; 3]);
    let debug = format!("{decoder:?}");
    assert!(debug.contains("max_len: 10"), "{debug}");
    assert!(debug.contains("buffered: 3"), "{debug}");
    assert!(!debug.contains("238"), "{debug}");
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// The decoder maximum used by the round-trip properties; the largest messages reach it.
const PROP_MAX: usize = 4096;

/// A message: empty, one byte, small, or a few KiB (up to [`PROP_MAX`]).
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        3 => vec(any::<u8>(), 1),
        4 => vec(any::<u8>(), 2..64),
        1 => vec(any::<u8>(), 1024..=PROP_MAX),
    ]
}

/// Chunk sizes, cycled over: tiny, around a header, or large.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        vec(1usize..=3, 1..8),
        vec(1usize..=300, 1..16),
        vec(1usize..=10_000, 1..8),
    ]
}

/// Feeds `stream` to `decoder` in chunks of the sizes given (cycled), draining after each
/// chunk, and checks the memory bound. Returns the frames and the first error.
fn feed_in_chunks(
    decoder: &mut FrameDecoder,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let largest = sizes.iter().copied().max().unwrap_or(1);
    let bound = memory_bound(decoder.max_message_len(), largest);
    let mut frames = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        decoder.feed(chunk);
        assert!(
            decoder.capacity() <= bound,
            "capacity {} > {bound}",
            decoder.capacity()
        );
        if let Err(err) = drain(decoder, &mut frames) {
            return (frames, Err(err));
        }
    }
    let end = decoder.finish();
    (frames, end)
}

proptest! {
    #[test]
    fn round_trip_through_feed(
        messages in vec(message(), 0..16),
        sizes in chunk_sizes(),
    ) {
        let stream = encode_all(&messages);
        let mut decoder = FrameDecoder::with_max_message_len(PROP_MAX);
        let (frames, end) = feed_in_chunks(&mut decoder, &stream, &sizes);
        prop_assert_eq!(frames, messages);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn round_trip_through_spare_and_commit(
        messages in vec(message(), 0..16),
        steps in vec((1usize..=10_000, 1usize..=5_000, any::<bool>()), 1..16),
    ) {
        let stream = encode_all(&messages);
        let mut decoder = FrameDecoder::with_max_message_len(PROP_MAX);
        let mut frames = Vec::new();
        let mut largest_want = 0;
        let mut pos = 0;
        for &(want, fill, use_hint) in steps.iter().cycle() {
            if pos == stream.len() {
                break;
            }
            let want = if use_hint { decoder.read_hint().max(want) } else { want };
            largest_want = largest_want.max(want);
            let spare = decoder.spare(want);
            prop_assert!(spare.len() >= want);
            let n = fill.min(stream.len() - pos).min(spare.len());
            spare[..n].copy_from_slice(&stream[pos..pos + n]);
            // Junk past what is committed must never be read as stream bytes.
            let junk_end = spare.len().min(n + 64);
            spare[n..junk_end].fill(0xa5);
            decoder.commit(n);
            pos += n;
            prop_assert!(decoder.capacity() <= memory_bound(PROP_MAX, largest_want));
            drain(&mut decoder, &mut frames).unwrap();
        }
        prop_assert_eq!(frames, messages);
        prop_assert_eq!(decoder.finish(), Ok(()));
        prop_assert_eq!(decoder.buffered(), 0);
    }

    /// A stream whose message at `index` is over the maximum yields the messages before it,
    /// then `TooLarge` as soon as that message's header is complete.
    #[test]
    fn an_oversized_message_is_refused_at_its_header(
        mut messages in vec(vec(any::<u8>(), 0..100), 1..8),
        index in any::<Index>(),
        excess in 1usize..50,
        max in 0usize..100,
        sizes in chunk_sizes(),
    ) {
        for msg in &mut messages {
            msg.truncate(max);
        }
        let at = index.index(messages.len());
        messages[at] = vec![0x77; max + excess];
        let stream = encode_all(&messages);
        let header_end: usize = messages[..at]
            .iter()
            .map(|m| frame::encoded_len(m.len()))
            .sum::<usize>() + HEADER_LEN;

        let mut decoder = FrameDecoder::with_max_message_len(max);
        let mut frames = Vec::new();
        let mut fed = 0;
        let mut result = Ok(());
        for &size in sizes.iter().cycle() {
            let chunk = &stream[fed..(fed + size).min(stream.len())];
            fed += chunk.len();
            decoder.feed(chunk);
            result = drain(&mut decoder, &mut frames);
            if result.is_err() {
                break;
            }
            prop_assert!(fed < header_end, "no error once the header was complete");
        }
        prop_assert!(fed >= header_end);
        prop_assert_eq!(&frames[..], &messages[..at]);
        let too_large = FrameError::TooLarge { len: (max + excess) as u64, max };
        prop_assert_eq!(result, Err(too_large.clone()));
        prop_assert_eq!(decoder.finish(), Err(too_large));
    }

    /// Arbitrary bytes, or frames mangled and cut at random, never make the decoder panic,
    /// exceed its memory bound, or return a payload over its maximum; an error is final.
    #[test]
    fn arbitrary_input_is_handled(
        stream in prop_oneof![
            vec(any::<u8>(), 0..2048),
            (
                vec(vec(any::<u8>(), 0..600), 0..8),
                vec((any::<Index>(), 1u8..=255), 0..4),
                any::<Index>(),
            )
                .prop_map(|(messages, flips, cut)| {
                    let mut stream = encode_all(&messages);
                    if !stream.is_empty() {
                        for (at, mask) in flips {
                            let at = at.index(stream.len());
                            stream[at] ^= mask;
                        }
                    }
                    stream.truncate(cut.index(stream.len() + 1));
                    stream
                }),
        ],
        max in 0usize..=512,
        sizes in chunk_sizes(),
    ) {
        let mut decoder = FrameDecoder::with_max_message_len(max);
        let (frames, end) = feed_in_chunks(&mut decoder, &stream, &sizes);
        for frame in &frames {
            prop_assert!(frame.len() <= max);
        }
        let delivered: usize = frames.iter().map(|f| frame::encoded_len(f.len())).sum();
        prop_assert!(delivered <= stream.len());
        // Whatever was delivered is exactly the start of the stream, frame by frame.
        prop_assert_eq!(&encode_all(&frames)[..], &stream[..delivered]);
        match end {
            Ok(()) => {
                prop_assert_eq!(delivered, stream.len());
                prop_assert_eq!(decoder.buffered(), 0);
            }
            Err(FrameError::Truncated { buffered, needed }) => {
                prop_assert!(buffered < needed);
                prop_assert_eq!(buffered, decoder.buffered());
                prop_assert_eq!(delivered + buffered, stream.len());
            }
            Err(err) => {
                // Poisoned: the same error from now on, whatever comes next.
                decoder.feed(&frame::encode(b"after").unwrap());
                prop_assert_eq!(decoder.next_frame(), Err(err.clone()));
                prop_assert_eq!(decoder.finish(), Err(err));
                prop_assert_eq!(decoder.buffered(), 0);
            }
        }
    }

    /// Any single bit flip in the frame of one message is detected, and never decodes.
    #[test]
    fn a_single_bit_flip_is_always_detected(
        message in vec(any::<u8>(), 0..512),
        bit in any::<Index>(),
        small_max in any::<bool>(),
    ) {
        let max = if small_max { 1024 } else { DEFAULT_MAX_FRAME_LEN };
        let mut bytes = frame::encode(&message).unwrap();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);

        let mut decoder = FrameDecoder::with_max_message_len(max);
        let (frames, end) = decode_whole(&mut decoder, &bytes);
        prop_assert!(frames.is_empty(), "a corrupted frame decoded: {:?}", frames);
        let err = end.unwrap_err();

        let announced = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let stored_crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        if bit >= 32 || announced < message.len() {
            // The payload, the checksum, or a length shrunk within the bytes received.
            prop_assert_eq!(err, FrameError::ChecksumMismatch {
                len: announced as u32,
                expected: stored_crc,
                actual: reference_crc32c(&[&bytes[..4], &bytes[8..8 + announced]]),
            });
        } else if announced > max {
            prop_assert_eq!(err, FrameError::TooLarge { len: announced as u64, max });
        } else {
            prop_assert_eq!(err, FrameError::Truncated {
                buffered: bytes.len(),
                needed: HEADER_LEN + announced,
            });
        }
    }
}
