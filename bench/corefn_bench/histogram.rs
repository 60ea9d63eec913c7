//! Latency histograms: recording, merging, percentiles and the `.hgrm` text.
//!
//! Owns the one histogram configuration every connection uses (microseconds,
//! 1 µs ..= 1 h, 3 significant digits) so that per-connection histograms can
//! always be merged. Latencies are recorded in microseconds and printed in
//! milliseconds, as wrk2 and HdrHistogram print them. Pure computation: no
//! I/O except writing to the `Write` it is given.

use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram tracks; longer ones are recorded as this.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Significant decimal digits kept (0.1 % value resolution).
pub const SIGFIG: u8 = 3;

/// Ticks per halving of the distance to 100 % in percentile listings; 5 is
/// what wrk2 and HdrHistogram's `outputPercentileDistribution` use.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Microseconds per millisecond: the `.hgrm` output unit is the millisecond.
const US_PER_MS: f64 = 1000.0;

/// A latency histogram in microseconds.
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

/// One line of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// Quantile in 0 ..= 1 (`0.99` is p99).
    pub quantile: f64,
    /// Highest latency at that quantile, in microseconds.
    pub value_us: u64,
    /// Samples at or below `value_us`.
    pub count_total: u64,
}

/// The headline latency figures, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        let inner = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGFIG)
            .expect("constant histogram bounds are valid");
        LatencyHistogram { inner }
    }

    /// Records one latency; values above `LATENCY_US_MAX` are clamped.
    pub fn record_us(&mut self, latency_us: u64) {
        self.inner.saturating_record(latency_us.min(LATENCY_US_MAX));
    }

    /// Adds every sample of `other` (same configuration, so it cannot fail).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.inner
            .add(&other.inner)
            .expect("histograms share one configuration");
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    #[cfg(test)]
    pub fn value_at_quantile_us(&self, quantile: f64) -> u64 {
        self.inner.value_at_quantile(quantile)
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.inner;
        let empty = h.is_empty();
        LatencySummary {
            count: h.len(),
            min_us: if empty { 0 } else { h.min() },
            mean_us: if empty { 0.0 } else { h.mean() },
            stdev_us: if empty { 0.0 } else { h.stdev() },
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            p9999_us: h.value_at_quantile(0.9999),
            max_us: if empty { 0 } else { h.max() },
        }
    }

    /// The percentile distribution as HdrHistogram lists it: ticks that halve
    /// the distance to 100 %, ending with the maximum at quantile 1.
    pub fn percentiles(&self) -> Vec<PercentilePoint> {
        let mut points = Vec::new();
        if self.inner.is_empty() {
            return points;
        }
        let mut count_total = 0u64;
        for v in self.inner.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            count_total += v.count_since_last_iteration();
            points.push(PercentilePoint {
                quantile: v.quantile_iterated_to(),
                value_us: self.inner.highest_equivalent(v.value_iterated_to()),
                count_total,
            });
        }
        points
    }

    /// Writes the distribution in HdrHistogram's `.hgrm` text format (what
    /// `wrk2 --u_latency` and `outputPercentileDistribution` print), values
    /// in milliseconds.
    pub fn write_hgrm<W: Write>(&self, out: &mut W) -> io::Result<()> {
        writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        let decimals = usize::from(SIGFIG);
        for p in self.percentiles() {
            let value_ms = p.value_us as f64 / US_PER_MS;
            if p.quantile < 1.0 {
                writeln!(
                    out,
                    "{value_ms:>12.decimals$} {:>2.12} {:>10} {:>14.2}",
                    p.quantile,
                    p.count_total,
                    1.0 / (1.0 - p.quantile)
                )?;
            } else {
                // HdrHistogram prints the 100 % line without 1/(1-p) (infinite).
                writeln!(
                    out,
                    "{value_ms:>12.decimals$} {:>2.12} {:>10}",
                    p.quantile, p.count_total
                )?;
            }
        }
        let s = self.summary();
        writeln!(
            out,
            "#[Mean    = {:>12.decimals$}, StdDeviation   = {:>12.decimals$}]",
            s.mean_us / US_PER_MS,
            s.stdev_us / US_PER_MS
        )?;
        writeln!(
            out,
            "#[Max     = {:>12.decimals$}, Total count    = {:>12}]",
            s.max_us as f64 / US_PER_MS,
            s.count
        )?;
        writeln!(
            out,
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            self.inner.buckets(),
            sub_bucket_count(SIGFIG)
        )?;
        Ok(())
    }
}

/// HdrHistogram's sub-bucket count: the power of two that holds
/// `2 × 10^sigfig` distinct values (2048 for 3 digits).
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1..=10_000 µs, once each: the percentiles are known exactly (within
    /// the histogram's 0.1 % resolution).
    fn uniform() -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for v in 1..=10_000 {
            h.record_us(v);
        }
        h
    }

    fn close(actual: u64, expected: u64) -> bool {
        actual.abs_diff(expected) as f64 <= expected as f64 * 0.001 + 1.0
    }

    #[test]
    fn percentiles_of_a_uniform_distribution_are_its_ranks() {
        let s = uniform().summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min_us, 1);
        assert!(close(s.p50_us, 5_000), "p50 {}", s.p50_us);
        assert!(close(s.p90_us, 9_000), "p90 {}", s.p90_us);
        assert!(close(s.p99_us, 9_900), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 9_990), "p99.9 {}", s.p999_us);
        assert!(close(s.max_us, 10_000), "max {}", s.max_us);
        assert!((s.mean_us - 5_000.5).abs() < 10.0, "mean {}", s.mean_us);
    }

    #[test]
    fn merged_histograms_hold_both_sets_of_samples() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for _ in 0..99 {
            a.record_us(100);
        }
        b.record_us(50_000);
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert!(close(a.value_at_quantile_us(0.5), 100));
        assert!(close(a.summary().max_us, 50_000));
    }

    #[test]
    fn latencies_past_the_maximum_are_clamped_not_lost() {
        let mut h = LatencyHistogram::new();
        h.record_us(u64::MAX);
        assert_eq!(h.count(), 1);
        assert!(h.summary().max_us >= LATENCY_US_MAX);
    }

    #[test]
    fn percentile_listing_is_monotonic_and_ends_at_the_max() {
        let points = uniform().percentiles();
        assert!(points.len() > 20);
        assert_eq!(points[0].quantile, 0.0);
        for w in points.windows(2) {
            assert!(w[1].quantile >= w[0].quantile);
            assert!(w[1].value_us >= w[0].value_us);
            assert!(w[1].count_total >= w[0].count_total);
        }
        let last = points.last().unwrap();
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.count_total, 10_000);
        assert!(close(last.value_us, 10_000));
    }

    #[test]
    fn hgrm_output_has_hdrhistogram_columns_and_footer() {
        let mut out = Vec::new();
        uniform().write_hgrm(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        // Value in ms with 3 decimals, percentile with 12, a count, 1/(1-p).
        let first = &rows[0];
        assert_eq!(first.len(), 4);
        assert_eq!(first[0], "0.001");
        assert_eq!(first[1], "0.000000000000");
        assert_eq!(first[3], "1.00");
        let p50 = rows.iter().find(|r| r[1] == "0.500000000000").unwrap();
        assert!(
            p50[0].starts_with("5.0") || p50[0].starts_with("4.99"),
            "{p50:?}"
        );
        assert_eq!(p50[3], "2.00");
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3, "the 100 % line has no 1/(1-p)");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "10000");
        assert!(text.contains("#[Mean    ="));
        assert!(text.contains("Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }
}
