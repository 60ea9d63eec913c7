#!/usr/bin/env python3
"""corefn's php host against nginx + php-fpm on the same script, same wrk.

Starts nginx + php-fpm (scripts/php-fpm-baseline.sh start, Debian's
packages, pm = static) and a release corefn whose route GET /php/bench runs
the same examples/php/bench.php in its warm php-cgi hosts, with as many PHP
processes on each side (--php-processes, default 4: php-fpm children, and
corefn workers x worker threads). Then runs the same wrk command against
both, REPEATS rounds alternating which goes first, and reports median
req/s, p50, p99 and the ratio. Both servers and wrk share the machine's
cores: compare the ratio, not the absolute figures.

usage: scripts/bench-php.py [--duration 5] [--repeats 3] [--wrk "-t2 -c64"]
       [--php-processes 4] [--out DIR]
Needs wrk, nginx, php-fpm and php-cgi (apt-get install wrk nginx php-fpm
php-cgi) and a release build (cargo build --release).
"""

import argparse
import datetime
import os
import re
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile

import bench_common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COREFN_PORT = 18380
FPM_PORT = 18381


def wrk(args, url, duration):
    out = subprocess.run(["wrk", "-d", f"{duration}s", "--latency", *shlex.split(args), url],
                         capture_output=True, text=True, check=True).stdout
    return {**bench_common.summary(out), "raw": out}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wrk", default="-t2 -c64")
    parser.add_argument("--php-processes", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/corefn"))
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit("build first: cargo build --release")
    if args.php_processes % 2:
        sys.exit("--php-processes must be even (corefn runs 2 workers)")

    tmp = tempfile.mkdtemp(prefix="corefn-bench-php-")
    db = os.path.join(tmp, "bench.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE functions(k TEXT PRIMARY KEY, v TEXT NOT NULL, updated INTEGER NOT NULL)")
        conn.execute("INSERT INTO functions VALUES ('GET:/php/bench', ?, 0)",
                     ('{"runtime":"php","module":"bench.php"}',))
    fpm = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts/php-fpm-baseline.sh"), "start", str(FPM_PORT)],
        env={**os.environ, "FPM_CHILDREN": str(args.php_processes), "WITH_PRELUDE": "1"},
        capture_output=True, text=True, check=True)
    state_dir = re.search(r"state: (\S+)", fpm.stdout + fpm.stderr).group(1)
    corefn = subprocess.Popen(
        [args.binary, "serve", "--listen", f"127.0.0.1:{COREFN_PORT}", "--db", db,
         "--workers", "2", "--worker-threads", str(args.php_processes // 2),
         "--host-min-instances", str(args.php_processes // 2),
         "--functions-dir", os.path.join(ROOT, "examples/php"),
         "--cache-dir", os.path.join(tmp, "cache"), "--logs-dir", os.path.join(tmp, "logs")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    servers = {
        "corefn php host": f"http://127.0.0.1:{COREFN_PORT}/php/bench",
        "nginx + php-fpm": f"http://127.0.0.1:{FPM_PORT}/php/bench",
    }
    results = {name: [] for name in servers}
    raw = []
    try:
        if "listening" not in corefn.stdout.readline():
            sys.exit("corefn did not start")
        for url in servers.values():  # warm-up: start hosts, fill opcache
            wrk("-t1 -c8", url, 1)
        for round_index in range(args.repeats):
            names = list(servers)
            if round_index % 2:
                names.reverse()
            for name in names:
                result = wrk(args.wrk, servers[name], args.duration)
                raw.append(f"## round {round_index} {name}\n{result.pop('raw')}")
                results[name].append(result)
    finally:
        bench_common.stop_server(corefn)
        subprocess.run(["bash", os.path.join(ROOT, "scripts/php-fpm-baseline.sh"), "stop", state_dir],
                       capture_output=True)

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    base = "nginx + php-fpm"
    lines = [
        f"examples/php/bench.php, wrk `{args.wrk} -d {args.duration}s`, median of {args.repeats} rounds, "
        f"{args.php_processes} PHP processes on each side, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "| server | req/s | p50 ms | p99 ms | req/s vs php-fpm | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in servers:
        lines.append(
            f"| {name} | {med(name, 'rps'):.0f} | {med(name, 'p50'):.2f} | {med(name, 'p99'):.2f} "
            f"| {med(name, 'rps') / med(base, 'rps'):.2f} | {sum(r['errors'] for r in results[name])} |")
    bench_common.write_report(args.out, "\n".join(lines), raw)


if __name__ == "__main__":
    main()
