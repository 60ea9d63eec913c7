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
        no_host_outlives_the_gateway,
    }
}
