//! A batch of results received in a memory file: mapped, and decoded while the file's
//! pages are given back behind the cursor, so the parent holds about one copy (the value
//! being built) rather than two.
//!
//! Only bytes consumed by value, or lent for one call only, are given back. Once the
//! deserializer has lent out a slice for longer (a borrowed `&str` or `&[u8]`, which a
//! `Deserialize` may keep until it finishes), nothing from that slice on is given back.
//! The decoder reads the mapping through a raw pointer and makes references only to
//! ranges that are not given back while the references live.

use std::fs::File;
use std::io;
use std::marker::PhantomData;

use postcard::de_flavors::Flavor;
use serde::de::DeserializeOwned;

/// Give pages back in steps of this many bytes.
const STEP: usize = 4 << 20;
const PAGE: usize = 4096;

/// A memory file received from a worker, mapped read-only.
#[derive(Debug)]
pub(crate) struct ReceivedFile {
    file: File,
    map: memmap2::Mmap,
}

impl ReceivedFile {
    /// Maps `file` whole.
    pub(crate) fn map(file: File) -> io::Result<ReceivedFile> {
        // SAFETY: the file is a memory file written by one worker, which closed its
        // descriptor after sending it; nobody else holds it. Only this type changes it
        // afterwards (punching holes), and never under a live reference (see `Draining`).
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        Ok(ReceivedFile { file, map })
    }

    /// Decodes the value at `offset..offset + len` (all of it one value) and gives its
    /// pages back as it goes. `&mut self`: no other reference into the mapping is alive.
    pub(crate) fn decode<T: DeserializeOwned>(
        &mut self,
        offset: usize,
        len: usize,
    ) -> Result<T, String> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.map.len())
            .ok_or("its bytes are missing from the batch")?;
        let file = &self.file;
        let release = |at: usize, n: usize| {
            let _ = super::punch_hole(file, offset + at, n);
        };
        let flavor = Draining {
            // SAFETY: offset <= end <= the mapping's length.
            base: unsafe { self.map.as_ptr().add(offset) },
            len: end - offset,
            pos: 0,
            released: 0,
            pinned: usize::MAX,
            next_release: STEP,
            release: &release,
            _lent: PhantomData,
        };
        let mut de = postcard::Deserializer::from_flavor(flavor);
        T::deserialize(&mut de).map_err(|e| e.to_string())
    }
}

/// A postcard input over `len` mapped bytes at `base`, giving back pages behind it.
struct Draining<'de> {
    base: *const u8,
    len: usize,
    pos: usize,
    /// Bytes before this offset were given back.
    released: usize,
    /// The first byte lent out for `'de`; nothing from here on is given back.
    pinned: usize,
    /// `pop` looks at giving pages back only once `pos` reaches this (`usize::MAX`: never
    /// again), so a byte costs a comparison rather than a call.
    next_release: usize,
    /// Gives back `n` bytes from `at` (relative to `base`).
    release: &'de dyn Fn(usize, usize),
    _lent: PhantomData<&'de [u8]>,
}

impl Draining<'_> {
    /// Gives back whole pages before `upto` (and before any lent slice).
    #[cold]
    fn release_before(&mut self, upto: usize) {
        let limit = upto.min(self.pinned) / PAGE * PAGE;
        if limit >= self.released + STEP {
            (self.release)(self.released, limit - self.released);
            self.released = limit;
        }
        self.plan_release();
    }

    /// Where `pop` next looks at giving pages back: a step past the last release, unless
    /// a lent slice keeps everything up to there.
    fn plan_release(&mut self) {
        let next = self.released + STEP;
        self.next_release = match self.pinned / PAGE * PAGE >= next {
            true => next,
            false => usize::MAX,
        };
    }

    fn take(&mut self, ct: usize) -> postcard::Result<usize> {
        let start = self.pos;
        let end = start.checked_add(ct).filter(|&e| e <= self.len);
        self.pos = end.ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        Ok(start)
    }
}

impl<'de> Flavor<'de> for Draining<'de> {
    type Remainder = ();
    type Source = ();

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        let at = self.pos;
        if at >= self.len {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        // SAFETY: at < len, inside the mapping, and not given back yet (pages are given
        // back only before `pos`, and released <= at).
        let b = unsafe { self.base.add(at).read() };
        self.pos = at + 1;
        if self.pos >= self.next_release {
            self.release_before(self.pos);
        }
        Ok(b)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len - self.pos)
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        let start = self.take(ct)?;
        self.pinned = self.pinned.min(start);
        self.plan_release();
        // SAFETY: start..start + ct is inside the mapping, which outlives 'de; it is
        // pinned from now on, so never given back while the slice may live.
        Ok(unsafe { std::slice::from_raw_parts(self.base.add(start), ct) })
    }

    fn try_take_n_temp<'a>(&'a mut self, ct: usize) -> postcard::Result<&'a [u8]>
    where
        'de: 'a,
    {
        let start = self.take(ct)?;
        // Only pages before this slice: it lives until the next call.
        self.release_before(start);
        // SAFETY: start..start + ct is inside the mapping and after everything given
        // back; nothing is given back before the borrow of `self` ends.
        Ok(unsafe { std::slice::from_raw_parts(self.base.add(start), ct) })
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> ReceivedFile {
        let mut file = super::super::memfd_reserved("forkmap-test", 0).unwrap();
        file.write_all(bytes).unwrap();
        ReceivedFile::map(file).unwrap()
    }

    fn allocated(f: &ReceivedFile) -> u64 {
        use std::os::unix::fs::MetadataExt;
        f.file.metadata().unwrap().blocks() * 512
    }

    #[test]
    fn a_large_value_decodes_whole_and_gives_its_pages_back() {
        let value: (Vec<u8>, String, Vec<u8>) = (vec![7; 9 << 20], "kept".into(), vec![1; 9 << 20]);
        let mut bytes = vec![9u8; 3];
        crate::ipc::encode_into(&value, &mut bytes).unwrap();
        let mut f = file_with(&bytes);
        assert!(allocated(&f) + PAGE as u64 >= bytes.len() as u64);
        let back: (Vec<u8>, String, Vec<u8>) = f.decode(3, bytes.len() - 3).unwrap();
        assert_eq!(back, value);
        // All but the last step or two were given back.
        assert!(
            allocated(&f) < 3 * STEP as u64,
            "{} bytes still held",
            allocated(&f)
        );
    }

    #[test]
    fn nothing_from_a_lent_slice_on_is_given_back() {
        let data = vec![5u8; 4 * STEP];
        let released = std::cell::RefCell::new(Vec::new());
        let release = |o, l| released.borrow_mut().push((o, l));
        let mut f = Draining {
            base: data.as_ptr(),
            len: data.len(),
            pos: 0,
            released: 0,
            pinned: usize::MAX,
            next_release: STEP,
            release: &release,
            _lent: PhantomData,
        };
        for _ in 0..STEP + PAGE + 1 {
            f.pop().unwrap();
        }
        let lent = f.try_take_n(10).unwrap();
        for _ in 0..2 * STEP {
            f.pop().unwrap();
        }
        assert_eq!(lent, &[5u8; 10]);
        let end = released.borrow().iter().map(|&(o, l)| o + l).max().unwrap();
        assert!(
            end <= STEP + PAGE + 1,
            "released up to {end}, past the lent slice"
        );
    }
}
