-- corefn route store: schema and demo routes.
-- Applied by `corefn serve` to a database that has no `functions` table.
-- k = METHOD:/path (METHOD may be ANY; a trailing /* is a prefix route),
-- v = JSON descriptor (see README.md), updated = Unix time of the change.

CREATE TABLE IF NOT EXISTS functions (
    k       TEXT PRIMARY KEY,
    v       TEXT NOT NULL,
    updated INTEGER NOT NULL
);

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
     unixepoch());
