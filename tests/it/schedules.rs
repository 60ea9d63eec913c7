//! Cron schedules: a schedule fires through the data path (its calls show
//! in the function's logs and stats under their own request ids), overlap
//! `skip` counts the ticks it skips, and bad schedules are refused.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::control::ControlServer;
use crate::common::*;

fn deploy_python(s: &ControlServer, name: &str, code: &str) {
    let r = s.deploy_json(&json!({"name": name, "runtime": "python", "code": code}));
    assert_eq!(r.status, 201, "{}", r.text());
}

fn schedule(s: &ControlServer, body: Value) -> Value {
    let r = s.admin("POST", "/schedules", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["schedule"].clone()
}

fn schedule_now(s: &ControlServer, id: i64) -> Value {
    let r = get(s.server.addr(), &format!("/_/api/v1/schedules/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["schedule"].clone()
}

/// Waits (bounded) until the schedule's `field` reaches `at_least`.
fn wait_for_count(s: &ControlServer, id: i64, field: &str, at_least: u64) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(Duration::from_secs(40), || {
        last = schedule_now(s, id);
        last[field].as_u64().unwrap_or(0) >= at_least
    });
    assert!(
        reached.is_some(),
        "{field} did not reach {at_least}: {last}"
    );
    last
}

#[test]
fn an_every_second_schedule_fires_through_the_data_path() {
    let s = ControlServer::start();
    deploy_python(
        &s,
        "tick",
        "def handle(request):\n    print('tick', request.method)\n    return (200, {}, 'ok')\n",
    );
    let created = schedule(&s, json!({"function": "tick", "cron": "@every 1s"}));
    let id = created["id"].as_i64().expect("id");
    assert_eq!(created["overlap"], "skip", "{created}");
    assert_eq!(created["runs"], 0, "{created}");
    assert!(created["next_run"].is_string(), "{created}");
    let listed = get(s.server.addr(), "/_/api/v1/schedules?function=tick").json();
    assert_eq!(listed["schedules"][0]["id"], id, "{listed}");

    wait_for_count(&s, id, "runs", 1);
    let routes_version = get(s.server.addr(), "/_/health").json()["version"].clone();
    let seen = wait_for_count(&s, id, "runs", 3);
    // A run's bookkeeping is a commit to the database, but not a change of
    // the routes: the route table is not published again for it.
    assert_eq!(
        get(s.server.addr(), "/_/health").json()["version"],
        routes_version
    );
    assert_eq!(seen["last_status"], 200, "{seen}");
    assert!(seen["last_run"].is_string(), "{seen}");
    assert!(seen["last_duration_ms"].as_f64().is_some(), "{seen}");
    assert_eq!(seen["skipped"], 0, "{seen}");

    // Each run is a call like any other: logged under its own request id,
    // counted in the function's stats.
    let logs = get(s.server.addr(), "/_/api/v1/functions/tick/logs?tail=200").text();
    let prefix = format!("cron-{id}-");
    let ids: std::collections::BTreeSet<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["text"].as_str().is_some_and(|t| t.contains("tick POST")))
        .filter_map(|l| l["request_id"].as_str().map(str::to_string))
        .collect();
    assert!(ids.len() >= 3, "{logs}");
    assert!(ids.iter().all(|i| i.starts_with(&prefix)), "{ids:?}");
    let stats = get(s.server.addr(), "/_/api/v1/functions/tick/stats").json();
    assert!(stats["count"].as_u64().unwrap_or(0) >= 3, "{stats}");

    let r = s.admin("DELETE", &format!("/schedules/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(s.server.addr(), &format!("/_/api/v1/schedules/{id}"));
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn overlapping_ticks_are_skipped_and_counted() {
    let s = ControlServer::start();
    deploy_python(
        &s,
        "slow",
        "import time\ndef handle(request):\n    time.sleep(2.5)\n    return (200, {}, 'done')\n",
    );
    let id = schedule(
        &s,
        json!({"function": "slow", "cron": "@every 1s", "overlap": "skip"}),
    )["id"]
        .as_i64()
        .expect("id");
    // Each run takes 2.5 s against a 1 s timetable: ticks fall while a run
    // goes, and `skip` counts them instead of starting a second call.
    let seen = wait_for_count(&s, id, "skipped", 2);
    let seen = wait_for_count(&s, id, "runs", 1.max(seen["runs"].as_u64().unwrap_or(0)));
    assert_eq!(seen["last_status"], 200, "{seen}");
    assert!(
        seen["last_duration_ms"].as_f64().unwrap_or(0.0) >= 2500.0,
        "{seen}"
    );
}

#[test]
fn bad_schedules_are_refused_with_a_reason() {
    let s = ControlServer::start();
    deploy_python(
        &s,
        "fine",
        "def handle(request):\n    return (200, {}, 'ok')\n",
    );
    for (body, status, says) in [
        (
            json!({"function": "fine", "cron": "61 * * * *"}),
            400,
            "not valid",
        ),
        (
            json!({"function": "fine", "cron": "* * * *"}),
            400,
            "5 fields",
        ),
        (
            json!({"function": "fine", "cron": "@every 0s"}),
            400,
            "@every",
        ),
        (
            json!({"function": "fine", "cron": "@every 1s", "overlap": "maybe"}),
            400,
            "overlap",
        ),
        (
            json!({"function": "fine", "cron": "@hourly", "path": "no-slash"}),
            400,
            "path",
        ),
        (
            json!({"function": "nobody", "cron": "@hourly"}),
            404,
            "nobody",
        ),
        (json!({"cron": "@hourly"}), 400, "function"),
    ] {
        let r = s.admin("POST", "/schedules", Some(&body));
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(message.contains(says), "{body}: {message}");
    }
    let r = s.call(
        "POST",
        "/schedules",
        None,
        Some(&json!({"function": "fine", "cron": "@hourly"})),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let r = s.admin("DELETE", "/schedules/999", None);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(s.server.addr(), "/_/api/v1/schedules/abc");
    assert_eq!(r.status, 404, "{}", r.text());
    let listed = get(s.server.addr(), "/_/api/v1/schedules").json();
    assert_eq!(listed["schedules"], json!([]), "{listed}");
}

#[test]
fn deleting_a_function_deletes_its_schedules() {
    let s = ControlServer::start();
    deploy_python(
        &s,
        "gone",
        "def handle(request):\n    return (200, {}, 'ok')\n",
    );
    let id = schedule(&s, json!({"function": "gone", "cron": "0 * * * *"}))["id"]
        .as_i64()
        .expect("id");
    let r = s.admin("DELETE", "/functions/gone", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(s.server.addr(), &format!("/_/api/v1/schedules/{id}"));
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_tick_missed_while_down_runs_once_at_start_and_a_new_schedule_waits() {
    // The table as a stopped corefn left it: a yearly schedule that last ran
    // over a year ago (its tick fell while corefn was down), and one that
    // never ran. Written by hand, as the sqlite3 shell would.
    let dir = crate::common::tempdir().expect("tempdir");
    let db = dir.path().join("corefn.db");
    {
        let mut conn = rusqlite::Connection::open(&db).expect("open");
        corefn::schema::migrate(&mut conn).expect("migrate");
        let long_ago_us = (now_secs() - 400 * 24 * 3600) * 1_000_000;
        conn.execute_batch(&format!(
            "INSERT INTO functions VALUES ('POST:/fn/yearly', '{{\"runtime\":\"static\",\"body\":\"caught up\\n\"}}', 1);
             INSERT INTO schedules (id, function, cron, created, last_run_us)
                 VALUES (1, 'yearly', '0 0 1 1 *', 1, {long_ago_us});
             INSERT INTO schedules (id, function, cron, created) VALUES (2, 'yearly', '0 0 1 1 *', 1);"
        ))
        .expect("rows");
    }
    let cwd = crate::common::tempdir().expect("tempdir");
    let server = Server::start_with_db(cwd, db.clone(), &[]);
    let runs_of = |id: i64| -> (i64, Option<i64>) {
        rusqlite::Connection::open(&db)
            .expect("open")
            .query_row(
                "SELECT runs, last_status FROM schedules WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("row")
    };
    let caught_up = wait_until(Duration::from_secs(20), || runs_of(1).0 >= 1);
    assert!(caught_up.is_some(), "{:?}", runs_of(1));
    assert_eq!(runs_of(1), (1, Some(200)));
    // Both were armed at the same first read of the table: the one that
    // never ran waits for its next tick (next 1 January).
    assert_eq!(runs_of(2), (0, None));
    drop(server);
}
