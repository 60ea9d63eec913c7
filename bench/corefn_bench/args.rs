//! Command line of `corefn-bench` and its validation into a `Config`.
//!
//! Owns every limit on what a run may ask for (connections, durations,
//! routes, body size) and the loopback-only rule: a target that is not
//! 127.0.0.0/8 or [::1] is refused before any socket is opened. Builds the
//! request bytes once per route, so the load loop only copies them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Most connections one run may open (one thread each).
pub const CONNECTIONS_MAX: usize = 1024;
/// Longest warm-up or measured duration, in seconds.
pub const DURATION_S_MAX: f64 = 3600.0;
/// Longest read/connect timeout, in milliseconds.
pub const TIMEOUT_MS_MAX: u64 = 60_000;
/// Highest total rate in open-loop mode, in requests per second.
pub const RATE_RPS_MAX: f64 = 10_000_000.0;
/// Most `--route` entries.
pub const ROUTES_MAX: usize = 64;
/// Highest weight of one route.
pub const ROUTE_WEIGHT_MAX: u32 = 1000;
/// Most `-H` headers.
pub const HEADERS_MAX: usize = 64;
/// Largest request body.
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// HTTP load generator for corefn: closed-loop or constant-rate (corrected
/// for coordinated omission), loopback targets only.
#[derive(Parser, Debug)]
#[command(
    name = "corefn-bench",
    version,
    about,
    after_help = "Plot saved runs: corefn-bench plot --svg out.svg run1.json run2.json ..."
)]
pub struct RunArgs {
    /// Target, e.g. http://127.0.0.1:8080/hello (loopback addresses only).
    pub url: String,

    /// Keep-alive connections, one thread each (1 ..= 1024).
    #[arg(short = 'c', long, default_value_t = 16)]
    pub connections: usize,

    /// Measured duration in seconds.
    #[arg(short = 'd', long = "duration", default_value_t = 10.0)]
    pub duration_s: f64,

    /// Warm-up in seconds before the measured window; its results are dropped.
    #[arg(long = "warmup", default_value_t = 2.0)]
    pub warmup_s: f64,

    /// Open loop: send R requests/s in total on a fixed schedule (split over
    /// the connections) and measure latency from the intended send time.
    /// Without it: closed loop, each connection sends as soon as it can.
    #[arg(long = "rate")]
    pub rate_rps: Option<f64>,

    /// Method when no --route is given.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,

    /// Extra request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,

    /// Request body, sent with every request whose method is not GET or HEAD.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,

    /// Request body read from a file (same rule as --body).
    #[arg(long)]
    pub body_file: Option<PathBuf>,

    /// Weighted route "METHOD PATH [WEIGHT]" (repeatable; weight 1 ..= 1000,
    /// default 1). With routes, the URL's path is not used.
    #[arg(long = "route")]
    pub routes: Vec<String>,

    /// Connect and per-read timeout in milliseconds; a read that waits longer
    /// is a timeout error and the connection is reopened.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,

    /// Server process to charge CPU time to (its children included).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write the latency distribution in HdrHistogram .hgrm format.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,

    /// Write a latency-by-percentile SVG plot of this run.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// `corefn-bench plot`: overlay saved runs in one SVG.
#[derive(Parser, Debug)]
#[command(name = "corefn-bench plot")]
pub struct PlotArgs {
    /// Output SVG file.
    #[arg(long)]
    pub svg: PathBuf,

    /// JSON reports written with --json; each file's name labels its curve.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each connection sends its next request as soon as the last response
    /// is read; latency is measured from the actual send.
    Closed,
    /// Requests are due on a fixed schedule; latency is measured from the
    /// time a request was due (wrk2's coordinated-omission correction).
    Open { rate_rps: f64 },
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value (the URL's authority).
    pub host: String,
    /// The URL's path and query, `/` when absent.
    pub path: String,
}

/// One route of the mix with its request, rendered once.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub method: String,
    pub path: String,
    pub weight: u32,
    /// The whole request: head and body.
    pub bytes: Vec<u8>,
    /// False for HEAD: the response has no body whatever its headers say.
    pub response_has_body: bool,
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub routes: Vec<RouteRequest>,
    pub mode: Mode,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    pub server_pid: Option<u32>,
}

/// Parses `http://HOST:PORT[/path]` and refuses anything but loopback.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("target {url:?}: only http:// URLs are supported (e.g. http://127.0.0.1:8080/)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| format!("target {url:?}: unclosed '[' in the address"))?;
        let port = v6[end + 1..].strip_prefix(':');
        (&v6[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let ip: IpAddr = host.parse().map_err(|_| {
        format!(
            "target {url:?}: {host:?} is not an IP address; use 127.0.0.1 or [::1] \
             (load goes only to this machine)"
        )
    })?;
    if !ip.is_loopback() {
        return Err(format!(
            "target {url:?}: {ip} is not a loopback address; corefn-bench sends load only \
             to this machine (127.0.0.0/8 or [::1])"
        ));
    }
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("target {url:?}: bad port {p:?}"))?,
    };
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        host: authority.to_string(),
        path: path.to_string(),
    })
}

/// Parses `METHOD PATH [WEIGHT]`.
pub fn parse_route(spec: &str) -> Result<(String, String, u32), String> {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let (method, path, weight) = match parts.as_slice() {
        [m, p] => (*m, *p, 1),
        [m, p, w] => {
            let w: u32 = w
                .parse()
                .map_err(|_| format!("route {spec:?}: weight {w:?} is not a whole number"))?;
            (*m, *p, w)
        }
        _ => return Err(format!("route {spec:?}: expected \"METHOD PATH [WEIGHT]\"")),
    };
    check_method(method)?;
    check_path(path)?;
    if weight == 0 || weight > ROUTE_WEIGHT_MAX {
        return Err(format!(
            "route {spec:?}: weight must be 1 ..= {ROUTE_WEIGHT_MAX}"
        ));
    }
    Ok((method.to_string(), path.to_string(), weight))
}

fn check_method(method: &str) -> Result<(), String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "method {method:?}: expected upper-case letters (GET, POST...)"
        ));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "path {path:?}: must start with '/' and hold no spaces"
        ));
    }
    Ok(())
}

/// Parses `Name: value`; the framing headers belong to the generator.
pub fn parse_header(spec: &str) -> Result<(String, String), String> {
    let (name, value) = spec
        .split_once(':')
        .ok_or_else(|| format!("header {spec:?}: expected \"Name: value\""))?;
    let name = name.trim();
    let value = value.trim();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
    {
        return Err(format!("header {spec:?}: bad header name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(format!("header {spec:?}: line breaks in the value"));
    }
    let lower = name.to_ascii_lowercase();
    if lower == "content-length" || lower == "transfer-encoding" {
        return Err(format!(
            "header {spec:?}: corefn-bench sets the body framing itself (use --body)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Renders one request; the body goes with every method but GET and HEAD.
pub fn render_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let with_body = method != "GET" && method != "HEAD";
    if with_body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if with_body {
        bytes.extend_from_slice(body);
    }
    bytes
}

fn seconds(name: &str, s: f64, min_exclusive: bool) -> Result<Duration, String> {
    let ok = s.is_finite() && s <= DURATION_S_MAX && if min_exclusive { s > 0.0 } else { s >= 0.0 };
    if !ok {
        let lower = if min_exclusive {
            "above 0"
        } else {
            "at least 0"
        };
        return Err(format!(
            "--{name} {s}: must be {lower} and at most {DURATION_S_MAX} s"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

impl RunArgs {
    /// Checks every limit and renders the requests.
    pub fn into_config(self) -> Result<Config, String> {
        let target = parse_target(&self.url)?;
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return Err(format!(
                "--connections {}: must be 1 ..= {CONNECTIONS_MAX}",
                self.connections
            ));
        }
        let duration = seconds("duration", self.duration_s, true)?;
        let warmup = seconds("warmup", self.warmup_s, false)?;
        if self.timeout_ms == 0 || self.timeout_ms > TIMEOUT_MS_MAX {
            return Err(format!(
                "--timeout-ms {}: must be 1 ..= {TIMEOUT_MS_MAX}",
                self.timeout_ms
            ));
        }
        let mode = match self.rate_rps {
            None => Mode::Closed,
            Some(r) if r.is_finite() && r > 0.0 && r <= RATE_RPS_MAX => Mode::Open { rate_rps: r },
            Some(r) => {
                return Err(format!(
                    "--rate {r}: must be above 0 and at most {RATE_RPS_MAX}"
                ))
            }
        };
        if self.headers.len() > HEADERS_MAX {
            return Err(format!("at most {HEADERS_MAX} -H headers"));
        }
        let headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let body = match (&self.body, &self.body_file) {
            (Some(b), _) => b.clone().into_bytes(),
            (None, Some(f)) => {
                std::fs::read(f).map_err(|e| format!("--body-file {}: {e}", f.display()))?
            }
            (None, None) => Vec::new(),
        };
        if body.len() > BODY_BYTES_MAX {
            return Err(format!("request body over {BODY_BYTES_MAX} bytes"));
        }
        if self.routes.len() > ROUTES_MAX {
            return Err(format!("at most {ROUTES_MAX} --route entries"));
        }
        let specs = if self.routes.is_empty() {
            check_method(&self.method)?;
            vec![(self.method.clone(), target.path.clone(), 1)]
        } else {
            self.routes
                .iter()
                .map(|r| parse_route(r))
                .collect::<Result<Vec<_>, _>>()?
        };
        let routes = specs
            .into_iter()
            .map(|(method, path, weight)| RouteRequest {
                bytes: render_request(&method, &path, &target.host, &headers, &body),
                response_has_body: method != "HEAD",
                method,
                path,
                weight,
            })
            .collect();
        Ok(Config {
            target,
            routes,
            mode,
            connections: self.connections,
            warmup,
            duration,
            timeout: Duration::from_millis(self.timeout_ms),
            server_pid: self.server_pid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        let t = parse_target("http://127.0.0.1:8080/hello?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/hello?x=1");
        let t = parse_target("http://127.3.4.5:9").unwrap();
        assert_eq!(t.path, "/");
        let t = parse_target("http://[::1]:8080/").unwrap();
        assert_eq!(t.addr, "[::1]:8080".parse().unwrap());
        assert_eq!(parse_target("http://127.0.0.1").unwrap().addr.port(), 80);
    }

    #[test]
    fn non_loopback_targets_are_refused() {
        for url in [
            "http://10.0.0.1:80/",
            "http://192.168.1.1/",
            "http://[2001:db8::1]:80/",
            "http://0.0.0.0:8080/",
            "http://example.com/",
            "http://localhost:8080/",
            "https://127.0.0.1/",
        ] {
            assert!(parse_target(url).is_err(), "{url} accepted");
        }
        let e = parse_target("http://10.0.0.1:80/").unwrap_err();
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn routes_have_a_method_a_path_and_an_optional_weight() {
        assert_eq!(
            parse_route("GET /hello 3").unwrap(),
            ("GET".into(), "/hello".into(), 3)
        );
        assert_eq!(
            parse_route(" POST   /wasm/echo ").unwrap(),
            ("POST".into(), "/wasm/echo".into(), 1)
        );
        assert!(parse_route("GET").is_err());
        assert!(parse_route("GET hello").is_err());
        assert!(parse_route("get /hello").is_err());
        assert!(parse_route("GET /hello 0").is_err());
        assert!(parse_route("GET /hello x").is_err());
        assert!(parse_route("GET /a 1 2").is_err());
    }

    #[test]
    fn headers_are_name_colon_value_and_framing_is_ours() {
        assert_eq!(
            parse_header("X-A: b c").unwrap(),
            ("X-A".into(), "b c".into())
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("Content-Length: 3").is_err());
        assert!(parse_header("Bad Name: x").is_err());
    }

    #[test]
    fn requests_carry_host_headers_and_the_body_unless_get_or_head() {
        let h = vec![("X-A".to_string(), "1".to_string())];
        let get = render_request("GET", "/a", "127.0.0.1:1", &h, b"xyz");
        assert_eq!(
            get,
            b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-A: 1\r\n\r\n"
        );
        let post = render_request("POST", "/b", "127.0.0.1:1", &[], b"xyz");
        assert_eq!(
            post,
            b"POST /b HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 3\r\n\r\nxyz"
        );
    }
}
