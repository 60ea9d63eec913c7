// boom.js: a handler that throws. The client gets a 502 whose text is
// "TypeError: boom from node"; the stack (explode, then handler) is in the
// function's log, and the same warm host goes on serving the next request.
//   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/node/boom',
//     '{\"runtime\":\"node\",\"module\":\"../examples/node/boom.js\"}', unixepoch())"
//   curl -i http://127.0.0.1:8080/node/boom       # 502
'use strict';

function explode() {
  throw new TypeError('boom from node');
}

exports.handler = async () => {
  explode();
};
