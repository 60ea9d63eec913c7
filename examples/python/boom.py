# boom.py: a handler that raises. The client gets a 502 whose text is
# "ZeroDivisionError: division by zero"; the full traceback (two frames:
# handle, then divide) is in the function's log, and the same warm host goes
# on serving the next request.
#   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/py/boom',
#     '{\"runtime\":\"python\",\"module\":\"../examples/python/boom.py\"}', unixepoch())"
#   curl -i http://127.0.0.1:8080/py/boom         # 502


def divide(a, b):
    return a / b


def handle(request):
    return divide(1, 0)
