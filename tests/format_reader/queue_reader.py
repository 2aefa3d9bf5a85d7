#!/usr/bin/env python3
"""Independent reader of the ipcprop file queue, format version 2.

Written from docs/FORMAT.md section 3 ("File queue (`ipcprop::queue`), format version 2")
alone, without looking at the crate's sources, to test the document's claim that "a reader
or writer in another language needs nothing else". Python 3 standard library only.

Usage:
    queue_reader.py FILE            prints one JSON object for FILE
    queue_reader.py FILE1 FILE2 ... prints one JSON object per line, one per file, in order
                                    (one interpreter for many files; same output per file)
    queue_reader.py -               the same for the paths read from stdin, one per line

The output is either
    {"status": "ok", "messages": [hex, ...], "head_seq": N, "next_seq": N,
     "recovery": {...}, ...}
or
    {"status": "refused", "kind": "corrupt" | "unsupported_version" | "not_a_queue",
     "reason": "..."}

"messages" are the payloads from the head to the end of the records, oldest first, without
the messages marked consumed out of order (lease state 2); messages taken under a lease
(state 1) are listed, since no lease holder is alive for a copy of a file.

"recovery" says what a writer holding the lock would repair (the reader itself only reads):
    "initialized":     the file had 0 bytes; the first opener writes the initial image.
    "torn_tail":       null, or {"offset", "bytes", "seq"}: the file would be cut at
                       `offset`, removing `bytes` bytes; `seq` is where the next push goes.
    "header_fallback": null, or the unusable slot, why, and the head before and after the
                       walk over `head_gap` ("Recovering a lost header slot").

Section references in comments ("FORMAT 3 ...") point at the part of the document a rule
comes from. Where the document is silent the comment says "ASSUMPTION" and what was chosen.
"""

import json
import struct
import sys

# --- CRC-32C (FORMAT 1: Castagnoli, reflected, init 0xFFFFFFFF, final xor 0xFFFFFFFF) ----

_POLY_REFLECTED = 0x82F63B78  # 0x1EDC6F41 bit-reversed


def _make_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def _crc32c_raw(data):
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# A pure function of its input, so large inputs are memoized: many damaged copies of one
# file share their large records, and the table loop is slow in Python.
_CRC_CACHE = {}
_CRC_CACHE_MIN = 4096
_CRC_CACHE_MAX_ENTRIES = 256


def crc32c(data):
    if len(data) < _CRC_CACHE_MIN:
        return _crc32c_raw(data)
    key = bytes(data)
    crc = _CRC_CACHE.get(key)
    if crc is None:
        crc = _crc32c_raw(key)
        if len(_CRC_CACHE) >= _CRC_CACHE_MAX_ENTRIES:
            _CRC_CACHE.clear()
        _CRC_CACHE[key] = crc
    return crc


def _self_check():
    # FORMAT 1: the frame of b"hi" is `02 00 00 00 | 59 72 5a 88 | 68 69`, its crc over
    # the 4 length bytes followed by the payload.
    assert crc32c(b"\x02\x00\x00\x00hi") == 0x885A7259
    # The standard check value of CRC-32C.
    assert crc32c(b"123456789") == 0xE3069283


# --- Layout (FORMAT 3) -------------------------------------------------------------------

SLOT_A = 0
SLOT_B = 4096
DATA_START = 8192
MIN_LEN = 4160  # slot B's fixed part
MAGIC = b"ipcpqueu"  # u64 LE 0x75657571_70637069
VERSION = 2
SLOT_FIXED = 64
LEASE_ENTRY = 16
MAX_LEASES = 252
RECORD_HEADER = 24
HEAD_GAP_UNKNOWN = 0xFFFFFFFF


class Refused(Exception):
    def __init__(self, kind, reason):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Slot:
    """A usable header slot (FORMAT 3, "Header slot")."""

    def __init__(self, name, generation, epoch, head_offset, head_seq, leases):
        self.name = name
        self.generation = generation
        self.epoch = epoch
        self.head_offset = head_offset
        self.head_seq = head_seq
        self.leases = leases  # list of (seq, holder, state), sorted by seq


def read_slot(data, name, base):
    """Returns (Slot, None) for a usable slot, (None, reason) for an unusable one, and raises
    Refused for a slot with the magic and another version (FORMAT 3, "Reading a slot")."""
    file_len = len(data)
    # The fixed part of both slots is in any file of at least MIN_LEN bytes (checked first).
    magic = data[base : base + 8]
    # 1. magic
    if magic != MAGIC:
        if magic == b"\x00" * 8:
            return None, "slot %s: no magic (all-zero)" % name
        return None, "slot %s: bad magic %s" % (name, magic.hex())
    # 2. lease_count, extent in the file, crc (over bytes 12 .. end: the version included).
    (crc, version, lease_count) = struct.unpack_from("<III", data, base + 8)
    if lease_count > MAX_LEASES:
        return None, "slot %s: lease_count %d > %d" % (name, lease_count, MAX_LEASES)
    end = base + SLOT_FIXED + LEASE_ENTRY * lease_count
    if end > file_len:
        return None, "slot %s: %d lease entries end at %d, beyond the file's %d bytes" % (
            name,
            lease_count,
            end,
            file_len,
        )
    actual = crc32c(memoryview(data)[base + 12 : end])
    if actual != crc:
        return None, "slot %s: crc %08x, computed %08x" % (name, crc, actual)
    # 3. version: an intact slot of another version refuses the whole file, never falls
    # back to the other slot.
    if version != VERSION:
        raise Refused(
            "unsupported_version",
            "slot %s has the magic and version %d (this reader knows version %d)"
            % (name, version, VERSION),
        )
    # The reserved fields (20, 56) are not checked: "readers ignore it".
    (generation, epoch, head_offset, head_seq) = struct.unpack_from("<QQQQ", data, base + 24)
    leases = []
    prev = None
    for i in range(lease_count):
        seq, holder, state = struct.unpack_from("<QII", data, base + SLOT_FIXED + LEASE_ENTRY * i)
        if state not in (1, 2):
            return None, "slot %s: lease entry %d has state %d" % (name, i, state)
        if (state == 1 and holder > 4095) or (state == 2 and holder != 0):
            return None, "slot %s: lease entry %d names holder %d" % (name, i, holder)
        if seq < head_seq:
            return None, "slot %s: lease entry %d seq %d below head_seq %d" % (
                name,
                i,
                seq,
                head_seq,
            )
        if prev is not None and seq <= prev:
            return None, "slot %s: lease entry %d seq %d not above %d" % (name, i, seq, prev)
        prev = seq
        leases.append((seq, holder, state))
    if head_offset % 8 != 0 or head_offset < DATA_START:
        return None, "slot %s: head_offset %d not a multiple of 8 at or after %d" % (
            name,
            head_offset,
            DATA_START,
        )
    return Slot(name, generation, epoch, head_offset, head_seq, leases), None


def record_at(data, offset):
    """The record header at `offset` if the record fits (FORMAT 3, "Record"): returns
    (crc, length, seq, batch_index, head_gap), or None if it does not fit."""
    file_len = len(data)
    if offset + RECORD_HEADER > file_len:
        return None
    fields = struct.unpack_from("<IIQII", data, offset)
    if offset + RECORD_HEADER + fields[1] > file_len:
        return None
    return fields


def crc_ok(data, offset, fields):
    crc, length = fields[0], fields[1]
    return crc32c(memoryview(data)[offset + 4 : offset + RECORD_HEADER + length]) == crc


def record_size(length):
    return (RECORD_HEADER + length + 7) & ~7


def walk(data, head_offset, head_seq):
    """Consecutive valid records from the head (FORMAT 3, "Reading the queue").
    Returns (records, tail_offset, next_seq); records are (offset, seq, head_gap, payload)."""
    records = []
    offset, expected = head_offset, head_seq
    while True:
        fields = record_at(data, offset)
        if fields is None or fields[2] != expected or not crc_ok(data, offset, fields):
            break
        length = fields[1]
        # ASSUMPTION (gap G5): the padding bytes after the payload are not checked (they are
        # "written as 0" but not under the crc, and the document does not say readers ignore
        # them as it does for the reserved header fields).
        payload = bytes(data[offset + RECORD_HEADER : offset + RECORD_HEADER + length])
        records.append((offset, expected, fields[4], payload))
        # ASSUMPTION (gap G6): a last record whose padding is missing puts the tail past the
        # end of the file; that is case 1 (the end of the file), not a torn tail.
        offset += record_size(length)
        expected += 1
    return records, offset, expected


FREE_WORD = b"ipcpfree"


def is_free_space(data, tail):
    """FORMAT 3, "Reading the queue", case 1: from the tail to the end of the file, the word
    "ipcpfree" at every multiple of 8, the file's length a multiple of 8."""
    rest = len(data) - tail
    if tail % 8 != 0 or rest % 8 != 0:
        return False
    return bytes(data[tail:]) == FREE_WORD * (rest // 8)


def later_write(data, tail, s):
    """The first valid record of a later write after the tail (FORMAT 3, "Reading the queue",
    case 3), as (offset, seq, batch_index), or None."""
    file_len = len(data)
    # "somewhere after the tail, at a multiple of 8". ASSUMPTION (gap G13): a multiple of 8
    # as a file offset (the tail itself is one); p = tail can never qualify, since
    # R.seq - s <= 0 contradicts R.seq > s.
    p = tail + 8
    unpack = struct.unpack_from
    while p + RECORD_HEADER <= file_len:
        _crc, length, seq, batch_index, _gap = unpack("<IIQII", data, p)
        # ASSUMPTION (gap G7): the arithmetic is on unbounded integers (no u64 wrapping), so
        # a batch_index above seq never gives "seq - batch_index > s".
        if (
            seq > s
            and seq - batch_index > s
            and (seq - s) * RECORD_HEADER <= p - tail  # R.seq - s <= (p - tail) / 24
            and p + RECORD_HEADER + length <= file_len
            and crc_ok(data, p, (_crc, length))
        ):
            return p, seq, batch_index
        p += 8
    return None


def read_queue(data):
    file_len = len(data)
    recovery = {
        "initialized": False,
        "torn_tail": None,
        "header_fallback": None,
        "leases_past_tail": None,
    }
    # FORMAT 3: "a file of 0 bytes is a new queue, and the first opener writes the initial
    # image into it". ASSUMPTION (gap G1): reported as an empty queue at seq 0 (the initial
    # image's contents) with "initialized"; the document names no Recovery for it.
    if file_len == 0:
        recovery["initialized"] = True
        return {
            "status": "ok",
            "messages": [],
            "head_seq": 0,
            "next_seq": 0,
            "head_offset": DATA_START,
            "tail_offset": DATA_START,
            "file_len": 0,
            "recovery": recovery,
        }
    if file_len < MIN_LEN:
        # ASSUMPTION (gap G1): the document names no error for this case.
        raise Refused(
            "not_a_queue",
            "%d bytes: shorter than %d (slot B's fixed part) and not empty"
            % (file_len, MIN_LEN),
        )

    # Both slots are read before choosing: a slot with another version refuses the file
    # whichever slot it is. ASSUMPTION (gap G2): slot A is read first, so with both slots
    # of an unknown version the reason names slot A; the kind is the same either way.
    slot_a, why_a = read_slot(data, "A", SLOT_A)
    slot_b, why_b = read_slot(data, "B", SLOT_B)
    if slot_a is None and slot_b is None:
        raise Refused("corrupt", "no usable header slot: %s; %s" % (why_a, why_b))
    if slot_a is not None and slot_b is not None:
        current = slot_b if slot_b.generation > slot_a.generation else slot_a
        lost = None
    elif slot_a is not None:
        current, lost = slot_a, ("B", why_b)
    else:
        current, lost = slot_b, ("A", why_a)

    # "a file cut short below its head is refused, not taken for an empty queue".
    if current.head_offset > max(file_len, DATA_START):
        raise Refused(
            "corrupt",
            "slot %s's head_offset %d is past the end of the file (%d bytes)"
            % (current.name, current.head_offset, file_len),
        )

    records, tail, s = walk(data, current.head_offset, current.head_seq)

    if tail < file_len and not is_free_space(data, tail):
        later = later_write(data, tail, s)
        if later is not None:
            p, seq, batch_index = later
            raise Refused(
                "corrupt",
                "damage followed by a later write: the records end at offset %d expecting "
                "seq %d, but offset %d holds a valid record seq %d (batch_index %d) of a "
                "later write: messages %d ..= %d were committed and are damaged"
                % (tail, s, p, seq, batch_index, s, seq - 1),
            )
        # Case 2: the torn remains of the last write: cut at the tail. ASSUMPTION (gap G11):
        # any remainder that is not case 3 is case 2 and reported, whatever it holds (zeros,
        # stale records, fewer bytes than a record header, garbage).
        recovery["torn_tail"] = {"offset": tail, "bytes": file_len - tail, "seq": s}

    head_seq, head_offset = current.head_seq, current.head_offset
    leases = list(current.leases)
    if lost is not None:
        # FORMAT 3, "Recovering a lost header slot". ASSUMPTION (gap G8): "the valid records"
        # are those of the walk from the usable slot's head (nothing before the head or after
        # the tail is valid by the definition in "Reading the queue").
        h = None
        for _offset, seq, head_gap, _payload in records:
            if head_gap == HEAD_GAP_UNKNOWN:
                continue
            candidate = seq - head_gap
            if h is None or candidate > h:
                h = candidate
        fallback = {
            "lost_slot": lost[0],
            "reason": lost[1],
            "current_slot": current.name,
            "generation": current.generation,
            "head_seq_before": head_seq,
            "head_offset_before": head_offset,
            "h": h,
        }
        dropped = 0
        if h is not None and h > head_seq:
            # "the head moves to h (the offset is found by walking the records), lease
            # entries below h go". h <= the seq of the record it came from, so the walk
            # reaches it.
            for offset, seq, _gap, _payload in records:
                if seq == h:
                    head_offset = offset
                    break
            records = [r for r in records if r[1] >= h]
            kept = [e for e in leases if e[0] >= h]
            dropped = len(leases) - len(kept)
            leases = kept
            head_seq = h
            # ASSUMPTION (gap G9): the head stays at h even if an entry in state 2 sits at h
            # (the document says "moves to h", not "past every consumed message at the front").
        # ASSUMPTION (gap G10): the fallback is reported whenever one slot is unusable, also
        # when no record moves the head; "with the numbers" is not specified, so these are
        # the reader's own.
        fallback["head_seq"] = head_seq
        fallback["head_offset"] = head_offset
        fallback["lease_entries_dropped"] = dropped
        recovery["header_fallback"] = fallback

    # Lease entries at or past the end of the records go (and are reported).
    past = [e for e in leases if e[0] >= s]
    if past:
        recovery["leases_past_tail"] = {
            "next_seq": s,
            "leased": sum(1 for e in past if e[2] == 1),
            "consumed": sum(1 for e in past if e[2] == 2),
        }
        leases = [e for e in leases if e[0] < s]
    consumed = {seq for seq, _holder, state in leases if state == 2}
    messages = [payload.hex() for _o, seq, _g, payload in records if seq not in consumed]
    return {
        "status": "ok",
        "messages": messages,
        "head_seq": head_seq,
        "next_seq": s,
        "head_offset": head_offset,
        "tail_offset": tail,
        "file_len": file_len,
        "epoch": current.epoch,
        "leases": [
            {"seq": seq, "holder": holder, "state": state} for seq, holder, state in leases
        ],
        "recovery": recovery,
    }


def read_file(path):
    # Read only: the file is opened read-only and never written, truncated or locked.
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return {"status": "error", "reason": "cannot read %s: %s" % (path, e)}
    try:
        return read_queue(data)
    except Refused as r:
        return {"status": "refused", "kind": r.kind, "reason": r.reason}


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: %s FILE [FILE...] | -\n" % argv[0])
        return 2
    _self_check()
    out = sys.stdout
    if argv[1:] == ["-"]:
        # One path per line on stdin, each answered as soon as it is read.
        paths = (line.rstrip("\n") for line in sys.stdin)
    else:
        paths = argv[1:]
    for path in paths:
        out.write(json.dumps(read_file(path), separators=(",", ":")))
        out.write("\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
