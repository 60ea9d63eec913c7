// echo.js: parses a JSON request body and answers with it, the method and the
// query parameters. An object body becomes application/json; a body that is
// not JSON makes req.json() reject, which the client sees as a 502 naming the
// SyntaxError.
//   sqlite3 corefn.db "INSERT INTO functions VALUES ('POST:/node/echo',
//     '{\"runtime\":\"node\",\"module\":\"../examples/node/echo.js\"}', unixepoch())"
//   curl -d '{"a": 1}' 'http://127.0.0.1:8080/node/echo?x=1'
//   # {"echo":{"a":1},"method":"POST","query":{"x":"1"}}
'use strict';

exports.handler = async (req) => ({
  statusCode: 200,
  body: { echo: await req.json(), method: req.method, query: req.queryStringParameters },
});
