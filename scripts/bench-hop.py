#!/usr/bin/env python3
"""The worker hop's floor, and corefn's function path as a fraction of it.

Starts, on one machine and in one run: `corefn-ceiling` (a glommio server
answering every request itself), `corefn-hop` (bench/hop.rs: the same
executors parse each request and pass the client's socket to a second
process, which writes a fixed answer and completes: only the hop), and
`corefn serve` with a static hello, the wasm hello, the native hello and
the python hello (with --before, a second `corefn serve` of an earlier
build with the same routes, measured in the same rounds).
wrk runs against each, REPEATS rounds with the order rotating; the report
gives per server and route the median req/s, p50/p99 and server CPU per
request (the server's whole process tree), with the ratios that matter:
wasm / static, wasm / hop floor, hop floor / ceiling.

The floor is measured in each of corefn-hop's modes: `socket` (corefn's
hop today: the client's socket with every call), `fd-once` (the socket
with a connection's first call only), `ring` (fd-once, and the calls
through a shared-memory ring with a futex wake), `completion-ring` (the
calls as `socket`, the completions through a ring with a doorbell only
when the core waits) and `rings` (both), so that a cheaper hop is measured
on the floor before it is built into corefn.

With --peer-wasmtime, the peer a wasm user would pick instead is measured
in the same rounds: `wasmtime serve` (wasmtime-cli WASMTIME_VERSION from
crates.io, built once into the benchmarks' cache) with bench/peers/
wasi-http-hello.wat (the wasm hello's answer as a wasi:http component,
made with wasm-tools), with a fresh instance per request and with instance
reuse (--max-instance-reuse-count).

With --open-loop, corefn-bench (open loop, latency from each request's
intended send time, so coordinated omission is corrected) loads the wasm
hello of each corefn at half of its median wrk throughput and at 1,000
req/s, giving p50/p99/p99.9 and server CPU per request there, and the
server's CPU while idle.

Then, with --perf, one more run per item under `perf stat` (attached to
every process of the server's tree, not measured for throughput: the
tracepoints cost time) counts context switches, wake-ups and system calls
per request.

Needs wrk (installed with apt-get when missing and run as root), a C
compiler (the native hello), release builds of the workspace
(cargo build --release --workspace), and for --perf the perf tool. Only
127.0.0.1 is used; every wrk run is bounded by --duration.
"""

import json
import os
import re
import subprocess
import time

import bench_common as common

PORTS = {"ceiling": 18380, "hop": 18381, "corefn": 18382, "corefn-alt": 18383,
         "corefn-before": 18384, "hop-fd-once": 18385, "hop-ring": 18386, "wasmtime": 18387,
         "wasmtime-reuse": 18388, "hop-rings": 18389, "hop-completion-ring": 18392}
# corefn-hop's modes besides `socket`, with their labels.
HOP_MODES = [("fd-once", "fd once"), ("ring", "dispatch ring"),
             ("completion-ring", "completion ring"), ("rings", "both rings")]
WASMTIME_VERSION = "48.0.8"
WASM_TOOLS_VERSION = "1.263.0"
# Requests an instance serves before a fresh one, in the reuse case.
WASMTIME_REUSE_COUNT = 1000
WASMTIME_ITEMS = [
    ("wasmtime serve hello", "wasmtime", "/"),
    ("wasmtime serve hello, instance reuse", "wasmtime-reuse", "/"),
]
ROUTES = [
    ("GET:/hello", '{"runtime":"static","body":"Hello, world!\\n"}'),
    ("GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}'),
    ("GET:/native/hello", '{"runtime":"native","module":"hello.so"}'),
    ("GET:/python/hello", '{"runtime":"python","module":"hello.py"}'),
]
# (label, server, path)
ITEMS = [
    ("ceiling", "ceiling", "/hello"),
    ("hop floor", "hop", "/hello"),
    *((f"hop floor, {label}", f"hop-{mode}", "/hello") for mode, label in HOP_MODES),
    ("corefn static", "corefn", "/hello"),
    ("corefn wasm hello", "corefn", "/wasm/hello"),
    ("corefn native hello", "corefn", "/native/hello"),
    ("corefn python hello", "corefn", "/python/hello"),
]
# The corefn items again, against the --before build.
COREFN_ITEMS = [item for item in ITEMS if item[1] == "corefn"]
PERF_EVENTS = ["task-clock", "context-switches", "sched:sched_wakeup", "raw_syscalls:sys_enter"]


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


OPEN_LOOP_CONNECTIONS = 32
OPEN_LOOP_LOW_RPS = 1000


def measure_open_loop(run, servers, results, bench_bin, args):
    """corefn-bench at half of each corefn's wasm peak and at 1,000 req/s,
    and each corefn's idle CPU; one row each."""
    rows = []
    for server_name in ("corefn", "corefn-before"):
        if server_name not in servers:
            continue
        server = servers[server_name]
        peak = [common.median(runs, "rps") for item, runs in results.items()
                if item[1] == server_name and item[2] == "/wasm/hello"][0]
        for rate in (peak / 2, OPEN_LOOP_LOW_RPS):
            out = run.path(f"open-{server_name}-{rate:.0f}.json")
            common.run_tool(
                [bench_bin, server.url("/wasm/hello"), "-c", str(OPEN_LOOP_CONNECTIONS),
                 "--rate", f"{rate:.0f}", "--warmup", "1", "-d", str(args.duration),
                 "--server-pid", str(server.pid), "--json", out],
                f"corefn-bench at {rate:.0f} req/s", timeout_s=args.duration + 30)
            with open(out) as f:
                report = json.load(f)
            rows.append({"server": server_name, "rate": rate,
                         "throughput": report["throughput_rps"],
                         "latency_us": report["latency_us"],
                         "cpu_us": (report.get("server_cpu") or {}).get("cpu_us_per_request", 0)})
        before = common.tree_cpu_seconds(server.pid)
        time.sleep(args.duration)
        idle_s = common.tree_cpu_seconds(server.pid) - before
        rows.append({"server": server_name, "rate": None,
                     "idle_cpu_pct": idle_s * 100 / args.duration})
    return rows


def start_wasmtime_serve(run, servers):
    """`wasmtime serve` of the wasi:http hello, with fresh instances and
    with reused ones."""
    wasmtime = common.cargo_tool("wasmtime-cli", WASMTIME_VERSION, "wasmtime")
    wasm_tools = common.cargo_tool("wasm-tools", WASM_TOOLS_VERSION, "wasm-tools")
    # The WIT wasmtime's own wasi-http implements; cargo unpacked it to
    # build wasmtime-cli.
    crate = common.cargo_registry_dir("wasmtime-wasi-http", WASMTIME_VERSION)
    if crate is None:
        raise common.Failure(f"no wasmtime-wasi-http {WASMTIME_VERSION} source in cargo's registry")
    embedded, component = run.path("hello-embedded.wasm"), run.path("hello-component.wasm")
    common.run_tool([wasm_tools, "component", "embed", os.path.join(crate, "wit"),
                     "--world", "wasi:http/proxy", os.path.join(common.ROOT, "bench", "peers",
                                                               "wasi-http-hello.wat"),
                     "-o", embedded], "wasm-tools component embed", timeout_s=60)
    common.run_tool([wasm_tools, "component", "new", embedded, "-o", component],
                    "wasm-tools component new", timeout_s=60)
    for name, extra in (("wasmtime", []),
                        ("wasmtime-reuse", ["--max-instance-reuse-count",
                                            str(WASMTIME_REUSE_COUNT)])):
        servers[name] = run.start_server(
            name, [wasmtime, "serve", "--addr", f"{common.HOST}:{PORTS[name]}", *extra,
                   component], PORTS[name], run.path(f"{name}.log"), ready="Serving HTTP")


def main():
    p = common.parser(__doc__)
    common.add_wrk_rounds(p)
    p.add_argument("--perf", action="store_true", help="also count events with perf stat")
    common.add_option(p, "--alt-worker-threads", type=common.positive_int,
                      help="also a second corefn with this --worker-threads (wasm and native)")
    p.add_argument("--open-loop", action="store_true",
                   help="also the wasm hello at half of peak and at 1,000 req/s with corefn-bench")
    common.add_option(p, "--before", help="also a corefn of an earlier build (its binary), "
                      "same routes, same rounds")
    p.add_argument("--peer-wasmtime", action="store_true",
                   help=f"also `wasmtime serve` {WASMTIME_VERSION} with the same hello, fresh "
                   "instances and reused ones (built from crates.io once)")
    args = p.parse_args()
    if args.peer_wasmtime:
        ITEMS.extend(WASMTIME_ITEMS)
    if args.before:
        common.require_binary(args.before)
        ITEMS.extend((f"before: {label}", "corefn-before", path) for label, _, path in COREFN_ITEMS)
    if args.alt_worker_threads:
        for label, path in (("wasm hello", "/wasm/hello"), ("native hello", "/native/hello")):
            ITEMS.append((f"corefn {label}, {args.alt_worker_threads} worker threads",
                          "corefn-alt", path))
    common.require_tool("wrk")
    if args.perf:
        common.require_tool("perf", "linux-perf")
    bin_dir = os.path.dirname(args.binary)
    binaries = {name: os.path.join(bin_dir, name)
                for name in ("corefn-ceiling", "corefn-hop", "corefn-bench")}
    for path in [args.binary, *binaries.values()]:
        common.require_binary(path)

    raw = []
    with common.Run() as run:
        functions = common.hello_functions(run, "examples/python/hello.py")
        servers = {
            "ceiling": run.start_server(
                "ceiling", [binaries["corefn-ceiling"], "--listen", f"{common.HOST}:{PORTS['ceiling']}"],
                PORTS["ceiling"], run.path("ceiling.log")),
        }
        for name, mode in (("hop", "socket"), *((f"hop-{m}", m) for m, _ in HOP_MODES)):
            servers[name] = run.start_server(
                name, [binaries["corefn-hop"], "--listen", f"{common.HOST}:{PORTS[name]}",
                       "--mode", mode], PORTS[name], run.path(f"{name}.log"))
        if args.peer_wasmtime:
            start_wasmtime_serve(run, servers)

        def start_corefn(name, binary, *extra):
            """A corefn on its own database, cache and logs, with ROUTES."""
            db = run.path(f"{name}.db")
            common.make_route_db(db, ROUTES)
            servers[name] = run.start_corefn(
                binary, PORTS[name], run.path(f"{name}.log"), "--db", db,
                "--functions-dir", functions, "--cache-dir", run.path(f"cache-{name}"),
                "--logs-dir", run.path(f"logs-{name}"), *extra)

        start_corefn("corefn", args.binary)
        if args.before:
            start_corefn("corefn-before", args.before)
        if args.alt_worker_threads:
            start_corefn("corefn-alt", args.binary, "--worker-threads", str(args.alt_worker_threads))

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
        open_loop = []
        if args.open_loop:
            open_loop = measure_open_loop(run, servers, results, binaries["corefn-bench"], args)
        events = {}
        if args.perf:
            for item in ITEMS:
                counts, result = perf_counts(common.tree_pids(servers[item[1]].pid),
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
        f"- python / static: {pair('corefn python hello', 'corefn static')}",
        f"- hop floor / ceiling: {pair('hop floor', 'ceiling')}",
        *(f"- hop floor, {label} / hop floor: {pair('hop floor, ' + label, 'hop floor')}"
          for _, label in HOP_MODES),
        f"- static / ceiling: {pair('corefn static', 'ceiling')}",
    ]
    if args.peer_wasmtime:
        p99 = {item: common.median(runs, "p99_us") for item, runs in results.items()}
        for label, _, _ in WASMTIME_ITEMS:
            wasm, peer = by_label["corefn wasm hello"], by_label[label]
            lines.append(f"- wasm / {label}: {pair('corefn wasm hello', label)}, "
                         f"p99 {common.ratio(p99[wasm], p99[peer])}")
    if args.before:
        lines += [f"- {label}, this build / before: {pair(label, 'before: ' + label)}"
                  for label, _, _ in COREFN_ITEMS]
    if open_loop:
        lines += [
            "",
            f"Open loop (corefn-bench -c {OPEN_LOOP_CONNECTIONS} -d {args.duration} after a 1 s "
            "warm-up; latency from the intended send time), wasm hello; idle: server CPU over "
            f"{args.duration} s with no load:",
            "",
            "| server | rate req/s | achieved | p50 ms | p99 ms | p99.9 ms | server CPU µs/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in open_loop:
            if row["rate"] is None:
                lines.append(f"| {row['server']} | idle | | | | | "
                             f"{row['idle_cpu_pct']:.2f} % of a core |")
                continue
            latency = row["latency_us"]
            lines.append(
                f"| {row['server']} | {row['rate']:.0f} | {row['throughput']:.0f} "
                f"| {common.ms(latency['p50_us'])} | {common.ms(latency['p99_us'])} "
                f"| {common.ms(latency['p999_us'])} | {row['cpu_us']:.1f} |")
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
