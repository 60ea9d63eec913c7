# spin.py: a handler that never returns. The worker kills the host when the
# route's timeout_ms has passed (the client gets a 504) and starts a new one.
#   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/py/spin',
#     '{\"runtime\":\"python\",\"module\":\"../examples/python/spin.py\",\"timeout_ms\":200}', unixepoch())"
#   curl -i http://127.0.0.1:8080/py/spin         # 504 after 200 ms


def handle(request):
    while True:
        pass
