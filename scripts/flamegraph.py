#!/usr/bin/env python3
"""CPU flame graph of corefn under load.

Starts a release `corefn serve` on a fresh database (the routes of
scripts/bench.py: GET /hello static, GET /wasm/hello, POST /wasm/echo with a
1 KiB body), loads one route with corefn-bench (closed loop), records the
gateway and its worker processes with `perf record` for DURATION seconds,
folds the stacks with inferno-collapse-perf and renders flamegraphs/NAME.svg
with inferno-flamegraph. It prints the frames with the largest inclusive
share (the share of samples whose stack contains them).

examples:
  scripts/flamegraph.py wasm-hello                 # GET /wasm/hello
  scripts/flamegraph.py static-hello GET /hello
  scripts/flamegraph.py wasm-echo POST /wasm/echo  # 1 KiB body

Needs perf (perf_event_paranoid <= 1, or root) and inferno (installed with
`cargo install inferno` when missing). Loopback only; the whole run is
bounded to about DURATION + 1 min, plus the build.
"""

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time

import bench_common as common
from bench_common import Failure

PORT = 18501
TOP = 8
# Frames every thread's stack goes through: they say nothing about the cost.
PLUMBING = {
    "start_thread", "clone3", "clone", "_start", "main", "__libc_start_main",
    "__libc_start_call_main", "std::sys::backtrace::__rust_begin_short_backtrace",
    "core::ops::function::FnOnce::call_once{{vtable.shim}}",
    "<std::sys::thread::unix::Thread>::new::thread_start",
}


def pattern(regex, what):
    def check(text):
        if not re.fullmatch(regex, text):
            raise argparse.ArgumentTypeError(f"{what}, got '{text}'")
        return text
    return check


def require_inferno():
    if shutil.which("inferno-flamegraph") and shutil.which("inferno-collapse-perf"):
        return
    if not shutil.which("cargo"):
        raise Failure("inferno is not installed and cargo is missing")
    common.log("installing inferno (cargo install inferno)")
    subprocess.run(["cargo", "install", "inferno"], stdout=sys.stderr, timeout=900, check=True)
    cargo_bin = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "bin")
    os.environ["PATH"] = f"{cargo_bin}:{os.environ['PATH']}"


def record(run, server, bench_bin, args):
    """perf.data of the gateway and its workers while corefn-bench loads the route."""
    body = ["--body-file", common.body_file(run.work, 1024)] if args.method not in ("GET", "HEAD") else []
    # The load outlasts the recording: 2 s warm-up (module compiled, workers
    # started), DURATION s recorded, 2 s to spare.
    load_s = args.duration + 2
    load_log = run.path("load.txt")
    load = run.start_background(
        [bench_bin, server.url(args.path), "-X", args.method, *body, "-c", str(args.connections),
         "--warmup", "2", "-d", str(load_s)], load_log, timeout_s=load_s + 30)
    time.sleep(2.5)
    if load.poll() is not None:
        raise Failure("corefn-bench stopped early", showing=load_log)

    # The gateway and its direct children (the worker processes).
    pids = ",".join(str(pid) for pid in [server.pid, *common.children(server.pid)])
    common.log(f"perf record -F {args.freq} --call-graph {args.call_graph} -p {pids} for "
               f"{args.duration} s, {args.method} {args.path}")
    # 16 KiB of stack per sample: deep enough for the executor and wasmtime
    # frames, small enough to keep perf.data to tens of MB.
    call_graph = "dwarf,16384" if args.call_graph == "dwarf" else args.call_graph
    common.run_tool(["perf", "record", "-F", str(args.freq), "--call-graph", call_graph, "-p", pids,
                     "-o", run.path("perf.data"), "--", "sleep", str(args.duration)],
                    "perf record", output=run.path("perf-record.txt"), timeout_s=args.duration + 60)

    common.wait_background(load, "corefn-bench", load_log)
    server.check_alive()
    for line in common.tail(load_log, 1000):
        if re.match(r"^ *(throughput|requests|errors)", line):
            common.log(line.strip())


def fold_and_render(run, args, svg):
    common.log("folding stacks")
    folded, errors = run.path("stacks.folded"), run.path("perf-script.err")
    # --no-inline: resolving inlined frames through addr2line takes minutes.
    with open(folded, "w") as out, open(errors, "w") as err:
        script = subprocess.Popen(["perf", "script", "--no-inline", "-i", run.path("perf.data")],
                                  stdout=subprocess.PIPE, stderr=err)
        collapse = subprocess.Popen(["inferno-collapse-perf"], stdin=script.stdout, stdout=out)
        script.stdout.close()
        try:
            statuses = [collapse.wait(timeout=600), script.wait(timeout=60)]
        except subprocess.TimeoutExpired:
            script.kill()
            collapse.kill()
            statuses = [None]
    if any(status != 0 for status in statuses):
        raise Failure("perf script / inferno-collapse-perf failed", showing=errors)
    if not os.path.getsize(folded):
        raise Failure("no stacks were recorded", showing=errors)

    os.makedirs(os.path.dirname(svg), exist_ok=True)
    with open(folded) as stacks, open(run.path("out.svg"), "w") as out:
        if subprocess.run(["inferno-flamegraph", "--title",
                           f"corefn: {args.method} {args.path}, {args.duration} s at {args.freq} Hz"],
                          stdin=stacks, stdout=out, timeout=300).returncode:
            raise Failure("inferno-flamegraph failed")
    shutil.move(run.path("out.svg"), svg)
    if args.keep_folded:
        shutil.copy(folded, args.keep_folded)
    return folded


def top_frames(folded):
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    with open(folded) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            # frames[0] is the thread name (perf's comm).
            for frame in set(frames[1:]) - PLUMBING:
                inclusive[frame] += n
            own[frames[-1]] += n
    print(f"Top {TOP} frames by inclusive share (stacks containing the frame, weighted by the")
    print("perf event's period; thread names and thread-start frames left out), then by self share:")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"{title}:")
        for frame, n in counter.most_common(TOP):
            print("  %6.2f%%  %s" % (100.0 * n / total, frame[:160]))


def main():
    p = common.parser(__doc__)
    p.add_argument("name", type=pattern(r"[A-Za-z0-9._-]+", "NAME must be letters, digits, '.', '_' or '-'"),
                   help="names the SVG: flamegraphs/NAME.svg")
    p.add_argument("method", nargs="?", default="GET",
                   type=pattern(r"[A-Z]+", "METHOD must be an HTTP method"), help="(default GET)")
    p.add_argument("path", nargs="?", default="/wasm/hello",
                   type=pattern(r"/.*", "PATH must start with '/'"), help="(default /wasm/hello)")
    common.add_duration(p, help="seconds recorded by perf")
    common.add_option(p, "--freq", "FREQ", "999", type=common.positive_int, help="sampling frequency in Hz")
    common.add_option(p, "--call-graph", "CALL_GRAPH", "dwarf", choices=["dwarf", "fp"],
                      help="perf --call-graph mode")
    common.add_connections(p, help="corefn-bench connections")
    common.add_skip_build(p)
    common.add_option(p, "--keep-folded", "KEEP_FOLDED", "", help="a file to keep the folded stacks in")
    args = p.parse_args()

    if not shutil.which("perf"):
        raise Failure("perf is not installed (e.g. 'apt-get install linux-perf')")
    require_inferno()
    corefn_bin, bench_bin = common.release_binaries("corefn", "corefn-bench", skip_build=args.skip_build)
    svg = os.path.join(common.ROOT, "flamegraphs", f"{args.name}.svg")

    with common.Run(prefix="corefn-flamegraph.") as run:
        db = run.path("functions.db")
        common.make_route_db(db, common.BENCH_ROUTES)
        server = run.start_corefn(
            corefn_bin, PORT, run.path("server.log"), "--db", db,
            "--functions-dir", os.path.join(common.ROOT, "examples/wasm"), "--cache-dir", run.path("cache"))
        record(run, server, bench_bin, args)
        folded = fold_and_render(run, args, svg)
        common.log(f"wrote {os.path.relpath(svg, common.ROOT)} ({os.path.getsize(svg) // 1024} KiB)")
        top_frames(folded)


if __name__ == "__main__":
    common.main(main)
