//! Arrays made in a worker, owned by the parent: a `SharedArray` in a task's result
//! travels as its segment's file descriptor (`SCM_RIGHTS` on the worker's side socket),
//! never as a copy. Type and shape travel in the segment's header and are checked on
//! arrival. A named array (made with `create_named` in the task) travels with its name:
//! the worker stops owning it when it is serialised, and the parent adopts it if
//! `/dev/shm/<name>` is still that file, so the parent's drop removes it.
//!
//! Serialisation only works inside forkmap's own result path, which opens a context
//! around it: the worker collects the descriptors of the arrays it serialises
//! ([`collect_outgoing`]) and sends them before the batch; the coordinator receives them
//! and decodes the batch inside [`with_incoming`].

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::OwnedFd;

use bytemuck::Pod;
use ndarray::Dimension;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Layout, Segment, SharedArray};
use crate::error::Error;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

struct Incoming {
    fds: Vec<Option<OwnedFd>>,
    error: Option<Error>,
}

/// Runs `encode` while collecting the descriptors of the arrays it serialises.
/// The context is closed again even if `encode` panics.
pub(crate) fn collect_outgoing<T>(encode: impl FnOnce() -> T) -> (T, Vec<OwnedFd>) {
    struct Scope(Option<Option<Vec<OwnedFd>>>);
    impl Scope {
        fn close(&mut self) -> Vec<OwnedFd> {
            match self.0.take() {
                Some(previous) => OUTGOING
                    .with(|o| std::mem::replace(&mut *o.borrow_mut(), previous))
                    .unwrap_or_default(),
                None => Vec::new(),
            }
        }
    }
    impl Drop for Scope {
        fn drop(&mut self) {
            self.close();
        }
    }
    let mut scope = Scope(Some(OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()))));
    let value = encode();
    let fds = scope.close();
    (value, fds)
}

/// Runs `decode` with `fds` available to the arrays it deserialises. Returns the
/// structured error an array reported, if any (a deserialiser can only pass on text).
/// Descriptors no array claimed are closed.
pub(crate) fn with_incoming<T>(
    fds: Vec<OwnedFd>,
    decode: impl FnOnce() -> T,
) -> (T, Option<Error>) {
    let incoming = Incoming {
        fds: fds.into_iter().map(Some).collect(),
        error: None,
    };
    let previous = INCOMING.with(|i| i.borrow_mut().replace(incoming));
    let value = decode();
    let done = INCOMING.with(|i| std::mem::replace(&mut *i.borrow_mut(), previous));
    (value, done.and_then(|d| d.error))
}

impl<A: Pod, D: Dimension> Serialize for SharedArray<A, D> {
    /// Only inside a forkmap task's result: the array's descriptor goes to the parent.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = OUTGOING.with(|o| -> Result<u32, String> {
            let mut o = o.borrow_mut();
            let list = o.as_mut().ok_or(
                "a SharedArray can only be serialised as (part of) the result of a forkmap task",
            )?;
            let fd = self
                .segment()
                .file
                .try_clone()
                .map_err(|e| format!("could not duplicate the segment's descriptor: {e}"))?;
            list.push(fd.into());
            Ok(list.len() as u32 - 1)
        });
        match index {
            // A named array keeps its name, and the duty to remove it moves to the parent.
            Ok(index) => (index, self.segment().hand_over_name()).serialize(s),
            Err(message) => Err(serde::ser::Error::custom(message)),
        }
    }
}

impl<'de, A: Pod, D: Dimension> Deserialize<'de> for SharedArray<A, D> {
    /// Only inside forkmap's result path: takes the descriptor that came with the message
    /// and maps the segment, checking element type and dimensionality against the header.
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        let (index, name) = <(u32, Option<String>)>::deserialize(d)?;
        let index = index as usize;
        let taken = INCOMING.with(|i| -> Result<OwnedFd, String> {
            let mut i = i.borrow_mut();
            let incoming = i.as_mut().ok_or(
                "a SharedArray can only be deserialised from the result of a forkmap task",
            )?;
            incoming
                .fds
                .get_mut(index)
                .and_then(Option::take)
                .ok_or_else(|| {
                    format!("shared array descriptor {index} is missing from the message")
                })
        });
        let fd = taken.map_err(serde::de::Error::custom)?;
        SharedArray::from_file(
            File::from(fd),
            format!("memfd received from a worker (descriptor {index})"),
        )
        .map(|mut array| {
            if let Some(name) = name {
                array.segment_mut().adopt_name(&name);
            }
            array
        })
        .map_err(|e| {
            let message = e.to_string();
            INCOMING.with(|i| {
                if let Some(incoming) = i.borrow_mut().as_mut() {
                    incoming.error.get_or_insert(e);
                }
            });
            serde::de::Error::custom(message)
        })
    }
}

impl<A: Pod, D: Dimension> SharedArray<A, D> {
    /// Maps a segment received as a file, checking its header against `A` and `D`.
    fn from_file(file: File, label: String) -> Result<Self, Error> {
        let seg = Segment::attach(file, label.clone(), |header, len| {
            let shape = header.shape();
            if let Some(ndim) = D::NDIM
                && ndim != shape.len()
            {
                return Err(Error::Mismatch {
                    segment: label.clone(),
                    message: format!(
                        "holds a {}-dimensional array, not {ndim}-dimensional",
                        shape.len()
                    ),
                });
            }
            header.check(&Layout::of::<A>(&shape), len, &label)
        })?;
        let shape = seg.header().shape();
        let dim = D::from_dimension(&ndarray::IxDyn(&shape)).ok_or_else(|| Error::Mismatch {
            segment: label,
            message: format!("shape {shape:?} does not fit the requested dimension"),
        })?;
        Ok(SharedArray::from_segment(seg, dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Ix1, Ix2};

    fn roundtrip<T: Serialize, U: serde::de::DeserializeOwned>(
        value: &T,
    ) -> (Result<U, String>, Option<Error>) {
        let (bytes, fds) = collect_outgoing(|| crate::ipc::encode(value));
        let bytes = bytes.unwrap();
        with_incoming(fds, || crate::ipc::decode::<U>(&bytes))
    }

    #[test]
    fn an_array_survives_the_trip_and_shares_memory() {
        let a = SharedArray::<u16, Ix2>::zeros((2, 3)).unwrap();
        a.write()[[1, 2]] = 7;
        let (b, err) = roundtrip::<_, SharedArray<u16, Ix2>>(&a);
        assert!(err.is_none());
        let b = b.unwrap();
        assert_eq!(b.read()[[1, 2]], 7);
        b.write()[[0, 0]] = 9;
        assert_eq!(
            a.read()[[0, 0]],
            9,
            "the received array must be the same memory"
        );
    }

    #[test]
    fn type_and_dimension_mismatches_are_errors() {
        let a = SharedArray::<f32, Ix1>::zeros(4).unwrap();
        let (b, err) = roundtrip::<_, SharedArray<f64, Ix1>>(&a);
        assert!(b.is_err());
        let err = err.expect("a structured error");
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        assert!(
            err.to_string().contains("f32") && err.to_string().contains("f64"),
            "{err}"
        );
        let (b, err) = roundtrip::<_, SharedArray<f32, Ix2>>(&a);
        assert!(b.is_err());
        assert!(err.unwrap().to_string().contains("1-dimensional"));
    }

    #[test]
    fn serialising_outside_a_task_is_refused() {
        let a = SharedArray::<u8, Ix1>::zeros(1).unwrap();
        let err = crate::ipc::encode(&a);
        assert!(err.is_err());
    }
}
