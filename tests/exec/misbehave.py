#!/usr/bin/env python3
"""A program under test that breaks the driver protocol on purpose, one way per mode.

Used by tests/exec.rs: each mode must end the case with a driver error naming the
program, the role and the line, leave no process and no socket file behind, and never
count as a violation of a channel. It speaks the protocol by hand (no client module), so
that it can say exactly the wrong thing.

    python3 misbehave.py MODE TOKEN

TOKEN is only there so that the test can find this program's processes by their command
line.
"""
import json
import os
import socket
import sys
import time


def line(sock, obj):
    obj["t"] = time.monotonic_ns()
    sock.sendall((json.dumps(obj) + "\n").encode())


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["IPCPROP_CONTROL"])
    return s


def hello(sock, role, index=None, pid=None):
    obj = {"hello": role, "pid": pid or os.getpid(), "protocol": 1}
    if index is not None:
        obj["index"] = index
    line(sock, obj)


def honest_sender(index):
    """A correct sender that sends nothing anywhere: enough for the harness to go on."""
    s = connect()
    hello(s, "sender", index)
    f = s.makefile("r")
    for cmd in f:
        cmd = json.loads(cmd)
        if cmd["op"] == "send":
            line(s, {"ev": "sending", "seq": cmd["seq"]})
            line(s, {"ev": "sent", "seq": cmd["seq"]})
        elif cmd["op"] == "exit":
            line(s, {"ev": "bye"})
            return
    os._exit(3)


def main():
    mode = sys.argv[1]
    if mode == "crash":
        sys.stderr.write("boom: this program fails before it connects\n")
        sys.exit(3)
    if mode == "silent":
        time.sleep(60)
        return
    senders = int(os.environ["IPCPROP_SENDERS"])
    children = []
    for i in range(senders):
        pid = os.fork()
        if pid == 0:
            try:
                honest_sender(i)
            finally:
                os._exit(0)
        children.append(pid)
    r = connect()
    if mode == "wrongpid":
        hello(r, "receiver", pid=os.getpid() + 100000)
    elif mode == "badindex":
        hello(r, "sender", index=senders + 5)
    elif mode == "twice":
        hello(r, "receiver")
        again = connect()
        hello(again, "receiver")
    elif mode == "nohello":
        line(r, {"ev": "eos"})
    else:
        hello(r, "receiver")
    if mode == "badjson":
        r.recv(100)  # the first command
        r.sendall(b"{this is not json\n")
    elif mode == "oversized":
        r.sendall(b"x" * 70000)
    elif mode == "phantom":
        # Reports a message it was never asked to receive, before any command.
        line(r, {"ev": "received", "data": "00000000000000002a"})
    elif mode == "flood":
        payload = "".join(
            json.dumps({"ev": "bye", "t": time.monotonic_ns()}) + "\n" for _ in range(20000)
        )
        try:
            r.sendall(payload.encode())
        except OSError:
            pass
    elif mode == "extra":
        time.sleep(0.2)
        connect()
    elif mode == "future":
        r.recv(100)
        line_obj = {"ev": "receiving", "got": 0, "t": time.monotonic_ns() + 10**12}
        r.sendall((json.dumps(line_obj) + "\n").encode())
    # Wait for the harness to give up on us (it kills the process group).
    time.sleep(60)


if __name__ == "__main__":
    main()
