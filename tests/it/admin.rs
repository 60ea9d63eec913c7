//! Admin endpoints under /_/ and the readiness line.

use crate::common::*;

fn server() -> Server {
    Server::start(
        &[
            ("GET:/hello", &static_route("hi")),
            ("POST:/submit", &static_route("ok")),
            ("GET:/files/*", &static_route("files")),
            ("ANY:/anything", &static_route("any")),
            (
                "PUT:/fn",
                r#"{"runtime":"wasm","module":"fn.wasm","handler":"run"}"#,
            ),
        ],
        &["--cores", "1"],
    )
}

#[test]
fn health_is_200_json_status_ok() {
    let s = server();
    let r = get(s.addr(), "/_/health");
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").expect("content-type on /_/health");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let j = r.json();
    assert_eq!(j["status"], "ok", "health body {j}");
    assert!(
        j["version"].is_u64(),
        "health version should be a number: {j}"
    );
}

#[test]
fn routes_lists_every_route_with_key_method_path_runtime() {
    let s = server();
    let r = get(s.addr(), "/_/routes");
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").expect("content-type on /_/routes");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let j = r.json();
    assert!(j["version"].is_u64(), "routes version: {j}");
    let routes = j["routes"].as_array().expect("routes array");
    assert_eq!(routes.len(), 5, "all five rows are routes: {j}");
    let find = |key: &str| {
        routes
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{key} not in /_/routes: {j}"))
    };
    for (key, method, path, runtime) in [
        ("GET:/hello", "GET", "/hello", "static"),
        ("POST:/submit", "POST", "/submit", "static"),
        ("ANY:/anything", "ANY", "/anything", "static"),
        ("PUT:/fn", "PUT", "/fn", "wasm"),
    ] {
        let e = find(key);
        assert_eq!(e["method"], method, "{key} method: {e}");
        assert_eq!(e["path"], path, "{key} path: {e}");
        assert_eq!(e["runtime"], runtime, "{key} runtime: {e}");
        let updated = e["updated"]
            .as_i64()
            .unwrap_or_else(|| panic!("{key} updated: {e}"));
        assert!(
            (now_secs() - updated).abs() < 600,
            "{key} updated {updated} is the row's value"
        );
    }
    let e = find("GET:/files/*");
    assert_eq!(e["method"], "GET");
    assert!(
        e["path"].as_str().is_some_and(|p| p.starts_with("/files")),
        "prefix route path: {e}"
    );
    let skipped = j["skipped"].as_array().expect("skipped array");
    assert!(skipped.is_empty(), "nothing skipped: {j}");
}

#[test]
fn health_and_routes_agree_on_version() {
    let s = server();
    let h = get(s.addr(), "/_/health").json();
    let r = routes_json(s.addr());
    assert_eq!(h["version"], r["version"], "health {h} vs routes {r}");
}

#[test]
fn unknown_admin_path_is_404() {
    let s = server();
    let r = get(s.addr(), "/_/nope");
    assert_eq!(r.status, 404);
}

#[test]
fn readiness_line_reports_address_cores_and_routes() {
    let s = server();
    let r = s.readiness();
    assert_eq!(r.url, format!("http://{}", s.addr()), "{r:?}");
    assert_eq!(r.field("cores"), Some(1), "--cores 1: {r:?}");
    assert_eq!(r.field("routes"), Some(5), "five valid rows: {r:?}");
    eprintln!("server ready after {:?}: {r:?}", s.startup_time());
}
