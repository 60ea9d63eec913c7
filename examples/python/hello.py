# hello.py: the smallest Python function, a plain-text greeting.
#
# The (status, headers, body) tuple form sets everything explicitly. Route it
# (module paths are relative to the functions directory, functions/):
#   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/py/hello',
#     '{\"runtime\":\"python\",\"module\":\"../examples/python/hello.py\"}', unixepoch())"
#   curl http://127.0.0.1:8080/py/hello          # Hello from Python!


def handle(request):
    return 200, {"content-type": "text/plain; charset=utf-8"}, "Hello from Python!\n"
