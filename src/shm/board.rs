//! The per-`map` board: one cache-padded slot per worker in a small shared segment, where
//! workers publish progress and the task they are running, and the coordinator reads.

use std::sync::atomic::AtomicU64;

use crossbeam_utils::CachePadded;
use memmap2::{MmapOptions, MmapRaw};

use crate::error::Error;
use crate::sys;

/// What one worker publishes. All-zero is the valid start.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct WorkerSlot {
    /// Tasks finished (result computed, whether or not it was sent yet).
    pub(crate) done: AtomicU64,
    /// Position of the task now running, plus one; 0 when idle.
    pub(crate) current: AtomicU64,
    /// `sys::monotonic_coarse_ns()` when the current task started.
    pub(crate) started_ns: AtomicU64,
    /// The worker's gate: which positions of its chunks it has claimed and which the
    /// coordinator took back (see `schedule/gate.rs`).
    pub(crate) gate: AtomicU64,
}

/// The board: a memfd mapped shared, inherited by every worker forked after it.
pub(crate) struct Board {
    map: MmapRaw,
    slots: usize,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board").field("slots", &self.slots).finish()
    }
}

impl Board {
    /// A board with `slots` zeroed slots.
    pub(crate) fn new(slots: usize) -> Result<Board, Error> {
        let label = "memfd forkmap-board";
        let len = slots.max(1) * std::mem::size_of::<CachePadded<WorkerSlot>>();
        let file = sys::memfd_reserved("forkmap-board", len)
            .map_err(|e| Error::shm(label, "reserve memory", e))?;
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| Error::shm(label, "map it", e))?;
        // The mapping keeps the memory alive; the descriptor is not needed any more.
        drop(file);
        Ok(Board { map, slots })
    }

    /// The slot of worker `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub(crate) fn slot(&self, i: usize) -> &WorkerSlot {
        assert!(
            i < self.slots,
            "board slot {i} out of range ({} slots)",
            self.slots
        );
        let base = self.map.as_ptr() as *const CachePadded<WorkerSlot>;
        // SAFETY: (1) the mapping holds `slots` padded slots, is page aligned and zeroed
        // (a valid WorkerSlot of atomics); (2) it lives as long as self; (3) all access is
        // through atomics, so shared references across processes are sound.
        unsafe { &*base.add(i) }
    }

    /// Total tasks finished over all slots.
    pub(crate) fn total_done(&self) -> u64 {
        (0..self.slots)
            .map(|i| self.slot(i).done.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

impl crate::schedule::Gates for Board {
    fn gate(&self, w: usize) -> crate::schedule::Gate<'_> {
        crate::schedule::Gate(&self.slot(w).gate)
    }
}
