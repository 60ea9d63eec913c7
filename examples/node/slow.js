// slow.js: waits ?ms=N milliseconds (default 200) and then answers, for
// testing timeouts and how requests to a busy host queue up. Returning a bare
// string is short for {statusCode: 200, body: "slept\n"}.
//   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/node/slow',
//     '{\"runtime\":\"node\",\"module\":\"../examples/node/slow.js\"}', unixepoch())"
//   curl 'http://127.0.0.1:8080/node/slow?ms=50'  # slept
'use strict';

const { setTimeout: sleep } = require('timers/promises');

exports.handler = async (req) => {
  await sleep(Number(req.queryStringParameters.ms || 200));
  return 'slept\n';
};
