//! How a function call failed: a kind and a message. Runtimes produce
//! failures (each runtime maps its own errors to kinds, in its own file),
//! workers carry them, [`crate::http::error`] turns them into statuses,
//! and the kind is what stats and logs count.
//!
//! Shared below the data plane: no I/O, no dependency on any runtime.

use std::fmt;

/// Why a call did not produce a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The code could not be found, read, compiled, linked or loaded.
    Load,
    /// A wasm trap.
    Trap,
    /// The program exited with a non-zero status.
    Exit,
    /// The call ran past its `timeout_ms`.
    Timeout,
    /// The call hit its `memory_mb`.
    Memory,
    /// The process or host running the call died (a signal, an exit mid-request).
    Crash,
    /// A language host broke its protocol.
    Protocol,
    /// The response was invalid (CGI output, status, headers) or too large.
    Output,
    /// The handler itself raised, threw or returned an error.
    HandlerError,
    /// The runtime cannot run here (its interpreter is missing).
    Unavailable,
    /// Every instance slot of the worker was taken.
    Busy,
    /// corefn itself failed around the call (a request it could not pass
    /// on, a descriptor that did not parse in the worker).
    Internal,
}

impl FailureKind {
    pub const ALL: [FailureKind; 12] = [
        FailureKind::Load,
        FailureKind::Trap,
        FailureKind::Exit,
        FailureKind::Timeout,
        FailureKind::Memory,
        FailureKind::Crash,
        FailureKind::Protocol,
        FailureKind::Output,
        FailureKind::HandlerError,
        FailureKind::Unavailable,
        FailureKind::Busy,
        FailureKind::Internal,
    ];

    /// The position in [`FailureKind::ALL`]: stats count by it.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label stats, logs and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Load => "load",
            FailureKind::Trap => "trap",
            FailureKind::Exit => "exit",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Crash => "crash",
            FailureKind::Protocol => "protocol",
            FailureKind::Output => "output",
            FailureKind::HandlerError => "handler_error",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Busy => "busy",
            FailureKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// What went wrong, in the runtime's words; one line.
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl fmt::Display) -> Failure {
        Failure {
            kind,
            message: message.to_string(),
        }
    }

    /// Every runtime's timeout reads the same to the client.
    pub fn timeout(timeout_ms: u64) -> Failure {
        Failure::new(
            FailureKind::Timeout,
            format_args!("function did not finish within {timeout_ms} ms"),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            // These messages are whole sentences about the call already.
            FailureKind::Timeout | FailureKind::Unavailable => f.write_str(&self.message),
            _ => write!(f, "function failed: {}", self.message),
        }
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (position, kind) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), position);
        }
    }

    #[test]
    fn kinds_have_distinct_names() {
        let mut names: Vec<&str> = FailureKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FailureKind::ALL.len());
    }

    #[test]
    fn messages_read_as_before() {
        assert_eq!(
            Failure::timeout(250).to_string(),
            "function did not finish within 250 ms"
        );
        assert_eq!(
            Failure::new(FailureKind::Trap, "wasm function trapped: unreachable").to_string(),
            "function failed: wasm function trapped: unreachable"
        );
    }
}
