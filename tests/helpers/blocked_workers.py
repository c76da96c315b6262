#!/usr/bin/env python3
"""A server whose workers stop serving because logging blocks (seed 002).

Listens on 127.0.0.1, prints "listening PORT pid PID", then starts
--workers threads. Each worker accepts one connection, prints
"accepted fd FD local ADDR remote ADDR", and, before reading the request,
logs to stderr with plain write(2) calls on fd 2. Run it with stderr on a
pipe that nobody reads: once the pipe is full every worker sleeps in
write(2), the requests stay unread, and when the clients close their end
the sockets stay in CLOSE_WAIT with the request bytes still queued.

Every wait is bounded by --hold (the main thread exits after it).
"""
import argparse
import os
import socket
import sys
import threading
import time


def fmt(addr):
    return f"{addr[0]}:{addr[1]}"


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker(ls, conns):
    conn, _ = ls.accept()
    conns.append(conn)  # nothing is closed by GC
    say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
    line = b"worker %d: request accepted, logging before reading it\n" % threading.get_ident()
    # os.write, not sys.stderr: every worker makes its own write(2) on fd 2
    # (a buffered stream would park all but one on its lock instead).
    while True:
        os.write(2, line * 1024)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--hold", type=float, default=30)
    args = p.parse_args()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    conns = []
    for _ in range(args.workers):
        threading.Thread(target=worker, args=(ls, conns), daemon=True).start()
    time.sleep(args.hold)


if __name__ == "__main__":
    main()
