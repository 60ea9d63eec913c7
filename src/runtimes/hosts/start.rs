//! Starting a host: spawning the interpreter (python, node) or php-cgi
//! with its descriptors in place, and waiting until it is ready, within
//! [`HOST_START_TIMEOUT_MS`] or the request's own deadline.

use super::*;

impl ScriptHosts {
    /// Starts a host of the pool's function and waits until it is ready,
    /// if the pool has fewer than `live_below` hosts: the place is taken
    /// before the start (a start in progress counts), so calls that start
    /// hosts at once never pass the bound together. Without a place,
    /// [`HostError::AtMaxInstances`].
    pub(super) fn start(
        &self,
        pool: &Pool,
        generation: u64,
        deadline: Instant,
        timeout_ms: u64,
        live_below: usize,
    ) -> Result<Host, HostError> {
        let reserved = pool
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live < live_below).then_some(live + 1)
            });
        let live = match reserved {
            Ok(before) => before + 1,
            Err(_) => {
                return Err(HostError::AtMaxInstances {
                    runtime: pool.runtime.name(),
                    max_instances: pool.max_instances,
                })
            }
        };
        let result = if pool.runtime == Runtime::Php {
            self.start_php(pool, generation, deadline)
        } else {
            self.start_framed(pool, generation, deadline, timeout_ms)
        };
        match result {
            Ok(host) => {
                // Each worker thread holds one host at a time and takes an
                // idle one before it starts another.
                debug_assert!(
                    live <= self
                        .config
                        .hosts_per_function_max
                        .max(self.config.min_instances),
                    "{live} hosts of one function in one worker"
                );
                Ok(host)
            }
            Err(error) => {
                pool.live.fetch_sub(1, Ordering::Relaxed);
                match error {
                    HostError::Load { .. } => {
                        eprintln!("corefn: {error}");
                        *lock(&pool.failed) = Some((generation, error.clone(), Instant::now()));
                    }
                    // This start's own failure (the machine's, not the
                    // code's): said, and the next call tries again.
                    HostError::Spawn { .. } | HostError::Died { .. } => {
                        eprintln!("corefn: {error}")
                    }
                    _ => {}
                }
                Err(error)
            }
        }
    }

    /// The command of a host of `pool`, and the module's path as the host
    /// will see it. Confined, the module is named by its real path (a
    /// symbolic link to it is resolved: the link's directory is not in the
    /// host's view) and the view holds the module's directory, the host
    /// programs and the interpreter; the confinement is the command's last
    /// fork-time step, added by [`Confined::finish`].
    fn host_command(&self, pool: &Pool) -> Result<Confined, HostError> {
        let view = match &self.sandbox {
            Some(sandbox) => {
                let extra = [self.config.scripts_dir.as_path(), pool.program.as_path()];
                sandbox
                    .plan_view(&ViewRequest {
                        module: pool.file.path(),
                        extra: &extra,
                    })
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::NotFound => HostError::ModuleNotFound {
                            runtime: pool.runtime.name(),
                            module: pool.module.clone(),
                        },
                        _ => HostError::Load {
                            runtime: pool.runtime.name(),
                            module: pool.module.clone(),
                            message: format!("cannot prepare the function's view: {e}"),
                        },
                    })?
            }
            None => None,
        };
        let (script, cwd) = match &view {
            Some(view) => (view.module().to_path_buf(), view.cwd().to_path_buf()),
            None => (pool.file.path().to_path_buf(), pool.cwd.clone()),
        };
        let mut args = pool.args.clone();
        if let Some(slot) = pool.module_arg.and_then(|i| args.get_mut(i)) {
            *slot = script.clone().into_os_string();
        }
        let mut command = process::command(&pool.program, &pool.env, Some(&cwd));
        process::die_with_worker(&mut command);
        pool.limits.apply_to(&mut command);
        command.args(&args);
        Ok(Confined {
            command,
            script,
            view,
        })
    }

    /// Starts the host with its stdout and stderr on pipes (drained by
    /// [`Host::drain_output`] after each call).
    pub(super) fn spawn(
        &self,
        pool: &Pool,
        command: &mut std::process::Command,
    ) -> Result<Child, HostError> {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
            .spawn()
            .map_err(|e| spawn_error(pool.runtime.name(), &pool.program, e))
    }

    pub(super) fn start_framed(
        &self,
        pool: &Pool,
        generation: u64,
        deadline: Instant,
        timeout_ms: u64,
    ) -> Result<Host, HostError> {
        let runtime = pool.runtime.name();
        let died = |detail: String| HostError::Died { runtime, detail };
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| died(format!("pipe: {e}")))
        };
        let (requests_read, requests_write) = pipe()?;
        let (responses_read, responses_write) = pipe()?;
        let mut confined = self.host_command(pool)?;
        let command = &mut confined.command;
        command.stdin(Stdio::null());
        let (host_in, host_out) = (requests_read.as_raw_fd(), responses_write.as_raw_fd());
        // SAFETY: runs between fork and exec; fcntl, dup2 and close are
        // async-signal-safe and nothing is allocated.
        unsafe {
            command.pre_exec(move || place_host_fds(host_in, host_out));
        }
        let (child, script) = confined.finish(self, pool)?;
        drop((requests_read, responses_write));
        let requests = File::from(requests_write);
        let mut responses = File::from(responses_read);
        set_nonblocking(requests.as_fd()).map_err(|e| died(e.to_string()))?;
        set_nonblocking(responses.as_fd()).map_err(|e| died(e.to_string()))?;
        let ready = frame::read_frame(&mut responses, 0, deadline);
        // Made before looking at the answer: dropping it stops the child.
        let mut host = Host::new(
            child,
            generation,
            HostIo::Framed {
                requests,
                responses,
            },
            script,
            &self.pids,
        );
        match ready {
            Ok((meta, _)) if meta.ready => Ok(host),
            Ok((meta, _)) => Err(HostError::Load {
                runtime,
                module: pool.module.clone(),
                message: one_line(
                    meta.error
                        .as_deref()
                        .unwrap_or("the host did not say ready"),
                ),
            }),
            Err(FrameError::Timeout) => Err(HostError::Timeout {
                runtime,
                timeout_ms,
            }),
            Err(FrameError::Closed) => Err(HostError::Load {
                runtime,
                module: pool.module.clone(),
                message: format!(
                    "the host exited before it was ready ({}); see the function log",
                    exit_detail(&mut host.child)
                ),
            }),
            Err(error) => Err(HostError::Protocol {
                runtime,
                message: error.to_string(),
            }),
        }
    }

    pub(super) fn start_php(
        &self,
        pool: &Pool,
        generation: u64,
        deadline: Instant,
    ) -> Result<Host, HostError> {
        let id = self.next_socket_id.fetch_add(1, Ordering::Relaxed);
        let (listener, address) = php::listen(id).map_err(|e| HostError::Died {
            runtime: "php",
            detail: format!("cannot make the FastCGI socket: {e}"),
        })?;
        let mut confined = self.host_command(pool)?;
        confined.command.stdin(Stdio::from(OwnedFd::from(listener)));
        let (child, script) = confined.finish(self, pool)?;
        // The listener's backlog takes the connection before php-cgi is up;
        // FCGI_GET_VALUES tells when it serves.
        let stream = UnixStream::connect_addr(&address).map_err(|e| HostError::Died {
            runtime: "php",
            detail: format!("cannot connect to php-cgi: {e}"),
        })?;
        let mut host = Host::new(
            child,
            generation,
            HostIo::FastCgi {
                stream,
                next_request_id: 1,
            },
            script,
            &self.pids,
        );
        if let HostIo::FastCgi { stream, .. } = &mut host.io {
            php::wait_ready(stream, deadline).map_err(|error| match error {
                HostError::Died { detail, .. } => HostError::Load {
                    runtime: "php",
                    module: pool.module.clone(),
                    message: format!(
                        "{detail} ({}); see the function log",
                        exit_detail(&mut host.child)
                    ),
                },
                other => other,
            })?;
        }
        Ok(host)
    }
}

/// A host's command before its last fork-time step.
pub(super) struct Confined {
    command: std::process::Command,
    script: PathBuf,
    view: Option<View>,
}

impl Confined {
    /// Adds the sandbox (network namespace, view, filter) and starts it.
    fn finish(mut self, hosts: &ScriptHosts, pool: &Pool) -> Result<(Child, PathBuf), HostError> {
        if let Some(sandbox) = &hosts.sandbox {
            sandbox.apply_to(&mut self.command, pool.network, self.view, Lifetime::Host);
        }
        let child = hosts.spawn(pool, &mut self.command)?;
        Ok((child, self.script))
    }
}

/// Moves the host's pipe ends to fd 3 and 4 (through fds ≥ 10, so that
/// neither can overwrite the other on the way).
pub(super) fn place_host_fds(requests: i32, responses: i32) -> io::Result<()> {
    // SAFETY: plain descriptor calls in the child between fork and exec.
    unsafe {
        let a = libc::fcntl(requests, libc::F_DUPFD, 10);
        let b = libc::fcntl(responses, libc::F_DUPFD, 10);
        if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(a);
        libc::close(b);
    }
    Ok(())
}

/// A dead host's exit status in the error, when the error is that it died.
pub(super) fn died_detail(error: HostError, host: &mut Host) -> HostError {
    match error {
        HostError::Died { runtime, detail } => {
            // Give the kernel a moment to finish the exit we saw coming.
            let status = exit_detail(&mut host.child);
            HostError::Died {
                runtime,
                detail: format!("{detail}; {status}"),
            }
        }
        other => other,
    }
}

/// "exited with status 1" / "killed by signal 9" / "still running".
pub(super) fn exit_detail(child: &mut Child) -> String {
    use std::os::unix::process::ExitStatusExt;
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                _ => "exited".into(),
            };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    "still running".into()
}

/// Why a host did not start. Missing or not executable: this machine
/// lacks the runtime (501). Anything else is this start's own failure
/// (502, naming it).
fn spawn_error(
    runtime: &'static str,
    program: &std::path::Path,
    error: std::io::Error,
) -> HostError {
    let program = program.display().to_string();
    let message = error.to_string();
    match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            HostError::Unavailable {
                runtime,
                program,
                message,
            }
        }
        _ => HostError::Spawn {
            runtime,
            program,
            message,
        },
    }
}

#[cfg(test)]
mod spawn_tests {
    use super::*;
    use crate::failure::{Failure, FailureKind};
    use crate::http::error::HttpError;

    fn status_of(error: HostError) -> u16 {
        HttpError::Function(Failure::from(error)).status()
    }

    #[test]
    fn a_missing_interpreter_is_501_and_a_failed_start_is_502_naming_it() {
        let program = std::path::Path::new("/usr/bin/python3");
        let missing = spawn_error(
            "python",
            program,
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(matches!(missing, HostError::Unavailable { .. }));
        assert_eq!(status_of(missing), 501);
        for errno in [libc::EINVAL, libc::EMFILE, libc::EAGAIN, libc::E2BIG] {
            let failed = spawn_error("python", program, std::io::Error::from_raw_os_error(errno));
            let text = failed.to_string();
            assert!(
                text.contains("could not be started") && text.contains("/usr/bin/python3"),
                "{text}"
            );
            assert_eq!(Failure::from(failed.clone()).kind, FailureKind::Internal);
            assert_eq!(status_of(failed), 502, "{text}");
        }
    }
}
