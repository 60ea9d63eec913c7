//! The gateway's own counters: open connections, responses by status
//! class, requests refused before routing (parse errors) by reason.
//!
//! One [`GatewayShard`] per core, written only by that core with relaxed
//! loads and stores (as [`super::stats`]), summed by readers.

use std::sync::atomic::{AtomicU64, Ordering};

use super::stats::STATUS_CLASSES;

/// Why a request was refused before it could be routed, by its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// 400: a malformed request line, header or body framing.
    Malformed,
    /// 408: the head or body did not arrive in time.
    Timeout,
    /// 413: a body over the limit.
    BodyTooLarge,
    /// 431: a header section over the limit.
    HeaderTooLarge,
    /// 501: framing the gateway does not implement.
    Unsupported,
}

impl ParseError {
    pub const ALL: [ParseError; 5] = [
        ParseError::Malformed,
        ParseError::Timeout,
        ParseError::BodyTooLarge,
        ParseError::HeaderTooLarge,
        ParseError::Unsupported,
    ];

    /// The reason of a refusal answered with `status`, if it is one.
    pub fn of_status(status: u16) -> Option<ParseError> {
        match status {
            400 => Some(ParseError::Malformed),
            408 => Some(ParseError::Timeout),
            413 => Some(ParseError::BodyTooLarge),
            431 => Some(ParseError::HeaderTooLarge),
            501 => Some(ParseError::Unsupported),
            _ => None,
        }
    }

    /// The position in [`ParseError::ALL`]: counters are kept by it.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            ParseError::Malformed => "malformed",
            ParseError::Timeout => "timeout",
            ParseError::BodyTooLarge => "body_too_large",
            ParseError::HeaderTooLarge => "header_too_large",
            ParseError::Unsupported => "unsupported",
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// One core's gateway counters.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct GatewayShard {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    responses: [AtomicU64; STATUS_CLASSES],
    parse_errors: [AtomicU64; ParseError::ALL.len()],
}

impl GatewayShard {
    pub fn connection_opened(&self) {
        add(&self.connections_open, 1);
        add(&self.connections_accepted, 1);
    }

    pub fn connection_closed(&self) {
        debug_assert!(self.connections_open.load(Ordering::Relaxed) > 0);
        add(&self.connections_open, u64::MAX); // wrapping: minus one
    }

    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1;
        add(&self.responses[class], 1);
    }

    pub fn parse_error(&self, reason: ParseError) {
        add(&self.parse_errors[reason.index()], 1);
    }
}

/// Every core's gateway shard.
#[derive(Debug)]
pub struct GatewayStats {
    shards: Box<[GatewayShard]>,
}

/// The gateway's counters summed over cores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayTotals {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub responses: [u64; STATUS_CLASSES],
    pub parse_errors: [u64; ParseError::ALL.len()],
}

impl GatewayStats {
    pub fn new(cores: usize) -> GatewayStats {
        GatewayStats {
            shards: (0..cores.max(1)).map(|_| GatewayShard::default()).collect(),
        }
    }

    pub fn shard(&self, core_index: usize) -> &GatewayShard {
        &self.shards[core_index.min(self.shards.len() - 1)]
    }

    pub fn totals(&self) -> GatewayTotals {
        let mut totals = GatewayTotals::default();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for shard in self.shards.iter() {
            totals.connections_open += get(&shard.connections_open);
            totals.connections_accepted += get(&shard.connections_accepted);
            for (sum, c) in totals.responses.iter_mut().zip(&shard.responses) {
                *sum += get(c);
            }
            for (sum, c) in totals.parse_errors.iter_mut().zip(&shard.parse_errors) {
                *sum += get(c);
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_summed() {
        let stats = GatewayStats::new(2);
        stats.shard(0).connection_opened();
        stats.shard(1).connection_opened();
        stats.shard(1).connection_closed();
        stats.shard(0).response(200);
        stats.shard(1).response(404);
        stats
            .shard(1)
            .parse_error(ParseError::of_status(431).expect("a parse error"));
        let totals = stats.totals();
        assert_eq!(totals.connections_open, 1);
        assert_eq!(totals.connections_accepted, 2);
        assert_eq!(totals.responses, [0, 1, 0, 1, 0]);
        assert_eq!(totals.parse_errors[ParseError::HeaderTooLarge.index()], 1);
        assert_eq!(ParseError::of_status(502), None);
    }
}
