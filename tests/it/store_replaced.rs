//! The route store replaced on disk while requests run: by rename
//! (`mv new.db corefn.db`), by delete and recreate, by truncation. Every
//! request meanwhile is answered from the last table (no error, no lost
//! connection), the new file's routes are served once it is there, the old
//! file's log never leaks into the new one, and each step is said on
//! stderr and shown in `/_/routes` and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::*;

const SWITCH_WAIT: Duration = Duration::from_secs(10);
/// The load stops by itself after this, whatever the test does.
const LOAD_LIMIT: Duration = Duration::from_secs(60);
const LOAD_CLIENTS: usize = 2;

/// Requests on fresh connections to a route both files have, from the
/// start of a test to its end: each must be a 200 with the route's body.
struct Steady {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<(u64, Vec<String>)>>,
}

impl Steady {
    fn start(s: &Server) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..LOAD_CLIENTS)
            .map(|_| {
                let stop = stop.clone();
                let addr = s.addr();
                thread::spawn(move || {
                    let started = Instant::now();
                    let (mut ok, mut wrong) = (0u64, Vec::new());
                    while !stop.load(Ordering::Acquire) && started.elapsed() < LOAD_LIMIT {
                        // Never a panic here: a failure is counted and
                        // shown by the test's own thread.
                        let answer =
                            Conn::try_connect(addr)
                                .map_err(|e| e.to_string())
                                .and_then(|mut c| {
                                    c.try_write(
                                    b"GET /steady HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                )
                                .map_err(|e| e.to_string())?;
                                    c.try_read_response(false)
                                });
                        match answer {
                            Ok(r) if r.status == 200 && r.text() == "steady" => ok += 1,
                            Ok(r) if wrong.len() < 10 => {
                                wrong.push(format!("{} {:?}", r.status, r.text()))
                            }
                            Err(e) if wrong.len() < 10 => wrong.push(e),
                            _ => {}
                        }
                    }
                    (ok, wrong)
                })
            })
            .collect();
        Steady { stop, clients }
    }

    /// Stops the clients; every answer they got was the steady one.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        let mut answered = 0;
        for client in std::mem::take(&mut self.clients) {
            let (ok, wrong) = client.join().expect("a load client panicked");
            assert!(wrong.is_empty(), "answers other than 200 steady: {wrong:?}");
            answered += ok;
        }
        assert!(answered > 0, "the load got no answer at all");
    }
}

impl Drop for Steady {
    /// A test that failed early still stops its clients.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn old_server() -> Server {
    Server::start(
        &[
            ("GET:/steady", &static_route("steady")),
            ("GET:/old", &static_route("old file")),
        ],
        &[],
    )
}

/// A store with the new file's routes at `path`.
fn create_new_store(path: &std::path::Path) {
    create_db(
        path,
        &[
            ("GET:/steady", &static_route("steady")),
            ("GET:/new", &static_route("new file")),
        ],
    );
}

fn store_status(s: &Server) -> serde_json::Value {
    get(s.addr(), "/_/routes").json()["store"].clone()
}

fn wait_for_state(s: &Server, state: &str) {
    assert!(
        wait_until(SWITCH_WAIT, || store_status(s)["state"] == state).is_some(),
        "the store never became {state:?}: {} / {:?}",
        store_status(s),
        s.stderr_lines()
    );
}

fn metric(s: &Server, name: &str) -> Option<f64> {
    get(s.addr(), "/metrics")
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Said on stderr (read by the harness's own thread, so waited for).
fn said(s: &Server, part: &str) -> bool {
    wait_until(SWITCH_WAIT, || {
        s.stderr_lines().iter().any(|line| line.contains(part))
    })
    .is_some()
}

fn sidecar(s: &Server, suffix: &str) -> std::path::PathBuf {
    corefn::schema::file::sidecar_path(s.db_path(), suffix)
}

/// The new file serves, live, and is a sound database holding its own
/// rows only.
fn check_switched(s: &Server, switches: f64) {
    // Each core takes the new table up on its own: wait for both answers.
    assert!(
        wait_until(SWITCH_WAIT, || {
            get(s.addr(), "/new").text() == "new file" && get(s.addr(), "/old").status == 404
        })
        .is_some(),
        "the new file's routes were never served: {:?}",
        s.stderr_lines()
    );
    let status = store_status(s);
    assert_eq!(status["state"], "open", "{status}");
    assert_eq!(status["switches"], switches, "{status}");
    assert_eq!(metric(s, "corefn_route_store_replaced"), Some(0.0));
    assert_eq!(
        metric(s, "corefn_route_store_switches_total"),
        Some(switches)
    );
    assert!(
        said(s, "switched to the new file"),
        "{:?}",
        s.stderr_lines()
    );

    let connection = rusqlite::Connection::open(s.db_path()).expect("open the store");
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    let keys: Vec<String> = connection
        .prepare("SELECT k FROM functions ORDER BY k")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .expect("route rows");
    assert_eq!(keys, ["GET:/new", "GET:/steady"]);

    // Changes to the new file are served like any other.
    connection
        .execute(
            "INSERT INTO functions(k, v, updated) VALUES ('GET:/later', ?1, 1)",
            [static_route("later")],
        )
        .expect("insert");
    assert!(
        wait_until(SWITCH_WAIT, || get(s.addr(), "/later").text() == "later").is_some(),
        "a change to the new file was not served"
    );
}

#[test]
fn a_store_replaced_by_rename_is_switched_to_while_requests_run() {
    let s = old_server();
    let load = Steady::start(&s);
    let replacement = s.dir().join("new.db");
    create_new_store(&replacement);
    std::fs::rename(&replacement, s.db_path()).expect("mv new.db over the store");
    check_switched(&s, 1.0);
    assert!(said(&s, "now names another file"), "{:?}", s.stderr_lines());
    load.finish();
}

#[test]
fn a_store_deleted_keeps_serving_and_a_recreated_one_is_switched_to() {
    let s = old_server();
    let load = Steady::start(&s);
    std::fs::remove_file(s.db_path()).expect("rm the store");
    wait_for_state(&s, "gone");
    assert!(said(&s, "is gone"), "{:?}", s.stderr_lines());
    assert_eq!(get(s.addr(), "/old").text(), "old file");
    assert_eq!(metric(&s, "corefn_route_store_replaced"), Some(1.0));
    // The old file's log and index went with it: a new file at the path
    // cannot be read through them.
    assert!(!sidecar(&s, "-wal").exists() && !sidecar(&s, "-shm").exists());
    // The control plane says why it cannot answer, instead of writing to
    // a file nobody can see.
    let refused = get(s.addr(), "/_/api/v1/functions");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("is gone"), "{}", refused.text());

    create_new_store(s.db_path());
    check_switched(&s, 1.0);
    // A store without keys gets an admin key, written where the first was.
    assert!(
        said(&s, "no admin key: created one"),
        "{:?}",
        s.stderr_lines()
    );
    let key_file = s.db_path().with_extension("admin-key");
    let key = std::fs::read_to_string(&key_file).expect("admin key file");
    let listed = send(
        s.addr(),
        format!(
            "GET /_/api/v1/functions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
             Connection: close\r\n\r\n",
            key.trim()
        )
        .as_bytes(),
    );
    assert_eq!(listed.status, 200, "{}", listed.text());
    load.finish();
}

#[test]
fn a_store_truncated_keeps_serving_untouched_until_a_store_is_written_into_it() {
    let s = old_server();
    let load = Steady::start(&s);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(s.db_path())
        .expect("truncate the store");
    wait_for_state(&s, "emptied");
    assert!(said(&s, "was emptied"), "{:?}", s.stderr_lines());
    assert_eq!(get(s.addr(), "/old").text(), "old file");
    assert_eq!(metric(&s, "corefn_route_store_replaced"), Some(1.0));
    // Nothing of the old file's log is written back into the emptied one.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::metadata(s.db_path()).expect("the store").len(),
        0,
        "the emptied file was written into"
    );
    assert!(!sidecar(&s, "-wal").exists() && !sidecar(&s, "-shm").exists());

    // A store written into the same file (cp new.db corefn.db).
    let replacement = s.dir().join("new.db");
    create_new_store(&replacement);
    let bytes = std::fs::read(&replacement).expect("new store bytes");
    std::fs::write(s.db_path(), bytes).expect("write the new store in place");
    check_switched(&s, 1.0);
    load.finish();
}

/// A file at the path that is not a store is reported and never served
/// or written; the last table keeps serving until a store replaces it.
#[test]
fn a_file_that_is_not_a_store_is_reported_and_the_last_routes_keep_serving() {
    let s = old_server();
    let garbage = s.dir().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).expect("write garbage");
    std::fs::rename(&garbage, s.db_path()).expect("mv garbage over the store");
    assert!(
        wait_until(SWITCH_WAIT, || !store_status(&s)["detail"].is_null()).is_some(),
        "a bad file was not reported: {}",
        store_status(&s)
    );
    let status = store_status(&s);
    assert_eq!(status["state"], "replaced", "{status}");
    assert!(
        said(&s, "the new file is not usable"),
        "{:?}",
        s.stderr_lines()
    );
    assert_eq!(get(s.addr(), "/old").text(), "old file");
    assert_eq!(
        std::fs::read(s.db_path()).expect("the file"),
        vec![b'x'; 8192],
        "the bad file was written into"
    );

    let replacement = s.dir().join("new.db");
    create_new_store(&replacement);
    std::fs::rename(&replacement, s.db_path()).expect("mv new.db over it");
    check_switched(&s, 1.0);
}
