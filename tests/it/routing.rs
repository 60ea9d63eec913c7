//! Route matching: exact vs prefix, specificity, methods, HEAD, query strings,
//! static descriptors and the embedded demo routes.

use crate::common::*;

fn server() -> Server {
    Server::start(
        &[
            ("GET:/static/*", &static_route("static prefix")),
            ("GET:/a/*", &static_route("a prefix")),
            ("GET:/a/b/*", &static_route("a/b prefix")),
            ("GET:/a/b/c", &static_route("a/b/c exact")),
            ("GET:/exact", &static_route("exact only")),
            ("ANY:/any", &static_route("any method")),
            ("ANY:/both", &static_route("both via ANY")),
            ("GET:/both", &static_route("both via GET")),
            ("ANY:/mixed/*", &static_route("mixed ANY prefix")),
            ("GET:/mixed/exact", &static_route("mixed GET exact")),
            (
                "GET:/created",
                &static_route_full(
                    201,
                    &[("content-type", "application/json"), ("x-demo", "yes")],
                    r#"{"created":true}"#,
                ),
            ),
            ("GET:/defaults", r#"{"runtime":"static"}"#),
            ("GET:/head-me", &static_route("0123456789abcdef")),
        ],
        &[],
    )
}

fn body_of(s: &Server, method: &str, path: &str) -> (u16, String) {
    let r = send(
        s.addr(),
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    (r.status, r.text())
}

#[test]
fn prefix_route_matches_base_slash_and_deeper_paths() {
    let s = server();
    for path in [
        "/static",
        "/static/",
        "/static/a",
        "/static/a/b",
        "/static/a/b/c.txt",
    ] {
        assert_eq!(
            body_of(&s, "GET", path),
            (200, "static prefix".to_string()),
            "GET {path}"
        );
    }
}

#[test]
fn prefix_route_does_not_match_sibling_names() {
    let s = server();
    for path in ["/staticfoo", "/statics/a", "/stati"] {
        assert_eq!(body_of(&s, "GET", path).0, 404, "GET {path}");
    }
}

#[test]
fn exact_route_does_not_match_longer_paths() {
    let s = server();
    assert_eq!(
        body_of(&s, "GET", "/exact"),
        (200, "exact only".to_string())
    );
    assert_eq!(body_of(&s, "GET", "/exact/more").0, 404);
    assert_eq!(body_of(&s, "GET", "/exactly").0, 404);
}

#[test]
fn longest_prefix_wins() {
    let s = server();
    let cases = [
        ("/a", "a prefix"),
        ("/a/x", "a prefix"),
        ("/a/x/y", "a prefix"),
        ("/a/b", "a/b prefix"),
        ("/a/b/", "a/b prefix"),
        ("/a/b/x", "a/b prefix"),
        ("/a/b/c/d", "a/b prefix"),
    ];
    for (path, want) in cases {
        assert_eq!(
            body_of(&s, "GET", path),
            (200, want.to_string()),
            "GET {path}"
        );
    }
}

#[test]
fn exact_beats_prefix() {
    let s = server();
    assert_eq!(
        body_of(&s, "GET", "/a/b/c"),
        (200, "a/b/c exact".to_string())
    );
    // A more specific exact path wins even when its method is specific and the
    // prefix is ANY, and the prefix still serves other methods there.
    assert_eq!(
        body_of(&s, "GET", "/mixed/exact"),
        (200, "mixed GET exact".to_string())
    );
    assert_eq!(
        body_of(&s, "POST", "/mixed/other"),
        (200, "mixed ANY prefix".to_string())
    );
}

#[test]
fn any_matches_every_method() {
    let s = server();
    for m in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        assert_eq!(
            body_of(&s, m, "/any"),
            (200, "any method".to_string()),
            "{m} /any"
        );
    }
}

#[test]
fn exact_method_beats_any_on_same_path() {
    let s = server();
    assert_eq!(
        body_of(&s, "GET", "/both"),
        (200, "both via GET".to_string())
    );
    for m in ["POST", "PUT", "DELETE"] {
        assert_eq!(
            body_of(&s, m, "/both"),
            (200, "both via ANY".to_string()),
            "{m} /both"
        );
    }
}

#[test]
fn head_on_get_route_returns_headers_without_body() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(b"HEAD /head-me HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_response_to_head_request();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("16"),
        "HEAD carries the GET body's content-length"
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // No body bytes may follow: the next response on the connection must
    // parse cleanly right after the HEAD response.
    c.write(get_req("/head-me").as_bytes());
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "0123456789abcdef"),
        "response after HEAD (a HEAD body would corrupt it)"
    );
    assert!(c.buffered().is_empty());
}

#[test]
fn head_on_unknown_path_is_404_without_body() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.write(b"HEAD /nope HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_response_to_head_request();
    assert_eq!(r.status, 404);
    c.write(get_req("/exact").as_bytes());
    assert_eq!(c.read_response().text(), "exact only");
}

#[test]
fn query_string_is_ignored_for_matching() {
    let s = server();
    assert_eq!(
        body_of(&s, "GET", "/exact?x=1&y=two"),
        (200, "exact only".to_string())
    );
    assert_eq!(
        body_of(&s, "GET", "/exact?"),
        (200, "exact only".to_string())
    );
    assert_eq!(
        body_of(&s, "GET", "/static/a/b?q=/etc"),
        (200, "static prefix".to_string())
    );
    assert_eq!(body_of(&s, "GET", "/nothing?x=/exact").0, 404);
}

#[test]
fn static_descriptor_status_and_headers_are_served() {
    let s = server();
    let r = get(s.addr(), "/created");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-demo"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), r#"{"created":true}"#);
    assert_eq!(r.header("content-length"), Some("16"));
}

#[test]
fn static_descriptor_defaults() {
    let s = server();
    let r = get(s.addr(), "/defaults");
    assert_eq!(r.status, 200, "default status");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain"),
        "default headers"
    );
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());
}

#[test]
fn demo_routes_from_embedded_init_sql() {
    let s = Server::start_with_demo(&[]);
    assert!(
        s.db_path().exists(),
        "server should have created the db file from init.sql"
    );
    let r = get(s.addr(), "/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!\n"));
    assert_eq!(r.header("content-type"), Some("text/plain"));

    let r = get(s.addr(), "/");
    assert_eq!((r.status, r.text().as_str()), (200, "corefn is running\n"));

    let r = get(s.addr(), "/api/status");
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = send(
        s.addr(),
        b"POST /api/echo-static HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!((r.status, r.text().as_str()), (201, r#"{"created":true}"#));
    assert_eq!(r.header("content-type"), Some("application/json"));

    for path in ["/static", "/static/x/y.css"] {
        let r = get(s.addr(), path);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "static prefix route\n"),
            "GET {path}"
        );
    }
    let listed = routes_json(s.addr())["routes"]
        .as_array()
        .expect("routes array")
        .len() as u64;
    assert!(listed >= 5, "at least the five demo routes are listed");
    assert_eq!(
        s.readiness().field("routes"),
        Some(listed),
        "readiness line counts the routes /_/routes lists"
    );
}

/// The demo routes go only into a store corefn creates: an existing
/// database without a route table gets the schema, and no routes it did
/// not ask for.
#[test]
fn db_file_without_functions_table_gets_the_schema_but_no_demo_routes() {
    let dir = crate::common::tempdir().expect("tempdir");
    let db = dir.path().join("empty.db");
    {
        let c = rusqlite::Connection::open(&db).expect("create empty sqlite file");
        c.execute_batch("CREATE TABLE unrelated(x INTEGER)")
            .expect("create unrelated table");
    }
    let s = Server::start_with_db(dir, db, &[]);
    assert_eq!(get(s.addr(), "/hello").status, 404);
    assert_eq!(s.readiness().field("routes"), Some(0));
    let tables: i64 = rusqlite::Connection::open(s.db_path())
        .expect("open")
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('functions', 'unrelated')",
            [],
            |row| row.get(0),
        )
        .expect("count tables");
    assert_eq!(tables, 2, "the route table was made next to what was there");
}
