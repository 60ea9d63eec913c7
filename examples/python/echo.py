# echo.py: parses a JSON request body and answers with it, the method and the
# query parameters. Returning a dict makes a 200 application/json response;
# a body that is not JSON makes get_json() raise ValueError, which the client
# sees as a 502 naming the error.
#   sqlite3 corefn.db "INSERT INTO functions VALUES ('POST:/py/echo',
#     '{\"runtime\":\"python\",\"module\":\"../examples/python/echo.py\"}', unixepoch())"
#   curl -d '{"a": 1}' 'http://127.0.0.1:8080/py/echo?x=1'
#   # {"echo": {"a": 1}, "method": "POST", "query": {"x": "1"}}


def handle(request):
    return {"echo": request.get_json(), "method": request.method, "query": request.query_params}
