//! The metrics datagram a worker sends every `--metrics-interval-ms`, defined
//! once for both sides. 64 bytes, little-endian, with a version so that a
//! gateway can refuse a format it does not know:
//!
//! ```text
//! 0  u32 magic "CFM1"     4  u16 version (1)   6  u16 reserved (0)
//! 8  u32 worker_id        12 u32 pid
//! 16 u64 unix_time_us     24 u32 cpu_ppm (millionths of one core since the last datagram)
//! 28 u32 in_flight        32 u64 rss_bytes
//! 40 u64 io_bytes_per_s   48 u64 requests_done
//! 56 u64 reserved (0)
//! ```

use thiserror::Error;

use crate::wire::{put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

pub const METRICS_MAGIC: u32 = u32::from_le_bytes(*b"CFM1");
pub const METRICS_VERSION: u16 = 1;
pub const METRICS_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSample {
    pub worker_id: u32,
    pub pid: u32,
    pub unix_time_us: u64,
    /// CPU used since the previous datagram, in millionths of one core.
    pub cpu_ppm: u32,
    pub in_flight: u32,
    pub rss_bytes: u64,
    pub io_bytes_per_s: u64,
    pub requests_done: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SampleError {
    #[error("datagram of {0} bytes, expected {METRICS_BYTES}")]
    Length(usize),
    #[error("not a metrics datagram (magic {0:#x})")]
    Magic(u32),
    #[error("metrics version {0} is not supported")]
    Version(u16),
}

impl WorkerSample {
    pub fn encode(&self) -> [u8; METRICS_BYTES] {
        let mut b = [0u8; METRICS_BYTES];
        put_u32(&mut b, 0, METRICS_MAGIC);
        put_u16(&mut b, 4, METRICS_VERSION);
        put_u32(&mut b, 8, self.worker_id);
        put_u32(&mut b, 12, self.pid);
        put_u64(&mut b, 16, self.unix_time_us);
        put_u32(&mut b, 24, self.cpu_ppm);
        put_u32(&mut b, 28, self.in_flight);
        put_u64(&mut b, 32, self.rss_bytes);
        put_u64(&mut b, 40, self.io_bytes_per_s);
        put_u64(&mut b, 48, self.requests_done);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<WorkerSample, SampleError> {
        if bytes.len() != METRICS_BYTES {
            return Err(SampleError::Length(bytes.len()));
        }
        let u32_at = |at| u32_at(bytes, at);
        let u64_at = |at| u64_at(bytes, at);
        let magic = u32_at(0);
        if magic != METRICS_MAGIC {
            return Err(SampleError::Magic(magic));
        }
        let version = u16_at(bytes, 4);
        if version != METRICS_VERSION {
            return Err(SampleError::Version(version));
        }
        Ok(WorkerSample {
            worker_id: u32_at(8),
            pid: u32_at(12),
            unix_time_us: u64_at(16),
            cpu_ppm: u32_at(24),
            in_flight: u32_at(28),
            rss_bytes: u64_at(32),
            io_bytes_per_s: u64_at(40),
            requests_done: u64_at(48),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_round_trips_and_foreign_bytes_are_refused() {
        let sample = WorkerSample {
            worker_id: 1,
            pid: 4242,
            unix_time_us: 1_800_000_000_000_000,
            cpu_ppm: 750_000,
            in_flight: 3,
            rss_bytes: 20 << 20,
            io_bytes_per_s: 12_345,
            requests_done: 99,
        };
        assert_eq!(WorkerSample::decode(&sample.encode()), Ok(sample));
        assert_eq!(WorkerSample::decode(b"hello"), Err(SampleError::Length(5)));
        assert_eq!(
            WorkerSample::decode(&[0u8; METRICS_BYTES]),
            Err(SampleError::Magic(0))
        );
        let mut future = sample.encode();
        future[4] = 9;
        assert_eq!(WorkerSample::decode(&future), Err(SampleError::Version(9)));
    }
}
