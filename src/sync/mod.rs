//! Cross-process reader-writer lock living in shared memory, recovered when a holder dies.
//!
//! See `README.md` beside this file for the protocol: which atomic synchronises with
//! which, and how a dead reader or writer is recovered.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use crossbeam_utils::Backoff;

use crate::sys::{self, Pid};

/// Reader slots in one lock: how many processes can hold read guards on one array at the
/// same instant. A slot is taken by the first guard of a process and given back by its
/// last, so processes that read one after another never run out.
pub(crate) const READER_SLOTS: usize = 1024;

/// Slots per cache line; logical positions are spread over lines (see [`Slots::at`]).
const PER_LINE: usize = 8;
const LINES: usize = READER_SLOTS / PER_LINE;

/// Bits of a slot word for the number of guards its holder has (the low bits).
const COUNT_BITS: u32 = 12;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// Bits of a holder identity for its start time; the pid takes the 22 bits above them
/// (Linux pids are below `PID_MAX_LIMIT`, 2^22).
const START_BITS: u32 = 30;
const START_MASK: u64 = (1 << START_BITS) - 1;

/// Who holds a slot: a pid and its process's start time, which a later process that is
/// given the same pid does not share. Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder(u64);

impl Holder {
    /// The identity of the process `pid` that started `start` clock ticks after boot
    /// (0: unknown). The start time is kept modulo 2^30 - 1 and offset by one, so 0 stays
    /// "unknown": two processes collide only with the same pid and start times an exact
    /// multiple of about 124 days apart (at 100 ticks a second).
    pub(crate) fn new(pid: Pid, start: u64) -> Holder {
        let start = if start == 0 {
            0
        } else {
            start % START_MASK + 1
        };
        Holder(((pid as u32 as u64) << START_BITS) | start)
    }

    /// This process.
    fn me() -> Holder {
        let (pid, start) = sys::self_identity();
        Holder::new(pid, start)
    }

    fn pid(self) -> Pid {
        (self.0 >> START_BITS) as Pid
    }

    /// Whether the process this identity names still runs: the pid runs, is no zombie,
    /// and (when both are known) started at the recorded time.
    fn alive(self) -> bool {
        let pid = self.pid();
        // Our own pid: this process is the only one that has it now, so the holder is
        // alive exactly when it is us (a dead process's hold under a pid we were given).
        if pid == sys::getpid() {
            return self == Holder::me();
        }
        if !sys::process_exists(pid) {
            return false;
        }
        match sys::proc_stat(pid) {
            Some(('Z' | 'X' | 'x', _)) => false,
            Some((_, start)) => {
                let recorded = self.0 & START_MASK;
                recorded == 0 || Holder::new(pid, start).0 & START_MASK == recorded
            }
            None => sys::process_running(pid),
        }
    }

    fn from_word(word: u64) -> Holder {
        Holder(word >> COUNT_BITS)
    }

    fn word(self, count: u64) -> u64 {
        (self.0 << COUNT_BITS) | count
    }
}

/// The reader slots: one word each, `holder << 12 | guards`, 0 when free.
#[repr(C, align(64))]
struct Slots([AtomicU64; READER_SLOTS]);

impl Slots {
    /// The slot at logical position `p`: consecutive positions lie on different cache
    /// lines, so the first 128 processes to read never share one.
    fn at(&self, p: usize) -> &AtomicU64 {
        &self.0[(p % LINES) * PER_LINE + p / LINES]
    }
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
    /// Logical slot positions `0..claimed` may be in use: claims take the lowest free
    /// position and this only grows, so writers scan as many slots as were ever busy at
    /// once, not all of them.
    claimed: AtomicU32,
    readers: Slots,
}

const _: () = assert!(std::mem::align_of::<RawRwLock>() == 64);
const _: () = assert!(READER_SLOTS.is_multiple_of(PER_LINE));
const _: () = assert!(PER_LINE * std::mem::size_of::<AtomicU64>() == 64);
const _: () = assert!(COUNT_BITS + START_BITS + 22 == 64);
const _: () = assert!(std::mem::size_of::<RawRwLock>() <= 64 * (READER_SLOTS / PER_LINE + 2));

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

/// A per-handle cache: this process's identity and the slot position it used last,
/// tagged with the fork generation they were found in (see [`sys::fork_generation`]),
/// so a forked child never uses its parent's identity.
#[derive(Debug)]
pub(crate) struct SlotCache {
    generation: AtomicU64,
    holder: AtomicU64,
    hint: AtomicU32,
}

impl Default for SlotCache {
    fn default() -> Self {
        SlotCache {
            generation: AtomicU64::new(u64::MAX),
            holder: AtomicU64::new(0),
            hint: AtomicU32::new(0),
        }
    }
}

impl SlotCache {
    fn holder(&self) -> Holder {
        let generation = sys::fork_generation();
        if generation != u64::MAX && self.generation.load(SeqCst) == generation {
            return Holder(self.holder.load(SeqCst));
        }
        let me = Holder::me();
        self.holder.store(me.0, SeqCst);
        self.hint.store(0, SeqCst);
        self.generation.store(generation, SeqCst);
        me
    }
}

/// Why a `try_read` did not take the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// A writer holds the lock or waits for it.
    Writer,
    /// Every reader slot is held by another live process.
    Slots,
}

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

    /// Adds one guard for `me` at logical position `p` if that slot is free or already
    /// `me`'s (and not full); `true` on success.
    fn try_join(&self, p: usize, me: Holder) -> bool {
        let slot = self.readers.at(p);
        // Guess "free" (the common case for the slot this process used last): one CAS
        // and no separate load.
        let mut cur = 0;
        loop {
            let new = if cur == 0 {
                // Published before the slot becomes busy, so a writer that could miss
                // this reader's increment cannot miss the slot (see README).
                if self.claimed.load(SeqCst) as usize <= p {
                    self.claimed.fetch_max(p as u32 + 1, SeqCst);
                }
                me.word(1)
            } else if Holder::from_word(cur) == me && cur & COUNT_MAX < COUNT_MAX {
                cur + 1
            } else {
                return false;
            };
            match slot.compare_exchange_weak(cur, new, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes a slot for one more guard of this process: the one it used last if that is
    /// still free or its own, else the lowest free one. `None` when every slot is held
    /// by another live process (dead holders are cleared first).
    fn join(&self, cache: &SlotCache) -> Option<(usize, Holder)> {
        let me = cache.holder();
        let hint = cache.hint.load(SeqCst) as usize;
        if self.try_join(hint, me) {
            return Some((hint, me));
        }
        for sweep in 0..2 {
            if let Some(p) = (0..READER_SLOTS).find(|&p| self.try_join(p, me)) {
                cache.hint.store(p as u32, SeqCst);
                return Some((p, me));
            }
            if sweep == 0 && !self.clear_dead_readers() {
                break;
            }
        }
        None
    }

    /// Gives back one guard at logical position `p`; the slot is free again when it was
    /// the holder's last.
    fn leave(&self, p: usize, me: Holder) {
        let slot = self.readers.at(p);
        // Guess "our only guard" (the common case): one CAS and no separate load.
        let mut cur = me.word(1);
        loop {
            debug_assert!(cur & COUNT_MAX != 0, "leaving a slot with no guard");
            let new = if cur & COUNT_MAX <= 1 { 0 } else { cur - 1 };
            match slot.compare_exchange_weak(cur, new, SeqCst, SeqCst) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Joins a slot, waiting while every slot is held by live processes.
    fn join_waiting(&self, cache: &SlotCache) -> (usize, Holder) {
        let backoff = Backoff::new();
        loop {
            if let Some(joined) = self.join(cache) {
                return joined;
            }
            if backoff.is_completed() {
                std::thread::sleep(Duration::from_millis(1));
            } else {
                backoff.snooze();
            }
        }
    }

    /// The logical positions that may be in use.
    fn in_use(&self) -> impl Iterator<Item = &AtomicU64> {
        let n = (self.claimed.load(SeqCst) as usize).min(READER_SLOTS);
        (0..n).map(|p| self.readers.at(p))
    }

    fn note_dead(&self, pid: Pid) {
        self.last_dead.store(pid, SeqCst);
        self.recoveries.fetch_add(1, SeqCst);
    }

    /// Takes a shared hold; waits while a writer holds the lock, or while every reader
    /// slot is held by another live process.
    pub(crate) fn read(&self, cache: &SlotCache) -> ReadHold<'_> {
        let (p, me) = self.join_waiting(cache);
        if self.writer.load(SeqCst) == 0 {
            return ReadHold {
                lock: self,
                p,
                me,
                recovered: false,
            };
        }
        self.leave(p, me);
        // A writer is active: queue behind it on the mutex, register while holding it.
        let recovered = self.lock_mutex();
        let (p, me) = self.join_waiting(cache);
        self.unlock_mutex();
        ReadHold {
            lock: self,
            p,
            me,
            recovered,
        }
    }

    /// Takes a shared hold only if that needs no wait: no writer holds or waits for the
    /// lock, and a reader slot is free (or this process's own).
    pub(crate) fn try_read(&self, cache: &SlotCache) -> Result<ReadHold<'_>, Busy> {
        if self.writer.load(SeqCst) != 0 {
            return Err(Busy::Writer);
        }
        let (p, me) = self.join(cache).ok_or(Busy::Slots)?;
        if self.writer.load(SeqCst) != 0 {
            self.leave(p, me);
            return Err(Busy::Writer);
        }
        Ok(ReadHold {
            lock: self,
            p,
            me,
            recovered: false,
        })
    }

    /// Takes the exclusive hold, waiting for readers to drain. Readers that died holding
    /// a shared hold are found and released here.
    pub(crate) fn write(&self) -> WriteHold<'_> {
        let mut recovered = self.lock_mutex();
        self.writer.store(1, SeqCst);
        let backoff = Backoff::new();
        let mut rounds: u32 = 0;
        loop {
            let busy = self.in_use().any(|s| s.load(SeqCst) & COUNT_MAX != 0);
            if !busy {
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

    /// Releases the slots of holders whose process is gone, a zombie, or was replaced
    /// by another process under the same pid. Only the dead holder ever changed its
    /// slot, so a CAS from the value that was judged dead clears exactly that hold.
    fn clear_dead_readers(&self) -> bool {
        let mut cleared = false;
        for slot in self.in_use() {
            let word = slot.load(SeqCst);
            if word == 0 {
                continue;
            }
            let holder = Holder::from_word(word);
            if !holder.alive() && slot.compare_exchange(word, 0, SeqCst, SeqCst).is_ok() {
                self.note_dead(holder.pid());
                cleared = true;
            }
        }
        cleared
    }
}

/// A shared hold; released on drop.
#[derive(Debug)]
pub(crate) struct ReadHold<'a> {
    lock: &'a RawRwLock,
    p: usize,
    me: Holder,
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
        self.lock.leave(self.p, self.me);
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
        l.readers
            .at(7)
            .store(Holder::new(0x3f_fff0, 5).word(1), SeqCst);
        let w = l.write();
        assert!(w.recovered());
        assert_eq!(l.recoveries(), 1);
        assert_eq!(l.last_dead_holder(), Some(0x3f_fff0));
    }

    /// Pid reuse, simulated through the slot words (a test-only path: forking until a
    /// pid repeats takes minutes): a reader that died holding a guard under *our* pid,
    /// with another start time, is neither joined by our reads nor waited for by our
    /// write.
    #[test]
    fn a_dead_reader_under_our_own_pid_is_not_us() {
        let lock = Boxed::new();
        let l = lock.get();
        let (pid, start) = sys::self_identity();
        assert_ne!(start, 0, "no start time in /proc/self/stat");
        let stale = Holder::new(pid, start + 12345);
        assert_ne!(stale, Holder::me());
        l.claimed.store(1, SeqCst);
        l.readers.at(0).store(stale.word(3), SeqCst);
        let cache = SlotCache::default();
        let r = l.read(&cache);
        assert_ne!(r.p, 0, "joined the dead process's slot");
        drop(r);
        let w = l.write();
        assert!(w.recovered(), "the stale hold was not cleared");
        assert_eq!(l.last_dead_holder(), Some(pid));
        assert_eq!(l.readers.at(0).load(SeqCst), 0);
    }

    #[test]
    fn slots_are_given_back_with_the_guard() {
        let lock = Boxed::new();
        let l = lock.get();
        let cache = SlotCache::default();
        let a = l.read(&cache);
        let b = l.read(&cache);
        assert_eq!(a.p, b.p, "one process, one slot");
        assert_eq!(l.readers.at(a.p).load(SeqCst) & COUNT_MAX, 2);
        drop(a);
        drop(b);
        assert_eq!(
            l.readers.at(0).load(SeqCst),
            0,
            "slot kept after the last guard"
        );
        // Many guards at once overflow into a second slot, and all come back.
        let many: Vec<_> = (0..COUNT_MAX as usize + 10)
            .map(|_| l.read(&cache))
            .collect();
        assert!(many.iter().any(|h| h.p != many[0].p));
        drop(many);
        assert!(l.in_use().all(|s| s.load(SeqCst) == 0));
        drop(l.write());
    }

    #[test]
    fn a_full_table_of_live_readers_is_busy_not_a_hang() {
        let lock = Boxed::new();
        let l = lock.get();
        // Every slot held by a live process that is not us: pid 1 with its real start.
        let init = Holder::new(1, sys::proc_stat(1).map_or(0, |(_, s)| s));
        for p in 0..READER_SLOTS {
            l.readers.at(p).store(init.word(1), SeqCst);
        }
        l.claimed.store(READER_SLOTS as u32, SeqCst);
        let cache = SlotCache::default();
        assert_eq!(l.try_read(&cache).err(), Some(Busy::Slots));
        // One holder leaves: the next read gets its slot.
        l.readers.at(500).store(0, SeqCst);
        let r = l.try_read(&cache).expect("a free slot");
        assert_eq!(r.p, 500);
        drop(r);
        for p in 0..READER_SLOTS {
            l.readers.at(p).store(0, SeqCst);
        }
        let w = l.write();
        assert_eq!(l.try_read(&cache).err(), Some(Busy::Writer));
        drop(w);
        assert!(l.try_read(&cache).is_ok());
    }
}
