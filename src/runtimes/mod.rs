//! What answers a matched route.
//!
//! Today only [`static_response`]: the gateway answers from the descriptor
//! itself. The other runtimes of the descriptor (wasm, native, exec, python,
//! node, php) run in worker processes, which the gateway does not have yet;
//! a request to such a route gets 501.

pub mod static_response;
