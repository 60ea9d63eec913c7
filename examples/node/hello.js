// hello.js: the smallest Node function, a plain-text greeting.
//
// The handler returns the {statusCode, headers, body} object. Route it
// (module paths are relative to the functions directory, functions/):
//   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/node/hello',
//     '{\"runtime\":\"node\",\"module\":\"../examples/node/hello.js\"}', unixepoch())"
//   curl http://127.0.0.1:8080/node/hello        # Hello from Node!
'use strict';

exports.handler = async () => ({
  statusCode: 200,
  headers: { 'content-type': 'text/plain; charset=utf-8' },
  body: 'Hello from Node!\n',
});
