//! Invalid rows are skipped and reported; valid routes keep serving.

use crate::common::*;
use std::time::Duration;

fn invalid_rows() -> Vec<(&'static str, String)> {
    let ok = static_route("should not be served");
    vec![
        ("NOCOLON", ok.clone()),
        ("FETCH:/unknown-method", ok.clone()),
        ("GET:no-leading-slash", ok.clone()),
        ("GET:/not-json", "this is not json".to_string()),
        (
            "GET:/unknown-key",
            r#"{"runtime":"static","body":"x","bogus":1}"#.to_string(),
        ),
        ("GET:/unknown-runtime", r#"{"runtime":"cobol"}"#.to_string()),
        (
            "GET:/bad-status",
            r#"{"runtime":"static","status":999}"#.to_string(),
        ),
        ("GET:/_/evil", static_route("evil admin override")),
    ]
}

fn skipped(s: &Server) -> Vec<(String, String)> {
    let j = routes_json(s.addr());
    j["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("/_/routes has no skipped array: {j}"))
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn start() -> Server {
    let bad = invalid_rows();
    let valid = static_route("valid route");
    let mut rows: Vec<(&str, &str)> = vec![("GET:/valid", valid.as_str())];
    rows.extend(bad.iter().map(|(k, v)| (*k, v.as_str())));
    Server::start(&rows, &[])
}

#[test]
fn valid_route_served_despite_invalid_rows() {
    let s = start();
    let r = get(s.addr(), "/valid");
    assert_eq!((r.status, r.text().as_str()), (200, "valid route"));
    for path in [
        "/not-json",
        "/unknown-key",
        "/unknown-runtime",
        "/bad-status",
    ] {
        assert_eq!(
            get(s.addr(), path).status,
            404,
            "skipped row {path} must not be served"
        );
    }
    let r = get(s.addr(), "/_/evil");
    assert_ne!(
        r.text(),
        "evil admin override",
        "rows under /_/ must not be served"
    );
    assert_ne!(r.status, 200, "/_/evil is not an admin endpoint");
    let r = get(s.addr(), "/_/health");
    assert_eq!(r.status, 200, "admin endpoints still work");
}

#[test]
fn invalid_rows_listed_in_skipped_with_reasons() {
    let s = start();
    let skipped = skipped(&s);
    for (key, _) in invalid_rows() {
        let entry = skipped.iter().find(|(k, _)| k == key);
        let (_, reason) =
            entry.unwrap_or_else(|| panic!("{key:?} missing from skipped: {skipped:?}"));
        assert!(!reason.trim().is_empty(), "{key:?} has an empty reason");
    }
    assert!(
        !skipped.iter().any(|(k, _)| k == "GET:/valid"),
        "valid route listed as skipped"
    );
    let j = routes_json(s.addr());
    let keys: Vec<&str> = j["routes"]
        .as_array()
        .expect("routes array")
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert_eq!(keys, ["GET:/valid"], "only the valid row is a route");
    assert_eq!(
        s.readiness().field("routes"),
        Some(1),
        "readiness line counts valid routes only"
    );
}

#[test]
fn invalid_rows_reported_on_stderr() {
    let s = start();
    let missing = || -> Vec<&'static str> {
        let err = s.stderr_lines().join("\n");
        invalid_rows()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !err.contains(k))
            .collect()
    };
    let ok = wait_until(Duration::from_secs(2), || missing().is_empty());
    assert!(
        ok.is_some(),
        "stderr does not mention {:?}; stderr was:\n{}",
        missing(),
        s.stderr_lines().join("\n")
    );
}

#[test]
fn invalid_row_inserted_while_serving_is_skipped_without_disturbing_others() {
    let s = start();
    let db = s.db_path().to_path_buf();
    // One bad and one good row in the same transaction.
    insert_routes(
        &db,
        &[
            ("GET:/later-bad", "{not json"),
            ("GET:/later-good", &static_route("later good")),
        ],
    );
    let t = wait_until(Duration::from_secs(5), || {
        // The valid route keeps serving the whole time.
        let r = get(s.addr(), "/valid");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "valid route"),
            "valid route disturbed by an invalid insert"
        );
        skipped(&s)
            .iter()
            .any(|(k, r)| k == "GET:/later-bad" && !r.trim().is_empty())
    })
    .expect("row inserted while serving never showed up in skipped");
    eprintln!("invalid insert reported after {} ms", t.as_millis());
    // Each core adopts the new table on its own: poll over fresh connections.
    let good = wait_until(Duration::from_secs(5), || {
        (0..4).all(|_| {
            matches!(try_get(s.addr(), "/later-good"),
                Ok(r) if r.status == 200 && r.text() == "later good")
        })
    });
    assert!(
        good.is_some(),
        "a valid row in the same change must still be published"
    );
    assert_eq!(get(s.addr(), "/later-bad").status, 404);
    assert_eq!(get(s.addr(), "/valid").text(), "valid route");
    let reported = wait_until(Duration::from_secs(2), || {
        s.stderr_lines()
            .iter()
            .any(|l| l.contains("GET:/later-bad"))
    });
    assert!(reported.is_some(), "stderr does not mention GET:/later-bad");
}

#[test]
fn valid_route_turned_invalid_is_skipped_and_others_keep_serving() {
    let s = Server::start(
        &[
            ("GET:/stays", &static_route("stays")),
            ("GET:/breaks", &static_route("works for now")),
        ],
        &[],
    );
    assert_eq!(get(s.addr(), "/breaks").text(), "works for now");
    update_route(
        s.db_path(),
        "GET:/breaks",
        r#"{"runtime":"static","status":"nope"}"#,
    );
    wait_until(Duration::from_secs(5), || {
        skipped(&s).iter().any(|(k, _)| k == "GET:/breaks")
    })
    .expect("row made invalid never showed up in skipped");
    assert_eq!(get(s.addr(), "/stays").text(), "stays");
    // Each core adopts the new table on its own: poll over fresh connections.
    let gone = wait_until(Duration::from_secs(5), || {
        (0..4).all(|_| matches!(try_get(s.addr(), "/breaks"), Ok(r) if r.text() != "works for now"))
    });
    assert!(
        gone.is_some(),
        "an invalid row must not keep serving its old descriptor"
    );
    assert_eq!(get(s.addr(), "/stays").text(), "stays");
}

/// Rows whose columns break the table's types: a BLOB descriptor, a key
/// that is not UTF-8, an `updated` that is not an integer.
const BAD_TYPED_ROWS: &str = "
    INSERT INTO functions VALUES ('GET:/blob', x'7b7d', 1);
    INSERT INTO functions VALUES (CAST(x'2f2fff' AS TEXT), '{}', 1);
    INSERT INTO functions VALUES ('GET:/when', '{}', 'yesterday');";

fn assert_bad_typed_rows_skipped(s: &Server) {
    let expected = [
        ("GET:/blob", "v is a BLOB, not TEXT"),
        ("//\u{fffd}", "k is not valid UTF-8"),
        ("GET:/when", "updated is TEXT, not an INTEGER"),
    ];
    // Each core takes a new table up on its own tick: the core a request
    // lands on may be a few milliseconds behind the one that served.
    let mut last = Vec::new();
    let listed = wait_until(Duration::from_secs(5), || {
        last = skipped(s);
        expected
            .iter()
            .all(|(key, reason)| last.iter().any(|(k, r)| k == key && r == reason))
    });
    assert!(listed.is_some(), "{expected:?} not all among {last:?}");
}

#[test]
fn rows_of_the_wrong_type_are_skipped_and_never_freeze_later_changes() {
    let s = Server::start(&[("GET:/valid", &static_route("valid route"))], &[]);
    let db = rusqlite::Connection::open(s.db_path()).expect("open the route db");
    db.execute_batch(BAD_TYPED_ROWS).expect("insert bad rows");
    // A change after them is served: the bad rows do not stop the table.
    db.execute(
        "INSERT INTO functions VALUES ('GET:/later', ?1, ?2)",
        rusqlite::params![static_route("later route"), now_secs()],
    )
    .expect("insert a good row");
    let served = wait_until(Duration::from_secs(5), || {
        get(s.addr(), "/later").text() == "later route"
    });
    assert!(served.is_some(), "a route added after bad rows is served");
    assert_bad_typed_rows_skipped(&s);
    assert_eq!(get(s.addr(), "/valid").text(), "valid route");
    assert_eq!(get(s.addr(), "/blob").status, 404);
    // And a later delete is applied too.
    db.execute("DELETE FROM functions WHERE k = 'GET:/later'", [])
        .expect("delete");
    let gone = wait_until(Duration::from_secs(5), || {
        get(s.addr(), "/later").status == 404
    });
    assert!(gone.is_some(), "a delete after bad rows is applied");
}

#[test]
fn rows_of_the_wrong_type_at_start_are_skipped_and_the_rest_served() {
    let dir = crate::common::tempdir().expect("tempdir");
    let db = dir.path().join("routes.db");
    create_db(&db, &[("GET:/valid", &static_route("valid route"))]);
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute_batch(BAD_TYPED_ROWS)
        .expect("insert bad rows");
    let s = Server::start_with_db(dir, db, &[]);
    assert_eq!(get(s.addr(), "/valid").text(), "valid route");
    assert_bad_typed_rows_skipped(&s);
    // Counted where a dashboard sees it, too.
    let metrics = get(s.addr(), "/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "corefn_route_table_skipped_rows 3"),
        "{metrics}"
    );
}

#[test]
fn an_env_value_with_nul_is_skipped_when_read_and_refused_on_deploy() {
    let row = r#"{"runtime":"python","module":"f.py","env":{"K":"a\u0000b"}}"#;
    let s = Server::start(
        &[
            ("GET:/valid", &static_route("valid route")),
            ("GET:/nul-env", row),
        ],
        &[],
    );
    assert!(
        skipped(&s)
            .iter()
            .any(|(k, r)| k == "GET:/nul-env" && r.contains("env value of \"K\" contains NUL")),
        "{:?}",
        skipped(&s)
    );
    assert_eq!(get(s.addr(), "/nul-env").status, 404);

    let control = crate::common::control::ControlServer::start();
    let r = control.deploy_json(&serde_json::json!({
        "name": "nulenv", "runtime": "python",
        "code": "def handle(request):\n    return (200, {}, 'x')\n",
        "config": {"env": {"K": "a\u{0}b"}},
    }));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("contains NUL"), "{}", r.text());
}

/// Rows whose code would come from outside --functions-dir and the
/// artifact store: a `..` path, an absolute path (`/bin/sh` would run the
/// request body as a script).
#[test]
fn module_paths_that_leave_the_functions_dir_are_skipped_unless_trusted() {
    let exec = |module: &str| serde_json::json!({"runtime": "exec", "module": module}).to_string();
    let rows = [
        ("GET:/climb", exec("../outside/run.sh")),
        ("POST:/sh", exec("/bin/sh")),
        ("GET:/inside", exec("inside.sh")),
    ];
    let routes: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start(&routes, &[]);
    let refused = skipped(&s);
    for (key, says) in [
        ("GET:/climb", "climbs out of its directory"),
        ("POST:/sh", "outside the artifact store"),
    ] {
        assert!(
            refused.iter().any(|(k, r)| k == key && r.contains(says)),
            "{key}: {says} not among {refused:?}"
        );
    }
    assert!(
        !refused.iter().any(|(k, _)| k == "GET:/inside"),
        "{refused:?}"
    );
    let r = send(
        s.addr(),
        b"POST /sh HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 9\r\n\r\necho pwn\n",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        s.stderr_lines()
            .iter()
            .any(|l| l.contains("POST:/sh") && l.contains("artifact store")),
        "reported on stderr: {:?}",
        s.stderr_lines()
    );

    // A trusted setup may say so.
    let trusted = Server::start(&routes, &["--trust-module-paths"]);
    let trusted_skipped = skipped(&trusted);
    assert!(trusted_skipped.is_empty(), "{trusted_skipped:?}");
}
