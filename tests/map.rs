//! `Pool::map`: results in order for any indices, worker counts and chunk sizes.

mod common;

use forkmap::{Error, Pool};
use proptest::prelude::*;

fn work(i: usize) -> u64 {
    // Something no worker could guess without computing it.
    (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        ^ 0xABCD
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn results_match_sequential(
        indices in proptest::collection::vec(0usize..10_000, 0..400),
        workers in 1usize..5,
        chunk in prop_oneof![Just(0usize), 1usize..8, 50usize..200],
    ) {
        let _d = common::deadline(60);
        let expected: Vec<u64> = indices.iter().map(|&i| work(i)).collect();
        let got = Pool::new().workers(workers).chunk_size(chunk).progress(false).map(indices.clone(), work).unwrap();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn empty_repeated_and_unordered_indices() {
    let _d = common::deadline(30);
    let pool = Pool::new().workers(3).progress(false);
    assert_eq!(
        pool.map(Vec::<usize>::new(), work).unwrap(),
        Vec::<u64>::new()
    );
    let idx = vec![5, 5, 5, 1, 9, 0, 5, 3];
    assert_eq!(
        pool.map(idx.clone(), |i| i * 2).unwrap(),
        idx.iter().map(|i| i * 2).collect::<Vec<_>>()
    );
    assert_eq!(
        pool.map((0..1000).rev(), |i| i).unwrap(),
        (0..1000).rev().collect::<Vec<_>>()
    );
}

#[test]
fn structured_results_and_captured_state() {
    let _d = common::deadline(30);
    let names: Vec<String> = (0..50).map(|i| format!("item-{i}")).collect();
    let table = std::cell::RefCell::new(vec![0u8; 3]); // not Sync: fine, each worker has its own copy
    let got: Vec<(String, Option<Vec<u8>>)> = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..50, |i| {
            table.borrow_mut()[0] += 1;
            (names[i].clone(), (i % 2 == 0).then(|| vec![i as u8; i % 5]))
        })
        .unwrap();
    for (i, (name, v)) in got.iter().enumerate() {
        assert_eq!(name, &format!("item-{i}"));
        assert_eq!(v, &(i % 2 == 0).then(|| vec![i as u8; i % 5]));
    }
    // Side effects stay in the workers.
    assert_eq!(table.borrow()[0], 0);
}

#[test]
fn more_workers_than_tasks() {
    let _d = common::deadline(30);
    assert_eq!(
        Pool::new()
            .workers(8)
            .progress(false)
            .map([7], |i| i + 1)
            .unwrap(),
        vec![8]
    );
}

#[test]
fn zero_workers_is_an_error() {
    let err = Pool::new().workers(0).map(0..3, |i| i).unwrap_err();
    assert!(matches!(err, Error::NoWorkers), "{err}");
}

#[test]
fn large_results_cross_the_channel() {
    let _d = common::deadline(60);
    // 4 MB per result: far beyond one socket buffer, so it travels fragmented.
    let got = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..6, |i| vec![i as u32; 1 << 20])
        .unwrap();
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v.len(), 1 << 20);
        assert!(v.iter().all(|&x| x == i as u32));
    }
}

#[test]
fn a_panicking_task_is_named() {
    let _d = common::deadline(30);
    let err = Pool::new()
        .workers(2)
        .chunk_size(3)
        .progress(false)
        .map([10, 20, 30, 40, 50, 60, 70], |i| {
            if i == 40 {
                panic!("bad value {i}");
            }
            i
        })
        .unwrap_err();
    match &err {
        Error::TaskPanicked {
            index,
            position,
            message,
            ..
        } => {
            assert_eq!((*index, *position), (40, 3));
            assert!(message.contains("bad value 40"), "{message}");
            assert!(
                message.contains("tests/map.rs"),
                "location missing: {message}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(err.task_index(), Some(40));
    assert!(err.to_string().contains("task 40"), "{err}");
}
