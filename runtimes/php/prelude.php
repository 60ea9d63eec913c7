<?php
// corefn PHP prelude: loaded before every request's script (auto_prepend_file)
// so that a PHP error in the function is told apart from a function that
// deliberately answers 500.
//
// Host process. A corefn worker runs one php-cgi per warm PHP host, in
// FastCGI mode: the worker binds a listening Unix socket and passes it as
// fd 0 (php-cgi finds fd 0 to be a socket with no peer, so it serves FastCGI
// on it and accepts connections itself; no -b). The worker closes its own
// copy of the listener after the spawn: then a host that exited makes
// connect() fail at once (ECONNREFUSED) instead of queueing in a backlog
// nobody accepts. Exactly:
//
//   env -i PATH=... HOME=... LANG=... <descriptor env> \
//       PHP_FCGI_CHILDREN=0 PHP_FCGI_MAX_REQUESTS=100000 \
//   /usr/bin/php-cgi \
//     -d auto_prepend_file=/ABS/PATH/runtimes/php/prelude.php \
//     -d opcache.enable=1 \
//     -d opcache.validate_timestamps=1 \
//     -d opcache.revalidate_freq=0 \
//     -d display_errors=0 \
//     -d display_startup_errors=0 \
//     -d log_errors=1 \
//     -d error_log= \
//     -d html_errors=0 \
//     -d expose_php=0 \
//     -d cgi.fix_pathinfo=0 \
//     -d output_buffering=On \
//     -d post_max_size=0 \
//     -d max_execution_time=0
//   fd 0 = the listening socket, fd 1 = /dev/null, fd 2 = the function's log
//   (php://stderr and php-cgi's own startup errors land there).
//
// * PHP_FCGI_CHILDREN=0: one process, no php-cgi process manager. It
//   serves one connection at a time, one request at a time: while the
//   worker keeps a connection (FCGI_KEEP_CONN) other connections wait in the
//   backlog, so the worker keeps exactly one connection per host and gives
//   each request on it a new request id (a late answer to a timed-out
//   request then cannot pass for the next one's).
// * PHP_FCGI_MAX_REQUESTS=100000: the host answers its 100,000th request
//   and exits (the kept connection then reads end of file) and the worker
//   starts a fresh one, as php-fpm's pm.max_requests recycles children; 0
//   would mean no limit, php-cgi's default is 500.
// * post_max_size=0: no limit of PHP's own; the gateway's --max-body is it.
// * The process environment is visible to scripts through getenv() and
//   $_SERVER (PHP_FCGI_* included) next to the request's params; $_ENV stays
//   empty with Debian's variables_order "GPCS", which is fine.
// * The distribution's php.ini and conf.d stay loaded (no -n): that is where
//   opcache and the other extensions are enabled; -d overrides the rest.
// * opcache: validate_timestamps=1 + revalidate_freq=0 stat the script on
//   every request, so an edit is seen at once. Keep the default
//   opcache.file_update_protection=2: mtimes have one-second resolution and
//   a file younger than 2 s is compiled afresh on each request instead of
//   cached, so two edits within one second are not missed.
// * display_errors=0 keeps error text out of the response; log_errors=1 with
//   error_log unset (empty) sends every logged error to the SAPI logger,
//   which in FastCGI mode is the request's FCGI_STDERR (fastcgi.logging=1).
//   Note: php://stderr is the process's fd 2, NOT FCGI_STDERR; that is why
//   this file logs with error_log().
// * output_buffering=On: one buffer without a size limit (chunk size 0): the
//   response stays in PHP's memory until the script ends, so on an error it
//   can still be discarded and the error header sent. Do not give a byte
//   count: PHP allocates a buffer of that size up front on every request
//   (16 MiB for 16777216), and it counts against memory_limit. The buffer
//   starts at 16 KiB and grows; memory_limit bounds it (a runaway echo loop
//   ends as an "Allowed memory size exhausted" fatal error). flush() does
//   not send it. A script that calls ob_flush() or ob_end_flush() has sent
//   its headers; then the details still reach stderr but no error header
//   can be added.
// * max_execution_time=0: the worker enforces the route's timeout by killing
//   the host (Debian's php.ini for php-cgi says 30 s).
// * Params: SCRIPT_FILENAME = the script's absolute path, REQUEST_METHOD,
//   QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH (= the FCGI_STDIN bytes),
//   HTTP_*, REDIRECT_STATUS=200 (FastCGI mode runs without it; plain CGI
//   mode refuses to run a script without it, cgi.force_redirect).
// * post_max_size = the worker's body limit (0 = none): a larger body still
//   reads whole from php://input, but $_POST/$_FILES stay empty and a
//   "POST Content-Length ... exceeds the limit" warning is logged.
//
// On an uncaught exception or a fatal error (E_ERROR, E_PARSE, E_CORE_ERROR,
// E_COMPILE_ERROR, E_USER_ERROR, E_RECOVERABLE_ERROR) this file writes the
// details (message, file:line, stack trace) to stderr, discards the buffered
// output and user headers and answers status 500 with the header
//   X-Corefn-Function-Error: <Class: message>   (one line, <= 300 bytes)
// The worker turns such a response into a 502 carrying that line. A script
// that sets a 500 itself has no such header and is passed through as is.
//
// Per request this costs two registrations and one error_get_last() call;
// it reads no files.

namespace Corefn\Prelude;

const ERROR_HEADER = 'X-Corefn-Function-Error';
const ERROR_HEADER_BYTES_MAX = 300;
const FATAL_ERRORS = E_ERROR | E_PARSE | E_CORE_ERROR | E_COMPILE_ERROR
    | E_USER_ERROR | E_RECOVERABLE_ERROR;

/** One header-safe line: no control bytes, at most 300 bytes, no split UTF-8. */
function header_line(string $text): string
{
    $line = \preg_replace('/[\x00-\x1F\x7F]+/', ' ', $text) ?? 'unprintable error';
    $line = \trim($line);
    if (\strlen($line) > ERROR_HEADER_BYTES_MAX) {
        $line = \substr($line, 0, ERROR_HEADER_BYTES_MAX);
        // Drop a multi-byte UTF-8 sequence the cut left incomplete.
        $line = \preg_replace(
            '/(?:[\xC0-\xDF]|[\xE0-\xEF][\x80-\xBF]?|[\xF0-\xF7][\x80-\xBF]{0,2})$/',
            '',
            $line
        ) ?? $line;
    }
    return $line === '' ? 'error' : $line;
}

/** Replaces whatever the script has buffered or set with the error answer. */
function answer_error(string $summary): void
{
    while (\ob_get_level() > 0 && @\ob_end_clean()) {
    }
    if (\headers_sent()) {
        return; // Output was flushed already: stderr has the details.
    }
    \header_remove();
    \http_response_code(500);
    \header(ERROR_HEADER . ': ' . header_line($summary));
    \header('Content-Type: text/plain; charset=utf-8');
}

function on_exception(\Throwable $error): void
{
    // Same shape as PHP's own log line for an uncaught exception; the
    // string form holds file:line, the stack trace and previous exceptions.
    \error_log('PHP Fatal error:  Uncaught ' . $error);
    answer_error(\get_class($error) . ': ' . $error->getMessage());
}

function on_shutdown(): void
{
    $error = \error_get_last();
    if ($error === null || ($error['type'] & FATAL_ERRORS) === 0) {
        return;
    }
    if (!\ini_get('log_errors')) {
        // PHP logs a fatal error itself (with file and line) when log_errors
        // is on, as the worker configures it; otherwise do it here.
        \error_log("PHP Fatal error:  {$error['message']} in {$error['file']} on line {$error['line']}");
    }
    $label = $error['type'] === E_PARSE ? 'Parse error' : 'Fatal error';
    // A fatal message can span lines (e.g. "Uncaught ... Stack trace: ...").
    $first_line = \strtok($error['message'], "\n");
    answer_error($label . ': ' . ($first_line === false ? '' : $first_line));
}

\set_exception_handler('Corefn\Prelude\on_exception');
\register_shutdown_function('Corefn\Prelude\on_shutdown');
