//! The `wasm` runtime: WebAssembly modules run as CGI-style WASI (preview 1)
//! commands under wasmtime. The request body is stdin, the request is in the
//! environment (see [`super::cgi::environment`]), stdout is the CGI response
//! (see [`super::cgi::parse_response`]).
//!
//! One [`WasmRuntime`] per worker process owns the engine, the pooling
//! allocator sized for that process, the module cache (memory and disk) and
//! one epoch ticker thread. Calls come from any number of threads at once:
//! each call gets its own store, instance and pipes, instantiated from a
//! pre-linked `InstancePre` into a pooled slot with copy-on-write memory
//! (microseconds, not a compile).
//!
//! Every way a function can fail is a [`WasmError`] and leaves the runtime
//! serving: traps, non-zero exits, the deadline (epoch interruption for wasm
//! code, a bounded `poll_oneoff` for sleeps), the memory cap (a failed
//! `memory.grow` is a trap) and oversized output. This module never writes
//! to the client and never decides HTTP statuses; it never panics on what a
//! module, its file or the cache directory holds.
//!
//! Calls run on the caller's stack: worker threads need room for
//! [`WASM_STACK_BYTES_MAX`] plus the host frames (Rust's default 2 MiB
//! thread stack is enough).

mod disk_cache;
mod host;
mod modules;
mod poll_guard;
mod ticker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use thiserror::Error;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, PoolConcurrencyLimitError,
    PoolingAllocationConfig, Store, Trap, WasmBacktraceDetails,
};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use disk_cache::DiskCache;
use host::Host;
use modules::{Modules, ENTRY_POINT};
use ticker::Ticker;

use crate::failure::{Failure, FailureKind};

pub use crate::runtimes::file_stamp::FILE_CHECK_INTERVAL_MS;
pub use modules::{WasmStats, MODULES_CACHED_MAX, MODULE_BYTES_MAX};

const MIB: u64 = 1024 * 1024;

/// Default for [`WasmConfig::instances_max`].
pub const INSTANCES_MAX_DEFAULT: u32 = 16;
/// Default for [`WasmConfig::memory_mb_max`].
pub const MEMORY_MB_MAX_DEFAULT: u64 = 512;
/// A 32-bit wasm memory cannot be larger.
pub const MEMORY_MB_MAX_LIMIT: u64 = 4096;
/// Default for [`WasmConfig::stdout_bytes_max`].
pub const STDOUT_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Captured stderr per call; writes past it fail inside the guest.
pub const STDERR_BYTES_MAX: usize = 64 * 1024;
/// Guest call stack (wasmtime's default), taken from the calling thread.
pub const WASM_STACK_BYTES_MAX: usize = 512 * 1024;
/// Elements per table; larger tables fail to instantiate.
pub const TABLE_ELEMENTS_MAX: usize = 64 * 1024;

/// Guard pages after each pooled memory: out-of-bounds accesses with a
/// constant offset up to this land in them and trap without a check.
const MEMORY_GUARD_BYTES: u64 = 32 * MIB;
/// Low bytes of each linear memory (and table) that are reset with memset
/// (guided by the PAGEMAP_SCAN ioctl where the kernel has it, 6.7+) rather
/// than `madvise`, so that a reused slot does not page-fault them back in.
const MEMORY_KEEP_RESIDENT_BYTES: usize = 1024 * 1024;
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 * 1024;

/// How one worker process's wasm runtime is sized. Fixed for its life: the
/// pool is reserved up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmConfig {
    /// Module paths of descriptors are relative to it (absolute ones are
    /// taken as they are).
    pub functions_dir: PathBuf,
    /// On-disk cache of compiled modules, shared by worker processes;
    /// `None` keeps compiled code in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Instances alive at once in this process (pool slots). A call beyond
    /// it fails with [`WasmError::Busy`]: run at most this many calling
    /// threads.
    pub instances_max: u32,
    /// The largest `memory_mb` a call may ask for (the pool slot size, at
    /// most [`MEMORY_MB_MAX_LIMIT`]); a call asking more is refused with
    /// [`WasmError::MemoryOverSlot`]. Descriptors are checked against
    /// [`MEMORY_MB_MAX_DEFAULT`], the size workers use.
    /// Address space reserved up front: `instances_max × (memory_mb_max +
    /// 32 MiB guard)`, e.g. 16 × 544 MiB ≈ 8.5 GiB, virtual only. At 4096
    /// compiled code needs no bounds checks, at 4 GiB per slot.
    pub memory_mb_max: u64,
    /// Captured stdout per call (headers and body); more is
    /// [`WasmError::StdoutTooLarge`].
    pub stdout_bytes_max: usize,
}

impl WasmConfig {
    /// Defaults for everything but the functions directory; no disk cache.
    pub fn new(functions_dir: impl Into<PathBuf>) -> WasmConfig {
        WasmConfig {
            functions_dir: functions_dir.into(),
            cache_dir: None,
            instances_max: INSTANCES_MAX_DEFAULT,
            memory_mb_max: MEMORY_MB_MAX_DEFAULT,
            stdout_bytes_max: STDOUT_BYTES_MAX_DEFAULT,
        }
    }
}

/// One invocation.
#[derive(Debug, Clone, Copy)]
pub struct WasmCall<'a> {
    /// The descriptor's `module`: a `.wasm` or `.wat` file.
    pub module: &'a str,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    /// The whole environment (see [`super::cgi::environment`]).
    pub env: &'a [(String, String)],
    /// The request body.
    pub stdin: &'a [u8],
}

/// What a function printed; stdout is a CGI response for
/// [`super::cgi::parse_response`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WasmOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub memory_bytes_peak: usize,
}

/// How the module of a call was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Already compiled in this process, file unchanged.
    Memory,
    /// Deserialized from the disk cache.
    Disk,
    /// Compiled now (and written to the disk cache, if there is one).
    Compiled,
}

/// Every way a call can fail. Messages name the module as the descriptor
/// does, never a path on the machine: they reach clients in 502/504 bodies.
#[derive(Debug, Clone, Error)]
pub enum WasmError {
    #[error("wasm module {module:?} not found")]
    ModuleNotFound { module: String },
    #[error("wasm module {module:?} cannot be read: {message}")]
    ModuleUnreadable { module: String, message: String },
    #[error("wasm module {module:?} does not compile: {message}")]
    Compile { module: String, message: String },
    #[error("wasm module {module:?} cannot be linked: {message}")]
    Link { module: String, message: String },
    #[error("wasm module {module:?} is not a WASI command (no `_start` function taking and returning nothing)")]
    NotACommand { module: String },
    #[error("wasm instance could not be created: {message}")]
    Instantiate { message: String },
    #[error("all {instances_max} wasm instance slots of this worker are in use")]
    Busy { instances_max: u32 },
    #[error("wasm function trapped: {message}")]
    Trap { message: String },
    #[error("wasm function did not finish within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("wasm function exceeded its memory limit of {memory_mb} MiB")]
    MemoryLimit { memory_mb: u64 },
    #[error(
        "memory_mb {memory_mb} is outside what this worker's wasm slots hold (1..={memory_mb_max})"
    )]
    MemoryOverSlot { memory_mb: u64, memory_mb_max: u64 },
    #[error("wasm function exited with status {code}")]
    Exit { code: i32 },
    #[error("wasm function wrote more than {limit} bytes to stdout")]
    StdoutTooLarge { limit: usize },
    #[error("wasm runtime cannot start: {message}")]
    Config { message: String },
    /// A broken invariant of this runtime, reported instead of a panic.
    #[error("wasm runtime internal error: {message}")]
    Internal { message: String },
}

impl WasmError {
    /// The function ran out of time (504), as opposed to failing (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, WasmError::Timeout { .. })
    }
}

impl From<WasmError> for Failure {
    fn from(error: WasmError) -> Failure {
        let kind = match &error {
            WasmError::Timeout { timeout_ms } => return Failure::timeout(*timeout_ms),
            WasmError::ModuleNotFound { .. }
            | WasmError::ModuleUnreadable { .. }
            | WasmError::Compile { .. }
            | WasmError::Link { .. }
            | WasmError::NotACommand { .. }
            | WasmError::Instantiate { .. } => FailureKind::Load,
            WasmError::Busy { .. } => FailureKind::Busy,
            WasmError::Trap { .. } => FailureKind::Trap,
            WasmError::MemoryLimit { .. } => FailureKind::Memory,
            WasmError::Exit { .. } => FailureKind::Exit,
            WasmError::StdoutTooLarge { .. } => FailureKind::Output,
            WasmError::Config { .. }
            | WasmError::Internal { .. }
            | WasmError::MemoryOverSlot { .. } => FailureKind::Internal,
        };
        Failure::new(kind, error)
    }
}

pub struct WasmRuntime {
    engine: Engine,
    /// WASI preview 1, with `poll_oneoff` bounded by the deadline.
    linker: Linker<Host>,
    modules: Modules,
    ticker: Ticker,
    instances_max: u32,
    memory_mb_max: u64,
    stdout_bytes_max: usize,
}

impl WasmRuntime {
    /// Reserves the pool, starts the ticker thread and opens (creates) the
    /// cache directory. Call it in the worker process, after fork.
    pub fn new(config: WasmConfig) -> Result<WasmRuntime, WasmError> {
        let invalid = |message: String| Err(WasmError::Config { message });
        if config.instances_max == 0 {
            return invalid("instances_max must be at least 1".into());
        }
        if !(1..=MEMORY_MB_MAX_LIMIT).contains(&config.memory_mb_max) {
            return invalid(format!(
                "memory_mb_max must be 1..={MEMORY_MB_MAX_LIMIT}, not {}",
                config.memory_mb_max
            ));
        }
        if config.stdout_bytes_max == 0 || config.stdout_bytes_max == usize::MAX {
            return invalid("stdout_bytes_max must be at least 1 and below usize::MAX".into());
        }

        let engine = Engine::new(&engine_config(&config)).map_err(|e| WasmError::Config {
            message: format!("{e:#}"),
        })?;
        let linker_error = |e: wasmtime::Error| WasmError::Config {
            message: format!("{e:#}"),
        };
        let mut linker: Linker<Host> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi)
            .map_err(linker_error)?;
        poll_guard::add_to_linker(&mut linker).map_err(linker_error)?;
        let disk = match &config.cache_dir {
            Some(dir) => Some(
                DiskCache::open(dir, &engine).map_err(|e| WasmError::Config {
                    message: format!("cache directory: {e}"),
                })?,
            ),
            None => None,
        };
        let ticker = Ticker::start(engine.weak()).map_err(|e| WasmError::Config {
            message: format!("epoch ticker thread: {e}"),
        })?;
        Ok(WasmRuntime {
            modules: Modules::new(config.functions_dir, disk),
            engine,
            linker,
            ticker,
            instances_max: config.instances_max,
            memory_mb_max: config.memory_mb_max,
            stdout_bytes_max: config.stdout_bytes_max,
        })
    }

    /// Compiles (or loads from the disk cache) and links a module without
    /// running it, so that its first request does not pay for that.
    pub fn prepare(&self, module: &str) -> Result<(), WasmError> {
        self.prepare_outcome(module).map(|_| ())
    }

    /// [`WasmRuntime::prepare`], saying where the module came from.
    pub fn prepare_outcome(&self, module: &str) -> Result<CacheOutcome, WasmError> {
        self.modules
            .get(&self.engine, &self.linker, module)
            .map(|(_, outcome)| outcome)
    }

    pub fn stats(&self) -> WasmStats {
        self.modules.stats()
    }

    /// Runs `_start` of the module in a fresh instance with the call's
    /// stdin, environment, deadline and memory cap; returns what it printed.
    /// `proc_exit(0)` is success like returning; any other exit status is
    /// [`WasmError::Exit`].
    pub fn call(&self, call: &WasmCall) -> Result<WasmOutput, WasmError> {
        self.call_noting_load(call, &mut false)
    }

    /// [`WasmRuntime::call`]; `loaded_now` becomes true when the module was
    /// not in this process's memory cache (a cold start), whether the call
    /// then succeeds or not.
    pub fn call_noting_load(
        &self,
        call: &WasmCall,
        loaded_now: &mut bool,
    ) -> Result<WasmOutput, WasmError> {
        let (prepared, cache) = self.modules.get(&self.engine, &self.linker, call.module)?;
        *loaded_now = cache != CacheOutcome::Memory;
        if !(1..=self.memory_mb_max).contains(&call.memory_mb) {
            return Err(WasmError::MemoryOverSlot {
                memory_mb: call.memory_mb,
                memory_mb_max: self.memory_mb_max,
            });
        }
        let memory_mb = call.memory_mb;
        let memory_bytes_max = usize::try_from(memory_mb * MIB).unwrap_or(usize::MAX);
        let timeout = Duration::from_millis(call.timeout_ms.max(1));

        // One byte over the cap tells "exactly at the cap" from "cut off".
        let stdout = MemoryOutputPipe::new(self.stdout_bytes_max.saturating_add(1));
        let stderr = MemoryOutputPipe::new(STDERR_BYTES_MAX);
        let wasi_clock_origin = Instant::now();
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(call.stdin.to_vec()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(call.env)
            .arg(call.module)
            .build_p1();

        let started = Instant::now();
        let deadline = started + timeout;
        let _in_flight = self.ticker.enter(deadline);
        let mut store = Store::new(
            &self.engine,
            Host::new(wasi, wasi_clock_origin, memory_bytes_max, deadline),
        );
        store.limiter(|host| &mut host.limiter);
        // The next increment makes the store look at its deadline; the
        // ticker increments only when some call is due (ticker.rs).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut context| Ok(context.data_mut().on_epoch_deadline()));

        let result = match prepared.instance_pre()?.instantiate(&mut store) {
            Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, ENTRY_POINT) {
                Ok(start) => start.call(&mut store, ()).map_err(GuestFailure::Run),
                Err(e) => Err(GuestFailure::Instantiate(e)),
            },
            Err(e) => Err(GuestFailure::Instantiate(e)),
        };
        let timed_out = store.data().timed_out();
        let memory_limit_hit = store.data().memory_limit_hit();
        let memory_bytes_peak = store.data().memory_bytes_peak();
        drop(store);

        let stdout = take_pipe(stdout)?;
        if timed_out {
            return Err(WasmError::Timeout {
                timeout_ms: call.timeout_ms,
            });
        }
        if memory_limit_hit {
            return Err(WasmError::MemoryLimit { memory_mb });
        }
        if stdout.len() > self.stdout_bytes_max {
            return Err(WasmError::StdoutTooLarge {
                limit: self.stdout_bytes_max,
            });
        }
        match result {
            Ok(()) => {}
            Err(failure) => self.classify(failure)?,
        }
        Ok(WasmOutput {
            stdout,
            stderr: take_pipe(stderr)?,
            memory_bytes_peak,
        })
    }

    /// `Ok` for `proc_exit(0)`, the matching error for everything else.
    fn classify(&self, failure: GuestFailure) -> Result<(), WasmError> {
        let (error, instantiating) = match failure {
            GuestFailure::Instantiate(e) => (e, true),
            GuestFailure::Run(e) => (e, false),
        };
        if let Some(exit) = error.downcast_ref::<I32Exit>() {
            return match exit.0 {
                0 => Ok(()),
                code => Err(WasmError::Exit { code }),
            };
        }
        if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Err(WasmError::Busy {
                instances_max: self.instances_max,
            });
        }
        if let Some(trap) = error.downcast_ref::<Trap>() {
            return Err(WasmError::Trap {
                message: trap.to_string(),
            });
        }
        // A host function's error: its root cause is the one-line reason
        // (the contexts above it are the wasm backtrace).
        Err(if instantiating {
            WasmError::Instantiate {
                message: format!("{error:#}"),
            }
        } else {
            WasmError::Trap {
                message: error.root_cause().to_string(),
            }
        })
    }
}

enum GuestFailure {
    Instantiate(wasmtime::Error),
    Run(wasmtime::Error),
}

/// The pipe's bytes, moved out. The store, and with it every clone of the
/// pipe WASI made, must be gone by now.
fn take_pipe(pipe: MemoryOutputPipe) -> Result<Vec<u8>, WasmError> {
    match pipe.try_into_inner() {
        Some(bytes) => Ok(bytes.into()),
        None => Err(WasmError::Internal {
            message: "output pipe still shared after the call".into(),
        }),
    }
}

/// Compiles and links `path` as a worker would (WASI preview 1, a `_start`
/// command), for a check of an upload in a process of its own.
///
/// With `cache_dir` (the workers'), the compiled module is stored there:
/// the engine settings that key the cache are the workers' (the slot size
/// is theirs, [`MEMORY_MB_MAX_DEFAULT`]), so their first call loads it.
pub fn check_module_file(path: &std::path::Path, cache_dir: Option<PathBuf>) -> Result<(), String> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let runtime = WasmRuntime::new(WasmConfig {
        instances_max: 1,
        cache_dir,
        ..WasmConfig::new(dir)
    })
    .map_err(|e| e.to_string())?;
    runtime.prepare(name).map_err(|e| e.to_string())
}

fn engine_config(config: &WasmConfig) -> Config {
    let slot_bytes = config.memory_mb_max * MIB;
    let slots = config.instances_max;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        // Calls are synchronous: no fiber stacks are ever taken.
        .total_stacks(1)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(TABLE_ELEMENTS_MAX)
        .max_memory_size(usize::try_from(slot_bytes).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_BYTES)
        .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut engine = Config::new();
    engine
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_reservation(slot_bytes)
        .memory_guard_size(MEMORY_GUARD_BYTES)
        // Only a guard against code-generator bugs, at the price of doubling
        // the guard reservation.
        .guard_before_linear_memory(false)
        .memory_init_cow(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES_MAX)
        // Details would come from an environment variable otherwise.
        .wasm_backtrace_details(WasmBacktraceDetails::Disable);
    engine
}

#[cfg(test)]
mod tests;
