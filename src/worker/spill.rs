//! Where a worker encodes a batch: memory while it is small, a memory file once it passes
//! [`FILE_PAYLOAD`](crate::ipc::FILE_PAYLOAD), so a large result costs the worker its value
//! plus the file (no growing buffer that doubles, no second copy for sending).

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use crate::ipc::FILE_PAYLOAD;
use crate::sys;

/// Writes are gathered up to this many bytes before they go to the file.
const PENDING: usize = 64 << 10;

/// An encoding sink that spills from memory to a memory file.
#[derive(Debug, Default)]
pub(super) struct Spill {
    mem: Vec<u8>,
    /// Once spilled: the file, and the bytes written to it so far.
    file: Option<(File, usize)>,
    /// The last write error, with the OS's reason (postcard reports only "buffer full").
    pub(super) error: Option<io::Error>,
}

impl Spill {
    /// Bytes written so far.
    pub(super) fn len(&self) -> usize {
        match &self.file {
            Some((_, written)) => written + self.mem.len(),
            None => self.mem.len(),
        }
    }

    /// Drops everything after the first `len` bytes.
    pub(super) fn truncate(&mut self, len: usize) -> io::Result<()> {
        self.error = None;
        match &mut self.file {
            None => self.mem.truncate(len),
            Some((_, written)) if len >= *written => self.mem.truncate(len - *written),
            Some((file, written)) => {
                self.mem.clear();
                file.set_len(len as u64)?;
                file.seek(SeekFrom::Start(len as u64))?;
                *written = len;
            }
        }
        Ok(())
    }

    /// The bytes, in memory or in a file.
    pub(super) fn finish(mut self) -> io::Result<Result<Vec<u8>, File>> {
        match self.file.take() {
            None => Ok(Ok(self.mem)),
            Some((mut file, _)) => {
                file.write_all(&self.mem)?;
                Ok(Err(file))
            }
        }
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.mem.extend_from_slice(data);
        match &mut self.file {
            None if self.mem.len() >= FILE_PAYLOAD => {
                let mut file = sys::memfd_reserved("forkmap-results", 0)?;
                file.write_all(&self.mem)?;
                self.file = Some((file, self.mem.len()));
                self.mem = Vec::with_capacity(PENDING);
            }
            Some((file, written)) if self.mem.len() >= PENDING => {
                file.write_all(&self.mem)?;
                *written += self.mem.len();
                self.mem.clear();
            }
            _ => {}
        }
        Ok(())
    }
}

impl Write for Spill {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.put(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn spills_to_a_file_and_truncates_back() {
        let mut s = Spill::default();
        s.write_all(&[1; 1000]).unwrap();
        assert!(s.file.is_none());
        s.write_all(&vec![2; FILE_PAYLOAD]).unwrap();
        assert!(s.file.is_some());
        let keep = s.len();
        s.write_all(&vec![3; 3 * PENDING]).unwrap();
        s.truncate(keep).unwrap();
        s.write_all(&[4; 10]).unwrap();
        assert_eq!(s.len(), keep + 10);
        let mut file = s.finish().unwrap().unwrap_err();
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), keep + 10);
        assert!(back[..1000].iter().all(|&b| b == 1));
        assert!(back[1000..keep].iter().all(|&b| b == 2));
        assert!(back[keep..].iter().all(|&b| b == 4));
    }
}
