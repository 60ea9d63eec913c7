//! `poll_oneoff` bounded by the call's deadline: the one WASI call of a CGI
//! function that can block (it is how `sleep` is done).
//!
//! Epoch interruption only stops wasm code; a guest asleep inside a host
//! call would hold its worker thread and pool slot for as long as it asked.
//! So this module replaces `wasi_snapshot_preview1::poll_oneoff` with an
//! implementation that sleeps at most until the deadline, and stops the
//! guest as timed out when its wait would end later.
//!
//! It answers like wasmtime-wasi's own for what a CGI function has: the
//! descriptors 0, 1 and 2 are in-memory pipes, always ready (events with
//! `nbytes` 1); any other descriptor is `EBADF`; clocks are realtime or
//! monotonic, relative or absolute (others are `EINVAL`); ready events are
//! written in subscription order. (wasmtime-wasi's implementation cannot be
//! wrapped instead: it reads guest memory through its caller, which must be
//! the wasm instance.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern, Linker, Trap};

use super::host::Host;

const MODULE: &str = "wasi_snapshot_preview1";
const NAME: &str = "poll_oneoff";

/// `subscription`: userdata u64 @0, tag u8 @8, then for a clock: id u32
/// @16, timeout u64 @24, precision u64 @32, flags u16 @40; for a
/// descriptor: fd u32 @16.
const SUBSCRIPTION_BYTES: usize = 48;
/// `event`: userdata u64 @0, error u16 @8, type u8 @10, nbytes u64 @16,
/// flags u16 @24.
const EVENT_BYTES: usize = 32;

const TAG_CLOCK: u8 = 0;
const TAG_FD_READ: u8 = 1;
const TAG_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// Replaces `poll_oneoff` in `linker`, which already has WASI.
pub(super) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(MODULE, NAME, poll_oneoff)?;
    linker.allow_shadowing(false);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    /// Ready after this long.
    Clock { userdata: u64, wait: Duration },
    /// Ready now.
    Fd { userdata: u64, tag: u8 },
}

fn poll_oneoff(
    mut caller: Caller<'_, Host>,
    subscriptions_at: i32,
    events_at: i32,
    count: i32,
    event_count_at: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
        return Err(wasmtime::format_err!("missing required memory export"));
    };
    // Pointers and sizes are u32 in wasm32; the i32 only carries them.
    let (subscriptions_at, events_at) =
        (subscriptions_at as u32 as usize, events_at as u32 as usize);
    let (count, event_count_at) = (count as u32 as usize, event_count_at as u32 as usize);
    if count == 0 {
        // Waiting for nothing would be forever.
        return Ok(ERRNO_INVAL);
    }
    let subscriptions = {
        let clock_now = caller.data().wasi_clock_now();
        let Some(bytes) = range(subscriptions_at, count, SUBSCRIPTION_BYTES)
            .and_then(|r| memory.data(&caller).get(r))
        else {
            return Ok(ERRNO_FAULT);
        };
        let mut subscriptions = Vec::with_capacity(count.min(1024));
        for bytes in bytes.chunks_exact(SUBSCRIPTION_BYTES) {
            match parse(bytes, clock_now) {
                Ok(subscription) => subscriptions.push(subscription),
                Err(errno) => return Ok(errno),
            }
        }
        subscriptions
    };

    let wait = subscriptions
        .iter()
        .map(|s| match s {
            Subscription::Clock { wait, .. } => *wait,
            Subscription::Fd { .. } => Duration::ZERO,
        })
        .min()
        .unwrap_or(Duration::ZERO);
    if !wait.is_zero() {
        let time_left = caller.data().time_left();
        if wait > time_left {
            std::thread::sleep(time_left);
            caller.data_mut().set_timed_out();
            return Err(Trap::Interrupt.into());
        }
        // At least `wait` (std resumes the sleep after a signal).
        std::thread::sleep(wait);
    }

    let Some(events_range) = range(events_at, count, EVENT_BYTES) else {
        return Ok(ERRNO_FAULT);
    };
    let Some(count_range) = range(event_count_at, 1, 4) else {
        return Ok(ERRNO_FAULT);
    };
    let data = memory.data_mut(&mut caller);
    if data.len() < events_range.end || data.len() < count_range.end {
        return Ok(ERRNO_FAULT);
    }
    let mut ready: u32 = 0;
    for subscription in &subscriptions {
        let (userdata, kind, nbytes) = match *subscription {
            Subscription::Clock { userdata, wait: w } if w <= wait => (userdata, TAG_CLOCK, 0),
            Subscription::Clock { .. } => continue,
            Subscription::Fd { userdata, tag } => (userdata, tag, 1),
        };
        let at = events_range.start + ready as usize * EVENT_BYTES;
        let event = &mut data[at..at + EVENT_BYTES];
        event.fill(0);
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        event[8..10].copy_from_slice(&(ERRNO_SUCCESS as u16).to_le_bytes());
        event[10] = kind;
        event[16..24].copy_from_slice(&u64::to_le_bytes(nbytes));
        ready += 1;
    }
    data[count_range].copy_from_slice(&ready.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// `count` records of `size` bytes at `at`, if that does not overflow.
fn range(at: usize, count: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let end = at.checked_add(count.checked_mul(size)?)?;
    Some(at..end)
}

/// One subscription record, or the errno for the whole call.
fn parse(bytes: &[u8], clock_now: Duration) -> Result<Subscription, i32> {
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
    let userdata = u64_at(0);
    match bytes[8] {
        TAG_CLOCK => {
            let id = u32_at(16);
            let timeout = Duration::from_nanos(u64_at(24));
            let flags = u16::from_le_bytes([bytes[40], bytes[41]]);
            let wait = if flags & SUBCLOCKFLAGS_ABSTIME == 0 {
                timeout
            } else {
                let now = match id {
                    CLOCK_REALTIME => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default(),
                    CLOCK_MONOTONIC => clock_now,
                    _ => return Err(ERRNO_INVAL),
                };
                timeout.saturating_sub(now)
            };
            match id {
                CLOCK_REALTIME | CLOCK_MONOTONIC => Ok(Subscription::Clock { userdata, wait }),
                _ => Err(ERRNO_INVAL),
            }
        }
        tag @ (TAG_FD_READ | TAG_FD_WRITE) => match (tag, u32_at(16)) {
            (TAG_FD_READ, 0) | (TAG_FD_WRITE, 1 | 2) => Ok(Subscription::Fd { userdata, tag }),
            _ => Err(ERRNO_BADF),
        },
        _ => Err(ERRNO_INVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: u8, id_or_fd: u32, timeout_ns: u64, flags: u16) -> [u8; SUBSCRIPTION_BYTES] {
        let mut bytes = [0u8; SUBSCRIPTION_BYTES];
        bytes[0..8].copy_from_slice(&7u64.to_le_bytes());
        bytes[8] = tag;
        bytes[16..20].copy_from_slice(&id_or_fd.to_le_bytes());
        bytes[24..32].copy_from_slice(&timeout_ns.to_le_bytes());
        bytes[40..42].copy_from_slice(&flags.to_le_bytes());
        bytes
    }

    #[test]
    fn subscriptions_parse_like_wasi_p1() {
        let now = Duration::from_secs(10);
        assert_eq!(
            parse(&record(TAG_CLOCK, CLOCK_MONOTONIC, 5_000, 0), now),
            Ok(Subscription::Clock {
                userdata: 7,
                wait: Duration::from_micros(5)
            })
        );
        assert_eq!(
            parse(&record(TAG_CLOCK, CLOCK_MONOTONIC, 12_000_000_000, 1), now),
            Ok(Subscription::Clock {
                userdata: 7,
                wait: Duration::from_secs(2)
            })
        );
        assert_eq!(
            parse(&record(TAG_CLOCK, CLOCK_MONOTONIC, 1, 1), now),
            Ok(Subscription::Clock {
                userdata: 7,
                wait: Duration::ZERO
            })
        );
        assert_eq!(parse(&record(TAG_CLOCK, 2, 5, 0), now), Err(ERRNO_INVAL));
        assert_eq!(
            parse(&record(TAG_FD_READ, 0, 0, 0), now),
            Ok(Subscription::Fd {
                userdata: 7,
                tag: TAG_FD_READ
            })
        );
        assert_eq!(parse(&record(TAG_FD_READ, 1, 0, 0), now), Err(ERRNO_BADF));
        assert_eq!(parse(&record(TAG_FD_WRITE, 5, 0, 0), now), Err(ERRNO_BADF));
        assert_eq!(parse(&record(9, 0, 0, 0), now), Err(ERRNO_INVAL));
    }

    #[test]
    fn ranges_do_not_overflow() {
        assert_eq!(range(16, 2, 48), Some(16..112));
        assert_eq!(range(usize::MAX, 1, 48), None);
        assert_eq!(range(0, usize::MAX, 48), None);
    }
}
