#!/usr/bin/env python3
# A "message queue" in a file, locked with flock, as beginners' tutorials sometimes
# write it: WRONG ON PURPOSE. queue_fixed.py is the corrected version. This program
# speaks the driver protocol correctly (docs/PROTOCOL.md); only its channel is broken, so
# everything the harness finds is a violation of the channel, not a protocol error.
#
# The queue is a file of QSIZE slots of SIZE = 4 bytes. A sender writes its message
# number n as [4 + length u32][bytes] at slot QSIZE - (n % QSIZE) - 1; the receiver
# reads its message number i at slot QSIZE - ((i + 1) % QSIZE) - 1.
#
# The mistakes, and what `ipcprop check --exec 'python3 examples/python/tutorial_queue.py'`
# should report (capabilities in tutorial_queue.ipcprop.toml):
#
# 1. The lock is shared across fork: the parent opens the file and flocks it, and every
#    role uses that inherited descriptor. flock locks belong to the open file
#    description, and all the processes share one, so every flock(LOCK_EX) succeeds at
#    once (no mutual exclusion at all), and any process's LOCK_UN unlocks it for all.
#    Senders and the receiver run through each other's writes and reads: "corrupted"
#    (torn reads), and with several senders "lost" (same slots).
# 2. Offset arithmetic: slots are 4 bytes but records 4 + length bytes, and slots go
#    downwards, so each new record overwrites the start of the previous one ("corrupted",
#    "lost"); the receiver's slot is one ahead of the sender's (it reads message i + 1's
#    place for message i: message 0 is "lost", the others come out early, "reordered"
#    or "corrupted"), and it reads only (QSIZE - slot) * 4 bytes after the length, so
#    long messages come out truncated: "corrupted". After QSIZE messages the slots are
#    reused while old records are still there: "duplicated".
# 3. A fixed-size file (QSIZE * SIZE bytes): a message longer than the file is refused
#    with "No more space in queue." while the receiver is alive (a send that fails for no
#    reason: reported as a violation, counted as "lost" if the harness expected it).
# 4. Trailing NUL bytes are stripped from every message (the tutorial decodes text):
#    messages that end with zero bytes come out "corrupted".
# 5. No wake-up and no end of stream: the receiver polls until the length word of its
#    slot is non-zero, forever (end_of_stream = false: the harness ends it after the quiet
#    period; what it never received is "lost").

import fcntl
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402

SIZE = 4  # "each message takes 4 bytes"
QSIZE = 1024  # MISTAKE 3: the queue's size, fixed
WORD = struct.Struct("<I")


def main():
    e = d.env()
    path = os.path.join(e.dir, "myqueue")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # MISTAKE 1: one lock for everybody
    os.write(fd, b"\0" * (QSIZE * SIZE))

    def sender(i):
        n = [0]

        def send(message):
            fcntl.flock(fd, fcntl.LOCK_EX)  # MISTAKE 1: granted at once, same description
            try:
                slot = QSIZE - (n[0] % QSIZE) - 1  # MISTAKE 2
                n[0] += 1
                msglen = len(message) + SIZE
                if msglen > QSIZE * SIZE or slot < 0:
                    raise Exception("No more space in queue.")  # MISTAKE 3
                os.pwrite(fd, WORD.pack(msglen) + message, slot * SIZE)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)  # MISTAKE 1: unlocks it for every process

        d.serve_sender(i, send)

    got = [0]

    def recv():
        slot = QSIZE - ((got[0] + 1) % QSIZE) - 1  # MISTAKE 2: one ahead of the sender's
        while True:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                data = os.pread(fd, SIZE + (QSIZE - slot) * SIZE, slot * SIZE)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            (msglen,) = WORD.unpack(data[:SIZE])
            if msglen:
                break
            time.sleep(0.001)  # MISTAKE 5: polling, no wake-up
        got[0] += 1
        # MISTAKE 2: only (QSIZE - slot) * 4 bytes were read; MISTAKE 4: NULs stripped.
        return data[SIZE:][:max(msglen - SIZE, 0)].rstrip(b"\0")

    pids = [d.spawn(lambda i=i: sender(i)) for i in range(e.senders)]
    pids.append(d.spawn(lambda: d.serve_receiver(recv)))
    code = d.wait_children(pids)
    os.close(fd)
    sys.exit(code)


if __name__ == "__main__":
    main()
