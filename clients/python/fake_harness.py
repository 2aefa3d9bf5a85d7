"""A small stand-in for the harness side of the driver protocol, for tests only.

``FakeHarness(argv, senders)`` makes a case directory and a control socket, starts the
program (in its own process group, with the ``IPCPROP_*`` variables), accepts its roles
and checks their hellos (the ``pid`` against the socket's peer credentials, each sender
index once), then lets a test send commands and read the events back.  Every event is
checked as it is read: a JSON object, one line, ``t`` an integer that does not go
backwards within a role and is not later than the moment the line was read.  Anything
wrong raises ``HarnessError``.  Use it as a context manager: on the way out it kills
whatever is left of the program's process group and removes the directory.
"""

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import ipcprop_driver  # noqa: E402


class HarnessError(AssertionError):
    """The program broke the protocol, or did not answer in time."""


class Conn:
    """One role's control connection, seen from the harness."""

    def __init__(self, sock, harness):
        self.sock = sock
        self.harness = harness
        self.buf = b""
        self.last_t = None
        self.hello = None
        self.events = []
        ucred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        self.peer_pid = struct.unpack("3i", ucred)[0]

    def write(self, command):
        self.sock.sendall(json.dumps(command).encode() + b"\n")

    def readline(self, timeout=None):
        """The next line as a dict, or None at the end of the connection."""
        if timeout is None:
            timeout = self.harness.timeout
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError("no line from %s within %.1f s" % (self.name(), timeout))
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                if self.buf:
                    raise HarnessError("%s: partial line at the end: %r" % (self.name(), self.buf))
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        now = time.monotonic_ns()
        try:
            event = json.loads(line)
        except ValueError:
            raise HarnessError("%s: not JSON: %r" % (self.name(), line)) from None
        if not isinstance(event, dict):
            raise HarnessError("%s: not an object: %r" % (self.name(), line))
        t = event.get("t")
        if not isinstance(t, int) or isinstance(t, bool):
            raise HarnessError("%s: no integer t: %r" % (self.name(), line))
        if t > now:
            raise HarnessError("%s: t %d is later than the read %d" % (self.name(), t, now))
        if self.last_t is not None and t < self.last_t:
            raise HarnessError("%s: t went backwards: %r" % (self.name(), line))
        if t < self.harness.started_ns:
            raise HarnessError("%s: t before the program started: %r" % (self.name(), line))
        self.last_t = t
        self.events.append(event)
        return event

    def expect(self, timeout=None):
        event = self.readline(timeout)
        if event is None:
            raise HarnessError("%s: connection ended (stderr: %s)" % (self.name(), self.harness.stderr()))
        return event

    def name(self):
        if self.hello is None:
            return "a role"
        if self.hello.get("hello") == "sender":
            return "sender %s" % self.hello.get("index")
        return "the receiver"


class FakeHarness:
    """Start ``argv`` as a program under test with ``senders`` senders; see the module
    docstring.  ``env`` adds variables.

    ``case_dir`` is an existing directory to give as ``IPCPROP_DIR`` (the caller owns it
    and removes it; the control socket is then made elsewhere), to run a program twice on
    the same storage.  ``recover=True`` makes the run a recovery run (``IPCPROP_RECOVER=1``,
    PROTOCOL.md section 9): only the receiver may connect; a sender's hello is a
    ``HarnessError``."""

    def __init__(self, argv, senders=1, timeout=10.0, env=None, seed=12345678901234567890,
                 case_dir=None, recover=False):
        self.timeout = timeout
        self.senders_n = senders
        self.seed = seed
        self.recover = recover
        self.tmp = tempfile.TemporaryDirectory(prefix="ipcprop-fake-")
        if case_dir is None:
            self.dir = os.path.join(self.tmp.name, "case")
            os.mkdir(self.dir)
            self.control = os.path.join(self.dir, "control")
        else:
            self.dir = case_dir
            self.control = os.path.join(self.tmp.name, "control")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.control)
        self.listener.listen(64)
        variables = dict(os.environ)
        for key in list(variables):
            if key.startswith("IPCPROP_"):
                del variables[key]
        variables.update({
            "IPCPROP_PROTOCOL": "1",
            "IPCPROP_CONTROL": self.control,
            "IPCPROP_SENDERS": str(senders),
            "IPCPROP_DIR": self.dir,
            "IPCPROP_CASE": "ipcprop-%d-%d" % (os.getpid(), id(self) % 100000),
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        if recover:
            variables["IPCPROP_RECOVER"] = "1"
        if env:
            variables.update(env)
        self.err_path = os.path.join(self.tmp.name, "stderr")
        self.out_path = os.path.join(self.tmp.name, "stdout")
        self.started_ns = time.monotonic_ns()
        with open(self.err_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(argv, env=variables, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, start_new_session=True)
        self.senders = {}
        self.receiver = None
        self.conns = []

    # --- lifecycle ---

    def __enter__(self):
        try:
            self.accept_roles()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def cleanup(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for conn in self.conns:
            conn.sock.close()
        self.listener.close()
        self.tmp.cleanup()

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")[-3000:]
        except OSError:
            return ""

    def accept_roles(self):
        deadline = time.monotonic() + self.timeout
        while (not self.recover and len(self.senders) < self.senders_n) or self.receiver is None:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.listener], [], [], max(left, 0))
            if not ready:
                raise HarnessError("roles did not all connect (stderr: %s)" % self.stderr())
            sock, _ = self.listener.accept()
            conn = Conn(sock, self)
            self.conns.append(conn)
            hello = conn.expect()
            if hello.get("protocol") != 1 or "hello" not in hello:
                raise HarnessError("bad hello %r" % hello)
            if hello.get("pid") != conn.peer_pid:
                raise HarnessError("hello pid %r is not the peer's %d" % (hello.get("pid"), conn.peer_pid))
            conn.hello = hello
            if hello["hello"] == "sender" and self.recover:
                raise HarnessError("a sender's hello in a recovery run: %r" % hello)
            if hello["hello"] == "sender":
                index = hello.get("index")
                if not isinstance(index, int) or not 0 <= index < self.senders_n or index in self.senders:
                    raise HarnessError("bad sender index in %r" % hello)
                self.senders[index] = conn
            elif hello["hello"] == "receiver" and self.receiver is None:
                self.receiver = conn
            else:
                raise HarnessError("unexpected hello %r" % hello)

    def wait(self, timeout=None):
        """The program's exit status (waits for it)."""
        return self.proc.wait(timeout if timeout is not None else self.timeout)

    # --- commands ---

    def send_start(self, sender, seq, length, data=None):
        command = {"op": "send", "seq": seq, "len": length, "sender": sender, "seed": str(self.seed)}
        if data is not None:
            command["data"] = data.hex()
        conn = self.senders[sender]
        conn.write(command)
        sending = conn.expect()
        if sending != {"ev": "sending", "seq": seq, "t": sending.get("t")}:
            raise HarnessError("expected sending %d, got %r" % (seq, sending))
        return sending

    def send_finish(self, sender, seq):
        event = self.senders[sender].expect()
        if event.get("seq") != seq or event.get("ev") not in ("sent", "send_failed"):
            raise HarnessError("expected sent/send_failed %d, got %r" % (seq, event))
        return event

    def send(self, sender, seq, length, data=None):
        """Send one message; return the answer (``sent`` or ``send_failed``)."""
        self.send_start(sender, seq, length, data)
        return self.send_finish(sender, seq)

    def recv(self, count, timeout=None):
        """Ask for ``count`` messages; return the events after each ``receiving``."""
        self.receiver.write({"op": "recv", "count": count})
        return self.recv_events(count, 0, timeout)

    def recv_events(self, count, done, timeout=None):
        events = []
        for _ in range(done, count):
            receiving = self.receiver.expect(timeout)
            if receiving.get("ev") != "receiving":
                raise HarnessError("expected receiving, got %r" % receiving)
            event = self.receiver.expect(timeout)
            events.append(event)
            if event.get("ev") != "received":
                break
        return events

    def close_receiver(self):
        self.receiver.write({"op": "close"})
        event = self.receiver.expect()
        if event.get("ev") != "closed":
            raise HarnessError("expected closed, got %r" % event)

    def exit_role(self, conn):
        conn.write({"op": "exit"})
        bye = conn.expect()
        if bye.get("ev") != "bye":
            raise HarnessError("%s: expected bye, got %r" % (conn.name(), bye))
        after = conn.readline()
        if after is not None:
            raise HarnessError("%s: a line after bye: %r" % (conn.name(), after))

    def exit_all(self):
        for index in sorted(self.senders):
            self.exit_role(self.senders[index])
        self.exit_role(self.receiver)


def message_of(event):
    """What a ``received`` event says about its message: its bytes (``data``), or the
    tuple ``(len, crc, id)``."""
    if "data" in event:
        return bytes.fromhex(event["data"])
    return (event["len"], event["crc"], event["id"])


def describe(message):
    """``message`` as ``message_of`` would give it back from a correct receiver."""
    if len(message) <= ipcprop_driver.INLINE_DATA_MAX:
        return bytes(message)
    return (len(message), ipcprop_driver.crc32c(message), bytes(message[:8]).hex())
