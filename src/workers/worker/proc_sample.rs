//! The worker's metrics datagram: every interval, this process's CPU,
//! memory and I/O (with its language hosts') from /proc, and its requests
//! in flight and done, sent to the gateway's collector.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::Worker;
use crate::scheduler::metrics::WorkerSample;

impl Worker {
    /// Sends a metrics datagram every interval until the process ends.
    /// Sends that fail (collector gone or busy) are dropped: metrics are
    /// advisory, requests are not.
    /// `socket` is connected to the collector (before the worker dropped
    /// root: the socket's path need not be reachable by the worker's user).
    pub(super) fn report_metrics(&self, socket: &std::os::unix::net::UnixDatagram) {
        let _ = socket.set_nonblocking(true);
        let ticks_per_s = procfs_ticks_per_second();
        let mut last = ProcSample::read(&self.runtimes.child_pids());
        let mut last_at = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(self.settings.metrics_interval_ms));
            let now = ProcSample::read(&self.runtimes.child_pids());
            let elapsed_s = last_at.elapsed().as_secs_f64().max(1e-3);
            last_at = Instant::now();
            let cpu_cores =
                now.cpu_ticks.saturating_sub(last.cpu_ticks) as f64 / ticks_per_s / elapsed_s;
            let io_bytes_per_s = now.io_bytes.saturating_sub(last.io_bytes) as f64 / elapsed_s;
            last = now;
            let sample = WorkerSample {
                worker_id: self.identity.worker_id as u32,
                pid: std::process::id(),
                unix_time_us: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0),
                cpu_ppm: (cpu_cores * 1e6).min(f64::from(u32::MAX)) as u32,
                in_flight: self.in_flight.load(Ordering::Relaxed),
                rss_bytes: now.rss_bytes,
                io_bytes_per_s: io_bytes_per_s as u64,
                requests_done: self.requests_done.load(Ordering::Relaxed),
            };
            let _ = socket.send(&sample.encode());
        }
    }
}

/// Processes of one host's tree read per sample at most (a function may
/// run up to [`crate::runtimes::sandbox::FUNCTION_TASKS_MAX`] tasks).
const HOST_TREE_PROCESSES_MAX: usize = 160;

/// This process's counters from /proc (zeros where a file is unreadable).
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    cpu_ticks: u64,
    rss_bytes: u64,
    io_bytes: u64,
}

impl ProcSample {
    /// This worker and the language hosts it runs: a host's CPU and memory
    /// are the worker's load as far as choosing a worker goes. Exec children
    /// count through `cutime`/`cstime` once reaped.
    fn read(host_pids: &[u32]) -> ProcSample {
        let mut sample = ProcSample::of("/proc/self");
        for &pid in host_pids {
            // A confined host is a chain (relay, the first process of its
            // pid namespace, the interpreter) with the function's own
            // children below: the whole tree is the host's load.
            let mut pending = vec![pid];
            let mut seen = 0;
            while let Some(pid) = pending.pop() {
                let process = ProcSample::of(&format!("/proc/{pid}"));
                sample.cpu_ticks += process.cpu_ticks;
                sample.rss_bytes += process.rss_bytes;
                sample.io_bytes += process.io_bytes;
                seen += 1;
                if seen >= HOST_TREE_PROCESSES_MAX {
                    break;
                }
                if let Ok(children) =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                {
                    pending.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
        sample
    }

    /// One process's counters; `proc_dir` is `/proc/self` or `/proc/<pid>`.
    fn of(proc_dir: &str) -> ProcSample {
        let cpu_ticks = std::fs::read_to_string(format!("{proc_dir}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised command name; utime, stime,
                // cutime and cstime are the 14th to 17th fields of the line.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let mut ticks = 0u64;
                for index in 11..=14 {
                    ticks += fields.get(index)?.parse::<u64>().ok()?;
                }
                Some(ticks)
            })
            .unwrap_or(0);
        // SAFETY: sysconf has no memory effects.
        let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let rss_bytes = std::fs::read_to_string(format!("{proc_dir}/statm"))
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page_bytes);
        let io_bytes = std::fs::read_to_string(format!("{proc_dir}/io"))
            .map(|io| {
                io.lines()
                    .filter_map(|line| line.split_once(": "))
                    .filter(|(key, _)| *key == "rchar" || *key == "wchar")
                    .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        ProcSample {
            cpu_ticks,
            rss_bytes,
            io_bytes,
        }
    }
}

fn procfs_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}
