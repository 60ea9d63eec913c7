//! The metrics collector: a thread that receives the workers' datagrams,
//! smooths and scores them, and publishes an immutable [`WorkerScores`] on
//! the [`ScoreBoard`]; each core adopts it from its housekeeping task, as it
//! does route tables. Nothing here runs on a request's path.
//!
//! A datagram that does not decode, or names a worker that does not exist,
//! is counted and dropped; it never stops the collector.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::metrics::WorkerSample;
use super::score::{self, Ewma, Normalised, Smoothed, Weights};
use crate::board::{Board, CoreCopy, Versioned};

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
/// Scores of every worker that has reported, by worker id, and the
/// collector's datagram counts at publication.
#[derive(Debug, Default)]
pub struct WorkerScores {
    pub version: u64,
    pub workers: Vec<Option<WorkerScore>>,
    pub datagrams_received: u64,
    /// Datagrams that did not decode or named no worker of ours.
    pub datagrams_rejected: u64,
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

impl Versioned for WorkerScores {
    fn version(&self) -> u64 {
        self.version
    }
}

/// Scores travel to the cores like route tables (see [`crate::board`]).
pub type ScoreBoard = Board<WorkerScores>;
pub type CoreScores = CoreCopy<WorkerScores>;

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
    let mut counts = Counts::default();
    let mut version = board.version();
    // One byte more than a datagram, so an oversized one is seen as such.
    let mut buffer = [0u8; super::metrics::METRICS_BYTES + 1];
    while !stop.load(Ordering::Acquire) {
        let len = match socket.recv(&mut buffer) {
            Ok(len) => len,
            Err(_) => continue, // timeout (or a transient error): look at the flag
        };
        counts.received += 1;
        match WorkerSample::decode(&buffer[..len]) {
            Ok(sample) if (sample.worker_id as usize) < config.worker_count => {
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
            }
            _ => counts.rejected += 1,
        }
        version += 1;
        board.publish(score_all(
            version,
            &smoothers,
            &latest,
            &config.weights,
            counts,
        ));
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    received: u64,
    rejected: u64,
}

fn score_all(
    version: u64,
    smoothers: &[Option<Smoother>],
    latest: &[Option<(WorkerSample, Instant)>],
    weights: &Weights,
    counts: Counts,
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
    WorkerScores {
        version,
        workers,
        datagrams_received: counts.received,
        datagrams_rejected: counts.rejected,
    }
}
