#!/usr/bin/env python3
"""Both ends of the test connections, each run as its own process.

server: listens on loopback, prints "listening PORT pid PID", then for every
accepted connection "accepted fd FD local ADDR remote ADDR" and behaves as
--mode says. client: connects COUNT times and prints "client local ADDR" for
each connection, then ends each one as --mode says.

Only loopback addresses are ever used. Every wait is bounded by --hold.
"""
import argparse
import os
import socket
import struct
import sys
import threading
import time


def fmt(addr):
    host, port = addr[0], addr[1]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_to_eof(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            return


def wait_peer_closed(conn, hold):
    """Waits until the peer's FIN arrived without reading any data."""
    import select
    p = select.poll()
    p.register(conn, select.POLLRDHUP)
    p.poll(int(hold * 1000))


def handle(conn, mode, delay, hold, index):
    if mode == "close-after-eof":
        # "held I ms T closed at M": how long connection I stayed open after
        # its EOF was read, and the CLOCK_MONOTONIC time close() returned.
        read_to_eof(conn)
        t0 = time.monotonic()
        time.sleep(delay)
        held = time.monotonic() - t0
        conn.close()
        say(f"held {index} ms {held * 1000:.3f} closed at {time.monotonic():.6f}")
    elif mode == "shutdown-after-eof":
        read_to_eof(conn)
        time.sleep(delay)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(hold)
    elif mode == "shutdown-then-close":
        # shutdown(SHUT_WR) after EOF, then close() the descriptor later.
        read_to_eof(conn)
        time.sleep(delay)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(delay)
        conn.close()
    elif mode == "close-unread":
        wait_peer_closed(conn, hold)
        time.sleep(delay)
        conn.close()
    elif mode == "close-now":
        # The peer's socket goes to CLOSE_WAIT without it sending anything.
        conn.close()
    elif mode == "read-hold":
        read_to_eof(conn)
        time.sleep(hold)
    elif mode in ("hold", "never-read"):
        time.sleep(hold)
    elif mode == "fork-hold":
        pid = os.fork()
        if pid == 0:
            say(f"child pid {os.getpid()} holds fd {conn.fileno()}")
            time.sleep(hold)
            os._exit(0)
        conn.close()
        say(f"parent closed fd")
    else:
        raise SystemExit(f"unknown mode {mode}")


def server(args):
    fam = socket.AF_INET6 if args.family == 6 else socket.AF_INET
    host = "::1" if args.family == 6 else "127.0.0.1"
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, args.port))
    ls.listen(args.backlog)
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    delays = [float(d) / 1000 for d in args.delays.split(",")] if args.delays else []
    if args.mode == "no-accept":
        time.sleep(args.hold)
        return
    threads = []
    conns = []
    for i in range(args.count):
        conn, _ = ls.accept()
        conns.append(conn)  # keep a reference: nothing is closed by GC
        say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
        delay = delays[i] if i < len(delays) else args.delay_ms / 1000
        t = threading.Thread(target=handle, args=(conn, args.mode, delay, args.hold, i), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(args.hold + 5)
    say("done")
    time.sleep(args.linger)


def client(args):
    host, port = args.connect.rsplit(":", 1)
    host = host.strip("[]")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    for i in range(args.count):
        s = socket.socket(fam, socket.SOCK_STREAM)
        if args.bind_port:
            # A fixed source port: the same 4-tuple in two network namespaces.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, args.bind_port + i))
        s.connect((host, int(port)))
        say(f"client local {fmt(s.getsockname())}")
        if args.send:
            s.sendall(b"x" * args.send)
        if args.data:
            s.sendall(args.data.encode())
        if args.mode == "close":
            # CLOCK_MONOTONIC before the FIN is sent: the peer's CLOSE_WAIT
            # starts after it.
            say(f"closing local {fmt(s.getsockname())} at {time.monotonic():.6f}")
            s.close()
        elif args.mode in ("rst", "half-close"):
            # FIN sent, descriptor kept (half-close: unlike an orphan after
            # close(), this FIN_WAIT2 socket has no timer to end it).
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        elif args.mode == "close-on-eof":
            # The server closes first: this socket sits in CLOSE_WAIT.
            read_to_eof(s)
            time.sleep(args.close_delay_ms / 1000)
            s.close()
        elif args.mode == "hold":
            # Never closed: in CLOSE_WAIT once the server closes.
            socks.append(s)
        if args.gap_ms:
            time.sleep(args.gap_ms / 1000)
    if args.mode == "rst":
        time.sleep(args.rst_after_ms / 1000)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    say("done")
    if args.mode in ("hold", "half-close"):
        time.sleep(args.hold)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--family", type=int, default=4)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--mode", default="close-after-eof")
    s.add_argument("--delay-ms", type=float, default=300)
    s.add_argument("--delays", default="")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--backlog", type=int, default=128)
    s.add_argument("--hold", type=float, default=30)
    s.add_argument("--linger", type=float, default=30)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--mode", default="close")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--bind-port", type=int, default=0, help="source port of the first connection")
    c.add_argument("--send", type=int, default=0)
    c.add_argument("--data", default="", help="text to send after --send bytes")
    c.add_argument("--gap-ms", type=float, default=0)
    c.add_argument("--rst-after-ms", type=float, default=300)
    c.add_argument("--close-delay-ms", type=float, default=300)
    c.add_argument("--hold", type=float, default=30, help="seconds to keep sockets in modes hold and half-close")
    args = p.parse_args()
    if args.role == "server":
        server(args)
    else:
        client(args)


if __name__ == "__main__":
    main()
