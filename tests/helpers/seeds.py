#!/usr/bin/env python3
"""The programs of the five seed post-mortems, each run as its own process.

Subcommands (every address is loopback, every wait bounded by --hold):

tornado   seed 000: a single-threaded event-loop server (like Tornado's
          IOLoop) whose one handler calls a third party synchronously (like
          urllib2): it accepts a request, reads it, connects to --upstream,
          sends a request and blocks in recv() for an answer that never
          comes. Everything else waits in the accept queue.
          "listening PORT pid PID fd LFD", "accepted fd FD local L remote R",
          "upstream fd FD local L remote R".
burst     seed 000: an OpenResty-like proxy: opens --count connections, sends
          one request on each, waits --timeout-ms for answers, then closes
          them all (--first-gap-ms after the first connection, so that the
          server takes that one); then one more connect (--probe) to see if the server
          still takes connections. "client local L" per connection, "timeout
          local L" per closed one, "probe connected" / "probe timed out".
cherrypy  seed 002: a CherryPy-like server: the main thread accepts every
          connection and queues it; --workers worker threads each take one and,
          before reading the request, log it to stderr with write(2) on fd 2.
          Run with stderr on a pipe nobody reads: the workers all sleep in
          write(2), the main thread keeps accepting, nothing is read.
          "listening PORT pid PID fd LFD", "accepted fd FD local L remote R".
keepalive seed 001: an HTTP/1.1 server (http.server) that answers and closes
          each connection after --idle-ms of keep-alive idleness.
          "listening PORT pid PID".
httplib   seed 001: makes --batches requests with http.client and never
          closes the connections. Between batches it waits for SIGUSR1.
          "request N fd FD local L status S" per request, "batch done N".
backend   seeds 003/004: a line server. For each connection it reads one
          line, answers RESPONSE and then, per --after: "close" closes at
          once (Connection: close), "keep" keeps the connection and answers
          every further line; the first --idle-close connections are closed
          after --idle-ms of idleness (an idle timeout).
          "listening PORT pid PID", "accepted fd FD local L remote R".
pool      seed 003: a Go-like connection pool keyed by peer address: --per
          connections to each of --peers, one request on each, then idle in
          the pool forever, never checked. "conn peer P fd FD local L".
prefork   seed 004: an apache-prefork-like parent: listens, forks --workers
          workers sharing the listener. Each worker accepts --requests
          requests; for each it calls --upstream with a curl-like client that
          leaks its connection once the upstream closed it, answers the
          client and closes the client's socket. --orphan W: worker number W
          (0-based), when done, forks a child (a background job) that keeps
          every inherited descriptor, and exits.
          "listening PORT pid PID", "worker I pid P ready",
          "worker I pid P upstream fd FD local L remote R",
          "worker I pid P done", "worker I pid P child C", "worker I exited".
get       seed 004: --count sequential requests, each read to EOF and closed.
          "client local L" per request, "done".
"""
import argparse
import http.client
import http.server
import os
import selectors
import signal
import socket
import sys
import threading
import time

from peer import fmt, say  # the sibling helper; its directory is on sys.path

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def split_addr(a):
    host, port = a.rsplit(":", 1)
    return host.strip("[]"), int(port)


def listen(backlog=128):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(backlog)
    return ls


def read_until(conn, marker, limit=65536):
    data = b""
    while marker not in data and len(data) < limit:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


# --- seed 000 ---------------------------------------------------------------


def tornado(args):
    ls = listen(args.backlog)
    ls.setblocking(False)
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()} fd {ls.fileno()}")
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    keep = []  # nothing is closed by GC
    end = time.monotonic() + args.hold
    while time.monotonic() < end:
        for _key, _ in sel.select(timeout=0.5):
            try:
                conn, _ = ls.accept()
            except BlockingIOError:
                continue
            conn.setblocking(True)
            keep.append(conn)
            say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
            read_until(conn, b"\r\n\r\n")
            # The handler: a synchronous third-party call (urllib2 inside a
            # coroutine). It blocks the only thread, hence the whole loop.
            up = socket.create_connection(split_addr(args.upstream))
            keep.append(up)
            say(f"upstream fd {up.fileno()} local {fmt(up.getsockname())} remote {fmt(up.getpeername())}")
            up.sendall(b"GET /third-party HTTP/1.1\r\nHost: upstream\r\n\r\n")
            answer = up.recv(65536)  # blocks in recvfrom(2) until the upstream goes
            try:
                conn.sendall(RESPONSE if answer else b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            except OSError:
                pass
            conn.close()


def burst(args):
    host, port = split_addr(args.connect)
    socks = []
    for _ in range(args.count):
        s = socket.create_connection((host, port), timeout=2)
        say(f"client local {fmt(s.getsockname())}")
        s.sendall(args.request.encode())
        socks.append(s)
        if len(socks) == 1:
            time.sleep(args.first_gap_ms / 1000)  # the server takes the first
    # proxy_read_timeout: wait for any answer, then give up on all of them.
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    answered = sel.select(timeout=args.timeout_ms / 1000)
    say(f"answered {len(answered)}")
    for s in socks:
        local = fmt(s.getsockname())
        s.close()
        say(f"timeout local {local}")
    if args.probe:
        p = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        p.settimeout(args.probe_ms / 1000)
        try:
            p.connect((host, port))
            say(f"probe connected local {fmt(p.getsockname())}")
        except socket.timeout:
            say("probe timed out")
        p.close()
    say("done")
    time.sleep(args.hold)


# --- seed 002 ---------------------------------------------------------------


def cherrypy(args):
    import queue

    ls = listen()
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()} fd {ls.fileno()}")
    q = queue.Queue()

    def worker():
        conn = q.get()
        line = b"debug: select * from instance where app_name=$app_name\n"
        # os.write, not sys.stderr: each worker makes its own write(2) on fd 2
        # (a buffered stream would park all but one on its lock).
        while True:
            os.write(2, line * 1024)
        conn.recv(65536)  # never reached: the request stays unread

    for _ in range(args.workers):
        threading.Thread(target=worker, daemon=True).start()
    conns = []  # nothing is closed by GC
    signal.alarm(int(args.hold))  # the bound: SIGALRM ends the process
    while True:
        conn, _ = ls.accept()  # blocks in accept4(2) on the listener
        conns.append(conn)
        say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
        q.put(conn)


# --- seed 001 ---------------------------------------------------------------


def keepalive(args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        timeout = args.idle_ms / 1000  # keep-alive timeout, then close

        def do_GET(self):
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

        def log_error(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    say(f"listening {srv.server_address[1]} pid {os.getpid()}")
    threading.Timer(args.hold, srv.shutdown).start()
    srv.serve_forever()


def httplib(args):
    host, port = split_addr(args.connect)
    conns = []  # the bug: connections are kept and never closed
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    n = 0
    for b, count in enumerate(int(c) for c in args.batches.split(",")):
        if b > 0 and signal.sigtimedwait([signal.SIGUSR1], args.hold) is None:
            return
        for _ in range(count):
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", f"/login/{n}")
            r = c.getresponse()
            r.read()
            conns.append(c)
            say(f"request {n} fd {c.sock.fileno()} local {fmt(c.sock.getsockname())} status {r.status}")
            n += 1
        say(f"batch done {n}")
    time.sleep(args.hold)


# --- seeds 003 and 004 ------------------------------------------------------


def backend(args):
    ls = listen()
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    conns = []
    lock = threading.Lock()

    def serve(conn, idle_close):
        if not read_until(conn, b"\n"):
            return
        conn.sendall(RESPONSE)
        if args.after == "close":
            conn.close()
            return
        if idle_close:
            conn.settimeout(args.idle_ms / 1000)
        try:
            while read_until(conn, b"\n"):
                conn.sendall(RESPONSE)
        except socket.timeout:
            conn.close()  # idle timeout: the server closes first
            return
        time.sleep(args.hold)

    n = 0
    signal.alarm(int(args.hold) + 5)  # the bound: SIGALRM ends the process
    while True:
        conn, _ = ls.accept()
        with lock:
            conns.append(conn)
        say(f"accepted fd {conn.fileno()} local {fmt(conn.getsockname())} remote {fmt(conn.getpeername())}")
        threading.Thread(target=serve, args=(conn, n < args.idle_close), daemon=True).start()
        n += 1


def pool(args):
    conns = {}  # peer address -> idle connections (the Go pool's map)
    for peer in args.peers.split(","):
        for _ in range(args.per):
            c = socket.create_connection(split_addr(peer), timeout=5)
            c.sendall(b"GET /rpc\n")
            assert read_exactly(c, len(RESPONSE)) == RESPONSE
            c.settimeout(None)
            conns.setdefault(peer, []).append(c)  # pool.Put(conn)
            say(f"conn peer {peer} fd {c.fileno()} local {fmt(c.getsockname())}")
    say("pooled")
    time.sleep(args.hold)


class CurlHandle:
    """A curl-like client whose handle outlives the request: once the
    upstream closes (Connection: close), nobody closes the socket."""

    leaked = []

    def __init__(self, addr):
        self.sock = socket.create_connection(split_addr(addr), timeout=5)
        CurlHandle.leaked.append(self)

    def get(self, path):
        self.sock.sendall(f"GET {path}\n".encode())
        return read_exactly(self.sock, len(RESPONSE))


def prefork_worker(i, ls, args):
    me = os.getpid()
    say(f"worker {i} pid {me} ready")
    for _ in range(args.requests):
        conn, _ = ls.accept()
        read_until(conn, b"\n")
        h = CurlHandle(args.upstream)
        say(f"worker {i} pid {me} upstream fd {h.sock.fileno()} local {fmt(h.sock.getsockname())} remote {fmt(h.sock.getpeername())}")
        h.get("/wms")
        conn.sendall(RESPONSE)
        conn.close()
    say(f"worker {i} pid {me} done")
    if i == args.orphan:
        # PHP exec("job &"): the child inherits every descriptor; then the
        # worker reaches MaxRequestsPerChild and exits.
        child = os.fork()
        if child == 0:
            time.sleep(args.hold)
            os._exit(0)
        say(f"worker {i} pid {me} child {child}")
        os._exit(0)
    time.sleep(args.hold)
    os._exit(0)


def prefork(args):
    ls = listen()
    say(f"listening {ls.getsockname()[1]} pid {os.getpid()}")
    workers = {}
    for i in range(args.workers):
        pid = os.fork()
        if pid == 0:
            prefork_worker(i, ls, args)
        workers[pid] = i
    end = time.monotonic() + args.hold
    while workers and time.monotonic() < end:
        pid, _ = os.waitpid(-1, 0)
        say(f"worker {workers.pop(pid)} exited")
    time.sleep(max(0, end - time.monotonic()))


def get(args):
    for _ in range(args.count):
        s = socket.create_connection(split_addr(args.connect), timeout=5)
        say(f"client local {fmt(s.getsockname())}")
        s.sendall(b"GET /order\n")
        read_until(s, b"\0")  # to EOF
        s.close()
    say("done")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tornado")
    t.add_argument("--backlog", type=int, default=128)
    t.add_argument("--upstream", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--connect", required=True)
    b.add_argument("--count", type=int, default=1)
    b.add_argument("--request", default="GET /pay HTTP/1.1\r\nHost: app\r\n\r\n")
    b.add_argument("--first-gap-ms", type=float, default=0)
    b.add_argument("--timeout-ms", type=float, default=300)
    b.add_argument("--probe", action="store_true")
    b.add_argument("--probe-ms", type=float, default=500)
    c = sub.add_parser("cherrypy")
    c.add_argument("--workers", type=int, default=10)
    k = sub.add_parser("keepalive")
    k.add_argument("--idle-ms", type=float, default=200)
    h = sub.add_parser("httplib")
    h.add_argument("--connect", required=True)
    h.add_argument("--batches", default="1")
    be = sub.add_parser("backend")
    be.add_argument("--after", choices=["close", "keep"], default="keep")
    be.add_argument("--idle-close", type=int, default=0)
    be.add_argument("--idle-ms", type=float, default=200)
    po = sub.add_parser("pool")
    po.add_argument("--peers", required=True)
    po.add_argument("--per", type=int, default=1)
    pf = sub.add_parser("prefork")
    pf.add_argument("--workers", type=int, default=3)
    pf.add_argument("--requests", type=int, default=1)
    pf.add_argument("--upstream", required=True)
    pf.add_argument("--orphan", type=int, default=-1)
    g = sub.add_parser("get")
    g.add_argument("--connect", required=True)
    g.add_argument("--count", type=int, default=1)
    for s in (t, b, c, k, h, be, po, pf, g):
        s.add_argument("--hold", type=float, default=30)
    args = p.parse_args()
    globals()[args.cmd](args)


if __name__ == "__main__":
    main()
