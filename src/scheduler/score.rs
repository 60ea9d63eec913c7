//! Smoothing and scoring of worker metrics: pure functions, unit-tested.
//!
//! Each figure is smoothed with an exponentially weighted moving average
//! (`smoothed = alpha·sample + (1 − alpha)·smoothed`), normalised to 0..1 and
//! weighted: `score = w_cpu·cpu + w_mem·mem + w_io·io` (0.5/0.3/0.2 by
//! default). Lower is better.
//!
//! Normalisation: CPU is absolute (one busy core is 1.0, more is capped),
//! because a worker that burns a core is busy whatever the others do. Memory
//! and I/O are relative to the largest worker, with floors (64 MiB, 1 MiB/s)
//! so that small absolute differences between idle workers do not look
//! like a difference in load.

/// Below these, differences between workers are noise, not load.
pub const MEM_FLOOR_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
pub const IO_FLOOR_BYTES_PER_S: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub cpu: f64,
    pub mem: f64,
    pub io: f64,
}

impl Default for Weights {
    fn default() -> Weights {
        Weights {
            cpu: 0.5,
            mem: 0.3,
            io: 0.2,
        }
    }
}

impl Weights {
    /// `"0.5,0.3,0.2"` (cpu, mem, io); each ≥ 0, not all 0.
    pub fn parse(text: &str) -> Result<Weights, String> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>().map_err(|e| format!("{p:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let [cpu, mem, io] = parts[..] else {
            return Err(format!("expected three weights cpu,mem,io, got {text:?}"));
        };
        if [cpu, mem, io].iter().any(|w| !w.is_finite() || *w < 0.0) || cpu + mem + io == 0.0 {
            return Err(format!(
                "weights must be finite, ≥ 0 and not all 0: {text:?}"
            ));
        }
        Ok(Weights { cpu, mem, io })
    }
}

/// An EWMA that starts at its first sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    value: Option<f64>,
}

impl Ewma {
    pub fn update(&mut self, sample: f64, alpha: f64) -> f64 {
        debug_assert!((0.0..=1.0).contains(&alpha));
        let next = match self.value {
            None => sample,
            Some(previous) => alpha * sample + (1.0 - alpha) * previous,
        };
        self.value = Some(next);
        next
    }

    pub fn value(&self) -> f64 {
        self.value.unwrap_or(0.0)
    }
}

/// One worker's smoothed figures in their own units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Smoothed {
    pub cpu_cores: f64,
    pub rss_bytes: f64,
    pub io_bytes_per_s: f64,
}

/// The same figures in 0..1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Normalised {
    pub cpu: f64,
    pub mem: f64,
    pub io: f64,
}

/// Normalises every worker's figures against the pool.
pub fn normalise(all: &[Smoothed]) -> Vec<Normalised> {
    let rss_max = all
        .iter()
        .map(|s| s.rss_bytes)
        .fold(MEM_FLOOR_BYTES, f64::max);
    let io_max = all
        .iter()
        .map(|s| s.io_bytes_per_s)
        .fold(IO_FLOOR_BYTES_PER_S, f64::max);
    all.iter()
        .map(|s| Normalised {
            cpu: s.cpu_cores.clamp(0.0, 1.0),
            mem: (s.rss_bytes / rss_max).clamp(0.0, 1.0),
            io: (s.io_bytes_per_s / io_max).clamp(0.0, 1.0),
        })
        .collect()
}

pub fn score(n: &Normalised, w: &Weights) -> f64 {
    let total = w.cpu + w.mem + w.io;
    (w.cpu * n.cpu + w.mem * n.mem + w.io * n.io) / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_starts_at_first_sample_and_damps_a_spike() {
        let mut e = Ewma::default();
        assert_eq!(e.update(0.2, 0.3), 0.2);
        // One spike to 1.0 moves the average only by alpha of the jump.
        let after_spike = e.update(1.0, 0.3);
        assert!((after_spike - 0.44).abs() < 1e-9, "{after_spike}");
        // And it decays geometrically once the spike is over.
        let next = e.update(0.2, 0.3);
        assert!((next - 0.368).abs() < 1e-9, "{next}");
    }

    #[test]
    fn normalisation_is_absolute_for_cpu_and_relative_with_floors_otherwise() {
        let n = normalise(&[
            Smoothed {
                cpu_cores: 1.7,
                rss_bytes: 256.0 * 1024.0 * 1024.0,
                io_bytes_per_s: 0.0,
            },
            Smoothed {
                cpu_cores: 0.25,
                rss_bytes: 128.0 * 1024.0 * 1024.0,
                io_bytes_per_s: 512.0 * 1024.0,
            },
        ]);
        assert_eq!(n[0].cpu, 1.0);
        assert_eq!(n[1].cpu, 0.25);
        assert_eq!(n[0].mem, 1.0);
        assert_eq!(n[1].mem, 0.5);
        assert_eq!(n[0].io, 0.0);
        assert_eq!(
            n[1].io, 0.5,
            "below the 1 MiB/s floor the floor is the scale"
        );
        // Two idle workers with tiny RSS differences are both near 0.
        let idle = normalise(&[
            Smoothed {
                rss_bytes: 20e6,
                ..Smoothed::default()
            },
            Smoothed {
                rss_bytes: 21e6,
                ..Smoothed::default()
            },
        ]);
        assert!((idle[0].mem - idle[1].mem).abs() < 0.02);
    }

    #[test]
    fn score_weights_and_parse() {
        let w = Weights::default();
        let busy = Normalised {
            cpu: 1.0,
            mem: 0.5,
            io: 0.0,
        };
        assert!((score(&busy, &w) - 0.65).abs() < 1e-9);
        assert_eq!(score(&Normalised::default(), &w), 0.0);
        assert_eq!(Weights::parse("0.5,0.3,0.2"), Ok(w));
        assert!(Weights::parse("1,2").is_err());
        assert!(Weights::parse("-1,0,0").is_err());
        assert!(Weights::parse("0,0,0").is_err());
    }
}
