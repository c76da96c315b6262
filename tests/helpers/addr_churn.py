#!/usr/bin/env python3
"""Connection churn on loopback in one process: listens, then COUNT times
connects, accepts, and closes both ends (client first), so every socket is
freed and its kernel address goes back to the allocator for the next socket.
Prints "churned N pid PID" at the end. Only 127.0.0.1 is used."""
import os
import socket
import sys

count = int(sys.argv[1])
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
addr = ls.getsockname()
for _ in range(count):
    c = socket.create_connection(addr)
    a, _ = ls.accept()
    c.close()
    a.close()
print(f"churned {count} pid {os.getpid()}", flush=True)
