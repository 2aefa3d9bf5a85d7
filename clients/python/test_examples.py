"""The Python programs of examples/python, run end to end against the fake harness:
the fixed channels deliver every message whole, once and in order, end their stream when
the senders are gone (also killed ones), and never hang a sender; the persistent queue
stores its receiver's position before each report and resumes there in a recovery run
(its functions in this process, and both runs under the fake harness), while each broken
variant of tests/exec/queue_broken.py is caught; each tutorial program shows its bugs.

Run: ``python3 -m unittest discover -s clients/python`` (``cargo test --test
clients_python`` runs it)."""

import importlib.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import ipcprop_driver as d  # noqa: E402
from fake_harness import FakeHarness, HarnessError, describe, message_of  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(ROOT, "examples", "python")
QUEUE_BROKEN = os.path.join(ROOT, "tests", "exec", "queue_broken.py")
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


def load(path, name):
    """A fresh copy of the module at ``path`` (its own globals, so patches stay in it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def queue_fixed():
    return load(os.path.join(EXAMPLES, "queue_fixed.py"), "queue_fixed_under_test")


def queue_broken(mode):
    """queue_fixed with the mistake of tests/exec/queue_broken.py's ``mode``."""
    broken = load(QUEUE_BROKEN, "queue_broken_under_test")
    q = queue_fixed()
    broken.MODES[mode](q)
    return q


def message(k):
    return d.gen(7, 0, k, 10 + 3 * k)


def queue_scenario(q, tmp, sent=5, taken=2):
    """Run a persistent queue's roles in this process, through the functions its main
    uses: a new case's queue, ``sent`` messages sent, ``taken`` received (the receiver
    then "killed": its descriptors dropped without a close), then a recovery run's
    queue and receiver, read to the end of the stream.  Returns the positions stored in
    the file when each of the ``taken`` messages was handed over to be reported, the file's
    bytes before and after the recovery run opened it, and what the recovery run
    delivered."""
    path = os.path.join(tmp, q.QUEUE)
    q.open_queue(path, False)
    alive_r, alive_w = os.pipe()
    os.set_blocking(alive_r, False)
    os.set_blocking(alive_w, False)
    sender = q.Sender(path, alive_w)
    for k in range(sent):
        sender.send(message(k))
    sender.close()
    receiver = q.Receiver(path, alive_r)
    stored = []
    with open(path, "rb") as f:
        for _ in range(taken):
            got = receiver.recv()
            # What a reader of the file sees at the instant the message is reported.
            stored.append((got, q.WORD.unpack(os.pread(f.fileno(), 8, q.POSITION_AT))[0]))
    os.close(receiver.fd)  # SIGKILL: no close, no exit
    os.close(receiver.alive_r)
    with open(path, "rb") as f:
        before = f.read()
    q.open_queue(path, True)
    with open(path, "rb") as f:
        after = f.read()
    recovered = q.Receiver(path, None)
    delivered = []
    while True:
        got = recovered.recv()
        if got is None:
            break
        delivered.append(got)
        if len(delivered) > 2 * sent:
            break
    recovered.close()
    return stored, before, after, delivered


def record_end(k):
    """The file offset after record ``k`` (16-byte header, 8-byte record heads)."""
    return 16 + sum(8 + len(message(j)) for j in range(k + 1))


class PersistentQueue(unittest.TestCase):
    """queue_fixed.py declared persistent: the receiver's position is stored in the file
    before each message is reported, and a recovery run (IPCPROP_RECOVER=1) resumes
    there, from the file the killed run left."""

    def test_capabilities_declare_it_persistent(self):
        with open(os.path.join(EXAMPLES, "queue_fixed.ipcprop.toml")) as f:
            self.assertIn("\npersistent = true\n", f.read())

    def test_recovery_resumes_at_the_stored_position_and_ends(self):
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as tmp:
            stored, before, after, delivered = queue_scenario(queue_fixed(), tmp)
        # Each message's position is in the file by the time it is handed over.
        self.assertEqual(stored, [(message(0), record_end(0)), (message(1), record_end(1))])
        self.assertEqual(after, before)  # the recovery run neither truncates nor rewrites
        self.assertEqual(len(before), record_end(4))
        self.assertEqual(delivered, [message(k) for k in range(2, 5)])  # then eos

    def test_recovery_of_a_receiver_killed_before_its_first_message(self):
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as tmp:
            _, _, _, delivered = queue_scenario(queue_fixed(), tmp, sent=3, taken=0)
        self.assertEqual(delivered, [message(k) for k in range(3)])

    def test_the_scenario_catches_each_broken_variant(self):
        # The test above must fail for each mistake of tests/exec/queue_broken.py.
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as tmp:
            stored, _, _, delivered = queue_scenario(queue_broken("forget-position"), tmp)
        self.assertEqual(stored, [(message(0), 16), (message(1), 16)])
        self.assertEqual(delivered, [message(k) for k in range(5)])  # 0 and 1 twice
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as tmp:
            stored, _, _, delivered = queue_scenario(queue_broken("report-then-commit"), tmp)
        self.assertEqual(stored, [(message(0), 16), (message(1), record_end(0))])
        self.assertEqual(delivered, [message(k) for k in range(1, 5)])  # 1 twice
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as tmp:
            _, before, after, delivered = queue_scenario(queue_broken("fresh-start"), tmp)
        self.assertNotEqual(after, before)
        self.assertEqual(delivered, [])  # 2, 3 and 4 lost

    def test_recovery_without_the_queue_file_is_an_error(self):
        q = queue_fixed()
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as tmp:
            path = os.path.join(tmp, q.QUEUE)
            with self.assertRaises(q.QueueUnusable) as caught:
                q.open_queue(path, True)
            self.assertIn("does not exist", str(caught.exception))
            self.assertEqual(os.listdir(tmp), [])  # not created
            # The program: status 1, the reason on standard error, before any role.
            environ = {k: v for k, v in os.environ.items() if not k.startswith("IPCPROP_")}
            environ.update({"IPCPROP_PROTOCOL": "1", "IPCPROP_SENDERS": "2",
                            "IPCPROP_CONTROL": os.path.join(tmp, "no-control"),
                            "IPCPROP_DIR": tmp, "IPCPROP_CASE": "ipcprop-1-1",
                            "IPCPROP_RECOVER": "1", "PYTHONDONTWRITEBYTECODE": "1"})
            done = subprocess.run([sys.executable, os.path.join(EXAMPLES, "queue_fixed.py")],
                                  env=environ, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=60)
            self.assertEqual(done.returncode, 1, done.stderr)
            self.assertIn(b"IPCPROP_RECOVER=1 but the queue file", done.stderr)
            self.assertIn(b"does not exist", done.stderr)
            self.assertEqual(os.listdir(tmp), [])

    def test_a_short_queue_file_is_an_error_too(self):
        q = queue_fixed()
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as tmp:
            path = os.path.join(tmp, q.QUEUE)
            with open(path, "wb") as f:
                f.write(b"\0" * 8)
            with self.assertRaises(q.QueueUnusable) as caught:
                q.open_queue(path, True)
            self.assertIn("fewer than its 16-byte header", str(caught.exception))
            self.assertEqual(os.path.getsize(path), 8)

    def run_killed_then_recovered(self, argv):
        """Under the fake harness: 2 senders, 6 messages sent, 3 received, the receiver
        SIGKILLed, the senders told to exit; then the recovery run on the same directory,
        read to its end. Returns the messages (as ``message_of`` gives them) of both runs,
        and the expected ones in sending order."""
        with tempfile.TemporaryDirectory(prefix="ipcprop-queue-") as case_dir:
            with FakeHarness(argv, senders=2, case_dir=case_dir) as h:
                sent = []
                for seq in range(3):
                    for sender in (0, 1):
                        length = 5000 if seq == 1 else 100 + seq
                        self.assertEqual(h.send(sender, seq, length)["ev"], "sent")
                        sent.append(expected(h, sender, seq, length))
                first = [message_of(e) for e in h.recv(3)]
                os.kill(h.receiver.hello["pid"], signal.SIGKILL)
                self.assertIsNone(h.receiver.readline())
                for sender in (0, 1):
                    h.exit_role(h.senders[sender])
                h.wait()
            with FakeHarness(argv, senders=2, case_dir=case_dir, recover=True) as h:
                events = h.recv(20)
                self.assertEqual(events[-1]["ev"], "eos", events)
                second = [message_of(e) for e in events[:-1]]
                h.exit_role(h.receiver)
                self.assertEqual(h.wait(), 0, h.stderr())
                # Nobody else came: no sender in a recovery run.
                self.assertEqual(select.select([h.listener], [], [], 0.2)[0], [])
        return first, second, sent

    def test_recovery_run_under_the_fake_harness(self):
        first, second, sent = self.run_killed_then_recovered(
            [sys.executable, os.path.join(EXAMPLES, "queue_fixed.py")])
        self.assertEqual(first, sent[:3])
        self.assertEqual(second, sent[3:])  # every acknowledged message once, in order

    def test_broken_variants_under_the_fake_harness(self):
        outcomes = {}
        for mode in ("forget-position", "report-then-commit", "fresh-start"):
            first, second, sent = self.run_killed_then_recovered(
                [sys.executable, QUEUE_BROKEN, mode])
            self.assertEqual(first, sent[:3], mode)
            outcomes[mode] = second
        self.assertEqual(outcomes["forget-position"], sent)  # 3 duplicated
        self.assertEqual(outcomes["report-then-commit"], sent[2:])  # 1 duplicated
        self.assertEqual(outcomes["fresh-start"], [])  # 3 lost

    def test_broken_wrapper_refuses_an_unknown_mode(self):
        for args in ([], ["forget"], ["fresh-start", "extra"]):
            done = subprocess.run([sys.executable, QUEUE_BROKEN] + args, capture_output=True,
                                  stdin=subprocess.DEVNULL, timeout=60)
            self.assertEqual(done.returncode, 2, args)
            self.assertIn(b"forget-position, fresh-start, report-then-commit", done.stderr)


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
