//! HTTP shared below the data plane and the control plane: the rules more
//! than one part checks, response encoding, and client-visible errors.
//!
//! * [`rules`]: tokens, gateway-owned headers, the response status range,
//!   the reserved admin prefix and the header-count bound, defined once.
//! * [`auth`]: bearer keys: the header and the hash keys are kept by.
//! * [`chunked`]: the chunked transfer coding, decoded incrementally.
//! * [`encode`]: status lines, headers and small complete responses.
//! * [`error`]: every error a client can see, and the one place where an
//!   error becomes an HTTP status.
//!
//! Pure code over byte buffers: nothing here does I/O, and nothing here may
//! depend on the gateway, the routes, the workers or the runtimes.

pub mod auth;
pub mod chunked;
pub mod encode;
pub mod error;
pub mod rules;
