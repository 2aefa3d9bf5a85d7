#!/usr/bin/env python3
# Shared memory as beginners' tutorials often use it: WRONG ON PURPOSE.
# shm_fixed.py is the corrected version. This program speaks the driver protocol
# correctly (docs/PROTOCOL.md); only its channel is broken, so everything the harness
# finds is a violation of the channel, not a protocol error.
#
# Message i is written at offset 4 * i of an anonymous shared mapping as a record
# [length u32][bytes], and the receiver reads its i-th message at offset 4 * i.
#
# The mistakes, and what `ipcprop check --exec 'python3 examples/python/tutorial_shm.py'`
# should report (capabilities in tutorial_shm.ipcprop.toml):
#
# 1. A 4-byte stride for records of 4 + length bytes: message i + 1's record starts
#    inside message i's bytes and overwrites them. A message read after the next one was
#    written comes out as the next one's length and bytes: "corrupted" (or "unexpected",
#    as its identity is no longer its own), and the messages overwritten before they were
#    read are "lost". Several senders each count from 0 and write over each other's
#    records: more "lost" / "corrupted" / "duplicated".
# 2. No synchronisation: no lock, no wake-up, no flag. The receiver takes a non-zero
#    length word as "the message is there" and reads the bytes at once, while the sender
#    may still be copying them (the length comes first): "corrupted". Senders never wait
#    for the receiver and overwrite messages it has not read yet: "lost". An empty
#    message leaves the length word at 0, indistinguishable from "not written yet": the
#    receiver waits for it forever and every later message is "lost" too.
# 3. A fixed-size mapping whose offsets silently wrap around: after SLOTS messages the
#    receiver reads old records again ("duplicated") or half-overwritten ones.
# 4. No end of stream: the receiver cannot know that the senders are gone (the file
#    declares end_of_stream = false, so the harness ends it after the quiet period; what
#    it never received is "lost").

import mmap
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402

SIZE = 4  # MISTAKE 1: "each message takes 4 bytes"
SLOTS = 1 << 18
MAX_MESSAGE = 1 << 16
LENGTH = struct.Struct("<I")


def offset(i):
    return (SIZE * i) % (SIZE * SLOTS)  # MISTAKE 3: wraps around silently


def main():
    e = d.env()
    shm = mmap.mmap(-1, SIZE * SLOTS + LENGTH.size + MAX_MESSAGE)  # anonymous, shared across fork

    def sender(i):
        seq = [0]

        def send(message):
            at = offset(seq[0])
            seq[0] += 1
            # MISTAKE 2: no lock, no check that the receiver has read what is here.
            shm[at:at + LENGTH.size + len(message)] = LENGTH.pack(len(message)) + message

        d.serve_sender(i, send)

    got = [0]

    def recv():
        at = offset(got[0])
        # MISTAKE 2: a non-zero length is taken as "written"; polled, as nothing wakes us.
        while True:
            (length,) = LENGTH.unpack(shm[at:at + LENGTH.size])
            if length:
                break
            time.sleep(0.001)
        got[0] += 1
        length = min(length, MAX_MESSAGE)
        return shm[at + LENGTH.size:at + LENGTH.size + length]

    pids = [d.spawn(lambda i=i: sender(i)) for i in range(e.senders)]
    pids.append(d.spawn(lambda: d.serve_receiver(recv)))
    sys.exit(d.wait_children(pids))


if __name__ == "__main__":
    main()
