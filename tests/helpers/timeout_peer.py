#!/usr/bin/env python3
"""Both ends of a connection across a veth pair between two network
namespaces the test made (tests/timeout.rs), each run as its own process.

server --host ADDR --mode user-timeout --go PATH --user-timeout-ms MS:
  accepts one connection, waits for the client's FIN without reading (the
  socket sits in CLOSE_WAIT), prints "close-wait", waits until PATH exists
  (the test has cut the client's link by then), sets TCP_USER_TIMEOUT and
  writes, so the data is retransmitted into the void until the kernel's
  timer gives up; prints "gave up ERRNO" and keeps the descriptor open (it
  never calls close()) until killed or --hold ends.
server --host ADDR --mode close-unread: accepts one connection, waits for
  the client's FIN without reading the client's data, then close()s:
  the kernel aborts with a reset.
client --connect ADDR:PORT [--send N]: connects, prints "client local ADDR",
  sends N bytes, closes, prints "done".

Every wait is bounded by --hold.
"""
import argparse
import errno
import os
import select
import socket
import sys
import time


def fmt(addr):
    return f"{addr[0]}:{addr[1]}"


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_peer_closed(conn, hold):
    p = select.poll()
    p.register(conn, select.POLLRDHUP)
    if not p.poll(int(hold * 1000)):
        raise SystemExit("no FIN from the client")


def server(args):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    ls.listen(8)
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    ls.settimeout(args.hold)
    conn, _ = ls.accept()
    conn.settimeout(None)
    say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
    wait_peer_closed(conn, args.hold)
    if args.mode == "close-unread":
        conn.close()
        say("closed")
        time.sleep(args.hold)
        return
    if args.mode != "user-timeout":
        raise SystemExit(f"unknown mode {args.mode}")
    say("close-wait")
    end = time.monotonic() + args.hold
    while not os.path.exists(args.go):
        if time.monotonic() > end:
            raise SystemExit(f"{args.go} never appeared")
        time.sleep(0.02)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, args.user_timeout_ms)
    conn.setblocking(False)
    conn.send(b"x" * 1000)
    # Wait (bounded) for the kernel to give up: the socket reports an error.
    p = select.poll()
    p.register(conn, select.POLLERR)
    err = 0
    while time.monotonic() < end:
        p.poll(100)
        err = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            break
    say(f"gave up {errno.errorcode.get(err, err)}")
    # The descriptor stays open: no close() ends this socket.
    time.sleep(max(0.0, end - time.monotonic()))


def client(args):
    host, port = args.connect.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=args.hold)
    say(f"client local {fmt(s.getsockname())}")
    if args.send:
        s.sendall(b"y" * args.send)
    s.close()
    say("done")
    time.sleep(args.hold)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--mode", required=True)
    s.add_argument("--go", default="")
    s.add_argument("--user-timeout-ms", type=int, default=1000)
    s.add_argument("--hold", type=float, default=30)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--send", type=int, default=0)
    c.add_argument("--hold", type=float, default=30)
    args = p.parse_args()
    if args.role == "server":
        server(args)
    else:
        client(args)


if __name__ == "__main__":
    main()
