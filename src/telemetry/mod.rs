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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What the cores and the watcher write and the control plane reads.
#[derive(Debug)]
pub struct Telemetry {
    pub stats: Arc<stats::StatsRegistry>,
    pub gateway: gateway::GatewayStats,
    /// When the route watcher last read the store (Unix microseconds).
    watcher_read_unix_us: AtomicU64,
    /// The store's path names another file than the one corefn opened,
    /// or none.
    store_replaced: AtomicBool,
}

impl Telemetry {
    pub fn new(cores: usize) -> Telemetry {
        Telemetry {
            stats: Arc::new(stats::StatsRegistry::new(cores)),
            gateway: gateway::GatewayStats::new(cores),
            watcher_read_unix_us: AtomicU64::new(crate::clock::unix_now_us()),
            store_replaced: AtomicBool::new(false),
        }
    }

    /// The watcher's note that it just read the store.
    pub fn watcher_read(&self) {
        self.watcher_read_unix_us
            .store(crate::clock::unix_now_us(), Ordering::Relaxed);
    }

    pub fn set_store_replaced(&self, replaced: bool) {
        self.store_replaced.store(replaced, Ordering::Relaxed);
    }

    pub fn store_replaced(&self) -> bool {
        self.store_replaced.load(Ordering::Relaxed)
    }

    /// Seconds since the watcher last read the store.
    pub fn watcher_lag_seconds(&self) -> f64 {
        let read = self.watcher_read_unix_us.load(Ordering::Relaxed);
        crate::clock::unix_now_us().saturating_sub(read) as f64 / 1e6
    }
}
