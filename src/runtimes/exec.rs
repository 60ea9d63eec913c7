//! The `exec` runtime: any executable under the CGI contract, one process
//! per request. The request body is its stdin, the request its environment
//! ([`super::cgi::environment`]), its stdout the CGI response; its stderr
//! goes straight to the function's log file. It starts under the same
//! limits and sandbox as a language host ([`super::process::ChildLimits`],
//! [`super::sandbox`]): its own view and pid namespace, and without
//! `network` the worker's empty network namespace.
//!
//! The call owns the child from spawn to reap: stdin is written and stdout
//! read in one poll loop (a child may answer before it reads its input, so
//! neither side can block the other), and past the deadline or the stdout
//! cap the child's whole process group is killed and reaped; confined, the
//! call's pid namespace ends with it, taking what left the group along.
//! No zombie and no stray grandchild outlives a call. Never writes to the client, never
//! decides an HTTP status.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ChildStdin, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use thiserror::Error;

use super::process::{self, kill_and_reap, poll_until, ChildLimits};
use super::sandbox::{Lifetime, Sandbox, View, ViewRequest};
use crate::failure::{Failure, FailureKind};

/// Bytes read from the child's stdout per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// One invocation.
pub struct ExecCall<'a> {
    pub program: &'a Path,
    /// The descriptor's `module`, for messages (never the resolved path).
    pub module: &'a str,
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    pub timeout_ms: u64,
    /// Stdout beyond this is [`ExecError::StdoutTooLarge`].
    pub stdout_bytes_max: usize,
    /// Where the child's stderr goes (the function's log); taken by the call.
    pub stderr: Option<File>,
    /// The descriptor's `memory_mb`: the child's data limit.
    pub memory_mb: u64,
    /// The confinement the child starts in (`None` where no seccomp filter
    /// could be built), and whether it keeps the worker's network.
    pub sandbox: Option<&'a Arc<Sandbox>>,
    pub network: bool,
}

#[derive(Debug, Error)]
pub enum ExecError {
    #[error("exec function {module:?} not found")]
    NotFound { module: String },
    #[error("exec function {module:?} cannot be started: {message}")]
    Spawn { module: String, message: String },
    #[error("exec function did not finish within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("exec function wrote more than {limit_bytes} bytes to stdout")]
    StdoutTooLarge { limit_bytes: usize },
    #[error("exec function exited with status {code}")]
    Exit { code: i32 },
    #[error("exec function was killed by signal {signal}")]
    Signal { signal: i32 },
    #[error("exec function I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl From<ExecError> for Failure {
    fn from(error: ExecError) -> Failure {
        let kind = match &error {
            ExecError::Timeout { timeout_ms } => return Failure::timeout(*timeout_ms),
            ExecError::NotFound { .. } | ExecError::Spawn { .. } => FailureKind::Load,
            ExecError::StdoutTooLarge { .. } => FailureKind::Output,
            ExecError::Exit { .. } => FailureKind::Exit,
            ExecError::Signal { .. } => FailureKind::Crash,
            ExecError::Io(_) => FailureKind::Internal,
        };
        Failure::new(kind, error)
    }
}

/// Runs the program to completion; returns its stdout.
pub fn run(mut call: ExecCall<'_>) -> Result<Vec<u8>, ExecError> {
    let deadline = Instant::now() + Duration::from_millis(call.timeout_ms.max(1));
    let not_found = || ExecError::NotFound {
        module: call.module.to_string(),
    };
    // Confined, the program is started by its real path: the view holds
    // its directory there (a symbolic link's own directory is not in it).
    let view = match call.sandbox {
        Some(sandbox) => sandbox
            .plan_view(&ViewRequest {
                module: call.program,
                extra: &[],
            })
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => not_found(),
                _ => ExecError::Spawn {
                    module: call.module.to_string(),
                    message: format!("cannot prepare the function's view: {e}"),
                },
            })?,
        None => None,
    };
    let program = view.as_ref().map_or(call.program, View::module);
    let mut command = process::command(program, call.env, program.parent());
    // Fork-time steps: the child is forked instead of spawned with
    // posix_spawn, the price of starting it confined.
    ChildLimits {
        memory_mb: call.memory_mb,
    }
    .apply_to(&mut command);
    if let Some(sandbox) = call.sandbox {
        sandbox.apply_to(&mut command, call.network, view, Lifetime::Call);
    }
    command
        .arg0(call.module)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(call.stderr.take().ok_or_else(|| {
            io::Error::other("exec call without a stderr file")
        })?));
    let mut child = command.spawn().map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => not_found(),
        _ => ExecError::Spawn {
            module: call.module.to_string(),
            message: error.to_string(),
        },
    })?;
    let result = exchange(&mut child, &call, deadline);
    match result {
        Ok(stdout) => match wait_for_exit(&mut child, deadline) {
            Ok(Some(status)) => match (status.code(), status.signal()) {
                (Some(0), _) => Ok(stdout),
                (Some(code), _) => Err(ExecError::Exit { code }),
                (None, Some(signal)) => Err(ExecError::Signal { signal }),
                (None, None) => Err(ExecError::Exit { code: -1 }),
            },
            Ok(None) => {
                kill_and_reap(&mut child);
                Err(ExecError::Timeout {
                    timeout_ms: call.timeout_ms,
                })
            }
            Err(error) => {
                kill_and_reap(&mut child);
                Err(error.into())
            }
        },
        Err(error) => {
            kill_and_reap(&mut child);
            Err(error)
        }
    }
}

/// Feeds stdin and drains stdout until stdout reaches end of file.
fn exchange(
    child: &mut std::process::Child,
    call: &ExecCall<'_>,
    deadline: Instant,
) -> Result<Vec<u8>, ExecError> {
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("child has no stdout pipe"))?;
    if let Some(pipe) = &stdin {
        process::set_nonblocking(pipe.as_fd())?;
    }
    process::set_nonblocking(stdout.as_fd())?;
    let mut written = 0;
    if call.stdin.is_empty() {
        stdin = None;
    }
    let mut output = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let mut fds = vec![(stdout.as_fd(), PollFlags::POLLIN)];
        if let Some(pipe) = &stdin {
            fds.push((pipe.as_fd(), PollFlags::POLLOUT));
        }
        let ready = poll_until(&fds, deadline)?;
        if ready.iter().all(PollFlags::is_empty) {
            return Err(ExecError::Timeout {
                timeout_ms: call.timeout_ms,
            });
        }
        if let (Some(pipe), Some(events)) = (stdin.as_mut(), ready.get(1)) {
            if !events.is_empty() {
                match pipe.write(&call.stdin[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The child closed its stdin: it wants no more input.
                    Err(_) => written = call.stdin.len(),
                }
                if written >= call.stdin.len() {
                    stdin = None;
                }
            }
        }
        if !ready[0].is_empty() {
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) => return Ok(output),
                    Ok(n) => {
                        if output.len() + n > call.stdout_bytes_max {
                            return Err(ExecError::StdoutTooLarge {
                                limit_bytes: call.stdout_bytes_max,
                            });
                        }
                        output.extend_from_slice(&chunk[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// The exit status, or `None` when the child is still running at the
/// deadline (it closed stdout but did not exit). Waits on a pidfd, which
/// becomes readable when the child exits: a child that closed stdout is
/// usually a few microseconds from its exit, and a sleep-and-retry would
/// cost every request a whole sleep.
fn wait_for_exit(
    child: &mut std::process::Child,
    deadline: Instant,
) -> io::Result<Option<std::process::ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created for us alone.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as i32) };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let ready = poll_until(&[(pidfd.as_fd(), PollFlags::POLLIN)], deadline)?;
        if ready[0].is_empty() {
            return child.try_wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn call<'a>(
        program: &'a Path,
        env: &'a [(String, String)],
        stdin: &'a [u8],
        timeout_ms: u64,
    ) -> ExecCall<'a> {
        ExecCall {
            program,
            module: "test.sh",
            env,
            stdin,
            timeout_ms,
            stdout_bytes_max: 4 * 1024 * 1024,
            stderr: Some(tempfile::tempfile().expect("stderr file")),
            memory_mb: 128,
            sandbox: None,
            network: true,
        }
    }

    #[test]
    fn stdin_and_environment_reach_the_program_and_stdout_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = script(
            dir.path(),
            "echo.sh",
            "printf 'Status: 201\\n\\n%s:' \"$GREETING\"; cat",
        );
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let stdout = run(call(&program, &env, b"body bytes", 5000)).expect("runs");
        assert_eq!(stdout, b"Status: 201\n\nhi:body bytes");
    }

    #[test]
    fn a_large_body_does_not_deadlock_against_early_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Writes before reading: a worker that wrote all of stdin first
        // would block on a full pipe while the child blocks on stdout.
        let program = script(dir.path(), "cat.sh", "head -c 200000 /dev/zero; cat");
        let body = vec![b'x'; 1_000_000];
        let stdout = run(call(&program, &[], &body, 10_000)).expect("runs");
        assert_eq!(stdout.len(), 1_200_000);
    }

    #[test]
    fn a_program_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("child.pid");
        let program = script(
            dir.path(),
            "spin.sh",
            &format!("sleep 30 & echo $! > {}; wait", marker.display()),
        );
        let started = Instant::now();
        let error = run(call(&program, &[], b"", 300)).expect_err("times out");
        assert!(matches!(error, ExecError::Timeout { .. }), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed promptly"
        );
        let pid: i32 = std::fs::read_to_string(&marker)
            .expect("grandchild pid")
            .trim()
            .parse()
            .expect("pid");
        // The grandchild was in the same group and got SIGKILL too.
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            // SAFETY: signal 0 only checks for existence.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            !alive
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
        });
        assert!(gone, "grandchild {pid} was killed");
    }

    #[test]
    fn failures_are_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exit = script(dir.path(), "exit.sh", "exit 3");
        assert!(matches!(
            run(call(&exit, &[], b"", 5000)),
            Err(ExecError::Exit { code: 3 })
        ));
        let missing = dir.path().join("missing.sh");
        assert!(matches!(
            run(call(&missing, &[], b"", 5000)),
            Err(ExecError::NotFound { .. })
        ));
        let big = script(dir.path(), "big.sh", "head -c 5000000 /dev/zero");
        assert!(matches!(
            run(call(&big, &[], b"", 5000)),
            Err(ExecError::StdoutTooLarge { .. })
        ));
        let killed = script(dir.path(), "kill.sh", "kill -9 $$");
        assert!(matches!(
            run(call(&killed, &[], b"", 5000)),
            Err(ExecError::Signal { signal: 9 })
        ));
    }
}
