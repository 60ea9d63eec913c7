-- corefn demo routes, put by `corefn serve` into a database that had no
-- route table. The tables themselves are created by corefn's schema
-- migrations (src/schema/).
-- k = METHOD:/path (METHOD may be ANY; a trailing /* is a prefix route),
-- v = JSON descriptor (see README.md), updated = Unix time of the change.

INSERT OR IGNORE INTO functions (k, v, updated) VALUES
    ('GET:/',
     '{"runtime":"static","body":"corefn is running\n"}',
     unixepoch()),
    ('GET:/hello',
     '{"runtime":"static","body":"Hello, world!\n","headers":{"content-type":"text/plain"}}',
     unixepoch()),
    ('GET:/api/status',
     '{"runtime":"static","body":"{\"status\":\"ok\"}","headers":{"content-type":"application/json"}}',
     unixepoch()),
    ('POST:/api/echo-static',
     '{"runtime":"static","status":201,"body":"{\"created\":true}","headers":{"content-type":"application/json"}}',
     unixepoch()),
    ('GET:/static/*',
     '{"runtime":"static","body":"static prefix route\n"}',
     unixepoch()),
    -- WebAssembly functions, run by the worker processes; modules are
    -- relative to --functions-dir (default functions/).
    ('GET:/wasm/hello',
     '{"runtime":"wasm","module":"hello.wat"}',
     unixepoch()),
    ('POST:/wasm/echo',
     '{"runtime":"wasm","module":"echo.wat","timeout_ms":5000}',
     unixepoch()),
    -- A shared library with the C ABI of runtimes/native/corefn.h
    -- (make -C examples/native builds it; scripts/run.sh does that).
    ('GET:/native/hello',
     '{"runtime":"native","module":"hello.so"}',
     unixepoch()),
    -- Any executable under the CGI contract, a process per request.
    ('GET:/exec/hello',
     '{"runtime":"exec","module":"hello.sh"}',
     unixepoch()),
    -- Warm language hosts: the handler is loaded once and serves many
    -- requests.
    ('GET:/python/hello',
     '{"runtime":"python","module":"hello.py"}',
     unixepoch()),
    ('POST:/python/echo',
     '{"runtime":"python","module":"echo.py","timeout_ms":5000}',
     unixepoch()),
    ('GET:/node/hello',
     '{"runtime":"node","module":"hello.js"}',
     unixepoch()),
    ('POST:/node/echo',
     '{"runtime":"node","module":"echo.js","timeout_ms":5000}',
     unixepoch()),
    ('GET:/php/hello',
     '{"runtime":"php","module":"hello.php"}',
     unixepoch()),
    ('POST:/php/echo',
     '{"runtime":"php","module":"echo.php","timeout_ms":5000}',
     unixepoch());
