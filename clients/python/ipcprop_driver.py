"""Client of the ipcprop driver protocol, version 1 (``docs/PROTOCOL.md``).

``ipcprop check --exec CMD`` tests IPC written in any language: it starts ``CMD``, whose
role processes (the senders and one receiver) each connect to the harness's control
socket and answer its commands.  This module is the Python side of that conversation.
It needs nothing but the standard library (Python 3.8 or later).

A program under test only has to make its channel and hand this module two things per
role: a ``send(message: bytes)`` for each sender and a ``recv() -> bytes | None`` for the
receiver.  A complete program (a pipe, one sender, messages framed by a 4-byte length)::

    import os, struct, sys
    sys.path.insert(0, "clients/python")
    import ipcprop_driver as d

    def read_exactly(fd, n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                if buf:
                    raise d.CutOff("end of stream inside a frame")
                return None
            buf += chunk
        return buf

    def write_all(fd, data):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def recv(r):
        head = read_exactly(r, 4)
        if head is None:
            return None                      # every sender is gone: end of stream
        body = read_exactly(r, struct.unpack("<I", head)[0])
        if body is None:
            raise d.CutOff("end of stream inside a frame")
        return body

    e = d.env()                              # IPCPROP_SENDERS, IPCPROP_DIR, ... (checked)
    r, w = os.pipe()
    if os.fork() == 0:                       # the sender
        os.close(r)
        d.serve_sender(0, lambda m: write_all(w, struct.pack("<I", len(m)) + m),
                       close=lambda: os.close(w))
        os._exit(0)
    os.close(w)                              # the receiver: the main process
    d.serve_receiver(lambda: recv(r), close=lambda: os.close(r))

Run it with ``ipcprop check --exec 'python3 prog.py' --max-len 65536``.

What the module does for a role (``serve_sender`` / ``serve_receiver``):

* connects to ``IPCPROP_CONTROL`` and says hello with its own pid;
* installs a no-op ``SIGURG`` handler: Python installs handlers without ``SA_RESTART``, so
  the harness's signal storms interrupt the channel's blocking system calls with
  ``EINTR``, as real signals do (Python itself retries ``os.read``/``os.write``/``poll``
  after a handler that returns, PEP 475, but a ``write`` interrupted after some bytes
  returns a short count: the channel must finish it);
* answers commands until ``exit``, each line written with one ``sendall`` and stamped with
  ``time.monotonic_ns()`` taken just before the write;
* exits the process at once (status 3) if the control connection ends without ``exit``:
  the harness is gone.

Persistence (section 9): a program declared ``persistent = true`` is started again
after a case in which its receiver was killed, with ``IPCPROP_RECOVER=1``
(``env().recover`` is then ``True``).  That recovery run starts the receiver role only
(no sender: a sender's hello is a protocol error), which opens the storage the killed run
left in ``IPCPROP_DIR`` (never creating it afresh), resumes at its stored position, and
either returns ``None`` from ``recv`` once it has read everything stored (``eos``) or
waits until the harness ends it.  ``examples/python/queue_fixed.py`` does this.

Errors: raise ``Disconnected`` (or let ``BrokenPipeError``/``ConnectionError`` through)
from ``send`` when the receiver is gone; raise ``CutOff`` from ``recv`` when the stream
ended inside a message; any other exception from ``send``/``recv`` is reported as a
failure with its text.  ``gen`` and ``crc32c`` are the protocol's message generator and
checksum, for programs and tests that want them.
"""

import json
import os
import signal
import socket
import struct
import sys
import time
import traceback

__all__ = [
    "PROTOCOL",
    "ProtocolError",
    "Disconnected",
    "CutOff",
    "Env",
    "env",
    "gen",
    "crc32c",
    "Role",
    "serve_sender",
    "serve_receiver",
    "install_sigurg_handler",
    "Gate",
    "spawn",
    "wait_children",
    "INLINE_DATA_MAX",
    "EXIT_CONTROL_LOST",
]

#: The protocol version this module speaks.
PROTOCOL = 1

#: A received message of at most this many bytes is reported by its bytes (``data``).
INLINE_DATA_MAX = 4096

#: The exit status of a role whose control connection ended without ``exit``.
EXIT_CONTROL_LOST = 3

_MASK = (1 << 64) - 1


class ProtocolError(Exception):
    """The harness (or the environment it set) broke the protocol: a missing or invalid
    ``IPCPROP_*`` variable, a line that is not a JSON object, an unknown command."""


class Disconnected(Exception):
    """Raise from a ``send`` callback: the receiver is gone (EPIPE, a closed socket).

    Reported as ``send_failed`` with ``"disconnected": true``; ``BrokenPipeError`` and
    the other ``ConnectionError`` subclasses count as disconnected too."""


class CutOff(Exception):
    """Raise from a ``recv`` callback: the stream ended inside a message (a sender died
    while writing it).  Reported as ``cut_off``."""


# --- environment -------------------------------------------------------------------------


class Env:
    """The case's environment, as set by the harness.

    Attributes: ``protocol`` (int), ``control`` (the control socket's path), ``senders``
    (int, at least 1), ``dir`` (the case's directory), ``case`` (the case's unique name),
    ``role`` (``None`` in one-program mode, else ``"sender"`` or ``"receiver"``),
    ``index`` (``None`` unless ``role`` is ``"sender"``: the sender's index) and
    ``recover`` (``True`` in the recovery run of a persistent program,
    ``IPCPROP_RECOVER=1``: only the receiver connects, and it must open the storage the
    killed run left, never create it afresh; ``False`` otherwise)."""

    __slots__ = ("protocol", "control", "senders", "dir", "case", "role", "index", "recover")

    def __init__(self, protocol, control, senders, dir, case, role=None, index=None,
                 recover=False):
        self.protocol = protocol
        self.control = control
        self.senders = senders
        self.dir = dir
        self.case = case
        self.role = role
        self.index = index
        self.recover = recover

    def __repr__(self):
        fields = ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)
        return "Env(%s)" % fields


def _var(environ, name, required=True):
    value = environ.get(name)
    if value is None or value == "":
        if required:
            raise ProtocolError(
                "%s is not set: run this program under `ipcprop check --exec` "
                "(the driver protocol, docs/PROTOCOL.md)" % name
            )
        return None
    return value


def _int_var(environ, name, minimum, required=True):
    value = _var(environ, name, required)
    if value is None:
        return None
    try:
        number = int(value, 10)
    except ValueError:
        raise ProtocolError("%s=%r is not a decimal integer" % (name, value)) from None
    if number < minimum:
        raise ProtocolError("%s=%r is below %d" % (name, value, minimum))
    return number


def env(environ=None):
    """Read and check the ``IPCPROP_*`` variables (of ``os.environ`` by default).

    Returns an ``Env``; raises ``ProtocolError`` naming the variable that is missing or
    invalid (another protocol version, a sender count below 1, an unknown role, an index
    out of range, an index without the sender role, an ``IPCPROP_RECOVER`` other than
    ``1`` or ``0``; unset or empty, it means ``0``)."""
    if environ is None:
        environ = os.environ
    protocol = _int_var(environ, "IPCPROP_PROTOCOL", 0)
    if protocol != PROTOCOL:
        raise ProtocolError(
            "IPCPROP_PROTOCOL=%d: this client speaks version %d" % (protocol, PROTOCOL)
        )
    control = _var(environ, "IPCPROP_CONTROL")
    senders = _int_var(environ, "IPCPROP_SENDERS", 1)
    case_dir = _var(environ, "IPCPROP_DIR")
    case = _var(environ, "IPCPROP_CASE")
    role = _var(environ, "IPCPROP_ROLE", required=False)
    if role not in (None, "sender", "receiver"):
        raise ProtocolError("IPCPROP_ROLE=%r is neither sender nor receiver" % role)
    index = _int_var(environ, "IPCPROP_INDEX", 0, required=(role == "sender"))
    if index is not None:
        if role != "sender":
            raise ProtocolError("IPCPROP_INDEX is set but IPCPROP_ROLE is not sender")
        if index >= senders:
            raise ProtocolError(
                "IPCPROP_INDEX=%d is out of range (IPCPROP_SENDERS=%d)" % (index, senders)
            )
    recover = _var(environ, "IPCPROP_RECOVER", required=False)
    if recover not in (None, "0", "1"):
        raise ProtocolError("IPCPROP_RECOVER=%r is neither 1 (a recovery run) nor 0" % recover)
    return Env(protocol, control, senders, case_dir, case, role, index,
               recover=(recover == "1"))


# --- messages ----------------------------------------------------------------------------


def gen(seed, sender, seq, length):
    """Message ``seq`` of sender ``sender`` with ``length`` bytes under the case's ``seed``
    (section 5 of the protocol): for ``length >= 8``, ``sender`` and ``seq`` as 32-bit
    little-endian integers, then splitmix64 bytes.  ``seed`` may be an int or the decimal
    string of a ``send`` command."""
    seed = int(seed) & _MASK
    if length < 0:
        raise ValueError("negative message length %d" % length)
    if length >= 8:
        identity = struct.pack("<II", sender & 0xFFFFFFFF, seq & 0xFFFFFFFF)
        head = length - 8
    else:
        identity = b""
        head = length
    state = seed ^ ((((sender << 32) + seq) * 0xD6E8FEB86659FD93) & _MASK)
    state ^= (length * 0xA0761D6478BD642F) & _MASK
    words = []
    for _ in range((head + 7) // 8):
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        words.append(z ^ (z >> 31))
    body = struct.pack("<%dQ" % len(words), *words)[:head]
    return identity + body


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli, reflected, polynomial 0x1EDC6F41) of ``data``, as an unsigned
    int: ``crc32c(b"123456789") == 3808858755``.  Pass a previous result as ``crc`` to
    continue over more bytes."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- the control connection --------------------------------------------------------------


def _noop(signum, frame):
    pass


def install_sigurg_handler():
    """Install a handler that does nothing for SIGURG, without ``SA_RESTART`` (Python's
    ``signal.signal`` never sets it): the harness's SIGURG storms then interrupt blocking
    system calls with ``EINTR``, as a real program's signals do.  ``serve_sender`` and
    ``serve_receiver`` call it."""
    signal.signal(signal.SIGURG, _noop)


class Role:
    """One role's control connection: connect, hello, read commands, write events.

    ``Role(kind, index=None, control=None, data=False)`` connects to ``control`` (default
    ``IPCPROP_CONTROL``) and writes the hello of a ``"sender"`` (with ``index``) or a
    ``"receiver"``; ``data=True`` asks the harness to put each message's bytes in hex
    into ``send`` commands.  ``read()`` returns the next command as a dict, or ``None``
    when the connection ended; ``write(event)`` writes one event, adding ``t``.  Most
    programs use ``serve_sender``/``serve_receiver`` instead."""

    def __init__(self, kind, index=None, control=None, data=False):
        if kind not in ("sender", "receiver"):
            raise ValueError("a role is a sender or a receiver, not %r" % (kind,))
        if kind == "sender" and (index is None or index < 0):
            raise ValueError("a sender's hello needs its index")
        if control is None:
            control = env().control
        self.kind = kind
        self.index = index
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(control)
        hello = {"hello": kind, "pid": os.getpid(), "protocol": PROTOCOL}
        if kind == "sender":
            hello["index"] = index
        if data:
            hello["data"] = True
        self.write(hello)

    def write(self, event):
        """Write ``event`` (a dict) as one line with one ``sendall``, ``t`` taken just
        before.  Raises ``OSError`` if the connection is gone."""
        event = dict(event)
        event["t"] = time.monotonic_ns()
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self._sock.sendall(line)

    def read(self):
        """The next command (a dict), or ``None`` if the harness closed the connection.
        Raises ``ProtocolError`` for a line that is not a JSON object."""
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            command = json.loads(line)
        except ValueError as err:
            raise ProtocolError("command line is not JSON (%s): %r" % (err, line[:200]))
        if not isinstance(command, dict) or not isinstance(command.get("op"), str):
            raise ProtocolError("command line is not a JSON object with an op: %r" % line[:200])
        return command

    def close(self):
        """Close the control connection."""
        self._sock.close()

    def fileno(self):
        """The control socket's file descriptor."""
        return self._sock.fileno()


def _lost_control(why):
    """The harness is gone: the role must exit at once (no cleanup, no atexit)."""
    try:
        os.write(2, b"ipcprop_driver: control connection lost (%s): exiting\n" % why.encode())
    except OSError:
        pass
    os._exit(EXIT_CONTROL_LOST)


def _next_command(role):
    command = role.read()
    if command is None:
        _lost_control("closed by the harness before exit")
    return command


def _emit(role, event):
    try:
        role.write(event)
    except OSError as err:
        _lost_control(str(err))


def _error_text(err):
    text = str(err)
    name = type(err).__name__
    return "%s: %s" % (name, text) if text else name


def _require(command, field, kind):
    value = command.get(field)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError("command %r lacks a valid %r" % (command, field))
    return value


def _message(command):
    if "data" in command:
        data = command["data"]
        try:
            return bytes.fromhex(data)
        except (TypeError, ValueError):
            raise ProtocolError("send command's data is not hex: %r" % (data,)[:200]) from None
    seed = command.get("seed")
    if isinstance(seed, str) and seed.isdigit():
        seed = int(seed)
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise ProtocolError("send command lacks a valid seed: %r" % (command,))
    return gen(
        seed,
        _require(command, "sender", int),
        _require(command, "seq", int),
        _require(command, "len", int),
    )


def _finish(role, close, closed):
    if close is not None and not closed:
        close()
    _emit(role, {"ev": "bye"})
    role.close()


def serve_sender(index, send, close=None, control=None, data=False):
    """Be sender ``index``: connect, say hello, answer commands until ``exit``, return.

    For each ``send`` command the message is built (``gen``, or the command's hex
    ``data``), ``sending`` is written, ``send(message)`` is called, and ``sent`` is
    written if it returned, ``send_failed`` if it raised (``disconnected`` true for
    ``Disconnected``, ``BrokenPipeError`` and other ``ConnectionError``).  On ``exit``,
    ``close()`` (if given) closes the sender's end of the channel, ``bye`` is written and
    the function returns: the caller then exits (``os._exit(0)`` in a forked child).
    ``control`` defaults to ``IPCPROP_CONTROL``; ``data=True`` asks for hex bytes in
    ``send`` commands.  If the control connection ends before ``exit`` the process exits
    at once with status 3."""
    install_sigurg_handler()
    role = Role("sender", index=index, control=control, data=data)
    while True:
        command = _next_command(role)
        op = command["op"]
        if op == "send":
            seq = _require(command, "seq", int)
            message = _message(command)
            _emit(role, {"ev": "sending", "seq": seq})
            try:
                send(message)
            except (Disconnected, ConnectionError) as err:
                _emit(role, {"ev": "send_failed", "seq": seq, "error": _error_text(err),
                             "disconnected": True})
            except Exception as err:  # any failure of the channel is reported, not fatal
                _emit(role, {"ev": "send_failed", "seq": seq, "error": _error_text(err),
                             "disconnected": False})
            else:
                _emit(role, {"ev": "sent", "seq": seq})
        elif op == "exit":
            _finish(role, close, False)
            return
        else:
            raise ProtocolError("a sender got an unknown command: %r" % (command,))


def _received(message):
    message = bytes(message)
    if len(message) <= INLINE_DATA_MAX:
        return {"ev": "received", "data": message.hex()}
    return {"ev": "received", "len": len(message), "crc": crc32c(message),
            "id": message[:8].hex()}


def serve_receiver(recv, close=None, control=None):
    """Be the receiver: connect, say hello, answer commands until ``exit``, return.

    ``recv()`` returns the next message (bytes-like), or ``None`` at the end of the
    stream (every sender gone, everything received); it raises ``CutOff`` when the
    stream ended inside a message, or any other exception for another failure.  For a
    ``recv`` command of ``count``: before each call ``receiving`` (with ``got``, the
    messages received so far), after it ``received`` (``data`` in hex for at most 4096
    bytes, else ``len``/``crc``/``id``), or ``eos``/``cut_off``/``recv_failed``, which end
    the command.  ``close`` calls ``close()`` and answers ``closed``; ``exit`` calls
    ``close()`` unless that was done, writes ``bye`` and returns (the caller exits).  If
    the control connection ends before ``exit`` the process exits at once with
    status 3."""
    install_sigurg_handler()
    role = Role("receiver", control=control)
    got = 0
    closed = False
    while True:
        command = _next_command(role)
        op = command["op"]
        if op == "recv":
            count = _require(command, "count", int)
            for _ in range(count):
                _emit(role, {"ev": "receiving", "got": got})
                try:
                    message = recv()
                except CutOff as err:
                    _emit(role, {"ev": "cut_off", "error": _error_text(err)})
                    break
                except Exception as err:  # reported to the harness, not fatal
                    _emit(role, {"ev": "recv_failed", "error": _error_text(err)})
                    break
                if message is None:
                    _emit(role, {"ev": "eos"})
                    break
                got += 1
                _emit(role, _received(message))
        elif op == "close":
            if close is not None and not closed:
                close()
            closed = True
            _emit(role, {"ev": "closed"})
        elif op == "exit":
            _finish(role, close, closed)
            return
        else:
            raise ProtocolError("the receiver got an unknown command: %r" % (command,))


# --- process helpers ---------------------------------------------------------------------


class Gate:
    """Holds forked role processes back until the parent has finished its set-up.

    A parent that forks its roles and then closes its own copies of the channel's ends
    races with them: a role may say hello, and the harness drive it, while the parent
    still holds an end (a pipe's read end that keeps a send "succeeding" after the
    receiver closed, a write end that holds back the end of stream).  Make a ``Gate``
    before forking, pass it to ``spawn`` (each child waits at it before running its
    body), close the parent's ends, then ``open()`` it::

        gate = Gate()
        pids = [spawn(role, gate=gate) for role in roles]
        os.close(r); os.close(w)
        gate.open()

    It is a pipe whose write end only the parent keeps: a child closes its copy, then
    reads until end of file, which comes when the parent closes its copy."""

    def __init__(self):
        self._r, self._w = os.pipe()

    def wait(self):
        """In a child: block until the parent opens the gate."""
        os.close(self._w)
        while os.read(self._r, 1):  # EINTR is retried by Python (PEP 475)
            pass
        os.close(self._r)

    def open(self):
        """In the parent, after every ``spawn``: let the children go."""
        os.close(self._w)
        os.close(self._r)


def spawn(body, gate=None):
    """Fork a child that runs ``body()`` and exits: status 0 if it returned, the status of
    a ``SystemExit`` it raised, 70 (with the traceback on standard error) for any other
    exception.  With a ``gate``, the child first waits until the parent opens it.
    Returns the child's pid in the parent.  Standard output and error are flushed
    before the fork so nothing is written twice."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    status = 0
    try:
        if gate is not None:
            gate.wait()
        body()
    except SystemExit as exit:
        if isinstance(exit.code, int):
            status = exit.code
        elif exit.code is not None:
            sys.stderr.write("%s\n" % (exit.code,))
            status = 1
    except BaseException:
        traceback.print_exc()
        status = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def wait_children(pids):
    """Wait for every pid of ``pids``; return 1 if one exited with a non-zero status
    (it failed: its traceback is on standard error), else 0.  A child ended by a signal
    (the harness kills roles) is not a failure of the program."""
    status = 0
    for pid in pids:
        _, code = os.waitpid(pid, 0)
        if os.WIFEXITED(code) and os.WEXITSTATUS(code) != 0:
            status = 1
    return status
