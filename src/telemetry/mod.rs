//! Telemetry: what the gateway and its functions did, for people and
//! monitoring. [`stats`] per-function counters and latency histograms
//! (per-core single-writer shards summed by readers, sliding windows),
//! [`gateway`] the gateway's own counters, [`metrics`] the Prometheus text
//! exposition of both, [`logs`] the function logs (one writer thread,
//! bounded files, live followers).
//!
//! Below the gateway and the control plane: both use it, it uses neither.
//! Nothing here may block a core: cores only write their own shards.

pub mod gateway;
pub mod logs;
pub mod metrics;
pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::sync::lock;

/// Where the routes come from, against the file at the store's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreState {
    /// The file at the path, read live.
    Open,
    /// The path names another file, not switched to yet (it has to stop
    /// changing first) or not usable (see the detail).
    Replaced,
    /// The path names no file.
    Gone,
    /// The file at the path has 0 bytes.
    Emptied,
}

/// The watcher's account of the store, shown under `store` in `/_/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStatus {
    pub state: StoreState,
    /// Why the last new file could not be used, when it could not.
    pub detail: Option<String>,
    /// When `state` last changed (Unix milliseconds).
    pub since_unix_ms: u64,
    /// Times the watcher switched to a new file at the path.
    pub switches: u64,
}

/// What the cores and the watcher write and the control plane reads.
#[derive(Debug)]
pub struct Telemetry {
    pub stats: Arc<stats::StatsRegistry>,
    pub gateway: gateway::GatewayStats,
    /// When the route watcher last read the store (Unix microseconds).
    watcher_read_unix_us: AtomicU64,
    store: Mutex<StoreStatus>,
}

impl Telemetry {
    pub fn new(cores: usize) -> Telemetry {
        Telemetry {
            stats: Arc::new(stats::StatsRegistry::new(cores)),
            gateway: gateway::GatewayStats::new(cores),
            watcher_read_unix_us: AtomicU64::new(crate::clock::unix_now_us()),
            store: Mutex::new(StoreStatus {
                state: StoreState::Open,
                detail: None,
                since_unix_ms: now_unix_ms(),
                switches: 0,
            }),
        }
    }

    /// The watcher's note that it just read the store.
    pub fn watcher_read(&self) {
        self.watcher_read_unix_us
            .store(crate::clock::unix_now_us(), Ordering::Relaxed);
    }

    pub fn set_store_state(&self, state: StoreState, detail: Option<String>) {
        let mut status = lock(&self.store);
        if status.state != state {
            status.state = state;
            status.since_unix_ms = now_unix_ms();
        }
        status.detail = detail;
    }

    /// The watcher serves the new file at the path from now on.
    pub fn store_switched(&self) {
        let mut status = lock(&self.store);
        status.switches += 1;
        status.state = StoreState::Open;
        status.detail = None;
        status.since_unix_ms = now_unix_ms();
    }

    /// Read by an admin request or a metrics scrape (the watcher holds the
    /// lock only to write a few fields).
    pub fn store_status(&self) -> StoreStatus {
        lock(&self.store).clone()
    }

    /// Seconds since the watcher last read the store.
    pub fn watcher_lag_seconds(&self) -> f64 {
        let read = self.watcher_read_unix_us.load(Ordering::Relaxed);
        crate::clock::unix_now_us().saturating_sub(read) as f64 / 1e6
    }
}

fn now_unix_ms() -> u64 {
    crate::clock::unix_now_us() / 1_000
}
