//! Host routes: a request whose Host is `NAME.localhost` (or `NAME.` and
//! one of the `--host-suffix` domains), with any port, is served by the
//! function NAME, as if its path were under `/fn/NAME` (the route every
//! deployed function has). The lookup is the same lock-free table lookup;
//! only requests whose Host matches pay for building the longer path.

/// The domain every deployment answers for.
pub const LOCAL_SUFFIX: &str = "localhost";
use crate::http::rules::is_function_name;

/// The function a Host header names, if it names one under `suffixes`.
pub fn function_of_host<'h>(host: &'h [u8], suffixes: &[String]) -> Option<&'h str> {
    let host = std::str::from_utf8(host).ok()?;
    // A port, but not the colons of an IPv6 literal (which names no function).
    let name_and_domain = match host.rsplit_once(':') {
        Some((before, port)) if port.bytes().all(|b| b.is_ascii_digit()) => before,
        _ => host,
    };
    let name_and_domain = name_and_domain.strip_suffix('.').unwrap_or(name_and_domain);
    let (name, domain) = name_and_domain.split_once('.')?;
    let matches_domain = domain.eq_ignore_ascii_case(LOCAL_SUFFIX)
        || suffixes.iter().any(|s| domain.eq_ignore_ascii_case(s));
    (matches_domain && is_function_name(name)).then_some(name)
}

/// The table path that serves `path` of function `name`.
pub fn function_path(name: &str, path: &str) -> String {
    let mut routed = String::with_capacity(4 + name.len() + path.len());
    routed.push_str("/fn/");
    routed.push_str(name);
    if path != "/" {
        routed.push_str(path);
    }
    routed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_hosts_are_recognised() {
        let suffixes = vec!["fn.example.com".to_string()];
        assert_eq!(
            function_of_host(b"greet.localhost", &suffixes),
            Some("greet")
        );
        assert_eq!(
            function_of_host(b"greet.localhost:8080", &suffixes),
            Some("greet")
        );
        assert_eq!(
            function_of_host(b"greet.LOCALHOST.", &suffixes),
            Some("greet")
        );
        assert_eq!(
            function_of_host(b"a-1.fn.example.com", &suffixes),
            Some("a-1")
        );
        assert_eq!(function_of_host(b"localhost:8080", &suffixes), None);
        assert_eq!(function_of_host(b"127.0.0.1:8080", &suffixes), None);
        assert_eq!(function_of_host(b"Greet.localhost", &suffixes), None);
        assert_eq!(function_of_host(b"greet.example.org", &suffixes), None);
        assert_eq!(function_of_host(b"[::1]:8080", &suffixes), None);
        assert_eq!(function_of_host(b"a.b.localhost", &suffixes), None);
    }

    #[test]
    fn paths_go_under_fn_name() {
        assert_eq!(function_path("greet", "/"), "/fn/greet");
        assert_eq!(function_path("greet", "/a/b"), "/fn/greet/a/b");
    }
}
