#!/usr/bin/env python3
"""Connection churn for the soak test, each role its own process.

server: listens on 127.0.0.1, prints "listening PORT pid PID", then runs
pre-forked workers one after another: each accepts --per-worker connections,
reads each to EOF (the peer closed: CLOSE_WAIT), waits --slow-ms on every
--slow-every-th one (0 ms otherwise), closes it, and exits; the next worker
is a new process (worker pids are recycled like a load-tested service's).
Stops after --duration seconds.

client: for --duration seconds, --rate connections a second: connect, send
a few bytes, close. Prints "client done N" with the connections made.

Only loopback addresses are used; every loop is bounded by --duration.
"""
import argparse
import os
import socket
import sys
import time


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker(ls, per_worker, slow_every, slow_ms, end):
    ls.settimeout(0.5)
    done = 0
    while done < per_worker and time.monotonic() < end:
        try:
            conn, _ = ls.accept()
        except socket.timeout:
            continue
        conn.settimeout(5)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        if slow_every and done % slow_every == 0:
            time.sleep(slow_ms / 1000)
        conn.close()
        done += 1


def server(args):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.port))
    ls.listen(512)
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    end = time.monotonic() + args.duration
    workers = 0
    while time.monotonic() < end:
        pid = os.fork()
        if pid == 0:
            try:
                worker(ls, args.per_worker, args.slow_every, args.slow_ms, end)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        workers += 1
    say(f"server done workers {workers}")


def client(args):
    host, port = args.connect.rsplit(":", 1)
    end = time.monotonic() + args.duration
    gap = 1.0 / args.rate
    n = 0
    next_at = time.monotonic()
    while time.monotonic() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect((host, int(port)))
            s.sendall(b"ping")
            n += 1
        except OSError as e:
            say(f"client error {e}")
        finally:
            s.close()
        next_at += gap
        time.sleep(max(0.0, next_at - time.monotonic()))
    say(f"client done {n}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--per-worker", type=int, default=50)
    s.add_argument("--slow-every", type=int, default=5)
    s.add_argument("--slow-ms", type=float, default=60)
    s.add_argument("--duration", type=float, required=True)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--rate", type=float, default=100)
    c.add_argument("--duration", type=float, required=True)
    args = p.parse_args()
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
