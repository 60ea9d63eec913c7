# shellcheck shell=bash
# Shared pieces of the benchmark scripts (bench.sh, flamegraph.sh,
# bench-gateway.sh). Source it; it defines functions only.

# True when something listens on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A fresh route database at $1 with the benchmark routes: the static hello,
# the wasm hello and the wasm echo (modules from examples/wasm).
make_bench_db() {
    python3 - "$1" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE functions(k TEXT PRIMARY KEY, v TEXT NOT NULL, updated INTEGER NOT NULL)")
now = int(time.time())
db.executemany(
    "INSERT INTO functions(k, v, updated) VALUES (?, ?, ?)",
    [
        ("GET:/hello",
         '{"runtime":"static","body":"Hello, world!\\n","headers":{"content-type":"text/plain"}}', now),
        ("GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}', now),
        ("POST:/wasm/echo", '{"runtime":"wasm","module":"echo.wat"}', now),
    ],
)
db.commit()
db.close()
PY
}

# SIGTERM to a corefn process, then SIGKILL if it has not exited within
# 15 s (longer than its default shutdown grace), and reap it.
stop_server() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
