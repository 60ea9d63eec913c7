//! Completions through shared memory: one ring per (core, worker) channel,
//! in a memfd the supervisor makes and seals and both processes map. The
//! worker's threads push each call's 48-byte completion into it; the core
//! takes them between its other tasks and, once the ring has been empty
//! for [`CORE_SPIN`] (at once when no call on it is unanswered), asks for
//! a doorbell (a flag in the ring) and waits for a message on the channel. A worker rings (a 1-byte message) only
//! while that flag is up, so under load a completion costs no system call
//! and no wake-up of the core. Measured on the floor first (`corefn-hop
//! --mode completion-ring`, PERFORMANCE.md).
//!
//! The channel stays what it was: a full ring (or none) means the
//! completion goes over the channel as before, and the core reads both.
//!
//! The ring is Vyukov's bounded queue (a sequence number per slot):
//! several producers (an owner thread and the spares), one consumer (the
//! core). What the core relies on lives in the core's own memory (where it
//! takes from next); what a worker writes is checked like a message off the
//! socket ([`super::protocol::Completion::decode`]): a worker that scribbles
//! over the ring can lose its own completions (its calls then end at their
//! deadline), never reach another worker's calls, and never make the core
//! loop or read outside the mapping, whose size the seals fix.
//!
//! Owns the memory layout and its mapping; calls nothing of corefn but the
//! completion's size. Never blocks and never makes a system call on the
//! push or take path.

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::protocol::COMPLETION_BYTES;

/// Completions a ring holds. A core keeps at most
/// [`super::pool::IN_FLIGHT_PER_LINK_MAX`] calls in flight on a worker, so
/// the ring fills only if the core stops taking; the channel takes over.
pub const SLOTS: usize = 128;
/// How long a core's reader keeps looking at an empty ring (yielding to
/// the core's other tasks) before it asks for a doorbell, while calls on
/// the link are still unanswered (with none, it asks at once).
pub const CORE_SPIN: Duration = Duration::from_micros(20);
/// While a busy ring keeps a core's reader from waiting on the channel, it
/// still reads the channel (without waiting) this often: a worker's
/// retiring notice, or a completion that met a full ring, must not wait
/// for the load to stop.
pub const CHANNEL_LOOK_EVERY: Duration = Duration::from_millis(1);
/// A push gives up (and the channel takes the completion) after this many
/// lost races for a slot.
const PUSH_ATTEMPTS_MAX: u32 = 64;
/// The doorbell message on the channel: one byte, which no completion is.
pub const DOORBELL: [u8; 1] = [1];
const WORDS: usize = COMPLETION_BYTES / 8;
const _: () = assert!(COMPLETION_BYTES.is_multiple_of(8) && SLOTS.is_power_of_two());

#[repr(C)]
struct Slot {
    /// Vyukov's sequence: `position` when free for that push,
    /// `position + 1` once it holds that push's completion.
    sequence: AtomicU64,
    words: [AtomicU64; WORDS],
}

#[repr(C, align(64))]
struct Line<T>(T);

#[repr(C)]
struct Layout {
    /// The next position a producer claims.
    enqueue: Line<AtomicU64>,
    /// 1 while the core waits for a doorbell (or is about to).
    core_waiting: Line<AtomicU32>,
    slots: [Slot; SLOTS],
}

const BYTES: usize = std::mem::size_of::<Layout>();

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("cannot make the completion ring's memfd: {0}")]
    Create(std::io::Error),
    #[error("cannot map the completion ring: {0}")]
    Map(std::io::Error),
    #[error("the completion ring's memfd is {0} bytes, not {BYTES}, or not sealed")]
    Unsealed(u64),
}

/// One mapping of a ring (the core's, or a worker's).
pub struct CompletionRing {
    map: *mut Layout,
    /// The memfd, until the worker has inherited it (the mapping needs no
    /// descriptor).
    memfd: Option<OwnedFd>,
}

impl std::fmt::Debug for CompletionRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionRing")
            .field("memfd", &self.memfd)
            .finish_non_exhaustive()
    }
}

// SAFETY: the mapping is only touched through atomics and lives as long as
// the value; any thread may push.
unsafe impl Send for CompletionRing {}
// SAFETY: as above.
unsafe impl Sync for CompletionRing {}

/// What a push found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// In the ring; the core looks by itself.
    Taken,
    /// In the ring, and the core waits: send it a doorbell.
    TakenRingTheDoorbell,
    /// Not in the ring: send the completion over the channel.
    Full,
}

impl CompletionRing {
    /// A new, empty ring in a sealed memfd (its size fixed), mapped here.
    pub fn create() -> Result<CompletionRing, RingError> {
        let memfd = memfd::MemfdOptions::default()
            .close_on_exec(true)
            .allow_sealing(true)
            .create("corefn-completions")
            .map_err(|e| RingError::Create(std::io::Error::other(e)))?;
        memfd
            .as_file()
            .set_len(BYTES as u64)
            .map_err(RingError::Create)?;
        memfd
            .add_seals(&[
                memfd::FileSeal::SealShrink,
                memfd::FileSeal::SealGrow,
                memfd::FileSeal::SealSeal,
            ])
            .map_err(|e| RingError::Create(std::io::Error::other(e)))?;
        let ring = CompletionRing::map(OwnedFd::from(memfd.into_file()))?;
        for (position, slot) in ring.layout().slots.iter().enumerate() {
            slot.sequence.store(position as u64, Ordering::Relaxed);
        }
        fence(Ordering::Release);
        Ok(ring)
    }

    /// Maps a ring made by [`CompletionRing::create`] (the worker's side),
    /// after checking that its size is sealed at what the layout needs.
    pub fn map(memfd: OwnedFd) -> Result<CompletionRing, RingError> {
        let file = std::fs::File::from(memfd.try_clone().map_err(RingError::Map)?);
        let len = file.metadata().map_err(RingError::Map)?.len();
        // SAFETY: F_GET_SEALS only reads the file's seals.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        let fixed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        if len != BYTES as u64 || seals < 0 || seals & fixed != fixed {
            return Err(RingError::Unsealed(len));
        }
        // SAFETY: a shared mapping of the whole file, whose size the seals
        // keep; unmapped in Drop only.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_fd().as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(RingError::Map(std::io::Error::last_os_error()));
        }
        Ok(CompletionRing {
            map: map.cast(),
            memfd: Some(memfd),
        })
    }

    /// The memfd for a worker to inherit; None once closed.
    pub fn memfd(&self) -> Option<&OwnedFd> {
        self.memfd.as_ref()
    }

    /// Closes this side's descriptor; the mapping stays.
    pub fn close_memfd(&mut self) {
        self.memfd = None;
    }

    fn layout(&self) -> &Layout {
        // SAFETY: mapped, BYTES long, for the life of self; every field is
        // an atomic, so the other process's writes are no data race.
        unsafe { &*self.map }
    }

    /// A worker thread: puts `completion` into the ring.
    pub fn push(&self, completion: &[u8; COMPLETION_BYTES]) -> Pushed {
        let layout = self.layout();
        let mut position = layout.enqueue.0.load(Ordering::Relaxed);
        for _ in 0..PUSH_ATTEMPTS_MAX {
            let slot = &layout.slots[position as usize % SLOTS];
            let sequence = slot.sequence.load(Ordering::Acquire);
            match sequence.wrapping_sub(position) as i64 {
                0 => {
                    if let Err(now) = layout.enqueue.0.compare_exchange_weak(
                        position,
                        position.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        position = now;
                        continue;
                    }
                    for (word, bytes) in slot.words.iter().zip(completion.chunks_exact(8)) {
                        let mut value = [0u8; 8];
                        value.copy_from_slice(bytes);
                        word.store(u64::from_le_bytes(value), Ordering::Relaxed);
                    }
                    slot.sequence
                        .store(position.wrapping_add(1), Ordering::Release);
                    // Against the core's "waiting, then look once more":
                    // one of the two sees the other's store.
                    fence(Ordering::SeqCst);
                    let waiting = &layout.core_waiting.0;
                    if waiting.load(Ordering::SeqCst) == 1 && waiting.swap(0, Ordering::SeqCst) == 1
                    {
                        return Pushed::TakenRingTheDoorbell;
                    }
                    return Pushed::Taken;
                }
                // The slot still holds a completion the core has not taken.
                lag if lag < 0 => return Pushed::Full,
                // Another producer claimed it first.
                _ => position = layout.enqueue.0.load(Ordering::Relaxed),
            }
        }
        Pushed::Full
    }
}

impl Drop for CompletionRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        unsafe { libc::munmap(self.map.cast(), BYTES) };
    }
}

/// The core's side of one ring: where it takes from next (in the core's
/// memory, out of the worker's reach).
pub struct RingReader {
    ring: CompletionRing,
    next: Cell<u64>,
}

impl RingReader {
    pub fn new(ring: CompletionRing) -> RingReader {
        RingReader {
            ring,
            next: Cell::new(0),
        }
    }

    /// The next completion, if one is there.
    pub fn take(&self) -> Option<[u8; COMPLETION_BYTES]> {
        let position = self.next.get();
        let slot = &self.ring.layout().slots[position as usize % SLOTS];
        if slot.sequence.load(Ordering::Acquire) != position.wrapping_add(1) {
            return None;
        }
        let mut completion = [0u8; COMPLETION_BYTES];
        for (word, bytes) in slot.words.iter().zip(completion.chunks_exact_mut(8)) {
            bytes.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        slot.sequence
            .store(position.wrapping_add(SLOTS as u64), Ordering::Release);
        self.next.set(position.wrapping_add(1));
        Some(completion)
    }

    /// Raises the doorbell flag; true if the ring is still empty after it
    /// (then wait for the doorbell; else take and [`RingReader::awake`]).
    pub fn wait_begins(&self) -> bool {
        let layout = self.ring.layout();
        layout.core_waiting.0.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let position = self.next.get();
        let slot = &layout.slots[position as usize % SLOTS];
        slot.sequence.load(Ordering::SeqCst) != position.wrapping_add(1)
    }

    /// Lowers the flag (a doorbell already sent is read as a spare wake).
    pub fn awake(&self) {
        self.ring.layout().core_waiting.0.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new ring as a worker maps it (from its own copy of the memfd) and
    /// as the core reads it.
    fn ring_pair() -> (CompletionRing, RingReader) {
        let ring = CompletionRing::create().expect("ring");
        let memfd = ring.memfd().expect("memfd").try_clone().expect("dup");
        let worker = CompletionRing::map(memfd).expect("map");
        (worker, RingReader::new(ring))
    }

    fn completion(n: u8) -> [u8; COMPLETION_BYTES] {
        [n; COMPLETION_BYTES]
    }

    #[test]
    fn completions_come_out_in_order_across_wraps_and_a_full_ring_says_so() {
        let (worker, reader) = ring_pair();
        for round in 0..5u8 {
            for i in 0..SLOTS {
                assert_eq!(worker.push(&completion(i as u8 ^ round)), Pushed::Taken);
            }
            assert_eq!(worker.push(&completion(0xff)), Pushed::Full);
            for i in 0..SLOTS {
                assert_eq!(reader.take(), Some(completion(i as u8 ^ round)));
            }
            assert_eq!(reader.take(), None);
        }
    }

    #[test]
    fn a_push_while_the_core_waits_rings_the_doorbell_once() {
        let (worker, reader) = ring_pair();
        assert!(reader.wait_begins(), "empty");
        assert_eq!(worker.push(&completion(1)), Pushed::TakenRingTheDoorbell);
        assert_eq!(worker.push(&completion(2)), Pushed::Taken);
        assert!(!reader.wait_begins(), "not empty");
        reader.awake();
        assert_eq!(worker.push(&completion(3)), Pushed::Taken);
        assert_eq!(reader.take(), Some(completion(1)));
        assert_eq!(reader.take(), Some(completion(2)));
        assert_eq!(reader.take(), Some(completion(3)));
    }

    #[test]
    fn threads_pushing_at_once_lose_nothing() {
        let (worker, reader) = ring_pair();
        let worker = std::sync::Arc::new(worker);
        let per_thread = 10_000u32;
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let worker = worker.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let mut c = [0u8; COMPLETION_BYTES];
                        c[0] = t;
                        c[1..5].copy_from_slice(&i.to_le_bytes());
                        while worker.push(&c) == Pushed::Full {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32; 4];
        let mut taken = 0;
        while taken < 4 * per_thread {
            match reader.take() {
                Some(c) => {
                    let t = c[0] as usize;
                    let i = u32::from_le_bytes([c[1], c[2], c[3], c[4]]);
                    assert_eq!(i, next[t], "thread {t}'s completions in order, none lost");
                    next[t] += 1;
                    taken += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for thread in threads {
            thread.join().expect("pusher");
        }
        assert_eq!(reader.take(), None);
    }

    #[test]
    fn a_memfd_of_another_size_or_unsealed_is_refused() {
        let memfd = memfd::MemfdOptions::default()
            .create("not-a-ring")
            .expect("memfd");
        memfd.as_file().set_len(BYTES as u64).expect("size");
        assert!(matches!(
            CompletionRing::map(OwnedFd::from(memfd.into_file())),
            Err(RingError::Unsealed(_))
        ));
    }
}
