#!/usr/bin/env python3
# A shared-memory ring done right, under the ipcprop driver protocol (docs/PROTOCOL.md).
#
# IPCPROP_SENDERS sender processes and one receiver share a ring buffer: a file in
# IPCPROP_DIR mapped with mmap (MAP_SHARED) by every process.
#
# - Records, not slots: each message is a 4-byte length and its bytes, written at the
#   ring's tail and wrapping around its end, so any length up to the ring's size fits and
#   records never overlap.
# - A lock around every access to the ring: flock on a file description each process
#   opens itself after fork (flock locks belong to the open file description: one shared
#   across fork would exclude nobody). A process killed while holding it releases it: the
#   kernel drops the lock with the last descriptor.
# - Commit last: a sender copies its record, then advances the tail, under the lock; a
#   sender killed half-way leaves nothing visible.
# - Wake-ups instead of spinning: after a commit a sender writes a byte to the "alive"
#   pipe; after taking a record the receiver writes a byte to the "space" pipe. Both sides
#   sleep in poll.
# - End of stream without trusting senders to say goodbye: every sender holds the alive
#   pipe's write end and nobody else does, so the receiver reads end of file there once
#   every sender is gone, exited or killed; it then empties the ring and reports the end.
#   The roles wait at a gate until the parent has closed its copies of the pipes, so
#   no end is held by a process that plays no role.
# - The receiver's liveness, for the senders: the space pipe's write end is held by the
#   receiver alone, so a sender waiting for room sees it hang up when the receiver is
#   gone (and a closed flag in the ring when it closed): it fails with Disconnected
#   instead of waiting forever.
#
# Run: ipcprop check --exec 'python3 examples/python/shm_fixed.py'
# (capabilities in shm_fixed.ipcprop.toml). The harness should report no violation.

import errno
import fcntl
import mmap
import os
import select
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402

# Ring header: head (u64, read position), tail (u64, write position), closed (u32).
# Positions only grow; a position's byte is at DATA + position % CAPACITY.
HEADER = struct.Struct("<QQI")
DATA = 64
CAPACITY = 256 * 1024
LENGTH = struct.Struct("<I")
SPACE_RETRY_MS = 100  # senders sharing the space pipe may steal each other's wake-up


class Ring:
    """One process's view of the ring: its own descriptor (for flock) and mapping."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)
        self.mm = mmap.mmap(self.fd, DATA + CAPACITY)  # MAP_SHARED

    def lock(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def unlock(self):
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def header(self):
        return HEADER.unpack_from(self.mm, 0)

    def set_header(self, head, tail, closed):
        HEADER.pack_into(self.mm, 0, head, tail, closed)

    def put(self, position, data):
        at = position % CAPACITY
        first = min(len(data), CAPACITY - at)
        self.mm[DATA + at:DATA + at + first] = data[:first]
        self.mm[DATA:DATA + len(data) - first] = data[first:]

    def get(self, position, n):
        at = position % CAPACITY
        first = min(n, CAPACITY - at)
        return self.mm[DATA + at:DATA + at + first] + self.mm[DATA:DATA + n - first]

    def close(self):
        self.mm.close()
        os.close(self.fd)


def ring_doorbell(fd):
    """One byte to wake the other side; a full pipe already holds wake-ups, and a pipe
    nobody reads any more needs none."""
    try:
        os.write(fd, b"\0")
    except (BlockingIOError, BrokenPipeError):
        pass


def wait_and_drain(fd, timeout_ms=None):
    """Sleep until ``fd`` (a pipe's read end) has bytes or hangs up (or ``timeout_ms``
    passes); consume its bytes. True if every write end is closed."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll(timeout_ms)
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return False
        if not chunk:
            return True


class Sender:
    def __init__(self, path, alive_w, space_r):
        self.ring = Ring(path)
        self.alive_w = alive_w
        self.space_r = space_r

    def send(self, message):
        record = LENGTH.pack(len(message)) + message
        if len(record) > CAPACITY:
            raise ValueError("a message of %d bytes does not fit the %d-byte ring" % (len(message), CAPACITY))
        while True:
            self.ring.lock()
            try:
                head, tail, closed = self.ring.header()
                if closed:
                    raise d.Disconnected("the receiver closed the ring")
                room = CAPACITY - (tail - head) >= len(record)
                if room:
                    self.ring.put(tail, record)
                    self.ring.set_header(head, tail + len(record), closed)  # the commit
            finally:
                self.ring.unlock()
            if room:
                ring_doorbell(self.alive_w)
                return
            if wait_and_drain(self.space_r, SPACE_RETRY_MS):
                raise d.Disconnected("the receiver is gone")

    def close(self):
        self.ring.close()
        os.close(self.alive_w)
        os.close(self.space_r)


class Receiver:
    def __init__(self, path, alive_r, space_w):
        self.ring = Ring(path)
        self.alive_r = alive_r
        self.space_w = space_w
        self.senders_gone = False

    def recv(self):
        while True:
            self.ring.lock()
            try:
                head, tail, closed = self.ring.header()
                message = None
                if tail > head:
                    (length,) = LENGTH.unpack(self.ring.get(head, LENGTH.size))
                    end = head + LENGTH.size + length
                    if end > tail:
                        raise OSError(errno.EBADMSG, "ring record of %d bytes runs past the tail" % length)
                    message = self.ring.get(head + LENGTH.size, length)
                    self.ring.set_header(end, tail, closed)
            finally:
                self.ring.unlock()
            if message is not None:
                ring_doorbell(self.space_w)
                return message
            if self.senders_gone:
                # The ring was checked after every sender was gone: it is really empty.
                return None
            self.senders_gone = wait_and_drain(self.alive_r)

    def close(self):
        self.ring.lock()
        try:
            head, tail, _ = self.ring.header()
            self.ring.set_header(head, tail, 1)
        finally:
            self.ring.unlock()
        self.ring.close()
        os.close(self.space_w)  # a sender waiting for room wakes and sees the flag
        os.close(self.alive_r)


def main():
    e = d.env()
    if e.role is not None:
        sys.exit("shm_fixed.py: one program only (no --exec-sender/--exec-receiver)")
    path = os.path.join(e.dir, "ring")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, DATA + CAPACITY)  # zeros: head = tail = 0, open
    os.close(fd)
    alive_r, alive_w = os.pipe()
    space_r, space_w = os.pipe()
    for fd in (alive_r, alive_w, space_r, space_w):
        os.set_blocking(fd, False)

    def sender(i):
        os.close(alive_r)
        os.close(space_w)
        s = Sender(path, alive_w, space_r)
        d.serve_sender(i, s.send, close=s.close)

    def receiver():
        os.close(alive_w)
        os.close(space_r)
        r = Receiver(path, alive_r, space_w)
        d.serve_receiver(r.recv, close=r.close)

    gate = d.Gate()  # the roles start once the parent holds no end
    pids = [d.spawn(lambda i=i: sender(i), gate=gate) for i in range(e.senders)]
    pids.append(d.spawn(receiver, gate=gate))
    for fd in (alive_r, alive_w, space_r, space_w):
        os.close(fd)
    gate.open()
    sys.exit(d.wait_children(pids))


if __name__ == "__main__":
    main()
