//! Compiled, pre-linked modules by name, re-validated as calls come.
//!
//! An entry holds the module's `InstancePre` (imports resolved once) and the
//! identity of the file it came from (device, inode, size, mtime, ctime).
//! Calls `stat` that file at most once per [`FILE_CHECK_INTERVAL_MS`]: when
//! the identity changed, the file is read and compiled again (or loaded from
//! the disk cache) and the entry replaced; calls already running keep the
//! `Arc` of the old entry and finish on it. Writing a module in place within the file system's
//! timestamp granularity without changing its size is not noticed: deploy
//! by writing a new file and renaming it over the old one (a new inode).
//! A version that does not compile or link is kept as its error, so that a
//! broken deploy costs one compile, not one per request.
//!
//! Entries are keyed by the module name of the descriptor (resolved against
//! the functions directory once, when loading), not by canonical path: the
//! stat follows symlinks anyway, and the disk cache is keyed by content, so
//! two names of one file share the compiled code on disk. The table is
//! bounded ([`MODULES_CACHED_MAX`]); the least recently used entry goes.
//!
//! Compiling happens on the calling thread, outside any lock; two threads
//! missing the same module at once both compile it and the last one wins.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Engine, ExternType, InstancePre, Linker, Module};

use super::disk_cache::{DiskCache, Rejected};
use super::host::Host;
use super::{CacheOutcome, WasmError};
use crate::lru::LruMap;
use crate::runtimes::file_stamp::{FileStamp, FILE_CHECK_INTERVAL_MS};

/// Modules kept compiled in memory per process.
pub const MODULES_CACHED_MAX: usize = 1024;

/// Largest module file accepted (`.wasm` or `.wat`).
pub const MODULE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// The export a WASI command runs.
pub(super) const ENTRY_POINT: &str = "_start";

/// One version of a module file: ready to instantiate, or the error it
/// gave. Errors are kept too, so that a broken deploy costs one compile,
/// not one per request, until the file changes again.
pub(super) struct Prepared {
    path: PathBuf,
    stamp: FileStamp,
    loaded: Result<InstancePre<Host>, WasmError>,
    /// When the file was last found unchanged, in milliseconds since the
    /// table was made.
    checked_ms: AtomicU64,
}

impl Prepared {
    pub(super) fn instance_pre(&self) -> Result<&InstancePre<Host>, WasmError> {
        self.loaded.as_ref().map_err(Clone::clone)
    }
}

#[derive(Debug, Default)]
struct Counters {
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    cache_files_rejected: AtomicU64,
    cache_files_written: AtomicU64,
    cache_write_errors: AtomicU64,
    failed: AtomicU64,
}

/// Counters of how modules were obtained, since the runtime was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WasmStats {
    pub modules_compiled: u64,
    pub modules_loaded_from_disk: u64,
    /// Cache files found corrupt or incompatible (and compiled over).
    pub cache_files_rejected: u64,
    pub cache_files_written: u64,
    pub cache_write_errors: u64,
    /// Module versions that did not compile, link or export `_start`.
    pub modules_failed: u64,
}

pub(super) struct Modules {
    functions_dir: PathBuf,
    disk: Option<DiskCache>,
    entries: LruMap<String, Prepared>,
    counters: Counters,
    created: Instant,
}

impl Modules {
    pub(super) fn new(functions_dir: PathBuf, disk: Option<DiskCache>) -> Modules {
        Modules {
            functions_dir,
            disk,
            entries: LruMap::new(MODULES_CACHED_MAX),
            counters: Counters::default(),
            created: Instant::now(),
        }
    }

    pub(super) fn stats(&self) -> WasmStats {
        let c = &self.counters;
        WasmStats {
            modules_compiled: c.compiled.load(Ordering::Relaxed),
            modules_loaded_from_disk: c.loaded_from_disk.load(Ordering::Relaxed),
            cache_files_rejected: c.cache_files_rejected.load(Ordering::Relaxed),
            cache_files_written: c.cache_files_written.load(Ordering::Relaxed),
            cache_write_errors: c.cache_write_errors.load(Ordering::Relaxed),
            modules_failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// The current version of module `name`, loading it when it is new or
    /// its file changed.
    pub(super) fn get(
        &self,
        engine: &Engine,
        linker: &Linker<Host>,
        name: &str,
    ) -> Result<(Arc<Prepared>, CacheOutcome), WasmError> {
        let now_ms = self.created.elapsed().as_millis() as u64;
        if let Some(entry) = self.entries.get(name) {
            let checked_ms = entry.checked_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(checked_ms) < FILE_CHECK_INTERVAL_MS {
                entry.instance_pre()?;
                return Ok((entry, CacheOutcome::Memory));
            }
            match fs::metadata(&entry.path) {
                Ok(metadata) if FileStamp::of(&metadata) == entry.stamp => {
                    entry.checked_ms.store(now_ms, Ordering::Relaxed);
                    entry.instance_pre()?;
                    return Ok((entry, CacheOutcome::Memory));
                }
                Ok(_) => {}
                Err(e) => {
                    // Gone or unreadable: new calls must not run the old
                    // copy of a module that was removed.
                    self.entries.remove(name);
                    return Err(module_io_error(name, e));
                }
            }
        }

        let path = self.functions_dir.join(name);
        let (bytes, stamp) = read_module(&path).map_err(|e| {
            self.entries.remove(name);
            module_io_error(name, e)
        })?;
        let (loaded, outcome) = match self.load(engine, linker, name, &bytes) {
            Ok((pre, outcome)) => (Ok(pre), outcome),
            Err(error) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                (Err(error), CacheOutcome::Compiled)
            }
        };
        let entry = Arc::new(Prepared {
            path,
            stamp,
            loaded,
            checked_ms: AtomicU64::new(now_ms),
        });
        // A new version replaces the old one; calls running on it keep
        // their Arc.
        self.entries.insert(name.to_string(), Arc::clone(&entry));
        entry.instance_pre()?;
        Ok((entry, outcome))
    }

    /// Compiles (or loads) and links module bytes.
    fn load(
        &self,
        engine: &Engine,
        linker: &Linker<Host>,
        name: &str,
        bytes: &[u8],
    ) -> Result<(InstancePre<Host>, CacheOutcome), WasmError> {
        let (module, outcome) = self.compile_or_load(engine, name, bytes)?;

        match module.get_export(ENTRY_POINT) {
            Some(ExternType::Func(func))
                if func.params().len() == 0 && func.results().len() == 0 => {}
            _ => {
                return Err(WasmError::NotACommand {
                    module: name.to_string(),
                })
            }
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Link {
                module: name.to_string(),
                message: format!("{e:#}"),
            })?;
        Ok((pre, outcome))
    }

    fn compile_or_load(
        &self,
        engine: &Engine,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Module, CacheOutcome), WasmError> {
        let Some(disk) = &self.disk else {
            let module = compile(engine, name, bytes)?;
            self.counters.compiled.fetch_add(1, Ordering::Relaxed);
            return Ok((module, CacheOutcome::Compiled));
        };
        let cache_path = disk.path_for(bytes);
        match disk.load(engine, &cache_path) {
            Ok(Some(module)) => {
                self.counters
                    .loaded_from_disk
                    .fetch_add(1, Ordering::Relaxed);
                return Ok((module, CacheOutcome::Disk));
            }
            Ok(None) => {}
            Err(Rejected::Corrupt | Rejected::Incompatible | Rejected::Io) => {
                // Counted, then overwritten below with a good file.
                self.counters
                    .cache_files_rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let module = compile(engine, name, bytes)?;
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        // The cache is an optimisation: failing to write it (disk full,
        // read-only directory) costs a compile next time, not this call.
        match disk.store(&module, &cache_path) {
            Ok(()) => self
                .counters
                .cache_files_written
                .fetch_add(1, Ordering::Relaxed),
            Err(_) => self
                .counters
                .cache_write_errors
                .fetch_add(1, Ordering::Relaxed),
        };
        Ok((module, CacheOutcome::Compiled))
    }
}

/// Compiles `.wasm` binaries and `.wat` text alike (wasmtime tells them
/// apart by content).
fn compile(engine: &Engine, name: &str, bytes: &[u8]) -> Result<Module, WasmError> {
    Module::new(engine, bytes).map_err(|e| WasmError::Compile {
        module: name.to_string(),
        message: format!("{e:#}"),
    })
}

/// The file's bytes and the stamp of the very file read (taken from the open
/// descriptor, so a rename racing the read cannot mismatch the two).
fn read_module(path: &Path) -> io::Result<(Vec<u8>, FileStamp)> {
    let file = fs::File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if metadata.len() > MODULE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {MODULE_BYTES_MAX} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(MODULE_BYTES_MAX + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MODULE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {MODULE_BYTES_MAX} bytes"),
        ));
    }
    Ok((bytes, FileStamp::of(&metadata)))
}

/// Errors name the module as the descriptor does, never the resolved path:
/// the message may reach a client.
fn module_io_error(name: &str, error: io::Error) -> WasmError {
    if error.kind() == io::ErrorKind::NotFound {
        WasmError::ModuleNotFound {
            module: name.to_string(),
        }
    } else {
        WasmError::ModuleUnreadable {
            module: name.to_string(),
            message: error.to_string(),
        }
    }
}
