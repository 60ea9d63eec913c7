//! What answers a matched route.
//!
//! * [`static_response`]: the gateway answers from the descriptor itself.
//! * [`wasm`]: WebAssembly modules run as CGI-style WASI commands under
//!   wasmtime; used inside worker processes, never on a gateway core.
//! * [`cgi`]: the CGI/1.1 request environment and response parsing shared by
//!   the runtimes that speak CGI (`wasm`, later `exec`).
//!
//! The other runtimes of the descriptor (native, exec, python, node, php)
//! are not built yet.

pub mod cgi;
pub mod static_response;
pub mod wasm;
