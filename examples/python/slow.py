# slow.py: sleeps ?ms=N milliseconds (default 200) and then answers, for
# testing timeouts and how requests to a busy host queue up.
#   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/py/slow',
#     '{\"runtime\":\"python\",\"module\":\"../examples/python/slow.py\"}', unixepoch())"
#   curl 'http://127.0.0.1:8080/py/slow?ms=50'    # slept

import time


def handle(request):
    time.sleep(float(request.query_params.get("ms", "200")) / 1000)
    return "slept\n"
