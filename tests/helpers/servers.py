#!/usr/bin/env python3
"""Application servers for the real-server tests (tests/servers.rs).

slowapp: a threaded HTTP app (one thread per request, as a WSGI server
with a thread pool runs it). Each handler reads the request, prints
"accepted fd FD local L remote R", opens a connection to --upstream,
prints "upstream fd FD local L remote R", sends a request there and waits
for the answer with a timeout (socket.settimeout: a poll(2) with a timeout,
like urllib or requests with timeout=). The upstream never answers, so the
handler is blocked and the client's connection, closed by a proxy that
gave up, stays in CLOSE_WAIT.

prefork-pipe: a prefork server: the parent listens, forks --workers
workers, each accepts one connection, reads its request, prints the
accepted line and then logs to stderr with write(2). Run it with stderr on
a pipe nobody reads: every worker blocks in write(2) with a request read.

Every wait is bounded by --hold.
"""
import argparse
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer import fmt, say  # noqa: E402


def split_addr(a):
    host, port = a.rsplit(":", 1)
    return host.strip("[]"), int(port)


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def slowapp(args):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    keep = []

    def handle(conn):
        try:
            serve(conn)
        except OSError:
            pass  # the test ended: the third party is gone

    def serve(conn):
        read_request(conn)
        say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
        up = socket.create_connection(split_addr(args.upstream))
        keep.append(up)
        say(f"upstream fd {up.fileno()} local {fmt(up.getsockname())} remote {fmt(up.getpeername())}")
        up.sendall(b"GET /quote HTTP/1.1\r\nHost: third-party\r\n\r\n")
        up.settimeout(args.hold)
        try:
            up.recv(1)
        except socket.timeout:
            pass
        conn.close()

    signal.alarm(int(args.hold) + 5)
    while True:
        conn, _ = ls.accept()
        keep.append(conn)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def prefork_pipe(args):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    kids = []
    for i in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.alarm(int(args.hold) + 5)
            conn, _ = ls.accept()
            read_request(conn)
            say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())} worker {os.getpid()}")
            line = b"worker %d: request read, logging the access line\n" % os.getpid()
            while True:
                os.write(2, line * 1024)
        kids.append(pid)
        say(f"worker {pid} ready")
    time.sleep(args.hold)
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slowapp")
    s.add_argument("--upstream", required=True)
    f = sub.add_parser("prefork-pipe")
    f.add_argument("--workers", type=int, default=4)
    for x in (s, f):
        x.add_argument("--hold", type=float, default=30)
    args = p.parse_args()
    {"slowapp": slowapp, "prefork-pipe": prefork_pipe}[args.cmd](args)


if __name__ == "__main__":
    main()
