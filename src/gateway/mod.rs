//! The gateway: one pinned glommio executor per core, each with its own
//! SO_REUSEPORT listener, serving HTTP/1.x from its own route snapshot.
//!
//! [`serve`] is the whole process life: open the route store, start the
//! watcher and the executors, print the ready line, wait for SIGINT/SIGTERM,
//! then stop accepting, let requests in flight finish and return.
//!
//! Inside a core the path of a request is [`core`] (accept) →
//! [`connection`] (read, parse with [`request`], answer, write, reading
//! only the core's [`context`]) → the route snapshot ([`crate::routes`]) →
//! a worker ([`crate::workers`]) or a static answer ([`crate::runtimes`]).

mod access_log;
mod connection;
mod context;
mod core;
mod listener;
pub mod request;

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use nix::sys::signal::{SigSet, Signal};
use thiserror::Error;

use self::access_log::{AccessLogWriter, CoreAccessLog};
use self::context::{CoreContext, CoreParts};
use crate::config::{Limits, ServeOptions};
use crate::control::observe::Observed;
use crate::routes::modules::ModuleRoots;
use crate::routes::snapshot::{CoreSnapshot, SnapshotBoard};
use crate::routes::store::{RouteStore, StoreError};
use crate::routes::watcher;
use crate::scheduler::collector::{self, CollectorConfig, CoreScores, ScoreBoard, WorkerScores};
use crate::scheduler::score::Weights;
use crate::schema::file::SharedStore;
use crate::telemetry::logs::{LogConfig, LogService};
use crate::telemetry::{stats, Telemetry};
use crate::workers::pool::CoreWorkers;
use crate::workers::supervisor::{LinkInbox, PoolSpec, ServedProbe, Supervisor};

/// Memory glommio registers per executor for its own file I/O buffers;
/// the gateway does no file I/O on executors, so keep it small.
const EXECUTOR_IO_MEMORY_BYTES: usize = 512 * 1024;
/// How often the main thread looks for a signal or a dead executor.
const SIGNAL_POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("--cores {asked}: this process may use {available} cores")]
    Cores { asked: usize, available: usize },
    #[error("cannot open access log {path}: {source}")]
    AccessLog { path: PathBuf, source: io::Error },
    #[error("cannot start {what}: {source}")]
    Start { what: String, source: io::Error },
    #[error("cannot block shutdown signals: {0}")]
    Signals(nix::Error),
    #[error("core executor {0} stopped unexpectedly")]
    CoreDied(usize),
    #[error("{0}")]
    Config(String),
    #[error("cannot bind the metrics socket {path}: {source}")]
    MetricsSocket { path: PathBuf, source: io::Error },
}

/// Binds the workers' metrics socket, replacing a stale file left by a
/// gateway that did not exit cleanly.
/// The supervisor's question "has this worker served a request?",
/// answered from the workers' own reports to the scheduler.
/// Makes the first admin key of the store at `db` when it has no key
/// (see [`crate::control::api::ensure_admin_key`]); returns whether it did.
fn ensure_admin_key(db: &std::path::Path, key_file: &std::path::Path) -> io::Result<bool> {
    let connection = rusqlite::Connection::open(db).map_err(io::Error::other)?;
    crate::control::api::ensure_admin_key(&connection, key_file)
}

fn served_probe(scores: Arc<ScoreBoard>) -> ServedProbe {
    Arc::new(move |worker_id, pid| {
        scores
            .current()
            .of(worker_id, pid)
            .is_some_and(|score| score.raw.requests_done > 0)
    })
}

fn bind_metrics_socket(path: &std::path::Path) -> Result<UnixDatagram, ServeError> {
    let error = |source| ServeError::MetricsSocket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    UnixDatagram::bind(path).map_err(error)
}

/// State every core reads; written only by the main thread.
pub struct Shared {
    stop_requested: AtomicBool,
    cores_exited: AtomicUsize,
}

pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    // Before any thread exists, so every thread inherits the mask and the
    // signals reach only the main thread's sigtimedwait.
    let signals = block_shutdown_signals()?;

    options.validate().map_err(ServeError::Config)?;
    let mut options = options;
    let cpus = select_cpus(options.cores)?;
    options.connections_max = fit_connections(
        options.connections_max,
        descriptors_needed(
            cpus.len(),
            options.workers.unwrap_or(cpus.len()),
            options.control.async_runners,
        ),
    )?;
    let store = RouteStore::open(&options.db)?;
    // An admin key is made on the first start, before the route table is
    // first read: its commit would otherwise count as a change of the
    // table and publish a second version right after start.
    let admin_key_file = options
        .control
        .admin_key_file
        .clone()
        .unwrap_or_else(|| options.db.with_extension("admin-key"));
    let created_key =
        ensure_admin_key(&options.db, &admin_key_file).map_err(|source| ServeError::Start {
            what: format!("admin key in {}", admin_key_file.display()),
            source,
        })?;
    let run_as = crate::workers::privileges::resolve(options.worker.run_as.as_deref())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    if let Some(run_as) = run_as {
        crate::workers::privileges::prepare(
            run_as,
            &options.db,
            &options.worker.runtimes.cache_dir,
        )
        .map_err(|e| ServeError::Config(e.to_string()))?;
        let user = options
            .worker
            .run_as
            .as_deref()
            .unwrap_or(crate::workers::privileges::RUN_AS_DEFAULT);
        eprintln!(
            "corefn: workers and functions run as {user} (uid {}); --run-as to choose another user",
            run_as.uid
        );
        let functions = &options.worker.runtimes.functions_dir;
        if !crate::workers::privileges::can_enter(run_as, functions) {
            eprintln!(
                "corefn: warning: {user} cannot reach the functions directory {} (a directory above \
                 it is not searchable, such as root's home): its exec, python, node and php \
                 functions will answer 502. Put it where {user} can read it, or start with \
                 --run-as root if every function is trusted",
                std::path::absolute(functions)
                    .unwrap_or_else(|_| functions.clone())
                    .display()
            );
        }
    }
    let telemetry = Arc::new(Telemetry::new(cpus.len()));
    let module_roots =
        (!options.trust_module_paths).then(|| ModuleRoots::new(&options.control.store_dir));
    let (table, loaded_at) =
        watcher::load_initial(&store, &telemetry.stats, module_roots.as_ref())?;
    stats::spawn_sampler(telemetry.stats.clone()).map_err(|source| ServeError::Start {
        what: "stats sampler".into(),
        source,
    })?;
    let route_count = table.routes().len();
    let board = Arc::new(SnapshotBoard::new(table));
    let listeners = listener::bind_per_core(options.listen, cpus.len()).map_err(|source| {
        ServeError::Listen {
            addr: options.listen,
            source,
        }
    })?;
    let access_log = match &options.access_log {
        Some(path) => {
            Some(
                AccessLogWriter::start(path).map_err(|source| ServeError::AccessLog {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let shared_store = SharedStore::new(&options.db);
    let switch_key_file = admin_key_file.clone();
    watcher::spawn(
        store,
        watcher::WatchParts {
            board: board.clone(),
            loaded_at,
            interval: Duration::from_millis(options.watch_interval_ms),
            recheck: Duration::from_millis(options.watch_recheck_ms),
            telemetry: telemetry.clone(),
            roots: module_roots,
            shared: shared_store.clone(),
            // A store switched to keeps its own keys; one without an admin
            // key gets one, written where the first one was.
            on_switch: Box::new(move |db| match ensure_admin_key(db, &switch_key_file) {
                Ok(true) => eprintln!(
                    "corefn: the new route store has no admin key: created one in {}",
                    switch_key_file.display()
                ),
                Ok(false) => {}
                Err(error) => eprintln!(
                    "corefn: cannot make an admin key in {}: {error}",
                    switch_key_file.display()
                ),
            }),
        },
    )
    .map_err(|source| ServeError::Start {
        what: "route watcher".into(),
        source,
    })?;

    // The control plane: its link to every core goes through an inbox like
    // a worker's.
    let control_inboxes: Vec<Arc<LinkInbox>> = (0..cpus.len()).map(|_| Arc::default()).collect();
    if created_key {
        eprintln!(
            "corefn: created an admin API key in {} (mode 0600); send it as Authorization: Bearer KEY",
            admin_key_file.display()
        );
    }
    let control_scores = Arc::new(ScoreBoard::new(WorkerScores::default()));

    let (logs, log_channel) = LogService::start(LogConfig {
        dir: options.logs_dir.clone(),
        file_bytes_max: options.log_file_bytes_max,
        files_kept: options.log_files_kept,
    })
    .map_err(|source| ServeError::Start {
        what: format!("function logs in {}", options.logs_dir.display()),
        source,
    })?;
    let log_channel = Arc::new(log_channel);
    let worker_count = options.workers.unwrap_or(cpus.len());
    let inboxes: Vec<Arc<LinkInbox>> = (0..cpus.len()).map(|_| Arc::default()).collect();
    let score_board = Arc::new(ScoreBoard::new(WorkerScores::default()));
    let collector_stop = Arc::new(AtomicBool::new(false));
    let metrics_interval = Duration::from_millis(options.worker.metrics_interval_ms);
    // Workers get the socket the collector binds, whatever the default.
    let metrics_socket = options.worker.metrics_socket_or_default(&options.db);
    options.worker.metrics_socket = Some(metrics_socket.clone());
    let collector = if worker_count > 0 {
        let weights = Weights::parse(&options.score_weights).map_err(ServeError::Config)?;
        let socket = bind_metrics_socket(&metrics_socket)?;
        Some(
            collector::start(
                socket,
                score_board.clone(),
                CollectorConfig {
                    worker_count,
                    alpha: options.ewma_alpha,
                    weights,
                },
                collector_stop.clone(),
            )
            .map_err(|source| ServeError::Start {
                what: "metrics collector".into(),
                source,
            })?,
        )
    } else {
        None
    };
    let supervisor = if worker_count > 0 {
        let executable = std::env::current_exe().map_err(|source| ServeError::Start {
            what: "worker processes (cannot find own executable)".into(),
            source,
        })?;
        Some(
            Supervisor::start(
                PoolSpec::new(
                    executable,
                    worker_count,
                    cpus.len(),
                    &options.worker,
                    Some(log_channel.clone()),
                    served_probe(score_board.clone()),
                )
                .map_err(ServeError::Config)?,
                inboxes.clone(),
            )
            .map_err(|source| ServeError::Start {
                what: "worker supervisor".into(),
                source,
            })?,
        )
    } else {
        None
    };

    options.control.wasm_cache_dir = Some(options.worker.runtimes.cache_dir.clone());
    options.control.gateway = Some(crate::control::loopback::loopback_of(options.listen));
    let observed = Observed {
        telemetry: telemetry.clone(),
        routes: board.clone(),
        scores: score_board.clone(),
        pool: supervisor.as_ref().map(|s| s.status.clone()),
        logs: logs.clone(),
    };
    crate::control::start(&shared_store, &options.control, &control_inboxes, observed).map_err(
        |source| ServeError::Start {
            what: "control plane".into(),
            source,
        },
    )?;
    crate::control::cron::start(crate::control::cron::CronSettings {
        store: shared_store.clone(),
        gateway: crate::control::loopback::loopback_of(options.listen),
        catch_up: options.control.schedule_catch_up,
    })
    .map_err(|source| ServeError::Start {
        what: "cron schedules".into(),
        source,
    })?;

    let shared = Arc::new(Shared {
        stop_requested: AtomicBool::new(false),
        cores_exited: AtomicUsize::new(0),
    });
    let limits = Limits::new(&options, cpus.len());
    let mut executors = Vec::with_capacity(cpus.len());
    let mut admin_listeners = match options.admin_listen {
        Some(addr) => listener::bind_per_core(addr, cpus.len())
            .map_err(|source| ServeError::Listen { addr, source })?
            .into_iter()
            .map(Some)
            .collect(),
        None => Vec::new(),
    };
    admin_listeners.resize_with(cpus.len(), || None);
    for (index, ((cpu, listener_fd), admin_listener_fd)) in cpus
        .iter()
        .copied()
        .zip(listeners)
        .zip(admin_listeners)
        .enumerate()
    {
        let limits = limits.clone();
        let board = board.clone();
        let shared = shared.clone();
        let log_sender = access_log.as_ref().map(AccessLogWriter::sender);
        let inbox = inboxes[index].clone();
        let control_inbox = control_inboxes[index].clone();
        let control_scores = control_scores.clone();
        let score_board = score_board.clone();
        let pool_status = supervisor.as_ref().map(|s| s.status.clone());
        let telemetry = telemetry.clone();
        let access_log_format = options.access_log_format;
        let threads_per_worker = u32::try_from(options.worker.threads).unwrap_or(u32::MAX);
        let executor = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("corefn-core-{index}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let core = Rc::new(CoreContext::new(
                    index,
                    limits,
                    CoreParts {
                        snapshot: CoreSnapshot::new(board),
                        workers: CoreWorkers::new(
                            index,
                            inbox,
                            CoreScores::new(score_board),
                            threads_per_worker,
                            metrics_interval,
                        ),
                        control: CoreWorkers::new(
                            index,
                            control_inbox,
                            CoreScores::new(control_scores),
                            1,
                            metrics_interval,
                        ),
                        pool_status,
                        access_log: log_sender
                            .map(|sender| CoreAccessLog::new(sender, access_log_format)),
                        telemetry,
                    },
                ));
                core::run(core, shared.clone(), listener_fd, admin_listener_fd).await;
                shared.cores_exited.fetch_add(1, Ordering::AcqRel);
            })
            .map_err(|error| ServeError::Start {
                what: format!("executor on cpu {cpu}"),
                source: io::Error::other(error.to_string()),
            })?;
        executors.push(executor);
    }
    if let Some(addr) = options.admin_listen {
        eprintln!("corefn: admin endpoints and the control API also on http://{addr}");
    }
    println!(
        "corefn listening on http://{} (cores: {}, workers: {}, routes: {}, connections: {})",
        options.listen,
        cpus.len(),
        worker_count,
        route_count,
        options.connections_max
    );

    let outcome = wait_for_shutdown_signal(&signals, &shared);
    shared.stop_requested.store(true, Ordering::Release);
    if let Some(supervisor) = &supervisor {
        supervisor.announce_draining();
    }
    for executor in executors {
        if executor.join().is_err() {
            eprintln!("corefn: a core executor panicked");
        }
    }
    // Workers go last: requests in flight on them were drained with the cores.
    if let Some(supervisor) = supervisor {
        supervisor.stop();
    }
    collector_stop.store(true, Ordering::Release);
    if let Some(collector) = collector {
        let _ = collector.join();
        let _ = std::fs::remove_file(&metrics_socket);
    }
    if let Some(writer) = access_log {
        writer.finish();
    }
    outcome
}

fn block_shutdown_signals() -> Result<SigSet, ServeError> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().map_err(ServeError::Signals)?;
    Ok(signals)
}

/// Returns Ok on SIGINT/SIGTERM, an error if a core executor died first.
fn wait_for_shutdown_signal(signals: &SigSet, shared: &Shared) -> Result<(), ServeError> {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: SIGNAL_POLL_INTERVAL.as_nanos() as libc::c_long,
    };
    loop {
        // SAFETY: valid signal set and timespec; no siginfo requested.
        let signal =
            unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &timeout) };
        if signal == libc::SIGINT || signal == libc::SIGTERM {
            eprintln!("corefn: shutting down (signal {signal})");
            return Ok(());
        }
        let exited = shared.cores_exited.load(Ordering::Acquire);
        if exited > 0 {
            return Err(ServeError::CoreDied(exited));
        }
    }
}

/// Descriptors corefn keeps for itself whatever its size: stdio, the
/// store's SQLite connections (the watcher's, the control thread's, the
/// async queue's and the scheduler's, each a database, a WAL and a shared
/// memory file), the metrics socket, the log channel and files, the
/// artifact store, loopback clients, accepts in progress.
const DESCRIPTORS_FIXED: u64 = 64;
/// Per core: its listeners (service and admin), its io_uring rings and
/// eventfds, its control-plane channel (both ends).
const DESCRIPTORS_PER_CORE: u64 = 8;
/// Fewer client connections than this is no gateway: refuse to start.
const CONNECTIONS_MIN: u64 = 16;
/// Fewer than this is worth a warning at start.
const CONNECTIONS_WARN_BELOW: u64 = 256;

/// What corefn needs besides its client connections, from what it runs:
/// every worker has a channel to every core (the gateway's end stays
/// open) and a pidfd-like child handle, every async runner a loopback
/// connection.
fn descriptors_needed(cores: usize, workers: usize, async_runners: usize) -> u64 {
    let (cores, workers, runners) = (cores as u64, workers as u64, async_runners as u64);
    DESCRIPTORS_FIXED + cores * DESCRIPTORS_PER_CORE + workers * (cores + 2) + runners
}

/// Every connection is a descriptor: raises the soft limit on open files to
/// the hard limit (a common soft default is 1024) and returns how many
/// client connections to allow (at most `asked`), so that the connection
/// limit turns clients away with 503 before accept() would fail with
/// EMFILE. A limit that leaves no room for connections is an error that
/// says what to raise.
fn fit_connections(asked: usize, needed: u64) -> Result<usize, ServeError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(asked);
    };
    let usable = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    if usable < needed + CONNECTIONS_MIN {
        return Err(ServeError::Config(format!(
            "the open-files limit ({usable}) is too low: corefn needs {needed} descriptors for \
             its cores, workers' channels, store and logs, and room for at least \
             {CONNECTIONS_MIN} connections; raise it (ulimit -n {}) or run fewer --workers or --cores",
            (needed + CONNECTIONS_WARN_BELOW).next_power_of_two()
        )));
    }
    let fit = usize::try_from(usable - needed).unwrap_or(usize::MAX);
    let allowed = asked.min(fit);
    if allowed < asked && (allowed as u64) < CONNECTIONS_WARN_BELOW {
        eprintln!(
            "corefn: only {allowed} client connections fit under the open-files limit ({usable}, \
             of which corefn keeps {needed} for itself); raise it with ulimit -n"
        );
    }
    Ok(allowed)
}

fn select_cpus(cores: Option<usize>) -> Result<Vec<usize>, ServeError> {
    let mut available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    if available.is_empty() {
        available.push(0);
    }
    let asked = cores.unwrap_or(available.len());
    if asked == 0 || asked > available.len() {
        return Err(ServeError::Cores {
            asked,
            available: available.len(),
        });
    }
    available.truncate(asked);
    Ok(available)
}
