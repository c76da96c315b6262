#!/usr/bin/env python3
"""Python programs whose Python stacks close-wait must report (tests/python.rs).

Run with the CPython under test (any 3.11+). Every address is loopback,
every wait bounded by --hold. Lines marked `# LINE:name` are where the test
expects the report's frames to point.

leak      a client that leaks --count connections to --connect: each one is
          made in open_leaky_upstream_q7 (called from fetch_quote, called
          from handle_order) and kept open forever.
          "connected fd FD local L" per connection, "leaked N pid PID".
closer    a server that accepts and closes every connection at once.
          "listening PORT pid PID".
parked    a server that hands each of the first --workers connections to a
          worker thread which, before reading anything, blocks for good in
          worker_parked_on_gate (called from serve_one).
          "listening PORT pid PID", "accepted fd FD local L remote R",
          "parked N" once every worker is blocked.
hangup    a client: --count connections to --connect, each closed at once.
          "closed local L" per connection.
"""
import argparse
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer import fmt, say  # noqa: E402  (the sibling helper)


def open_leaky_upstream_q7(addr):
    return socket.create_connection(addr, timeout=5)  # LINE:connect


def fetch_quote(addr, keep):
    keep.append(open_leaky_upstream_q7(addr))  # LINE:fetch


def handle_order(addr, keep, count):
    for _ in range(count):
        fetch_quote(addr, keep)  # LINE:order


def leak(args):
    host, port = args.connect.rsplit(":", 1)
    keep = []  # the bug: never closed
    handle_order((host, int(port)), keep, args.count)
    for s in keep:
        say(f"connected fd {s.fileno()} local {fmt(s.getsockname())}")
    say(f"leaked {len(keep)} pid {os.getpid()}")
    time.sleep(args.hold)


def listen():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    return ls


def closer(args):
    ls = listen()
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    signal.alarm(int(args.hold))  # the bound: SIGALRM ends the process
    while True:
        conn, _ = ls.accept()
        conn.close()


def worker_parked_on_gate(conn, gate, parked):
    parked.release()
    gate.acquire()  # LINE:parked
    conn.recv(1)  # never reached


def serve_one(conn, gate, parked):
    worker_parked_on_gate(conn, gate, parked)  # LINE:serve


def parked(args):
    ls = listen()
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    gate = threading.Lock()
    gate.acquire()  # never released
    parked_sem = threading.Semaphore(0)
    conns = []
    for _ in range(args.workers):
        conn, _ = ls.accept()
        conns.append(conn)
        say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
        threading.Thread(target=serve_one, args=(conn, gate, parked_sem), daemon=True).start()
    for _ in range(args.workers):
        parked_sem.acquire()
    time.sleep(0.2)  # from release() to blocking in acquire()
    say(f"parked {args.workers}")
    time.sleep(args.hold)


def hangup(args):
    host, port = args.connect.rsplit(":", 1)
    kept = []
    for _ in range(args.count):
        s = socket.create_connection((host, int(port)), timeout=5)
        say(f"closed local {fmt(s.getsockname())}")
        # FIN sent, descriptor kept until killed: no orphan, no TIME_WAIT.
        s.shutdown(socket.SHUT_WR)
        kept.append(s)
    time.sleep(args.hold)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["leak", "closer", "parked", "hangup"])
    ap.add_argument("--connect")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--hold", type=float, default=30)
    args = ap.parse_args()
    globals()[args.cmd](args)


if __name__ == "__main__":
    main()
