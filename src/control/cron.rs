//! The cron thread: fires the stored schedules (`registry::schedules`)
//! through the normal data path. A run is an HTTP request to the gateway's
//! own listener over loopback, so routing, the version alias, admission,
//! rate limits, stats and function logs apply to it as to any call, and it
//! carries a request id of its own (`cron-<schedule>-<tick>`).
//!
//! The table is read again every second, so a schedule made or deleted by
//! any writer (the API, the CLI, the sqlite3 shell) is seen within one.
//! Missed ticks are not replayed: after a stop, a schedule whose tick fell
//! while corefn was down runs once at start when `--schedule-catch-up` is on
//! (the default), then keeps its timetable.
//!
//! Runs happen on threads of their own, at most [`RUNS_IN_FLIGHT_MAX`]; a
//! tick over that bound, or one that overlaps its schedule's previous run
//! under `overlap: skip`, is skipped and counted. Never runs on a core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::loopback::{self, LoopbackError};
use crate::clock;
use crate::registry::schedules::{self, Overlap, Schedule, Timetable};
use crate::schema::file::{SharedStore, StoreHandle};

/// Scheduled runs going at once, over every schedule.
pub const RUNS_IN_FLIGHT_MAX: usize = 64;
/// How often the table is read again (and the resolution of a tick).
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// A scheduled call's bound, after connecting.
const CALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where and how the cron thread runs.
pub struct CronSettings {
    pub store: Arc<SharedStore>,
    /// The gateway's listener, as a loopback client reaches it.
    pub gateway: SocketAddr,
    pub catch_up: bool,
}

/// A schedule the thread knows: its timetable and its next tick.
struct Armed {
    cron: String,
    timetable: Timetable,
    next_tick_us: Option<u64>,
    running: Arc<AtomicBool>,
}

/// What a run reports back to the thread, which alone writes the table.
struct RunDone {
    id: i64,
    started_unix_us: u64,
    status: u16,
    duration_us: u64,
}

pub fn start(settings: CronSettings) -> std::io::Result<thread::JoinHandle<()>> {
    let store = settings
        .store
        .handle(|connection| connection.busy_timeout(Duration::from_secs(5)))
        .map_err(std::io::Error::other)?;
    thread::Builder::new()
        .name("corefn-cron".into())
        .spawn(move || run(&store, settings))
}

fn run(store: &StoreHandle, settings: CronSettings) {
    let mut armed: HashMap<i64, Armed> = HashMap::new();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel::<RunDone>();
    // The table as last read: what a due tick sends (method, path, body).
    let mut stored: HashMap<i64, Schedule> = HashMap::new();
    let mut first_load = true;
    let mut last_reload: Option<Instant> = None;
    let mut last_error: Option<String> = None;
    loop {
        if last_reload.is_none_or(|at| at.elapsed() >= RELOAD_INTERVAL) {
            let listed = with_store(store, |connection| schedules::list(connection, None));
            match listed {
                Ok(list) => {
                    arm(&mut armed, &list, first_load && settings.catch_up);
                    first_load = false;
                    stored = list.into_iter().map(|s| (s.id, s)).collect();
                    last_error = None;
                }
                // Said once: a store being switched is retried each second.
                Err(error) if last_error.as_ref() != Some(&error) => {
                    eprintln!("corefn: cron: cannot read the schedules: {error}");
                    last_error = Some(error);
                }
                Err(_) => {}
            }
            last_reload = Some(Instant::now());
        }
        let now_us = clock::unix_now_us();
        for (id, entry) in armed.iter_mut() {
            let Some(tick_us) = entry.next_tick_us else {
                continue;
            };
            if tick_us > now_us {
                continue;
            }
            entry.next_tick_us = entry.timetable.next_after_us(now_us);
            let Some(schedule) = stored.get(id) else {
                continue;
            };
            let overlaps = entry.running.load(Ordering::Acquire);
            let full = in_flight.load(Ordering::Acquire) >= RUNS_IN_FLIGHT_MAX;
            if (overlaps && schedule.overlap == Overlap::Skip) || full {
                let recorded =
                    with_store(store, |connection| schedules::record_skip(connection, *id));
                if let Err(error) = recorded {
                    eprintln!("corefn: cron: cannot count a skipped tick of {id}: {error}");
                }
                continue;
            }
            let call = ScheduledCall {
                id: *id,
                request_id: format!("cron-{id}-{tick_us}"),
                method: schedule.method.clone(),
                target: format!("/fn/{}{}", schedule.function, schedule.path)
                    .trim_end_matches('/')
                    .to_string(),
                body: schedule.body.clone().into_bytes(),
            };
            entry.running.store(true, Ordering::Release);
            in_flight.fetch_add(1, Ordering::AcqRel);
            let running = entry.running.clone();
            let in_flight_of_run = in_flight.clone();
            let done_tx = done_tx.clone();
            let gateway = settings.gateway;
            let spawned = thread::Builder::new()
                .name("corefn-cron-run".into())
                .spawn(move || {
                    let started_unix_us = clock::unix_now_us();
                    let started = Instant::now();
                    let status = call.send(gateway);
                    running.store(false, Ordering::Release);
                    in_flight_of_run.fetch_sub(1, Ordering::AcqRel);
                    let _ = done_tx.send(RunDone {
                        id: call.id,
                        started_unix_us,
                        status,
                        duration_us: started.elapsed().as_micros() as u64,
                    });
                });
            if let Err(error) = spawned {
                eprintln!("corefn: cron: cannot start a run of schedule {id}: {error}");
                entry.running.store(false, Ordering::Release);
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let wake = Instant::now() + POLL_INTERVAL;
        loop {
            let left = wake.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(done) => {
                    let recorded = with_store(store, |connection| {
                        schedules::record_run(
                            connection,
                            done.id,
                            done.started_unix_us,
                            done.status,
                            done.duration_us,
                        )
                    });
                    if let Err(error) = recorded {
                        eprintln!("corefn: cron: cannot record a run of {}: {error}", done.id);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// One use of the cron thread's connection; a store being switched and a
/// failed statement both come back as their text, said by the caller.
fn with_store<T, E: std::fmt::Display>(
    store: &StoreHandle,
    use_it: impl FnOnce(&rusqlite::Connection) -> Result<T, E>,
) -> Result<T, String> {
    let connection = store.connect().map_err(|error| error.to_string())?;
    use_it(&connection).map_err(|error| error.to_string())
}

/// Brings the armed set in line with the table: new schedules get their
/// next tick (or, at start with `catch_up`, one run now for a tick missed
/// while corefn was down), changed ones are re-armed, gone ones dropped.
fn arm(armed: &mut HashMap<i64, Armed>, list: &[Schedule], catch_up: bool) {
    let now_us = clock::unix_now_us();
    // A set, not a scan per entry: up to SCHEDULES_MAX of each, every second.
    let listed: std::collections::HashSet<i64> = list.iter().map(|s| s.id).collect();
    armed.retain(|id, _| listed.contains(id));
    for schedule in list {
        if armed
            .get(&schedule.id)
            .is_some_and(|entry| entry.cron == schedule.cron)
        {
            continue;
        }
        let timetable = match Timetable::parse(&schedule.cron) {
            Ok(timetable) => timetable,
            Err(error) => {
                // Only a hand-written row can get here: the API checks.
                eprintln!(
                    "corefn: cron: schedule {} is not armed: {error}",
                    schedule.id
                );
                continue;
            }
        };
        let missed = catch_up
            && schedule
                .last_run_unix_us
                .and_then(|last| timetable.next_after_us(last))
                .is_some_and(|tick| tick <= now_us);
        let next_tick_us = if missed {
            Some(now_us)
        } else {
            timetable.next_after_us(now_us)
        };
        armed.insert(
            schedule.id,
            Armed {
                cron: schedule.cron.clone(),
                timetable,
                next_tick_us,
                running: Arc::default(),
            },
        );
    }
}

/// One scheduled request.
struct ScheduledCall {
    id: i64,
    request_id: String,
    method: String,
    target: String,
    body: Vec<u8>,
}

impl ScheduledCall {
    /// Sends the request and returns the response's status; 0 when the
    /// gateway could not be reached or answered nothing readable.
    fn send(&self, gateway: SocketAddr) -> u16 {
        match self.exchange(gateway) {
            Ok(status) => status,
            Err(error) => {
                eprintln!(
                    "corefn: cron: schedule {} ({} {}): {error}",
                    self.id, self.method, self.target
                );
                0
            }
        }
    }

    fn exchange(&self, gateway: SocketAddr) -> Result<u16, LoopbackError> {
        let headers = [
            ("user-agent".to_string(), "corefn-cron".to_string()),
            ("x-request-id".to_string(), self.request_id.clone()),
            ("x-corefn-schedule".to_string(), self.id.to_string()),
        ];
        let request = loopback::Request {
            method: &self.method,
            target: &self.target,
            headers: &headers,
            body: &self.body,
            timeout: CALL_TIMEOUT,
        };
        Ok(loopback::send(gateway, &request)?.status)
    }
}
