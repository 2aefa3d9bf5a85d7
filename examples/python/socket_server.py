#!/usr/bin/env python3
"""A receiver and its senders as separate programs, meeting by path: the two-program mode of
the driver protocol (``--exec-receiver`` / ``--exec-sender``).

    ipcprop check --exec-receiver 'python3 examples/python/socket_server.py' \\
                  --exec-sender 'python3 examples/python/socket_server.py' \\
                  --caps examples/python/socket_server.ipcprop.toml

Run as the receiver (``IPCPROP_ROLE=receiver``), it listens on a Unix stream socket at
``$IPCPROP_DIR/channel.sock`` before it says hello, so every sender (started by the harness
after that hello, ``IPCPROP_ROLE=sender``) finds it. Each sender connects, then says hello,
and sends each message as a frame ``[u32 little-endian length][bytes]`` on its own
connection. The receiver serves the connections together (``selectors``): each frame is a
message; a connection's messages stay in order, and frames of different senders never
mix, since each has its own stream. The end of the stream is every one of the
``IPCPROP_SENDERS`` connections accepted and closed. A frame cut short by its sender's
death is the end of that connection only: that message was never acknowledged, and the
other senders go on.
"""
import os
import selectors
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import ipcprop_driver as d  # noqa: E402


def channel_path(e):
    return os.path.join(e.dir, "channel.sock")


def send_all(sock, data):
    view = memoryview(data)
    while view:
        view = view[sock.send(view):]


def sender(e):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(channel_path(e))

    def send(message):
        send_all(sock, struct.pack("<I", len(message)) + message)

    d.serve_sender(e.index, send, close=sock.close)


class Server:
    """Frames from every sender's connection, as one stream of messages."""

    def __init__(self, e):
        self.expected = e.senders
        self.accepted = 0
        self.closed = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(channel_path(e))
        self.listener.listen(e.senders)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.buffers = {}
        self.ready = []

    def _frames(self, conn):
        buf = self.buffers[conn]
        while len(buf) >= 4:
            (n,) = struct.unpack_from("<I", buf)
            if len(buf) < 4 + n:
                break
            self.ready.append(bytes(buf[4:4 + n]))
            del buf[:4 + n]

    def recv(self):
        while not self.ready:
            if self.closed == self.expected:
                return None
            for key, _ in self.sel.select():
                if key.data is None:
                    conn, _ = self.listener.accept()
                    self.accepted += 1
                    self.buffers[conn] = bytearray()
                    self.sel.register(conn, selectors.EVENT_READ, conn)
                    if self.accepted == self.expected:
                        self.sel.unregister(self.listener)
                    continue
                conn = key.data
                chunk = conn.recv(1 << 16)
                if chunk:
                    self.buffers[conn] += chunk
                    self._frames(conn)
                else:
                    # Closed (or its sender died): a partial frame left in the buffer was
                    # never acknowledged; drop it and go on with the others.
                    self.sel.unregister(conn)
                    conn.close()
                    del self.buffers[conn]
                    self.closed += 1
        return self.ready.pop(0)

    def close(self):
        for conn in list(self.buffers):
            conn.close()
        self.listener.close()


def main():
    e = d.env()
    if e.role == "sender":
        sender(e)
    elif e.role == "receiver":
        server = Server(e)
        d.serve_receiver(server.recv, close=server.close)
    else:
        sys.exit("socket_server.py runs as one role: start it with --exec-sender/--exec-receiver")


if __name__ == "__main__":
    main()
