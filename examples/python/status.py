# status.py: a status other than 200 and a header of the function's own.
#   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/py/status',
#     '{\"runtime\":\"python\",\"module\":\"../examples/python/status.py\"}', unixepoch())"
#   curl -i http://127.0.0.1:8080/py/status       # 201, x-corefn-example: status


def handle(request):
    return 201, {"x-corefn-example": "status", "content-type": "text/plain"}, "created\n"
