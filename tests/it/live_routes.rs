//! Route changes written by another SQLite connection are served live.

use crate::common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(5);

/// True if `n` requests, each on a fresh connection (so they spread over the
/// per-core listeners), all get `want`.
fn all_fresh_connections_see(
    s: &Server,
    path: &str,
    n: usize,
    want: &dyn Fn(&Response) -> bool,
) -> bool {
    (0..n).all(|_| matches!(try_get(s.addr(), path), Ok(r) if want(&r)))
}

fn version(s: &Server) -> u64 {
    routes_json(s.addr())["version"]
        .as_u64()
        .expect("/_/routes version is an unsigned integer")
}

/// Polls /_/routes (over fresh connections, so every core is asked) until
/// the version is above `prev`.
fn wait_until_version_above(s: &Server, prev: u64, what: &str) -> u64 {
    let mut last = prev;
    wait_until(LIMIT, || {
        let vs: Vec<u64> = (0..4).map(|_| version(s)).collect();
        last = vs.iter().copied().min().unwrap_or(prev);
        last > prev
    })
    .unwrap_or_else(|| panic!("/_/routes version did not grow on {what}: {prev} -> {last}"));
    last
}

#[test]
fn insert_update_delete_are_served_live() {
    let s = Server::start(&[("GET:/existing", &static_route("existing"))], &[]);
    let db = s.db_path().to_path_buf();
    let v0 = version(&s);
    assert_eq!(get(s.addr(), "/live").status, 404, "route not there yet");

    insert_route(&db, "GET:/live", &static_route("version one"));
    let t_insert = wait_until(LIMIT, || {
        all_fresh_connections_see(&s, "/live", 6, &|r| {
            r.status == 200 && r.text() == "version one"
        })
    })
    .expect("inserted route not served within 5 s");
    eprintln!("insert visible after {} ms", t_insert.as_millis());
    let v1 = wait_until_version_above(&s, v0, "insert");
    assert_eq!(get(s.addr(), "/existing").text(), "existing");

    update_route(&db, "GET:/live", &static_route("version two"));
    let t_update = wait_until(LIMIT, || {
        all_fresh_connections_see(&s, "/live", 6, &|r| {
            r.status == 200 && r.text() == "version two"
        })
    })
    .expect("changed route body not served within 5 s");
    eprintln!("update visible after {} ms", t_update.as_millis());
    let v2 = wait_until_version_above(&s, v1, "change");

    delete_route(&db, "GET:/live");
    let t_delete = wait_until(LIMIT, || {
        all_fresh_connections_see(&s, "/live", 6, &|r| r.status == 404)
    })
    .expect("deleted route still served after 5 s");
    eprintln!("delete visible after {} ms", t_delete.as_millis());
    let v3 = wait_until_version_above(&s, v2, "delete");
    eprintln!("route table versions: {v0} -> {v1} -> {v2} -> {v3}");

    assert_eq!(
        get(s.addr(), "/existing").text(),
        "existing",
        "other routes unaffected"
    );
    let keys = |s: &Server| -> Vec<String> {
        routes_json(s.addr())["routes"]
            .as_array()
            .expect("routes array")
            .iter()
            .filter_map(|r| r["key"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(keys(&s), ["GET:/existing"], "route list after delete");
}

#[test]
fn change_seen_on_an_already_open_keep_alive_connection() {
    let s = Server::start(&[("GET:/ka", &static_route("before"))], &[]);
    let mut c = Conn::connect(s.addr());
    c.write(get_req("/ka").as_bytes());
    assert_eq!(c.read_response().text(), "before");
    update_route(s.db_path(), "GET:/ka", &static_route("after"));
    let t = wait_until(LIMIT, || {
        c.write(get_req("/ka").as_bytes());
        c.read_response().text() == "after"
    })
    .expect("open connection never saw the new body");
    eprintln!("change seen on open connection after {} ms", t.as_millis());
}

#[test]
fn health_version_grows_with_changes() {
    let s = Server::start(&[("GET:/x", &static_route("x"))], &[]);
    let health = |s: &Server| -> u64 {
        let r = get(s.addr(), "/_/health");
        assert_eq!(r.status, 200);
        r.json()["version"].as_u64().expect("health version")
    };
    let h0 = health(&s);
    insert_route(s.db_path(), "GET:/y", &static_route("y"));
    let t = wait_until(LIMIT, || health(&s) > h0).expect("health version did not grow");
    eprintln!("health version grew after {} ms", t.as_millis());
    wait_until(LIMIT, || {
        all_fresh_connections_see(&s, "/y", 4, &|r| r.text() == "y")
    })
    .expect("/y not served on every core");
}

#[test]
fn burst_of_changes_settles_on_final_state() {
    let s = Server::start(&[("GET:/base", &static_route("base"))], &[]);
    let db = s.db_path().to_path_buf();
    for i in 0..20 {
        insert_route(
            &db,
            &format!("GET:/burst/{i}"),
            &static_route(&format!("burst {i}")),
        );
    }
    for i in 0..20 {
        update_route(
            &db,
            &format!("GET:/burst/{i}"),
            &static_route(&format!("final {i}")),
        );
    }
    for i in (0..20).step_by(2) {
        delete_route(&db, &format!("GET:/burst/{i}"));
    }
    let t = wait_until(LIMIT, || {
        (0..20).all(|i| match try_get(s.addr(), &format!("/burst/{i}")) {
            Ok(r) if i % 2 == 0 => r.status == 404,
            Ok(r) => r.status == 200 && r.text() == format!("final {i}"),
            Err(_) => false,
        })
    })
    .expect("burst of changes not reflected within 5 s");
    eprintln!("burst of 50 writes settled after {} ms", t.as_millis());
    let routes = routes_json(s.addr());
    assert_eq!(
        routes["routes"].as_array().expect("routes array").len(),
        11,
        "base + 10 remaining burst routes: {routes}"
    );
}

fn early_insert_round(label: &str) {
    let dir = crate::common::tempdir().expect("tempdir");
    let db = dir.path().join("corefn.db");
    create_db(&db, &[("GET:/base", &static_route("base"))]);
    // Open the writer before the server starts so the commit lands as soon
    // as possible after the readiness line.
    let writer = rusqlite::Connection::open(&db).expect("open writer connection");
    writer
        .busy_timeout(Duration::from_secs(5))
        .expect("busy_timeout");
    let v = static_route("early bird");
    let s = Server::start_with_db(dir, db, &[]);
    writer
        .execute(
            "INSERT INTO functions(k, v, updated) VALUES ('GET:/early', ?1, ?2)",
            rusqlite::params![v, now_secs()],
        )
        .expect("insert right after readiness");
    let t = wait_until(
        Duration::from_secs(2),
        || matches!(try_get(s.addr(), "/early"), Ok(r) if r.status == 200 && r.text() == "early bird"),
    );
    let t = t.unwrap_or_else(|| {
        panic!(
            "{label}: route committed right after readiness never served; /_/routes: {}",
            routes_json(s.addr())
        )
    });
    eprintln!("{label}: early insert visible after {} ms", t.as_millis());
}

#[test]
fn change_committed_right_after_readiness_is_served() {
    // A writer may commit the moment the readiness line appears; that change
    // must not be lost (the watcher's baseline must not postdate the initial
    // load). Several servers start concurrently, repeatedly, because the
    // window is narrow.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..4 {
                    early_insert_round(&format!("thread {t} round {round}"));
                }
            })
        })
        .collect();
    let results: Vec<bool> = threads.into_iter().map(|h| h.join().is_ok()).collect();
    for (t, ok) in results.iter().enumerate() {
        assert!(
            ok,
            "thread {t}: an early change was lost (see its panic message above)"
        );
    }
}

/// An idle gateway's cores let their housekeeping doze (they would
/// otherwise look for a new table 200 times a second each); a core then
/// adopts the newest table before it serves. A route added while every core
/// dozes is answered by the first request, with no retry, both on a
/// connection kept alive through the doze and on fresh ones: a core
/// serving its dozing copy would answer 404.
#[test]
fn a_route_added_while_the_cores_doze_is_served_by_the_first_request() {
    let s = Server::start(&[("GET:/before", &static_route("before\n"))], &[]);
    let mut kept = Conn::connect(s.addr());
    kept.write(get_req("/before").as_bytes());
    assert_eq!(kept.read_response().status, 200);
    // Well past the 200 ms after which an idle core dozes.
    std::thread::sleep(Duration::from_millis(800));
    insert_route(s.db_path(), "GET:/added", &static_route("added\n"));
    // The watcher (every 5 ms) publishes it meanwhile; no request wakes a core.
    std::thread::sleep(Duration::from_millis(1000));
    kept.write(get_req("/added").as_bytes());
    let r = kept.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "added\n"),
        "the kept-alive connection's first request after the doze sees the new table"
    );
    for i in 0..8 {
        let r = get(s.addr(), "/added");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "added\n"),
            "fresh connection {i}: the first request after the doze sees the new table"
        );
    }
}

/// With the recheck a minute away, only the store's file events make a
/// quiet watcher look: a change by another writer after the watcher went
/// quiet is served, so is a second one after it went quiet again, and so
/// is a store renamed over the path.
#[test]
fn a_quiet_watcher_is_woken_by_the_store_files_changing() {
    let s = Server::start(
        &[("GET:/first", &static_route("first\n"))],
        &["--watch-recheck-ms", "60000"],
    );
    assert_eq!(get(s.addr(), "/first").status, 200);
    // Past the 200 ms the watcher polls for after a change.
    let quiet = Duration::from_millis(700);
    for path in ["/one", "/two"] {
        std::thread::sleep(quiet);
        insert_route(s.db_path(), &format!("GET:{path}"), &static_route(path));
        assert!(
            wait_until(LIMIT, || get(s.addr(), path).text() == path).is_some(),
            "{path}, inserted while the watcher was quiet, was not served: {:?}",
            s.stderr_lines()
        );
    }
    std::thread::sleep(quiet);
    let replacement = s.dir().join("new.db");
    create_db(&replacement, &[("GET:/renamed", &static_route("renamed"))]);
    std::fs::rename(&replacement, s.db_path()).expect("mv new.db over the store");
    assert!(
        wait_until(LIMIT, || get(s.addr(), "/renamed").text() == "renamed").is_some(),
        "a store renamed over the path while the watcher was quiet was not served: {:?}",
        s.stderr_lines()
    );
}
