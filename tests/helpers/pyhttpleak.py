#!/usr/bin/env python3
"""A Python client that leaks HTTP connections (tests/python.rs).

Run with the CPython under test (any 3.11+):
    pyhttpleak.py PORT COUNT HOLD GO_FILE [fork]
It prints "ready pid PID", waits (at most HOLD seconds) until GO_FILE
exists (with "fork", then forks: the child, a prefork worker, goes on and
the parent waits for it), then, from module level, calls handle_order(), which calls
fetch_quote() COUNT times; each opens an http.client.HTTPConnection to
127.0.0.1:PORT and keeps it, never closed. "connected local L" per
connection, "leaked N pid PID", then it sleeps HOLD seconds. Lines marked
`# LINE:name` are where the report's frames must point.
"""
import http.client
import os
import sys
import time


def fetch_quote(port, keep):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.connect()  # LINE:fetch
    keep.append(conn)


def handle_order(port, keep, count):
    for _ in range(count):
        fetch_quote(port, keep)  # LINE:order


port, count, hold, go = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"ready pid {os.getpid()}", flush=True)
deadline = time.monotonic() + hold
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.01)
if sys.argv[5:] == ["fork"]:
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        sys.exit(0)
keep = []  # the bug: never closed
handle_order(port, keep, count)  # LINE:module
for c in keep:
    host, lport = c.sock.getsockname()[:2]
    print(f"connected local {host}:{lport}", flush=True)
print(f"leaked {len(keep)} pid {os.getpid()}", flush=True)
time.sleep(hold)
