//! Node functions: `exports.handler = async (req) => ...` in a warm host per
//! function, answered by real node processes behind a real gateway.

use crate::common::functions::*;

contract_tests! {
    Lang::Node => {
        hello,
        json_echo,
        status_and_headers,
        handler_error(
            "TypeError: boom from node",
            &["TypeError: boom from node", "boom.js"],
        ),
        timeout_replaces_host,
        concurrent_requests,
        file_change,
        broken_module_then_fixed("exports.handler = async (req => {\n", "SyntaxError"),
        large_body_echo,
        host_death_is_502_and_replaced(
            "exports.handler = async (req) => {\n  if (req.queryStringParameters.die) process.exit(3);\n  return {statusCode: 200, headers: {\"content-type\": \"text/plain\"}, body: \"alive\\n\"};\n};\n",
        ),
        forged_reply_never_reaches_another_client(
            "const fs = require(\"fs\");\n\nexports.handler = async (req) => {\n  const q = req.queryStringParameters;\n  if (q.forge) {\n    const meta = Buffer.from(JSON.stringify({status: 200, headers: [[\"content-type\", \"text/plain\"]]}));\n    const head = Buffer.alloc(8);\n    head.writeUInt32BE(meta.length, 0);\n    head.writeUInt32BE(6, 4);\n    fs.writeSync(4, Buffer.concat([head, meta, Buffer.from(\"forged\")]));\n  }\n  return {statusCode: 200, headers: {\"content-type\": \"text/plain\"}, body: \"secret-\" + q.who};\n};\n",
        ),
        memory_mb_is_enforced(
            "exports.handler = async (req) => {\n  if (req.queryStringParameters.big) {\n    const b = Buffer.alloc(2 * 1024 ** 3, 1);\n    return {statusCode: 200, body: \"allocated \" + b.length};\n  }\n  return {statusCode: 200, headers: {\"content-type\": \"text/plain\"}, body: \"small\"};\n};\n",
        ),
        bad_response_headers_are_502(
            "'use strict';\nexports.handler = async (req) => {\n  const bad = (req.queryStringParameters || {}).bad || '';\n  const headers = { crlf: { 'x-a': 'a\\r\\nx-injected: 1' }, name: { 'bad name': 'v' }, length: { 'content-length': '999' } }[bad] || { 'content-type': 'text/plain' };\n  return { statusCode: bad === 'status' ? 600 : 200, headers, body: bad ? 'body' : 'fine' };\n};\n",
        ),
        confined,
        fork_bomb_is_stopped,
        background_children_end_with_their_process,
        network_is_off_unless_asked_for(
            "const net = require(\"net\");\n\nexports.handler = (req) => new Promise((resolve) => {\n  const socket = net.connect({host: \"127.0.0.1\", port: Number(req.queryStringParameters.port)});\n  socket.setTimeout(2000, () => { socket.destroy(); resolve(\"refused: timeout\"); });\n  socket.on(\"connect\", () => { socket.end(); resolve(\"connected\"); });\n  socket.on(\"error\", (err) => resolve(\"refused: \" + err.code));\n});\n",
        ),
        no_host_outlives_the_gateway,
    }
}
