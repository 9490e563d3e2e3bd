//! Cross-process reader-writer lock living in shared memory, recovered when a holder dies.
//!
//! See `README.md` beside this file for the protocol: which atomic synchronises with
//! which, and how a dead reader or writer is recovered.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use crossbeam_utils::Backoff;

use crate::sys::{self, Pid};

/// Processes that can hold a read lock on one array at the same time.
pub(crate) const MAX_READERS: usize = 256;

/// A slot pid that means "being cleared by whoever won the CAS".
const CLEARING: Pid = -1;

/// One process's count of read guards, alone on its cache line.
#[repr(C, align(64))]
struct ReaderSlot {
    pid: AtomicI32,
    count: AtomicU32,
}

/// The lock as it lies in shared memory. All-zero bytes are "not initialised";
/// [`RawRwLock::init`] must run once, before the memory is shared.
#[repr(C, align(64))]
pub(crate) struct RawRwLock {
    /// Serialises writers, and readers that found a writer active. Robust and
    /// process-shared: a holder that dies leaves it `EOWNERDEAD` for the next locker.
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    /// 1 while a writer holds the mutex (waiting for readers to drain, or writing).
    writer: AtomicU32,
    /// How many times a lock left by a dead holder was recovered.
    recoveries: AtomicU32,
    /// Pid of the last holder found dead (writer or reader), 0 if none.
    last_dead: AtomicI32,
    /// Pid of the process holding the mutex, for naming it if it dies.
    holder: AtomicI32,
    /// Slots `0..claimed` may be in use: claims take the lowest free slot, so writers scan
    /// as many slots as processes ever read, not all of them.
    claimed: AtomicU32,
    readers: [ReaderSlot; MAX_READERS],
}

const _: () = assert!(std::mem::align_of::<RawRwLock>() == 64);
const _: () = assert!(std::mem::size_of::<ReaderSlot>() == 64);
const _: () = assert!(std::mem::size_of::<RawRwLock>() <= 64 * (MAX_READERS + 2));

// SAFETY: the mutex is only touched through pthread calls, which are thread- and
// process-safe for a PTHREAD_PROCESS_SHARED mutex; everything else is atomic.
unsafe impl Sync for RawRwLock {}
// SAFETY: as for Sync; the lock holds no thread-affine state of its own.
unsafe impl Send for RawRwLock {}

impl std::fmt::Debug for RawRwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRwLock")
            .field("writer", &self.writer.load(SeqCst))
            .field("recoveries", &self.recoveries.load(SeqCst))
            .finish_non_exhaustive()
    }
}

/// A per-handle cache of the reader slot this process uses, tagged with the fork
/// generation it was found in (see [`sys::fork_generation`]).
#[derive(Debug, Default)]
pub(crate) struct SlotCache(AtomicU64);

impl RawRwLock {
    /// Initialises the lock in place.
    ///
    /// # Safety
    /// `this` points to zeroed, writable memory of the lock's size and alignment that no
    /// other thread or process uses yet.
    pub(crate) unsafe fn init(this: *mut RawRwLock) -> std::io::Result<()> {
        // SAFETY: (1) the attribute object is local and initialised by
        // pthread_mutexattr_init before use; (2) `this` is valid and unshared per the
        // contract, so initialising the mutex in place races with nobody.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let ret = libc::pthread_mutexattr_init(&mut attr);
            if ret != 0 {
                return Err(sys::errno_error(ret));
            }
            let mut ret =
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            if ret == 0 {
                ret = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if ret == 0 {
                ret =
                    libc::pthread_mutex_init(UnsafeCell::raw_get(&raw const (*this).mutex), &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            if ret != 0 {
                return Err(sys::errno_error(ret));
            }
        }
        Ok(())
    }

    /// How many times a holder was found dead and its hold released.
    pub(crate) fn recoveries(&self) -> u32 {
        self.recoveries.load(SeqCst)
    }

    /// The pid of the last holder found dead, if any.
    pub(crate) fn last_dead_holder(&self) -> Option<Pid> {
        Some(self.last_dead.load(SeqCst)).filter(|&p| p != 0)
    }

    /// Locks the mutex; `true` when it had to be recovered from a dead owner.
    fn lock_mutex(&self) -> bool {
        // SAFETY: the mutex was initialised by `init` before the memory was shared.
        let ret = unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        let recovered = match ret {
            0 => false,
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD returns with it locked).
                unsafe { libc::pthread_mutex_consistent(self.mutex.get()) };
                // A writer that died left its flag up; nobody else can hold it now.
                self.writer.store(0, SeqCst);
                self.note_dead(self.holder.load(SeqCst));
                true
            }
            err => panic!(
                "forkmap: the shared lock is corrupt (pthread_mutex_lock: {})",
                sys::errno_error(err)
            ),
        };
        self.holder.store(sys::getpid(), SeqCst);
        recovered
    }

    fn unlock_mutex(&self) {
        // SAFETY: called only by the thread that locked it, in a guard's drop or right
        // after registering a reader.
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
    }

    /// Finds or claims this process's reader slot.
    fn slot(&self, cache: &SlotCache) -> &ReaderSlot {
        let generation = sys::fork_generation();
        let cached = cache.0.load(SeqCst);
        if generation != u64::MAX && cached != 0 && cached >> 16 == generation & (u64::MAX >> 16) {
            return &self.readers[(cached & 0xffff) as usize - 1];
        }
        let me = sys::getpid();
        let index = self.claim_slot(me);
        if generation != u64::MAX {
            cache
                .0
                .store((generation << 16) | (index as u64 + 1), SeqCst);
        }
        &self.readers[index]
    }

    fn claim_slot(&self, me: Pid) -> usize {
        let backoff = Backoff::new();
        loop {
            if let Some(i) = self.in_use().iter().position(|s| s.pid.load(SeqCst) == me) {
                return i;
            }
            for (i, slot) in self.readers.iter().enumerate() {
                if slot.pid.compare_exchange(0, me, SeqCst, SeqCst).is_ok() {
                    // Published before this process's first count increment, so a writer
                    // that could miss the increment cannot miss the slot (see README).
                    self.claimed.fetch_max(i as u32 + 1, SeqCst);
                    return i;
                }
            }
            // Full: take over the slot of a process that no longer runs.
            for (i, slot) in self.in_use().iter().enumerate() {
                let pid = slot.pid.load(SeqCst);
                if pid > 0
                    && !sys::process_running(pid)
                    && slot.pid.compare_exchange(pid, me, SeqCst, SeqCst).is_ok()
                {
                    if slot.count.swap(0, SeqCst) != 0 {
                        self.note_dead(pid);
                    }
                    return i;
                }
            }
            if backoff.is_completed() {
                std::thread::sleep(Duration::from_millis(1));
            } else {
                backoff.snooze();
            }
        }
    }

    /// The slots that may be in use.
    fn in_use(&self) -> &[ReaderSlot] {
        let n = (self.claimed.load(SeqCst) as usize).min(MAX_READERS);
        &self.readers[..n]
    }

    fn note_dead(&self, pid: Pid) {
        self.last_dead.store(pid, SeqCst);
        self.recoveries.fetch_add(1, SeqCst);
    }

    /// Takes a shared hold; returns the slot to release and whether a dead writer's hold
    /// had to be recovered.
    pub(crate) fn read(&self, cache: &SlotCache) -> ReadHold<'_> {
        let slot = self.slot(cache);
        slot.count.fetch_add(1, SeqCst);
        if self.writer.load(SeqCst) == 0 {
            return ReadHold {
                slot,
                recovered: false,
            };
        }
        slot.count.fetch_sub(1, SeqCst);
        // A writer is active: queue behind it on the mutex, register while holding it.
        let recovered = self.lock_mutex();
        slot.count.fetch_add(1, SeqCst);
        self.unlock_mutex();
        ReadHold { slot, recovered }
    }

    /// Takes the exclusive hold, waiting for readers to drain. Readers that died holding
    /// a shared hold are found and released here.
    pub(crate) fn write(&self) -> WriteHold<'_> {
        let mut recovered = self.lock_mutex();
        self.writer.store(1, SeqCst);
        let backoff = Backoff::new();
        let mut rounds: u32 = 0;
        loop {
            let busy = self
                .in_use()
                .iter()
                .filter(|s| s.count.load(SeqCst) != 0)
                .count();
            if busy == 0 {
                break;
            }
            rounds = rounds.wrapping_add(1);
            if backoff.is_completed() {
                // Every so often, check whether the readers we wait for still live.
                if rounds.is_multiple_of(16) && self.clear_dead_readers() {
                    recovered = true;
                    continue;
                }
                std::thread::sleep(Duration::from_micros(50));
            } else {
                backoff.snooze();
            }
        }
        WriteHold {
            lock: self,
            recovered,
        }
    }

    /// Releases the slots of readers whose process is gone or a zombie.
    fn clear_dead_readers(&self) -> bool {
        let mut cleared = false;
        for slot in self.in_use() {
            let pid = slot.pid.load(SeqCst);
            if pid > 0
                && slot.count.load(SeqCst) != 0
                && !sys::process_running(pid)
                && slot
                    .pid
                    .compare_exchange(pid, CLEARING, SeqCst, SeqCst)
                    .is_ok()
            {
                slot.count.store(0, SeqCst);
                slot.pid.store(0, SeqCst);
                self.note_dead(pid);
                cleared = true;
            }
        }
        cleared
    }
}

/// A shared hold; released on drop.
#[derive(Debug)]
pub(crate) struct ReadHold<'a> {
    slot: &'a ReaderSlot,
    recovered: bool,
}

impl ReadHold<'_> {
    /// Whether taking this hold recovered the lock from a dead writer.
    pub(crate) fn recovered(&self) -> bool {
        self.recovered
    }
}

impl Drop for ReadHold<'_> {
    fn drop(&mut self) {
        self.slot.count.fetch_sub(1, SeqCst);
    }
}

impl std::fmt::Debug for ReaderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReaderSlot(pid {}, count {})",
            self.pid.load(SeqCst),
            self.count.load(SeqCst)
        )
    }
}

/// The exclusive hold; released on drop.
#[derive(Debug)]
pub(crate) struct WriteHold<'a> {
    lock: &'a RawRwLock,
    recovered: bool,
}

impl WriteHold<'_> {
    /// Whether taking this hold recovered the lock from a dead holder.
    pub(crate) fn recovered(&self) -> bool {
        self.recovered
    }
}

impl Drop for WriteHold<'_> {
    fn drop(&mut self) {
        self.lock.writer.store(0, SeqCst);
        self.lock.unlock_mutex();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{Layout, alloc_zeroed, dealloc};
    use std::sync::Arc;

    struct Boxed(*mut RawRwLock);
    // SAFETY: test-only owner of a heap lock; RawRwLock is Sync.
    unsafe impl Send for Boxed {}
    // SAFETY: as above.
    unsafe impl Sync for Boxed {}
    impl Boxed {
        fn new() -> Self {
            let layout = Layout::new::<RawRwLock>();
            // SAFETY: layout has non-zero size.
            let p = unsafe { alloc_zeroed(layout) } as *mut RawRwLock;
            assert!(!p.is_null());
            // SAFETY: fresh zeroed allocation, unshared.
            unsafe { RawRwLock::init(p) }.unwrap();
            Boxed(p)
        }
        fn get(&self) -> &RawRwLock {
            // SAFETY: initialised above, freed only in drop.
            unsafe { &*self.0 }
        }
    }
    impl Drop for Boxed {
        fn drop(&mut self) {
            // SAFETY: allocated in new with the same layout.
            unsafe { dealloc(self.0 as *mut u8, Layout::new::<RawRwLock>()) }
        }
    }

    #[test]
    fn readers_share_writers_exclude_between_threads() {
        let lock = Arc::new(Boxed::new());
        let counter = Arc::new(AtomicU64::new(0));
        let inside = Arc::new(AtomicI32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (lock, counter, inside) = (lock.clone(), counter.clone(), inside.clone());
                std::thread::spawn(move || {
                    let cache = SlotCache::default();
                    for i in 0..2000 {
                        if (i + t) % 3 == 0 {
                            let _w = lock.get().write();
                            assert_eq!(inside.fetch_add(1000, SeqCst), 0, "writer saw company");
                            counter.fetch_add(1, SeqCst);
                            inside.fetch_sub(1000, SeqCst);
                        } else {
                            let _r = lock.get().read(&cache);
                            assert!(inside.fetch_add(1, SeqCst) < 1000, "reader saw a writer");
                            inside.fetch_sub(1, SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(counter.load(SeqCst) > 0);
    }

    #[test]
    fn writer_clears_a_reader_that_no_longer_exists() {
        let lock = Boxed::new();
        let l = lock.get();
        // Pid beyond pid_max: no such process.
        l.claimed.store(8, SeqCst);
        l.readers[7].pid.store(0x3fff_fff0, SeqCst);
        l.readers[7].count.store(1, SeqCst);
        let w = l.write();
        assert!(w.recovered());
        assert_eq!(l.recoveries(), 1);
        assert_eq!(l.last_dead_holder(), Some(0x3fff_fff0));
    }
}
