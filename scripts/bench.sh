#!/usr/bin/env bash
# All-routes benchmark: the static route, the wasm hello and the wasm echo
# (1 KiB body) of one `corefn serve`, measured in the same run with corefn-bench
# (closed loop, with the server's CPU per request) and wrk (and oha when it is
# installed), each route also as a ratio to the static route.
#
# Output: bench/results/YYYY-MM-DD-HHMM-all/ with summary.md, one corefn-bench
# report per route (<route>.json, .hgrm, .svg), all-routes.svg (the routes'
# latency curves overlaid) and raw/ (wrk/oha outputs, server log, progress).
#
# Environment:
#   DURATION    seconds per measured run (default 5)
#   CONNECTIONS connections for corefn-bench and wrk (default 64)
#   SKIP_BUILD  1: use the existing release binaries, no cargo build
#
# Total time ≈ 3 routes × (1 s warm-up + corefn-bench 1 + DURATION s + wrk
# DURATION s [+ oha DURATION s]) plus start-up: about 1 min at DURATION=5.
set -euo pipefail

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
SKIP_BUILD=${SKIP_BUILD:-0}

PORT=18500
# name|method|path (the name labels the files and the plot curves)
ROUTES=(
    "static-hello|GET|/hello"
    "wasm-hello|GET|/wasm/hello"
    "wasm-echo-1k|POST|/wasm/echo"
)
ECHO_BODY_BYTES=1024

die() {
    echo "bench: $*" >&2
    exit 1
}

die_showing() {
    echo "--- last lines of $(basename "$1"):" >&2
    tail -n 20 "$1" >&2 || true
    die "$2"
}

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), got '$DURATION'"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer, got '$CONNECTIONS'"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
# shellcheck source=scripts/common.sh
source "$REPO/scripts/common.sh"

# --- prerequisites -----------------------------------------------------------

if ! command -v wrk >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing wrk" >&2
        timeout 300 apt-get update >&2
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y wrk >&2
    else
        die "wrk is not installed; install it (e.g. 'apt-get install wrk') and re-run"
    fi
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed (SQLite database, JSON reports)"
HAVE_OHA=0
if command -v oha >/dev/null 2>&1; then
    HAVE_OHA=1
fi

if [[ $SKIP_BUILD != 1 ]]; then
    echo "bench: building release binaries" >&2
    cargo build --release --workspace --bins >&2
fi

COREFN_BIN=$REPO/target/release/corefn
BENCH_BIN=$REPO/target/release/corefn-bench
[[ -x $COREFN_BIN ]] || die "missing $COREFN_BIN (cargo build --release)"
[[ -x $BENCH_BIN ]] || die "missing $BENCH_BIN (cargo build --release)"

NCPU=$(nproc)
LOAD_BEFORE=$(cut -d ' ' -f 1-3 /proc/loadavg)

# --- result folder and scratch space -------------------------------------------

stamp=$(date +%Y-%m-%d-%H%M)
OUT=$REPO/bench/results/$stamp-all
n=2
while [[ -e $OUT ]]; do
    OUT=$REPO/bench/results/$stamp-all-$n
    n=$((n + 1))
done
RAW=$OUT/raw

WORK=$(mktemp -d "${TMPDIR:-/tmp}/corefn-bench.XXXXXX")
DB=$WORK/functions.db
BODY=$WORK/body-1k.bin
SERVER_PID=

cleanup() {
    if [[ -n $SERVER_PID ]]; then
        stop_server "$SERVER_PID"
    fi
    rm -rf "$WORK"
    # A run that did not get to its summary leaves no result folder.
    if [[ -n ${OUT:-} && ! -e $OUT/summary.md ]]; then
        rm -rf "$OUT"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$RAW"

head -c "$ECHO_BODY_BYTES" /dev/zero | tr '\0' 'x' >"$BODY"

make_bench_db "$DB"

# --- server ----------------------------------------------------------------------

# SO_REUSEPORT would let a leftover server share the port and the load.
if port_open "$PORT"; then
    die "port $PORT is already in use; stop whatever listens there"
fi
LOG=$RAW/server.log
"$COREFN_BIN" serve --listen "127.0.0.1:$PORT" --db "$DB" \
    --functions-dir "$REPO/examples/wasm" --cache-dir "$WORK/cache" >"$LOG" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + 30))
until grep -qs "listening on" "$LOG" && port_open "$PORT"; do
    kill -0 "$SERVER_PID" 2>/dev/null || die_showing "$LOG" "corefn exited before listening"
    ((SECONDS < deadline)) || die_showing "$LOG" "corefn did not start listening on port $PORT within 30 s"
    sleep 0.1
done
echo "bench: $(grep -m1 "listening on" "$LOG") (pid $SERVER_PID)" >&2

# --- measurement -----------------------------------------------------------------

# Seconds a single tool may take for one run before it is stopped.
LIMIT=$((DURATION + 30))

# wrk_script: write the Lua script that makes wrk send the POST body; print its path.
wrk_script() {
    local script=$WORK/post.lua
    printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' "$ECHO_BODY_BYTES" >"$script"
    echo "$script"
}

for spec in "${ROUTES[@]}"; do
    IFS='|' read -r name method path <<<"$spec"
    url="http://127.0.0.1:$PORT$path"
    wrk_extra=()
    bench_body=()
    oha_extra=()
    if [[ $method == POST ]]; then
        wrk_extra=(-s "$(wrk_script)")
        bench_body=(--body-file "$BODY")
        oha_extra=(-m POST -D "$BODY")
    fi

    # Warm-up: compiles the module, starts the workers' instances.
    timeout 20 wrk -t1 -c8 -d1s "${wrk_extra[@]}" "$url" >"$RAW/$name-warmup.txt" 2>&1 ||
        die_showing "$RAW/$name-warmup.txt" "wrk warm-up failed for $path"

    echo "bench: $method $path: corefn-bench -c $CONNECTIONS -d $DURATION" >&2
    timeout "$LIMIT" "$BENCH_BIN" "$url" -X "$method" "${bench_body[@]}" \
        -c "$CONNECTIONS" --warmup 1 -d "$DURATION" --server-pid "$SERVER_PID" \
        --json "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" --svg "$OUT/$name.svg" \
        >"$RAW/$name-corefn-bench.txt" 2>"$RAW/$name-corefn-bench.progress" ||
        die_showing "$RAW/$name-corefn-bench.progress" "corefn-bench failed for $path"
    kill -0 "$SERVER_PID" 2>/dev/null || die_showing "$LOG" "corefn died during the run"

    echo "bench: $method $path: wrk -t2 -c$CONNECTIONS -d${DURATION}s" >&2
    timeout "$LIMIT" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${wrk_extra[@]}" "$url" \
        >"$RAW/$name-wrk.txt" 2>&1 ||
        die_showing "$RAW/$name-wrk.txt" "wrk failed for $path"

    if ((HAVE_OHA)); then
        echo "bench: $method $path: oha -c $CONNECTIONS -z ${DURATION}s" >&2
        timeout "$LIMIT" oha --no-tui -c "$CONNECTIONS" -z "${DURATION}s" "${oha_extra[@]}" "$url" \
            >"$RAW/$name-oha.txt" 2>&1 ||
            echo "bench: oha failed for $path (see raw/$name-oha.txt); continuing" >&2
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || die_showing "$LOG" "corefn died during the run"
done

json_files=()
for spec in "${ROUTES[@]}"; do
    IFS='|' read -r name _ <<<"$spec"
    json_files+=("$OUT/$name.json")
done
timeout 60 "$BENCH_BIN" plot --svg "$OUT/all-routes.svg" "${json_files[@]}" >"$RAW/plot.txt" 2>&1 ||
    die_showing "$RAW/plot.txt" "corefn-bench plot failed"

# --- summary ---------------------------------------------------------------------

cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none")
if [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null) ]]; then
    commit="$commit (uncommitted changes)"
fi
wrk_version=$(wrk --version 2>&1 | head -n1 | sed 's/ Copyright.*//' || true)

python3 - "$OUT" "$RAW" "$DURATION" "$CONNECTIONS" "$HAVE_OHA" "${ROUTES[@]}" >"$WORK/tables.md" <<'PY'
import json, os, re, sys

out, raw, duration, connections, have_oha = sys.argv[1:6]
routes = [r.split("|") for r in sys.argv[6:]]


def wrk_us(text, label):
    m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]


def oha_rps(text):
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    return float(m.group(1)) if m else None


rows = []
for name, method, path in routes:
    with open(os.path.join(out, name + ".json")) as f:
        r = json.load(f)
    with open(os.path.join(raw, name + "-wrk.txt")) as f:
        w = f.read()
    m = re.search(r"Requests/sec:\s+([\d.]+)", w)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", w)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", w)
    row = {
        "name": name, "route": f"{method} {path}",
        "cb_rps": r["throughput_rps"],
        "cb_p50": r["latency_us"]["p50_us"], "cb_p99": r["latency_us"]["p99_us"],
        "cpu": (r.get("server_cpu") or {}).get("cpu_us_per_request"),
        "cb_bad": r["status"]["4xx"] + r["status"]["5xx"] + r["errors"]["total"],
        "wrk_rps": float(m.group(1)) if m else None,
        "wrk_p50": wrk_us(w, "50"), "wrk_p99": wrk_us(w, "99"),
        "wrk_bad": (int(non2xx.group(1)) if non2xx else 0)
                   + (sum(int(x) for x in sock.groups()) if sock else 0),
    }
    if have_oha == "1":
        try:
            with open(os.path.join(raw, name + "-oha.txt")) as f:
                row["oha_rps"] = oha_rps(f.read())
        except OSError:
            row["oha_rps"] = None
    rows.append(row)


def f(v, fmt):
    return "n/a" if v is None else fmt % v


def ms(v):
    return "n/a" if v is None else "%.3f" % (v / 1000)


def ratio(a, b):
    return "n/a" if a is None or not b else "%.2f" % (a / b)


print("| route | corefn-bench req/s | p50 ms | p99 ms | server CPU µs/req | errors + 4xx/5xx | wrk req/s | wrk p50 ms | wrk p99 ms | wrk non-2xx + socket errors |"
      + (" oha req/s |" if have_oha == "1" else ""))
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
      + (" ---: |" if have_oha == "1" else ""))
for x in rows:
    line = "| `%s` | %s | %s | %s | %s | %d | %s | %s | %s | %d |" % (
        x["route"], f(x["cb_rps"], "%.0f"), ms(x["cb_p50"]), ms(x["cb_p99"]),
        f(x["cpu"], "%.2f"), x["cb_bad"], f(x["wrk_rps"], "%.0f"),
        ms(x["wrk_p50"]), ms(x["wrk_p99"]), x["wrk_bad"])
    if have_oha == "1":
        line += " %s |" % f(x.get("oha_rps"), "%.0f")
    print(line)
print()
base = rows[0]
print("Ratios to `%s` in this run (throughput below 1 = slower; CPU and latency above 1 = costlier):" % base["route"])
print()
print("| route | req/s (corefn-bench) | server CPU µs/req | p99 (corefn-bench) | req/s (wrk) | p99 (wrk) |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for x in rows:
    print("| `%s` | %s | %s | %s | %s | %s |" % (
        x["route"], ratio(x["cb_rps"], base["cb_rps"]), ratio(x["cpu"], base["cpu"]),
        ratio(x["cb_p99"], base["cb_p99"]), ratio(x["wrk_rps"], base["wrk_rps"]),
        ratio(x["wrk_p99"], base["wrk_p99"])))
PY

SUMMARY=$OUT/summary.md
{
    echo "# All routes: static, wasm hello, wasm echo"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- commit: $commit"
    echo "- machine: $NCPU CPUs (${cpu_model:-unknown}), kernel $(uname -r)"
    echo "- load average (1/5/15 min) before the server started: $LOAD_BEFORE"
    echo "- server: \`corefn serve\` (default cores and workers), routes \`GET /hello\` (static, 14-byte body), \`GET /wasm/hello\` (hello.wat), \`POST /wasm/echo\` (echo.wat, ${ECHO_BODY_BYTES}-byte body)"
    echo "- load: per route, a 1 s wrk warm-up, then corefn-bench (closed loop, $CONNECTIONS connections, 1 s warm-up + ${DURATION} s), then ${wrk_version:-wrk} \`-t2 -c$CONNECTIONS -d${DURATION}s --latency\`$( ((HAVE_OHA)) && echo ", then oha \`-c $CONNECTIONS -z ${DURATION}s\`"); one run each, on loopback"
    echo
    echo "The load generator shares the machine's $NCPU cores with the server, so req/s and"
    echo "latency measure the machine as a whole; server CPU µs per request (gateway and"
    echo "worker processes, from /proc) is the figure that compares the routes' own cost."
    echo
    cat "$WORK/tables.md"
    echo
    echo "Per route: \`<route>.json\` (corefn-bench report), \`<route>.hgrm\` (HdrHistogram),"
    echo "\`<route>.svg\` (latency by percentile); \`all-routes.svg\` overlays the three."
    echo "Raw wrk$( ((HAVE_OHA)) && echo "/oha") and corefn-bench outputs and the server log: \`raw/\`."
} >"$WORK/summary.md"
mv "$WORK/summary.md" "$SUMMARY"

cat "$SUMMARY"
echo >&2
echo "bench: results in ${OUT#"$REPO"/}" >&2
