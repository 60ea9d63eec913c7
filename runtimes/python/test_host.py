"""Contract tests for the Python warm host (runtimes/python/host.py).

Every test starts host.py as a real child process laid out the way a corefn
worker lays it out (runtimes/PROTOCOL.md): requests on a pipe at fd 3,
responses on a pipe at fd 4, fd 0 /dev/null, fd 1 and fd 2 an append-mode
log file. The tests then talk the frame protocol over those pipes.

Run from the repository root:
    python3 -m unittest discover -s runtimes/python -p 'test_*.py'

No read or wait blocks for more than TIMEOUT seconds, and every child is
killed in tearDown, so a broken host fails a test instead of hanging it.
"""

import fcntl
import json
import os
import select
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = os.path.join(HERE, "host.py")
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "python")
TIMEOUT = 10.0
HEAD = struct.Struct(">II")

# Handler modules only the tests need; the examples cover the rest.
FIXTURES = {
    "kinds.py": '''
        import json

        def handle(request):
            kind = request.path.rsplit("/", 1)[-1]
            return {
                "bytes": lambda: b"\\x00\\xffraw",
                "str": lambda: "caf\\u00e9",
                "dict": lambda: {"a": [1, 2]},
                "list": lambda: [1, "two"],
                "none": lambda: None,
                "tuple-bytes": lambda: (202, [("x-a", "1"), ("x-a", "2")], b"\\x01"),
                "tuple-json": lambda: (200, {"content-type": "application/vnd.x+json"}, {"k": 1}),
                "tuple-none": lambda: (304, {"etag": "abc"}, None),
                "tuple-int-header": lambda: (200, {"x-n": 5}, "n"),
                "bad-type": lambda: 42,
                "bad-tuple": lambda: ("body", 200),
                "bad-status": lambda: (700, {}, ""),
                "bad-header": lambda: (200, {"x": b"bytes"}, ""),
                "bad-body": lambda: (200, {}, 1.5),
                "bad-json": lambda: {"x": object()},
            }[kind]()
    ''',
    "inspect_request.py": '''
        def handle(request):
            return {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "query_params": request.query_params,
                "headers": request.headers,
                "x_thing": request.get_header("X-Thing"),
                "missing": request.get_header("x-missing", "dflt"),
                "remote_addr": request.remote_addr,
                "text": request.get_text(),
                "repr": repr(request),
            }
    ''',
    "raw_echo.py": '''
        def handle(request):
            return 200, {"x-len": str(len(request.body))}, request.body
    ''',
    "sometimes.py": '''
        import sys

        def fail(kind):
            if kind == "exit":
                sys.exit(3)
            raise ValueError("no such thing\\nsecond line " + "x" * 400)

        def handle(request):
            if request.path != "/ok":
                fail(request.path[1:])
            return "ok"
    ''',
    "chatty.py": '''
        import sys

        print("loading chatty")

        def handle(request):
            print("line from handler")
            print("no newline", end="")
            sys.stderr.write("to stderr\\n")
            return "quiet"
    ''',
    "async_handler.py": '''
        import asyncio

        async def handle(request):
            await asyncio.sleep(0)
            return {"loop": id(asyncio.get_running_loop())}
    ''',
    "uses_sibling.py": '''
        import helper_mod

        def handle(request):
            return helper_mod.greet()
    ''',
    "helper_mod.py": '''
        def greet():
            return "hi from a sibling"
    ''',
    "syntax_error.py": '''
        def handle(request)
            return "never"
    ''',
    "import_error.py": '''
        import no_such_module_anywhere
    ''',
    "not_callable.py": '''
        handle = 42
    ''',
    "fds.py": '''
        import os

        def handle(request):
            return {"3": os.get_inheritable(3), "4": os.get_inheritable(4)}
    ''',
}


def host_cpu_ns(pid):
    """CPU time the process has run, in ns (None where schedstat is missing)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _high_fd(fd):
    """Move fd to 10 or above so dup2 onto 3 and 4 cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Host:
    """One host.py child process and the parent's ends of its pipes."""

    def __init__(self, module, handler="handle", nonblocking=False, env=None):
        fd, self.log_path = tempfile.mkstemp(prefix="corefn-host-", suffix=".log")
        os.close(fd)
        log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
        req_r, self.req_w = map(_high_fd, os.pipe())
        self.resp_r, resp_w = map(_high_fd, os.pipe())
        if nonblocking:
            # The child's own ends: the worker may hand over O_NONBLOCK pipes.
            os.set_blocking(req_r, False)
            os.set_blocking(resp_w, False)
        # The parent's ends never block, so a stuck host cannot hang a test.
        os.set_blocking(self.req_w, False)
        os.set_blocking(self.resp_r, False)
        child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        child_env.update(env or {})
        argv = [sys.executable, HOST, module] + ([handler] if handler is not None else [])
        try:
            self.pid = os.posix_spawn(sys.executable, argv, child_env, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
                (os.POSIX_SPAWN_DUP2, req_r, 3),
                (os.POSIX_SPAWN_DUP2, resp_w, 4),
            ])
        finally:
            for fd in (log, req_r, resp_w):
                os.close(fd)
        self.returncode = None
        self._buf = bytearray()

    # Frames --------------------------------------------------------------

    def write(self, data):
        view = memoryview(data)
        deadline = time.monotonic() + TIMEOUT
        while view:
            try:
                view = view[os.write(self.req_w, view):]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.req_w], [], left)[1]:
                    raise TimeoutError("host does not read its requests")

    def send(self, meta, body=b""):
        meta = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        self.write(HEAD.pack(len(meta), len(body)) + meta + body)

    def _fill(self, n, deadline):
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.resp_r], [], [], left)[0]:
                raise TimeoutError(f"no response within {TIMEOUT} s")
            chunk = os.read(self.resp_r, 1 << 20)
            if not chunk:
                raise EOFError("host closed fd 4")
            self._buf += chunk

    def recv(self):
        """The next frame from the host: (meta dict, body bytes)."""
        deadline = time.monotonic() + TIMEOUT
        self._fill(8, deadline)
        meta_len, body_len = HEAD.unpack_from(self._buf)
        self._fill(8 + meta_len + body_len, deadline)
        meta = json.loads(self._buf[8:8 + meta_len])
        body = bytes(self._buf[8 + meta_len:8 + meta_len + body_len])
        del self._buf[:8 + meta_len + body_len]
        return meta, body

    def request(self, method="GET", path="/", query="", headers=(), body=b""):
        self.send({"method": method, "path": path, "query": query,
                   "headers": [list(h) for h in headers], "remote_addr": "127.0.0.1"}, body)
        return self.recv()

    def ready(self):
        meta, body = self.recv()
        assert meta == {"ready": True} and body == b"", (meta, body, self.log())
        return self

    # Process -------------------------------------------------------------

    def close_requests(self):
        if self.req_w >= 0:
            os.close(self.req_w)
            self.req_w = -1

    def wait(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"host still running after {timeout} s")
            else:
                time.sleep(0.005)
        return self.returncode

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def destroy(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()
        self.close_requests()
        os.close(self.resp_r)
        os.unlink(self.log_path)


class HostTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="corefn-fixtures-")
        for name, source in FIXTURES.items():
            with open(os.path.join(cls.dir, name), "w") as f:
                f.write(textwrap.dedent(source).lstrip())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def setUp(self):
        self.hosts = []

    def tearDown(self):
        for host in self.hosts:
            host.destroy()

    def start(self, module, handler="handle", **kwargs):
        path = module if os.path.isabs(module) else os.path.join(self.dir, module)
        host = Host(path, handler, **kwargs)
        self.hosts.append(host)
        return host

    def example(self, name, **kwargs):
        return self.start(os.path.join(EXAMPLES, name), **kwargs).ready()

    def assertResponse(self, response, status, headers, body):
        meta, data = response
        self.assertEqual(meta, {"status": status, "headers": [list(h) for h in headers]})
        self.assertEqual(data, body)

    def assertLoadFails(self, host, *fragments):
        meta, body = host.recv()
        self.assertEqual(set(meta), {"error"})
        self.assertTrue(meta["error"].startswith("cannot load handler: "), meta)
        for fragment in fragments:
            self.assertIn(fragment, meta["error"])
        self.assertEqual(body, b"")
        self.assertEqual(host.wait(), 1)
        return meta["error"]

    # Start-up ------------------------------------------------------------

    def test_ready_frame(self):
        host = self.start(os.path.join(EXAMPLES, "hello.py"))
        self.assertEqual(host.recv(), ({"ready": True}, b""))

    def test_default_handler_name(self):
        host = self.start(os.path.join(EXAMPLES, "hello.py"), handler=None).ready()
        self.assertEqual(host.request()[1], b"Hello from Python!\n")

    def test_syntax_error_is_a_load_failure(self):
        host = self.start("syntax_error.py")
        error = self.assertLoadFails(host, "SyntaxError")
        self.assertLessEqual(len(error), 300)
        self.assertIn("Traceback", host.log())
        self.assertIn("syntax_error.py", host.log())

    def test_import_error_is_a_load_failure(self):
        host = self.start("import_error.py")
        self.assertLoadFails(host, "ModuleNotFoundError", "no_such_module_anywhere")
        self.assertIn("ModuleNotFoundError", host.log())

    def test_missing_handler_name_is_a_load_failure(self):
        host = self.start(os.path.join(EXAMPLES, "hello.py"), handler="nope")
        self.assertLoadFails(host, "'nope'")

    def test_non_callable_handler_is_a_load_failure(self):
        host = self.start("not_callable.py")
        self.assertLoadFails(host, "not a function")

    def test_missing_module_is_a_load_failure(self):
        host = self.start("does_not_exist.py")
        self.assertLoadFails(host, "FileNotFoundError")

    def test_handler_imports_its_siblings(self):
        host = self.start("uses_sibling.py").ready()
        self.assertEqual(host.request()[1], b"hi from a sibling")

    def test_protocol_fds_are_not_inherited(self):
        host = self.start("fds.py").ready()
        self.assertEqual(json.loads(host.request()[1]), {"3": False, "4": False})

    # The examples --------------------------------------------------------

    def test_hello(self):
        host = self.example("hello.py")
        self.assertResponse(host.request(), 200, [("content-type", "text/plain; charset=utf-8")],
                            b"Hello from Python!\n")

    def test_json_echo(self):
        host = self.example("echo.py")
        meta, body = host.request("POST", "/py/echo", "a=1&b=two%20words&a=ignored&c=x+y",
                                  [("content-type", "application/json")],
                                  b'{"n": [1, 2.5, "\\u00e9"], "ok": true}')
        self.assertEqual(meta, {"status": 200, "headers": [["content-type", "application/json"]]})
        self.assertEqual(json.loads(body), {
            "echo": {"n": [1, 2.5, "\u00e9"], "ok": True},
            "method": "POST",
            "query": {"a": "1", "b": "two words", "c": "x y"},
        })

    def test_json_echo_bad_json_is_an_error_frame(self):
        host = self.example("echo.py")
        meta, _ = host.request("POST", body=b"{not json")
        self.assertTrue(meta["error"].startswith("JSONDecodeError: "), meta)
        self.assertEqual(json.loads(host.request("POST", body=b"[]")[1])["echo"], [])

    def test_status_and_headers_from_tuple(self):
        host = self.example("status.py")
        self.assertResponse(host.request(), 201,
                            [("x-corefn-example", "status"), ("content-type", "text/plain")],
                            b"created\n")

    def test_boom(self):
        host = self.example("boom.py")
        meta, body = host.request()
        self.assertEqual(meta, {"error": "ZeroDivisionError: division by zero"})
        self.assertEqual(body, b"")
        log = host.log()
        self.assertIn("Traceback (most recent call last)", log)
        self.assertIn("in handle", log)
        self.assertIn("in divide", log)
        self.assertIn("ZeroDivisionError: division by zero", log)

    def test_slow(self):
        host = self.example("slow.py")
        started = time.monotonic()
        meta, body = host.request(query="ms=50")
        self.assertGreaterEqual(time.monotonic() - started, 0.05)
        self.assertEqual((meta["status"], body), (200, b"slept\n"))

    def test_spin_never_answers(self):
        host = self.example("spin.py")
        host.send({"method": "GET", "path": "/", "query": "", "headers": []})
        self.assertEqual(select.select([host.resp_r], [], [], 0.3)[0], [])
        # The worker's remedy for a request past its timeout:
        os.kill(host.pid, signal.SIGKILL)
        self.assertEqual(host.wait(), -signal.SIGKILL)

    # Request and response contract ----------------------------------------

    def test_request_fields(self):
        host = self.start("inspect_request.py").ready()
        meta, body = host.request(
            "PUT", "/a/b", "q=%C3%A9t%C3%A9&empty=&q=second&flag",
            [("x-thing", "1"), ("accept", "a"), ("accept", "b")], b"caf\xc3\xa9 \xff")
        self.assertEqual(meta["status"], 200)
        self.assertEqual(json.loads(body), {
            "method": "PUT",
            "path": "/a/b",
            "query": "q=%C3%A9t%C3%A9&empty=&q=second&flag",
            "query_params": {"q": "\u00e9t\u00e9", "empty": "", "flag": ""},
            "headers": {"x-thing": "1", "accept": "a, b"},
            "x_thing": "1",
            "missing": "dflt",
            "remote_addr": "127.0.0.1",
            "text": "caf\u00e9 \ufffd",
            "repr": "<Request PUT /a/b>",
        })

    def test_return_value_conversions(self):
        host = self.start("kinds.py").ready()
        cases = {
            "bytes": (200, [("content-type", "application/octet-stream")], b"\x00\xffraw"),
            "str": (200, [("content-type", "text/plain; charset=utf-8")], "caf\u00e9".encode()),
            "dict": (200, [("content-type", "application/json")], b'{"a": [1, 2]}'),
            "list": (200, [("content-type", "application/json")], b'[1, "two"]'),
            "none": (204, [], b""),
            "tuple-bytes": (202, [("x-a", "1"), ("x-a", "2"),
                                  ("content-type", "application/octet-stream")], b"\x01"),
            "tuple-json": (200, [("content-type", "application/vnd.x+json")], b'{"k": 1}'),
            "tuple-none": (304, [("etag", "abc")], b""),
            "tuple-int-header": (200, [("x-n", "5"), ("content-type", "text/plain; charset=utf-8")],
                                 b"n"),
        }
        for kind, (status, headers, body) in cases.items():
            with self.subTest(kind):
                self.assertResponse(host.request(path="/" + kind), status, headers, body)
        errors = {
            "bad-type": "handler returned int",
            "bad-tuple": "handler returned a 2-tuple; expected (status, headers, body)",
            "bad-status": "handler returned status 700; expected an int in 100..599",
            "bad-header": "handler returned header x: b'bytes'; expected a str value",
            "bad-body": "handler returned a body of type float",
            "bad-json": "TypeError: Object of type object is not JSON serializable",
        }
        for kind, error in errors.items():
            with self.subTest(kind):
                self.assertEqual(host.request(path="/" + kind), ({"error": error}, b""))
        self.assertIn("handler returned int", host.log())
        self.assertEqual(host.request(path="/none")[0]["status"], 204)

    def test_many_requests_on_one_host(self):
        host = self.example("echo.py")
        for i in range(200):
            meta, body = host.request("POST", query=f"i={i}", body=json.dumps([i]).encode())
            self.assertEqual(meta["status"], 200)
            self.assertEqual(json.loads(body), {"echo": [i], "method": "POST",
                                                "query": {"i": str(i)}})

    def test_pipelined_requests_are_answered_in_order(self):
        host = self.example("echo.py")
        for i in range(50):
            host.send({"method": "POST", "path": "/", "query": f"i={i}", "headers": []},
                      str(i).encode())
        for i in range(50):
            self.assertEqual(json.loads(host.recv()[1])["echo"], i)

    def test_exception_then_next_request_works(self):
        host = self.start("sometimes.py").ready()
        meta, body = host.request(path="/raise")
        self.assertEqual(body, b"")
        error = meta["error"]
        self.assertTrue(error.startswith("ValueError: no such thing second line xxx"), error)
        self.assertNotIn("\n", error)
        self.assertEqual(len(error), 300)
        self.assertTrue(error.endswith("..."))
        self.assertIn("Traceback (most recent call last)", host.log())
        self.assertIn("in fail", host.log())
        self.assertEqual(host.request(path="/ok")[1], b"ok")

    def test_sys_exit_in_handler_does_not_end_the_host(self):
        host = self.start("sometimes.py").ready()
        self.assertEqual(host.request(path="/exit")[0], {"error": "SystemExit: 3"})
        self.assertEqual(host.request(path="/ok")[1], b"ok")

    def test_a_request_id_is_echoed_in_its_reply_and_its_error(self):
        host = self.start("sometimes.py").ready()
        base = {"method": "GET", "query": "", "headers": [], "remote_addr": "127.0.0.1"}
        host.send({**base, "id": "a1", "path": "/ok"})
        meta, body = host.recv()
        self.assertEqual((meta["id"], body), ("a1", b"ok"))
        host.send({**base, "id": "b2", "path": "/exit"})
        self.assertEqual(host.recv()[0], {"id": "b2", "error": "SystemExit: 3"})

    def test_async_handler_runs_on_one_loop(self):
        host = self.start("async_handler.py").ready()
        first = json.loads(host.request()[1])["loop"]
        second = json.loads(host.request()[1])["loop"]
        self.assertEqual(first, second)

    def test_print_goes_to_the_log_not_the_protocol(self):
        # No PYTHONUNBUFFERED: the host itself must get prints out promptly.
        host = self.start("chatty.py").ready()
        self.assertResponse(host.request(), 200, [("content-type", "text/plain; charset=utf-8")],
                            b"quiet")
        log = host.log()
        self.assertIn("loading chatty\n", log)
        self.assertIn("line from handler\n", log)
        self.assertIn("no newline", log)
        self.assertIn("to stderr\n", log)
        self.assertEqual(host.request()[1], b"quiet")

    def test_one_mib_body_round_trips(self):
        host = self.start("raw_echo.py").ready()
        payload = os.urandom(1 << 20)
        meta, body = host.request("POST", body=payload)
        self.assertEqual(meta["headers"][0], ["x-len", str(1 << 20)])
        self.assertTrue(body == payload, "1 MiB body changed on the way")
        self.assertEqual(host.request("POST", body=b"small")[1], b"small")

    def test_nonblocking_pipes(self):
        host = self.start("raw_echo.py", nonblocking=True).ready()
        payload = os.urandom(3 << 20)
        self.assertTrue(host.request("POST", body=payload)[1] == payload)
        self.assertEqual(host.request("POST", body=b"x")[1], b"x")

    # Protocol edges -------------------------------------------------------

    def test_eof_on_fd3_exits_zero(self):
        host = self.example("hello.py")
        host.request()
        host.close_requests()
        self.assertEqual(host.wait(), 0)

    def test_eof_before_any_request_exits_zero(self):
        host = self.example("hello.py")
        host.close_requests()
        self.assertEqual(host.wait(), 0)

    def test_eof_inside_a_frame_exits_one(self):
        host = self.example("hello.py")
        host.write(HEAD.pack(10, 0) + b'{"met')
        host.close_requests()
        self.assertEqual(host.wait(), 1)
        self.assertIn("end of file inside a frame", host.log())

    def test_oversized_frame_is_an_error_then_exit_one(self):
        host = self.example("hello.py")
        host.write(HEAD.pack(1 << 20, (64 << 20) + 1))
        meta, _ = host.recv()
        self.assertTrue(meta["error"].startswith("frame too large"), meta)
        self.assertEqual(host.wait(), 1)

    def test_bad_meta_is_an_error_frame_and_the_host_stays(self):
        host = self.example("hello.py")
        host.send(b"not json", b"body")
        self.assertTrue(host.recv()[0]["error"].startswith("bad request meta: "))
        self.assertEqual(host.request()[1], b"Hello from Python!\n")

    # Measurement -----------------------------------------------------------

    def test_zz_hello_round_trip_time(self):
        """Times 5,000 sequential hello round trips; prints, never asserts."""
        host = self.example("hello.py")
        frame_meta = json.dumps({"method": "GET", "path": "/py/hello", "query": "",
                                 "headers": [["host", "localhost"]],
                                 "remote_addr": "127.0.0.1"}).encode()
        frame = HEAD.pack(len(frame_meta), 0) + frame_meta
        for _ in range(200):  # warm-up
            host.write(frame)
            host.recv()
        samples = []
        clock = time.perf_counter_ns
        cpu_before = host_cpu_ns(host.pid)
        for _ in range(5000):
            started = clock()
            host.write(frame)
            host.recv()
            samples.append(clock() - started)
        cpu = host_cpu_ns(host.pid) - cpu_before if cpu_before is not None else None
        samples.sort()
        # The round trip includes two wake-ups, which cost far more when the
        # two processes run on different CPUs: the host's own CPU time per
        # request is the figure that does not depend on the scheduler.
        print(f"\npython host: 5000 hello round trips, median "
              f"{statistics.median(samples) / 1000:.1f} us, p99 "
              f"{samples[int(len(samples) * 0.99)] / 1000:.1f} us"
              + (f", host CPU {cpu / 5000 / 1000:.1f} us per request" if cpu is not None else ""),
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
