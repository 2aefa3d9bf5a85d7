#!/usr/bin/env python3
# A pipe channel as beginners' tutorials often write it: WRONG ON PURPOSE.
# pipe_fixed.py is the corrected version. This program speaks the driver protocol
# correctly (docs/PROTOCOL.md); only its channel is broken, so everything the harness
# finds is a violation of the channel, not a protocol error.
#
# The mistakes, and what `ipcprop check --exec 'python3 examples/python/tutorial_pipe.py'`
# should report (capabilities in tutorial_pipe.ipcprop.toml):
#
# 1. Unused pipe ends are never closed: the senders keep the read end, the receiver keeps
#    the write end, the parent keeps both. The receiver therefore never reads end of
#    file: once every sender is gone it blocks in read forever -> "hung" (end of stream
#    was promised). And a receiver that closed its end (or died) does not make the
#    senders' writes fail with EPIPE, since they hold a read end themselves: once the
#    pipe's 64 KiB fill up, a send blocks forever -> "hung".
# 2. No framing: each message is one os.write, and each os.read(fd, 1024) is taken as one
#    message. A pipe is a byte stream, so
#    - messages written before the receiver reads come out glued together: the first is
#      "corrupted" (wrong length), the ones glued to it "lost";
#    - a message longer than 1024 bytes comes out in pieces: the first piece "corrupted",
#      the others "unexpected" (their first bytes are no message's identity) or
#      "corrupted";
#    - an empty message writes nothing at all: "lost".
# 3. The result of os.write is ignored: a write of more than PIPE_BUF bytes interrupted
#    by a signal (the harness's SIGURG storms) after some bytes returns a short count and
#    the rest is silently dropped -> "corrupted" / "lost"; and two senders' writes of more
#    than PIPE_BUF bytes may interleave -> "corrupted".

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402

CHUNK = 1024


def main():
    e = d.env()
    r, w = os.pipe()

    def sender(i):
        # MISTAKE 1: the read end stays open in the sender.
        # MISTAKE 3: one write, its count ignored.
        d.serve_sender(i, lambda m: os.write(w, m), close=lambda: os.close(w))

    def recv():
        # MISTAKE 2: whatever one read returns is "the message".
        data = os.read(r, CHUNK)
        if not data:
            return None  # never happens: this very process still holds a write end
        return data

    def receiver():
        # MISTAKE 1: the write end stays open in the receiver.
        d.serve_receiver(recv, close=lambda: os.close(r))

    pids = [d.spawn(lambda i=i: sender(i)) for i in range(e.senders)]
    pids.append(d.spawn(receiver))
    # MISTAKE 1: the parent keeps both ends too.
    sys.exit(d.wait_children(pids))


if __name__ == "__main__":
    main()
