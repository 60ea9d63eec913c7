#!/usr/bin/env python3
"""Holds N idle keep-alive connections open against corefn and measures it.

Starts a release `corefn serve` (demo routes, workers as configured) on a
fresh database, opens N connections to 127.0.0.1, makes one request on each
and leaves it idle, then: reads the gateway's RSS, checks that a sample of the
idle connections still answer and that a fresh connection is served, and
closes everything. Prints RSS before, with the connections open, and per
connection.
"""

import resource
import socket
import sys
import time

import bench_common as common

PORT = 18600
REQUEST = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def read_response(sock):
    data = b""
    while b"Hello, world!\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def main():
    p = common.parser(__doc__)
    common.add_option(p, "--connections", default="10000", type=common.positive_int)
    common.add_binary(p)
    common.add_option(p, "--workers", default="2", type=int)
    args = p.parse_args()
    common.require_binary(args.binary)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 256
    if hard < need:
        raise common.Failure(f"open-files hard limit {hard} is below the {need} this client needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    sockets = []
    with common.Run(prefix="corefn-idle.") as run:
        server = run.start_corefn(args.binary, PORT, run.path("server.log"),
                                  "--db", run.path("c.db"), "--workers", str(args.workers),
                                  "--cache-dir", run.path("cache"))
        run.on_exit(lambda: [s.close() for s in sockets])
        time.sleep(0.5)
        rss_idle = rss_kib(server.pid)
        started = time.time()
        errors = 0
        for _ in range(args.connections):
            try:
                s = socket.create_connection((common.HOST, PORT), timeout=5)
                s.sendall(REQUEST)
                read_response(s)
                sockets.append(s)
            except OSError:
                errors += 1
        opened_s = time.time() - started
        time.sleep(1.0)
        rss_held = rss_kib(server.pid)
        # Every 100th idle connection must still be served.
        stale = 0
        for s in sockets[::100]:
            try:
                s.sendall(REQUEST)
                read_response(s)
            except OSError:
                stale += 1
        fresh = socket.create_connection((common.HOST, PORT), timeout=5)
        fresh.sendall(REQUEST)
        read_response(fresh)
        fresh.close()
        held = len(sockets)
        per_connection = (rss_held - rss_idle) / max(held, 1)
        print(f"{held} idle keep-alive connections held ({errors} failed to open, "
              f"opened in {opened_s:.1f} s); {stale} of {len(sockets[::100])} sampled "
              f"idle connections failed a second request; a fresh connection was served")
        print(f"gateway RSS: {rss_idle / 1024:.1f} MiB idle, {rss_held / 1024:.1f} MiB "
              f"with the connections open, {per_connection:.2f} KiB per connection")
    if errors or stale:
        sys.exit(1)


if __name__ == "__main__":
    common.main(main)
