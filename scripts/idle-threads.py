#!/usr/bin/env python3
"""Where an idle (or lightly loaded) corefn spends its CPU, thread by thread.

Starts `corefn serve` (and, with --before, a second corefn of an earlier
build) with the static, wasm and native hellos, sends each a few hundred
requests so every worker thread, pool and ticker has started, lets it
settle, then samples every thread of the server's process tree (the
gateway and its workers) over --duration seconds: CPU (utime + stime) in
ms per second and voluntary context switches (sleeps, so wake-ups) per
second, by thread name. With --rate, corefn-bench (open loop) loads the
wasm hello at that rate while the second sample is taken.

Wake-up counts do not depend on the machine's speed, so they compare
across runs; CPU figures compare within one run only.

Needs release builds (cargo build --release --workspace) and a C compiler
(the native hello). Only 127.0.0.1 is used; every load is bounded.
"""

import collections
import os
import time

import bench_common as common

PORTS = {"corefn": 18390, "corefn-before": 18391}
ROUTES = [
    ("GET:/hello", '{"runtime":"static","body":"Hello, world!\\n"}'),
    ("GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}'),
    ("GET:/native/hello", '{"runtime":"native","module":"hello.so"}'),
]
WARM_REQUESTS = 200
SETTLE_S = 2


def tree_tasks(root):
    """(pid, tid) of every thread of root and its live descendants."""
    tasks = []
    for pid in common.tree_pids(root):
        try:
            tasks += [(pid, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
    return tasks


def sample(root):
    """{(pid, tid): (name, cpu ticks, voluntary switches)} of the tree now."""
    taken = {}
    for pid, tid in tree_tasks(root):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/stat") as f:
                text = f.read()
            with open(f"{base}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        taken[(pid, tid)] = (name, ticks, int(status["voluntary_ctxt_switches"]))
    return taken


def per_thread_name(root, duration_s, during=None):
    """{thread name: [cpu ms/s, wake-ups/s, threads]} over duration_s (while
    during() runs, when given)."""
    before = sample(root)
    started = time.monotonic()
    if during:
        during()
    else:
        time.sleep(duration_s)
    elapsed = time.monotonic() - started
    after = sample(root)
    rows = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for task, (name, ticks, switches) in after.items():
        _, ticks0, switches0 = before.get(task, (name, 0, 0))
        row = rows[name]
        row[0] += (ticks - ticks0) * 1000 / common.CLK_TCK / elapsed
        row[1] += (switches - switches0) / elapsed
        row[2] += 1
    return rows


def main():
    p = common.parser(__doc__)
    common.add_binary(p)
    common.add_duration(p, default=10)
    common.add_option(p, "--before", help="also a corefn of an earlier build (its binary)")
    common.add_option(p, "--out", help="also write summary.md to this folder")
    common.add_option(p, "--rate", type=common.positive_int,
                      help="also sample while corefn-bench sends the wasm hello at this rate")
    args = p.parse_args()
    bench_bin = os.path.join(os.path.dirname(args.binary), "corefn-bench")
    for path in [args.binary, bench_bin] + ([args.before] if args.before else []):
        common.require_binary(path)
    tables = []
    with common.Run() as run:
        functions = common.hello_functions(run)
        servers = {}
        for name, binary in (("corefn", args.binary), ("corefn-before", args.before)):
            if not binary:
                continue
            db = run.path(f"{name}.db")
            common.make_route_db(db, ROUTES, corefn=binary)
            servers[name] = run.start_corefn(
                binary, PORTS[name], run.path(f"{name}.log"), "--db", db,
                "--functions-dir", functions, "--cache-dir", run.path(f"cache-{name}"),
                "--logs-dir", run.path(f"logs-{name}"))
        for name, server in servers.items():
            for path, _ in ((r[0].split(":", 1)[1], r[1]) for r in ROUTES):
                for _ in range(WARM_REQUESTS):
                    status, _ = common.http_request(server.port, "GET", path)
                    if status != 200:
                        raise common.Failure(f"{name} {path}: {status}", showing=server.log)
        time.sleep(SETTLE_S)
        for name, server in servers.items():
            tables.append((f"{name}, idle", per_thread_name(server.pid, args.duration)))
            if args.rate:
                def load(server=server, name=name):
                    common.run_tool(
                        [bench_bin, server.url("/wasm/hello"), "-c", "32", "--rate",
                         str(args.rate), "-d", str(args.duration)],
                        f"corefn-bench at {args.rate} req/s", timeout_s=args.duration + 30)
                tables.append((f"{name}, wasm hello at {args.rate} req/s",
                               per_thread_name(server.pid, args.duration, during=load)))
        for server in servers.values():
            server.check_alive()
    lines = [f"Threads of corefn's process tree over {args.duration} s, {common.utc_now()}."]
    for title, rows in tables:
        total_cpu = sum(row[0] for row in rows.values())
        total_wakes = sum(row[1] for row in rows.values())
        lines += ["", f"{title}: {total_cpu:.1f} ms of CPU a second, {total_wakes:.0f} wake-ups "
                  "a second", "",
                  "| thread | threads | CPU ms/s | wake-ups/s |", "| --- | ---: | ---: | ---: |"]
        for name, (cpu_ms, wakes, count) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
            if cpu_ms < 0.05 and wakes < 0.5:
                continue
            lines.append(f"| {name} | {count} | {cpu_ms:.1f} | {wakes:.1f} |")
    common.write_report(args.out, "\n".join(lines), [])


if __name__ == "__main__":
    common.main(main)
