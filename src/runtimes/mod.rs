//! What answers a matched route.
//!
//! * [`descriptor`]: the route's JSON descriptor and the [`descriptor::Runtime`]
//!   it names, with each runtime's limits.
//! * [`static_response`]: the gateway answers from the descriptor itself.
//!
//! Everything else runs inside worker processes, never on a gateway core,
//! behind one seam, [`invoke::Runtimes::invoke`]:
//!
//! * [`wasm`]: WebAssembly modules run as CGI-style WASI commands under
//!   wasmtime.
//! * [`native`]: shared libraries with the C ABI of
//!   `runtimes/native/corefn.h`, reloaded when their file changes.
//! * [`exec`]: any executable under the CGI contract, a process per request.
//! * [`hosts`]: warm Python, Node and PHP hosts, one request at a time each.
//!
//! Shared by them: [`cgi`] (the CGI request environment and the response
//! rules every runtime's output goes through), [`file_stamp`] (noticing a
//! changed function file), [`process`] (child processes with
//! deadlines and limits) and [`sandbox`] (the network namespace and seccomp
//! filter of a host). What a call prints goes into its [`invoke::CallReport`];
//! the worker logs it.
//!
//! [`settings`] declares the runtimes' flags. The runtimes use only the
//! shared modules below the data plane (http, failure, clock, sync, lru);
//! they never reach up into the workers, the routes or the gateway.

pub mod cgi;
pub mod descriptor;
pub mod exec;
pub mod file_stamp;
pub mod hosts;
pub mod invoke;
pub mod native;
pub mod process;
pub mod sandbox;
pub mod settings;
pub mod static_response;
pub mod wasm;
