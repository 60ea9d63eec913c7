#!/usr/bin/env python3
"""The worker hop's floor, and corefn's function path as a fraction of it.

Starts, on one machine and in one run: `corefn-ceiling` (a glommio server
answering every request itself), `corefn-hop` (bench/hop.rs: the same
executors parse each request and pass the client's socket to a second
process, which writes a fixed answer and completes: only the hop), and
`corefn serve` with a static hello, the wasm hello and the native hello.
wrk runs against each, REPEATS rounds with the order rotating; the report
gives per server and route the median req/s, p50/p99 and server CPU per
request (the server's whole process tree), with the ratios that matter:
wasm / static, wasm / hop floor, hop floor / ceiling.

Then, with --perf, one more run per item under `perf stat` (attached to
every process of the server's tree, not measured for throughput: the
tracepoints cost time) counts context switches, wake-ups and system calls
per request.

Needs wrk (installed with apt-get when missing and run as root), a C
compiler (the native hello), release builds of the workspace
(cargo build --release --workspace), and for --perf the perf tool. Only
127.0.0.1 is used; every wrk run is bounded by --duration.
"""

import os
import re
import subprocess

import bench_common as common

PORTS = {"ceiling": 18380, "hop": 18381, "corefn": 18382, "corefn-alt": 18383}
ROUTES = [
    ("GET:/hello", '{"runtime":"static","body":"Hello, world!\\n"}'),
    ("GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}'),
    ("GET:/native/hello", '{"runtime":"native","module":"hello.so"}'),
]
# (label, server, path)
ITEMS = [
    ("ceiling", "ceiling", "/hello"),
    ("hop floor", "hop", "/hello"),
    ("corefn static", "corefn", "/hello"),
    ("corefn wasm hello", "corefn", "/wasm/hello"),
    ("corefn native hello", "corefn", "/native/hello"),
]
PERF_EVENTS = ["task-clock", "context-switches", "sched:sched_wakeup", "raw_syscalls:sys_enter"]


def tree_pids(root):
    """root and every live descendant."""
    pids, frontier = [root], [root]
    while frontier:
        found = [c for p in frontier for c in common.children(p)]
        pids += found
        frontier = found
    return pids


def perf_counts(pids, run_load):
    """perf stat of the events on every thread of pids while run_load()
    runs; {event: count} and run_load's result."""
    command = ["perf", "stat", "-x", ",", "-e", ",".join(PERF_EVENTS),
               "-p", ",".join(str(p) for p in pids)]
    perf = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        result = run_load()
    finally:
        perf.send_signal(2)
        _, err = perf.communicate(timeout=30)
    counts = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and re.match(r"^[0-9.]+$", fields[0]):
            counts[fields[2]] = float(fields[0])
    return counts, result


def main():
    p = common.parser(__doc__)
    common.add_wrk_rounds(p)
    p.add_argument("--perf", action="store_true", help="also count events with perf stat")
    common.add_option(p, "--alt-worker-threads", type=common.positive_int,
                      help="also a second corefn with this --worker-threads (wasm and native)")
    args = p.parse_args()
    if args.alt_worker_threads:
        for label, path in (("wasm hello", "/wasm/hello"), ("native hello", "/native/hello")):
            ITEMS.append((f"corefn {label}, {args.alt_worker_threads} worker threads",
                          "corefn-alt", path))
    common.require_tool("wrk")
    if args.perf:
        common.require_tool("perf", "linux-perf")
    bin_dir = os.path.dirname(args.binary)
    binaries = {name: os.path.join(bin_dir, name) for name in ("corefn-ceiling", "corefn-hop")}
    for path in [args.binary, *binaries.values()]:
        common.require_binary(path)

    raw = []
    with common.Run() as run:
        functions = run.path("functions")
        os.makedirs(functions)
        os.symlink(os.path.join(common.ROOT, "examples/wasm/hello.wat"),
                   os.path.join(functions, "hello.wat"))
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", os.path.join(functions, "hello.so"),
                        os.path.join(common.ROOT, "examples/native/hello.c")], check=True)
        db = run.path("bench.db")
        common.make_route_db(db, ROUTES)
        servers = {
            "ceiling": run.start_server(
                "ceiling", [binaries["corefn-ceiling"], "--listen", f"{common.HOST}:{PORTS['ceiling']}"],
                PORTS["ceiling"], run.path("ceiling.log")),
            "hop": run.start_server(
                "hop", [binaries["corefn-hop"], "--listen", f"{common.HOST}:{PORTS['hop']}"],
                PORTS["hop"], run.path("hop.log")),
            "corefn": run.start_corefn(
                args.binary, PORTS["corefn"], run.path("corefn.log"), "--db", db,
                "--functions-dir", functions, "--cache-dir", run.path("cache"),
                "--logs-dir", run.path("logs")),
        }
        if args.alt_worker_threads:
            alt_db = run.path("bench-alt.db")
            common.make_route_db(alt_db, ROUTES)
            servers["corefn-alt"] = run.start_corefn(
                args.binary, PORTS["corefn-alt"], run.path("corefn-alt.log"), "--db", alt_db,
                "--functions-dir", functions, "--cache-dir", run.path("cache-alt"),
                "--logs-dir", run.path("logs-alt"),
                "--worker-threads", str(args.alt_worker_threads))

        def wrk(item, duration):
            _, server, path = item
            return common.measured_wrk(args.wrk, servers[server].url(path), duration)

        for item in ITEMS:
            wrk(item, 1)  # warm-up: modules compiled, pools filled

        def measure(item, round_index):
            root = servers[item[1]].pid
            before = common.tree_cpu_seconds(root)
            result = wrk(item, args.duration)
            after = common.tree_cpu_seconds(root)
            raw.append(f"## round {round_index} {item[0]}\n{result['raw']}")
            return {**result, "cpu_us": (after - before) * 1e6 / max(result["requests"], 1)}

        results = common.rounds(ITEMS, args.repeats, measure)
        events = {}
        if args.perf:
            for item in ITEMS:
                counts, result = perf_counts(tree_pids(servers[item[1]].pid),
                                             lambda: wrk(item, args.duration))
                events[item] = {k: v / max(result["requests"], 1) for k, v in counts.items()}
                events[item]["rps"] = result["rps"]
        for server in servers.values():
            server.check_alive()

    rps = {item: common.median(runs, "rps") for item, runs in results.items()}
    cpu = {item: common.median(runs, "cpu_us") for item, runs in results.items()}
    lines = [
        f"wrk `{args.wrk} -d {args.duration}s`, median of {args.repeats} rounds (order rotating), "
        f"{common.utc_now()}. wrk shares the cores with the servers.",
        "",
        "| server, route | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for item, runs in results.items():
        lines.append(
            f"| {item[0]} | {rps[item]:.0f} | {common.ms(common.median(runs, 'p50_us'))} "
            f"| {common.ms(common.median(runs, 'p99_us'))} | {cpu[item]:.1f} "
            f"| {sum(r['non_2xx'] for r in runs)} |")
    by_label = {item[0]: item for item in ITEMS}

    def pair(a, b):
        a, b = by_label[a], by_label[b]
        return f"{common.ratio(rps[a], rps[b])} throughput, {common.ratio(cpu[a], cpu[b])} CPU/req"

    lines += [
        "",
        f"- wasm / static: {pair('corefn wasm hello', 'corefn static')}",
        f"- wasm / hop floor: {pair('corefn wasm hello', 'hop floor')}",
        f"- native / hop floor: {pair('corefn native hello', 'hop floor')}",
        f"- hop floor / ceiling: {pair('hop floor', 'ceiling')}",
        f"- static / ceiling: {pair('corefn static', 'ceiling')}",
    ]
    if events:
        lines += [
            "",
            f"perf stat per request (one more `{args.wrk} -d {args.duration}s` run each, every "
            "thread of the server's processes; slower than the rounds above: tracepoints cost time):",
            "",
            "| server, route | req/s under perf | task-clock µs | context switches | wake-ups | system calls |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for item, counts in events.items():
            lines.append(
                f"| {item[0]} | {counts['rps']:.0f} | {counts.get('task-clock', 0) * 1000:.1f} "
                f"| {counts.get('context-switches', 0):.2f} | {counts.get('sched:sched_wakeup', 0):.2f} "
                f"| {counts.get('raw_syscalls:sys_enter', 0):.1f} |")
    common.write_report(args.out, "\n".join(lines), raw)


if __name__ == "__main__":
    common.main(main)
