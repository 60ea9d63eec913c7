//! The `php` host: `php-cgi` in FastCGI mode, one process per warm host.
//!
//! The worker binds a listening Unix socket (abstract name, nothing on
//! disk) and hands it to php-cgi as fd 0, which is how php-cgi knows to
//! serve FastCGI (as under mod_fcgid); `PHP_FCGI_CHILDREN=0` keeps it one
//! process serving one connection, which the worker keeps open
//! (`FCGI_KEEP_CONN`). Each request is the CGI environment plus
//! `SCRIPT_FILENAME`; the answer is a CGI response, parsed like the other
//! CGI runtimes'. `runtimes/php/prelude.php` runs before every script and
//! turns an uncaught exception or fatal error into an
//! `X-Corefn-Function-Error` header, so that a failed script is a 502 and a
//! script that answers 500 on purpose is not.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::time::Instant;

use super::fastcgi::{self, FastCgiError};
use super::{one_line, HostCall, HostError, HostOutput};
use crate::runtimes::cgi;
use crate::runtimes::invoke::CallReport;

/// The header prelude.php sets for a script that failed.
const FUNCTION_ERROR_HEADER: &str = "x-corefn-function-error";
/// Requests one php-cgi serves before it exits by itself (it is then
/// replaced like a host that died): PHP leaks little, but not nothing, and
/// php-fpm's `pm.max_requests` does the same.
const PHP_REQUESTS_PER_HOST_MAX: u32 = 100_000;

/// A listening socket for one php-cgi, named `corefn-php-<pid>-<id>`.
pub(super) fn listen(id: u64) -> io::Result<(UnixListener, SocketAddr)> {
    let name = format!("corefn-php-{}-{id}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&address)?;
    Ok((listener, address))
}

/// php-cgi's own settings for a warm host (PHP reads them from the
/// environment).
pub(super) fn host_env() -> Vec<(String, String)> {
    vec![
        ("PHP_FCGI_CHILDREN".into(), "0".into()),
        (
            "PHP_FCGI_MAX_REQUESTS".into(),
            PHP_REQUESTS_PER_HOST_MAX.to_string(),
        ),
    ]
}

/// php-cgi's settings for a warm host: opcache on and checking every file
/// on every request (an edited script is served at once), errors to stderr
/// (the function log) and never into the response, output buffered so that
/// the prelude can still replace the response of a failed script.
pub(super) const PHP_SETTINGS: [&str; 13] = [
    "opcache.enable=1",
    "opcache.validate_timestamps=1",
    "opcache.revalidate_freq=0",
    "display_errors=0",
    "display_startup_errors=0",
    "log_errors=1",
    "error_log=",
    "html_errors=0",
    "expose_php=0",
    // One growing buffer, nothing sent before the script ends (a byte
    // count would be allocated up front per request, 12 µs measured).
    "output_buffering=On",
    "cgi.fix_pathinfo=0",
    // The worker enforces timeout_ms (504); Debian's php.ini would end
    // scripts itself at 30 s with a fatal error (502).
    "max_execution_time=0",
    // Bodies are bounded by the gateway's --max-body.
    "post_max_size=0",
];

/// The php-cgi command line: [`PHP_SETTINGS`] and the prelude.
pub(super) fn host_args(prelude: &Path) -> Vec<OsString> {
    let mut prepend = OsString::from("auto_prepend_file=");
    prepend.push(prelude);
    let settings = PHP_SETTINGS;
    let mut args = Vec::with_capacity(2 * (settings.len() + 1));
    for setting in settings {
        args.push(OsString::from("-d"));
        args.push(OsString::from(setting));
    }
    args.push(OsString::from("-d"));
    args.push(prepend);
    args
}

/// Waits until php-cgi answers on the kept connection (FCGI_GET_VALUES):
/// a host that cannot start is a load error, not a failed request.
pub(super) fn wait_ready(stream: &mut UnixStream, deadline: Instant) -> Result<(), HostError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let died = |detail: String| HostError::Died {
        runtime: "php",
        detail,
    };
    stream
        .set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))
        .map_err(|e| died(e.to_string()))?;
    match fastcgi::get_values(stream, &["FCGI_MPXS_CONNS"]) {
        Ok(_) => Ok(()),
        Err(error) if error.is_timeout() => Err(HostError::Timeout {
            runtime: "php",
            timeout_ms: left.as_millis() as u64,
        }),
        Err(error) => Err(died(format!("php-cgi did not start: {error}"))),
    }
}

/// One request over the host's kept FastCGI connection.
pub(super) fn exchange(
    stream: &mut UnixStream,
    next_request_id: &mut u16,
    call: &HostCall<'_>,
    script: &Path,
    response_bytes_max: usize,
    deadline: Instant,
    report: &mut CallReport,
) -> Result<HostOutput, HostError> {
    let runtime = "php";
    let timeout = HostError::Timeout {
        runtime,
        timeout_ms: call.timeout_ms,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timeout);
    }
    let io_error = |e: io::Error| HostError::Died {
        runtime,
        detail: e.to_string(),
    };
    // Per read and write: php-cgi answers a request in one piece, so a
    // silent host trips it; the worker kills it then.
    stream.set_read_timeout(Some(left)).map_err(io_error)?;
    stream.set_write_timeout(Some(left)).map_err(io_error)?;
    // The CGI variables (descriptor env included) plus what php-cgi needs
    // to find the script.
    let mut params = cgi::environment(call.request, call.descriptor_env);
    let script_text = script.to_string_lossy().into_owned();
    let document_root = script
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    params.push(("SCRIPT_FILENAME".into(), script_text));
    params.push(("DOCUMENT_ROOT".into(), document_root));
    params.push(("REDIRECT_STATUS".into(), "200".into()));
    let request_id = *next_request_id;
    *next_request_id = next_request_id.wrapping_add(1).max(1);
    let output = fastcgi::request(
        stream,
        request_id,
        &params,
        call.body,
        response_bytes_max,
        true,
    )
    .map_err(|error| match error {
        e if e.is_timeout() => timeout,
        FastCgiError::ConnectionClosed => HostError::Died {
            runtime,
            detail: "php-cgi closed the connection".into(),
        },
        FastCgiError::Io(e) => io_error(e),
        other => HostError::Protocol {
            runtime,
            message: other.to_string(),
        },
    })?;
    CallReport::capture(&mut report.stderr, &output.stderr);
    let mut response = cgi::parse_response(&output.stdout).map_err(|e| HostError::Response {
        runtime,
        message: e.to_string(),
    })?;
    if let Some(at) = response
        .headers
        .iter()
        .position(|(name, _)| name.eq_ignore_ascii_case(FUNCTION_ERROR_HEADER))
    {
        let (_, message) = response.headers.swap_remove(at);
        return Err(HostError::Handler {
            runtime,
            message: one_line(&message),
        });
    }
    Ok(HostOutput {
        bytes: output.stdout,
        response,
    })
}
