//! Arrays made in workers are owned by the parent: the segment's descriptor crosses over,
//! no copy, no name; type and shape come from the header.

mod common;

use forkmap::ndarray::{Array2, Ix1, Ix2, IxDyn};
use forkmap::{Pool, SharedArray};

#[test]
fn arrays_made_in_workers_reach_the_parent_without_a_copy() {
    let _d = common::deadline(120);
    let _s = common::serial();
    // Warm up process-wide descriptors that are opened once, then count.
    Pool::new()
        .workers(2)
        .progress(false)
        .map(0..2, |i| i)
        .unwrap();
    let fds = common::open_fds();
    {
        let arrays: Vec<SharedArray<f64, Ix2>> = Pool::new()
            .workers(2)
            .progress(false)
            .map(0..6, |i| {
                let a = SharedArray::<f64, _>::zeros((i + 1, 3)).unwrap();
                a.write()
                    .assign(&Array2::from_shape_fn((i + 1, 3), |(r, c)| {
                        (i * 100 + r * 10 + c) as f64
                    }));
                a
            })
            .unwrap();
        for (i, a) in arrays.iter().enumerate() {
            assert_eq!(a.shape(), &[i + 1, 3]);
            assert_eq!(a.read()[[i, 2]], (i * 100 + i * 10 + 2) as f64);
        }
        // They are ordinary shared arrays now: another pool can write them, under their lock.
        Pool::new()
            .workers(2)
            .progress(false)
            .map(0..6, |i| arrays[i].write()[[0, 0]] = -1.0)
            .unwrap();
        assert!(arrays.iter().all(|a| a.read()[[0, 0]] == -1.0));
        // And they can be frozen, since no worker maps them any more.
        let frozen = arrays.into_iter().next().unwrap().freeze().unwrap();
        assert_eq!(frozen[[0, 1]], 1.0);
    }
    assert_eq!(
        common::open_fds(),
        fds,
        "descriptors of received arrays leaked"
    );
}

#[test]
fn many_arrays_in_one_batch_and_inside_structures() {
    let _d = common::deadline(120);
    let _s = common::serial();
    // 300 tasks in one chunk: more descriptors than one SCM_RIGHTS message carries.
    let out: Vec<(String, SharedArray<u32, Ix1>)> = Pool::new()
        .workers(1)
        .chunk_size(300)
        .progress(false)
        .map(0..300, |i| {
            let a = SharedArray::<u32, _>::zeros(2).unwrap();
            a.write()[1] = i as u32;
            (format!("t{i}"), a)
        })
        .unwrap();
    for (i, (name, a)) in out.iter().enumerate() {
        assert_eq!(name, &format!("t{i}"));
        assert_eq!(a.read()[1], i as u32);
    }
}

#[test]
fn dynamic_dimensions_take_the_shape_from_the_header() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let out: Vec<SharedArray<i16, IxDyn>> = Pool::new()
        .workers(2)
        .progress(false)
        .map(1..4, |k| {
            SharedArray::<i16, IxDyn>::zeros(IxDyn(&vec![2; k])).unwrap()
        })
        .unwrap();
    assert_eq!(out[0].shape(), &[2]);
    assert_eq!(out[2].shape(), &[2, 2, 2]);
}

#[test]
fn a_shared_array_cannot_be_serialised_outside_a_task() {
    let _s = common::serial();
    let a = SharedArray::<f64, Ix1>::zeros(3).unwrap();
    let err = ipc_like_encode(&a).unwrap_err();
    assert!(err.contains("result of a forkmap task"), "{err}");
}

/// Serialises with a plain serde serializer (the one in `serde`'s test-free toolbox is not
/// available, so use a tiny one that accepts anything).
fn ipc_like_encode<T: serde::Serialize>(value: &T) -> Result<(), String> {
    struct Probe;
    impl serde::Serializer for Probe {
        type Ok = ();
        type Error = serde::de::value::Error;
        type SerializeSeq = serde::ser::Impossible<(), Self::Error>;
        type SerializeTuple = serde::ser::Impossible<(), Self::Error>;
        type SerializeTupleStruct = serde::ser::Impossible<(), Self::Error>;
        type SerializeTupleVariant = serde::ser::Impossible<(), Self::Error>;
        type SerializeMap = serde::ser::Impossible<(), Self::Error>;
        type SerializeStruct = serde::ser::Impossible<(), Self::Error>;
        type SerializeStructVariant = serde::ser::Impossible<(), Self::Error>;
        fn serialize_bool(self, _: bool) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_i8(self, _: i8) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_i16(self, _: i16) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_i32(self, _: i32) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_i64(self, _: i64) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_u8(self, _: u8) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_u16(self, _: u16) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_u32(self, _: u32) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_u64(self, _: u64) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_f32(self, _: f32) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_f64(self, _: f64) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_char(self, _: char) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_str(self, _: &str) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_none(self) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_some<T: serde::Serialize + ?Sized>(self, v: &T) -> Result<(), Self::Error> {
            v.serialize(self)
        }
        fn serialize_unit(self) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
        ) -> Result<(), Self::Error> {
            Ok(())
        }
        fn serialize_newtype_struct<T: serde::Serialize + ?Sized>(
            self,
            _: &'static str,
            v: &T,
        ) -> Result<(), Self::Error> {
            v.serialize(self)
        }
        fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            v: &T,
        ) -> Result<(), Self::Error> {
            v.serialize(self)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
            Err(serde::ser::Error::custom("seq"))
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
            Err(serde::ser::Error::custom("tuple"))
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Self::Error> {
            Err(serde::ser::Error::custom("tuple"))
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Self::Error> {
            Err(serde::ser::Error::custom("tuple"))
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
            Err(serde::ser::Error::custom("map"))
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Self::Error> {
            Err(serde::ser::Error::custom("struct"))
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Self::Error> {
            Err(serde::ser::Error::custom("struct"))
        }
    }
    value.serialize(Probe).map_err(|e| e.to_string())
}
