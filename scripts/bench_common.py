"""What the benchmark scripts share, one copy for all of them.

Command line (options whose defaults an environment variable may give),
errors and clean-up, the release build and missing tools, the route
database, starting and stopping corefn and the other servers (corefn-ceiling,
nginx + php-fpm), running wrk and reading its output, server CPU time from
/proc, and the result folder and its summary.

Every load generator here talks to 127.0.0.1 only, runs for a bounded time
and is killed when it overruns.
"""

import argparse
import contextlib
import datetime
import glob
import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Longer than corefn's shutdown grace: SIGKILL only for a server that hangs.
STOP_TIMEOUT_S = 20
START_TIMEOUT_S = 30

PROG = os.path.basename(sys.argv[0]).removesuffix(".py")


# --- errors, logging, the run's frame ------------------------------------------


class Failure(Exception):
    """Ends the run with a message; `showing` is a file whose last lines tell
    why (read at once: the file may be in a scratch directory that goes)."""

    def __init__(self, message, showing=None):
        super().__init__(message)
        self.showing = showing and (os.path.basename(showing), tail(showing))


def log(message):
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


def main(run):
    """Runs run() as the script's body: a Failure prints its message (and the
    end of the file it names) and exits 1; SIGINT exits 130, SIGTERM 143, both
    through the `finally` blocks that stop what the run started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run()
    except Failure as failure:
        if failure.showing:
            name, lines = failure.showing
            print(f"--- last lines of {name}:", *lines, sep="\n", file=sys.stderr)
        log(str(failure))
        sys.exit(1)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as failure:
        log(str(failure))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


class Run:
    """A run's scratch directory, the processes it started and its result
    folder. Leaving it stops the processes (the last started first), removes
    the scratch directory, and removes a result folder that did not get its
    summary.md."""

    def __init__(self, prefix="corefn-bench.", out=None):
        self.work = tempfile.mkdtemp(prefix=prefix)
        # Started by root, corefn's workers run as nobody: they must reach
        # the functions in here (the database is made 0600 by corefn).
        os.chmod(self.work, 0o755)
        self.out = out
        self.stops = []

    def path(self, name):
        return os.path.join(self.work, name)

    def __enter__(self):
        return self

    def on_exit(self, stop):
        """stop() when the run ends, before what was registered earlier."""
        self.stops.append(stop)

    def __exit__(self, *_):
        for stop in reversed(self.stops):
            stop()
        shutil.rmtree(self.work, ignore_errors=True)
        if self.out and not os.path.exists(os.path.join(self.out, "summary.md")):
            shutil.rmtree(self.out, ignore_errors=True)

    def start_server(self, name, command, port, log_path, ready="listening on"):
        """Starts a server that prints `ready` when ready and waits until it
        does and its port accepts connections."""
        # SO_REUSEPORT would let a leftover server share the port and the load.
        require_free_port(port)
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT)
        self.on_exit(lambda: stop_process(process))
        server = Server(name, process, port, log_path, ready)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (server.ready_line() and port_open(port)):
            if process.poll() is not None:
                raise Failure(f"{name} exited before listening", showing=log_path)
            if time.monotonic() > deadline:
                raise Failure(f"{name} did not start listening on port {port} within "
                              f"{START_TIMEOUT_S} s", showing=log_path)
            time.sleep(0.1)
        log(f"{server.ready_line()} (pid {process.pid})")
        return server

    def start_corefn(self, binary, port, log_path, *args):
        """`corefn serve` on 127.0.0.1:port with a route database and the
        other `serve` options in args."""
        return self.start_server("corefn", [binary, "serve", "--listen", f"{HOST}:{port}", *args],
                                 port, log_path)

    def start_control_plane(self, binary, port):
        """`corefn serve` on an empty database with its store, cache, logs
        and functions in this run's directory; returns (db path, admin key)."""
        db = self.path("corefn.db")
        make_route_db(db, [], corefn=binary)
        self.start_corefn(binary, port, self.path("server.log"), "--db", db,
                          "--store-dir", self.path("store"), "--cache-dir", self.path("cache"),
                          "--logs-dir", self.path("logs"), "--functions-dir", self.path("functions"))
        with open(db[:-len(".db")] + ".admin-key") as f:
            return db, f.read().strip()

    def start_background(self, command, output, timeout_s):
        """A bounded command in the background (stdout and stderr to output);
        stopped when the run ends, killed by wait_background after timeout_s."""
        with open(output, "w") as out:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT)
        process.deadline = time.monotonic() + timeout_s
        self.on_exit(lambda: stop_process(process))
        return process


def wait_background(process, what, output):
    try:
        status = process.wait(timeout=max(process.deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise Failure(f"{what} overran its time limit", showing=output)
    if status != 0:
        raise Failure(f"{what} failed", showing=output)


class Server:
    def __init__(self, name, process, port, log_path, ready="listening on"):
        self.name, self.process, self.port, self.log = name, process, port, log_path
        self.ready = ready

    @property
    def pid(self):
        return self.process.pid

    def url(self, path):
        return f"http://{HOST}:{self.port}{path}"

    def ready_line(self):
        return next((line for line in tail(self.log, 1000) if self.ready in line), None)

    def check_alive(self):
        if self.process.poll() is not None:
            raise Failure(f"{self.name} died during the run", showing=self.log)

    def stop(self):
        stop_process(self.process)


def stop_process(process, timeout_s=STOP_TIMEOUT_S):
    """SIGTERM (corefn drains and exits 0), SIGKILL if it is still there; reaped."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- command line --------------------------------------------------------------


def positive_int(text):
    if not re.fullmatch(r"[1-9][0-9]*", str(text)):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got '{text}'")
    return int(text)


def parser(doc):
    """A parser whose --help is the script's docstring."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_option(p, flag, env=None, default=None, shown=None, **kwargs):
    """An option whose default the environment variable env may override;
    string defaults go through the option's type, so the variable is
    validated like the flag. --help shows the default (or `shown`)."""
    if env:
        default = os.environ.get(env, default)
    shown = shown or (default if default != "" else "unset")
    if default is not None:
        where = f"env {env}, " if env else ""
        kwargs["help"] = f"{kwargs.get('help', '')} ({where}default {shown})".lstrip()
    p.add_argument(flag, default=default, **kwargs)


def add_duration(p, default=5, env="DURATION", help="seconds per measured run"):
    add_option(p, "--duration", env, str(default), type=positive_int, help=help)


def add_repeats(p, default=3):
    add_option(p, "--repeats", "REPEATS", str(default), type=positive_int,
               help="rounds, the order of the routes or servers changing every round")


def add_connections(p, default=64, help="connections of the load generator"):
    add_option(p, "--connections", "CONNECTIONS", str(default), type=positive_int, help=help)


def add_skip_build(p):
    p.add_argument("--skip-build", action="store_true",
                   default=os.environ.get("SKIP_BUILD") == "1",
                   help="use the existing release binaries, no cargo build (env SKIP_BUILD=1)")


def add_wrk_rounds(p):
    """The options of the scripts that measure wrk rounds and medians."""
    add_duration(p)
    add_repeats(p)
    add_option(p, "--wrk", default="-t2 -c64", help="wrk threads and connections")
    add_option(p, "--out", help="also write summary.md and raw.txt to this folder")
    add_binary(p)


def add_binary(p, name="corefn"):
    add_option(p, "--binary", default=release_binary(name), shown=f"target/release/{name}",
               help=f"the {name} binary")


# --- binaries and tools ----------------------------------------------------------


def release_binary(name):
    return os.path.join(ROOT, "target", "release", name)


def release_binaries(*names, skip_build=False):
    """Builds the workspace's release binaries (unless skip_build) and
    returns the paths of names."""
    if not skip_build:
        log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT,
                       stdout=sys.stderr, check=True)
    paths = [release_binary(name) for name in names]
    for path in paths:
        if not os.access(path, os.X_OK):
            raise Failure(f"missing {path} (cargo build --release --workspace)")
    return paths


def require_binary(path):
    if not os.access(path, os.X_OK):
        raise Failure(f"missing {path}: build first (cargo build --release --workspace)")


CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "corefn-bench")


def cargo_tool(crate, version, binary):
    """`binary` of crates.io's `crate` at `version`, built once (cargo
    install --locked) into its own folder of the benchmarks' cache."""
    root = os.path.join(CACHE, f"{crate}-{version}")
    path = os.path.join(root, "bin", binary)
    if not os.access(path, os.X_OK):
        log(f"building {crate} {version} from crates.io into {root} (once; a long build)")
        subprocess.run(["cargo", "install", "--locked", "--quiet", crate, "--version", version,
                        "--root", root], stdout=sys.stderr, check=True, timeout=3 * 3600)
    return path


def cargo_registry_dir(crate, version):
    """The unpacked source of a crate cargo has downloaded (its first copy
    in any registry), or None."""
    home = os.environ.get("CARGO_HOME") or os.path.expanduser("~/.cargo")
    found = sorted(glob.glob(os.path.join(home, "registry", "src", "*", f"{crate}-{version}")))
    return found[0] if found else None


def require_tool(command, package=None, install=True):
    """A command on PATH; as root on Debian, installs its package when missing."""
    package = package or command
    if shutil.which(command):
        return
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {package}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
            subprocess.run(step, env=env, stdout=sys.stderr, timeout=300, check=True)
        if shutil.which(command):
            return
    raise Failure(f"{command} is not installed; install it (e.g. 'apt-get install {package}') and re-run")


def run_tool(command, what, *, output=None, progress=None, timeout_s):
    """Runs a bounded command; stdout (and stderr unless progress takes it)
    to output when given. Returns stdout; a failure or an overrun ends the
    run showing the output's end."""
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(open(progress, "w")) if progress else subprocess.STDOUT
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr, timeout=timeout_s, errors="replace")
            text, status = result.stdout, result.returncode
        except subprocess.TimeoutExpired as overrun:
            text, status = overrun.stdout or b"", None
            text = text.decode(errors="replace") if isinstance(text, bytes) else text
    if output:
        with open(output, "w") as f:
            f.write(text)
    if status != 0:
        why = "failed" if status is not None else f"ran past {timeout_s} s"
        detail = "" if output or progress else ":\n" + "\n".join(text.splitlines()[-20:])
        raise Failure(f"{what} {why}{detail}", showing=progress or output)
    return text


def wrk_command(options, url, duration_s, *, latency=True, script=None):
    """wrk's command line; options like "-t2 -c64" (a string or a list)."""
    if not url.startswith(f"http://{HOST}:"):
        raise Failure(f"{url}: load goes to {HOST} only")
    if isinstance(options, str):
        options = shlex.split(options)
    if any("://" in option for option in options):
        raise Failure(f"wrk options {options}: the URL is the script's to give")
    return ["wrk", *options, "-d", f"{duration_s}s", *(["--latency"] if latency else []),
            *(["-s", script] if script else []), url]


def run_wrk(options, url, duration_s, *, latency=True, script=None, output=None, timeout_s=None):
    """One wrk run, bounded to duration + 30 s; returns its output."""
    return run_tool(wrk_command(options, url, duration_s, latency=latency, script=script),
                    f"wrk against {url}", output=output,
                    timeout_s=timeout_s or duration_s + 30)


def wrk_post_script(directory, body_bytes):
    """A wrk Lua script that makes every request a POST with a body_bytes body."""
    path = os.path.join(directory, f"post-{body_bytes}.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' % body_bytes)
    return path


def wrk_version():
    try:
        text = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "wrk"
    return re.sub(r" Copyright.*", "", text.splitlines()[0]) if text else "wrk"


# --- wrk's output ------------------------------------------------------------------

WRK_UNITS_US = {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7, "h": 3.6e9}


def wrk_latency_us(text, percentile):
    """The `--latency` distribution's value at percentile ("50", "99") in µs."""
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    return float(match.group(1)) * WRK_UNITS_US[match.group(2)] if match else None


def parse_wrk(text):
    """req/s, requests, p50/p99 (µs), non-2xx responses and socket errors
    (connect + read + write + timeout) of one wrk run; None where absent."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    requests = re.search(r"(\d+) requests in", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)) if rps else None,
        "requests": int(requests.group(1)) if requests else None,
        "p50_us": wrk_latency_us(text, "50"),
        "p99_us": wrk_latency_us(text, "99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
    }


def measured_wrk(options, url, duration_s, output=None, **kwargs):
    """A measured wrk run: its figures, plus its output under "raw"; a run
    wrk's output lacks figures for, or that completed nothing, ends the run."""
    text = run_wrk(options, url, duration_s, output=output, **kwargs)
    result = parse_wrk(text)
    problem = ("cannot parse the wrk output" if None in result.values()
               else "no request completed" if not result["requests"] else None)
    if problem:
        raise Failure(f"{problem} against {url}" + ("" if output else ":\n" + text), showing=output)
    return {**result, "raw": text}


def rounds(items, repeats, measure, rotate=True):
    """measure(item, round) for every item in every round, the order rotating
    (rotate) or reversed every other round, so that no item always goes
    first; returns {item: [result, ...]}."""
    results = {item: [] for item in items}
    for index in range(repeats):
        if rotate:
            shift = index % len(items)
            order = items[shift:] + items[:shift]
        else:
            order = items[::-1] if index % 2 else items
        for item in order:
            results[item].append(measure(item, index))
    return results


def median(results, key):
    return statistics.median(r[key] for r in results)


def ms(us, digits=3):
    return "n/a" if us is None else f"{us / 1000:.{digits}f}"


def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"


# --- server CPU from /proc ---------------------------------------------------------


def stat_fields(pid):
    """/proc/PID/stat from field 3 on (comm, field 2, may hold spaces)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_cpu_ticks(pid):
    """utime + stime + cutime + cstime of a process (all its threads, and the
    children it has reaped), in clock ticks."""
    fields = stat_fields(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def tree_cpu_seconds(root_pid):
    """CPU of root_pid and every live descendant (workers, language hosts),
    with what each has reaped of its own children (exec functions)."""
    parents, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = stat_fields(entry)
            parents[int(entry)] = int(fields[1])
            ticks[int(entry)] = sum(int(fields[i]) for i in (11, 12, 13, 14))
        except (OSError, ValueError, IndexError):
            continue
    total = 0
    for pid, tick in ticks.items():
        ancestor, hops = pid, 0
        while ancestor not in (root_pid, 0, 1) and hops < 16:
            ancestor, hops = parents.get(ancestor, 0), hops + 1
        if ancestor == root_pid:
            total += tick
    return total / CLK_TCK


def tree_pids(root):
    """root and every live descendant."""
    pids, frontier = [root], [root]
    while frontier:
        found = [c for p in frontier for c in children(p)]
        pids += found
        frontier = found
    return pids


def hello_functions(run, *examples):
    """The run's functions folder with the wasm hello, the native hello
    (compiled here: hello.so) and the other examples given (paths under
    examples/), linked by their file names."""
    functions = run.path("functions")
    os.makedirs(functions)
    for source in ("examples/wasm/hello.wat", *examples):
        os.symlink(os.path.join(ROOT, source), os.path.join(functions, os.path.basename(source)))
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", os.path.join(functions, "hello.so"),
                    os.path.join(ROOT, "examples/native/hello.c")], check=True)
    return functions


def children(pid):
    """The live direct children of pid."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
    except OSError:
        pass
    return found


# --- ports and the route database ---------------------------------------------------


def port_open(port):
    """True when something listens on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def require_free_port(port):
    if port_open(port):
        raise Failure(f"port {port} is already in use; stop whatever listens there")


# The benchmark routes: the static hello, the wasm hello and the wasm echo
# (modules from examples/wasm), as (key, descriptor).
STATIC_HELLO = ("GET:/hello",
                '{"runtime":"static","body":"Hello, world!\\n","headers":{"content-type":"text/plain"}}')
BENCH_ROUTES = [
    STATIC_HELLO,
    ("GET:/wasm/hello", '{"runtime":"wasm","module":"hello.wat"}'),
    ("POST:/wasm/echo", '{"runtime":"wasm","module":"echo.wat"}'),
]


def http_request(port, method, path, body=None, headers=None, timeout_s=2):
    """One request to 127.0.0.1:port on a new connection: (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def make_route_db(path, routes, corefn=None):
    """A fresh database at path, its schema made by corefn itself (`corefn
    migrate`), holding routes, (key, descriptor) pairs."""
    corefn = corefn or release_binary("corefn")
    require_binary(corefn)
    subprocess.run([corefn, "migrate", "--db", path], stdout=subprocess.DEVNULL, check=True)
    with sqlite3.connect(path) as db:
        now = int(time.time())
        db.executemany("INSERT INTO functions(k, v, updated) VALUES (?, ?, ?)",
                       [(key, value, now) for key, value in routes])
    db.close()


def body_file(directory, size):
    path = os.path.join(directory, f"body-{size}.bin")
    with open(path, "wb") as f:
        f.write(b"x" * size)
    return path


# --- results ------------------------------------------------------------------------


def new_result_dir(kind):
    """bench/results/YYYY-MM-DD-HHMM-kind (-2, -3... when taken), with raw/."""
    stamp = time.strftime("%Y-%m-%d-%H%M")
    out, n = os.path.join(RESULTS, f"{stamp}-{kind}"), 2
    while os.path.exists(out):
        out, n = os.path.join(RESULTS, f"{stamp}-{kind}-{n}"), n + 1
    os.makedirs(os.path.join(out, "raw"))
    return out


def cpu_count():
    return len(os.sched_getaffinity(0))


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def utc_now():
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def machine_lines(load_before, when="the server started"):
    """The summary's date, commit, machine and load lines."""
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    git = ["git", "-C", ROOT]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        if subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout:
            commit += " (uncommitted changes)"
    except (OSError, subprocess.CalledProcessError):
        commit = "none"
    return [
        f"- date: {utc_now()}",
        f"- commit: {commit}",
        f"- machine: {cpu_count()} CPUs ({model}), kernel {os.uname().release}",
        f"- load average (1/5/15 min) before {when}: {load_before}",
    ]


def write_summary(out, text):
    """out/summary.md (written whole, so a partial one never stands), and stdout."""
    partial = os.path.join(out, "summary.md.partial")
    with open(partial, "w") as f:
        f.write(text + "\n")
    os.replace(partial, os.path.join(out, "summary.md"))
    print(text)
    log(f"results in {os.path.relpath(out, ROOT)}")


def write_report(out_dir, summary, raw):
    """Prints the summary; with out_dir also writes summary.md and raw.txt."""
    print(summary)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "summary.md"), "w") as f:
            f.write(summary + "\n")
        with open(os.path.join(out_dir, "raw.txt"), "w") as f:
            f.write("\n".join(raw))


# --- nginx + php-fpm, the PHP baseline -------------------------------------------

PHP_EXAMPLES = os.path.join(ROOT, "examples", "php")
PHP_PRELUDE = os.path.join(ROOT, "runtimes", "php", "prelude.php")
# PHP settings shared with corefn's php-cgi host (see runtimes/php/prelude.php).
PHP_SETTINGS = [
    "opcache.enable=1", "opcache.validate_timestamps=1", "opcache.revalidate_freq=0",
    "display_errors=0", "display_startup_errors=0", "log_errors=1", "html_errors=0",
    "expose_php=0", "cgi.fix_pathinfo=0", "output_buffering=On", "max_execution_time=0",
]
PHP_FPM_START_TIMEOUT_S = 10
PHP_FPM_STOP_TIMEOUT_S = 10
NGINX_FASTCGI_PARAMS = [
    ("SCRIPT_NAME", "$uri"), ("REQUEST_URI", "$request_uri"), ("DOCUMENT_URI", "$document_uri"),
    ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
    ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
    ("SERVER_PROTOCOL", "$server_protocol"), ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "nginx"), ("REMOTE_ADDR", "$remote_addr"), ("REMOTE_PORT", "$remote_port"),
    ("SERVER_ADDR", "$server_addr"), ("SERVER_PORT", "$server_port"),
    ("SERVER_NAME", "$server_name"), ("REDIRECT_STATUS", "200"),
]


def find_nginx():
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def find_php_fpm():
    found = shutil.which("php-fpm")
    if not found:
        # Debian names it after the PHP version: /usr/sbin/php-fpm8.2.
        found = next((path for path in sorted(glob.glob("/usr/sbin/php-fpm[0-9]*"))
                      if os.access(path, os.X_OK)), None)
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def http_status_line(port, path, timeout_s=5):
    """The status line of an HTTP/1.0 GET to 127.0.0.1:port ("" when none)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as conn:
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
            return conn.makefile("rb").readline().decode(errors="replace").rstrip("\r\n")
    except OSError:
        return ""


class PhpFpmBaseline:
    """nginx (NGINX_WORKERS workers, loopback listener, no access log) passing
    every request over FastCGI to php-fpm (pm = static, `children` children,
    on a Unix socket), with the PHP settings of corefn's php-cgi host, and
    prelude: also corefn's prelude. /php/NAME runs examples/php/NAME.php.
    Config files, logs, pid files and the socket live in `directory`."""

    def __init__(self, directory, port, children=2, nginx_workers=1, prelude=False):
        self.dir, self.port = directory, port
        self.children, self.nginx_workers, self.prelude = children, nginx_workers, prelude
        self.nginx, self.php_fpm = find_nginx(), find_php_fpm()
        self.as_root = os.geteuid() == 0

    def file(self, name):
        return os.path.join(self.dir, name)

    @property
    def url(self):
        return f"http://{HOST}:{self.port}/php/bench"

    @staticmethod
    def require_tools(with_wrk):
        missing = [name for name, found in (("nginx", find_nginx()), ("php-fpm", find_php_fpm()),
                                            *([("wrk", shutil.which("wrk"))] if with_wrk else []))
                   if not found]
        if missing:
            raise Failure(f"missing {' '.join(missing)}: install with  sudo apt-get install -y {' '.join(missing)}")
        if not os.path.isfile(os.path.join(PHP_EXAMPLES, "bench.php")):
            raise Failure(f"{PHP_EXAMPLES}/bench.php not found")

    def write_configs(self):
        d = self.dir
        os.makedirs(self.file("nginx-temp"), exist_ok=True)
        fpm = ["[global]", f"pid = {d}/php-fpm.pid", f"error_log = {d}/php-fpm.log", "daemonize = no",
               "", "[bench]", *(["user = root", "group = root"] if self.as_root else []),
               f"listen = {d}/php-fpm.sock", "listen.mode = 0600", "pm = static",
               f"pm.max_children = {self.children}", "pm.max_requests = 0",
               "catch_workers_output = yes", "decorate_workers_output = no"]
        params = [f"            fastcgi_param {name} {value};" for name, value in NGINX_FASTCGI_PARAMS]
        nginx = [
            *(["user root;"] if self.as_root else []),
            f"worker_processes {self.nginx_workers};", "daemon off;", f"pid {d}/nginx.pid;",
            f"error_log {d}/nginx-error.log warn;", "events { worker_connections 4096; }", "http {",
            "    access_log off;", "    default_type application/octet-stream;",
            *(f"    {kind}_temp_path {d}/nginx-temp/{name};" for kind, name in (
                ("client_body", "body"), ("fastcgi", "fastcgi"), ("proxy", "proxy"),
                ("uwsgi", "uwsgi"), ("scgi", "scgi"))),
            "    server {", f"        listen {HOST}:{self.port};", "        server_name localhost;",
            "        location ~ ^/php/([A-Za-z0-9_-]+)$ {",
            f"            fastcgi_pass unix:{d}/php-fpm.sock;",
            f"            fastcgi_param SCRIPT_FILENAME {PHP_EXAMPLES}/$1.php;",
            *params, "        }", "        location / { return 404; }", "    }", "}",
        ]
        for name, lines in (("php-fpm.conf", fpm), ("nginx.conf", nginx)):
            with open(self.file(name), "w") as f:
                f.write("\n".join(lines) + "\n")

    def commands(self):
        settings = PHP_SETTINGS + ([f"auto_prepend_file={PHP_PRELUDE}"] if self.prelude else [])
        php = [self.php_fpm, "-y", self.file("php-fpm.conf"), *(["-R"] if self.as_root else []),
               *(arg for setting in settings for arg in ("-d", setting))]
        nginx = [self.nginx, "-p", self.dir, "-c", self.file("nginx.conf"), "-e", self.file("nginx-error.log")]
        return php, nginx

    def start(self, detach):
        """Checks the configs, starts php-fpm and nginx (in their own session
        when detach, to outlive this script) and waits until /php/bench
        answers 200."""
        self.write_configs()
        php, nginx = self.commands()
        for name, test in (("php-fpm", [php[0], "-t", *php[1:]]), ("nginx", [nginx[0], "-t", *nginx[1:]])):
            run_tool(test, f"{name} -t", output=self.file(f"{name}-test.log"), timeout_s=30)
        for name, command in (("php-fpm", [php[0], "-F", *php[1:]]), ("nginx", nginx)):
            with open(self.file(f"{name}.out"), "w") as out:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=detach)
            with open(self.file(f"{name}.launched-pid"), "w") as f:
                f.write(f"{process.pid}\n")
        deadline, status = time.monotonic() + PHP_FPM_START_TIMEOUT_S, ""
        while time.monotonic() < deadline:
            if os.path.exists(self.file("php-fpm.sock")) and port_open(self.port):
                status = http_status_line(self.port, "/php/bench")
                if re.search(r" 200( |$)", status):
                    self.write_state()
                    return
                # An answer that is not 200 will not become one.
                if status.startswith("HTTP/"):
                    break
            time.sleep(0.1)
        for name in ("php-fpm.log", "php-fpm.out", "nginx-error.log", "nginx.out"):
            if os.path.getsize(self.file(name)) if os.path.exists(self.file(name)) else 0:
                print(f"--- {name}:", *tail(self.file(name), 5), sep="\n", file=sys.stderr)
        raise Failure(f"no 200 from /php/bench (waited up to {PHP_FPM_START_TIMEOUT_S}s; "
                      f"last answer '{status}')")

    def pid(self, name):
        try:
            with open(self.file(f"{name}.pid")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def write_state(self):
        """The marker `stop` looks for before it touches a directory."""
        with open(self.file("state"), "w") as f:
            f.write(f"port={self.port}\nurl={self.url}\nnginx_pid={self.pid('nginx')}\n"
                    f"php_fpm_pid={self.pid('php-fpm')}\n")

    def pids_line(self):
        return f"nginx pid {self.pid('nginx') or '?'}, php-fpm pid {self.pid('php-fpm') or '?'}"

    def ours(self, pid):
        """Alive and its command line names this directory: a pid file can
        outlive its process, and the pid be reused by an unrelated one."""
        return bool(re.fullmatch(r"[0-9]+", str(pid))) and f"{self.dir}/" in cmdline(pid)

    def stop_master(self, pid):
        """SIGTERM, SIGKILL after the timeout, then SIGKILL for any worker it
        left behind (a killed master's workers are orphaned, not stopped)."""
        if not self.ours(pid):
            return
        pid, workers = int(pid), children(int(pid))
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + PHP_FPM_STOP_TIMEOUT_S
        while self.ours(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.ours(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        for worker in workers:
            if re.match(r"(nginx|php-fpm): ", cmdline(worker)):
                with contextlib.suppress(OSError):
                    os.kill(worker, signal.SIGKILL)

    def stop(self):
        # nginx first, so no request is in flight when php-fpm goes.
        for name in ("nginx", "php-fpm"):
            for pid_file in (f"{name}.pid", f"{name}.launched-pid"):
                try:
                    with open(self.file(pid_file)) as f:
                        self.stop_master(f.read().strip())
                except OSError:
                    continue
