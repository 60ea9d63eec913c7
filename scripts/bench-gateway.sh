#!/usr/bin/env bash
# Gateway benchmark: corefn's static route against the ceiling reference
# (bench/ceiling.rs, a minimal glommio server with a fixed response), both
# measured in the same run with wrk on loopback.
#
# For each wrk config and each round (server order alternating), it runs a 1 s
# warm-up and then `wrk -d ${DURATION}s --latency`, and reads the server
# process's CPU time from /proc/PID/stat around the measured run. It reports
# medians of req/s, p50/p99 latency and server CPU µs per request, and the
# corefn/ceiling ratios.
#
# Output: a Markdown table on stdout, and bench/results/YYYY-MM-DD-HHMM-gateway/
# with summary.md and raw/ (every wrk output, server logs).
#
# Environment:
#   DURATION  seconds per measured wrk run (default 5)
#   REPEATS   rounds per config and server (default 3)
#   CORES     passed as --cores to both servers (default: all cores)
#
# Total time ≈ 2 configs × 2 servers × REPEATS × (DURATION + 1) s, plus the build.
set -euo pipefail

DURATION=${DURATION:-5}
REPEATS=${REPEATS:-3}
CORES=${CORES:-}

COREFN_PORT=18080
CEILING_PORT=18081
CONFIGS=("-t1 -c64" "-t2 -c256")
ROUTE=/hello

die() {
    echo "bench-gateway: $*" >&2
    exit 1
}

# die_showing FILE MESSAGE: show the end of FILE, then die (a failed run's
# result folder is removed).
die_showing() {
    echo "--- last lines of $(basename "$1"):" >&2
    tail -n 20 "$1" >&2 || true
    die "$2"
}

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), got '$DURATION'"
[[ $REPEATS =~ ^[1-9][0-9]*$ ]] || die "REPEATS must be a positive integer, got '$REPEATS'"
[[ -z $CORES || $CORES =~ ^[1-9][0-9]*$ ]] || die "CORES must be a positive integer, got '$CORES'"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
# shellcheck source=scripts/common.sh
source "$REPO/scripts/common.sh"

# --- prerequisites -----------------------------------------------------------

if ! command -v wrk >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "bench-gateway: installing wrk" >&2
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >&2
    else
        die "wrk is not installed; install it (e.g. 'apt-get install wrk') and re-run"
    fi
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to create the SQLite database"

echo "bench-gateway: building release binaries" >&2
cargo build --release --workspace --bins >&2

COREFN_BIN=$REPO/target/release/corefn
CEILING_BIN=$REPO/target/release/corefn-ceiling
[[ -x $COREFN_BIN ]] || die "missing $COREFN_BIN after the build"
[[ -x $CEILING_BIN ]] || die "missing $CEILING_BIN after the build"

CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
# Other work on the machine skews everything: note how busy it was.
LOAD_BEFORE=$(cut -d ' ' -f 1-3 /proc/loadavg)

# --- result folder and scratch space -------------------------------------------

stamp=$(date +%Y-%m-%d-%H%M)
OUT=$REPO/bench/results/$stamp-gateway
n=2
while [[ -e $OUT ]]; do
    OUT=$REPO/bench/results/$stamp-gateway-$n
    n=$((n + 1))
done
RAW=$OUT/raw

WORK=$(mktemp -d "${TMPDIR:-/tmp}/corefn-bench.XXXXXX")
DB=$WORK/functions.db

declare -A PID=()

cleanup() {
    local name
    for name in "${!PID[@]}"; do
        kill "${PID[$name]}" 2>/dev/null || true
    done
    for name in "${!PID[@]}"; do
        wait "${PID[$name]}" 2>/dev/null || true
    done
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

python3 - "$DB" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE functions(k TEXT PRIMARY KEY, v TEXT NOT NULL, updated INTEGER NOT NULL)")
db.execute(
    "INSERT INTO functions(k, v, updated) VALUES (?, ?, ?)",
    ("GET:/hello",
     '{"runtime":"static","body":"Hello, world!\\n","headers":{"content-type":"text/plain"}}',
     int(time.time())),
)
db.commit()
db.close()
PY

# --- servers -------------------------------------------------------------------

declare -A PORT=([corefn]=$COREFN_PORT [ceiling]=$CEILING_PORT)

cores_args=()
if [[ -n $CORES ]]; then
    cores_args=(--cores "$CORES")
fi

# start_server NAME CMD...: start it in the background, wait for its
# "listening" line and for its port to accept connections.
start_server() {
    local name=$1
    shift
    local port=${PORT[$name]}
    local log=$RAW/server-$name.log
    # SO_REUSEPORT would let a leftover server share the port and the load.
    port_open "$port" && die "port $port is already in use; stop whatever listens there"
    "$@" >"$log" 2>&1 &
    PID[$name]=$!
    local deadline=$((SECONDS + 30))
    until grep -q "listening on" "$log" && port_open "$port"; do
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            die_showing "$log" "$name exited before listening"
        fi
        ((SECONDS < deadline)) || die_showing "$log" "$name did not start listening on port $port within 30 s"
        sleep 0.1
    done
    echo "bench-gateway: $(grep -m1 "listening on" "$log") (pid ${PID[$name]})" >&2
}

start_server corefn "$COREFN_BIN" serve --listen "127.0.0.1:$COREFN_PORT" --db "$DB" "${cores_args[@]}"
start_server ceiling "$CEILING_BIN" --listen "127.0.0.1:$CEILING_PORT" "${cores_args[@]}"

# --- measurement -----------------------------------------------------------------

# CPU time of a process and its waited-for children, all threads, in clock
# ticks: utime + stime + cutime + cstime (fields 14-17 of /proc/PID/stat).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    # Field 2 (comm) may contain spaces: split after its closing parenthesis,
    # so the array starts at field 3.
    local -a f
    read -r -a f <<<"${stat##*) }"
    echo $((f[11] + f[12] + f[13] + f[14]))
}

# to_us VALUE: wrk duration (e.g. 575.00us, 1.26ms, 2.00s, 1.00m) in µs.
to_us() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); m = 1 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); m = 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); m = 1000000 }
        else if (v ~ /m$/) { sub(/m$/, "", v); m = 60000000 }
        else if (v ~ /h$/) { sub(/h$/, "", v); m = 3600000000 }
        else { m = 1 }
        printf "%.1f\n", v * m
    }'
}

# One line per measured run; latencies in µs.
RUNS=$RAW/runs.tsv
printf 'config\tserver\tround\treq_per_s\tp50_us\tp99_us\trequests\tcpu_us_per_req\tnon_2xx\tsocket_errors\n' >"$RUNS"

# run_one CONFIG_INDEX NAME ROUND
run_one() {
    local ci=$1 name=$2 round=$3
    local -a cfg
    read -r -a cfg <<<"${CONFIGS[$ci]}"
    local url="http://127.0.0.1:${PORT[$name]}$ROUTE"
    local pid=${PID[$name]}
    local tag
    tag="$(tr -d ' -' <<<"${CONFIGS[$ci]}")-$name-r$round"
    local raw=$RAW/$tag.txt

    wrk -d 1s "${cfg[@]}" "$url" >"$WORK/warmup.txt" 2>&1 ||
        die_showing "$WORK/warmup.txt" "wrk warm-up failed for $name"

    local before after
    before=$(cpu_ticks "$pid")
    wrk -d "${DURATION}s" --latency "${cfg[@]}" "$url" >"$raw" 2>&1 ||
        die_showing "$raw" "wrk failed for $name"
    after=$(cpu_ticks "$pid")
    kill -0 "$pid" 2>/dev/null || die_showing "$RAW/server-$name.log" "$name died during the run"

    local requests rps p50 p99 non2xx sockerr
    requests=$(awk '/ requests in /{print $1; exit}' "$raw")
    rps=$(awk '/^Requests\/sec:/{print $2; exit}' "$raw")
    p50=$(awk '$1 == "50%" {print $2; exit}' "$raw")
    p99=$(awk '$1 == "99%" {print $2; exit}' "$raw")
    [[ -n $requests && -n $rps && -n $p50 && -n $p99 ]] || die_showing "$raw" "cannot parse the wrk output"
    ((requests > 0)) || die_showing "$raw" "no request completed against $name"
    non2xx=$(awk '/Non-2xx or 3xx responses:/{print $NF; exit}' "$raw")
    sockerr=$(awk '/Socket errors:/{gsub(/,/, ""); print $4 + $6 + $8 + $10; exit}' "$raw")

    local cpu_us_per_req
    cpu_us_per_req=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { printf "%.3f\n", t / hz * 1e6 / n }')

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$ci" "$name" "$round" "$rps" "$(to_us "$p50")" "$(to_us "$p99")" \
        "$requests" "$cpu_us_per_req" "${non2xx:-0}" "${sockerr:-0}" >>"$RUNS"
    printf 'bench-gateway: %-10s %-8s round %d: %10s req/s  p50 %-9s p99 %-9s cpu %s µs/req\n' \
        "${CONFIGS[$ci]}" "$name" "$round" "$rps" "$p50" "$p99" "$cpu_us_per_req" >&2
}

for ci in "${!CONFIGS[@]}"; do
    for ((round = 1; round <= REPEATS; round++)); do
        if ((round % 2)); then
            order=(corefn ceiling)
        else
            order=(ceiling corefn)
        fi
        for name in "${order[@]}"; do
            run_one "$ci" "$name" "$round"
        done
    done
done

# --- summary ---------------------------------------------------------------------

# median COLUMN CONFIG_INDEX NAME: median of a runs.tsv column.
median() {
    awk -F '\t' -v c="$1" -v ci="$2" -v s="$3" '$1 == ci && $2 == s {print $c}' "$RUNS" |
        sort -g |
        awk '{a[NR] = $1} END {
            if (NR == 0) { print "nan"; exit }
            if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2
        }'
}

# total COLUMN CONFIG_INDEX NAME: sum of a runs.tsv column.
total() {
    awk -F '\t' -v c="$1" -v ci="$2" -v s="$3" '$1 == ci && $2 == s {t += $c} END {print t + 0}' "$RUNS"
}

fmt() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; }
code() { printf '%s%s%s' '`' "$1" '`'; }
us_to_ms() { awk -v v="$1" 'BEGIN { printf "%.3f", v / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none")
if [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null) ]]; then
    commit="$commit (uncommitted changes)"
fi
wrk_version=$(wrk --version 2>&1 | head -n1 || true)

SUMMARY=$OUT/summary.md
{
    echo "# Gateway benchmark: corefn static route vs ceiling"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- commit: $commit"
    echo "- machine: $NCPU CPUs (${cpu_model:-unknown}), kernel $(uname -r)"
    echo "- load average (1/5/15 min) before the servers started: $LOAD_BEFORE"
    echo "- load generator: ${wrk_version:-wrk}, on loopback; route \`GET $ROUTE\` (static, 14-byte body)"
    echo "- servers: \`corefn serve\` and \`corefn-ceiling\`, cores: ${CORES:-all ($NCPU)}"
    echo "- each cell: median of $REPEATS runs of ${DURATION} s (after a 1 s warm-up), server order alternating"
    echo
    echo "wrk shares the $NCPU cores with the server under test, so req/s and latency are"
    echo "capped by the machine as a whole; server CPU µs per request (from /proc/PID/stat,"
    echo "all threads) is the figure that compares the servers' own cost."
    echo
    echo "| wrk | server | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | socket errors |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for ci in "${!CONFIGS[@]}"; do
        for name in corefn ceiling; do
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "$(code "${CONFIGS[$ci]}")" "$name" \
                "$(fmt "$(median 4 "$ci" "$name")" '%.0f')" \
                "$(us_to_ms "$(median 5 "$ci" "$name")")" \
                "$(us_to_ms "$(median 6 "$ci" "$name")")" \
                "$(fmt "$(median 8 "$ci" "$name")" '%.2f')" \
                "$(total 9 "$ci" "$name")" \
                "$(total 10 "$ci" "$name")"
        done
    done
    echo
    echo "| wrk | throughput corefn/ceiling | CPU per request corefn/ceiling |"
    echo "| --- | ---: | ---: |"
    for ci in "${!CONFIGS[@]}"; do
        printf '| %s | %s | %s |\n' "$(code "${CONFIGS[$ci]}")" \
            "$(ratio "$(median 4 "$ci" corefn)" "$(median 4 "$ci" ceiling)")" \
            "$(ratio "$(median 8 "$ci" corefn)" "$(median 8 "$ci" ceiling)")"
    done
    echo
    echo "Raw wrk outputs, server logs and per-run numbers (\`runs.tsv\`, config index 0..): \`raw/\`."
} >"$WORK/summary.md"
mv "$WORK/summary.md" "$SUMMARY"

cat "$SUMMARY"
echo >&2
echo "bench-gateway: results in ${OUT#"$REPO"/}" >&2
