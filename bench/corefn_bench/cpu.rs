//! CPU time of the server under test, read from `/proc`.
//!
//! A sample is utime + stime of one process (all its threads) plus those of
//! its direct children (corefn's worker processes), from `/proc/PID/stat` and
//! every `/proc/*/stat` whose ppid is that pid. Two samples, taken at the
//! start and at the end of the measured window, give the server's CPU time
//! for the requests completed in between. Linux only; reads, never signals.

use std::fs;
use std::io;

/// CPU time of a process tree at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// utime + stime of the process and its children, in microseconds.
    pub cpu_us: u64,
    /// How many processes were counted (the process itself included).
    pub processes: u32,
}

/// Fields of `/proc/PID/stat` that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatLine {
    ppid: u32,
    cpu_ticks: u64,
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces or parentheses, so fields are
/// counted from the last `)`.
fn parse_stat(line: &str) -> Option<StatLine> {
    let rest = &line[line.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(StatLine {
        ppid,
        cpu_ticks: utime + stime,
    })
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn read_stat(pid: u32) -> Option<StatLine> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Samples the CPU time of `pid` and of its direct children. Fails when
/// `pid` itself is gone; children that exit while being read are skipped.
pub fn sample(pid: u32) -> io::Result<CpuSample> {
    let own = read_stat(pid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no readable /proc/{pid}/stat (is the server running?)"),
        )
    })?;
    let mut ticks = own.cpu_ticks;
    let mut processes = 1;
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if child == pid {
            continue;
        }
        if let Some(stat) = read_stat(child) {
            if stat.ppid == pid {
                ticks += stat.cpu_ticks;
                processes += 1;
            }
        }
    }
    Ok(CpuSample {
        cpu_us: ticks * 1_000_000 / clock_ticks_per_s(),
        processes,
    })
}

/// CPU time of this process (the load generator), in microseconds.
pub fn self_cpu_us() -> Option<u64> {
    let stat = parse_stat(&fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(stat.cpu_ticks * 1_000_000 / clock_ticks_per_s())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line =
            "4242 (corefn (x) y) S 17 4242 17 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 3 0 1 0 0";
        assert_eq!(
            parse_stat(line),
            Some(StatLine {
                ppid: 17,
                cpu_ticks: 325
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.processes >= 1);
        assert!(self_cpu_us().is_some());
    }
}
