#!/usr/bin/env python3
"""examples/python/queue_fixed.py with one persistence mistake, for negative tests.

    python3 queue_broken.py MODE

It loads queue_fixed.py from its path (its code is not copied), replaces one of its
functions, and runs its ``main``. Run it declared persistent (``--persistent``, with the
capabilities of queue_fixed.ipcprop.toml given as flags): each mode must be caught by the
recovery run that follows a case whose receiver was killed.

- ``forget-position``: the receiver never stores its position, so a recovery run starts
  again from the first record: the harness must report messages ``duplicated``.
- ``report-then-commit``: the receiver stores a record's position only when it is asked
  for the next record, after it reported this one; a kill between the two (a plan's kill
  of the receiver after its k-th message lands there) makes the recovery run deliver the
  reported record again: ``duplicated``.
- ``fresh-start``: a recovery run recreates the queue file empty instead of opening the
  one the killed run left: the harness must report messages ``lost``.

And one mode that is no mistake, for the harness's own test:

- ``wait-in-recovery``: a recovery receiver that has read everything waits for more
  instead of reporting the end of the stream (the protocol allows it: the harness ends it
  once it has been quiet for the quiet period), so no violation.

An unknown MODE is an error (status 2, the known modes on standard error).
"""

import importlib.util
import os
import sys
import time

FIXED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                     "python", "queue_fixed.py")


def load_fixed():
    spec = importlib.util.spec_from_file_location("queue_fixed", FIXED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def forget_position(q):
    def store_position(fd, position):
        pass  # the position lives in the receiver's memory only

    q.store_position = store_position


def report_then_commit(q):
    fixed = q.store_position
    pending = {}

    def store_position(fd, position):
        # Stores the previous record's position, whose record is reported by now, and
        # keeps this one for the next call: each position reaches the file one record late.
        if fd in pending:
            fixed(fd, pending[fd])
        pending[fd] = position

    q.store_position = store_position


def fresh_start(q):
    fixed = q.open_queue

    def open_queue(path, recover):
        if recover:
            try:
                os.unlink(path)  # the killed run's records are thrown away
            except FileNotFoundError:
                pass
        fixed(path, False)

    q.open_queue = open_queue


def wait_in_recovery(q):
    fixed = q.Receiver.recv

    def recv(self):
        message = fixed(self)
        while message is None and self.alive_r is None:
            time.sleep(3600)  # nothing more can come: the harness ends it once quiet
        return message

    q.Receiver.recv = recv


MODES = {
    "forget-position": forget_position,
    "report-then-commit": report_then_commit,
    "fresh-start": fresh_start,
    "wait-in-recovery": wait_in_recovery,
}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        sys.stderr.write("usage: queue_broken.py MODE, MODE one of: %s (got %r)\n"
                         % (", ".join(sorted(MODES)), sys.argv[1:]))
        sys.exit(2)
    q = load_fixed()
    MODES[sys.argv[1]](q)
    q.main()


if __name__ == "__main__":
    main()
