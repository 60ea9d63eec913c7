//! PHP functions: scripts with $_SERVER, php://input, header() and echo, run
//! by warm php-cgi hosts (FastCGI) behind a real gateway.

use crate::common::functions::*;

contract_tests! {
    Lang::Php => {
        hello,
        json_echo,
        status_and_headers,
        handler_error(
            "RuntimeException: boom from php",
            &["RuntimeException", "boom from php", "boom.php"],
        ),
        timeout_replaces_host,
        concurrent_requests,
        file_change,
        broken_module_then_fixed("<?php\necho 'unterminated\n", "Parse error"),
        large_body_echo,
        memory_mb_is_enforced(
            "<?php\nini_set(\"memory_limit\", \"-1\");\nif (isset($_GET[\"big\"])) {\n    $s = str_repeat(\"x\", 2 * 1024 * 1024 * 1024);\n    echo \"allocated \" . strlen($s);\n} else {\n    echo \"small\";\n}\n",
        ),
        bad_response_headers_are_502(
            "<?php\n$bad = $_GET['bad'] ?? '';\nif ($bad === 'crlf') { header(\"X-A: a\\r\\nX-Injected: 1\"); }\nelseif ($bad === 'name') { header('Bad Name: v'); }\nelseif ($bad === 'status') { http_response_code(600); }\nelseif ($bad === 'length') { header('Content-Length: 999'); }\nheader('Content-Type: text/plain');\necho $bad === '' ? 'fine' : 'body';\n",
        ),
        confined,
        fork_bomb_is_stopped,
        background_children_end_with_their_process,
        network_is_off_unless_asked_for(
            "<?php\n$socket = @fsockopen(\"127.0.0.1\", (int) $_GET[\"port\"], $errno, $errstr, 2);\nif ($socket) {\n    fclose($socket);\n    echo \"connected\";\n} else {\n    echo \"refused: $errstr\";\n}\n",
        ),
        no_host_outlives_the_gateway,
    }
}
