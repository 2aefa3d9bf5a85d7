#!/usr/bin/env python3
# A persistent file queue done right, under the ipcprop driver protocol (docs/PROTOCOL.md).
#
# IPCPROP_SENDERS sender processes append records to one file in IPCPROP_DIR; one
# receiver reads them in order. What a sender acknowledged stays in the file until the
# receiver has reported it, even if every process is killed; what the receiver reported
# is never delivered again (declared `persistent = true`, checked by a recovery run).
#
# - Each process opens the file itself, after fork, and locks its own open file
#   description with flock. (flock locks belong to the description: a descriptor
#   inherited across fork is the same description, and its lock excludes nobody.)
# - The file starts with a 16-byte header of two little-endian 64-bit words:
#     offset 0: the committed end, written by senders only, under the exclusive lock;
#     offset 8: the receiver's position (everything before it was delivered), written by
#               the receiver only.
#   Records follow from offset 16. A sender, under the exclusive lock, writes its record
#   [length u32][crc32c u32][payload] at the committed end, fsyncs it, then writes the
#   new committed end into word 0 (the commit) and fsyncs again. A sender killed before
#   the commit leaves bytes past the committed end, which nobody reads and the next
#   sender overwrites.
# - The file grows as needed: no fixed size, no slot arithmetic.
# - The receiver reads the committed end under a shared lock, reads the record at its
#   position, checks its length and checksum (a record that does not check out is
#   reported, never delivered), then stores the position after it in word 1 BEFORE it
#   hands the record over to be reported. So a receiver killed at any instant either had
#   not stored the new position (the record comes again, but it was never reported) or
#   had (the record was reported, or it is the one message the protocol allows to be in
#   doubt: taken, then killed before it said `received`). Storing after reporting would
#   make a kill in between deliver a reported record twice: a duplicate.
# - The two words never overwrite each other: each is written with a pwrite of exactly
#   its own 8 bytes at its own offset, and a pwrite only changes the bytes it covers. An
#   8-byte pwrite at an 8-aligned offset lies within one page, which the kernel copies
#   into the page cache whole: SIGKILL cannot tear it (a fatal signal is acted on before
#   or after the copy, not inside it), and the page cache outlives the process, so
#   nothing needs fsync to survive SIGKILL. For a power loss the writes must reach the
#   disk: senders fsync the record before its commit, and the receiver fdatasyncs its
#   position before it reports (an aligned 8-byte word lies within one disk sector,
#   written whole).
# - Wake-ups and end of stream as in shm_fixed.py: after a commit a sender writes a byte
#   to the "alive" pipe, whose write end only senders hold; the receiver sleeps in poll
#   on its read end, and its end of file means every sender is gone (exited or killed),
#   so once the committed records are read the stream has ended.
#   The roles wait at a gate until the parent has closed its copies of the pipes, so
#   no end is held by a process that plays no role.
# - Sends never block (a file has room), so a receiver that closed or died never makes a
#   sender hang: its sends keep succeeding into the file.
#
# The recovery run (IPCPROP_RECOVER=1, docs/PROTOCOL.md section 9): after a case in which
# the receiver was killed, the harness starts this program again on the same IPCPROP_DIR.
# It then starts the receiver only (no sender, so no alive pipe: every sender is gone from
# the start), which opens the file the killed run left (never creating or truncating it:
# a missing file is an error, on standard error, exit status 1), resumes at the stored
# position, delivers every committed record after it, and reports the end of stream once
# it has read them all.
#
# Run: ipcprop check --exec 'python3 examples/python/queue_fixed.py'
# (capabilities in queue_fixed.ipcprop.toml). The harness should report no violation.
# tests/exec/queue_broken.py breaks this program one way at a time, for negative tests.

import errno
import fcntl
import os
import select
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402

WORD = struct.Struct("<Q")  # a header word
COMMITTED_AT = 0  # the end of the committed records: senders write it, under the lock
POSITION_AT = 8  # the receiver's position: the receiver writes it
FIRST = 16  # the first record
RECORD = struct.Struct("<II")  # a record's head: payload length, CRC-32C of the payload
QUEUE = "queue"  # the file's name in IPCPROP_DIR


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def pread_exactly(fd, n, offset):
    chunks = []
    left = n
    while left:
        chunk = os.pread(fd, left, offset)
        if not chunk:
            raise OSError(errno.EBADMSG, "queue file ends %d bytes short at offset %d" % (left, offset))
        chunks.append(chunk)
        left -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def read_word(fd, at):
    return WORD.unpack(pread_exactly(fd, WORD.size, at))[0]


def write_word(fd, value, at):
    """One pwrite of exactly the 8 bytes of the word at ``at``, never more: the other
    header word, which another process writes, is left alone."""
    if os.pwrite(fd, WORD.pack(value), at) != WORD.size:
        raise OSError(errno.EIO, "short write of the header word at %d" % at)


def store_position(fd, position):
    """The receiver's commit: everything before ``position`` was delivered. Called before
    the record is reported (see the header comment); fdatasync only matters for a power
    loss, not for SIGKILL."""
    write_word(fd, position, POSITION_AT)
    os.fdatasync(fd)


def load_position(fd):
    return read_word(fd, POSITION_AT)


class QueueUnusable(Exception):
    """A recovery run found no queue file (the killed run's storage is gone), or one too
    short to hold its header."""


def open_queue(path, recover):
    """Make the queue file for a new case, or check the one a killed run left (a recovery
    run), which is never created afresh nor truncated."""
    if recover:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise QueueUnusable("IPCPROP_RECOVER=1 but the queue file %s does not exist: "
                               "the killed run's storage is gone" % path) from None
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size < FIRST:
            raise QueueUnusable("the queue file %s has %d bytes, fewer than its %d-byte header"
                               % (path, size, FIRST))
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        pwrite_all(fd, WORD.pack(FIRST) + WORD.pack(FIRST), 0)  # nothing committed, nothing read
        os.fsync(fd)
    finally:
        os.close(fd)


def ring_doorbell(fd):
    try:
        os.write(fd, b"\0")
    except (BlockingIOError, BrokenPipeError):
        pass  # wake-ups already pending, or no receiver to wake


class Sender:
    def __init__(self, path, alive_w):
        self.fd = os.open(path, os.O_RDWR)  # this process's own description, for flock
        self.alive_w = alive_w

    def send(self, message):
        record = RECORD.pack(len(message), d.crc32c(message)) + message
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            end = read_word(self.fd, COMMITTED_AT)
            pwrite_all(self.fd, record, end)
            os.fsync(self.fd)  # the record is durable before it is published
            write_word(self.fd, end + len(record), COMMITTED_AT)
            os.fsync(self.fd)  # the commit
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        ring_doorbell(self.alive_w)

    def close(self):
        os.close(self.fd)
        os.close(self.alive_w)


class Receiver:
    """The receiving end. ``alive_r`` is the alive pipe's read end, or ``None`` when no
    sender exists (a recovery run): then the stream ends once the committed records are
    read."""

    def __init__(self, path, alive_r):
        self.fd = os.open(path, os.O_RDWR)  # it writes its position
        self.alive_r = alive_r
        self.offset = load_position(self.fd)  # FIRST in a new case; where it was in a recovery
        self.senders_gone = alive_r is None

    def committed_end(self):
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        try:
            return read_word(self.fd, COMMITTED_AT)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def recv(self):
        while True:
            end = self.committed_end()
            if not FIRST <= self.offset <= end:
                raise OSError(errno.EBADMSG, "the receiver's position %d is outside the "
                              "records (%d to %d)" % (self.offset, FIRST, end))
            if self.offset < end:
                length, crc = RECORD.unpack(pread_exactly(self.fd, RECORD.size, self.offset))
                start = self.offset + RECORD.size
                if start + length > end:
                    raise OSError(errno.EBADMSG, "record at %d runs past the committed end" % self.offset)
                payload = pread_exactly(self.fd, length, start)
                if d.crc32c(payload) != crc:
                    raise OSError(errno.EBADMSG, "record at %d fails its checksum" % self.offset)
                store_position(self.fd, start + length)  # before it is reported
                self.offset = start + length
                return payload
            if self.senders_gone:
                return None  # checked after every sender was gone: nothing more will come
            self.senders_gone = self.wait()

    def wait(self):
        """Sleep until a sender commits or every sender is gone (True then)."""
        poller = select.poll()
        poller.register(self.alive_r, select.POLLIN)
        poller.poll()
        while True:
            try:
                chunk = os.read(self.alive_r, 4096)
            except BlockingIOError:
                return False
            if not chunk:
                return True

    def close(self):
        os.close(self.fd)
        if self.alive_r is not None:
            os.close(self.alive_r)


def main():
    e = d.env()
    if e.role is not None:
        sys.exit("queue_fixed.py: one program only (no --exec-sender/--exec-receiver)")
    path = os.path.join(e.dir, QUEUE)
    try:
        open_queue(path, e.recover)
    except QueueUnusable as err:
        sys.exit("queue_fixed.py: %s" % err)  # status 1, the reason on standard error

    if e.recover:
        # The recovery run: the receiver only, resuming where the killed one stopped.
        def recovering_receiver():
            r = Receiver(path, None)
            d.serve_receiver(r.recv, close=r.close)

        sys.exit(d.wait_children([d.spawn(recovering_receiver)]))

    alive_r, alive_w = os.pipe()
    os.set_blocking(alive_r, False)
    os.set_blocking(alive_w, False)

    def sender(i):
        os.close(alive_r)
        s = Sender(path, alive_w)
        d.serve_sender(i, s.send, close=s.close)

    def receiver():
        os.close(alive_w)
        r = Receiver(path, alive_r)
        d.serve_receiver(r.recv, close=r.close)

    gate = d.Gate()  # the roles start once the parent holds no end
    pids = [d.spawn(lambda i=i: sender(i), gate=gate) for i in range(e.senders)]
    pids.append(d.spawn(receiver, gate=gate))
    os.close(alive_r)
    os.close(alive_w)
    gate.open()
    sys.exit(d.wait_children(pids))


if __name__ == "__main__":
    main()
