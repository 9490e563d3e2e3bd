//! `SharedArray`: an ndarray in a shared segment, read and written under the segment's
//! cross-process lock, and `FrozenArray`, its read-only, lock-free form.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use ndarray::{ArrayBase, ArrayRef, ArrayView, ArrayViewMut, Data, Dimension, IntoDimension};

use super::{Layout, Segment};
use crate::error::Error;
use crate::sync::{Busy, ReadHold, SlotCache, WriteHold};

/// An n-dimensional array of plain-old-data elements in shared memory, visible to every
/// worker forked after it was made, without a copy.
///
/// Reads go through [`read`](Self::read) (many readers at once, in any process) and writes
/// through [`write`](Self::write) (one writer, excluding all readers). Both are guards on a
/// lock that lives in the segment itself, and a process that dies holding it does not block
/// the others: the lock is recovered and the recovery counted
/// ([`lock_recoveries`](Self::lock_recoveries)). For data that no longer changes,
/// [`freeze`](Self::freeze) gives a [`FrozenArray`] that reads with no lock at all.
///
/// The segment is an anonymous memory file (`memfd`): it has no name in `/dev/shm` and
/// disappears when the last process holding it exits, whatever way it exits. For another
/// program to attach, an array can instead live under a name
/// ([`create_named`](Self::create_named), [`open_named`](Self::open_named)).
///
/// # Examples
/// ```
/// use forkmap::{Pool, SharedArray};
///
/// let grid = SharedArray::<f64, _>::zeros((4, 4))?;
/// grid.write().fill(1.5);
/// let sums: Vec<f64> = Pool::new().workers(2).map(0..4, |row| grid.read().row(row).sum())?;
/// assert_eq!(sums, vec![6.0; 4]);
/// # Ok::<(), forkmap::Error>(())
/// ```
///
/// A view taken through a guard cannot outlive the guard, so no reference escapes the lock:
///
/// ```compile_fail,E0597
/// let a = forkmap::SharedArray::<f64, _>::zeros(3).unwrap();
/// let escaped = { let guard = a.read(); guard.view() };
/// ```
///
/// and a write guard is released by the thread that took it (it is not `Send`):
///
/// ```compile_fail,E0277
/// fn send<T: Send>(_: T) {}
/// let a = forkmap::SharedArray::<f64, _>::zeros(3).unwrap();
/// send(a.write());
/// ```
pub struct SharedArray<A, D> {
    seg: Segment,
    dim: D,
    slots: SlotCache,
    _elem: PhantomData<A>,
}

impl<A, D: Dimension> std::fmt::Debug for SharedArray<A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedArray")
            .field("type", &std::any::type_name::<A>())
            .field("shape", &self.dim.slice())
            .field("segment", &self.seg)
            .finish()
    }
}

impl<A: Pod, D: Dimension> SharedArray<A, D> {
    /// A new array of the given shape, every element zero (all-zero bytes).
    ///
    /// The memory is reserved up front, so an array larger than what the system can give
    /// fails here with [`Error::Shm`] instead of crashing a worker later.
    ///
    /// # Errors
    /// [`Error::Shm`] when the memory cannot be created, reserved or mapped;
    /// [`Error::Mismatch`] for more than 8 dimensions.
    pub fn zeros<Sh: IntoDimension<Dim = D>>(shape: Sh) -> Result<Self, Error> {
        let dim = shape.into_dimension();
        let seg = Segment::create(&Layout::of::<A>(dim.slice()))?;
        Ok(SharedArray {
            seg,
            dim,
            slots: SlotCache::default(),
            _elem: PhantomData,
        })
    }

    /// A new shared array holding a copy of `array` (in logical, row-major order).
    ///
    /// # Errors
    /// As [`zeros`](Self::zeros).
    pub fn from_array<S: Data<Elem = A>>(array: &ArrayBase<S, D>) -> Result<Self, Error> {
        let shared = Self::zeros(array.raw_dim())?;
        shared.write().assign(array);
        Ok(shared)
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.dim.size()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a shared (read) hold on the array: it waits while a writer holds it, and
    /// blocks writers in every process until the guard is dropped.
    ///
    /// The guard derefs to an [`ArrayRef`], so it indexes and calls ndarray methods
    /// directly: `grid.read()[[i, j]]`, `grid.read().sum()`; [`ReadGuard::view`] gives an
    /// [`ArrayView`] bounded by the guard.
    ///
    /// Taking `read` while the same thread holds [`write`](Self::write) deadlocks, as with
    /// `std::sync::RwLock`. Beyond 1024 processes holding read guards at the same
    /// instant, `read` waits for one of them to drop its last guard
    /// ([`try_read`](Self::try_read) returns an error instead); readers that come and go
    /// never run out of slots, however many processes there are.
    pub fn read(&self) -> ReadGuard<'_, A, D> {
        let hold = self.seg.header().lock.read(&self.slots);
        // SAFETY: the read hold excludes writers in every process until `hold` drops,
        // and the guard keeps both together; the pointer and shape come from our segment.
        let view = unsafe { ArrayView::from_shape_ptr(self.dim.clone(), self.data()) };
        ReadGuard { view, hold }
    }

    /// Takes a shared hold only if that needs no waiting: no writer holds or waits for
    /// the lock, and a reader slot is free. Up to 1024 processes can hold read guards on
    /// one array at the same instant (a process takes a slot with its first guard and
    /// gives it back with its last); [`read`](Self::read) waits for a slot beyond that.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] naming the segment and the reason (a writer, or every
    /// reader slot held by another live process).
    ///
    /// # Examples
    /// ```
    /// let a = forkmap::SharedArray::<u8, _>::zeros(4)?;
    /// assert_eq!(a.try_read()?[0], 0);
    /// let w = a.write();
    /// assert!(matches!(a.try_read(), Err(forkmap::Error::WouldBlock { .. })));
    /// # drop(w);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn try_read(&self) -> Result<ReadGuard<'_, A, D>, Error> {
        let hold = self
            .seg
            .header()
            .lock
            .try_read(&self.slots)
            .map_err(|busy| Error::WouldBlock {
                segment: self.seg.label().to_string(),
                reason: match busy {
                    Busy::Writer => "a writer holds the lock or waits for it",
                    Busy::Slots => {
                        "every reader slot (1024) is held by another live process; \
                         read() waits for one"
                    }
                },
            })?;
        // SAFETY: as in `read`: the hold excludes writers until it drops.
        let view = unsafe { ArrayView::from_shape_ptr(self.dim.clone(), self.data()) };
        Ok(ReadGuard { view, hold })
    }

    /// Takes the exclusive (write) hold: it waits until no process reads or writes, then
    /// gives mutable access until the guard is dropped.
    ///
    /// If the previous holder died while holding the lock, the lock is recovered, counted
    /// and [`WriteGuard::recovered`] says so; the data may then be half-written.
    pub fn write(&self) -> WriteGuard<'_, A, D> {
        let hold = self.seg.header().lock.write();
        // SAFETY: the write hold excludes every other reader and writer in every process
        // until it drops; the pointer and shape come from our writable segment.
        let view = unsafe { ArrayViewMut::from_shape_ptr(self.dim.clone(), self.data()) };
        WriteGuard {
            view,
            hold,
            _not_send: PhantomData,
        }
    }

    /// A view of the data without taking the lock.
    ///
    /// # Safety
    /// While the view lives, no process may write the elements it reads (for example,
    /// every writer writes only rows that this reader never reads, or all writes happened
    /// before the workers were forked and none happens until the view is gone).
    pub unsafe fn view_unchecked(&self) -> ArrayView<'_, A, D> {
        // SAFETY: the caller promises no concurrent writer; the pointer and shape are ours.
        unsafe { ArrayView::from_shape_ptr(self.dim.clone(), self.data()) }
    }

    /// A mutable view of the data without taking the lock, for structurally disjoint
    /// writes such as "each task writes only its own row".
    ///
    /// # Safety
    /// While the view lives, no other process or thread may read or write the elements
    /// this view touches, and no two such views may overlap in what they touch.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn view_mut_unchecked(&self) -> ArrayViewMut<'_, A, D> {
        // SAFETY: the caller promises exclusive use of what it touches.
        unsafe { ArrayViewMut::from_shape_ptr(self.dim.clone(), self.data()) }
    }

    /// How many times a holder of this array's lock died and its hold was recovered.
    pub fn lock_recoveries(&self) -> u32 {
        self.seg.header().lock.recoveries()
    }

    /// The pid of the last process found dead while holding this array's lock, if any.
    pub fn last_dead_holder(&self) -> Option<i32> {
        self.seg.header().lock.last_dead_holder()
    }

    /// Turns the array read-only for good: the memory is sealed against writes (by any
    /// process) and mapped read-only, so reads need no lock and cost nothing extra.
    ///
    /// # Errors
    /// [`Error::Shm`] if another process still maps the segment writable; the array is
    /// then dropped ([`try_freeze`](Self::try_freeze) hands it back instead). Workers
    /// forked by a `map` running in another thread at that moment inherit every mapping of
    /// the process, this one included, and count until they are reaped.
    pub fn freeze(self) -> Result<FrozenArray<A, D>, Error> {
        self.try_freeze().map_err(|(_, e)| e)
    }

    /// As [`freeze`](Self::freeze), but a refused freeze hands the array back.
    ///
    /// # Errors
    /// The array itself and [`Error::Shm`] when the segment could not be sealed.
    // Handing the array back on a refused freeze is the point; freezing is rare.
    #[allow(clippy::result_large_err)]
    pub fn try_freeze(self) -> Result<FrozenArray<A, D>, (Self, Error)> {
        let SharedArray {
            seg, dim, slots, ..
        } = self;
        match seg.freeze() {
            Ok(seg) => {
                // SAFETY: the segment is sealed against writes and mapped read-only and
                // is owned by the FrozenArray for as long as the view exists.
                let view =
                    unsafe { ArrayView::from_shape_ptr(dim.clone(), seg.data_ptr() as *const A) };
                Ok(FrozenArray { view, seg, dim })
            }
            Err((seg, e)) => Err((
                SharedArray {
                    seg,
                    dim,
                    slots,
                    _elem: PhantomData,
                },
                e,
            )),
        }
    }

    fn data(&self) -> *mut A {
        self.seg.data_ptr() as *mut A
    }
}

/// A shared hold on a [`SharedArray`]; derefs to the array's [`ArrayRef`].
pub struct ReadGuard<'a, A, D> {
    view: ArrayView<'a, A, D>,
    hold: ReadHold<'a>,
}

impl<'a, A, D: Dimension> ReadGuard<'a, A, D> {
    /// An [`ArrayView`] of the data that cannot outlive the guard.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        self.view.view()
    }

    /// Whether taking this hold had to recover the lock from a holder that died.
    pub fn recovered(&self) -> bool {
        self.hold.recovered()
    }
}

impl<A, D: Dimension> Deref for ReadGuard<'_, A, D> {
    type Target = ArrayRef<A, D>;
    fn deref(&self) -> &ArrayRef<A, D> {
        &self.view
    }
}

impl<A: std::fmt::Debug, D: Dimension> std::fmt::Debug for ReadGuard<'_, A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReadGuard").field(&self.view).finish()
    }
}

/// The exclusive hold on a [`SharedArray`]; derefs (mutably) to the array's [`ArrayRef`].
///
/// It is not `Send`: the lock must be released by the thread that took it.
pub struct WriteGuard<'a, A, D> {
    view: ArrayViewMut<'a, A, D>,
    hold: WriteHold<'a>,
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl<'a, A, D: Dimension> WriteGuard<'a, A, D> {
    /// An [`ArrayView`] of the data that cannot outlive the guard.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        self.view.view()
    }

    /// An [`ArrayViewMut`] of the data that cannot outlive the guard.
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, A, D> {
        self.view.view_mut()
    }

    /// Whether taking this hold had to recover the lock from a holder that died.
    pub fn recovered(&self) -> bool {
        self.hold.recovered()
    }
}

impl<A, D: Dimension> Deref for WriteGuard<'_, A, D> {
    type Target = ArrayRef<A, D>;
    fn deref(&self) -> &ArrayRef<A, D> {
        &self.view
    }
}

impl<A, D: Dimension> DerefMut for WriteGuard<'_, A, D> {
    fn deref_mut(&mut self) -> &mut ArrayRef<A, D> {
        &mut self.view
    }
}

impl<A: std::fmt::Debug, D: Dimension> std::fmt::Debug for WriteGuard<'_, A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WriteGuard").field(&self.view).finish()
    }
}

/// A [`SharedArray`] sealed read-only: it derefs to an [`ArrayRef`] with no lock and no
/// per-read cost. No process can write the memory any more (the kernel refuses), which
/// is what makes lock-free shared references sound.
///
/// # Examples
/// ```
/// use forkmap::{Pool, SharedArray};
/// use ndarray::Array2;
///
/// let table = SharedArray::from_array(&Array2::<u32>::from_shape_fn((3, 3), |(i, j)| (i * 3 + j) as u32))?
///     .freeze()?;
/// let diag: Vec<u32> = Pool::new().workers(2).map(0..3, |i| table[[i, i]])?;
/// assert_eq!(diag, vec![0, 4, 8]);
/// # Ok::<(), forkmap::Error>(())
/// ```
///
/// Its views borrow it, so they cannot outlive the mapping:
///
/// ```compile_fail,E0505
/// let frozen = forkmap::SharedArray::<u8, _>::zeros(2).unwrap().freeze().unwrap();
/// let view = frozen.view();
/// drop(frozen);
/// let _ = view[0];
/// ```
pub struct FrozenArray<A: 'static, D> {
    // Declared first so it is dropped before the mapping it points into.
    view: ArrayView<'static, A, D>,
    seg: Segment,
    dim: D,
}

impl<A: 'static, D: Dimension> FrozenArray<A, D> {
    /// An [`ArrayView`] bounded by this handle.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        self.view.view()
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// Whether the kernel enforces the read-only state (a write seal on the memfd).
    pub fn is_sealed(&self) -> bool {
        self.seg.is_frozen()
    }
}

impl<A: 'static, D: Dimension> Deref for FrozenArray<A, D> {
    type Target = ArrayRef<A, D>;
    fn deref(&self) -> &ArrayRef<A, D> {
        &self.view
    }
}

impl<A: 'static, D: Dimension> std::fmt::Debug for FrozenArray<A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenArray")
            .field("type", &std::any::type_name::<A>())
            .field("shape", &self.dim.slice())
            .field("segment", &self.seg)
            .finish()
    }
}

// SAFETY: the data is only reachable through `&self` as shared, immutable views of
// sealed memory; A: Pod is Sync.
unsafe impl<A: Pod, D: Dimension> Sync for FrozenArray<A, D> {}
// SAFETY: the handle owns its mapping; moving it between threads moves nothing shared.
unsafe impl<A: Pod, D: Dimension> Send for FrozenArray<A, D> {}

impl<A: Pod, D: Dimension> SharedArray<A, D> {
    /// Wraps a segment whose header was written, or checked, for elements `A` in the
    /// shape `dim`.
    pub(super) fn from_segment(seg: Segment, dim: D) -> Self {
        SharedArray {
            seg,
            dim,
            slots: SlotCache::default(),
            _elem: PhantomData,
        }
    }

    /// The segment holding the array.
    pub(super) fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The segment holding the array, to change what it knows of its name.
    pub(super) fn segment_mut(&mut self) -> &mut Segment {
        &mut self.seg
    }
}
