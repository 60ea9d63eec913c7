// spin.js: a handler that never returns (and never yields to the event
// loop). The worker kills the host when the route's timeout_ms has passed
// (the client gets a 504) and starts a new one.
//   sqlite3 corefn.db "INSERT INTO functions VALUES ('GET:/node/spin',
//     '{\"runtime\":\"node\",\"module\":\"../examples/node/spin.js\",\"timeout_ms\":200}', unixepoch())"
//   curl -i http://127.0.0.1:8080/node/spin       # 504 after 200 ms
'use strict';

exports.handler = async () => {
  while (true) {}
};
