"""The Python programs of examples/python, run end to end against the fake harness:
the fixed channels deliver every message whole, once and in order, end their stream when
the senders are gone (also killed ones), and never hang a sender; each tutorial program
shows its bugs.

Run: ``python3 -m unittest discover -s clients/python`` (``cargo test --test
clients_python`` runs it)."""

import os
import signal
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import ipcprop_driver as d  # noqa: E402
from fake_harness import FakeHarness, HarnessError, describe, message_of  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "python")
LENGTHS = [0, 1, 7, 8, 100, 4096, 20000]
FIXED = ["pipe_fixed", "shm_fixed", "queue_fixed"]


def program(name, senders):
    return FakeHarness([sys.executable, os.path.join(EXAMPLES, name + ".py")], senders=senders)


def expected(h, sender, seq, length):
    return describe(d.gen(h.seed, sender, seq, length))


def blocked_in_write(pid):
    """True once ``pid`` sleeps inside write(2) on a pipe."""
    try:
        with open("/proc/%d/wchan" % pid) as f:
            wchan = f.read()
        with open("/proc/%d/syscall" % pid) as f:
            syscall = f.read().split()
    except OSError:
        return False
    return wchan in ("pipe_write", "anon_pipe_write") or (syscall[:1] == ["1"] and wchan not in ("0", ""))


def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


class Storm:
    """SIGURG to ``pid`` every millisecond or so, in a thread, while in the block."""

    def __init__(self, pid):
        self.pid = pid
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        while not self.stop.is_set():
            try:
                os.kill(self.pid, signal.SIGURG)
            except ProcessLookupError:
                return
            self.sent += 1
            time.sleep(0.001)

    def __enter__(self):
        self.thread = threading.Thread(target=self.run)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class FixedPrograms(unittest.TestCase):
    def test_capability_files(self):
        for name in FIXED + ["tutorial_pipe", "tutorial_shm", "tutorial_queue"]:
            with open(os.path.join(EXAMPLES, name + ".ipcprop.toml")) as f:
                text = f.read()
            self.assertIn("max_message_len = ", text, name)
            self.assertIn("end_of_stream = ", text, name)

    def test_two_senders_every_length_then_end_of_stream(self):
        for name in FIXED:
            with self.subTest(name), program(name, 2) as h:
                for seq, length in enumerate(LENGTHS):
                    for sender in (0, 1):
                        self.assertEqual(h.send(sender, seq, length)["ev"], "sent")
                    events = h.recv(2)
                    self.assertEqual([message_of(e) for e in events],
                                     [expected(h, 0, seq, length), expected(h, 1, seq, length)])
                # Several messages waiting at once, read in one command.
                base = len(LENGTHS)
                for k in range(3):
                    h.send(k % 2, base + k // 2, 4096 + k)
                events = h.recv(3)
                self.assertEqual([message_of(e) for e in events],
                                 [expected(h, k % 2, base + k // 2, 4096 + k) for k in range(3)])
                for sender in (0, 1):
                    h.exit_role(h.senders[sender])
                self.assertEqual([e["ev"] for e in h.recv(2)], ["eos"])
                h.exit_role(h.receiver)
                self.assertEqual(h.wait(), 0, h.stderr())

    def test_killed_sender_ends_the_stream_all_the_same(self):
        for name in FIXED:
            with self.subTest(name), program(name, 2) as h:
                self.assertEqual(h.send(1, 0, 100)["ev"], "sent")
                os.kill(h.senders[1].hello["pid"], signal.SIGKILL)
                self.assertIsNone(h.senders[1].readline())
                self.assertEqual(h.send(0, 0, 50)["ev"], "sent")
                h.exit_role(h.senders[0])
                events = h.recv(3)
                self.assertEqual([message_of(e) for e in events[:2]],
                                 [expected(h, 1, 0, 100), expected(h, 0, 0, 50)])
                self.assertEqual(events[2]["ev"], "eos")
                h.exit_role(h.receiver)
                h.wait()

    def test_closed_receiver_never_hangs_a_sender(self):
        for name in FIXED:
            with self.subTest(name), program(name, 1) as h:
                self.assertEqual(h.send(0, 0, 10)["ev"], "sent")
                h.close_receiver()
                # 20 messages of 20000 bytes: more than a pipe's or the ring's capacity.
                answers = [h.send(0, seq, 20000) for seq in range(1, 21)]
                failed = [a for a in answers if a["ev"] == "send_failed"]
                if name == "queue_fixed":
                    self.assertEqual(failed, [])  # a file has room: sends keep succeeding
                else:
                    # At once: the pipe's read end is closed everywhere (EPIPE), the ring
                    # has its closed flag; and so on for every later send.
                    self.assertEqual(failed, answers)
                    self.assertTrue(all(a["disconnected"] for a in failed), failed)
                    self.assertIn("Disconnected" if name == "shm_fixed" else "BrokenPipe",
                                  failed[0]["error"])

    def test_shm_killed_receiver_never_hangs_a_sender(self):
        with program("shm_fixed", 1) as h:
            os.kill(h.receiver.hello["pid"], signal.SIGKILL)
            self.assertIsNone(h.receiver.readline())
            # The ring holds 256 KiB: the fifth message of 60000 bytes finds no room, and
            # the sender sees the receiver's end of the space pipe hang up.
            answers = [h.send(0, seq, 60000) for seq in range(5)]
            self.assertEqual([a["ev"] for a in answers[:4]], ["sent"] * 4)
            self.assertEqual(answers[4]["ev"], "send_failed")
            self.assertTrue(answers[4]["disconnected"])

    def test_pipe_write_interrupted_by_a_signal_storm_is_finished(self):
        with program("pipe_fixed", 1) as h:
            for seq in range(3):
                self.assertEqual(h.send(0, seq, 20000)["ev"], "sent")
            pid = h.senders[0].hello["pid"]
            with Storm(pid) as storm:
                # 60012 bytes of 65536 are taken: this frame blocks half-way, in write.
                h.send_start(0, 3, 20000)
                wait_until(lambda: blocked_in_write(pid), "the sender to block in write")
                time.sleep(0.2)  # more of the storm while it is blocked
                events = h.recv(4)
            self.assertGreater(storm.sent, 10)
            self.assertEqual(h.send_finish(0, 3)["ev"], "sent")
            self.assertEqual([message_of(e) for e in events],
                             [expected(h, 0, seq, 20000) for seq in range(4)])

    def test_pipe_sender_killed_inside_a_frame_is_a_cut_off(self):
        with program("pipe_fixed", 1) as h:
            for seq in range(3):
                self.assertEqual(h.send(0, seq, 20000)["ev"], "sent")
            pid = h.senders[0].hello["pid"]
            h.send_start(0, 3, 20000)
            wait_until(lambda: blocked_in_write(pid), "the sender to block in write")
            os.kill(pid, signal.SIGKILL)
            # Dead, not only signalled: a writer woken by SIGKILL goes on copying into
            # room a reader made before it stops, so read only once its descriptors are
            # closed (its control connection ends with them).
            self.assertIsNone(h.senders[0].readline())
            events = h.recv(5)
            self.assertEqual([e["ev"] for e in events], ["received"] * 3 + ["cut_off"])
            self.assertIn("end of file after", events[3]["error"])


class TutorialPrograms(unittest.TestCase):
    """Each tutorial program runs under the protocol and shows its mistakes."""

    def tutorial(self, name, senders=1):
        return FakeHarness([sys.executable, os.path.join(EXAMPLES, name + ".py")], senders=senders)

    def test_pipe_glues_and_splits_messages_and_never_ends(self):
        with self.tutorial("tutorial_pipe") as h:
            m0, m1 = d.gen(h.seed, 0, 0, 100), d.gen(h.seed, 0, 1, 100)
            h.send(0, 0, 100)
            h.send(0, 1, 100)
            (glued,) = h.recv(1)
            self.assertEqual(message_of(glued), m0 + m1)  # corrupted (and m1 lost)
            h.send(0, 2, 2000)
            (first, rest) = h.recv(2)
            m2 = d.gen(h.seed, 0, 2, 2000)
            self.assertEqual(message_of(first), m2[:1024])  # corrupted
            self.assertEqual(message_of(rest), m2[1024:])  # unexpected
            h.exit_role(h.senders[0])
            # Every sender is gone, but the receiver holds a write end itself: no end of
            # stream ever comes (hung).
            h.receiver.write({"op": "recv", "count": 1})
            self.assertEqual(h.receiver.expect()["ev"], "receiving")
            with self.assertRaises(HarnessError):
                h.receiver.expect(timeout=1.5)

    def test_shm_stride_overwrites_the_previous_message(self):
        with self.tutorial("tutorial_shm") as h:
            m0, m1 = d.gen(h.seed, 0, 0, 100), d.gen(h.seed, 0, 1, 100)
            h.send(0, 0, 100)
            h.send(0, 1, 100)
            first, second = [message_of(e) for e in h.recv(2)]
            self.assertNotEqual(first, m0)  # corrupted
            self.assertEqual(first, (100).to_bytes(4, "little") + m1[:96])
            self.assertEqual(second, m1)

    def test_queue_reads_the_wrong_slot_and_refuses_long_messages(self):
        with self.tutorial("tutorial_queue") as h:
            m1 = d.gen(h.seed, 0, 1, 100)
            h.send(0, 0, 100)
            h.send(0, 1, 100)
            (event,) = h.recv(1)
            # Message 0's place is read from message 1's slot, only 8 bytes of it, and
            # its trailing NULs stripped: 5 bytes of message 1's identity.
            self.assertEqual(message_of(event), m1[:8].rstrip(b"\0"))
            self.assertEqual(len(message_of(event)), 5)
            refused = h.send(0, 2, 5000)
            self.assertEqual((refused["ev"], refused["disconnected"]), ("send_failed", False))
            self.assertIn("No more space in queue.", refused["error"])

    def test_queue_lock_excludes_nobody(self):
        # The flock the parent takes before fork belongs to the open file description the
        # roles inherit: a role's LOCK_EX | LOCK_NB is granted while the "lock" is held.
        with self.tutorial("tutorial_queue") as h:
            pid = h.senders[0].hello["pid"]
            fds = os.listdir("/proc/%d/fd" % pid)
            queue = [fd for fd in fds if os.readlink("/proc/%d/fd/%s" % (pid, fd)).endswith("/myqueue")]
            self.assertEqual(len(queue), 1)
            with open("/proc/locks") as f:
                locks = f.read()
            ino = os.stat(os.path.join(h.dir, "myqueue")).st_ino
            held = [line for line in locks.splitlines() if (":%d " % ino) in line and "FLOCK" in line]
            self.assertEqual(len(held), 1, locks)  # one lock, held by the parent
            self.assertEqual(h.send(0, 0, 10)["ev"], "sent")  # granted at once to the sender


if __name__ == "__main__":
    unittest.main()
