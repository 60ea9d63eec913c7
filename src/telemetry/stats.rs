//! Per-function stats: what each function's calls did, summed over the
//! cores, and over sliding windows (1 min, 5 min, 1 h).
//!
//! Writers are the cores. Each [`FunctionStats`] holds one [`Shard`] per
//! core, and only that core writes it, with plain relaxed loads and stores
//! (no lock, no read-modify-write atomic on the request path); readers (the
//! control plane, the sampler) sum the shards. A route table carries an
//! `Arc<FunctionStats>` per function route, so a core finds its shard
//! without a lookup.
//!
//! Windows: the sampler thread ([`spawn_sampler`]) stores the summed
//! totals of every function every [`SAMPLE_INTERVAL`] (only when they
//! changed, so an idle function costs nothing); a window is today's totals
//! minus the newest sample at least that old.
//!
//! Durations are microseconds in a log-linear histogram (HdrHistogram's
//! layout: 16 sub-buckets per power of two, so a value is known within
//! 1/16 of itself).
//!
//! Never blocks a core; never allocates on the request path.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::failure::FailureKind;
use crate::sync::lock;

/// Sub-buckets per power of two.
const SUB_BUCKET_BITS: u32 = 4;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Values below 2^40 µs (12.7 days) have their own bucket; longer ones
/// share the last (an overflow bucket).
const OCTAVE_TOP: u32 = 40;
pub const HISTOGRAM_BUCKETS: usize =
    SUB_BUCKETS + (OCTAVE_TOP - SUB_BUCKET_BITS) as usize * SUB_BUCKETS + 1;
/// Status classes 1xx..5xx.
pub const STATUS_CLASSES: usize = 5;

/// How often the sampler stores totals.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Fine samples cover this span; longer windows use coarse samples.
const FINE_SPAN: Duration = Duration::from_secs(5 * 60);
const COARSE_INTERVAL: Duration = Duration::from_secs(60);
const COARSE_SPAN: Duration = Duration::from_secs(60 * 60);
/// The longest window a reader may ask for.
pub const WINDOW_MAX: Duration = COARSE_SPAN;

/// Why a call was turned away before (or instead of) running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Over the function's `rate_limit` (429).
    RateLimit,
    /// Over its `max_concurrency` (503).
    Concurrency,
    /// Every instance slot or host of the worker was taken (503).
    Busy,
    /// No worker with room in time (503).
    NoWorker,
}

impl Throttle {
    pub const ALL: [Throttle; 4] = [
        Throttle::RateLimit,
        Throttle::Concurrency,
        Throttle::Busy,
        Throttle::NoWorker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Throttle::RateLimit => "rate_limit",
            Throttle::Concurrency => "concurrency",
            Throttle::Busy => "busy",
            Throttle::NoWorker => "no_worker",
        }
    }

    /// The position in [`Throttle::ALL`]: stats count by it.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The bucket of a duration in microseconds.
pub fn bucket_of(us: u64) -> usize {
    if us < SUB_BUCKETS as u64 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros(); // >= SUB_BUCKET_BITS
    if octave >= OCTAVE_TOP {
        return HISTOGRAM_BUCKETS - 1;
    }
    let shift = octave - SUB_BUCKET_BITS;
    let sub = ((us >> shift) as usize) & (SUB_BUCKETS - 1);
    SUB_BUCKETS + shift as usize * SUB_BUCKETS + sub
}

/// The smallest value of a bucket.
pub fn bucket_low(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let shift = ((index - SUB_BUCKETS) / SUB_BUCKETS) as u32;
    let sub = ((index - SUB_BUCKETS) % SUB_BUCKETS) as u64;
    (SUB_BUCKETS as u64 + sub) << shift
}

/// One past the largest value of a bucket.
pub fn bucket_high(index: usize) -> u64 {
    if index + 1 >= HISTOGRAM_BUCKETS {
        return u64::MAX;
    }
    bucket_low(index + 1)
}

/// A counter that one thread writes and any thread reads.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    /// Single writer: a load and a store, not a locked add.
    fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one call of a function came to, as a core saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    pub status: u16,
    /// From the request's head to the completion.
    pub duration_us: u64,
    pub failure: Option<FailureKind>,
    pub cold_start: bool,
    pub throttle: Option<Throttle>,
}

/// One core's counters of one function. Aligned so that two cores never
/// write one cache line.
#[repr(align(128))]
#[derive(Debug)]
pub struct Shard {
    status_classes: [Counter; STATUS_CLASSES],
    failures: [Counter; FailureKind::ALL.len()],
    throttles: [Counter; Throttle::ALL.len()],
    cold_starts: Counter,
    in_flight: Counter,
    duration_us_sum: Counter,
    histogram: Box<[Counter]>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            status_classes: Default::default(),
            failures: Default::default(),
            throttles: Default::default(),
            cold_starts: Counter::default(),
            in_flight: Counter::default(),
            duration_us_sum: Counter::default(),
            histogram: (0..HISTOGRAM_BUCKETS).map(|_| Counter::default()).collect(),
        }
    }

    /// A call was handed to a worker.
    pub fn enter(&self) {
        self.in_flight.add(1);
    }

    /// ... and has come back (every `enter` has one `leave`).
    pub fn leave(&self) {
        debug_assert!(self.in_flight.get() > 0, "leave after enter");
        self.in_flight.sub(1);
    }

    /// Counts one answered call of this function.
    pub fn record(&self, outcome: &CallOutcome) {
        let class = usize::from(outcome.status / 100).clamp(1, STATUS_CLASSES) - 1;
        self.status_classes[class].add(1);
        if let Some(kind) = outcome.failure {
            self.failures[kind.index()].add(1);
        }
        if let Some(throttle) = outcome.throttle {
            self.throttles[throttle.index()].add(1);
        }
        if outcome.cold_start {
            self.cold_starts.add(1);
        }
        self.duration_us_sum.add(outcome.duration_us);
        self.histogram[bucket_of(outcome.duration_us)].add(1);
    }
}

/// The stats of one function version (or one hand-written route).
#[derive(Debug)]
pub struct FunctionStats {
    /// The function's name, or the route key of a hand-written route.
    pub name: String,
    /// 0 for a route without a version.
    pub version: u32,
    pub runtime: &'static str,
    created: Instant,
    shards: Box<[Shard]>,
}

impl FunctionStats {
    /// The shard core `core_index` writes.
    pub fn shard(&self, core_index: usize) -> &Shard {
        debug_assert!(core_index < self.shards.len(), "one shard per core");
        &self.shards[core_index.min(self.shards.len() - 1)]
    }

    /// The shards summed now.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in self.shards.iter() {
            for (sum, c) in totals.status_classes.iter_mut().zip(&shard.status_classes) {
                *sum += c.get();
            }
            for (sum, c) in totals.failures.iter_mut().zip(&shard.failures) {
                *sum += c.get();
            }
            for (sum, c) in totals.throttles.iter_mut().zip(&shard.throttles) {
                *sum += c.get();
            }
            totals.cold_starts += shard.cold_starts.get();
            totals.in_flight += shard.in_flight.get();
            totals.duration_us_sum += shard.duration_us_sum.get();
            for (index, c) in shard.histogram.iter().enumerate() {
                let n = c.get();
                if n > 0 {
                    totals.add_to_bucket(index, n);
                }
            }
        }
        totals
    }
}

/// Counters summed over cores (and over time, or over a window).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub status_classes: [u64; STATUS_CLASSES],
    pub failures: [u64; FailureKind::ALL.len()],
    pub throttles: [u64; Throttle::ALL.len()],
    pub cold_starts: u64,
    /// A gauge: not subtracted over windows.
    pub in_flight: u64,
    pub duration_us_sum: u64,
    /// Non-empty buckets, ascending by index.
    histogram: Vec<(u16, u64)>,
}

impl Totals {
    fn add_to_bucket(&mut self, index: usize, n: u64) {
        let index = index as u16;
        match self.histogram.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(at) => self.histogram[at].1 += n,
            Err(at) => self.histogram.insert(at, (index, n)),
        }
    }

    /// Calls answered.
    pub fn count(&self) -> u64 {
        self.status_classes.iter().sum()
    }

    pub fn errors(&self) -> u64 {
        self.status_classes[4]
    }

    pub fn throttled(&self) -> u64 {
        self.throttles.iter().sum()
    }

    /// `self - earlier`, for counters that only grow (`in_flight` stays).
    pub fn since(&self, earlier: &Totals) -> Totals {
        let minus = |a: &[u64], b: &[u64], out: &mut [u64]| {
            for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                *o = x.saturating_sub(*y);
            }
        };
        let mut out = Totals {
            cold_starts: self.cold_starts.saturating_sub(earlier.cold_starts),
            in_flight: self.in_flight,
            duration_us_sum: self.duration_us_sum.saturating_sub(earlier.duration_us_sum),
            ..Totals::default()
        };
        minus(
            &self.status_classes,
            &earlier.status_classes,
            &mut out.status_classes,
        );
        minus(&self.failures, &earlier.failures, &mut out.failures);
        minus(&self.throttles, &earlier.throttles, &mut out.throttles);
        let mut old = earlier.histogram.iter().peekable();
        for &(index, n) in &self.histogram {
            while old.peek().is_some_and(|&&(i, _)| i < index) {
                old.next();
            }
            let before = match old.peek() {
                Some(&&(i, m)) if i == index => m,
                _ => 0,
            };
            if n > before {
                out.histogram.push((index, n - before));
            }
        }
        out
    }

    /// Adds `other` (another version of the same function, say).
    pub fn merge(&mut self, other: &Totals) {
        let plus = |a: &mut [u64], b: &[u64]| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        };
        plus(&mut self.status_classes, &other.status_classes);
        plus(&mut self.failures, &other.failures);
        plus(&mut self.throttles, &other.throttles);
        self.cold_starts += other.cold_starts;
        self.in_flight += other.in_flight;
        self.duration_us_sum += other.duration_us_sum;
        for &(index, n) in &other.histogram {
            self.add_to_bucket(usize::from(index), n);
        }
    }

    /// The duration below which a share `q` (0..=1) of the calls fell, in
    /// microseconds: the highest value of the bucket that holds it (as
    /// HdrHistogram reports it), or 0 without calls.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let count: u64 = self.histogram.iter().map(|&(_, n)| n).sum();
        if count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(index, n) in &self.histogram {
            seen += n;
            if seen >= rank {
                return bucket_high(usize::from(index)).saturating_sub(1);
            }
        }
        self.max_us()
    }

    /// The highest value of the highest non-empty bucket.
    pub fn max_us(&self) -> u64 {
        self.histogram.last().map_or(0, |&(index, _)| {
            bucket_high(usize::from(index)).saturating_sub(1)
        })
    }

    /// Calls with a duration below `bound_us` (bucket by bucket: a bucket
    /// counts when all of it is below), for Prometheus `le` buckets.
    pub fn count_below_us(&self, bound_us: u64) -> u64 {
        self.histogram
            .iter()
            .take_while(|&&(index, _)| bucket_high(usize::from(index)) <= bound_us)
            .map(|&(_, n)| n)
            .sum()
    }
}

/// Stored totals of one function version over time.
#[derive(Debug, Default)]
struct History {
    fine: VecDeque<(Instant, Totals)>,
    coarse: VecDeque<(Instant, Totals)>,
}

impl History {
    fn sample(&mut self, now: Instant, totals: Totals) {
        if self.fine.back().is_none_or(|(_, last)| *last != totals) {
            push_pruned(&mut self.fine, now, totals.clone(), FINE_SPAN);
        }
        let coarse_due = self.coarse.back().is_none_or(|(at, last)| {
            now.saturating_duration_since(*at) >= COARSE_INTERVAL && *last != totals
        });
        if coarse_due {
            push_pruned(&mut self.coarse, now, totals, COARSE_SPAN);
        }
    }

    /// The newest sample taken at or before `at`.
    fn at_or_before(&self, at: Instant, window: Duration) -> Option<&(Instant, Totals)> {
        self.ring(window)
            .iter()
            .rev()
            .find(|(taken, _)| *taken <= at)
    }

    /// The samples a window of `window` reads (fine ones up to
    /// [`FINE_SPAN`], coarse ones beyond).
    fn ring(&self, window: Duration) -> &VecDeque<(Instant, Totals)> {
        if window <= FINE_SPAN {
            &self.fine
        } else {
            &self.coarse
        }
    }
}

/// Appends and drops what no window needs: everything before the newest
/// sample that is at least `span` old (that one is a window's baseline).
fn push_pruned(
    ring: &mut VecDeque<(Instant, Totals)>,
    now: Instant,
    totals: Totals,
    span: Duration,
) {
    ring.push_back((now, totals));
    while ring.len() >= 2 && now.saturating_duration_since(ring[1].0) >= span {
        ring.pop_front();
    }
}

/// Totals over a window and the window's real length (shorter than asked
/// while the function is younger than it).
#[derive(Debug, Clone)]
pub struct Windowed {
    pub totals: Totals,
    pub seconds: f64,
}

type StatsKey = (String, u32);

/// Every function's stats; shared by the route watcher (which makes them),
/// the cores (through their tables), the sampler and the readers.
#[derive(Debug)]
pub struct StatsRegistry {
    cores: usize,
    functions: Mutex<HashMap<StatsKey, Arc<FunctionStats>>>,
    history: Mutex<HashMap<StatsKey, History>>,
}

impl StatsRegistry {
    pub fn new(cores: usize) -> StatsRegistry {
        StatsRegistry {
            cores: cores.max(1),
            functions: Mutex::new(HashMap::new()),
            history: Mutex::new(HashMap::new()),
        }
    }

    /// The stats of `name` at `version`, made on first use.
    pub fn get_or_create(
        &self,
        name: &str,
        version: u32,
        runtime: &'static str,
    ) -> Arc<FunctionStats> {
        let mut functions = lock(&self.functions);
        functions
            .entry((name.to_string(), version))
            .or_insert_with(|| {
                Arc::new(FunctionStats {
                    name: name.to_string(),
                    version,
                    runtime,
                    created: Instant::now(),
                    shards: (0..self.cores).map(|_| Shard::new()).collect(),
                })
            })
            .clone()
    }

    /// Forgets a deleted function (tables that still hold its stats keep
    /// counting into them until they are replaced).
    pub fn remove(&self, name: &str) {
        lock(&self.functions).retain(|(n, _), _| n != name);
        lock(&self.history).retain(|(n, _), _| n != name);
    }

    /// Every version of every function, by name then version.
    pub fn all(&self) -> Vec<Arc<FunctionStats>> {
        let mut all: Vec<_> = lock(&self.functions).values().cloned().collect();
        all.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        all
    }

    /// The versions of one function (or the one route).
    pub fn of(&self, name: &str) -> Vec<Arc<FunctionStats>> {
        self.all().into_iter().filter(|s| s.name == name).collect()
    }

    /// Stores every function's totals (the sampler's tick).
    pub fn sample(&self, now: Instant) {
        let all = self.all();
        let mut history = lock(&self.history);
        for stats in all {
            history
                .entry((stats.name.clone(), stats.version))
                .or_default()
                .sample(now, stats.totals());
        }
    }

    /// The totals of `stats` over the last `window` (at most [`WINDOW_MAX`]).
    pub fn window(&self, stats: &FunctionStats, window: Duration, now: Instant) -> Windowed {
        let window = window.min(WINDOW_MAX);
        let current = stats.totals();
        let history = lock(&self.history);
        let baseline = now.checked_sub(window).and_then(|start| {
            history
                .get(&(stats.name.clone(), stats.version))
                .and_then(|h| h.at_or_before(start, window))
        });
        match baseline {
            Some((taken, totals)) => Windowed {
                totals: current.since(totals),
                seconds: now.saturating_duration_since(*taken).as_secs_f64(),
            },
            // Younger than the window, or no sample that old: since it began.
            None => Windowed {
                totals: current,
                seconds: now
                    .saturating_duration_since(stats.created)
                    .as_secs_f64()
                    .min(window.as_secs_f64()),
            },
        }
    }
}

/// One step of a series: the calls between the sample before and the
/// one taken at `until`.
#[derive(Debug, Clone)]
pub struct SeriesStep {
    pub until: Instant,
    pub seconds: f64,
    pub totals: Totals,
}

impl StatsRegistry {
    /// The calls of `stats` over the last `window`, step by step between
    /// its stored samples (every [`SAMPLE_INTERVAL`] while it is called,
    /// every minute beyond 5 minutes), the last step ending `now`. Steps
    /// without calls are left out: a sample is stored only on change.
    pub fn series(&self, stats: &FunctionStats, window: Duration, now: Instant) -> Vec<SeriesStep> {
        let window = window.min(WINDOW_MAX);
        let start = now.checked_sub(window);
        let history = lock(&self.history);
        let mut points: Vec<(Instant, Totals)> = history
            .get(&(stats.name.clone(), stats.version))
            .map(|h| h.ring(window).iter().cloned().collect())
            .unwrap_or_default();
        drop(history);
        // Before the first sample the totals were zero, when it began.
        points.insert(0, (stats.created, Totals::default()));
        points.push((now, stats.totals()));
        let mut steps = Vec::with_capacity(points.len());
        for pair in points.windows(2) {
            let ((from, before), (until, after)) = (&pair[0], &pair[1]);
            if start.is_some_and(|start| *until <= start) || *until <= *from {
                continue;
            }
            let totals = after.since(before);
            if totals.count() == 0 {
                continue;
            }
            steps.push(SeriesStep {
                until: *until,
                seconds: until.saturating_duration_since(*from).as_secs_f64(),
                totals,
            });
        }
        steps
    }
}

/// Samples `registry` every [`SAMPLE_INTERVAL`], for ever.
pub fn spawn_sampler(registry: Arc<StatsRegistry>) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("corefn-stats".into())
        .spawn(move || loop {
            thread::sleep(SAMPLE_INTERVAL);
            registry.sample(Instant::now());
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(duration_us: u64) -> CallOutcome {
        CallOutcome {
            status: 200,
            duration_us,
            failure: None,
            cold_start: false,
            throttle: None,
        }
    }

    #[test]
    fn buckets_cover_values_within_a_sixteenth() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 39, (1 << 40) - 1]) {
            let b = bucket_of(v);
            assert!(b >= last, "monotonic at {v}");
            last = b;
            assert!(
                bucket_low(b) <= v && v < bucket_high(b),
                "{v} in bucket {b}"
            );
            let width = bucket_high(b) - bucket_low(b);
            assert!(width * 16 <= v.max(16), "{v}: width {width}");
        }
        assert_eq!(bucket_of(u64::MAX), HISTOGRAM_BUCKETS - 1);
        assert_eq!(bucket_high(HISTOGRAM_BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn shards_of_every_core_are_summed() {
        let registry = StatsRegistry::new(2);
        let stats = registry.get_or_create("greet", 1, "wasm");
        for core in 0..2 {
            let shard = stats.shard(core);
            shard.enter();
            shard.record(&ok(100));
            shard.leave();
            shard.record(&CallOutcome {
                status: 502,
                failure: Some(FailureKind::Trap),
                cold_start: true,
                ..ok(2_000)
            });
            shard.record(&CallOutcome {
                status: 429,
                throttle: Some(Throttle::RateLimit),
                ..ok(5)
            });
        }
        stats.shard(1).enter();
        let totals = stats.totals();
        assert_eq!(totals.count(), 6);
        assert_eq!(totals.status_classes, [0, 2, 0, 2, 2]);
        assert_eq!(totals.failures[FailureKind::Trap.index()], 2);
        assert_eq!(totals.throttles[Throttle::RateLimit.index()], 2);
        assert_eq!(totals.cold_starts, 2);
        assert_eq!(totals.in_flight, 1);
        assert_eq!(totals.duration_us_sum, 2 * 2_105);
        // Same name and version: the same stats.
        assert!(Arc::ptr_eq(
            &stats,
            &registry.get_or_create("greet", 1, "wasm")
        ));
    }

    #[test]
    fn a_series_has_the_calls_between_samples_and_skips_quiet_steps() {
        let registry = StatsRegistry::new(1);
        let stats = registry.get_or_create("f", 1, "exec");
        let t0 = stats.created;
        for _ in 0..3 {
            stats.shard(0).record(&ok(100));
        }
        registry.sample(t0 + Duration::from_secs(5));
        // Nothing between the second and the third tick.
        registry.sample(t0 + Duration::from_secs(10));
        for _ in 0..2 {
            stats.shard(0).record(&ok(10_000));
        }
        let now = t0 + Duration::from_secs(15);
        let steps = registry.series(&stats, Duration::from_secs(60), now);
        let counts: Vec<u64> = steps.iter().map(|s| s.totals.count()).collect();
        assert_eq!(counts, [3, 2], "{steps:?}");
        assert_eq!(steps[0].until, t0 + Duration::from_secs(5));
        assert_eq!(steps[1].until, now);
        // The second step began at the last stored sample (the quiet tick
        // stored none).
        assert!((steps[1].seconds - 10.0).abs() < 1e-9, "{steps:?}");
        assert!(steps[1].totals.quantile_us(0.5) >= 9_000);
        // A window that starts after the first step leaves it out.
        let recent = registry.series(&stats, Duration::from_secs(8), now);
        assert_eq!(recent.len(), 1, "{recent:?}");
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let registry = StatsRegistry::new(1);
        let stats = registry.get_or_create("f", 0, "exec");
        for us in 1..=1000 {
            stats.shard(0).record(&ok(us));
        }
        let totals = stats.totals();
        let p50 = totals.quantile_us(0.5);
        assert!((470..=530).contains(&p50), "p50 {p50}");
        let p99 = totals.quantile_us(0.99);
        assert!((960..=1030).contains(&p99), "p99 {p99}");
        assert!((1000..=1023).contains(&totals.max_us()));
        assert_eq!(totals.count_below_us(16), 15);
        assert_eq!(totals.count_below_us(u64::MAX), 1000);
    }

    #[test]
    fn a_window_subtracts_the_sample_at_its_start() {
        let registry = StatsRegistry::new(1);
        let stats = registry.get_or_create("f", 2, "wasm");
        let start = Instant::now();
        stats.shard(0).record(&ok(10));
        registry.sample(start);
        stats.shard(0).record(&ok(20));
        stats.shard(0).record(&ok(30));
        let later = start + Duration::from_secs(70);
        registry.sample(later);
        stats.shard(0).record(&ok(40));
        let now = start + Duration::from_secs(65);
        // 1 min ending 65 s after the first sample: that sample is the baseline.
        let w = registry.window(&stats, Duration::from_secs(60), now);
        assert_eq!(w.totals.count(), 3);
        assert!((w.seconds - 65.0).abs() < 0.01);
        // 40 µs is in the bucket 40..42: its highest value.
        assert_eq!(w.totals.quantile_us(1.0), 41);
        // A window longer than the history: everything since the start.
        let w = registry.window(&stats, Duration::from_secs(3600), later);
        assert_eq!(w.totals.count(), 4);
        // Deleted: gone from the registry.
        registry.remove("f");
        assert!(registry.of("f").is_empty());
    }

    #[test]
    fn an_idle_function_stores_no_new_samples_and_old_ones_are_pruned() {
        let mut history = History::default();
        let start = Instant::now();
        let mut totals = Totals::default();
        for tick in 0..200u64 {
            if tick % 2 == 0 {
                totals.status_classes[1] += 1;
            }
            history.sample(start + SAMPLE_INTERVAL * tick as u32, totals.clone());
        }
        // Changed every other tick: one sample per change, pruned to the span.
        let span_samples = (FINE_SPAN.as_secs() / (2 * SAMPLE_INTERVAL.as_secs())) as usize;
        assert!(
            history.fine.len() <= span_samples + 2,
            "{}",
            history.fine.len()
        );
        let before = history.fine.len();
        let end = start + SAMPLE_INTERVAL * 200;
        for tick in 0..10u32 {
            history.sample(end + SAMPLE_INTERVAL * tick, totals.clone());
        }
        assert!(history.fine.len() <= before);
    }

    #[test]
    fn versions_merge() {
        let registry = StatsRegistry::new(1);
        let a = registry.get_or_create("f", 1, "wasm");
        let b = registry.get_or_create("f", 2, "wasm");
        a.shard(0).record(&ok(10));
        b.shard(0).record(&ok(1000));
        let mut sum = a.totals();
        sum.merge(&b.totals());
        assert_eq!(sum.count(), 2);
        assert_eq!(sum.quantile_us(1.0), 1023);
        assert_eq!(registry.of("f").len(), 2);
    }
}
