#!/usr/bin/env python3
# A pipe channel done right, under the ipcprop driver protocol (docs/PROTOCOL.md).
#
# One anonymous pipe across fork: IPCPROP_SENDERS sender processes write, one receiver
# process reads.
#
# - Framing: each message travels as a frame, a 4-byte little-endian length and then the
#   bytes. A pipe is a byte stream: one read is not one message.
# - Every process closes the pipe ends it does not use (senders the read end, the
#   receiver and the parent the write end), so the receiver sees end of file exactly when
#   every sender is gone, and a sender sees EPIPE when the receiver is gone. The roles
#   wait at a gate until the parent has closed its ends: a parent still holding the read
#   end when the receiver closes would let a send "succeed" into a pipe nobody reads.
# - The reader reads exactly a frame: short reads are continued, end of file before a
#   frame is the end of the stream (None), end of file inside a frame is a cut-off (a
#   sender died while writing it).
# - The writer writes the whole frame: a write interrupted by a signal after some bytes
#   returns a short count, and the rest is written (Python retries a write interrupted
#   before any byte, EINTR, itself: PEP 475).
# - Several senders share the pipe safely only for frames of at most PIPE_BUF (4096)
#   bytes, which the kernel writes atomically: messages up to 4092 bytes. Longer frames
#   from concurrent senders could interleave; pipe_fixed.ipcprop.toml says so
#   (shared_max_len = 4092).
#
# Run: ipcprop check --exec 'python3 examples/python/pipe_fixed.py'
# (capabilities in pipe_fixed.ipcprop.toml). The harness should report no violation.

import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402

HEADER = struct.Struct("<I")


def write_all(fd, data):
    """Write all of ``data``, continuing after short writes."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:  # only if a signal handler raised; Python retries otherwise
            continue
        view = view[written:]


def read_exactly(fd, n):
    """Exactly ``n`` bytes; ``b""`` if the stream ended before the first, CutOff if it
    ended after some."""
    chunks = []
    left = n
    while left:
        try:
            chunk = os.read(fd, min(left, 1 << 16))
        except InterruptedError:
            continue
        if not chunk:
            if left == n:
                return b""
            raise d.CutOff("end of file after %d of %d bytes" % (n - left, n))
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_frame(fd, message):
    # One write for the whole frame: atomic up to PIPE_BUF, so senders may share the pipe.
    write_all(fd, HEADER.pack(len(message)) + message)


def recv_frame(fd):
    head = read_exactly(fd, HEADER.size)
    if not head:
        return None  # every write end is closed: every sender is gone
    (length,) = HEADER.unpack(head)
    if length == 0:
        return b""
    body = read_exactly(fd, length)
    if not body:
        raise d.CutOff("end of file after a frame header of %d bytes" % length)
    return body


def sender(index, r, w):
    os.close(r)
    d.serve_sender(index, lambda m: send_frame(w, m), close=lambda: os.close(w))


def receiver(r, w):
    os.close(w)
    d.serve_receiver(lambda: recv_frame(r), close=lambda: os.close(r))


def main():
    e = d.env()
    if e.role is not None:
        sys.exit("pipe_fixed.py: an anonymous pipe needs one program (no --exec-sender/--exec-receiver)")
    r, w = os.pipe()
    gate = d.Gate()  # the roles start once the parent holds no end
    pids = [d.spawn(lambda i=i: sender(i, r, w), gate=gate) for i in range(e.senders)]
    pids.append(d.spawn(lambda: receiver(r, w), gate=gate))
    os.close(r)
    os.close(w)
    gate.open()
    sys.exit(d.wait_children(pids))


if __name__ == "__main__":
    main()
