#!/usr/bin/env bash
# CPU flame graph of corefn under load.
#
# Starts a release `corefn serve` on a fresh database (the routes of
# scripts/bench.sh: GET /hello static, GET /wasm/hello, POST /wasm/echo with a
# 1 KiB body), loads one route with corefn-bench (closed loop), records the
# gateway and its worker processes with `perf record` for DURATION seconds,
# folds the stacks with inferno-collapse-perf and renders
# flamegraphs/NAME.svg with inferno-flamegraph. It prints the frames with the
# largest inclusive share (the share of samples whose stack contains them).
#
# usage: scripts/flamegraph.sh NAME [METHOD] [PATH]
#        scripts/flamegraph.sh wasm-hello                 # GET /wasm/hello
#        scripts/flamegraph.sh static-hello GET /hello
#        scripts/flamegraph.sh wasm-echo POST /wasm/echo  # 1 KiB body
#
# Environment:
#   DURATION     seconds recorded by perf (default 5)
#   FREQ         sampling frequency in Hz (default 999)
#   CALL_GRAPH   perf --call-graph mode: dwarf (default) or fp
#   CONNECTIONS  corefn-bench connections (default 64)
#   SKIP_BUILD   1: use the existing release binaries, no cargo build
#   KEEP_FOLDED  a file to keep the folded stacks in (default: not kept)
#
# Needs perf (perf_event_paranoid ≤ 1, or root) and inferno (installed with
# `cargo install inferno` when missing). Loopback only; the whole run is
# bounded to about DURATION + 1 min, plus the build.
set -euo pipefail

DURATION=${DURATION:-5}
FREQ=${FREQ:-999}
CALL_GRAPH=${CALL_GRAPH:-dwarf}
CONNECTIONS=${CONNECTIONS:-64}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_FOLDED=${KEEP_FOLDED:-}

PORT=18501
TOP=8

die() {
    echo "flamegraph: $*" >&2
    exit 1
}

die_showing() {
    echo "--- last lines of $(basename "$1"):" >&2
    tail -n 20 "$1" >&2 || true
    die "$2"
}

(($# >= 1 && $# <= 3)) || die "usage: scripts/flamegraph.sh NAME [METHOD] [PATH]"
NAME=$1
METHOD=${2:-GET}
ROUTE=${3:-/wasm/hello}
[[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "NAME must be letters, digits, '.', '_' or '-', got '$NAME'"
[[ $METHOD =~ ^[A-Z]+$ ]] || die "METHOD must be an HTTP method, got '$METHOD'"
[[ $ROUTE == /* ]] || die "PATH must start with '/', got '$ROUTE'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), got '$DURATION'"
[[ $FREQ =~ ^[1-9][0-9]*$ ]] || die "FREQ must be a positive integer (Hz), got '$FREQ'"
[[ $CALL_GRAPH == dwarf || $CALL_GRAPH == fp ]] || die "CALL_GRAPH must be dwarf or fp, got '$CALL_GRAPH'"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer, got '$CONNECTIONS'"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
# shellcheck source=scripts/common.sh
source "$REPO/scripts/common.sh"

# --- prerequisites -----------------------------------------------------------

command -v perf >/dev/null 2>&1 || die "perf is not installed (e.g. 'apt-get install linux-perf')"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (SQLite database, stack totals)"
if ! command -v inferno-flamegraph >/dev/null 2>&1 || ! command -v inferno-collapse-perf >/dev/null 2>&1; then
    command -v cargo >/dev/null 2>&1 || die "inferno is not installed and cargo is missing"
    echo "flamegraph: installing inferno (cargo install inferno)" >&2
    timeout 900 cargo install inferno >&2
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

if [[ $SKIP_BUILD != 1 ]]; then
    echo "flamegraph: building release binaries" >&2
    cargo build --release --workspace --bins >&2
fi
COREFN_BIN=$REPO/target/release/corefn
BENCH_BIN=$REPO/target/release/corefn-bench
[[ -x $COREFN_BIN ]] || die "missing $COREFN_BIN (cargo build --release)"
[[ -x $BENCH_BIN ]] || die "missing $BENCH_BIN (cargo build --release)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/corefn-flamegraph.XXXXXX")
DB=$WORK/functions.db
BODY=$WORK/body-1k.bin
LOG=$WORK/server.log
SVG=$REPO/flamegraphs/$NAME.svg
SERVER_PID=
LOAD_PID=

cleanup() {
    if [[ -n $LOAD_PID ]]; then
        kill "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    if [[ -n $SERVER_PID ]]; then
        stop_server "$SERVER_PID"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

head -c 1024 /dev/zero | tr '\0' 'x' >"$BODY"
make_bench_db "$DB"

# --- server and load -------------------------------------------------------------

if port_open "$PORT"; then
    die "port $PORT is already in use; stop whatever listens there"
fi
"$COREFN_BIN" serve --listen "127.0.0.1:$PORT" --db "$DB" \
    --functions-dir "$REPO/examples/wasm" --cache-dir "$WORK/cache" >"$LOG" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + 30))
until grep -qs "listening on" "$LOG" && port_open "$PORT"; do
    kill -0 "$SERVER_PID" 2>/dev/null || die_showing "$LOG" "corefn exited before listening"
    ((SECONDS < deadline)) || die_showing "$LOG" "corefn did not start listening on port $PORT within 30 s"
    sleep 0.1
done
echo "flamegraph: $(grep -m1 "listening on" "$LOG") (pid $SERVER_PID)" >&2

body_args=()
if [[ $METHOD != GET && $METHOD != HEAD ]]; then
    body_args=(--body-file "$BODY")
fi
# The load outlasts the recording: 2 s warm-up (module compiled, workers
# started), DURATION s recorded, 2 s to spare.
LOAD_S=$((DURATION + 2))
timeout $((LOAD_S + 30)) "$BENCH_BIN" "http://127.0.0.1:$PORT$ROUTE" -X "$METHOD" "${body_args[@]}" \
    -c "$CONNECTIONS" --warmup 2 -d "$LOAD_S" >"$WORK/load.txt" 2>&1 &
LOAD_PID=$!
sleep 2.5
kill -0 "$LOAD_PID" 2>/dev/null || die_showing "$WORK/load.txt" "corefn-bench stopped early"

# The gateway and its direct children (the worker processes).
pids=$SERVER_PID
children=$(cat "/proc/$SERVER_PID/task/"*/children 2>/dev/null || true)
for child in $children; do
    pids="$pids,$child"
done
echo "flamegraph: perf record -F $FREQ --call-graph $CALL_GRAPH -p $pids for ${DURATION} s, $METHOD $ROUTE" >&2
cg_mode=$CALL_GRAPH
if [[ $CALL_GRAPH == dwarf ]]; then
    # 16 KiB of stack per sample: deep enough for the executor and wasmtime
    # frames, small enough to keep perf.data to tens of MB.
    cg_mode="dwarf,16384"
fi
timeout $((DURATION + 60)) perf record -F "$FREQ" --call-graph "$cg_mode" -p "$pids" -o "$WORK/perf.data" \
    -- sleep "$DURATION" >"$WORK/perf-record.txt" 2>&1 ||
    die_showing "$WORK/perf-record.txt" "perf record failed"

wait "$LOAD_PID" || die_showing "$WORK/load.txt" "corefn-bench failed"
LOAD_PID=
kill -0 "$SERVER_PID" 2>/dev/null || die_showing "$LOG" "corefn died during the run"
grep -E '^ *(throughput|requests|errors)' "$WORK/load.txt" >&2 || true

# --- fold and render -------------------------------------------------------------

echo "flamegraph: folding stacks" >&2
# --no-inline: resolving inlined frames through addr2line takes minutes.
timeout 600 perf script --no-inline -i "$WORK/perf.data" 2>"$WORK/perf-script.err" |
    inferno-collapse-perf >"$WORK/stacks.folded" ||
    die_showing "$WORK/perf-script.err" "perf script / inferno-collapse-perf failed"
[[ -s $WORK/stacks.folded ]] || die_showing "$WORK/perf-script.err" "no stacks were recorded"

mkdir -p "$REPO/flamegraphs"
timeout 300 inferno-flamegraph --title "corefn: $METHOD $ROUTE, ${DURATION} s at ${FREQ} Hz" \
    <"$WORK/stacks.folded" >"$WORK/out.svg" ||
    die "inferno-flamegraph failed"
mv "$WORK/out.svg" "$SVG"
if [[ -n $KEEP_FOLDED ]]; then
    cp "$WORK/stacks.folded" "$KEEP_FOLDED"
fi

echo "flamegraph: wrote ${SVG#"$REPO"/} ($(du -h "$SVG" | cut -f1))" >&2
echo "Top $TOP frames by inclusive share (stacks containing the frame, weighted by the"
echo "perf event's period; thread names and thread-start frames left out), then by self share:"
python3 - "$WORK/stacks.folded" "$TOP" <<'PY'
import collections, sys

path, top = sys.argv[1], int(sys.argv[2])
# Frames every thread's stack goes through: they say nothing about the cost.
PLUMBING = {
    "start_thread", "clone3", "clone", "_start", "main", "__libc_start_main",
    "__libc_start_call_main", "std::sys::backtrace::__rust_begin_short_backtrace",
    "core::ops::function::FnOnce::call_once{{vtable.shim}}",
    "<std::sys::thread::unix::Thread>::new::thread_start",
}
inclusive = collections.Counter()
own = collections.Counter()
total = 0
with open(path) as f:
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
print("inclusive:")
for frame, n in inclusive.most_common(top):
    print("  %6.2f%%  %s" % (100.0 * n / total, frame[:160]))
print("self:")
for frame, n in own.most_common(top):
    print("  %6.2f%%  %s" % (100.0 * n / total, frame[:160]))
PY
