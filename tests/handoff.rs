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
    // Any serde format refuses it: a descriptor means nothing outside forkmap's result path.
    let err = postcard::to_stdvec(&a).unwrap_err();
    assert!(matches!(err, postcard::Error::SerdeSerCustom), "{err}");
}
