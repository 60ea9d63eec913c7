"""corefn warm host for Python handlers.

A corefn worker starts this file as a long-lived child process,
``python3 host.py MODULE_PATH HANDLER_NAME``. It loads the user's module once
and then answers requests one at a time, in order, for as long as it lives.

Protocol (the full specification is runtimes/PROTOCOL.md): every message is a
frame, ``u32 meta_len, u32 body_len`` (big-endian), a UTF-8 JSON object and
raw body bytes. Requests arrive on fd 3 and responses leave on fd 4, both
pipes. The first frame the host writes is ``{"ready": true}``, or
``{"error": "cannot load handler: ..."}`` followed by exit 1. After that every
request frame gets exactly one response frame: ``{"status", "headers"}`` plus
the body, or ``{"error": "ExcType: message"}`` when the handler failed. End of
file on fd 3 means the worker is done with this host: exit 0.

What this host must never do:
  * write protocol data to fd 1 or 2. Those are the function's log; the
    handler prints there, and every traceback goes there.
  * die because of the handler. Whatever a handler raises or returns becomes
    an error frame, and the next request is served as usual. Only a broken
    protocol stream (oversized or truncated frame) ends the host.
  * write anything to fd 4 but whole frames, exactly one per request: the
    worker reads frames by their lengths and cannot resynchronise. So a
    response is converted completely before its first byte is written.
"""

import json
import os
import select
import signal
import struct
import sys

REQUEST_FD = 3
RESPONSE_FD = 4
MAX_META = 1 << 20
MAX_BODY = 64 << 20
ERROR_LIMIT = 300
READ_CHUNK = 64 << 10

_HEAD = struct.Struct(">II")
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_OCTETS = "application/octet-stream"


class ProtocolError(Exception):
    """The request stream is unusable; the host cannot stay in sync."""


class FrameTooLarge(ProtocolError):
    """A length over the limits: answered with an error frame, then exit 1."""


class Truncated(ProtocolError):
    """End of file inside a frame: the worker is gone, nobody to answer."""


class BadResult(Exception):
    """The handler returned something that is not a response."""


# --- Frames ------------------------------------------------------------------


def _wait(fd, events):
    # Only reached when the worker hands us non-blocking pipe ends; the usual
    # blocking read/write never gets here.
    poller = select.poll()
    poller.register(fd, events)
    poller.poll()


class FrameReader:
    """Reads frames from a pipe with as few read(2) calls as possible.

    A small request usually arrives in one read; bytes past the current frame
    stay buffered for the next one. Large payloads are read straight into
    their final buffer instead of through the chunk buffer.
    EINTR needs no handling here: os.read retries it itself (PEP 475).
    """

    __slots__ = ("_fd", "_buf")

    def __init__(self, fd):
        self._fd = fd
        self._buf = bytearray()

    def _read(self, size):
        while True:
            try:
                return os.read(self._fd, size)
            except BlockingIOError:
                _wait(self._fd, select.POLLIN)

    def _fill(self, n):
        """Buffer at least n bytes; False if the stream ends first."""
        buf = self._buf
        while len(buf) < n:
            chunk = self._read(READ_CHUNK)
            if not chunk:
                return False
            buf += chunk
        return True

    def _take(self, n):
        buf = self._buf
        with memoryview(buf) as view:
            out = bytes(view[:n])
        del buf[:n]
        return out

    def _read_exact(self, n):
        buf = self._buf
        if len(buf) >= n:
            return self._take(n)
        if n <= READ_CHUNK:
            if not self._fill(n):
                raise Truncated("end of file inside a frame")
            return self._take(n)
        # Big body: one allocation, no buffer copies, and never a read past
        # this frame (n is exact).
        out = bytearray(n)
        have = len(buf)
        out[:have] = buf
        buf.clear()
        with memoryview(out) as view:
            while have < n:
                try:
                    got = os.readv(self._fd, [view[have:]])
                except BlockingIOError:
                    _wait(self._fd, select.POLLIN)
                    continue
                if not got:
                    raise Truncated("end of file inside a frame")
                have += got
        return bytes(out)

    def read(self):
        """The next (meta, body) pair, or None at a clean end of file."""
        if not self._fill(8):
            if self._buf:
                raise Truncated("end of file inside a frame header")
            return None
        meta_len, body_len = _HEAD.unpack_from(self._buf)
        if meta_len > MAX_META or body_len > MAX_BODY:
            raise FrameTooLarge(
                f"frame too large: meta {meta_len} bytes (limit {MAX_META}), "
                f"body {body_len} bytes (limit {MAX_BODY})"
            )
        del self._buf[:8]
        meta = self._read_exact(meta_len)
        body = self._read_exact(body_len) if body_len else b""
        return meta, body


def _write_all(fd, parts):
    total = sum(map(len, parts))
    while True:
        try:
            done = os.writev(fd, parts)
            break
        except BlockingIOError:
            _wait(fd, select.POLLOUT)
    if done == total:
        return
    # A partial write only happens for bodies bigger than the pipe buffer; the
    # join costs nothing next to waiting for the worker to drain the pipe.
    rest = memoryview(b"".join(parts))[done:]
    while rest:
        try:
            rest = rest[os.write(fd, rest):]
        except BlockingIOError:
            _wait(fd, select.POLLOUT)


# Compact: the meta is for the worker's parser only. Made once, because
# json.dumps with any non-default argument builds a new encoder per call.
_encode_meta = json.JSONEncoder(separators=(",", ":")).encode


def send_frame(meta, body=b""):
    data = _encode_meta(meta).encode()
    _write_all(RESPONSE_FD, (_HEAD.pack(len(data), len(body)), data, body))


def reply(call_id, meta, body=b""):
    """The answer to one request, carrying its id when it had one."""
    if call_id is not None:
        meta = {"id": call_id, **meta}
    send_frame(meta, body)


def one_line(text):
    text = " ".join(text.split())
    if len(text) > ERROR_LIMIT:
        text = text[: ERROR_LIMIT - 3] + "..."
    return text


def describe(exc):
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable message>"
    return f"{name}: {message}" if message else name


def print_traceback():
    import traceback

    traceback.print_exc()
    sys.stderr.flush()


# --- Request -----------------------------------------------------------------


class Request:
    """What a handler receives. See "Handler contracts" in PROTOCOL.md.

    `headers` and `query_params` are built on first use: most handlers touch
    neither, and this object is made for every request.
    """

    __slots__ = ("method", "path", "query", "body", "remote_addr",
                 "_pairs", "_headers", "_query_params")

    def __init__(self, meta, body):
        self.method = meta.get("method", "GET")
        self.path = meta.get("path", "/")
        self.query = meta.get("query") or ""
        self.remote_addr = meta.get("remote_addr", "")
        self.body = body
        self._pairs = meta.get("headers") or ()
        self._headers = None
        self._query_params = None

    @property
    def headers(self):
        headers = self._headers
        if headers is None:
            headers = {}
            for name, value in self._pairs:
                if name in headers:
                    headers[name] = f"{headers[name]}, {value}"
                else:
                    headers[name] = value
            self._headers = headers
        return headers

    @property
    def query_params(self):
        params = self._query_params
        if params is None:
            from urllib.parse import parse_qsl

            params = {}
            for name, value in parse_qsl(self.query, keep_blank_values=True):
                params.setdefault(name, value)
            self._query_params = params
        return params

    def get_header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def get_json(self):
        # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        return json.loads(self.body)

    def get_text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Request {self.method} {self.path}>"


# --- Response ----------------------------------------------------------------


def _header_pairs(headers):
    """[name, value] pairs and whether they set a content type."""
    if headers is None:
        return [], False
    items = headers.items() if hasattr(headers, "items") else headers
    pairs = []
    has_type = False
    try:
        for name, value in items:
            if not isinstance(name, str):
                raise BadResult(f"handler returned header name {name!r}; expected str")
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            elif not isinstance(value, str):
                raise BadResult(
                    f"handler returned header {name}: {value!r}; expected a str value")
            if not has_type and name.lower() == "content-type":
                has_type = True
            pairs.append((name, value))
    except (TypeError, ValueError):
        raise BadResult(
            "handler returned headers that are neither a dict nor a list of "
            "(name, value) pairs") from None
    return pairs, has_type


_BODY_TYPES = (str, bytes, bytearray, memoryview, dict, list)


def _body_bytes(body):
    """(bytes, default content type) for a response body."""
    if isinstance(body, str):
        return body.encode(), _TEXT
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), _OCTETS
    if isinstance(body, (dict, list)):
        return json.dumps(body).encode(), _JSON
    if body is None:
        return b"", None
    raise BadResult(f"handler returned a body of type {type(body).__name__}")


def to_response(result):
    """(status, header pairs, body bytes) for a handler's return value."""
    if isinstance(result, tuple):
        if len(result) != 3:
            raise BadResult(
                f"handler returned a {len(result)}-tuple; expected (status, headers, body)")
        status, headers, body = result
        if (not isinstance(status, int) or isinstance(status, bool)
                or not 100 <= status <= 599):
            raise BadResult(
                f"handler returned status {status!r}; expected an int in 100..599")
        pairs, has_type = _header_pairs(headers)
    elif result is None:
        return 204, [], b""
    elif isinstance(result, _BODY_TYPES):
        status, pairs, has_type, body = 200, [], False, result
    else:
        raise BadResult(f"handler returned {type(result).__name__}")
    data, default_type = _body_bytes(body)
    # An empty body gets no type, so (204, {}, b"") or (304, ...) stay bare.
    if data and default_type and not has_type:
        pairs.append(("content-type", default_type))
    return int(status), pairs, data


class _Loop:
    """The one event loop async handlers run on, kept for the host's life.

    One loop (rather than asyncio.run per request) lets a handler keep
    loop-bound objects such as client sessions in module globals. asyncio is
    imported on first use only: start-up time is part of every cold start.
    """

    loop = None

    @classmethod
    def run(cls, awaitable):
        if cls.loop is None:
            import asyncio

            cls.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(cls.loop)
        return cls.loop.run_until_complete(awaitable)


# --- Host --------------------------------------------------------------------


def load_handler(module_path, handler_name):
    import importlib.machinery
    import importlib.util

    class FreshSourceLoader(importlib.machinery.SourceFileLoader):
        # Always compile from source, never via __pycache__: deploys replace
        # the module by rename, and a new version with the same size and
        # mtime (seconds) as the old one would pass the .pyc check.
        def get_code(self, fullname):
            return self.source_to_code(self.get_data(self.path), self.path)

    module_path = os.path.abspath(module_path)
    module_dir = os.path.dirname(module_path)
    # sys.path[0] is this script's directory; put the handler's directory in
    # its place so the handler imports its siblings, not our files.
    host_dir = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == host_dir:
        sys.path[0] = module_dir
    else:
        sys.path.insert(0, module_dir)

    # A dot in a module name would mean a package; hello.v2.py is "hello_v2".
    name = os.path.splitext(os.path.basename(module_path))[0].replace(".", "_") or "handler"
    if name in sys.modules:
        # A file called json.py must not replace the json the host runs on.
        name = f"corefn_handler_{name}"
    loader = FreshSourceLoader(name, module_path)
    spec = importlib.util.spec_from_file_location(name, module_path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    try:
        handler = getattr(module, handler_name)
    except AttributeError:
        raise AttributeError(
            f"{os.path.basename(module_path)} has no function {handler_name!r}") from None
    if not callable(handler):
        raise TypeError(
            f"{os.path.basename(module_path)}: {handler_name} is a "
            f"{type(handler).__name__}, not a function")
    return handler


def _flush_stdout():
    try:
        sys.stdout.flush()
    except Exception:  # the handler may have closed or replaced sys.stdout
        pass


def serve(handler):
    reader = FrameReader(REQUEST_FD)
    while True:
        try:
            frame = reader.read()
        except ProtocolError as exc:
            print(f"corefn python host: {exc}; exiting", file=sys.stderr, flush=True)
            if isinstance(exc, FrameTooLarge):
                send_frame({"error": one_line(str(exc))})
            return 1
        if frame is None:
            return 0
        meta, body = frame
        call_id = None
        try:
            fields = json.loads(meta)
            # Echoed in the reply: the worker takes only the reply to the
            # request it sent, so nothing a handler writes to fd 4 itself
            # can pass for the answer to another request.
            call_id = fields.get("id")
            request = Request(fields, body)
        except Exception as exc:
            # A worker bug, but the frame was read whole, so stay in sync and
            # go on with the next one.
            line = one_line(f"bad request meta: {describe(exc)}")
            print(f"corefn python host: {line}", file=sys.stderr, flush=True)
            reply(call_id, {"error": line})
            continue
        try:
            result = handler(request)
            if hasattr(result, "__await__"):
                result = _Loop.run(result)
            status, headers, data = to_response(result)
        except BadResult as exc:
            print(f"corefn: {exc}", file=sys.stderr, flush=True)
            reply(call_id, {"error": one_line(str(exc))})
            continue
        except BaseException as exc:
            # BaseException too: a handler calling sys.exit() must not take
            # the warm host down with it.
            print_traceback()
            reply(call_id, {"error": one_line(describe(exc))})
            continue
        finally:
            # Prints from this request reach the log before the worker sees
            # the response, even without a trailing newline.
            _flush_stdout()
        reply(call_id, {"status": status, "headers": headers}, data)


def main(argv):
    # Ctrl-C in the server's terminal reaches the hosts too; die quietly like
    # the worker instead of writing KeyboardInterrupt tracebacks to the log.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        # Processes the handler starts must not hold the protocol pipes open:
        # the worker would miss end of file on fd 4 when this host dies.
        os.set_inheritable(REQUEST_FD, False)
        os.set_inheritable(RESPONSE_FD, False)
    except OSError as exc:
        print(f"corefn python host: fd 3 and fd 4 must be the protocol pipes: {exc}",
              file=sys.stderr, flush=True)
        return 1
    if sys.stdout is not None:
        sys.stdout.reconfigure(line_buffering=True)

    if len(argv) < 2:
        print("usage: host.py MODULE_PATH [HANDLER_NAME]", file=sys.stderr, flush=True)
        send_frame({"error": "cannot load handler: no MODULE_PATH argument"})
        return 1
    try:
        handler = load_handler(argv[1], argv[2] if len(argv) > 2 and argv[2] else "handle")
    except BaseException as exc:
        print_traceback()
        send_frame({"error": one_line(f"cannot load handler: {describe(exc)}")})
        return 1
    finally:
        _flush_stdout()
    send_frame({"ready": True})
    return serve(handler)


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except BrokenPipeError:
        # fd 4 is closed: the worker is gone and nobody is left to answer.
        code = 0
    sys.exit(code)
