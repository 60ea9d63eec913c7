//! The metrics collector: a thread that receives the workers' datagrams,
//! smooths and scores them, and publishes an immutable [`WorkerScores`] on
//! the [`ScoreBoard`]; each core adopts it from its housekeeping task, as it
//! does route tables. Nothing here runs on a request's path.
//!
//! A datagram that does not decode, or names a worker that does not exist,
//! is counted and dropped; it never stops the collector.

use std::cell::RefCell;
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::metrics::WorkerSample;
use super::score::{self, Ewma, Normalised, Smoothed, Weights};

/// How often the collector looks at its stop flag when no datagram comes.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);

/// One worker's latest state as the cores see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerScore {
    pub worker_id: u32,
    pub pid: u32,
    pub last_report: Instant,
    pub raw: WorkerSample,
    pub smoothed: Smoothed,
    pub normalised: Normalised,
    pub score: f64,
}

/// Scores of every worker that has reported, by worker id.
#[derive(Debug, Default)]
pub struct WorkerScores {
    pub version: u64,
    pub workers: Vec<Option<WorkerScore>>,
}

impl WorkerScores {
    /// The score of `worker_id`, if it is from the process `pid` (a restarted
    /// worker's predecessor does not count).
    pub fn of(&self, worker_id: usize, pid: u32) -> Option<&WorkerScore> {
        self.workers
            .get(worker_id)
            .and_then(Option::as_ref)
            .filter(|s| s.pid == pid)
    }
}

#[derive(Default)]
pub struct ScoreBoard {
    version: AtomicU64,
    current: Mutex<Arc<WorkerScores>>,
    pub datagrams_received: AtomicU64,
    pub datagrams_rejected: AtomicU64,
}

impl ScoreBoard {
    fn publish(&self, scores: WorkerScores) {
        let version = scores.version;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(scores);
        self.version.store(version, Ordering::Release);
    }

    pub fn current(&self) -> Arc<WorkerScores> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One core's copy; only touched by that core's thread.
pub struct CoreScores {
    board: Arc<ScoreBoard>,
    // Rc over Arc: readers clone without an atomic read-modify-write.
    #[allow(clippy::redundant_allocation)]
    local: RefCell<Rc<Arc<WorkerScores>>>,
}

impl CoreScores {
    pub fn new(board: Arc<ScoreBoard>) -> CoreScores {
        let local = RefCell::new(Rc::new(board.current()));
        CoreScores { board, local }
    }

    pub fn refresh(&self) {
        if self.board.version.load(Ordering::Acquire) != self.local.borrow().version {
            *self.local.borrow_mut() = Rc::new(self.board.current());
        }
    }

    #[allow(clippy::redundant_allocation)]
    pub fn get(&self) -> Rc<Arc<WorkerScores>> {
        self.local.borrow().clone()
    }

    pub fn board(&self) -> &ScoreBoard {
        &self.board
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CollectorConfig {
    pub worker_count: usize,
    pub alpha: f64,
    pub weights: Weights,
}

#[derive(Default, Clone, Copy)]
struct Smoother {
    pid: u32,
    cpu: Ewma,
    rss: Ewma,
    io: Ewma,
}

pub fn start(
    socket: UnixDatagram,
    board: Arc<ScoreBoard>,
    config: CollectorConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    socket.set_read_timeout(Some(RECV_TIMEOUT))?;
    thread::Builder::new()
        .name("corefn-metrics".into())
        .spawn(move || collect(socket, board, config, stop))
}

fn collect(
    socket: UnixDatagram,
    board: Arc<ScoreBoard>,
    config: CollectorConfig,
    stop: Arc<AtomicBool>,
) {
    let mut smoothers: Vec<Option<Smoother>> = vec![None; config.worker_count];
    let mut latest: Vec<Option<(WorkerSample, Instant)>> = vec![None; config.worker_count];
    let mut version = 0u64;
    // One byte more than a datagram, so an oversized one is seen as such.
    let mut buffer = [0u8; super::metrics::METRICS_BYTES + 1];
    while !stop.load(Ordering::Acquire) {
        let len = match socket.recv(&mut buffer) {
            Ok(len) => len,
            Err(_) => continue, // timeout (or a transient error): look at the flag
        };
        board.datagrams_received.fetch_add(1, Ordering::Relaxed);
        let sample = match WorkerSample::decode(&buffer[..len]) {
            Ok(sample) if (sample.worker_id as usize) < config.worker_count => sample,
            _ => {
                board.datagrams_rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let id = sample.worker_id as usize;
        let smoother = smoothers[id].get_or_insert_with(Smoother::default);
        if smoother.pid != sample.pid {
            // A restarted worker starts from its own first sample.
            *smoother = Smoother {
                pid: sample.pid,
                ..Smoother::default()
            };
        }
        smoother
            .cpu
            .update(f64::from(sample.cpu_ppm) / 1e6, config.alpha);
        smoother.rss.update(sample.rss_bytes as f64, config.alpha);
        smoother
            .io
            .update(sample.io_bytes_per_s as f64, config.alpha);
        latest[id] = Some((sample, Instant::now()));

        version += 1;
        board.publish(score_all(version, &smoothers, &latest, &config.weights));
    }
}

fn score_all(
    version: u64,
    smoothers: &[Option<Smoother>],
    latest: &[Option<(WorkerSample, Instant)>],
    weights: &Weights,
) -> WorkerScores {
    let smoothed: Vec<Smoothed> = smoothers
        .iter()
        .map(|s| {
            s.map(|s| Smoothed {
                cpu_cores: s.cpu.value(),
                rss_bytes: s.rss.value(),
                io_bytes_per_s: s.io.value(),
            })
            .unwrap_or_default()
        })
        .collect();
    let normalised = score::normalise(&smoothed);
    let workers = latest
        .iter()
        .enumerate()
        .map(|(id, latest)| {
            latest.map(|(raw, last_report)| WorkerScore {
                worker_id: id as u32,
                pid: raw.pid,
                last_report,
                raw,
                smoothed: smoothed[id],
                normalised: normalised[id],
                score: score::score(&normalised[id], weights),
            })
        })
        .collect();
    WorkerScores { version, workers }
}
