"""Tests of ipcprop_driver: the generator and CRC-32C against the protocol's vectors, the
environment, and whole conversations of a sender and a receiver against a fake harness.

Run: ``python3 -m unittest discover -s clients/python`` (``cargo test --test
clients_python`` runs it)."""

import os
import re
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import ipcprop_driver as d  # noqa: E402
from fake_harness import FakeHarness, HarnessError, describe, message_of  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))

# A program with a sender (forked) and a receiver (the main process) whose "channel" is
# scripted: the sender logs what it is given to send (and fails for some lengths), the
# receiver returns what SCRIPT lists.
ROLES = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, %r)
    import ipcprop_driver as d

    e = d.env()
    log = os.path.join(e.dir, "log")

    def note(text):
        with open(log, "a") as f:
            f.write(text + "\\n")

    def send(m):
        if len(m) == 13:
            raise d.Disconnected("receiver gone")
        if len(m) == 14:
            raise BrokenPipeError(32, "Broken pipe")
        if len(m) == 15:
            raise ValueError("ring full")
        note("sent " + m.hex())

    script = [item for item in os.environ.get("SCRIPT", "").split(",") if item]
    sender = [None]

    def recv():
        item = script.pop(0)
        if item == "eos":
            return None
        if item == "cutoff":
            raise d.CutOff("stream ended inside a message")
        if item == "fail":
            raise OSError(5, "Input/output error")
        if item == "waitsender":
            _, status = os.waitpid(sender[0], 0)
            sender[0] = None
            return b"exit %%d" %% os.WEXITSTATUS(status)
        if item.startswith("gen"):
            return d.gen(9, 0, 0, int(item[3:]))
        return bytes.fromhex(item)

    sender[0] = d.spawn(lambda: d.serve_sender(
        0, send, close=lambda: note("sender close"), data=os.environ.get("DATA") == "1"))
    d.serve_receiver(recv, close=lambda: note("receiver close"))
    note("receiver returned")
    sys.exit(d.wait_children([p for p in sender if p]))
    """
    % HERE
)


def roles(script="", data=False):
    env = {"SCRIPT": script, "DATA": "1" if data else "0"}
    return FakeHarness([sys.executable, "-c", ROLES], senders=1, env=env)


def log_lines(h):
    path = os.path.join(h.dir, "log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def keys(event):
    return sorted(event)


class Generator(unittest.TestCase):
    def test_protocol_vectors(self):
        self.assertEqual(d.gen(1, 0, 0, 0), b"")
        self.assertEqual(d.gen(1, 0, 0, 3).hex(), "42f8bd")
        self.assertEqual(d.gen(1, 0, 1, 8).hex(), "0000000001000000")
        self.assertEqual(d.gen(42, 3, 7, 21).hex(), "0300000007000000decdc9f9f6881c6a079774d7bb")
        self.assertEqual(
            d.gen("16045690984503111693", 1, 65535, 40).hex(),
            "01000000ffff0000a95d179da0275c15b70195ff7344c947ef058dfc788d777fc7593cd2535d090f",
        )

    def test_lengths_and_prefixes(self):
        # Every length is exact, and a longer message is not a prefix extension of a
        # shorter one (the length is mixed into the state).
        for n in range(0, 40):
            self.assertEqual(len(d.gen(7, 1, 2, n)), n)
        self.assertNotEqual(d.gen(7, 1, 2, 20)[8:12], d.gen(7, 1, 2, 21)[8:12])
        self.assertEqual(d.gen(7, 1, 2, 70000)[:8], bytes.fromhex("0100000002000000"))


class Crc32c(unittest.TestCase):
    def test_vectors(self):
        self.assertEqual(d.crc32c(b"123456789"), 3808858755)
        self.assertEqual(d.crc32c(b""), 0)
        # RFC 3720 (iSCSI), appendix B.4.
        self.assertEqual(d.crc32c(bytes(32)), 0x8A9136AA)
        self.assertEqual(d.crc32c(b"\xff" * 32), 0x62A8AB43)
        self.assertEqual(d.crc32c(bytes(range(32))), 0x46DD794E)
        self.assertEqual(d.crc32c(bytes(range(31, -1, -1))), 0x113FDB5C)

    def test_incremental(self):
        data = d.gen(3, 0, 0, 1000)
        self.assertEqual(d.crc32c(data[400:], d.crc32c(data[:400])), d.crc32c(data))


class Environment(unittest.TestCase):
    BASE = {
        "IPCPROP_PROTOCOL": "1",
        "IPCPROP_CONTROL": "/tmp/x/control",
        "IPCPROP_SENDERS": "3",
        "IPCPROP_DIR": "/tmp/x",
        "IPCPROP_CASE": "ipcprop-1-2",
    }

    def test_one_program_mode(self):
        e = d.env(dict(self.BASE))
        self.assertEqual((e.senders, e.dir, e.case, e.control, e.role, e.index),
                         (3, "/tmp/x", "ipcprop-1-2", "/tmp/x/control", None, None))

    def test_two_program_mode(self):
        e = d.env(dict(self.BASE, IPCPROP_ROLE="sender", IPCPROP_INDEX="2"))
        self.assertEqual((e.role, e.index), ("sender", 2))
        e = d.env(dict(self.BASE, IPCPROP_ROLE="receiver"))
        self.assertEqual((e.role, e.index), ("receiver", None))

    def test_recover(self):
        self.assertIs(d.env(dict(self.BASE)).recover, False)  # absent: a normal run
        self.assertIs(d.env(dict(self.BASE, IPCPROP_RECOVER="")).recover, False)
        self.assertIs(d.env(dict(self.BASE, IPCPROP_RECOVER="0")).recover, False)
        self.assertIs(d.env(dict(self.BASE, IPCPROP_RECOVER="1")).recover, True)
        e = d.env(dict(self.BASE, IPCPROP_ROLE="receiver", IPCPROP_RECOVER="1"))
        self.assertEqual((e.role, e.recover), ("receiver", True))
        self.assertIn("recover=True", repr(e))

    def test_env_constructor_is_backwards_compatible(self):
        e = d.Env(1, "/c", 2, "/d", "k")
        self.assertEqual((e.role, e.index, e.recover), (None, None, False))
        self.assertEqual(repr(e), "Env(protocol=1, control='/c', senders=2, dir='/d', "
                                  "case='k', role=None, index=None, recover=False)")
        self.assertIs(d.Env(1, "/c", 2, "/d", "k", "sender", 0, recover=True).recover, True)

    def test_errors_name_the_variable(self):
        cases = [
            ({"IPCPROP_CONTROL": None}, "IPCPROP_CONTROL is not set"),
            ({"IPCPROP_SENDERS": "two"}, "IPCPROP_SENDERS='two'"),
            ({"IPCPROP_SENDERS": "0"}, "IPCPROP_SENDERS='0' is below 1"),
            ({"IPCPROP_PROTOCOL": "2"}, "IPCPROP_PROTOCOL=2"),
            ({"IPCPROP_ROLE": "both"}, "IPCPROP_ROLE='both'"),
            ({"IPCPROP_ROLE": "sender"}, "IPCPROP_INDEX is not set"),
            ({"IPCPROP_ROLE": "sender", "IPCPROP_INDEX": "3"}, "out of range"),
            ({"IPCPROP_INDEX": "0"}, "IPCPROP_ROLE is not sender"),
            ({"IPCPROP_RECOVER": "yes"}, "IPCPROP_RECOVER='yes' is neither 1"),
            ({"IPCPROP_RECOVER": "2"}, "IPCPROP_RECOVER='2'"),
            ({"IPCPROP_RECOVER": " 1"}, "IPCPROP_RECOVER=' 1'"),
        ]
        for change, text in cases:
            environ = dict(self.BASE, **change)
            environ = {k: v for k, v in environ.items() if v is not None}
            with self.assertRaises(d.ProtocolError) as caught:
                d.env(environ)
            self.assertIn(text, str(caught.exception))


class Conversation(unittest.TestCase):
    def test_sender(self):
        with roles() as h:
            sender = h.senders[0]
            self.assertEqual(keys(sender.hello), ["hello", "index", "pid", "protocol", "t"])
            self.assertEqual(sender.hello["index"], 0)
            self.assertNotEqual(sender.hello["pid"], h.proc.pid)  # the forked child's own pid
            self.assertEqual(keys(h.receiver.hello), ["hello", "pid", "protocol", "t"])
            self.assertEqual(h.receiver.hello["pid"], h.proc.pid)
            # SIGURG (23) is caught: a storm interrupts blocking calls.
            with open("/proc/%d/status" % sender.hello["pid"]) as f:
                caught = int(re.search(r"SigCgt:\s*([0-9a-f]+)", f.read()).group(1), 16)
            self.assertTrue(caught & (1 << 22), "SIGURG has no handler")

            for seq, length in enumerate([0, 8, 21, 5000]):
                event = h.send(0, seq, length)
                self.assertEqual(event, {"ev": "sent", "seq": seq, "t": event["t"]})
            gone = h.send(0, 4, 13)
            self.assertEqual(gone, {"ev": "send_failed", "seq": 4, "error": "Disconnected: receiver gone",
                                    "disconnected": True, "t": gone["t"]})
            pipe = h.send(0, 5, 14)
            self.assertTrue(pipe["disconnected"])
            self.assertIn("BrokenPipeError", pipe["error"])
            full = h.send(0, 6, 15)
            self.assertEqual((full["ev"], full["disconnected"], full["error"]),
                             ("send_failed", False, "ValueError: ring full"))
            h.exit_all()
            self.assertEqual(h.wait(), 0)
            expected = ["sent " + d.gen(h.seed, 0, seq, n).hex() for seq, n in enumerate([0, 8, 21, 5000])]
            lines = log_lines(h)
            self.assertEqual([line for line in lines if line.startswith("sent")], expected)
            self.assertEqual(lines.count("sender close"), 1)
            self.assertEqual(lines.count("receiver close"), 1)

    def test_sender_asking_for_data(self):
        with roles(data=True) as h:
            self.assertIs(h.senders[0].hello.get("data"), True)
            self.assertEqual(h.send(0, 0, 2, data=b"\x00\xff")["ev"], "sent")
            h.exit_all()
            self.assertEqual(h.wait(), 0)
            self.assertIn("sent 00ff", log_lines(h))

    def test_receiver(self):
        with roles("2a,gen5000,,eos") as h:
            events = h.recv(5)
            self.assertEqual(events[0], {"ev": "received", "data": "2a", "t": events[0]["t"]})
            big = d.gen(9, 0, 0, 5000)
            self.assertEqual(events[1], {"ev": "received", "len": 5000, "crc": d.crc32c(big),
                                         "id": big[:8].hex(), "t": events[1]["t"]})
            self.assertEqual(events[2], {"ev": "eos", "t": events[2]["t"]})
            self.assertEqual(len(events), 3)
            gots = [e["got"] for e in h.receiver.events if e.get("ev") == "receiving"]
            self.assertEqual(gots, [0, 1, 2])
            h.close_receiver()
            h.exit_all()
            self.assertEqual(h.wait(), 0)
            # close() once, by the close command, not again at exit.
            self.assertEqual(log_lines(h).count("receiver close"), 1)

    def test_inline_limit(self):
        with roles("gen4096,gen4097") as h:
            small, large = h.recv(2)
            self.assertEqual(message_of(small), d.gen(9, 0, 0, 4096))
            self.assertEqual(message_of(large), describe(d.gen(9, 0, 0, 4097)))
            h.exit_all()

    def test_cut_off(self):
        with roles("2a,cutoff") as h:
            events = h.recv(3)
            self.assertEqual([e["ev"] for e in events], ["received", "cut_off"])
            self.assertEqual(events[1]["error"], "CutOff: stream ended inside a message")
            self.assertEqual(keys(events[1]), ["error", "ev", "t"])
            h.exit_all()
            self.assertEqual(h.wait(), 0)

    def test_recv_failed(self):
        with roles("fail") as h:
            (event,) = h.recv(2)
            self.assertEqual(event["ev"], "recv_failed")
            self.assertIn("Input/output error", event["error"])
            h.exit_all()
            self.assertEqual(h.wait(), 0)

    def test_lost_control_connection_ends_the_role(self):
        with roles("waitsender") as h:
            h.senders[0].sock.close()  # the harness is gone, for the sender
            (event,) = h.recv(1)
            self.assertEqual(message_of(event), b"exit %d" % d.EXIT_CONTROL_LOST)
            h.receiver.sock.close()
            self.assertEqual(h.wait(), d.EXIT_CONTROL_LOST)
            self.assertNotIn("receiver returned", log_lines(h))

    def test_fake_harness_catches_a_silent_role(self):
        # The fake harness itself: a receiver that never answers is reported, not waited
        # on forever (what makes the hang checks of the examples meaningful).
        program = "import time; import socket, os; s = socket.socket(socket.AF_UNIX); " \
                  "s.connect(os.environ['IPCPROP_CONTROL']); time.sleep(60)"
        with self.assertRaises(HarnessError):
            with FakeHarness([sys.executable, "-c", program], senders=1, timeout=1.0):
                pass


class Processes(unittest.TestCase):
    def test_spawn_and_wait_children(self):
        def fails():
            raise RuntimeError("on purpose (this traceback is expected)")

        with open(os.devnull, "w") as null:
            saved = os.dup(2)
            os.dup2(null.fileno(), 2)  # the child's traceback, out of the test's output
            try:
                ok = d.spawn(lambda: None)
                bad = d.spawn(fails)
                code = d.spawn(lambda: sys.exit(5))
                codes = []
                for pid in (ok, bad, code):
                    _, status = os.waitpid(pid, 0)
                    codes.append(os.WEXITSTATUS(status))
                killed = d.spawn(lambda: os.kill(os.getpid(), 9))
                self.assertEqual(d.wait_children([killed, d.spawn(lambda: None)]), 0)
                self.assertEqual(d.wait_children([d.spawn(fails)]), 1)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        self.assertEqual(codes, [0, 70, 5])


    def test_gate_holds_children_until_opened(self):
        gate = d.Gate()
        r, w = os.pipe()
        try:
            pid = d.spawn(lambda: os.write(w, b"ran"), gate=gate)
            # The child is blocked reading the gate, and has not run its body.
            deadline = time.monotonic() + 10
            while True:
                with open("/proc/%d/syscall" % pid) as f:
                    if f.read().split()[:1] == ["0"]:  # read(2)
                        break
                self.assertLess(time.monotonic(), deadline, "the child never blocked")
                time.sleep(0.01)
            os.set_blocking(r, False)
            with self.assertRaises(BlockingIOError):
                os.read(r, 3)
            gate.open()
            os.set_blocking(r, True)
            self.assertEqual(os.read(r, 3), b"ran")
            self.assertEqual(d.wait_children([pid]), 0)
        finally:
            os.close(r)
            os.close(w)


class Documentation(unittest.TestCase):
    """The tiny program of the module docstring (and of the README) runs as shown."""

    def docstring_program(self):
        match = re.search(r"::\n\n((?:    .*\n|\n)+)", d.__doc__)
        return textwrap.dedent(match.group(1))

    def test_readme_shows_the_same_program(self):
        with open(os.path.join(HERE, "README.md")) as f:
            readme = f.read()
        block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
        self.assertEqual(block.strip(), self.docstring_program().strip())

    def test_docstring_program_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "prog.py")
            with open(path, "w") as f:
                f.write(self.docstring_program().replace(
                    '"clients/python"', repr(HERE)))
            with FakeHarness([sys.executable, path], senders=1) as h:
                lengths = [0, 1, 8, 5000]
                for seq, n in enumerate(lengths):
                    self.assertEqual(h.send(0, seq, n)["ev"], "sent")
                events = h.recv(len(lengths))
                self.assertEqual([message_of(e) for e in events],
                                 [describe(d.gen(h.seed, 0, s, n)) for s, n in enumerate(lengths)])
                h.exit_role(h.senders[0])
                self.assertEqual([e["ev"] for e in h.recv(1)], ["eos"])
                h.exit_role(h.receiver)
                self.assertEqual(h.wait(), 0)


if __name__ == "__main__":
    unittest.main()
