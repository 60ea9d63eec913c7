//! The `native` runtime: shared libraries with the C ABI of
//! `runtimes/native/corefn.h`, loaded once per worker process and loaded
//! again when their file changes.
//!
//! Each version of a library is copied to a file of its own, named once
//! per process life (`<copies_dir>/<pid>-<n>-<name>`), `dlopen`ed from
//! there and unlinked at once: the loader hands back an already-loaded
//! object for a path it has seen, so every version needs a path never used
//! before, and a file rewritten in place under a live mapping would change
//! code that is running. A call holds an `Arc` of the version it
//! started on; when the file changes, new calls load and use the new
//! version, and the old one is `dlclose`d when its last call returns.
//!
//! What this module cannot contain: native code runs in the worker's
//! address space, so a crash ends the worker (the supervisor replaces it)
//! and a call that never returns cannot be stopped: [`watchdog`] runs the
//! worker's answer for it (504, then the worker is replaced). Everything the library
//! hands back goes through the CGI header rules before it reaches a client.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;

pub use watchdog::OnExpiry;
use watchdog::Watchdog;

mod watchdog;

use super::cgi::{self, CgiRequest, CgiResponse};
use super::file_stamp::WatchedFile;
use crate::failure::{Failure, FailureKind};
use crate::http::rules::{self, RESPONSE_STATUS_RANGE};
use crate::lru::LruMap;
use crate::sync::lock;

/// `COREFN_ABI_VERSION` of corefn.h.
pub const ABI_VERSION: u32 = 1;
/// The entry point when the descriptor names no `handler`.
pub const HANDLER_DEFAULT: &str = "corefn_handle";
/// Optional export called once after loading.
const INIT_SYMBOL: &[u8] = b"corefn_init";
/// Libraries (module, handler) kept loaded per worker; past it, the one
/// used least recently is dropped (and unloaded once idle).
pub const LIBRARIES_LOADED_MAX: usize = 256;
/// Largest library file accepted.
pub const LIBRARY_BYTES_MAX: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Error)]
pub enum NativeError {
    #[error("native library {module:?} not found")]
    NotFound { module: String },
    #[error("native library {module:?} cannot be loaded: {message}")]
    Load { module: String, message: String },
    #[error("native library {module:?} has no function {handler:?}")]
    Symbol { module: String, handler: String },
    #[error("native library {module:?}: corefn_init returned {code}")]
    Init { module: String, code: i32 },
    #[error("native function returned {code}")]
    Failed { code: i32 },
    #[error("native function response is invalid: {0}")]
    Response(String),
    #[error("native function wrote more than {limit_bytes} bytes")]
    ResponseTooLarge { limit_bytes: usize },
}

impl From<NativeError> for Failure {
    fn from(error: NativeError) -> Failure {
        let kind = match &error {
            NativeError::NotFound { .. }
            | NativeError::Load { .. }
            | NativeError::Symbol { .. }
            | NativeError::Init { .. } => FailureKind::Load,
            NativeError::Failed { .. } => FailureKind::HandlerError,
            NativeError::Response(_) | NativeError::ResponseTooLarge { .. } => FailureKind::Output,
        };
        Failure::new(kind, error)
    }
}

type HandleFn = unsafe extern "C" fn(*const RawRequest, *mut RawResponse) -> c_int;
type InitFn = unsafe extern "C" fn() -> c_int;

/// One loaded version of a library. Dropping it unloads the library, so
/// it must outlive every call through `handle` (calls hold an `Arc`).
struct Loaded {
    generation: u64,
    handle: HandleFn,
    // Dropped last: `handle` points into it.
    _library: libloading::Library,
}

struct Entry {
    file: WatchedFile,
    handler: String,
    current: Mutex<Option<Arc<Loaded>>>,
}

pub struct NativeRuntime {
    functions_dir: PathBuf,
    copies_dir: PathBuf,
    copies_made: AtomicU64,
    watchdog: Watchdog,
    /// Keyed by (module, handler).
    entries: LruMap<(String, String), Entry>,
}

/// One invocation.
pub struct NativeCall<'a> {
    pub module: &'a str,
    pub handler: Option<&'a str>,
    pub request: &'a CgiRequest<'a>,
    pub body: &'a [u8],
    /// The descriptor's `env`.
    pub env: &'a BTreeMap<String, String>,
    /// Body bytes the function may write.
    pub body_bytes_max: usize,
}

/// The response body and its parsed head.
pub struct NativeOutput {
    pub body: Vec<u8>,
    pub response: CgiResponse,
}

impl NativeRuntime {
    /// `copies_dir` holds each loaded version for the moment of its
    /// `dlopen` (created when missing).
    pub fn new(functions_dir: PathBuf, copies_dir: PathBuf) -> NativeRuntime {
        NativeRuntime {
            functions_dir,
            copies_dir,
            copies_made: AtomicU64::new(0),
            watchdog: Watchdog::default(),
            entries: LruMap::new(LIBRARIES_LOADED_MAX),
        }
    }

    /// [`NativeRuntime::call`] under a deadline. Past it, the watchdog
    /// thread runs `on_expiry`, which answers the client and must end the
    /// process; this thread then never returns (it parks), so nothing is
    /// written after that answer.
    pub fn call_watched(
        &self,
        call: &NativeCall<'_>,
        deadline: std::time::Instant,
        on_expiry: OnExpiry,
        cold_start: &mut bool,
    ) -> Result<NativeOutput, NativeError> {
        let watch = self.watchdog.watch(deadline, on_expiry);
        let result = self.call_noting_load(call, cold_start);
        if !watch.finish() {
            loop {
                std::thread::park();
            }
        }
        result
    }

    pub fn call(&self, call: &NativeCall<'_>) -> Result<NativeOutput, NativeError> {
        self.call_noting_load(call, &mut false)
    }

    /// [`NativeRuntime::call`]; `loaded_now` becomes true when the library
    /// was loaded for this call (a cold start).
    fn call_noting_load(
        &self,
        call: &NativeCall<'_>,
        loaded_now: &mut bool,
    ) -> Result<NativeOutput, NativeError> {
        let loaded = self.library(
            call.module,
            call.handler.unwrap_or(HANDLER_DEFAULT),
            loaded_now,
        )?;
        let str_of = |s: &[u8]| RawStr {
            ptr: s.as_ptr().cast(),
            len: s.len(),
        };
        let headers: Vec<RawHeader> = call
            .request
            .headers
            .iter()
            .map(|(name, value)| RawHeader {
                name: str_of(name.as_bytes()),
                value: str_of(value),
            })
            .collect();
        let env: Vec<RawHeader> = call
            .env
            .iter()
            .map(|(name, value)| RawHeader {
                name: str_of(name.as_bytes()),
                value: str_of(value.as_bytes()),
            })
            .collect();
        let request = RawRequest {
            abi_version: ABI_VERSION,
            method: str_of(call.request.method.as_bytes()),
            path: str_of(call.request.path.as_bytes()),
            query: str_of(call.request.query.as_bytes()),
            headers: headers.as_ptr(),
            header_count: headers.len(),
            body: call.body.as_ptr(),
            body_len: call.body.len(),
            env: env.as_ptr(),
            env_count: env.len(),
        };
        let mut builder = Builder {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            body_bytes_max: call.body_bytes_max,
            overflowed: false,
        };
        let mut response = RawResponse {
            set_status: response_set_status,
            header: response_header,
            write: response_write,
            private: (&mut builder as *mut Builder).cast(),
        };
        // SAFETY: `handle` is the library's entry point with the ABI of
        // corefn.h; `loaded` keeps the library mapped for the whole call;
        // `request` and everything it points to, and `builder` behind
        // `response`, outlive the call.
        let code = unsafe { (loaded.handle)(&request, &mut response) };
        drop(loaded);
        if builder.overflowed {
            return Err(NativeError::ResponseTooLarge {
                limit_bytes: call.body_bytes_max,
            });
        }
        if code != 0 {
            return Err(NativeError::Failed { code });
        }
        let status = u16::try_from(builder.status).unwrap_or(0);
        let response = cgi::response_from_parts(
            status,
            builder
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
            builder.body.len(),
        )
        .map_err(|e| NativeError::Response(e.to_string()))?;
        Ok(NativeOutput {
            body: builder.body,
            response,
        })
    }

    /// The current version of a library, loading it when the file is new
    /// or changed.
    fn library(
        &self,
        module: &str,
        handler: &str,
        loaded_now: &mut bool,
    ) -> Result<Arc<Loaded>, NativeError> {
        let key = (module.to_string(), handler.to_string());
        let entry = match self.entries.get(&key) {
            Some(entry) => entry,
            None => {
                let entry = Arc::new(Entry {
                    file: WatchedFile::new(self.functions_dir.join(module)),
                    handler: handler.to_string(),
                    current: Mutex::new(None),
                });
                // An evicted library is unloaded after its last call.
                self.entries.get_or_insert(key, entry).0
            }
        };
        let generation = entry.file.generation().map_err(|e| {
            *lock(&entry.current) = None;
            if e.kind() == std::io::ErrorKind::NotFound {
                NativeError::NotFound {
                    module: module.to_string(),
                }
            } else {
                NativeError::Load {
                    module: module.to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        // Loading under the entry's lock: concurrent first calls load once.
        let mut current = lock(&entry.current);
        if let Some(loaded) = current.as_ref().filter(|l| l.generation == generation) {
            return Ok(loaded.clone());
        }
        let copy_number = self.copies_made.fetch_add(1, Ordering::Relaxed);
        let file_name = entry
            .file
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let copy = self
            .copies_dir
            .join(format!("{}-{copy_number}-{file_name}", std::process::id()));
        let loaded = Arc::new(load(&entry, module, generation, &copy)?);
        *loaded_now = true;
        // The previous version is unloaded when its last call drops it.
        *current = Some(loaded.clone());
        Ok(loaded)
    }
}

/// Copies the file to `copy` (a path never used before), loads it from
/// there and removes the copy (the mapping keeps its pages).
fn load(
    entry: &Entry,
    module: &str,
    generation: u64,
    copy: &std::path::Path,
) -> Result<Loaded, NativeError> {
    let load_error = |message: String| NativeError::Load {
        module: module.to_string(),
        message,
    };
    let bytes = fs::read(entry.file.path()).map_err(|e| load_error(e.to_string()))?;
    if bytes.len() as u64 > LIBRARY_BYTES_MAX {
        return Err(load_error(format!("larger than {LIBRARY_BYTES_MAX} bytes")));
    }
    if let Some(dir) = copy.parent() {
        fs::create_dir_all(dir).map_err(|e| load_error(format!("copy directory: {e}")))?;
    }
    fs::File::create(copy)
        .and_then(|mut file| file.write_all(&bytes))
        .map_err(|e| load_error(format!("cannot copy the library: {e}")))?;
    // SAFETY: loading runs the library's constructors; that the library is
    // fit to run inside a worker is what deploying it as a native function
    // asserts. RTLD_LOCAL keeps its symbols from resolving other
    // libraries' references.
    let opened = unsafe {
        libloading::os::unix::Library::open(
            Some(copy),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    };
    let _ = fs::remove_file(copy);
    let path_text = copy.display().to_string();
    let library = opened.map_err(|e| load_error(short_dl_error(&e.to_string(), &path_text)))?;
    let mut symbol = entry.handler.clone().into_bytes();
    symbol.push(0);
    // SAFETY: the symbol's type is the entry point's of corefn.h; the
    // pointer is used only while `library` is loaded (they live together).
    let handle: HandleFn = unsafe { library.get::<HandleFn>(&symbol) }
        .map(|s| *s)
        .map_err(|_| NativeError::Symbol {
            module: module.to_string(),
            handler: entry.handler.clone(),
        })?;
    // SAFETY: as above, for the optional init function.
    if let Ok(init) = unsafe { library.get::<InitFn>(INIT_SYMBOL) } {
        // SAFETY: corefn_init takes nothing and returns int (corefn.h).
        let code = unsafe { init() };
        if code != 0 {
            return Err(NativeError::Init {
                module: module.to_string(),
                code,
            });
        }
    }
    Ok(Loaded {
        generation,
        handle,
        _library: library.into(),
    })
}

/// dlerror names the copy's path; the client should see the reason only.
fn short_dl_error(message: &str, path: &str) -> String {
    message
        .replace(&format!("{path}: "), "")
        .replace(path, "library")
}

#[repr(C)]
struct RawStr {
    ptr: *const c_char,
    len: usize,
}

#[repr(C)]
struct RawHeader {
    name: RawStr,
    value: RawStr,
}

#[repr(C)]
struct RawRequest {
    abi_version: u32,
    method: RawStr,
    path: RawStr,
    query: RawStr,
    headers: *const RawHeader,
    header_count: usize,
    body: *const u8,
    body_len: usize,
    env: *const RawHeader,
    env_count: usize,
}

#[repr(C)]
struct RawResponse {
    set_status: unsafe extern "C" fn(*mut RawResponse, c_int) -> c_int,
    header: unsafe extern "C" fn(*mut RawResponse, *const c_char, *const c_char) -> c_int,
    write: unsafe extern "C" fn(*mut RawResponse, *const c_void, usize) -> c_int,
    private: *mut c_void,
}

/// What the library builds through [`RawResponse`].
struct Builder {
    status: c_int,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    body_bytes_max: usize,
    overflowed: bool,
}

/// # Safety
/// `response` is the pointer corefn passed to the handler, during the call.
unsafe fn builder<'a>(response: *mut RawResponse) -> Option<&'a mut Builder> {
    // SAFETY: per the contract above, `private` points to the call's Builder.
    unsafe { response.as_mut()?.private.cast::<Builder>().as_mut() }
}

unsafe extern "C" fn response_set_status(response: *mut RawResponse, status: c_int) -> c_int {
    // SAFETY: called by the library with the response it was given.
    let Some(builder) = (unsafe { builder(response) }) else {
        return -1;
    };
    if !u16::try_from(status).is_ok_and(|status| RESPONSE_STATUS_RANGE.contains(&status)) {
        return -1;
    }
    builder.status = status;
    0
}

unsafe extern "C" fn response_header(
    response: *mut RawResponse,
    name: *const c_char,
    value: *const c_char,
) -> c_int {
    // SAFETY: called by the library with the response it was given.
    let Some(builder) = (unsafe { builder(response) }) else {
        return -1;
    };
    if name.is_null() || value.is_null() {
        return -1;
    }
    // SAFETY: corefn.h: both are NUL-terminated strings, valid for the call.
    let (name, value) = unsafe { (CStr::from_ptr(name), CStr::from_ptr(value)) };
    let (Ok(name), Ok(value)) = (name.to_str(), value.to_str()) else {
        return -1;
    };
    if !rules::is_token(name.as_bytes()) || value.chars().any(|c| c != '\t' && c.is_control()) {
        return -1;
    }
    builder.headers.push((name.to_string(), value.to_string()));
    0
}

unsafe extern "C" fn response_write(
    response: *mut RawResponse,
    data: *const c_void,
    len: usize,
) -> c_int {
    // SAFETY: called by the library with the response it was given.
    let Some(builder) = (unsafe { builder(response) }) else {
        return -1;
    };
    if len == 0 {
        return 0;
    }
    if data.is_null() {
        return -1;
    }
    if builder.body.len().saturating_add(len) > builder.body_bytes_max {
        builder.overflowed = true;
        return -1;
    }
    // SAFETY: corefn.h: `data` holds `len` readable bytes for the call.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    builder.body.extend_from_slice(bytes);
    0
}
