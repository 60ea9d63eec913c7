//! The one seam between a worker and the runtimes: [`Runtimes::invoke`]
//! runs one request in the runtime its descriptor names and returns the
//! reply or a typed [`Failure`]. The worker loop, stats and a new runtime
//! each touch this file only.
//!
//! Owns the per-process runtime state (wasm engine and module cache,
//! native libraries, language-host pools, function logs). Runs on the
//! worker's request threads; never writes to the client (the worker does,
//! with the reply this returns).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cgi::{self, CgiRequest, CgiResponse};
use super::descriptor::{Descriptor, Runtime};
use super::exec::{self, ExecCall};
use super::hosts::{self, HostCall, HostsConfig, ScriptHosts};
use super::native::{NativeCall, NativeRuntime, OnExpiry};
use super::sandbox::Sandbox;
use super::settings::RuntimeSettings;
use super::wasm::{WasmCall, WasmConfig, WasmRuntime, MEMORY_MB_MAX_DEFAULT};
use crate::failure::{Failure, FailureKind};

/// Largest response a function may produce (CGI stdout, host or native
/// body).
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Wasm instance slots beyond the request threads: a call that is being
/// torn down still holds its slot for a moment.
const WASM_SPARE_INSTANCES: u32 = 2;

/// What a call printed that a log keeps, per stream, at most this much.
pub const OUTPUT_BYTES_MAX: usize = 256 * 1024;

/// What a call did besides its reply, for stats and logs: filled by the
/// runtime whether the call succeeded or failed.
#[derive(Debug, Default)]
pub struct CallReport {
    /// The call started something new: a language host, a wasm module
    /// loaded into this process, a native library.
    pub cold_start: bool,
    /// Peak memory where the runtime knows it (wasm linear memory).
    pub memory_bytes_peak: Option<u64>,
    /// What the function wrote outside its response (bounded by
    /// [`OUTPUT_BYTES_MAX`] each).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CallReport {
    /// Appends to a captured stream, keeping it within [`OUTPUT_BYTES_MAX`].
    pub fn capture(stream: &mut Vec<u8>, bytes: &[u8]) {
        let room = OUTPUT_BYTES_MAX.saturating_sub(stream.len());
        stream.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// A response ready to be written: its head, and the bytes its body is a
/// range of.
pub struct Reply {
    pub response: CgiResponse,
    pub bytes: Vec<u8>,
}

/// One request for [`Runtimes::invoke`].
pub struct Invocation<'a> {
    pub descriptor: &'a Descriptor,
    pub request: &'a CgiRequest<'a>,
    pub body: &'a [u8],
    /// Makes the answer for a native call that passes its deadline: run on
    /// the watchdog thread, it must answer the client and end the process
    /// (native code cannot be interrupted).
    pub on_native_expiry: &'a dyn Fn() -> OnExpiry,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the wasm runtime: {0}")]
    Wasm(String),
    #[error("cannot set up the language hosts: {0}")]
    Hosts(std::io::Error),
}

pub struct Runtimes {
    functions_dir_absolute: PathBuf,
    /// What every exec child and host starts inside.
    sandbox: Option<Arc<Sandbox>>,
    wasm: WasmRuntime,
    native: NativeRuntime,
    hosts: ScriptHosts,
}

impl Runtimes {
    /// Starts every runtime of one worker process (after fork: wasmtime
    /// starts threads) for `threads` request threads. `work_dir` holds
    /// what the runtimes write for themselves (host programs, native
    /// library copies).
    pub fn start(
        settings: &RuntimeSettings,
        threads: usize,
        work_dir: PathBuf,
    ) -> Result<Runtimes, StartError> {
        let threads_u32 = u32::try_from(threads).unwrap_or(u32::MAX);
        let wasm = WasmRuntime::new(WasmConfig {
            functions_dir: settings.functions_dir.clone(),
            cache_dir: Some(settings.cache_dir.clone()),
            instances_max: threads_u32.saturating_add(WASM_SPARE_INSTANCES),
            memory_mb_max: MEMORY_MB_MAX_DEFAULT,
            stdout_bytes_max: RESPONSE_BYTES_MAX,
        })
        .map_err(|e| StartError::Wasm(e.to_string()))?;
        let sandbox = match Sandbox::new(&work_dir) {
            Ok(sandbox) => Some(sandbox),
            Err(error) => {
                eprintln!("corefn: functions run without a seccomp filter: {error}");
                None
            }
        };
        let hosts = ScriptHosts::new(
            HostsConfig {
                functions_dir: settings.functions_dir.clone(),
                scripts_dir: work_dir.join("hosts"),
                hosts_per_function_max: threads,
                min_instances: settings.host_min_instances,
                idle_ms: settings.host_idle_ms,
                python: hosts::find_program(&settings.python),
                node: hosts::find_program(&settings.node),
                php_cgi: hosts::find_program(&settings.php_cgi),
                response_bytes_max: RESPONSE_BYTES_MAX,
            },
            sandbox.clone(),
        )
        .map_err(StartError::Hosts)?;
        let functions_dir_absolute = std::path::absolute(&settings.functions_dir)
            .unwrap_or_else(|_| settings.functions_dir.clone());
        Ok(Runtimes {
            functions_dir_absolute,
            sandbox,
            native: NativeRuntime::new(settings.functions_dir.clone(), work_dir.join("native")),
            wasm,
            hosts,
        })
    }

    /// Runs the request in its runtime; what the call printed and whether
    /// it was a cold start go into `report`, failed or not.
    pub fn invoke(
        &self,
        invocation: &Invocation<'_>,
        report: &mut CallReport,
    ) -> Result<Reply, Failure> {
        let descriptor = invocation.descriptor;
        let module = descriptor.module.as_deref().unwrap_or_default();
        let timeout_ms = descriptor.timeout_ms;
        let body = invocation.body;
        // Only the CGI runtimes (wasm, exec) take the request as an
        // environment; the others get it as it is.
        let cgi_env = || cgi::environment(invocation.request, &descriptor.env);
        match descriptor.runtime {
            Runtime::Wasm => {
                let output = self.wasm.call_noting_load(
                    &WasmCall {
                        module,
                        timeout_ms,
                        memory_mb: descriptor.memory_mb,
                        env: &cgi_env(),
                        stdin: body,
                    },
                    &mut report.cold_start,
                )?;
                report.memory_bytes_peak = Some(output.memory_bytes_peak as u64);
                CallReport::capture(&mut report.stderr, &output.stderr);
                cgi_reply(output.stdout)
            }
            Runtime::Exec => {
                let stderr = output_file().map_err(|e| {
                    Failure::new(
                        FailureKind::Internal,
                        format_args!("cannot make a file for the function's stderr: {e}"),
                    )
                })?;
                let stderr_copy = stderr.try_clone().map_err(|e| {
                    Failure::new(
                        FailureKind::Internal,
                        format_args!("cannot make a file for the function's stderr: {e}"),
                    )
                })?;
                // Absolute: the program runs in its own directory.
                let program = self.functions_dir_absolute.join(module);
                let stdout = exec::run(ExecCall {
                    program: &program,
                    module,
                    env: &cgi_env(),
                    stdin: body,
                    timeout_ms,
                    stdout_bytes_max: RESPONSE_BYTES_MAX,
                    stderr: Some(stderr_copy),
                    memory_mb: descriptor.memory_mb,
                    sandbox: self.sandbox.as_ref(),
                    network: descriptor.network,
                });
                read_output(stderr, &mut report.stderr);
                cgi_reply(stdout?)
            }
            Runtime::Native => {
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                let output = self.native.call_watched(
                    &NativeCall {
                        module,
                        handler: descriptor.handler.as_deref(),
                        request: invocation.request,
                        body,
                        env: &descriptor.env,
                        body_bytes_max: RESPONSE_BYTES_MAX,
                    },
                    deadline,
                    (invocation.on_native_expiry)(),
                    &mut report.cold_start,
                )?;
                Ok(Reply {
                    response: output.response,
                    bytes: output.body,
                })
            }
            Runtime::Python | Runtime::Node | Runtime::Php => {
                let output = self.hosts.call(
                    &HostCall {
                        runtime: descriptor.runtime,
                        module,
                        handler: descriptor.handler.as_deref(),
                        descriptor_env: &descriptor.env,
                        request: invocation.request,
                        body,
                        timeout_ms,
                        memory_mb: descriptor.memory_mb,
                        network: descriptor.network,
                        min_instances: descriptor.min_instances,
                        max_instances: descriptor.max_instances,
                    },
                    report,
                )?;
                Ok(Reply {
                    response: output.response,
                    bytes: output.bytes,
                })
            }
            Runtime::Static => Err(Failure::new(
                FailureKind::Internal,
                "static routes are answered by the gateway",
            )),
        }
    }

    /// Housekeeping after a response went out: refill host pools.
    pub fn maintain(&self) {
        self.hosts.maintain();
    }

    /// Stops language hosts idle past `--host-idle-ms`.
    pub fn stop_idle(&self) {
        self.hosts.stop_idle();
    }

    /// Processes the runtimes keep alive (language hosts): their load is
    /// the worker's.
    pub fn child_pids(&self) -> Vec<u32> {
        self.hosts.pids()
    }
}

/// An anonymous file for a child's stderr: read back after the call, so a
/// child that writes much never blocks on a pipe nobody reads.
fn output_file() -> std::io::Result<File> {
    let memfd = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .create("corefn-stderr")
        .map_err(std::io::Error::other)?;
    Ok(memfd.into_file())
}

/// What a child wrote to `file`, into `stream` (bounded); a file that
/// cannot be read is said in the stream itself.
fn read_output(mut file: File, stream: &mut Vec<u8>) {
    let read = file.seek(SeekFrom::Start(0)).and_then(|_| {
        let mut bytes = Vec::new();
        file.take(OUTPUT_BYTES_MAX as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) => CallReport::capture(stream, &bytes),
        Err(error) => CallReport::capture(
            stream,
            format!("corefn: cannot read the function's stderr: {error}\n").as_bytes(),
        ),
    }
}

/// A CGI program's stdout as a reply.
fn cgi_reply(stdout: Vec<u8>) -> Result<Reply, Failure> {
    let response = cgi::parse_response(&stdout).map_err(|error| {
        Failure::new(
            FailureKind::Output,
            format_args!("invalid CGI output: {error}"),
        )
    })?;
    Ok(Reply {
        response,
        bytes: stdout,
    })
}
