#!/usr/bin/env python3
# A file queue done right, under the ipcprop driver protocol (docs/PROTOCOL.md).
#
# IPCPROP_SENDERS sender processes append records to one file in IPCPROP_DIR; one
# receiver reads them in order.
#
# - Each process opens the file itself, after fork, and locks its own open file
#   description with flock. (flock locks belong to the description: a descriptor
#   inherited across fork is the same description, and its lock excludes nobody.)
# - The file starts with an 8-byte header: the committed end. A sender, under the
#   exclusive lock, writes its record [length u32][crc32c u32][payload] at the committed
#   end, fsyncs it, then writes the new committed end into the header (the commit) and
#   fsyncs again. A sender killed before the commit leaves bytes past the committed end,
#   which nobody reads and the next sender overwrites.
# - The file grows as needed: no fixed size, no slot arithmetic.
# - The receiver keeps its own offset, reads the committed end under a shared lock,
#   reads the records before it, and checks each record's length and checksum: a record
#   that does not check out is reported, never delivered.
# - Wake-ups and end of stream as in shm_fixed.py: after a commit a sender writes a byte
#   to the "alive" pipe, whose write end only senders hold; the receiver sleeps in poll
#   on its read end, and its end of file means every sender is gone (exited or killed),
#   so once the committed records are read the stream has ended.
#   The roles wait at a gate until the parent has closed its copies of the pipes, so
#   no end is held by a process that plays no role.
# - Sends never block (a file has room), so a receiver that closed or died never makes a
#   sender hang: its sends keep succeeding into the file.
#
# Run: ipcprop check --exec 'python3 examples/python/queue_fixed.py'
# (capabilities in queue_fixed.ipcprop.toml). The harness should report no violation.

import errno
import fcntl
import os
import select
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402

COMMITTED = struct.Struct("<Q")  # the header: the end of the committed records
RECORD = struct.Struct("<II")  # a record's head: payload length, CRC-32C of the payload
FIRST = COMMITTED.size


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
            (end,) = COMMITTED.unpack(pread_exactly(self.fd, COMMITTED.size, 0))
            pwrite_all(self.fd, record, end)
            os.fsync(self.fd)  # the record is durable before it is published
            pwrite_all(self.fd, COMMITTED.pack(end + len(record)), 0)
            os.fsync(self.fd)  # the commit
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        ring_doorbell(self.alive_w)

    def close(self):
        os.close(self.fd)
        os.close(self.alive_w)


class Receiver:
    def __init__(self, path, alive_r):
        self.fd = os.open(path, os.O_RDONLY)
        self.alive_r = alive_r
        self.offset = FIRST
        self.senders_gone = False

    def committed_end(self):
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        try:
            return COMMITTED.unpack(pread_exactly(self.fd, COMMITTED.size, 0))[0]
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def recv(self):
        while True:
            end = self.committed_end()
            if self.offset < end:
                length, crc = RECORD.unpack(pread_exactly(self.fd, RECORD.size, self.offset))
                start = self.offset + RECORD.size
                if start + length > end:
                    raise OSError(errno.EBADMSG, "record at %d runs past the committed end" % self.offset)
                payload = pread_exactly(self.fd, length, start)
                if d.crc32c(payload) != crc:
                    raise OSError(errno.EBADMSG, "record at %d fails its checksum" % self.offset)
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
        os.close(self.alive_r)


def main():
    e = d.env()
    if e.role is not None:
        sys.exit("queue_fixed.py: one program only (no --exec-sender/--exec-receiver)")
    path = os.path.join(e.dir, "queue")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    pwrite_all(fd, COMMITTED.pack(FIRST), 0)
    os.fsync(fd)
    os.close(fd)
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
