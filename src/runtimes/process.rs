//! Child processes of a worker (exec functions, language hosts): how they
//! are started, waited for with a deadline, and ended.
//!
//! Every child gets a process group of its own (so that a timeout kills what
//! it forked too) and only the descriptors it is given: everything of the
//! worker's is close-on-exec. Every child also gets [`ChildLimits`] and the
//! [`super::sandbox`], set between fork and exec; long-lived children
//! (language hosts) also die with the worker ([`die_with_worker`]).
//! Nothing here decides an HTTP status.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Variables every child gets unless the descriptor's `env` sets them,
/// with the worker's own value where it has one: scripts find their
/// interpreters (`#!/usr/bin/env python3`) where corefn found them, and
/// decode UTF-8 the same way on every machine.
pub const BASE_ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/"),
    ("LANG", "C.UTF-8"),
];

/// A command with nothing else inherited: `env` is the whole environment
/// (plus [`BASE_ENV`] where it is silent), the working directory is `cwd`.
pub fn command(program: &Path, env: &[(String, String)], cwd: Option<&Path>) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    for (name, default) in BASE_ENV {
        if !env.iter().any(|(n, _)| n == name) {
            match std::env::var_os(name) {
                Some(value) => command.env(name, value),
                None => command.env(name, default),
            };
        }
    }
    command.envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    command.process_group(0);
    command
}

/// Makes `command` a long-lived child's: SIGKILL when the worker dies
/// (the thread that forked, in fact: start them from the request threads),
/// and SIGINT back to its default (the worker ignores it, and exec keeps
/// ignored signals ignored).
pub fn die_with_worker(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (prctl, signal); it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// The largest file a function's process may write (`RLIMIT_FSIZE`): past
/// it the write fails (SIGXFSZ is ignored in the child).
pub const FUNCTION_FILE_BYTES_MAX: u64 = 256 << 20;
/// Descriptors a function's process may hold at once (`RLIMIT_NOFILE`).
pub const FUNCTION_FILES_MAX: u64 = 1024;

/// What a function's process (a language host, an exec child) may use,
/// set in the child before it runs anything of the function's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// The descriptor's `memory_mb`: `RLIMIT_DATA` (heap and private
    /// writable mappings). Not `RLIMIT_AS`: V8 reserves gigabytes of
    /// address space it never touches, and the reserve is not memory.
    pub memory_mb: u64,
}

impl ChildLimits {
    /// Adds the limits to `command`'s fork-time steps: memory, no core
    /// dumps, the file size and descriptor bounds above.
    pub fn apply_to(self, command: &mut Command) {
        let memory_bytes = self.memory_mb.saturating_mul(1 << 20);
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (setrlimit, signal); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                for (resource, bytes) in [
                    (libc::RLIMIT_DATA, memory_bytes),
                    (libc::RLIMIT_CORE, 0),
                    (libc::RLIMIT_FSIZE, FUNCTION_FILE_BYTES_MAX),
                    (libc::RLIMIT_NOFILE, FUNCTION_FILES_MAX),
                ] {
                    let limit = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }
}

/// SIGKILL to the child's whole process group, then reap it. Never fails:
/// a child that is already gone is simply reaped.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory effects; the group is the child's own
        // (process_group(0)), so nothing else is hit.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until one of `fds` is ready for its events or `deadline` passes;
/// returns the revents of each (all empty on timeout). EINTR is retried.
pub fn poll_until(
    fds: &[(BorrowedFd<'_>, PollFlags)],
    deadline: Instant,
) -> io::Result<Vec<PollFlags>> {
    let mut poll_fds: Vec<PollFd> = fds
        .iter()
        .map(|(fd, events)| PollFd::new(*fd, *events))
        .collect();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(vec![PollFlags::empty(); fds.len()]);
        }
        let left_ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        match poll(&mut poll_fds, PollTimeout::from(left_ms)) {
            Ok(0) => continue,
            Ok(_) => {
                return Ok(poll_fds
                    .iter()
                    .map(|p| p.revents().unwrap_or(PollFlags::empty()))
                    .collect())
            }
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// Sets O_NONBLOCK on a descriptor this process owns.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only change the descriptor's status flags.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
