// status.js: a status other than 200 and a header of the function's own.
//   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/node/status',
//     '{\"runtime\":\"node\",\"module\":\"../examples/node/status.js\"}', unixepoch())"
//   curl -i http://127.0.0.1:8080/node/status     # 201, x-corefn-example: status
'use strict';

exports.handler = async () => ({
  statusCode: 201,
  headers: { 'x-corefn-example': 'status', 'content-type': 'text/plain' },
  body: 'created\n',
});
