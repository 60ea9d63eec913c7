//! `corefn-bench`: the load generator of corefn's benchmarks.
//!
//! `corefn-bench [OPTIONS] URL` runs closed-loop or constant-rate (open-loop,
//! corrected for coordinated omission) HTTP/1.1 load against a loopback
//! target, prints a live progress line on stderr and a table on stdout, and
//! can save JSON, `.hgrm` and SVG outputs. `corefn-bench plot` overlays saved
//! runs in one SVG.
//!
//! This file owns the run's timeline (start the connections, sample CPU at
//! the window's edges, report progress, collect) and the outputs' files.
//! Load goes only to this machine: `args` refuses any non-loopback target.
//!
//! ```text
//! args.rs       command line, limits, loopback check, request bytes
//! load.rs       pacing, the per-connection request loop, HTTP responses
//! histogram.rs  latency histograms, percentiles, .hgrm text
//! cpu.rs        server CPU time from /proc
//! report.rs     the table and the JSON report
//! plot.rs       latency-by-percentile SVG
//! ```

mod args;
mod cpu;
mod histogram;
mod load;
mod plot;
mod report;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::Parser;

use args::{Config, PlotArgs, RunArgs};
use load::Load;
use report::{CpuWindow, Report};

/// Interval of the progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let result = if argv.get(1).map(String::as_str) == Some("plot") {
        let plot_argv =
            std::iter::once("corefn-bench plot".to_string()).chain(argv[2..].iter().cloned());
        plot_command(PlotArgs::parse_from(plot_argv))
    } else {
        run_command(RunArgs::parse())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("corefn-bench: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(args: RunArgs) -> Result<(), String> {
    let (json, hgrm, svg) = (args.json.clone(), args.hgrm.clone(), args.svg.clone());
    let config = Arc::new(args.into_config()?);
    if let Some(pid) = config.server_pid {
        cpu::sample(pid).map_err(|e| format!("--server-pid {pid}: {e}"))?;
    }
    let (stats, cpu) = run(&config)?;
    let report = Report::new(&config, &stats, &cpu);
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n";
        write_file(&path, text.as_bytes())?;
    }
    if let Some(path) = hgrm {
        let mut text = Vec::new();
        stats
            .latency
            .write_hgrm(&mut text)
            .map_err(|e| e.to_string())?;
        write_file(&path, &text)?;
    }
    if let Some(path) = svg {
        let curve = plot::Curve {
            label: label_of(&path),
            points: report.percentiles.clone(),
        };
        write_file(&path, plot::render_svg(&report.target, &[curve]).as_bytes())?;
    }
    Ok(())
}

/// Runs the load and samples CPU at the measured window's edges.
fn run(config: &Arc<Config>) -> Result<(load::Stats, CpuWindow), String> {
    let load = Load::start(config.clone()).map_err(|e| format!("start connections: {e}"))?;
    let window_start = Duration::from_nanos(load.window.start_ns);
    let window_end = Duration::from_nanos(load.window.end_ns);
    let sample = |pid: Option<u32>| (pid.and_then(|p| cpu::sample(p).ok()), cpu::self_cpu_us());
    // The timeline: progress every second, CPU samples at both window edges.
    let mut cpu_start = if window_start.is_zero() {
        Some(sample(config.server_pid))
    } else {
        None
    };
    let mut next_progress = PROGRESS_INTERVAL;
    let mut last_completed = 0u64;
    loop {
        let elapsed = load.run_start.elapsed();
        if cpu_start.is_none() && elapsed >= window_start {
            cpu_start = Some(sample(config.server_pid));
        }
        if elapsed >= next_progress && next_progress <= window_end {
            let completed = load.progress.completed.load(Ordering::Relaxed);
            let errors = load.progress.errors.load(Ordering::Relaxed);
            // The phase of the second that just ended.
            let phase = if next_progress <= window_start {
                "warm-up"
            } else {
                "measure"
            };
            eprintln!(
                "[{:>6.1}s] {phase:<7}  requests {completed:>10}  req/s {:>9}  errors {errors}",
                elapsed.as_secs_f64(),
                completed - last_completed,
            );
            last_completed = completed;
            next_progress += PROGRESS_INTERVAL;
        }
        if elapsed >= window_end {
            break;
        }
        let mut wake = next_progress.min(window_end);
        if cpu_start.is_none() {
            wake = wake.min(window_start);
        }
        thread::sleep(
            wake.saturating_sub(load.run_start.elapsed())
                .max(Duration::from_millis(1)),
        );
    }
    let cpu_end = sample(config.server_pid);
    let (server_start, client_start) = cpu_start.expect("sampled at the window's start");
    let stats = load.join();
    let server = match (server_start, cpu_end.0, config.server_pid) {
        (Some(a), Some(b), Some(pid)) => {
            Some((pid, b.processes, b.cpu_us.saturating_sub(a.cpu_us)))
        }
        (_, _, Some(pid)) => {
            eprintln!(
                "corefn-bench: could not sample the CPU of pid {pid} at both ends of the window"
            );
            None
        }
        _ => None,
    };
    let client_cpu_us = match (client_start, cpu_end.1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok((
        stats,
        CpuWindow {
            server,
            client_cpu_us,
        },
    ))
}

fn plot_command(args: PlotArgs) -> Result<(), String> {
    let mut curves = Vec::new();
    for path in &args.runs {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a corefn-bench JSON report: {e}", path.display()))?;
        curves.push(plot::Curve {
            label: label_of(path),
            points: report.percentiles,
        });
    }
    write_file(
        &args.svg,
        plot::render_svg("Latency by percentile", &curves).as_bytes(),
    )
}

/// A run's label: its file name without the extension.
fn label_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
}
