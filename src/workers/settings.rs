//! The settings of a worker process: one type, declared here by its owner
//! (with the runtimes' own settings inside it, declared by them),
//! flattened into `corefn serve`'s flags, validated once at start and
//! handed to every worker whole (as JSON in one argument), so that a new
//! worker setting is one field in one place.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::runtimes::settings::RuntimeSettings;

/// Bounds of the settings, checked by [`WorkerSettings::validate`].
pub const THREADS_MAX: usize = 256;
pub const METRICS_INTERVAL_MS_MIN: u64 = 10;
pub const METRICS_INTERVAL_MS_MAX: u64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Requests one worker process runs at once (one thread each).
    #[arg(long = "worker-threads", default_value_t = 4)]
    pub threads: usize,

    /// How often each worker sends its metrics datagram.
    #[arg(long, default_value_t = 500)]
    pub metrics_interval_ms: u64,

    /// Unix datagram socket the workers send metrics to (default: next to
    /// the database, `<db>.metrics.sock`).
    #[arg(long)]
    pub metrics_socket: Option<PathBuf>,

    /// Log a START and an END line for every call (`false`: only what a
    /// function prints is logged; saves a datagram per silent call).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub log_call_lines: bool,

    /// When corefn is started by root: the user the workers and every
    /// function process run as (default `nobody`; `root` keeps root, for
    /// setups whose every function is trusted).
    #[arg(long)]
    #[serde(default)]
    pub run_as: Option<String>,

    /// What the runtimes inside each worker need.
    #[command(flatten)]
    pub runtimes: RuntimeSettings,
}

impl WorkerSettings {
    /// Rejects what a worker cannot run with, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=THREADS_MAX).contains(&self.threads) {
            return Err(format!(
                "--worker-threads {} is outside 1..={THREADS_MAX}",
                self.threads
            ));
        }
        if !(METRICS_INTERVAL_MS_MIN..=METRICS_INTERVAL_MS_MAX).contains(&self.metrics_interval_ms)
        {
            return Err(format!(
                "--metrics-interval-ms {} is outside {METRICS_INTERVAL_MS_MIN}..={METRICS_INTERVAL_MS_MAX}",
                self.metrics_interval_ms
            ));
        }
        if self.runtimes.host_min_instances > self.threads {
            return Err(format!(
                "--host-min-instances {} is more than the {} hosts a worker can use (--worker-threads)",
                self.runtimes.host_min_instances, self.threads
            ));
        }
        self.runtimes.validate()?;
        Ok(())
    }

    /// The metrics socket, `<db>.metrics.sock` unless one was given.
    pub fn metrics_socket_or_default(&self, db: &Path) -> PathBuf {
        self.metrics_socket
            .clone()
            .unwrap_or_else(|| db.with_extension("metrics.sock"))
    }

    /// The settings as the worker's `--settings` argument. Fails for
    /// paths that are not UTF-8, which JSON cannot carry.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| format!("worker settings: {e}"))
    }

    pub fn from_json(json: &str) -> Result<WorkerSettings, String> {
        let settings: WorkerSettings =
            serde_json::from_str(json).map_err(|e| format!("worker settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: WorkerSettings,
    }

    fn parse(args: &[&str]) -> WorkerSettings {
        let mut argv = vec!["corefn"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).expect("flags parse").settings
    }

    #[test]
    fn defaults_are_valid_and_round_trip_as_json() {
        let settings = parse(&[]);
        assert_eq!(settings.validate(), Ok(()));
        let json = settings.to_json().expect("UTF-8 paths");
        assert_eq!(WorkerSettings::from_json(&json), Ok(settings));
    }

    #[test]
    fn out_of_range_values_are_rejected_with_the_flag() {
        let zero_threads = parse(&["--worker-threads", "0"]).validate();
        assert!(zero_threads.is_err_and(|e| e.contains("--worker-threads 0")));
        let fast = parse(&["--metrics-interval-ms", "1"]).validate();
        assert!(fast.is_err_and(|e| e.contains("--metrics-interval-ms 1")));
        let warm = parse(&["--worker-threads", "2", "--host-min-instances", "3"]).validate();
        assert!(warm.is_err_and(|e| e.contains("--host-min-instances 3")));
    }

    #[test]
    fn settings_from_another_version_are_refused() {
        let error = WorkerSettings::from_json(r#"{"threads":4,"surprise":1}"#).unwrap_err();
        assert!(error.contains("surprise"), "{error}");
    }
}
